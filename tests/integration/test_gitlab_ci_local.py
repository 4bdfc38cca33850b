"""The GitLab pipelines for real: ``.gitlab-ci.yml`` and its child, run by gitlab-ci-local.

gitlab-ci-local (4.60.0, installed by ``.ci/run`` under ``.lab/tools/``) runs a GitLab
pipeline on this host with the shell executor, each job in a copy of the repository of
its own (``--shell-isolation``), as a runner's checkout.  Here it runs the parent pipeline
of a main-branch push on a protected ref: the ``plan`` job writes the child pipeline, the
``factory`` trigger job includes it from the plan job's artifact and runs it: one job per
cell (``run --only JOB --stages build,convert,test``), then ``publish``, then ``report``
over every job's output.  The jobs are the real work: they build, convert and test against
the lab, staging in the trusted registry, and publish to it (the ``local`` target).

A small catalogue in a repository of its own (a copy of this one's code): one Debian 12
base tag and an app on it, both arches, in a namespace of its own.  Afterwards the lab
registry must hold both tags as one list of the two arches, with the digests the cells
built, and each arch's SIF, the very one its cell tested.

What gitlab-ci-local 4.60.0 does not do, and how this test stands in for it:

* ``workflow:rules`` are not evaluated: MODE is given with ``--variable MODE=main``, as the
  rule for a push to the default branch gives it (the rules themselves are checked in
  tests/unit/test_ci_generators.py);
* command-line variables do not reach a child pipeline, only the trigger job's and the
  parent's YAML variables do: ``CI_COMMIT_REF_PROTECTED`` (a protected ref, which publish's
  rule wants) comes from ``.gitlab-ci-local-variables.yml``, read by parent and child;
* ``strategy: depend`` does not fail the parent when a child job fails: the test reads each
  job's result from gitlab-ci-local's report and the jobs' own ``out/summary.json``;
* runner ``tags``, ``retry``, ``interruptible`` and ``resource_group`` are ignored.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml

from pipeline.ci.levels import ci_name
from tests.catalogues import init_repo, lab_catalogue, write
from tests.integration.lab import REPO, bring_up, lab_settings, trusted
from tests.integration.test_ci_handoff import FILES, IMAGES  # the same two images

VERSION = "4.60.0"
TOOL = Path("tools") / "gitlab-ci-local" / "node_modules" / ".bin" / "gitlab-ci-local"
INSTALL = (f"bash .ci/install-gitlab-ci-local (.ci/run does: npm install --prefix "
           f".lab/tools/gitlab-ci-local gitlab-ci-local@{VERSION})")
# The project's own files a runner's checkout has, copied into the test's repository.
PROJECT = ("pipeline", "pyproject.toml", "README.md", ".gitlab-ci.yml", ".ci")
STATE = ".gitlab-ci-local"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
SIF_MEDIA_TYPE = "application/vnd.sylabs.sif.layer.v1.sif"
TIMEOUT = 40 * 60
# Not handed to the runner: target, library and staging credentials, another out/ folder,
# and whatever Python environment pytest runs in (the jobs make their own).
DROPPED = ("PIPELINE_REGISTRY_", "PIPELINE_LIBRARY", "PIPELINE_STAGING", "PIPELINE_PR_STAGING",
           "PIPELINE_SIGNING", "PIPELINE_OUT_DIR", "PIPELINE_LAB_DIR", "FACTORY_", "VIRTUAL_ENV",
           "PYTHONPATH", "CI_", "GITLAB_", "FORCE_COLOR",
           "PIPELINE_BUILD_CACHE")  # the cells build as CI does: with the registry cache

# gitlab-ci-local's report, one line per job that ran: " PASS  [factory] -> name".
REPORT_LINE = re.compile(r"^\s*(PASS|FAIL|WARN)\s+(?:\[(?P<trigger>[^\]]+)\] -> )?(?P<job>\S+)")


def gitlab_ci_local() -> str:
    """The gitlab-ci-local to run: GITLAB_CI_LOCAL, the lab's tools folder, or PATH;
    skip (saying how to install it) when there is none, or nothing to run it with."""
    lab_dir = lab_settings().lab_dir
    for candidate in (os.environ.get("GITLAB_CI_LOCAL"), str(lab_dir / TOOL),
                      shutil.which("gitlab-ci-local")):
        if candidate and Path(candidate).is_file():
            break
    else:
        pytest.skip(f"gitlab-ci-local is not installed: {INSTALL}")
    if not shutil.which("rsync"):
        pytest.skip("gitlab-ci-local copies job folders with rsync, which is not installed "
                    "(apt-get install rsync; .ci/run does)")
    try:
        done = subprocess.run([candidate, "--version"], capture_output=True, text=True,
                              timeout=60, check=False)
    except OSError as err:
        pytest.skip(f"{candidate} does not start ({err}); it needs Node.js 18 or later")
    if done.returncode:
        pytest.skip(f"{candidate} --version failed: {(done.stderr or done.stdout).strip()}")
    return candidate


def checkout(root: Path, namespace: str) -> None:
    """A repository as a runner checks it out: this project's code, the small catalogue."""
    for name in PROJECT:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, root / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(source, root / name)
    write(root, lab_catalogue(f"{namespace}/base", f"{namespace}/app", IMAGES),
          {**FILES, "images/base/plain/.test-run": uuid.uuid4().hex})
    (root / ".gitignore").write_text("out/\n")
    init_repo(root)
    # Not committed: gitlab-ci-local reads it itself, for the parent and the child.
    (root / ".gitlab-ci-local-variables.yml").write_text('CI_COMMIT_REF_PROTECTED: "true"\n')


