"""``run --only JOB`` (one CI job) and ``publish`` (the publish job), in-process with the
fake lab of test_exit_codes.py: which jobs are built, which are taken from staging, what
the summary says, and the exit codes when a need is missing or the options clash."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from pipeline import cli
from pipeline.errors import EXIT_BAD_INPUT, EXIT_INFRASTRUCTURE, EXIT_PASSED, InputError
from pipeline.planning.selection import only
from pipeline.run import scheduler
from pipeline.stages import build as build_stage
from pipeline.stages import convert as convert_stage
from tests.catalogues import plan as plan_of
from tests.catalogues import write
from tests.unit.test_exit_codes import (
    APP,
    fake_built,
    fake_converted,
    lab,  # noqa: F401 - the fixture
    no_traceback,
    summary,
)

BASE = "t/base:ompi-4.1@amd64"


def run_only(lab, job_id: str, *extra: str) -> int:  # noqa: F811 - the fixture's name
    return cli.main(["run", "--matrix", str(lab.matrix), "--out", str(lab.out),
                     "--only", job_id, *extra])


@pytest.fixture
def calls(monkeypatch):
    """What the build and convert stages were asked to do, in order."""
    seen = SimpleNamespace(build=[], convert=[], handoff=[])

    def build(job, needs, ctx, log, *, reuse_only=False):
        seen.build.append((job.id, reuse_only))
        return fake_built(job, needs, ctx, log)

    def convert(job, built, ctx, log):
        seen.convert.append(job.id)
        return fake_converted(job, built, ctx, log)

    def stage_sif(job, build_id, image_digest, sif, staging, log):
        seen.handoff.append((job.id, staging.trusted))
        return SimpleNamespace(to_json=lambda: {"reference": "oras://staging/x@sha256:1"})

    monkeypatch.setattr(build_stage, "build", build)
    monkeypatch.setattr(convert_stage, "convert", convert)
    monkeypatch.setattr(scheduler.handoff, "stage_sif", stage_sif)
    return seen


def test_only_keeps_the_job_and_what_it_needs(tmp_path):
    jobs = list(plan_of(write(tmp_path), "pr").values())
    kept, taken = only(jobs, APP)
    assert [j.id for j in kept] == [BASE, APP]
    assert taken == {BASE}
    with pytest.raises(InputError, match="jobs of that tag: t/app:app-2022@amd64"):
        only(jobs, "t/app:app-2022@riscv64")


def test_only_builds_one_job_and_takes_its_needs_from_staging(lab, calls, capsys):  # noqa: F811
    assert run_only(lab, APP, "--mode", "pr") == EXIT_PASSED
    assert calls.build == [(BASE, True), (APP, False)]  # the base is looked up, never built
    assert calls.convert == [APP]  # nor converted or tested here
    assert calls.handoff == []  # pr runs stage no SIF: they never publish
    data = summary(lab)
    assert [j["id"] for j in data["jobs"]] == [APP]  # the base is its own CI job's to report
    assert data["run"]["only"] == APP
    assert data["run"]["taken"] == [{"id": BASE, "result": "passed",
                                     "image": "127.0.0.1:5000/factory-staging/t/base@sha256:"
                                              + "ab" * 32}]
    assert data["publications"] == []  # --only never publishes
    no_traceback(capsys.readouterr())


def test_a_trusted_cell_leaves_its_tested_sif_in_staging(lab, calls, capsys):  # noqa: F811
    assert run_only(lab, APP, "--mode", "main") == EXIT_PASSED
    assert calls.handoff == [(APP, True)]
    job = summary(lab)["jobs"][0]
    assert job["stages"]["handoff"]["result"] == "passed"
    assert job["reason"].endswith("SIF staged")


def test_a_need_missing_from_staging_is_an_infrastructure_failure(lab, monkeypatch,  # noqa: F811
                                                                  capsys):
    def build(job, needs, ctx, log, *, reuse_only=False):
        if reuse_only:
            raise build_stage.NeedNotStaged(f"{job.id} is not there in staging as x:y; the CI "
                                            "job that builds it must pass first")
        return fake_built(job, needs, ctx, log)

    monkeypatch.setattr(build_stage, "build", build)
    assert run_only(lab, APP, "--mode", "pr") == EXIT_INFRASTRUCTURE
    data = summary(lab)
    assert data["run"]["status"] == "infrastructure unreachable"
    assert "not in staging" in data["run"]["reason"] and BASE in data["run"]["reason"]
    assert [(j["id"], j["result"]) for j in data["jobs"]] == [(APP, "skipped")]
    captured = capsys.readouterr()
    assert "not in staging" in captured.err
    no_traceback(captured)


def test_only_and_publish_do_not_mix(lab, capsys):  # noqa: F811
    assert run_only(lab, APP, "--stages", "build,convert,test,publish") == EXIT_BAD_INPUT
    assert "python -m pipeline publish" in capsys.readouterr().err
    assert cli.main(["publish", "--matrix", str(lab.matrix), "--mode", "pr"]) == EXIT_BAD_INPUT
    assert "pr runs never publish" in capsys.readouterr().err
    assert run_only(lab, "t/app:nope@amd64") == EXIT_BAD_INPUT
    assert not (lab.out / "summary.json").exists()  # bad input: nothing ran
