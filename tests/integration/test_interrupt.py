"""Ctrl-C and SIGTERM stop a run for real: exit 130/143, no container, no scratch left.

``python -m pipeline run`` is started as a subprocess on a one-job catalogue (a Debian 12
image with 200 MB of random data, so that its conversion takes a while).  Once its
conversion container is up (found by the run's label), the signal is sent: SIGINT to the
whole process group, as a terminal's Ctrl-C does, or SIGTERM to the process alone, as
``kill`` does.  The second test reuses the image the first built, so its conversion starts
at once, and converts on disk, so that a scratch folder is there to be removed.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from pipeline.names import sif_name
from pipeline.tools.apptainer import RUN_LABEL
from pipeline.tools.registry.client import Registry
from tests.catalogues import init_repo, lab_catalogue, write
from tests.integration.lab import REPO, docker, lab_settings

JOB = "factorytest/interrupt:big@amd64"
CATALOGUE = lab_catalogue("factorytest/interrupt", "factorytest/interrupt", """\
images:
  - name: big
    kind: base
    recipe: images/big
    axes: {os: [debian12], arch: [amd64]}
    tag: big
""")
FILES = {
    "images/big/Dockerfile": ("ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nCOPY .test-run /\n"
                              "RUN head -c 200000000 /dev/urandom > /big.bin\n"),
    "images/big/test.sh": "#!/bin/sh\ntest -s /big.bin\n",
}
CONVERSION_STARTS = 900  # seconds: the first run bootstraps (or reuses) and builds the image
STOPS = 30  # seconds from the signal to the exit
SIGINT_EXIT, SIGTERM_EXIT = 128 + signal.SIGINT, 128 + signal.SIGTERM  # 130, 143


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    root = tmp_path_factory.mktemp("interrupt")
    matrix = write(root, CATALOGUE, {**FILES, "images/big/.test-run": uuid.uuid4().hex})
    (root / ".gitignore").write_text("out*/\n")
    init_repo(root)
    return matrix


def labelled(run_id: str) -> list[str]:
    return docker("ps", "-a", "--filter", f"label={RUN_LABEL}={run_id}",
                  "--format", "{{.ID}} {{.Command}}").splitlines()


def processes_mentioning(text: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(f"{entry.name}: {cmdline}")
    return found


def interrupt(matrix: Path, out: Path, signum: int, **extra_env: str
              ) -> tuple[int, float, str, dict]:
    """Run, signal once the conversion container runs; (code, seconds to exit, run id,
    summary)."""
    settings = lab_settings()
    console = out.parent / f"{out.name}.console"
    env = {**os.environ, "PIPELINE_LAB_DIR": str(settings.lab_dir),
           "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", **extra_env}
    if not Registry(settings.pr_registry).answers():
        # A lab from before the pr registry: pr staging goes to the lab registry instead.
        env["PIPELINE_PR_STAGING"] = settings.registry
    with open(console, "w") as handle:
        child = subprocess.Popen(
            [sys.executable, "-m", "pipeline", "run", "--matrix", str(matrix), "--out",
             str(out), "--stages", "build,convert,test", "-j", "1"],
            cwd=matrix.parent, env=env, stdout=handle, stderr=subprocess.STDOUT,
            start_new_session=True)
    try:
        deadline = time.monotonic() + CONVERSION_STARTS
        run_id = None
        while time.monotonic() < deadline and child.poll() is None:
            match = re.search(r"run (\S+): 1 job", console.read_text())
            if match:
                run_id = match.group(1)
                if any("apptainer" in line for line in labelled(run_id)):
                    break
            time.sleep(0.5)
        assert child.poll() is None and run_id, (
            f"the conversion never started:\n{console.read_text()[-3000:]}")
        time.sleep(2)  # well into the conversion
        sent = time.monotonic()
        if signum == signal.SIGINT:
            os.killpg(child.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        else:
            child.send_signal(signal.SIGTERM)  # what `kill` does
        code = child.wait(timeout=STOPS + 30)
        took = time.monotonic() - sent
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
    summary = json.loads((out / "summary.json").read_text())
    return code, took, run_id, summary


def check_stopped(run_id: str, out: Path, summary: dict, name: str) -> None:
    assert labelled(run_id) == [], "containers of the run are left"
    assert processes_mentioning(str(out)) == [], "processes of the run are left"
    scratch = lab_settings().lab_dir / "scratch"
    stem = Path(sif_name(JOB)).stem
    assert not (scratch / stem).exists() and not (scratch / f"test-{stem}").exists()
    assert not (out / "sif" / (sif_name(JOB) + ".partial")).exists()
    job = {j["id"]: j for j in summary["jobs"]}[JOB]
    assert job["result"] == "interrupted"
    assert job["reason"] == f"interrupted by {name}"
    assert job["stages"]["convert"]["result"] == "interrupted"
    assert summary["run"]["status"] == "interrupted" and summary["run"]["signal"] == name
    junit = (out / "junit.xml").read_text()
    assert 'type="interrupted"' in junit


def test_ctrl_c_stops_the_conversion_and_exits_130(catalogue):
    out = catalogue.parent / "out-sigint"
    code, took, run_id, summary = interrupt(catalogue, out, signal.SIGINT)
    assert code == SIGINT_EXIT, (out.parent / "out-sigint.console").read_text()[-3000:]
    assert took < STOPS
    check_stopped(run_id, out, summary, "SIGINT")
    assert summary["run"]["exit_code"] == SIGINT_EXIT


def test_sigterm_stops_the_conversion_and_exits_143(catalogue):
    out = catalogue.parent / "out-sigterm"
    # On disk this time: the scratch folder is on the host while the conversion runs.
    code, took, run_id, summary = interrupt(catalogue, out, signal.SIGTERM,
                                            PIPELINE_CONVERT_SCRATCH="disk")
    assert code == SIGTERM_EXIT, (out.parent / "out-sigterm.console").read_text()[-3000:]
    assert took < STOPS
    check_stopped(run_id, out, summary, "SIGTERM")
    assert summary["run"]["exit_code"] == SIGTERM_EXIT