def environment(lab_dir: Path) -> dict:
    """The runner's environment: the lab (its registries' logins, the attestation key),
    no target credentials, and the jobs' shared virtualenvs beside the lab."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(DROPPED)}
    return {**env, "PIPELINE_LAB_DIR": str(lab_dir),
            "FACTORY_VENVS": str(lab_dir / "ci" / "venvs")}


def report(output: str) -> dict:
    """gitlab-ci-local's report: {(trigger job or None, job): PASS|FAIL|WARN}."""
    found = {}
    for line in output.splitlines():
        match = REPORT_LINE.match(line)
        if match:
            found[(match.group("trigger"), match.group("job"))] = match.group(1)
    return found


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    tool = gitlab_ci_local()
    settings = bring_up()
    root = tmp_path_factory.mktemp("gitlab-ci-local")
    namespace = f"factorytest-gcl-{uuid.uuid4().hex[:8]}"
    checkout(root, namespace)
    home = tmp_path_factory.mktemp("gitlab-ci-local-home")  # no user's variables.yml
    done = subprocess.run([tool, "--shell-isolation", "--no-color", "--home", str(home),
                           "--variable", "MODE=main"], cwd=root, env=environment(
                               settings.lab_dir.resolve()),
                          capture_output=True, text=True, timeout=TIMEOUT, check=False)
    output = done.stdout + done.stderr
    (root / "gitlab-ci-local.log").write_text(output)  # kept for a look after a failure
    state = root / STATE
    child = yaml.safe_load((state / "artifacts" / "plan" / "child-pipeline.yml").read_text())
    return {"root": root, "state": state, "code": done.returncode, "output": output,
            "report": report(output), "child": child, "base": f"{namespace}/base",
            "app": f"{namespace}/app"}


def child_jobs(child: dict) -> list[str]:
    return [name for name in child if name not in ("stages", "variables", "default")]


def cells(child: dict) -> list[str]:
    return [name for name in child_jobs(child) if name not in ("publish", "report")]


def artifacts(pipeline: dict, job: str) -> Path:
    """What the job kept: its output folder, out/<job name>/."""
    return pipeline["state"] / "artifacts" / job / "out" / job


