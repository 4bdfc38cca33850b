"""The CI files, checked as GitHub and GitLab would read them, and against the generators.

Offline and fast: check-jsonschema's vendored schemas (``--builtin-schema``), zizmor
``--offline`` and actionlint with shellcheck.  The slow ones (GitLab's schema on four
generated child pipelines, zizmor, actionlint) start side by side in the background at
the first test and are read by their own tests; the small files are checked in this
process through check-jsonschema's own command.  Then the project's own
rules: every action pinned to a commit, no expression inside a script, secrets only where
an environment guards them, a build job for every level and part the generator can emit,
and the generated matrices within GitHub's limits for the repository's own matrix.yaml.
"""

from __future__ import annotations

import contextlib
import io
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.catalogue.validation import load_catalogue
from pipeline.catalogue.yaml_reader import parse_yaml
from pipeline.ci import github, gitlab
from pipeline.ci.levels import ci_levels, placements
from pipeline.cli import main
from pipeline.planning.changes import MODES
from pipeline.planning.planner import plan_with_catalogue
from pipeline.planning.recipe_files import WorkTree

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
FACTORY = WORKFLOWS / "factory.yml"
REPORTER = WORKFLOWS / "factory-report.yml"
GITLAB_CI = ROOT / ".gitlab-ci.yml"
MATRIX = ROOT / "matrix.yaml"
PINNED = re.compile(r"^\s*(?:-\s+)?uses:\s*([^\s#]+)\s*(#.*)?$")
ACTION_AT_SHA = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_./-]+@[0-9a-f]{40}$")
VERSION_COMMENT = re.compile(r"^# v\d+\.\d+\.\d+$")
ARTIFACT_NAME_FORBIDDEN = set('":<>|*?\\/\r\n')


def check_jsonschema(*args: str) -> tuple[int, str]:
    """``check-jsonschema ARGS`` through its own command, in this process: the same
    vendored schemas and checks as the command line, without a second interpreter."""
    from check_jsonschema import main as command  # noqa: PLC0415 - a test extra

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = command(list(args), standalone_mode=False)
    return code, out.getvalue()


def tool(name: str) -> str:
    """An executable of the test extra: beside this Python, else on PATH."""
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    assert found, f"{name} is not installed: pip install -e '.[test]'"
    return found


