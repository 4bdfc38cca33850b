"""One CI job per plan job, for real: ``run --only`` per cell, then ``publish``.

Each cell runs as a CI runner runs it: a process of its own with an out/ folder of its own,
sharing nothing with the other cells but the lab's trusted registry (staging).  A base tag
and an app on it, both arches, in a namespace of their own:

* the app's cell before its base's fails as infrastructure (exit 4): its need is not in
  staging, and it is never built by the wrong job;
* after the bases, the app's amd64 cell takes its base from staging by digest;
* ``publish`` with the arm64 cells not run publishes nothing: every tag lacks an arch,
  and the refusal names it.  (The whole loop with both arches, through GitLab's own job
  runner: tests/integration/test_gitlab_ci_local.py.)
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from pipeline.errors import EXIT_INFRASTRUCTURE, EXIT_JOB_FAILED
from tests.catalogues import init_repo, lab_catalogue, write
from tests.integration.lab import REPO, bring_up, trusted
from tests.integration.test_publish import FILES as PLAIN_FILES
from tests.integration.test_publish import IMAGES as PLAIN_IMAGES

IMAGES = PLAIN_IMAGES + """\
  - name: app
    kind: app
    recipe: images/app
    base: plain
    axes: {os: [debian12], arch: [amd64, arm64]}
    tag: app
"""
FILES = {**PLAIN_FILES,
         "images/app/Dockerfile": "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n"
                                  "RUN cp /etc/factory-test-run /etc/app-built\n",
         "images/app/test.sh": "#!/bin/sh\ntest -s /etc/app-built\n"}


def pipeline(root: Path, out: Path, command: str, *extra: str) -> tuple[int, dict, str]:
    """``python -m pipeline COMMAND`` as a CI job runs it; (exit code, summary, output)."""
    done = subprocess.run([sys.executable, "-m", "pipeline", command, "--matrix",
                           str(root / "matrix.yaml"), "--out", str(out), "--mode", "main",
                           *extra], cwd=REPO, capture_output=True, text=True, check=False)
    summary = json.loads((out / "summary.json").read_text())
    return done.returncode, summary, done.stdout + done.stderr


@pytest.fixture(scope="module")
def ci(tmp_path_factory):
    bring_up()
    root = tmp_path_factory.mktemp("ci-handoff")
    namespace = f"factorytest-ci-{uuid.uuid4().hex[:8]}"
    write(root, lab_catalogue(f"{namespace}/base", f"{namespace}/app", IMAGES),
          {**FILES, "images/base/plain/.test-run": uuid.uuid4().hex})
    (root / ".gitignore").write_text("out*/\n")
    init_repo(root)
    cells = {}

    def cell(job_id: str) -> tuple[int, dict, str]:
        out = root / f"out-{len(cells)}"  # a runner of its own
        cells[job_id] = pipeline(root, out, "run", "--only", job_id)
        return cells[job_id]

    return {"root": root, "base": f"{namespace}/base", "app": f"{namespace}/app",
            "cell": cell, "cells": cells}


def test_cells_hand_their_images_over_through_staging_and_publish_assembles_them(ci):
    base, app, cell, root = ci["base"], ci["app"], ci["cell"], ci["root"]
    registry = trusted()

    # The app's cell first: its base is not staged yet.  Never built here: exit 4.
    code, summary, output = cell(f"{app}:app@amd64")
    assert code == EXIT_INFRASTRUCTURE, output
    assert "not in staging" in summary["run"]["reason"]
    assert f"{base}:plain@amd64" in summary["run"]["reason"]
    assert [(j["id"], j["result"]) for j in summary["jobs"]] == [(f"{app}:app@amd64",
                                                                  "skipped")]

    built = {}
    for job_id in (f"{base}:plain@amd64", f"{app}:app@amd64"):
        code, summary, output = cell(job_id)
        assert code == 0, output
        [job] = summary["jobs"]
        assert job["id"] == job_id and job["result"] == "passed"
        assert job["stages"]["handoff"]["result"] == "passed"  # its tested SIF is staged
        built[job_id] = job["image_digest"]
    taken = ci["cells"][f"{app}:app@amd64"][1]["run"]["taken"]
    assert taken == [{"id": f"{base}:plain@amd64", "result": "passed",
                      "image": f"127.0.0.1:5000/factory-staging/{base}@"
                               f"{built[f'{base}:plain@amd64']}"}]

    # publish with the arm64 cells not run: every tag lacks an arch, nothing goes out.
    # (Both arches staged and published: tests/integration/test_gitlab_ci_local.py.)
    code, summary, output = pipeline(root, root / "out-publish", "publish")
    assert code == EXIT_JOB_FAILED, output
    publications = {p["repository"]: p for p in summary["publications"]}
    assert publications[base]["result"] == "refused", output
    assert "arm64" in publications[base]["reason"]
    assert app not in publications or publications[app]["result"] == "refused"
    jobs = {j["id"]: j for j in summary["jobs"]}
    assert jobs[f"{app}:app@amd64"]["result"] == "passed"  # taken from staging, SIF and all
    assert jobs[f"{app}:app@arm64"]["result"] == "failed"
    assert "no image in staging" in jobs[f"{app}:app@arm64"]["reason"]
    assert registry.manifest(base, "plain") is None and registry.manifest(app, "app") is None
