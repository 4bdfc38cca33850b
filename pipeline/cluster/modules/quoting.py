"""Text as a literal of each language the modules are written in: Lua, Tcl and POSIX sh.

Every value that comes from the catalogue or the site config reaches a generated file
through one of these, so a description holding ``"]]``, ``$(...)`` or ``[exec ...]`` stays
text when Lmod, Environment Modules or the shell reads it.  The Lua and Tcl literals are
plain ASCII (anything else is escaped), so no reader's idea of the file's encoding matters.
"""

from __future__ import annotations

import shlex

BMP = 0xFFFF  # beyond it Tcl takes \UXXXXXXXX
_LUA = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t"}
# In a Tcl double-quoted word these start substitutions or end the word; a backslash before
# a brace also keeps it from counting in a braced body (a proc's), so one escaped brace in a
# description cannot unbalance the file.
_TCL = {'"': '\\"', "\\": "\\\\", "$": "\\$", "[": "\\[", "]": "\\]", "{": "\\{",
        "}": "\\}", "\n": "\\n", "\t": "\\t"}


def lua(text: str) -> str:
    """A Lua string literal of ``text``: ``"..."``, bytes outside printable ASCII as ``\\ddd``."""
    return '"' + lua_inner(text) + '"'


def lua_inner(text: str) -> str:
    """``text`` escaped for the inside of a Lua double-quoted string."""
    # \ddd is a byte: UTF-8 goes in byte by byte; three digits end the escape.
    return _escaped(text, _LUA, lambda char: "".join(f"\\{b:03d}" for b in char.encode()))


def tcl(text: str) -> str:
    """A Tcl double-quoted word of ``text``, non-ASCII as ``\\uXXXX`` (``\\UXXXXXXXX``)."""
    return '"' + tcl_inner(text) + '"'


def tcl_inner(text: str) -> str:
    """``text`` escaped for the inside of a Tcl double-quoted word."""
    return _escaped(text, _TCL, lambda char: f"\\u{ord(char):04x}" if ord(char) <= BMP
                    else f"\\U{ord(char):08x}")


def _escaped(text: str, table: dict, other) -> str:
    """``text`` with ``table``'s characters replaced, printable ASCII kept, and ``other`` of
    every other character."""
    return "".join(table.get(c) or (c if " " <= c <= "~" else other(c)) for c in text)


def sh(text: str) -> str:
    """One POSIX sh word of ``text`` (single-quoted unless it is plain)."""
    return shlex.quote(text)
