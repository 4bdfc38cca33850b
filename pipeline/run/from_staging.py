"""``publish``: each job's result taken from staging, where its CI job left it.

A CI job (``run --only``) stages its image (build stage) and, once its tests passed, its
SIF (``stages/handoff.py``), both attested.  The publish job runs on another runner, later:
for each job of the plan to build, it looks up the image and the tested SIF of the job's
*effective* build_id (computed as the planner does, ``planned_for``) in trusted staging.
A job built from a ``recipe.def`` staged a SIF artifact instead of an image; it is
checked by its attestation alone (an artifact has no image labels).  Found and attested:
the job ``passed`` (its SIF is downloaded for the SIF tags and the
library).  Otherwise it ``failed`` with the reason, and the publisher refuses every tag of
that job (a tag is published only when every arch passed).
"""

from __future__ import annotations

import time

from pipeline.names import sif_name
from pipeline.planning.already_published import sif_only
from pipeline.stages.build import Built
from pipeline.stages.convert import Converted
from pipeline.stages.handoff import StagedSif, fetch_sif


def collect(run, context, todo: list) -> None:
    """Give each outcome in ``todo`` its result from trusted staging."""
    staging = context.staging
    registry = staging.client()
    for outcome in todo:
        start = time.monotonic()
        job = outcome.job
        with open(outcome.log, "a", encoding="utf-8") as handle:
            def log(line: str) -> None:
                handle.write(run.masker(line) + "\n")

            log(f"job {job.id}: taken from staging for publishing")
            build_id = run.published_ids.get(job.id)
            if build_id is None:
                _failed(outcome, "its effective build_id could not be computed (an upstream "
                        "file or OS base could not be read); see the plan", log)
            else:
                _take(outcome, build_id, registry, context, log)
        outcome.duration = time.monotonic() - start
        run.console.log(f"{outcome.result:7} {job.id}: {outcome.reason.splitlines()[0]}")


def _take(outcome, build_id: str, registry, context, log) -> None:
    job, staging = outcome.job, context.staging
    repository, tag = staging.repository(job.repository), staging.tag(build_id, job.arch)
    where = f"{staging.registry}/{repository}:{tag}"
    what = "SIF built from its recipe.def" if sif_only(job) else "image"
    digest = registry.digest(repository, tag)
    if digest is None:
        _failed(outcome, f"no {what} in staging ({where}): its CI job failed, was skipped or "
                "has not run", log)
        return
    # A recipe.def job staged its built SIF where an image would be: an artifact, no labels.
    check = staging.distrust_artifact if sif_only(job) else staging.distrust
    problem = check(registry, repository, tag, digest, build_id, job.id)
    if problem:
        _failed(outcome, f"the image in staging ({where}) is not used: {problem}", log)
        return
    sif = context.sif_dir / sif_name(job.id)
    staged = fetch_sif(job, build_id, staging, sif, log)
    if not isinstance(staged, StagedSif):
        _failed(outcome, staged, log)
        return
    prefix = "oras://" if sif_only(job) else ""
    outcome.built = Built(prefix + staging.reference(job.repository, tag),
                          prefix + staging.reference(job.repository, digest), digest, build_id,
                          "", "", True, sif if sif_only(job) else None)
    outcome.converted = Converted(sif, sif.with_suffix(".def"), sif.stat().st_size, True)
    outcome.stages = {
        "build": {**outcome.built.to_json(), "result": "passed", "from": "staging"},
        "convert": {**outcome.converted.to_json(), "result": "passed",
                    "staged": staged.to_json()},
        "test": {"result": "passed", "tests": [],
                 "reason": "tested by its CI job: its SIF is staged only after its tests pass"},
    }
    outcome.result = "passed"
    outcome.reason = f"taken from staging: {where} ({digest}), SIF {staged.manifest}"
    log(outcome.reason)


def _failed(outcome, reason: str, log) -> None:
    outcome.result, outcome.reason = "failed", reason
    log(f"FAILED: {reason}")
