"""Plan output: JSON for machines (the contract later stages and CI rely on), a table for people."""

from __future__ import annotations

import json
from collections import Counter
from typing import TextIO

from rich.table import Table

from pipeline.console import make_console
from pipeline.planning.jobs import Job

ACTION_STYLE = {"build": "bold green", "skip": "dim"}


def plan_json(jobs: list[Job], mode: str) -> str:
    """``{"mode": ..., "jobs": [{id, image, kind, ...}, ...]}`` in dependency order."""
    return json.dumps({"mode": mode, "jobs": [j.to_json() for j in jobs]}, indent=2)


def plan_table(jobs: list[Job], mode: str, out: TextIO) -> None:
    """One table, a section per image, with each job's action and the reason for it."""
    console = make_console(out)
    table = Table(title=f"plan ({mode})", show_lines=False)
    for column in ("image", "tag", "arch", "action", "reason"):
        table.add_column(column, overflow="fold")
    groups: dict[str, list[Job]] = {}
    for job in jobs:
        groups.setdefault(job.image, []).append(job)
    for name, group in groups.items():
        for i, job in enumerate(group):
            table.add_row(
                f"{name} ({job.kind})" if i == 0 else "",
                job.tag, job.arch,
                f"[{ACTION_STYLE.get(job.action, '')}]{job.action}[/]",
                job.reason,
                end_section=i == len(group) - 1,
            )
    console.print(table)
    counts = Counter(j.action for j in jobs)
    console.print(f"{len(jobs)} jobs: " + ", ".join(f"{counts[a]} {a}" for a in ("build", "skip")))
