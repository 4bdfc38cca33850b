"""The end of every run: ``summary.json`` for machines and tables for people.

Everything written or printed goes through ``mask``, so no secret value reaches them.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table


def _plain(text: str) -> str:
    return text


def write_summary(outcomes: list, path: Path, publications: list | None = None,
                  mask=_plain) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"jobs": [o.to_json() for o in outcomes], "publications": publications or []}
    path.write_text(mask(json.dumps(data, indent=2)) + "\n")


def print_summary(outcomes: list, console: Console, path: Path,
                  publications: list | None = None, mask=_plain) -> None:
    table = Table(title="run summary")
    for column in ("job", "arch", "result", "duration", "digest", "reason"):
        table.add_column(column, overflow="fold")
    style = {"passed": "green", "failed": "red", "skipped": "yellow"}
    for o in outcomes:
        digest = o.built.digest[:19] if o.built else ""
        table.add_row(o.job.id.rsplit("@", 1)[0], o.job.arch,
                      f"[{style.get(o.result, '')}]{o.result}[/]", f"{o.duration:.0f} s", digest,
                      escape(mask(o.reason.splitlines()[0])) if o.reason else "")
    console.print(table)
    if publications:
        pub = Table(title="publications")
        for column in ("tag", "result", "where"):
            pub.add_column(column, overflow="fold")
        for p in publications:
            where = "\n".join(p.get("refs", [])) or p.get("reason", "")
            pub.add_row(f"{p['repository']}:{p['tag']}", p["result"], escape(mask(where)))
        console.print(pub)
    counts = Counter(o.result for o in outcomes)
    console.print(", ".join(f"{counts[r]} {r}" for r in ("passed", "failed", "skipped")) +
                  f"; summary: {path}; logs: {path.parent / 'logs'}; SIFs: "
                  f"{path.parent / 'sif'}")
