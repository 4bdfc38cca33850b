"""Which jobs to build: by mode, and against a git revision with ``--changed-from``.

A job is rebuilt when its build_id differs from the one the same job id had at the
revision; since a build_id covers the recipe files, the variables, the arch and the
build_ids of its needs, that is exactly "its inputs changed, or something it builds FROM
is rebuilt".  Comparing the two expansions (not the text of matrix.yaml) means an edit to
one image's entry rebuilds that image's cells only, and a docs-only change builds nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from pipeline.catalogue.validation import load_catalogue
from pipeline.errors import InputError
from pipeline.planning.jobs import Job, build_plan
from pipeline.planning.recipe_files import GitTree

MODES = ("pr", "main", "nightly")
LISTED = 3  # recipe files named in a reason; the rest are counted


@dataclass(frozen=True)
class Baseline:
    """The plan at a revision, or why there is none to compare with."""

    rev: str
    jobs: dict | None  # id -> Job
    note: str = ""


def load_baseline(folder: Path, matrix_name: str, rev: str) -> Baseline:
    """Plan ``folder/matrix_name`` as it was at ``rev`` (InputError if rev is not a commit)."""
    tree = GitTree.at(folder, rev)
    if tree.read_text(matrix_name) is None:
        return Baseline(rev, None, f"new cell: {matrix_name} did not exist at {rev}")
    try:
        catalogue = load_catalogue(tree, matrix_name, display=f"{matrix_name}@{rev}")
        jobs = build_plan(catalogue, tree)
    except InputError as err:
        return Baseline(rev, None, f"{matrix_name} at {rev} does not plan "
                        f"({len(err.problems)} problem(s)), so every cell counts as changed")
    return Baseline(rev, {job.id: job for job in jobs})


def decide(jobs: list[Job], mode: str, baseline: Baseline | None) -> list[Job]:
    """Set each job's action and reason.

    "unchanged since REF" is about the sources only: outside pr mode the planner
    (``planner.planned_for``) keeps such a skip only when the target has the job published,
    and builds it otherwise (a publish that failed after REF's run)."""
    if mode == "nightly":
        return [replace(j, action="build", reason="nightly: every cell is considered, to pick "
                        "up upstream changes") for j in jobs]
    if baseline is None:
        return [replace(j, action="build", reason=f"{mode}: no --changed-from given, so every "
                        "cell is built") for j in jobs]
    if baseline.jobs is None:
        return [replace(j, action="build", reason=baseline.note) for j in jobs]
    rebuilt: set[str] = set()
    decided = []
    for job in jobs:
        old = baseline.jobs.get(job.id)
        if old is None:
            reason = f"new cell: not in the plan at {baseline.rev}"
        elif old.build_id == job.build_id:
            decided.append(replace(job, action="skip", reason=f"unchanged since {baseline.rev}"))
            continue
        else:
            reason = "; ".join(_differences(old, job, rebuilt)) or (
                f"inputs changed since {baseline.rev}")
        rebuilt.add(job.id)
        decided.append(replace(job, action="build", reason=reason))
    return decided


def _differences(old: Job, new: Job, rebuilt: set) -> list[str]:
    out = []
    before = {path: (mode, blob) for path, mode, blob in old.files}
    after = {path: (mode, blob) for path, mode, blob in new.files}
    changed = [f"{p} changed" for p in after if p in before and before[p] != after[p]]
    changed += [f"{p} added" for p in after if p not in before]
    changed += [f"{p} removed" for p in before if p not in after]
    if changed:
        more = f" and {len(changed) - LISTED} more" if len(changed) > LISTED else ""
        out.append("recipe " + ", ".join(changed[:LISTED]) + more)
    keys = list(new.variables) + [k for k in old.variables if k not in new.variables]
    moved = [f"{k} {old.variables.get(k, '(none)')} -> {new.variables.get(k, '(none)')}"
             for k in keys if old.variables.get(k) != new.variables.get(k)]
    if moved:
        out.append("variables changed: " + ", ".join(moved))
    if new.needs != old.needs:
        out.append(f"base is now {', '.join(new.needs)} (was {', '.join(old.needs) or 'none'})")
    out += [f"needs {need}, which is rebuilt" for need in new.needs if need in rebuilt]
    return out
