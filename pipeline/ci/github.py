"""The data a GitHub workflow's ``plan`` job exposes: a matrix per level and arch.

Workflow files stay static (hand-written, reviewed, pinned); only this data is generated.
GitHub's limits shape it: a matrix has at most 256 cells, so a larger (level, arch) group
is split into ``level-L-A-partK``; a job's outputs total at most 1 MB.  A matrix with no
cells fails its job, so empty groups have a count of 0 and no matrix: the workflow's
``if:`` reads the count.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

from pipeline.ci.levels import GITHUB_RUNNERS, Levels, check_runners
from pipeline.errors import InputError, Problem

MAX_CELLS = 256
MAX_OUTPUT_BYTES = 1_000_000


def matrices(levels: Levels, runners: dict | None = None) -> dict:
    """Outputs by name: ``levels`` (how many), ``matrices`` (the matrix names, in order),
    and for each matrix ``NAME`` (``{"include": [...]}``) and ``NAME-count``; every arch
    with a runner gets a count at every level, 0 when it has no jobs there."""
    runners = GITHUB_RUNNERS if runners is None else runners
    check_runners(levels, runners)
    groups = levels.groups()
    arches = sorted(set(runners) | {j.arch for j in levels.jobs})
    outputs: dict = {"levels": levels.depth, "matrices": []}
    for level in range(levels.depth):
        for arch in arches:
            cells = [{"id": j.id, "name": j.name, "arch": arch, "runner": runners[arch]}
                     for j in groups.get((level, arch), ())]
            base = f"level-{level}-{arch}"
            if len(cells) <= MAX_CELLS:
                parts = [(base, cells)]
            else:
                parts = [(f"{base}-part{k + 1}", cells[start:start + MAX_CELLS])
                         for k, start in enumerate(range(0, len(cells), MAX_CELLS))]
            for name, part in parts:
                if part:
                    outputs["matrices"].append(name)
                    outputs[name] = {"include": part}
                outputs[f"{name}-count"] = len(part)
    size = len(output_text(outputs, _delimiter()).encode())
    if size > MAX_OUTPUT_BYTES:
        raise InputError([Problem("ci github", None, f"the matrices take {size} bytes of job "
                                  f"outputs, over GitHub's {MAX_OUTPUT_BYTES}; split the run "
                                  "with --select")])
    return outputs


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
