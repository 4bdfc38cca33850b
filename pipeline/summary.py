"""The end of every run: ``summary.json`` for machines and a table for people."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.table import Table


def write_summary(outcomes: list, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"jobs": [o.to_json() for o in outcomes]}, indent=2) + "\n")


def print_summary(outcomes: list, console: Console, path: Path) -> None:
    table = Table(title="run summary")
    for column in ("job", "arch", "result", "duration", "digest", "reason"):
        table.add_column(column, overflow="fold")
    style = {"passed": "green", "failed": "red", "skipped": "yellow"}
    for o in outcomes:
        digest = o.built.digest[:19] if o.built else ""
        table.add_row(o.job.id.rsplit("@", 1)[0], o.job.arch,
                      f"[{style.get(o.result, '')}]{o.result}[/]", f"{o.duration:.0f} s", digest,
                      o.reason.splitlines()[0] if o.reason else "")
    console.print(table)
    counts = Counter(o.result for o in outcomes)
    console.print(", ".join(f"{counts[r]} {r}" for r in ("passed", "failed", "skipped")) +
                  f"; summary: {path}; logs: {path.parent / 'logs'}")