def summary(pipeline: dict, job: str) -> dict:
    return json.loads((artifacts(pipeline, job) / "summary.json").read_text())


def test_the_parent_plans_and_the_child_runs_every_job(pipeline):
    output = pipeline["output"]
    assert pipeline["code"] == 0, output
    assert pipeline["report"][(None, "plan")] == "PASS", output
    assert pipeline["report"][(None, "factory")] == "PASS", output
    child, base, app = pipeline["child"], pipeline["base"], pipeline["app"]
    ids = [f"{repo}:{tag}@{arch}" for repo, tag in ((base, "plain"), (app, "app"))
           for arch in ("amd64", "arm64")]
    names = {cell: ci_name(cell) for cell in ids}
    assert sorted(child_jobs(child)) == sorted([*names.values(), "publish", "report"])
    assert child["variables"] == {"MODE": "main"}
    assert child["stages"] == ["level-0", "level-1", "publish", "report"]
    for cell, name in names.items():
        assert child[name]["script"] == [
            f"python -m pipeline run --mode $MODE --only {shlex.quote(cell)} "
            f'--stages build,convert,test --out "$CI_PROJECT_DIR"/out/{name}']
    # Every child job ran and passed, publish included (the ref is protected).
    assert {job: result for (trigger, job), result in pipeline["report"].items()
            if trigger == "factory"} == dict.fromkeys(child_jobs(child), "PASS"), output


def test_each_cell_built_converted_and_tested_its_one_job(pipeline):
    for name in cells(pipeline["child"]):
        data = summary(pipeline, name)
        assert data["run"]["exit_code"] == 0, data["run"]
        [job] = data["jobs"]
        assert job["result"] == "passed", job
        assert {stage: job["stages"][stage]["result"] for stage in ("build", "convert", "test")
                } == dict.fromkeys(("build", "convert", "test"), "passed"), job
        assert job["image_digest"].startswith("sha256:")
        assert (artifacts(pipeline, name) / "junit.xml").is_file()
        assert not list(artifacts(pipeline, name).rglob("*.sif"))  # SIFs go via staging


def test_publish_published_both_tags_as_lists_of_what_the_cells_built(pipeline):
    data = summary(pipeline, "publish")
    assert data["run"]["exit_code"] == 0, data["run"]
    catalog = pipeline["base"].split("/")[0] + "/catalog"  # refreshed after the tags
    assert {p["repository"]: p["result"] for p in data["publications"]} == {
        pipeline["base"]: "published", pipeline["app"]: "published", catalog: "published"}
    built, tested_sifs = {}, {}
    for name in cells(pipeline["child"]):
        [job] = summary(pipeline, name)["jobs"]
        built[job["id"]] = job["image_digest"]
        tested_sifs[job["id"]] = job["stages"]["handoff"]["sif"]  # staged after its tests
    registry = trusted()
    for repository, tag in ((pipeline["base"], "plain"), (pipeline["app"], "app")):
        body, media_type, _ = registry.manifest(repository, tag)
        assert media_type == OCI_INDEX
        index = json.loads(body)
        assert {m["platform"]["architecture"]: m["digest"] for m in index["manifests"]} == {
            arch: built[f"{repository}:{tag}@{arch}"] for arch in ("amd64", "arm64")}
        for arch in ("amd64", "arm64"):
            sif = json.loads(registry.manifest(f"{repository}-sif", f"{tag}-{arch}")[0])
            assert sif["layers"][0]["mediaType"] == SIF_MEDIA_TYPE
            assert sif["layers"][0]["digest"] == tested_sifs[f"{repository}:{tag}@{arch}"]


def test_the_report_job_gathered_every_job_s_summary(pipeline):
    text = (artifacts(pipeline, "report") / "report.md").read_text()
    for repository in (pipeline["base"], pipeline["app"]):
        assert repository in text, text
