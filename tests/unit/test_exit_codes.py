"""Exit codes and the run's report, through ``pipeline.cli.main`` in-process.

The lab is faked (no Docker, no registry, no Apptainer): the infrastructure checks and the
stage functions are monkeypatched, so each run takes a fraction of a second.

    0 passed, 1 a job failed, 2 bad input, 3 the factory broke, 4 infrastructure missing,
    130 / 143 interrupted by SIGINT / SIGTERM
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace

import pytest

from pipeline import cli
from pipeline.errors import (
    EXIT_BAD_INPUT,
    EXIT_FACTORY_BROKE,
    EXIT_INFRASTRUCTURE,
    EXIT_JOB_FAILED,
    EXIT_PASSED,
)
from pipeline.published.artifact import Pushed
from pipeline.published.site import Site
from pipeline.run import publishing, scheduler
from pipeline.stages import build as build_stage
from pipeline.stages import convert as convert_stage
from pipeline.stages import test as test_stage
from pipeline.stages.test import TestResult as StageResult
from pipeline.tools import docker_engine, processes
from pipeline.tools.apptainer import Apptainer, ApptainerMissing
from pipeline.tools.git import Source
from pipeline.tools.registry.client import Registry, RegistryError
from tests.catalogues import plan as plan_of
from tests.catalogues import write

# The app image and the base cell it needs, both arches: 4 jobs, 2 tags.
SELECT = "t/app:app-2022@*"
APP = "t/app:app-2022@amd64"
JOBS = 4
STOPS_WITHIN = 10  # seconds


def fake_built(job, needs, ctx, log, *, reuse_only=False):
    log(f"building {job.id}")
    digest = "sha256:" + "ab" * 32
    repository = f"factory-staging/{job.repository}"
    return SimpleNamespace(
        tagged=f"127.0.0.1:5000/{repository}:x-{job.arch}",
        reference=f"127.0.0.1:5000/{repository}@{digest}", digest=digest,
        build_id="b" * 64, cached=False, sif_only=False, staging_repository=repository,
        base_name="", base_digest="", to_json=lambda: {"digest": digest})


def fake_converted(job, built, ctx, log):
    sif = ctx.sif_dir / f"{job.arch}.sif"
    return SimpleNamespace(sif=sif, cached=False, to_json=lambda: {"sif": str(sif)})


def fake_tests(job, sif, ctx, log, compile_in=None):
    return [StageResult("%test", "passed", "")]


def fake_publish(repository, tag, states, ctx, log):
    log(f"publishing {repository}:{tag}")
    return {"result": "published", "index": f"target.test/{repository}:{tag}@sha256:0",
            "tags": [tag]}


def fake_site(registry, scope, out, *, push, log):
    """The catalogue refreshed after publishing (tests/unit/test_catalog_run.py reads it)."""
    where = f"{registry.host}/{scope.catalog_repository}"
    return Site({}, (), Pushed(f"{where}:latest", f"{where}:sha256-0123456789ab",
                               "sha256:" + "c" * 64, True))


@pytest.fixture
def lab(tmp_path, monkeypatch):
    """A catalogue, an out dir, and a fake lab whose every part answers."""
    monkeypatch.setenv("PIPELINE_LAB_DIR", str(tmp_path / "lab"))
    monkeypatch.delenv("PIPELINE_OUT_DIR", raising=False)
    for name in ("PIPELINE_REGISTRY_PASSWORD", "PIPELINE_LIBRARY_TOKEN",
                 "PIPELINE_SIGNING_PASSPHRASE", "PIPELINE_SIGNING_KEY", "PIPELINE_STAGING",
                 "PIPELINE_PR_STAGING", "PIPELINE_STAGING_USERNAME",
                 "PIPELINE_STAGING_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PIPELINE_STAGING_KEY", "attestation-key-for-the-tests")
    client = docker_engine.BuildClient("buildkit", "true", "20.10.0")
    monkeypatch.setattr(docker_engine, "find_build_client", lambda settings: client)
    monkeypatch.setattr(docker_engine, "engine", object)
    monkeypatch.setattr(scheduler, "find_apptainer", lambda lab_dir, client: Apptainer(
        "container", "apptainer", "factory/apptainer:test", "true", "1.3.0"))
    monkeypatch.setattr(Registry, "answers", lambda self: True)
    monkeypatch.setattr(scheduler, "describe", lambda folder: Source("file:///x", "0" * 40))
    monkeypatch.setattr(build_stage, "build", fake_built)
    monkeypatch.setattr(convert_stage, "convert", fake_converted)
    monkeypatch.setattr(test_stage, "run_tests", fake_tests)
    monkeypatch.setattr(publishing, "publish_tag", fake_publish)
    monkeypatch.setattr(publishing, "make_site", fake_site)
    monkeypatch.setattr(Registry, "digest", lambda self, repository, reference: None)
    # main mode without asking any upstream or registry: the plan as pr mode makes it.
    real = cli.planned_for

    def planned_for(args, settings):
        mode, args.mode = args.mode, "pr"
        try:
            planned, target = real(args, settings)
        finally:
            args.mode = mode
        return planned, target

    monkeypatch.setattr(cli, "planned_for", planned_for)
    matrix = write(tmp_path / "catalogue")
    return SimpleNamespace(matrix=matrix, out=tmp_path / "out", root=tmp_path)


def run(lab, *extra: str) -> int:
    return cli.main(["run", "--matrix", str(lab.matrix), "--out", str(lab.out), "--select",
                     SELECT, "-j", "2", *extra])


def summary(lab) -> dict:
    return json.loads((lab.out / "summary.json").read_text())


def results(lab) -> dict:
    return {j["id"]: j["result"] for j in summary(lab)["jobs"]}


def no_traceback(captured) -> None:
    assert "Traceback" not in captured.out + captured.err


def test_all_passed_exits_0_and_writes_summary_and_junit(lab, capsys):
    assert run(lab, "--mode", "main") == EXIT_PASSED
    assert set(results(lab).values()) == {"passed"}
    data = summary(lab)
    assert data["run"]["status"] == "passed" and data["run"]["exit_code"] == 0
    assert {p["result"] for p in data["publications"]} == {"published"}
    junit = ET.parse(lab.out / "junit.xml").getroot()
    jobs = junit.find("testsuite[@name='jobs']")
    assert jobs.get("tests") == str(JOBS) and jobs.get("failures") == "0"
    case = jobs.find(f"testcase[@name='{APP}']")
    assert case.find("properties/property[@name='stage.build.result']").get("value") == "passed"
    tests = junit.find("testsuite[@name='tests']")  # one testcase per job and test
    assert [(c.get("classname"), c.get("name")) for c in tests.findall("testcase")
            if c.get("classname") == APP] == [(APP, "%test")]
    assert tests.get("tests") == str(JOBS) and tests.get("failures") == "0"
    no_traceback(capsys.readouterr())


def test_a_failed_job_exits_1_and_its_dependents_are_skipped(lab, monkeypatch, capsys):
    def build(job, needs, ctx, log, **_):
        if job.arch == "arm64":
            raise build_stage.BuildFailed("docker build failed:\n    E: no such package")
        return fake_built(job, needs, ctx, log)

    monkeypatch.setattr(build_stage, "build", build)
    assert run(lab, "--stages", "build,convert,test") == EXIT_JOB_FAILED
    found = results(lab)
    assert found["t/app:app-2022@arm64"] == "skipped" and found[APP] == "passed"
    failures = ET.parse(lab.out / "junit.xml").getroot().findall(".//testcase/failure")
    assert len(failures) == 1 and "no such package" in failures[0].text
    no_traceback(capsys.readouterr())


def test_bad_input_exits_2(lab, capsys):
    assert run(lab, "--stages", "convert") == EXIT_BAD_INPUT
    assert "--stages" in capsys.readouterr().err
    assert not lab.out.exists()


def test_an_unexpected_exception_exits_3_with_one_line_and_a_log(lab, monkeypatch, capsys):
    def broken(self, jobs=None):
        raise KeyError("factory bug")

    monkeypatch.setattr(scheduler.Run, "execute", broken)
    assert run(lab) == EXIT_FACTORY_BROKE
    captured = capsys.readouterr()
    no_traceback(captured)
    log = lab.out / "logs" / "factory-error.log"
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert lines == [f"the factory itself broke (KeyError: 'factory bug'); the traceback is in "
                     f"{log}"]
    assert "Traceback" in log.read_text() and "factory bug" in log.read_text()
    data = summary(lab)  # the summary is written all the same
    assert data["run"]["exit_code"] == EXIT_FACTORY_BROKE
    assert data["run"]["status"] == "factory error"
    assert len(data["jobs"]) == JOBS and {j["result"] for j in data["jobs"]} == {"skipped"}
    assert (lab.out / "junit.xml").exists()


def test_an_unexpected_exception_in_plan_exits_3(lab, monkeypatch, capsys):
    monkeypatch.setattr(cli, "plan_table", lambda *a: {}["boom"])
    assert cli.main(["plan", "--matrix", str(lab.matrix)]) == EXIT_FACTORY_BROKE
    captured = capsys.readouterr()
    no_traceback(captured)
    assert "KeyError: 'boom'" in captured.err and "factory-error.log" in captured.err


def test_an_unexpected_exception_in_lab_is_logged_in_the_lab_folder(lab, monkeypatch, capsys):
    monkeypatch.setattr(cli.lab_commands, "status", lambda settings: {}["status"])
    assert cli.main(["lab", "status"]) == EXIT_FACTORY_BROKE
    captured = capsys.readouterr()
    no_traceback(captured)
    assert str(lab.root / "lab" / "factory-error.log") in captured.err


@pytest.mark.parametrize("part", ["docker", "apptainer", "registry"])
def test_missing_infrastructure_exits_4_and_still_writes_the_summary(lab, monkeypatch, capsys,
                                                                      part):
    if part == "docker":
        def engine():
            raise docker_engine.DockerUnavailable("the Docker daemon is not reachable (gone)")
        monkeypatch.setattr(docker_engine, "engine", engine)
        why = "the Docker daemon is not reachable"
    elif part == "apptainer":
        def missing(lab_dir, client):
            raise ApptainerMissing("no Apptainer runtime: none on the host")
        monkeypatch.setattr(scheduler, "find_apptainer", missing)
        why = "no Apptainer runtime"
    else:
        monkeypatch.setattr(Registry, "answers", lambda self: False)
        why = "the pr staging registry 127.0.0.1:5001 does not answer"
    assert run(lab) == EXIT_INFRASTRUCTURE
    captured = capsys.readouterr()
    no_traceback(captured)
    assert f"infrastructure unreachable: {why}" in captured.err
    data = summary(lab)
    assert data["run"]["status"] == "infrastructure unreachable"
    assert data["run"]["exit_code"] == EXIT_INFRASTRUCTURE and why in data["run"]["reason"]
    assert all(j["result"] == "failed" and why in j["reason"] for j in data["jobs"])


def test_an_unreachable_registry_at_plan_time_exits_4(lab, monkeypatch, capsys):
    def planned_for(args, settings):
        raise RegistryError("registry docker.io: GET t/app: connection failed "
                            "(ConnectionError); gave up after retries")

    monkeypatch.setattr(cli, "planned_for", planned_for)
    assert cli.main(["plan", "--matrix", str(lab.matrix), "--mode", "main"]) == EXIT_INFRASTRUCTURE
    assert run(lab, "--mode", "main") == EXIT_INFRASTRUCTURE
    captured = capsys.readouterr()
    no_traceback(captured)
    assert "infrastructure unreachable: registry docker.io" in captured.err
    assert summary(lab)["run"]["exit_code"] == EXIT_INFRASTRUCTURE


def test_a_publish_exception_fails_that_tag_and_the_others_go_on(lab, monkeypatch, capsys):
    def publish(repository, tag, states, ctx, log):
        if tag == "app-2022":
            raise KeyError("token")
        return fake_publish(repository, tag, states, ctx, log)

    monkeypatch.setattr(publishing, "publish_tag", publish)
    assert run(lab, "--mode", "main") == EXIT_JOB_FAILED
    captured = capsys.readouterr()
    no_traceback(captured)
    data = summary(lab)
    by_tag = {p["tag"]: p for p in data["publications"]}
    assert by_tag["app-2022"]["result"] == "failed"
    assert by_tag["app-2022"]["reason"] == "KeyError: 'token'"
    others = [p for t, p in by_tag.items() if t != "app-2022"]
    assert others and all(p["result"] == "published" for p in others)
    jobs = {j["id"]: j for j in data["jobs"]}
    assert jobs[APP]["result"] == "failed" and "KeyError: 'token'" in jobs[APP]["reason"]
    assert "KeyError" in Path(by_tag["app-2022"]["log"]).read_text()  # with its traceback
    assert 'message="KeyError' in (lab.out / "junit.xml").read_text()


def test_known_and_planned_jobs_match(lab):
    # The selection the tests above rely on: the app and the base cell it needs, 2 arches.
    assert len(plan_of(lab.matrix, select=[SELECT])) == EXIT_INFRASTRUCTURE


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_the_run_kills_its_processes_and_removes_scratch(lab, monkeypatch,
                                                                        capsys, signum, code):
    """The conversion of one job runs a (tracked) process; the signal comes while it runs."""
    scratch = lab.root / "lab" / "scratch"
    pids = []

    def convert(job, built, ctx, log):
        if job.id != "t/base:ompi-4.1@amd64":
            time.sleep(0.2)
            return fake_converted(job, built, ctx, log)
        stem = Path(scheduler.sif_name(job.id)).stem
        (scratch / stem).mkdir(parents=True)
        (scratch / stem / "layer").write_bytes(b"x" * 1000)
        os.kill(os.getpid(), signum)
        processes.run_logged(["sh", "-c", "echo $$; exec sleep 60"],
                             lambda line: [pids.append(line), log(line)])
        return fake_converted(job, built, ctx, log)

    monkeypatch.setattr(convert_stage, "convert", convert)
    start = time.monotonic()
    assert run(lab, "--stages", "build,convert,test") == code
    assert time.monotonic() - start < STOPS_WITHIN
    found = results(lab)
    assert found["t/base:ompi-4.1@amd64"] == "interrupted"
    assert found[APP] in ("skipped", "interrupted")  # never started: its need was stopped
    jobs = {j["id"]: j for j in summary(lab)["jobs"]}
    name = signal.Signals(signum).name
    assert jobs["t/base:ompi-4.1@amd64"]["reason"] == f"interrupted by {name}"
    assert jobs["t/base:ompi-4.1@amd64"]["stages"]["convert"]["result"] == "interrupted"
    assert summary(lab)["run"] == {**summary(lab)["run"], "status": "interrupted",
                                   "exit_code": code, "signal": name}
    assert not list(scratch.iterdir())
    assert pids and not Path(f"/proc/{pids[0]}").exists()
    captured = capsys.readouterr()
    no_traceback(captured)
    assert f"interrupted by {name}" in captured.err
    assert 'type="interrupted"' in (lab.out / "junit.xml").read_text()


def test_every_container_of_a_run_is_labelled_and_named():
    apptainer = Apptainer("container", "apptainer", "factory/apptainer:test", "docker", "1.3",
                          run_id="r1")
    first = apptainer.argv(["build", "x.sif", "x.def"], [], docker_socket=True)
    second = apptainer.argv(["test", "x.sif"], [], unprivileged=True)
    for argv in (first, second):
        assert argv[:2] == ["docker", "run"]
        assert argv[argv.index("--label") + 1] == "org.sjtuhpc.factory.run=r1"
        assert argv[argv.index("--name") + 1].startswith("factory-r1-")
    assert first[first.index("--name") + 1] != second[second.index("--name") + 1]
    host = Apptainer("host", "apptainer", None, None, "1.3", run_id="r1")
    assert "--label" not in host.argv(["build", "x.sif", "x.def"], [])


def test_stop_all_ends_process_groups_and_refuses_new_processes(tmp_path):
    started = tmp_path / "started"
    lines: list = []
    errors: list = []

    def child() -> None:
        try:  # a shell whose own child (a grandchild here) would outlive a plain kill
            processes.run_logged(["sh", "-c", f"sleep 60 & echo $! > {started}; wait"],
                                 lines.append)
        except Exception as err:  # the thread reports what it saw
            errors.append(err)

    processes.allow_again()  # an interrupted run before this one leaves them refused
    thread = threading.Thread(target=child)
    thread.start()
    try:
        deadline = time.monotonic() + 5
        while not (started.exists() and started.read_text().strip()):
            assert time.monotonic() < deadline and not errors, errors
            time.sleep(0.02)
        grandchild = int(started.read_text())
        assert processes.stop_all(grace=2) and processes.stopping()
        thread.join(5)
        assert not thread.is_alive() and errors  # its command failed: it was killed
        time.sleep(0.1)
        state = Path(f"/proc/{grandchild}/stat")
        assert not state.exists() or state.read_text().split(") ")[1][0] == "Z"
        with pytest.raises(processes.Stopping):
            processes.run_logged(["true"], lines.append)
    finally:
        processes.allow_again()
