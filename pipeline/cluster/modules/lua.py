"""An Lmod modulefile (Lua) for one tag: ``DIR/modules/NAME/VERSION.lua``.

Relocatable: the file finds the site folder from its own path (``myFileName()``), and
picks the SIF of the node it is loaded on (``uname -m``), so one shared folder serves
x86_64 and aarch64 partitions; loading it where the folder holds no SIF for the machine
fails with a message saying so.
"""

from __future__ import annotations

from pipeline.cluster.modules import tree
from pipeline.cluster.modules.content import SIF, Content
from pipeline.cluster.modules.quoting import lua, lua_inner


def render(module: Content) -> str:
    sifs = ", ".join(f"[{lua(machine)}] = {lua(path)}" for machine, path in module.sifs)
    before, after = module.missing
    # Each help line with the path spliced in where SIF marks it.
    help_lines = ['"' + '" .. sif .. "'.join(lua_inner(p) for p in line.split(SIF)) + '"'
                  for line in module.help]
    lines = [
        f"-- {module.module}: {module.image}",
        f"-- {tree.MARKER}",
        "",
        "-- The site folder: this file is modules/[PREFIX/]NAME/VERSION.lua below it.",
        "local site = myFileName()",
        f'for _ = 1, {module.levels} do site = site:match("^(.*)/") end',
        f"local sifs = {{{sifs}}}",
        'local machine = capture("uname -m"):gsub("%s+", "")',
        "local sif = sifs[machine]",
        "if sif then",
        "  sif = pathJoin(site, sif)",
        "else",
        '  sif = "(none for " .. machine .. ")"',
        '  if mode() == "load" then',
        f"    LmodError({lua(before)} .. machine .. {lua(after)})",
        "  end",
        "end",
        "",
        *(f"whatis({lua(line)})" for line in module.whatis),
        "help(table.concat({",
        *(f"  {line}," for line in help_lines),
        '}, "\\n"))',
        "",
        f"conflict({lua(module.conflict)})",
        *([f'prepend_path("PATH", pathJoin(site, {lua(module.path)}))'] if module.path else []),
        f"setenv({lua(module.sif_variable)}, sif)",
        f"setenv({lua(module.image_variable)}, {lua(module.image)})",
    ]
    return "\n".join(lines) + "\n"
