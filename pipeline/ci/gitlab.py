"""The GitLab child pipeline: one CI job per plan job to build, a stage per level.

The parent ``.gitlab-ci.yml`` (not written yet) runs ``python -m pipeline ci gitlab`` and
triggers the file this writes.  What GitLab demands of it, and why each key is there:

- ``needs`` lists at most 50 jobs (GitLab's default limit): beyond that, small fan-in jobs
  each need up to 50 and the job needs them.  ``artifacts: false``: a job takes what it
  builds FROM from staging by digest, never from another job's ``out/``.
- ``retry`` only on exit code 4 (infrastructure unreachable), never on a failed test.
- ``publish`` only in main/nightly, only on a protected ref, one at a time per project.
- Job names are unique and under 255 characters; the file stays under 5 MB; the same plan
  gives the same bytes (a fixed key order, jobs and needs sorted).
"""

from __future__ import annotations

import shlex

import yaml

from pipeline.ci.levels import GITLAB_TAGS, MAX_NAME, CiJob, Levels, check_runners, short_name
from pipeline.errors import EXIT_INFRASTRUCTURE, InputError, Problem

MAX_NEEDS = 50
MAX_BYTES = 5_000_000
PUBLISH = "publish"
NOTHING = "nothing-to-build"
PROTECTED = '$CI_COMMIT_REF_PROTECTED == "true"'


def _artifacts() -> dict:
    """A new dict each time: a shared one would be written as a YAML anchor and aliases."""
    return {"when": "always", "paths": ["out/"], "reports": {"junit": "out/junit.xml"}}


def child_pipeline(levels: Levels, mode: str, tags: dict | None = None,
                   publish_arch: str = "amd64") -> str:
    """The child pipeline's YAML text for a run in ``mode``.  ``tags``: runner tags per
    arch; ``publish_arch``: whose runner tags the publish and no-op jobs take."""
    tags = GITLAB_TAGS if tags is None else tags
    check_runners(levels, tags)
    if publish_arch not in tags:
        publish_arch = sorted(tags)[0]
    head = {"stages": ["level-0"], "variables": {"MODE": mode}}
    jobs: dict[str, dict] = {}
    if not levels.jobs:
        message = f"nothing to build: {levels.nothing_reason}"
        _add(jobs, NOTHING, {"stage": "level-0", "tags": list(tags[publish_arch]),
                             "script": [shlex.join(["echo", message])]})
        return _dump(head, jobs)
    names = {j.id: j.name for j in levels.jobs}
    for job in sorted(levels.jobs, key=lambda j: (j.level, j.name)):
        stage = f"level-{job.level}"
        needs = _fan_in(job.name, sorted(names[n] for n in job.needs), stage,
                        tags[job.arch], jobs)
        _add(jobs, job.name, _job(job, stage, tags[job.arch], needs))
    head["stages"] = [f"level-{n}" for n in range(levels.depth)]
    if mode in ("main", "nightly"):
        head["stages"].append(PUBLISH)
        needs = _fan_in(PUBLISH, sorted(names.values()), PUBLISH, tags[publish_arch], jobs)
        _add(jobs, PUBLISH, {
            "stage": PUBLISH, "tags": list(tags[publish_arch]), "needs": needs,
            "rules": [{"if": PROTECTED}], "resource_group": PUBLISH,
            "script": ["python -m pipeline publish --mode $MODE"],
            "retry": {"max": 2, "exit_codes": [EXIT_INFRASTRUCTURE]},
            "artifacts": _artifacts()})
    return _dump(head, jobs)


def _job(job: CiJob, stage: str, tags: list, needs: list) -> dict:
    if "'" in job.id:  # ids are made of registry-safe characters: this is a bug
        raise ValueError(f"job id {job.id!r} cannot be quoted for the shell")
    return {"stage": stage, "tags": list(tags), "needs": needs,
            # Job ids follow the registry grammars (no quotes), but quote them anyway.
            "script": [f"python -m pipeline run --mode $MODE --only {shlex.quote(job.id)}"],
            "retry": {"max": 2, "exit_codes": [EXIT_INFRASTRUCTURE]},
            "interruptible": True, "artifacts": _artifacts()}


def _fan_in(owner: str, names: list[str], stage: str, tags: list,
            jobs: dict[str, dict]) -> list[dict]:
    """``needs`` entries for ``names``: the names themselves when at most MAX_NEEDS,
    otherwise fan-in jobs (added to ``jobs``), in as many tiers as it takes."""
    tier = 0
    while len(names) > MAX_NEEDS:
        tier += 1
        fans = []
        for start in range(0, len(names), MAX_NEEDS):
            fan = short_name(f"{owner}.fan-in-{tier}-{start // MAX_NEEDS + 1}")
            _add(jobs, fan, {"stage": stage, "tags": list(tags),
                             "needs": [_need(n) for n in names[start:start + MAX_NEEDS]],
                             "script": ["true"], "interruptible": True})
            fans.append(fan)
        names = fans
    return [_need(n) for n in names]


def _need(name: str) -> dict:
    return {"job": name, "artifacts": False}


def _add(jobs: dict[str, dict], name: str, body: dict) -> None:
    if name in jobs or name in ("stages", "variables"):
        raise ValueError(f"two CI jobs are named {name!r}")
    if len(name) > MAX_NAME:
        raise ValueError(f"CI job name over {MAX_NAME} characters: {name!r}")
    jobs[name] = body


def _dump(head: dict, jobs: dict[str, dict]) -> str:
    text = yaml.safe_dump({**head, **jobs}, sort_keys=False, default_flow_style=False,
                          width=10_000)
    size = len(text.encode())
    if size > MAX_BYTES:
        raise InputError([Problem("ci gitlab", None, f"the child pipeline takes {size} bytes, "
                                  f"over GitLab's limit of {MAX_BYTES}; split the run with "
                                  "--select")])
    return text
