"""An Environment Modules modulefile (Tcl) for one tag: ``DIR/modules/NAME/VERSION``.

Relocatable as the Lua one is: the site folder comes from the file's own path
(``$ModulesCurrentModulefile``) and the SIF from the node's machine
(``$tcl_platform(machine)``, what ``uname -m`` says).
"""

from __future__ import annotations

from pipeline.cluster.modules import tree
from pipeline.cluster.modules.content import SIF, Content
from pipeline.cluster.modules.quoting import tcl, tcl_inner


def render(module: Content) -> str:
    site = "$ModulesCurrentModulefile"
    for _ in range(module.levels):
        site = f"[file dirname {site}]"
    sifs = " ".join(f"{tcl(machine)} {tcl(path)}" for machine, path in module.sifs)
    before, after = module.missing
    # Each help line with the path spliced in where SIF marks it.
    help_lines = ['"' + "${sif}".join(tcl_inner(p) for p in line.split(SIF)) + '"'
                  for line in module.help]
    lines = [
        "#%Module1.0",
        f"## {tree.MARKER}",
        f"## {module.module}: {module.image}",
        "",
        "# The site folder: this file is modules/[PREFIX/]NAME/VERSION below it.",
        f"set site {site}",
        f"set sifs [dict create {sifs}]",
        "set machine $::tcl_platform(machine)",
        "if {[dict exists $sifs $machine]} {",
        "    set sif [file join $site [dict get $sifs $machine]]",
        "} else {",
        '    set sif "(none for $machine)"',
        "    if {[module-info mode load]} {",
        f'        error "{tcl_inner(before)}$machine{tcl_inner(after)}"',
        "    }",
        "}",
        "",
        *(f"module-whatis {tcl(line)}" for line in module.whatis),
        "set help [join [list \\",
        *(f"    {line} \\" for line in help_lines),
        '] "\\n"]',
        "proc ModulesHelp {} {",
        "    puts stderr $::help",
        "}",
        "",
        f"conflict {tcl(module.conflict)}",
        *([f"prepend-path PATH [file join $site {tcl(module.path)}]"] if module.path else []),
        f"setenv {tcl(module.sif_variable)} $sif",
        f"setenv {tcl(module.image_variable)} {tcl(module.image)}",
    ]
    return "\n".join(lines) + "\n"
