"""The end of every run: ``summary.json`` and ``junit.xml`` for machines, tables for people.

They are written whatever happened: every job passed, a job failed, the infrastructure was
not there, the run was interrupted or the factory itself broke (:func:`report`).  Each of
them takes a ``mask`` (no default), and everything written or printed goes through it, so
no secret value reaches them.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from pipeline.run.junit import write_junit
from pipeline.run.outcomes import RESULTS, STYLES

Mask = Callable[[str], str]


def _data(mask: Mask, obj):
    data = getattr(mask, "data", None)
    if data is not None:
        return data(obj)
    return json.loads(mask(json.dumps(obj)))


def job_url(env) -> str | None:
    """The CI job's web page, for the report's links: GitLab gives the job's own; GitHub
    gives the run's (a matrix cell's page needs an API call)."""
    if env.get("CI_JOB_URL"):
        return env["CI_JOB_URL"]
    if env.get("GITHUB_RUN_ID") and env.get("GITHUB_REPOSITORY"):
        server = env.get("GITHUB_SERVER_URL", "https://github.com")
        return f"{server}/{env['GITHUB_REPOSITORY']}/actions/runs/{env['GITHUB_RUN_ID']}"
    return None


def write_summary(outcomes: list, path: Path, publications: list | None, *, mask: Mask,
                  run: dict | None = None) -> None:
    """``summary.json``: ``run`` (id, status, exit code, reason), ``jobs``, ``publications``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"jobs": [o.to_json() for o in outcomes], "publications": publications or []}
    if run is not None:
        data = {"run": run, **data}
    text = json.dumps(_data(mask, data), indent=2)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(mask(text) + "\n")
    partial.replace(path)


def print_summary(outcomes: list, console: Console, path: Path,
                  publications: list | None, *, mask: Mask) -> None:
    """The tables of the jobs and the publications, and a line saying where things are."""
    junit = path.parent / "junit.xml"
    table = Table(title="run summary")
    for column in ("job", "arch", "result", "duration", "digest", "reason"):
        table.add_column(column, overflow="fold")
    for o in outcomes:
        digest = o.built.digest[:19] if o.built else ""
        table.add_row(escape(mask(o.job.id.rsplit("@", 1)[0])), o.job.arch,
                      f"[{STYLES.get(o.result, '')}]{o.result}[/]", f"{o.duration:.0f} s",
                      digest, escape(mask(_table_reason(o))))
    console.print(table)
    if publications:
        pub = Table(title="publications")
        for column in ("tag", "result", "where"):
            pub.add_column(column, overflow="fold")
        for p in publications:
            where = "\n".join(p.get("refs", [])) or p.get("reason", "")
            pub.add_row(escape(mask(f"{p['repository']}:{p['tag']}")), escape(p["result"]),
                        escape(mask(where)))
        console.print(pub)
    counts = Counter(o.result for o in outcomes)
    shown = [r for r in RESULTS if counts[r] or r != "interrupted"]
    console.print(escape(mask(
        ", ".join(f"{counts[r]} {r}" for r in shown) +
        f"; summary: {path}" + (f"; JUnit: {junit}" if junit.exists() else "") +
        f"; logs: {path.parent / 'logs'}; SIFs: {path.parent / 'sif'}")))


def _table_reason(o) -> str:
    """The first line of the job's reason; for a passed job also what its %test computed
    (the app images' workload lines), which the job's reason only calls "passed"."""
    lines = o.reason.splitlines()[:1]
    if o.result == "passed":
        tests = (o.stages.get("test") or {}).get("tests") or []
        lines += [t["reason"] for t in tests if t.get("name") == "%test" and t.get("reason")]
    return "\n".join(lines)


@dataclass
class Report:
    """What a run leaves for machines and people, written by :meth:`write`."""

    outcomes: list
    publications: list
    out_dir: Path
    mask: Mask
    run: dict = field(default_factory=dict)  # id, status, exit_code, reason

    def write(self, console: Console) -> list[BaseException]:
        """Write ``summary.json`` and ``junit.xml`` into ``out_dir`` and print the tables;
        each is tried even when another failed.  Returns what went wrong (empty: nothing)."""
        summary, junit = self.out_dir / "summary.json", self.out_dir / "junit.xml"
        mask, errors = self.mask, []
        for action in (
                lambda: write_summary(self.outcomes, summary, self.publications, mask=mask,
                                      run=self.run),
                lambda: write_junit(self.outcomes, junit, self.publications, mask=mask,
                                    run=self.run),
                lambda: print_summary(self.outcomes, console, summary, self.publications,
                                      mask=mask)):
            try:
                action()
            except Exception as err:  # the others are still written
                errors.append(err)
        return errors
