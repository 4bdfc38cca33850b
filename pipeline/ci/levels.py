"""The jobs to build as CI jobs: a unique CI-safe name each, a dependency level, an arch.

A CI system runs one plan job per CI job, on a runner of its arch, after the CI jobs it
needs.  Level 0 needs nothing built in this plan; a job's level is one more than the
highest level of the needs built in this plan.  A need the plan skips is not a CI job: the
job takes it from staging, so it is dropped from ``needs`` (it does not hold the job back).
CI systems run a level's jobs together, so levels are also how the writers group them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from pipeline.errors import InputError, Problem
from pipeline.names import file_name
from pipeline.planning.jobs import Job

# Runner per arch when neither matrix.yaml's ``ci.runners`` nor the command line names one:
# GitHub's hosted labels (native arm64), and GitLab runner tags a site gives its runners.
GITHUB_RUNNERS = {"amd64": "ubuntu-24.04", "arm64": "ubuntu-24.04-arm"}
GITLAB_TAGS = {"amd64": ["amd64"], "arm64": ["arm64"]}
# Minutes one CI job may run unless ``ci.runners.<arch>.timeout_minutes`` says otherwise:
# a native build, convert and test of the largest image takes about an hour; under QEMU
# the same takes about three times as long.
DEFAULT_TIMEOUT = 120
EMULATED_TIMEOUT = 360

# GitLab refuses job names of 255 characters or more; leave room below that.
MAX_NAME = 250
_HASH = 12
_REASONS = 3  # skip reasons the no-op job quotes


def ci_name(job_id: str) -> str:
    """A job id as a CI job name: ``file_name`` (letters, digits, ``. - _``; injective),
    then ``short_name``."""
    return short_name(file_name(job_id))


def short_name(name: str) -> str:
    """``name`` cut to MAX_NAME characters, with a sha256 of the whole name appended when
    it was longer, so that cut names stay unique."""
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:_HASH]
    return f"{name[:MAX_NAME - _HASH - 1]}-{digest}"


@dataclass(frozen=True)
class CiJob:
    id: str  # the plan job's id
    name: str  # the CI job's name
    arch: str
    level: int
    needs: tuple[str, ...]  # ids of the CI jobs it needs (sorted)
    reason: str  # why the plan builds it


@dataclass(frozen=True)
class Levels:
    jobs: tuple[CiJob, ...]  # in plan (dependency) order
    nothing_reason: str = ""  # why nothing is built, when ``jobs`` is empty

    def groups(self) -> dict[tuple[int, str], tuple[CiJob, ...]]:
        """The CI jobs per (level, arch), sorted by level, arch and name."""
        grouped: dict[tuple[int, str], list[CiJob]] = {}
        for job in sorted(self.jobs, key=lambda j: (j.level, j.arch, j.name)):
            grouped.setdefault((job.level, job.arch), []).append(job)
        return {key: tuple(jobs) for key, jobs in grouped.items()}

    @property
    def depth(self) -> int:
        """The number of levels."""
        return 1 + max(j.level for j in self.jobs) if self.jobs else 0


def ci_levels(jobs: list[Job]) -> Levels:
    """The plan's ``build`` jobs as CI jobs.  ``jobs`` come in dependency order (every job
    after its needs), as the planner gives them."""
    level: dict[str, int] = {}
    ci_jobs = []
    for job in jobs:
        if job.action != "build":
            continue
        needs = tuple(sorted(n for n in job.needs if n in level))
        level[job.id] = 1 + max((level[n] for n in needs), default=-1)
        ci_jobs.append(CiJob(job.id, ci_name(job.id), job.arch, level[job.id], needs,
                             job.reason))
    names = [j.name for j in ci_jobs]
    if len(set(names)) != len(names):  # file_name is injective: only a hash collision
        raise ValueError("two plan jobs were given the same CI job name")
    return Levels(tuple(ci_jobs), "" if ci_jobs else _nothing_reason(jobs))


def _nothing_reason(jobs: list[Job]) -> str:
    if not jobs:
        return "the plan has no jobs"
    reasons = sorted({j.reason for j in jobs})
    shown = "; ".join(reasons[:_REASONS]) + ("; ..." if len(reasons) > _REASONS else "")
    return f"all {len(jobs)} jobs are skipped ({shown})"


def parse_runners(given: list[str] | None, defaults: dict, tags: bool = False) -> dict:
    """``--runner ARCH=LABEL`` options over ``defaults``: a label for GitHub, or with
    ``tags`` a comma-separated list of runner tags for GitLab."""
    runners = dict(defaults)
    problems = []
    for item in given or []:
        arch, sep, label = item.partition("=")
        arch, label = arch.strip(), label.strip()
        if not sep or not arch or not label:
            problems.append(Problem("--runner", None, f"'{item}': give ARCH=LABEL, e.g. "
                                    "arm64=ubuntu-24.04-arm"))
            continue
        runners[arch] = [t.strip() for t in label.split(",") if t.strip()] if tags else label
    if problems:
        raise InputError(problems)
    return runners


@dataclass(frozen=True)
class Placement:
    """Where one arch's CI jobs run on one CI system."""

    runner: str | tuple[str, ...]  # GitHub: the runs-on label; GitLab: the runner tags
    timeout: int  # minutes
    qemu: bool  # the arch is emulated there: the job sets QEMU up


def placements(forge: str, configured: dict, given: list[str] | None = None) -> dict:
    """Arch -> Placement for ``forge`` (github or gitlab): the runner from ``--runner``
    (``given``), else the catalogue's ``ci.runners`` (``configured``, arch -> CiRunner),
    else the default; the timeout and emulation from the catalogue (``--runner`` changes
    the runner only)."""
    tags = forge == "gitlab"
    defaults = dict(GITLAB_TAGS if tags else GITHUB_RUNNERS)
    for arch, runner in configured.items():
        label = list(runner.gitlab) if tags else runner.github
        if label:
            defaults[arch] = label
    found = {}
    for arch, label in parse_runners(given, defaults, tags=tags).items():
        runner = configured.get(arch)
        emulated = bool(runner and runner.emulated)
        timeout = runner.timeout_minutes if runner and runner.timeout_minutes else (
            EMULATED_TIMEOUT if emulated else DEFAULT_TIMEOUT)
        found[arch] = Placement(tuple(label) if tags else label, timeout, emulated)
    return found


def check_runners(levels: Levels, runners: dict) -> None:
    """Every arch the CI jobs run on has a runner: bad input otherwise."""
    missing = sorted({j.arch for j in levels.jobs} - set(runners))
    if missing:
        raise InputError([Problem("--runner", None, f"no runner for arch {arch}; give "
                                  f"--runner {arch}=LABEL") for arch in missing])