class Linters:
    """The slow checks, started together once, each read by its own test."""

    def __init__(self, children: list[Path]):
        self.children = children
        argv = {
            "gitlab-children": [sys.executable, "-m", "check_jsonschema", "--builtin-schema",
                                "vendor.gitlab-ci", *map(str, children)],
            "zizmor": [tool("zizmor"), "--offline", "--no-progress", "--color", "never",
                       str(WORKFLOWS)],
            # actionlint runs shellcheck on every `run:` script; pyflakes is not installed.
            "actionlint": [tool("actionlint"), "-no-color", "-shellcheck",
                           tool("shellcheck"), "-pyflakes", "", str(FACTORY), str(REPORTER)],
        }
        self.processes = {name: subprocess.Popen(
            command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for name, command in argv.items()}
        self.results: dict[str, tuple[int, str]] = {}

    def result(self, name: str) -> tuple[int, str]:
        if name not in self.results:
            out, _ = self.processes[name].communicate(timeout=120)
            self.results[name] = (self.processes[name].returncode, out)
        return self.results[name]


def child_pipelines(folder: Path) -> list[Path]:
    """The child pipelines of this repository's matrix.yaml in each mode, and of an empty
    plan."""
    written = []
    for mode in MODES:
        out = folder / f"child-{mode}.yml"
        assert main(["ci", "gitlab", "--matrix", str(MATRIX), "--mode", mode,
                     "--out", str(out)]) == 0
        written.append(out)
    empty = folder / "child-empty.yml"
    empty.write_text(gitlab.child_pipeline(ci_levels([]), "main"))
    return [*written, empty]


@pytest.fixture(scope="module")
def linters(tmp_path_factory):
    started = Linters(child_pipelines(tmp_path_factory.mktemp("children")))
    yield started
    for process in started.processes.values():
        if process.poll() is None:
            process.kill()
            process.wait()


def load(path: Path) -> dict:
    data = yaml.safe_load(path.read_text())
    data["on"] = data.pop(True, data.get("on"))  # YAML 1.1 reads the key `on` as true
    return data


@pytest.fixture(scope="module")
def factory() -> dict:
    return load(FACTORY)


def steps(job: dict) -> list[dict]:
    return job.get("steps", [])


# GitHub's schemas, zizmor, actionlint


def test_the_workflows_fit_githubs_schema_and_every_job_has_a_timeout(linters):
    files = [str(FACTORY), str(REPORTER)]
    for schema in ("vendor.github-workflows", "custom.github-workflows-require-timeout"):
        code, out = check_jsonschema("--builtin-schema", schema, *files)
        assert code == 0, out


def test_zizmor_finds_nothing(linters):
    code, out = linters.result("zizmor")
    assert code == 0, out
    assert "No findings to report" in out


def test_actionlint_and_shellcheck_find_nothing(linters):
    code, out = linters.result("actionlint")
    assert code == 0, out
    assert out.strip() == ""


# GitLab's schema: the parent pipeline and the child pipelines of this repository's plan


def test_the_child_pipelines_fit_gitlabs_schema(linters):
    code, out = linters.result("gitlab-children")
    assert code == 0, out
    assert [p.name for p in linters.children] == [
        "child-pr.yml", "child-main.yml", "child-nightly.yml", "child-empty.yml"]
    assert "nothing-to-build" in linters.children[-1].read_text()


def test_the_parent_pipeline_fits_gitlabs_schema():
    if not GITLAB_CI.exists():
        pytest.skip(".gitlab-ci.yml is not written yet (the GitLab side of issue #10)")
    code, out = check_jsonschema("--builtin-schema", "vendor.gitlab-ci", str(GITLAB_CI))
    assert code == 0, out


# The project's own rules for the workflow files


@pytest.mark.parametrize("path", [FACTORY, REPORTER], ids=lambda p: p.name)
def test_every_action_is_pinned_to_a_commit_with_its_version(path):
    uses = [PINNED.match(line) for line in path.read_text().splitlines()]
    found = [m for m in uses if m]
    assert found
    for match in found:
        assert ACTION_AT_SHA.match(match.group(1)), f"not pinned to a commit: {match.group(0)}"
        assert VERSION_COMMENT.match(match.group(2) or ""), (
            f"no '# vX.Y.Z' comment: {match.group(0)}")


@pytest.mark.parametrize("path", [FACTORY, REPORTER], ids=lambda p: p.name)
def test_permissions_timeouts_checkouts_and_scripts(path):
    data = load(path)
    assert data["permissions"] == {}
    for name, job in data["jobs"].items():
        assert "timeout-minutes" in job, name
        assert isinstance(job.get("permissions"), dict), f"{name} sets no permissions"
        for step in steps(job):
            if step.get("uses", "").startswith("actions/checkout@"):
                assert step["with"]["persist-credentials"] is False, name
            # Values reach scripts through env:, never as ${{ }} inside them.
            assert "${{" not in step.get("run", ""), f"{name}: {step.get('name')}"


def test_secrets_only_in_trusted_steps_behind_an_environment(factory):
    for name, job in factory["jobs"].items():
        for step in steps(job):
            if not any("secrets." in str(v) for v in step.get("env", {}).values()):
                continue
            if name == "publish":
                assert job["environment"] == "factory-publish"
                continue
            assert "factory-staging" in job["environment"], name
            assert "mode != 'pr'" in job["environment"], name
            assert step["if"] == "${{ env.MODE != 'pr' }}", f"{name}: {step.get('name')}"
    pr_steps = [s for s in steps(factory["jobs"]["build-l0-p1"])
                if s.get("if") == "${{ env.MODE == 'pr' }}"]
    assert len(pr_steps) == 1 and "env" not in pr_steps[0]
    assert "--mode pr --select" in pr_steps[0]["run"]


def test_a_build_job_for_every_level_and_part_the_generator_can_emit(factory):
    jobs = factory["jobs"]
    expected = github.workflow_jobs()
    assert [name for name in jobs if name.startswith("build-")] == expected
    outputs = jobs["plan"]["outputs"]
    for level in range(github.WORKFLOW_LEVELS):
        before = ([github.job_name(level - 1, part)
                   for part in range(1, github.WORKFLOW_PARTS + 1)] if level else [])
        for part in range(1, github.WORKFLOW_PARTS + 1):
            slot = github.slot(level, part)
            job = jobs[github.job_name(level, part)]
            for key in (slot, f"{slot}-count"):
                assert outputs[key] == f"${{{{ steps.plan.outputs.{key} }}}}"
            assert job["needs"] == ["plan", *before]
            assert job["if"] == (f"${{{{ !cancelled() && needs.plan.result == 'success' && "
                                 f"needs.plan.outputs.{slot}-count != '0' }}}}")
            assert job["strategy"] == {
                "fail-fast": False, "matrix": f"${{{{ fromJSON(needs.plan.outputs.{slot}) }}}}"}
            assert job["runs-on"] == "${{ matrix.runner }}"
            assert job["timeout-minutes"] == "${{ matrix.timeout }}"
            assert job["steps"] == jobs["build-l0-p1"]["steps"]
    assert jobs["report"]["needs"] == ["plan", *expected]
    assert jobs["report"]["if"] == "${{ always() }}"
    assert jobs["publish"]["needs"] == ["plan", "report", *expected]
    assert "needs.report.result == 'success'" in jobs["publish"]["if"]


def test_the_events_modes_and_target_agree_with_the_factory(factory):
    assert set(factory["on"]) == {"pull_request", "push", "schedule", "workflow_dispatch"}
    assert factory["on"]["push"]["branches"] == ["main"]
    inputs = factory["on"]["workflow_dispatch"]["inputs"]
    assert inputs["mode"]["options"] == list(MODES)
    catalogue = load_catalogue(WorkTree(ROOT), MATRIX.name)
    assert factory["env"]["PUBLISH_TARGET"] in catalogue.targets
    reporter = load(REPORTER)
    assert reporter["on"]["workflow_run"]["workflows"] == [factory["name"]]


# The generated GitHub data for this repository's matrix.yaml


@pytest.mark.parametrize("mode", MODES)
def test_the_repositorys_matrices_fit_githubs_limits_and_the_workflow(mode):
    planned = plan_with_catalogue(MATRIX, mode)
    levels = ci_levels(planned.jobs)
    outputs = github.matrices(levels, placements("github", planned.catalogue.runners))
    assert len(github.output_text(outputs, "EOF").encode()) < github.MAX_OUTPUT_BYTES
    assert set(outputs["matrices"]) <= {github.slot(level, part)
                                        for level in range(github.WORKFLOW_LEVELS)
                                        for part in range(1, github.WORKFLOW_PARTS + 1)}
    level_of = {}
    for name in outputs["matrices"]:
        cells = outputs[name]["include"]
        assert 0 < len(cells) <= github.MAX_CELLS
        for cell in cells:
            assert not set(cell["name"]) & ARTIFACT_NAME_FORBIDDEN
            assert isinstance(cell["timeout"], int) and isinstance(cell["qemu"], bool)
            level_of[cell["id"]] = int(name.split("-")[1])
    assert len(level_of) == outputs["cells"] == len(levels.jobs)
    for job in levels.jobs:
        assert all(level_of[need] < level_of[job.id] for need in job.needs), job.id


def test_the_repositorys_runners_come_from_its_ci_section():
    doc = parse_yaml(MATRIX.read_text(), MATRIX.name)
    configured = doc.data["ci"]["runners"]
    runners = placements("github", load_catalogue(WorkTree(ROOT), MATRIX.name).runners)
    for arch, entry in configured.items():
        assert runners[arch].runner == entry["github"]
        assert runners[arch].timeout == int(entry["timeout_minutes"])
