"""The GitLab child pipeline: one CI job per plan job to build, a stage per level.

The parent ``.gitlab-ci.yml`` runs ``python -m pipeline ci gitlab`` in its ``plan`` job
(through ``.ci/gitlab-plan``) and triggers the file this writes.  What GitLab demands of
it, and why each key is there:

- ``default: before_script`` sources ``.ci/gitlab-env.sh``: the factory's dependencies in
  a virtualenv, the checkout's own code on ``PYTHONPATH`` (each job runs this commit's
  code), and in pr mode no trusted credential.  Fan-in and no-op jobs skip it.
- Each cell runs ``python -m pipeline run --mode $MODE --only JOB --stages
  build,convert,test``: its needs come from staging by digest (never rebuilt; missing is
  exit 4), and in main/nightly the image and its tested SIF are left in staging for
  ``publish``.  It writes to ``out/<job name>/``, the job's artifact (its SIFs left out:
  they travel through staging), whose ``junit.xml`` is the job's JUnit report.
- ``needs`` lists at most 50 jobs (GitLab's default limit): beyond that, small fan-in jobs
  each need up to 50 and the job needs them.  ``artifacts: false``: a job takes what it
  builds FROM from staging by digest, never from another job's ``out/``.
- ``retry`` only on exit code 4 (infrastructure unreachable), never on a failed test.
- ``publish`` only in main/nightly, only on a protected ref, one at a time per project
  (``resource_group``).  It publishes exactly the plan this file was written for: the plan
  options it was made with (``--changed-from``, ``--select``, ...) are written into its
  script, shell-quoted.
- ``report``, last, whatever happened (``when: always``, ``allow_failure``): ``python -m
  pipeline report`` over every job's ``out/``, posting the merge request note and commit
  status when ``PIPELINE_GITLAB_TOKEN`` is set.  No ``needs``: it takes the artifacts of
  all earlier stages, however many jobs (``needs`` may name 50).
- Job names are unique and under 255 characters; the file stays under 5 MB; the same plan
  (and options) gives the same bytes (a fixed key order, jobs and needs sorted).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

import yaml

from pipeline.ci.levels import GITLAB_TAGS, MAX_NAME, CiJob, Levels, check_runners, short_name
from pipeline.errors import EXIT_INFRASTRUCTURE, InputError, Problem

MAX_NEEDS = 50
MAX_BYTES = 5_000_000
PUBLISH = "publish"
REPORT = "report"
NOTHING = "nothing-to-build"
PROTECTED = '$CI_COMMIT_REF_PROTECTED == "true"'
# Every job but the fan-in and no-op ones: the project's environment (see the module doc).
BEFORE_SCRIPT = [". .ci/gitlab-env.sh"]
# What a cell runs: build, convert and test; publishing is the publish job's.
CELL_STAGES = "build,convert,test"
DEFAULT_MATRIX = "matrix.yaml"
# Top-level keys of a GitLab pipeline, and job names GitLab treats specially: never a job.
RESERVED = frozenset({"stages", "variables", "default", "workflow", "include", "image",
                      "services", "cache", "before_script", "after_script", "pages", "spec"})


@dataclass(frozen=True)
class PlanOptions:
    """The plan options a child pipeline was written for, handed on to its jobs so that
    they work on that plan and no other.  None: not given."""

    matrix: str | None = None
    changed_from: str | None = None
    select: str | None = None
    target: str | None = None

    @classmethod
    def from_args(cls, args) -> PlanOptions:
        """The options of a ``ci gitlab`` command line (an argparse namespace)."""
        matrix = getattr(args, "matrix", None)
        return cls(matrix if matrix and matrix != DEFAULT_MATRIX else None,
                   getattr(args, "changed_from", None) or None,
                   getattr(args, "select", None) or None,
                   getattr(args, "target", None) or None)

    def for_cell(self) -> list[str]:
        """A cell's options: which catalogue and target (``--only`` names the job)."""
        return _flags(("--matrix", self.matrix), ("--target", self.target))

    def for_publish(self) -> list[str]:
        """``publish``'s options: the whole plan, so it publishes exactly what was built."""
        return _flags(("--matrix", self.matrix), ("--changed-from", self.changed_from),
                      ("--select", self.select), ("--target", self.target))


def _flags(*pairs: tuple[str, str | None]) -> list[str]:
    return [part for flag, value in pairs if value is not None for part in (flag, value)]


def out_dir(name: str) -> str:
    """A job's output folder, ``out/<job name>``: the report job gets every job's artifacts
    in one checkout, so no two jobs may write the same summary.json."""
    return f"out/{name}"


def out_option(name: str) -> str:
    """``--out`` for the job: its output folder as an absolute path (SIF folders are bound
    into containers by path).  Job names are file names: nothing to quote."""
    return f'--out "$CI_PROJECT_DIR"/{out_dir(name)}'


