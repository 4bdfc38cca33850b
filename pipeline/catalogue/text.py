"""Control characters: what may not appear in a catalogue value, and how to show them.

Values from matrix.yaml end up in generated files (Apptainer definition files, where a line
break followed by ``%post`` would start a section) and in build arguments.  So every value
and key of the catalogue is one line of printable text: no C0 control character (tab
included), no DEL, no C1 control character (NEL included) and no Unicode line or paragraph
separator.  The catalogue refuses them (``pipeline.catalogue.schema``); code that writes
values into files also escapes them (``escape_controls``), in case one slips through.

    >>> first_control("x\\n%post")
    (1, 'U+000A (line feed)')
    >>> escape_controls("x\\n%post\\t\\u2028")
    'x\\\\n%post\\\\t\\\\u2028'
"""

from __future__ import annotations

import re

# C0, DEL, C1 (NEL is U+0085), and the Unicode line and paragraph separators.
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")

_NAMES = {
    "\x00": "null", "\t": "tab", "\n": "line feed", "\x0b": "vertical tab",
    "\x0c": "form feed", "\r": "carriage return", "\x1b": "escape", "\x7f": "delete",
    "\x85": "next line", "\u2028": "line separator", "\u2029": "paragraph separator",
}
_LATIN1 = 0xFF  # the last code point written as \xNN
_SHORT = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def describe(char: str) -> str:
    """``"\\n"`` -> ``"U+000A (line feed)"``."""
    code = f"U+{ord(char):04X}"
    return f"{code} ({_NAMES[char]})" if char in _NAMES else code


def first_control(text: str) -> tuple[int, str] | None:
    """(index, description) of the first control character in ``text``, or None."""
    found = CONTROL.search(text)
    return (found.start(), describe(found.group())) if found else None


def escape_controls(text: str) -> str:
    """``text`` with each control character written as a visible escape (``\\n``, ``\\x1b``,
    ``\\u2028``); text without any comes back unchanged."""
    return CONTROL.sub(_escape, text)


def _escape(found: re.Match) -> str:
    char = found.group()
    if char in _SHORT:
        return _SHORT[char]
    return f"\\x{ord(char):02x}" if ord(char) <= _LATIN1 else f"\\u{ord(char):04x}"


def section_lines(script: str) -> list[tuple[int, str]]:
    """(line number, first word) of each line of ``script`` that would start a section if
    it were put in an Apptainer definition file, indented or not.

    Apptainer (``pkg/build/types/parser/deffile.go``, ``scanDefinitionFile``) reads every
    line whose first word, after blanks, starts with ``%`` as a section header.  Lines are
    split as Python's ``splitlines`` does (``\\r``, ``\\x85``, ``\\u2028`` too), and blanks
    are Python's, which include all of Go's: the check errs on the side of finding one.

    >>> section_lines("#!/bin/sh\\ntrue\\n  %post\\necho 100%\\n")
    [(3, '%post')]
    """
    found = []
    for number, line in enumerate(script.split("\n"), 1):
        for piece in line.splitlines():
            words = piece.split()
            if words and words[0].startswith("%"):
                found.append((number, escape_controls(words[0])))
                break
    return found
