"""The data a GitHub workflow's ``plan`` job exposes: one matrix per dependency level.

Workflow files stay static (hand-written, reviewed, pinned): ``.github/workflows/factory.yml``
has a fixed set of build jobs, WORKFLOW_LEVELS levels of WORKFLOW_PARTS parts each
(``build-l0-p1`` ... ``build-l3-p2``, each reading the slot ``level-L-part-K``); only this
data is generated.  A level's matrix holds the cells of every arch, each cell carrying its
runner label, its timeout and whether it sets QEMU up.  GitHub's limits shape it: a
matrix has at most 256 cells, so a larger level is split into parts; a job's outputs
total at most 1 MB.  A matrix with no cells fails its job, so every slot of the workflow
gets a count, 0 when empty, and no matrix when empty: the workflow's ``if:`` reads the
count.  A plan that needs more levels or parts than the workflow has is bad input.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

from pipeline.ci.levels import Levels, Placement, check_runners, placements
from pipeline.errors import InputError, Problem

MAX_CELLS = 256
MAX_OUTPUT_BYTES = 1_000_000
# The build jobs .github/workflows/factory.yml has: levels 0 to 3, two parts each (up to
# 512 cells a level).  tests/unit/test_ci_files.py checks that the file has exactly
# these jobs (``workflow_jobs``); raise them together with the file.
WORKFLOW_LEVELS = 4
WORKFLOW_PARTS = 2
WORKFLOW = ".github/workflows/factory.yml"


def slot(level: int, part: int) -> str:
    """The output name of a level's part (1-based): ``level-0-part-1``."""
    return f"level-{level}-part-{part}"


def job_name(level: int, part: int) -> str:
    """The workflow job that runs the slot: ``build-l0-p1``."""
    return f"build-l{level}-p{part}"


def workflow_jobs() -> list[str]:
    """Every build job the workflow must have, level by level."""
    return [job_name(level, part) for level in range(WORKFLOW_LEVELS)
            for part in range(1, WORKFLOW_PARTS + 1)]


def matrices(levels: Levels, runners: dict[str, Placement] | None = None) -> dict:
    """Outputs by name: ``levels`` (how many), ``cells`` (how many in all), ``matrices``
    (the names of the slots with cells, in order), and for every slot of the workflow
    ``level-L-part-K-count`` and, when it has cells, ``level-L-part-K`` (``{"include":
    [{"id", "name", "arch", "runner", "timeout", "qemu"}, ...]}``).  ``runners``: arch ->
    Placement (default: the factory's defaults)."""
    runners = placements("github", {}) if runners is None else runners
    check_runners(levels, runners)
    by_level: dict[int, list[dict]] = {}
    for job in sorted(levels.jobs, key=lambda j: (j.level, j.arch, j.name)):
        where = runners[job.arch]
        by_level.setdefault(job.level, []).append({
            "id": job.id, "name": job.name, "arch": job.arch, "runner": where.runner,
            "timeout": where.timeout, "qemu": where.qemu})
    parts = {level: [cells[start:start + MAX_CELLS] for start in range(0, len(cells), MAX_CELLS)]
             for level, cells in by_level.items()}
    _check_capacity(levels.depth, parts)
    outputs: dict = {"levels": levels.depth, "cells": len(levels.jobs), "matrices": []}
    for level in range(WORKFLOW_LEVELS):
        for part in range(1, WORKFLOW_PARTS + 1):
            found = parts.get(level, [])
            cells = found[part - 1] if part <= len(found) else []
            name = slot(level, part)
            if cells:
                outputs["matrices"].append(name)
                outputs[name] = {"include": cells}
            outputs[f"{name}-count"] = len(cells)
    size = len(output_text(outputs, _delimiter()).encode())
    if size > MAX_OUTPUT_BYTES:
        raise InputError([Problem("ci github", None, f"the matrices take {size} bytes of job "
                                  f"outputs, over GitHub's {MAX_OUTPUT_BYTES}; split the run "
                                  "with --select")])
    return outputs


def _check_capacity(depth: int, parts: dict[int, list]) -> None:
    """Bad input when the plan needs a level or a part the workflow has no job for."""
    problems = []
    fix = (f"add the jobs to {WORKFLOW} and raise WORKFLOW_LEVELS/WORKFLOW_PARTS in "
           "pipeline/ci/github.py, or split the run with --select")
    if depth > WORKFLOW_LEVELS:
        problems.append(Problem("ci github", None, f"the plan has {depth} dependency levels, "
                                f"but {WORKFLOW} has build jobs for {WORKFLOW_LEVELS} "
                                f"({job_name(0, 1)} .. {job_name(WORKFLOW_LEVELS - 1, 1)}); "
                                + fix))
    for level, found in sorted(parts.items()):
        if len(found) > WORKFLOW_PARTS and level < WORKFLOW_LEVELS:
            cells = sum(len(p) for p in found)
            problems.append(Problem("ci github", None, f"level {level} has {cells} cells, "
                                    f"{len(found)} matrices of at most {MAX_CELLS}, but "
                                    f"{WORKFLOW} has {WORKFLOW_PARTS} jobs a level; " + fix))
    if problems:
        raise InputError(problems)


def output_text(outputs: dict, delimiter: str) -> str:
    """``$GITHUB_OUTPUT`` lines: ``key<<DELIM``, the compact JSON value, ``DELIM``.  The
    heredoc form keeps any value from ending its entry early or adding another key."""
    lines = []
    for key, value in outputs.items():
        text = json.dumps(value, separators=(",", ":"), sort_keys=True)
        if delimiter in text or delimiter in key:
            raise ValueError("the output delimiter occurs in an output")
        lines += [f"{key}<<{delimiter}", text, delimiter]
    return "\n".join(lines) + "\n"


def write_github_output(outputs: dict, path: Path) -> None:
    """Append ``outputs`` to the ``$GITHUB_OUTPUT`` file at ``path``, with a random
    delimiter (as GitHub's own toolkit does) that no value can contain."""
    with open(path, "a", encoding="utf-8") as stream:
        stream.write(output_text(outputs, _delimiter()))


def _delimiter() -> str:
    return f"ghadelimiter_{secrets.token_hex(16)}"