def _artifacts(name: str) -> dict:
    """The job's output folder, with its JUnit report, but not its SIFs: the SIFs travel
    through staging (a SIF can be GBs, over any artifact limit).  A new dict each time: a
    shared one would be written as a YAML anchor and aliases."""
    folder = out_dir(name)
    return {"when": "always", "paths": [f"{folder}/"], "exclude": [f"{folder}/**/*.sif"],
            "reports": {"junit": f"{folder}/junit.xml"}}


def child_pipeline(levels: Levels, mode: str, tags: dict | None = None,
                   publish_arch: str = "amd64", options: PlanOptions | None = None) -> str:
    """The child pipeline's YAML text for a run in ``mode``.  ``tags``: runner tags per
    arch; ``publish_arch``: whose runner tags the publish and no-op jobs take;
    ``options``: the plan options the plan was made with (see PlanOptions)."""
    tags = GITLAB_TAGS if tags is None else tags
    options = PlanOptions() if options is None else options
    check_runners(levels, tags)
    if publish_arch not in tags:
        publish_arch = sorted(tags)[0]
    head = {"stages": ["level-0"], "variables": {"MODE": mode},
            "default": {"before_script": list(BEFORE_SCRIPT)}}
    jobs: dict[str, dict] = {}
    if not levels.jobs:
        message = f"nothing to build: {levels.nothing_reason}"
        _add(jobs, NOTHING, {"stage": "level-0", "tags": list(tags[publish_arch]),
                             "before_script": [],
                             "script": [shlex.join(["echo", message])]})
        return _dump(head, jobs)
    names = {j.id: j.name for j in levels.jobs}
    for job in sorted(levels.jobs, key=lambda j: (j.level, j.name)):
        stage = f"level-{job.level}"
        needs = _fan_in(job.name, sorted(names[n] for n in job.needs), stage,
                        tags[job.arch], jobs)
        _add(jobs, job.name, _job(job, stage, tags[job.arch], needs, options))
    head["stages"] = [f"level-{n}" for n in range(levels.depth)]
    if mode in ("main", "nightly"):
        head["stages"].append(PUBLISH)
        needs = _fan_in(PUBLISH, sorted(names.values()), PUBLISH, tags[publish_arch], jobs)
        body = {
            "stage": PUBLISH, "tags": list(tags[publish_arch]), "needs": needs,
            "rules": [{"if": PROTECTED}], "resource_group": PUBLISH,
            "script": [" ".join(["python -m pipeline publish --mode $MODE",
                                 out_option(PUBLISH), *_quoted(options.for_publish())])],
            "retry": {"max": 2, "exit_codes": [EXIT_INFRASTRUCTURE]},
            "artifacts": _artifacts(PUBLISH)}
        if options.changed_from:  # --changed-from reads that revision with git
            body["variables"] = {"GIT_DEPTH": "0"}
        _add(jobs, PUBLISH, body)
    head["stages"].append(REPORT)
    # No needs: the last stage, after every job whatever its result (when: always), with
    # the artifacts of all of them (needs would stop at 50).  It reports, it never fails
    # the pipeline.
    _add(jobs, REPORT, {
        "stage": REPORT, "tags": list(tags[publish_arch]), "when": "always",
        "allow_failure": True,
        "script": [f"python -m pipeline report out {out_option(REPORT)}"],
        "artifacts": {"when": "always", "paths": [f"{out_dir(REPORT)}/"]}})
    return _dump(head, jobs)


def _quoted(argv: list[str]) -> list[str]:
    """Each argument shell-quoted (``shlex.join`` as a list: empty when nothing)."""
    return [shlex.join(argv)] if argv else []


def _job(job: CiJob, stage: str, tags: list, needs: list, options: PlanOptions) -> dict:
    if "'" in job.id:  # ids are made of registry-safe characters: this is a bug
        raise ValueError(f"job id {job.id!r} cannot be quoted for the shell")
    # Job ids follow the registry grammars (no quotes), but quote them anyway.
    command = " ".join(["python -m pipeline run --mode $MODE --only", shlex.quote(job.id),
                        "--stages", CELL_STAGES, out_option(job.name),
                        *_quoted(options.for_cell())])
    return {"stage": stage, "tags": list(tags), "needs": needs, "script": [command],
            "retry": {"max": 2, "exit_codes": [EXIT_INFRASTRUCTURE]},
            "interruptible": True, "artifacts": _artifacts(job.name)}


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
                             "before_script": [], "script": ["true"],
                             "interruptible": True})
            fans.append(fan)
        names = fans
    return [_need(n) for n in names]


def _need(name: str) -> dict:
    return {"job": name, "artifacts": False}


def _add(jobs: dict[str, dict], name: str, body: dict) -> None:
    if name in RESERVED:
        raise ValueError(f"{name!r} is a GitLab keyword, not a CI job name")
    if name in jobs:
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
