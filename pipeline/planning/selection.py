"""``--select``: keep the jobs whose id matches a glob, and the jobs they need.

Globs are matched with :func:`fnmatch.fnmatchcase` against the whole id, e.g.::

    *@arm64                                   every arm64 job
    sjtuhpc/hpc-app-container:lammps-*        the LAMMPS images (and the bases they need)
"""

from __future__ import annotations

from dataclasses import replace
from fnmatch import fnmatchcase

from pipeline.errors import InputError, Problem
from pipeline.planning.jobs import Job


def parse_globs(text: str) -> list[str]:
    return [g.strip() for g in text.split(",") if g.strip()]


def select(jobs: list[Job], globs: list[str]) -> list[Job]:
    """The matching jobs plus everything they need, in plan order."""
    unmatched = [g for g in globs if not any(fnmatchcase(j.id, g) for j in jobs)]
    if unmatched:
        example = jobs[0].id if jobs else "repository:tag@arch"
        raise InputError([Problem("--select", None, f"'{g}' matches no job; ids look like "
                                  f"{example} (run 'plan' to list them)") for g in unmatched])
    chosen = {j.id for j in jobs if any(fnmatchcase(j.id, g) for g in globs)}
    by_id = {j.id: j for j in jobs}
    needed: set[str] = set()
    stack = list(chosen)
    while stack:
        for need in by_id[stack.pop()].needs:
            if need not in chosen and need not in needed:
                needed.add(need)
                stack.append(need)
    kept = []
    for job in jobs:
        if job.id in chosen:
            kept.append(job)
        elif job.id in needed:
            kept.append(replace(job, reason=f"{job.reason} (kept: a selected job needs it)"))
    return kept


def only(jobs: list[Job], job_id: str) -> tuple[list[Job], frozenset]:
    """``--only JOB``: the one job and what it needs, and the ids of those needs, which a
    CI job takes from staging (their own CI jobs build them) instead of building."""
    by_id = {j.id: j for j in jobs}
    if job_id not in by_id:
        tag = job_id.partition("@")[0]
        near = [j.id for j in jobs if j.id.partition("@")[0] == tag]
        hint = f"; jobs of that tag: {', '.join(near)}" if near else (
            " (run 'plan' to list the ids, e.g. " + (jobs[0].id if jobs else
                                                     "repository:tag@arch") + ")")
        raise InputError([Problem("--only", None, f"'{job_id}' is not a job of this plan{hint}")])
    kept = select(jobs, [_literal(job_id)])
    return kept, frozenset(j.id for j in kept if j.id != job_id)


def _literal(text: str) -> str:
    """A glob that matches ``text`` only (fnmatch's ``[``, ``*`` and ``?`` escaped)."""
    return "".join(f"[{c}]" if c in "[]*?" else c for c in text)
