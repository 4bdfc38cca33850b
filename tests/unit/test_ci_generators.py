"""The plan as CI data: levels, the GitLab child pipeline, the GitHub matrices.

Fast and offline: plans of the small catalogues in tests/catalogues.py, and synthetic plans
of Job objects for the limits (fan-in past 50 needs, matrices past 256 cells).  The GitLab
files are also checked against GitLab's own schema when check-jsonschema is installed.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import json
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from pipeline.ci import github, gitlab
from pipeline.ci.levels import (
    EMULATED_TIMEOUT,
    GITLAB_TAGS,
    MAX_NAME,
    Placement,
    ci_levels,
    ci_name,
    placements,
)
from pipeline.cli import main
from pipeline.errors import InputError
from pipeline.planning.jobs import Job
from pipeline.planning.planner import make_plan
from tests.catalogues import BASIC, commit, git, init_repo, line_of, write

APP = "t/app:app-2022@amd64"
APP_BASE = "t/base:ompi-4.1@amd64"
BAD_INPUT = 2
PIPELINE_KEYS = {"stages", "variables", "default"}
ROOT = Path(__file__).resolve().parents[2]


def job(job_id: str, needs: tuple = (), arch: str = "amd64", action: str = "build") -> Job:
    repository, _, rest = job_id.partition(":")
    return Job(job_id, "x", "base", repository, rest.split("@")[0], arch, {}, "images/x",
               needs, "0" * 64, action, f"{action} reason")


def fan_plan(bases: int = 120) -> list[Job]:
    """``bases`` base jobs and one app that needs all of them."""
    ids = tuple(f"t/base:b{n:03}@amd64" for n in range(bases))
    return [*(job(i) for i in ids), job("t/app:all@amd64", ids)]


def child(jobs: list[Job], mode: str = "pr") -> dict:
    return yaml.safe_load(gitlab.child_pipeline(ci_levels(jobs), mode))


def ci_jobs(pipeline: dict) -> dict:
    return {k: v for k, v in pipeline.items() if k not in PIPELINE_KEYS}


def needed(entry: dict) -> list[str]:
    return [n["job"] for n in entry.get("needs", [])]


def reachable(pipeline: dict, name: str) -> set:
    """Every job ``name`` needs, through fan-in jobs too."""
    seen: set = set()
    stack = [name]
    while stack:
        for need in needed(pipeline[stack.pop()]):
            if need not in seen:
                seen.add(need)
                stack.append(need)
    return seen


def check_schema(text: str, tmp_path: Path) -> None:
    """GitLab's CI schema, as check-jsonschema bundles it (offline), when installed: its
    own command, run in this process (a second interpreter costs more than the check)."""
    if importlib.util.find_spec("check_jsonschema") is None:
        return
    from check_jsonschema import main as check_jsonschema  # noqa: PLC0415 - a test extra

    path = tmp_path / "child.yml"
    path.write_text(text)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = check_jsonschema(["--builtin-schema", "vendor.gitlab-ci", str(path)],
                                standalone_mode=False)
    assert code == 0, out.getvalue()


# Levels


def test_bases_are_level_0_and_the_app_on_them_level_1(tmp_path):
    levels = ci_levels(make_plan(write(tmp_path), "pr"))
    by_id = {j.id: j for j in levels.jobs}
    assert by_id[APP].level == 1 and by_id[APP].needs == (APP_BASE,)
    assert {j.level for j in levels.jobs if j.id.startswith("t/base:")} == {0}
    assert levels.depth == 2
    assert [j.id for j in levels.groups()[(1, "arm64")]] == ["t/app:app-2022@arm64"]


def test_an_app_whose_base_is_skipped_is_level_0_without_that_need(tmp_path):
    matrix = write(tmp_path)
    init_repo(tmp_path)
    (tmp_path / "images/app/Dockerfile").write_text("ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n")
    levels = ci_levels(make_plan(matrix, "pr", "HEAD"))
    assert {(j.id, j.level, j.needs) for j in levels.jobs} == {
        (APP, 0, ()), ("t/app:app-2022@arm64", 0, ())}


def test_names_are_unique_short_and_ci_safe():
    long_a = "t/" + "r" * 300 + ":a@amd64"
    long_b = "t/" + "r" * 300 + ":b@amd64"
    names = [j.name for j in ci_levels([job(long_a), job(long_b), job(APP)]).jobs]
    assert len(set(names)) == len(names) == 3
    assert all(len(n) <= MAX_NAME < 255 for n in names)
    assert ci_name(APP) == "t_app_app-2022_amd64"


# GitLab


def test_the_child_pipeline_is_deterministic_and_valid(tmp_path):
    matrix = write(tmp_path)
    first = gitlab.child_pipeline(ci_levels(make_plan(matrix, "main")), "main")
    second = gitlab.child_pipeline(ci_levels(make_plan(matrix, "main")), "main")
    assert first == second
    check_schema(first, tmp_path)


def test_every_need_exists_and_every_job_has_its_arch_tags(tmp_path):
    plan = make_plan(write(tmp_path), "main")
    pipeline = child(plan, "main")
    jobs = ci_jobs(pipeline)
    for name, entry in jobs.items():
        assert set(needed(entry)) <= set(jobs), name
        assert entry["tags"], name
        assert entry["stage"] in pipeline["stages"]
    for planned in plan:
        name = ci_name(planned.id)
        entry = jobs[name]
        assert entry["tags"] == GITLAB_TAGS[planned.arch]
        assert entry["script"] == [f"python -m pipeline run --mode $MODE --only "
                                   f"{shlex.quote(planned.id)} --stages build,convert,test "
                                   f'--out "$CI_PROJECT_DIR"/out/{name}']
        assert "before_script" not in entry  # the default's: .ci/gitlab-env.sh
        assert entry["retry"] == {"max": 2, "exit_codes": [4]}
        assert entry["interruptible"] is True
        # Its own folder (the report job gets them all), its JUnit file, not its SIFs.
        assert entry["artifacts"] == {
            "when": "always", "paths": [f"out/{name}/"], "exclude": [f"out/{name}/**/*.sif"],
            "reports": {"junit": f"out/{name}/junit.xml"}}
    assert needed(jobs[ci_name(APP)]) == [ci_name(APP_BASE)]


def test_more_than_50_needs_go_through_fan_in_jobs(tmp_path):
    plan = fan_plan(120)
    text = gitlab.child_pipeline(ci_levels(plan), "main")
    pipeline = yaml.safe_load(text)
    jobs = ci_jobs(pipeline)
    assert max(len(needed(e)) for e in jobs.values()) <= gitlab.MAX_NEEDS
    app = ci_name("t/app:all@amd64")
    assert len(needed(jobs[app])) == 3  # fan-ins of 50, 50 and 20
    bases = {ci_name(j.id) for j in plan[:-1]}
    assert bases <= reachable(pipeline, app)
    assert bases | {app} <= reachable(pipeline, "publish")
    fans = [n for n in jobs if ".fan-in-" in n]
    assert all(jobs[n]["script"] == ["true"] for n in fans)
    assert all(jobs[n]["before_script"] == [] for n in fans)  # nothing to install
    check_schema(text, tmp_path)


def test_pr_mode_has_no_publish_job(tmp_path):
    pipeline = child(make_plan(write(tmp_path), "pr"))
    assert "publish" not in pipeline and "publish" not in pipeline["stages"]
    assert pipeline["variables"] == {"MODE": "pr"}
    assert pipeline["default"] == {"before_script": [". .ci/gitlab-env.sh"]}
    assert (ROOT / ".ci/gitlab-env.sh").is_file()


def test_main_mode_publishes_only_on_a_protected_ref(tmp_path):
    pipeline = child(make_plan(write(tmp_path), "main"), "main")
    publish = pipeline["publish"]
    assert pipeline["stages"] == ["level-0", "level-1", "publish", "report"]
    assert publish["rules"] == [{"if": '$CI_COMMIT_REF_PROTECTED == "true"'}]
    assert publish["resource_group"] == "publish"
    assert publish["script"] == [
        'python -m pipeline publish --mode $MODE --out "$CI_PROJECT_DIR"/out/publish']
    assert set(needed(publish)) == set(ci_jobs(pipeline)) - {"publish", "report"}


@pytest.mark.parametrize("mode", ["pr", "main"])
def test_the_report_job_comes_last_whatever_happened_with_every_job_s_output(tmp_path,
                                                                              mode):
    pipeline = child(make_plan(write(tmp_path), mode), mode)
    report = pipeline["report"]
    assert pipeline["stages"][-1] == "report" == report["stage"]
    assert "needs" not in report  # every earlier job's artifacts, however many
    assert (report["when"], report["allow_failure"]) == ("always", True)
    assert report["script"] == ['python -m pipeline report out --out "$CI_PROJECT_DIR"/out/report']
    assert report["artifacts"] == {"when": "always", "paths": ["out/report/"]}


def test_an_empty_plan_gives_one_no_op_job(tmp_path):
    matrix = write(tmp_path)
    init_repo(tmp_path)
    out = tmp_path / "out" / "child.yml"
    assert main(["ci", "gitlab", "--matrix", str(matrix), "--mode", "main",
                 "--changed-from", "HEAD", "--out", str(out)]) == 0
    pipeline = yaml.safe_load(out.read_text())
    assert list(ci_jobs(pipeline)) == ["nothing-to-build"]
    script = pipeline["nothing-to-build"]["script"]
    assert script == ["echo 'nothing to build: all 22 jobs are skipped (unchanged since HEAD)'"]
    assert pipeline["nothing-to-build"]["before_script"] == []
    check_schema(out.read_text(), tmp_path)


def test_publish_gets_the_plan_options_quoted_and_cells_their_catalogue(tmp_path):
    options = gitlab.PlanOptions(matrix="ci/m.yaml", changed_from="0123abc",
                                 select="t/app:*,*$HOME';x", target="hub")
    text = gitlab.child_pipeline(ci_levels(make_plan(write(tmp_path), "main")), "main",
                                 options=options)
    pipeline = yaml.safe_load(text)
    [publish] = pipeline["publish"]["script"]
    assert publish == ('python -m pipeline publish --mode $MODE --out "$CI_PROJECT_DIR"/out/'
                       "publish --matrix ci/m.yaml "
                       "--changed-from 0123abc --select 't/app:*,*$HOME'\"'\"';x' --target hub")
    # What bash hands the command: each value as given, $HOME and the quote included.
    echo = publish.replace("python -m pipeline", "printf '%s\\n'", 1)
    done = subprocess.run(["bash", "-c", echo], capture_output=True, text=True, check=True,
                          env={"MODE": "main", "CI_PROJECT_DIR": "/ci/project"})
    assert done.stdout.splitlines() == [
        "publish", "--mode", "main", "--out", "/ci/project/out/publish", "--matrix", "ci/m.yaml",
        "--changed-from", "0123abc", "--select", "t/app:*,*$HOME';x", "--target", "hub"]
    assert pipeline["publish"]["variables"] == {"GIT_DEPTH": "0"}  # git reads 0123abc
    assert pipeline[ci_name(APP)]["script"] == [
        f"python -m pipeline run --mode $MODE --only {APP} --stages build,convert,test "
        f'--out "$CI_PROJECT_DIR"/out/{ci_name(APP)} --matrix ci/m.yaml --target hub']
    assert text == gitlab.child_pipeline(ci_levels(make_plan(write(tmp_path), "main")),
                                         "main", options=options)
    check_schema(text, tmp_path)


def test_plan_options_come_from_the_command_line_as_given():
    class Args:
        matrix, changed_from, select, target = "matrix.yaml", "HEAD~1", "*@arm64", None

    assert gitlab.PlanOptions.from_args(Args()) == gitlab.PlanOptions(
        None, "HEAD~1", "*@arm64", None)
    assert gitlab.PlanOptions.from_args(Args()).for_publish() == [
        "--changed-from", "HEAD~1", "--select", "*@arm64"]
    assert gitlab.PlanOptions().for_publish() == gitlab.PlanOptions().for_cell() == []


def test_the_cli_hands_its_plan_options_to_the_publish_job(tmp_path):
    matrix = write(tmp_path)
    init_repo(tmp_path)
    (tmp_path / "images/app/Dockerfile").write_text("ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n")
    out = tmp_path / "child.yml"
    assert main(["ci", "gitlab", "--matrix", str(matrix), "--mode", "main", "--select",
                 "t/app:*", "--changed-from", "HEAD", "--out", str(out)]) == 0
    pipeline = yaml.safe_load(out.read_text())
    assert pipeline["publish"]["script"] == [
        'python -m pipeline publish --mode $MODE --out "$CI_PROJECT_DIR"/out/publish --matrix '
        f"{shlex.quote(str(matrix))} "
        "--changed-from HEAD --select 't/app:*'"]


def test_the_cli_writes_the_child_pipeline_with_runner_tags(tmp_path, capsys):
    matrix = write(tmp_path)
    out = tmp_path / "child.yml"
    assert main(["ci", "gitlab", "--matrix", str(matrix), "--select", "t/app:*@arm64",
                 "--runner", "arm64=arm,big", "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    jobs = ci_jobs(yaml.safe_load(out.read_text()))
    assert {tuple(e["tags"]) for n, e in jobs.items() if n != "report"} == {("arm", "big")}


def test_bad_runner_options_are_bad_input(tmp_path, capsys):
    matrix = write(tmp_path)
    assert main(["ci", "github", "--matrix", str(matrix), "--runner", "arm64"]) == BAD_INPUT
    assert "--runner: 'arm64': give ARCH=LABEL" in capsys.readouterr().err
    with pytest.raises(InputError, match="no runner for arch arm64"):
        gitlab.child_pipeline(ci_levels(make_plan(matrix, "pr")), "pr", {"amd64": ["x"]})


def test_a_pipeline_over_the_size_limit_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(gitlab, "MAX_BYTES", 1000)
    with pytest.raises(InputError, match="over GitLab's limit of 1000"):
        gitlab.child_pipeline(ci_levels(make_plan(write(tmp_path), "pr")), "pr")


# The parent pipeline, .gitlab-ci.yml, and its plan job's script


def parent() -> dict:
    return yaml.safe_load((ROOT / ".gitlab-ci.yml").read_text())


def rule_matches(expression: str, env: dict) -> bool:
    """GitLab's ``rules:if`` for the forms the parent uses: ``&&`` of ``$A == "text"`` and
    ``$A == $B`` (an unset variable is null, equal to nothing but another unset one)."""
    def value(term: str):
        term = term.strip()
        return env.get(term[1:]) if term.startswith("$") else term.strip('"')

    parts = [part.partition("==") for part in expression.split("&&")]
    assert all(sep for _, sep, _ in parts), f"not a form this test reads: {expression}"
    return all(value(left) == value(right) for left, _, right in parts)


def pipeline_mode(env: dict) -> str | None:
    """The MODE the workflow rules give a pipeline, or None when there is no pipeline."""
    for rule in parent()["workflow"]["rules"]:
        if "if" not in rule or rule_matches(rule["if"], env):
            return None if rule.get("when") == "never" else rule["variables"]["MODE"]
    return None


@pytest.mark.parametrize("env,mode", [
    ({"CI_PIPELINE_SOURCE": "merge_request_event", "CI_MERGE_REQUEST_IID": "7"}, "pr"),
    ({"CI_PIPELINE_SOURCE": "push", "CI_COMMIT_BRANCH": "main"}, "main"),
    ({"CI_PIPELINE_SOURCE": "web", "CI_COMMIT_BRANCH": "main"}, "main"),
    ({"CI_PIPELINE_SOURCE": "schedule", "CI_COMMIT_BRANCH": "main"}, "nightly"),
    # A feature branch: only its merge request pipeline, never a branch one besides.
    ({"CI_PIPELINE_SOURCE": "push", "CI_COMMIT_BRANCH": "fix-lammps"}, None),
    ({"CI_PIPELINE_SOURCE": "push", "CI_COMMIT_TAG": "v1"}, None),
    ({"CI_PIPELINE_SOURCE": "api", "CI_COMMIT_BRANCH": "main"}, None),
], ids=["merge-request", "push-main", "web-main", "schedule", "push-branch", "tag", "api"])
def test_the_workflow_rules_give_each_pipeline_its_mode(env, mode):
    assert pipeline_mode({"CI_DEFAULT_BRANCH": "main", **env}) == mode


def test_the_parent_plans_then_triggers_the_child_it_wrote():
    data = parent()
    plan, factory = data["plan"], data["factory"]
    assert data["default"]["before_script"] == [". .ci/gitlab-env.sh"]
    assert plan["script"] == ["bash .ci/gitlab-plan child-pipeline.yml"]
    assert plan["artifacts"]["paths"] == ["child-pipeline.yml"]
    assert plan["variables"] == {"GIT_DEPTH": "0"}  # --changed-from needs the history
    assert factory["needs"] == ["plan"]
    assert factory["trigger"] == {
        "include": [{"artifact": "child-pipeline.yml", "job": "plan"}], "strategy": "depend",
        "forward": {"yaml_variables": False, "pipeline_variables": False}}  # MODE is in it
    assert "MODE" not in data["variables"]  # only the workflow rules set it


def gitlab_plan(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    """``.ci/gitlab-plan`` with ``python`` replaced by one that prints its arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "python"
    fake.write_text("#!/bin/sh\nprintf '%s\\n' \"$@\"\n")
    fake.chmod(0o755)
    path = f"{bin_dir}:/usr/local/bin:/usr/bin:/bin"
    return subprocess.run(["bash", str(ROOT / ".ci/gitlab-plan"), "child.yml"], cwd=tmp_path,
                          env={"PATH": path, "HOME": str(tmp_path), **env},
                          capture_output=True, text=True, check=False)


def test_the_plan_job_plans_what_changed_since_the_base_or_the_last_push(tmp_path):
    write(tmp_path)
    init_repo(tmp_path)
    first = git(tmp_path, "rev-parse", "HEAD").strip()
    commit(tmp_path, "second")
    tail = ["--out", "child.yml"]

    def argv(**env: str) -> list[str]:
        done = gitlab_plan(tmp_path, **env)
        assert done.returncode == 0, done.stderr
        return done.stdout.splitlines()[1:]  # after the line saying what it runs

    assert argv(MODE="pr", CI_PIPELINE_SOURCE="merge_request_event",
                CI_MERGE_REQUEST_DIFF_BASE_SHA=first) == [
        "-m", "pipeline", "ci", "gitlab", "--mode", "pr", "--changed-from", first, *tail]
    assert argv(MODE="main", CI_PIPELINE_SOURCE="push", CI_COMMIT_BEFORE_SHA=first,
                FACTORY_SELECT="t/app:*") == [
        "-m", "pipeline", "ci", "gitlab", "--mode", "main", "--changed-from", first,
        "--select", "t/app:*", *tail]
    everything = ["-m", "pipeline", "ci", "gitlab", "--mode", "main", *tail]
    assert argv(MODE="main", CI_PIPELINE_SOURCE="push", CI_COMMIT_BEFORE_SHA="0" * 40) == (
        everything)  # a new branch: no revision before it
    assert argv(MODE="main", CI_PIPELINE_SOURCE="web", CI_COMMIT_BEFORE_SHA=first) == (
        everything)
    forced = gitlab_plan(tmp_path, MODE="main", CI_PIPELINE_SOURCE="push",
                         CI_COMMIT_BEFORE_SHA="f" * 40)  # a force push: not in the clone
    assert forced.stdout.splitlines()[1:] == everything
    assert "is not in this clone" in forced.stderr
    assert argv(MODE="nightly", CI_PIPELINE_SOURCE="schedule") == [
        "-m", "pipeline", "ci", "gitlab", "--mode", "nightly", *tail]
    unset = gitlab_plan(tmp_path, CI_PIPELINE_SOURCE="push")
    assert unset.returncode == BAD_INPUT and "MODE is ''" in unset.stderr


def test_the_job_environment_reuses_the_virtualenv_and_keeps_trusted_values_from_pr(
        tmp_path):
    """``.ci/gitlab-env.sh`` with a virtualenv already made (a fake one: no pip here)."""
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    fake_python = tmp_path / "python3"
    fake_python.write_text("#!/bin/sh\necho 3.11.fake\n")
    fake_python.chmod(0o755)
    key = hashlib.sha256(b"[project]\nname = 'x'\n3.11.fake\n").hexdigest()[:16]
    venv = tmp_path / "venvs" / key
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "activate").write_text("VIRTUAL_ENV=made-before\n")
    (venv / ".complete").touch()
    shown = ("VIRTUAL_ENV PYTHONPATH PIPELINE_STAGING_USERNAME PIPELINE_STAGING_PASSWORD "
             "PIPELINE_STAGING_KEY PIPELINE_REGISTRY_PASSWORD")

    def sourced(mode: str) -> list[str]:
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(tmp_path), "MODE": mode,
               "FACTORY_PYTHON": str(fake_python), "FACTORY_VENVS": str(tmp_path / "venvs"),
               "PIPELINE_STAGING_USERNAME": "trusted", "PIPELINE_STAGING_PASSWORD": "t-pass",
               "PIPELINE_STAGING_KEY": "key", "PIPELINE_REGISTRY_PASSWORD": "hub",
               "PIPELINE_PR_STAGING_USERNAME": "pr", "PIPELINE_PR_STAGING_PASSWORD": "p-pass"}
        script = (f". {ROOT / '.ci/gitlab-env.sh'} >/dev/null\n"
                  f"for v in {shown}; do printf '%s=%s\\n' $v \"${{!v-unset}}\"; done")
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path,
                              env=env, capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr
        return done.stdout.splitlines()

    assert sourced("main") == [
        "VIRTUAL_ENV=made-before", f"PYTHONPATH={tmp_path}", "PIPELINE_STAGING_USERNAME=trusted",
        "PIPELINE_STAGING_PASSWORD=t-pass", "PIPELINE_STAGING_KEY=key",
        "PIPELINE_REGISTRY_PASSWORD=hub"]
    assert sourced("pr") == [
        "VIRTUAL_ENV=made-before", f"PYTHONPATH={tmp_path}", "PIPELINE_STAGING_USERNAME=pr",
        "PIPELINE_STAGING_PASSWORD=p-pass", "PIPELINE_STAGING_KEY=unset",
        "PIPELINE_REGISTRY_PASSWORD=unset"]


# GitHub


def cells_of(outputs: dict) -> list[dict]:
    return [cell for name in outputs["matrices"] for cell in outputs[name]["include"]]


def test_a_level_holds_both_arches_and_every_slot_has_a_count(tmp_path):
    outputs = github.matrices(ci_levels(make_plan(write(tmp_path), "pr")))
    assert outputs["matrices"] == ["level-0-part-1", "level-1-part-1"]
    assert outputs["levels"] == 2 and outputs["cells"] == 22
    assert {c["arch"] for c in outputs["level-0-part-1"]["include"]} == {"amd64", "arm64"}
    assert outputs["level-1-part-1"]["include"] == [
        {"id": APP, "name": "t_app_app-2022_amd64", "arch": "amd64", "runner": "ubuntu-24.04",
         "timeout": 120, "qemu": False},
        {"id": "t/app:app-2022@arm64", "name": "t_app_app-2022_arm64", "arch": "arm64",
         "runner": "ubuntu-24.04-arm", "timeout": 120, "qemu": False}]
    slots = [github.slot(level, part) for level in range(github.WORKFLOW_LEVELS)
             for part in range(1, github.WORKFLOW_PARTS + 1)]
    assert len(slots) == len(github.workflow_jobs()) == 8
    for name in slots:  # every slot the workflow reads has a count; empty ones no matrix
        assert outputs[f"{name}-count"] == len(outputs.get(name, {"include": []})["include"])
    assert "level-0-part-2" not in outputs and outputs["level-0-part-2-count"] == 0


def test_a_big_level_is_split_into_parts_of_at_most_256_cells():
    jobs = [job(f"t/base:b{n:03}@{arch}", arch=arch) for n in range(200)
            for arch in ("amd64", "arm64")]
    outputs = github.matrices(ci_levels(jobs))
    assert outputs["matrices"] == ["level-0-part-1", "level-0-part-2"]
    assert [outputs["level-0-part-1-count"], outputs["level-0-part-2-count"]] == [256, 144]
    assert all(len(outputs[p]["include"]) <= github.MAX_CELLS for p in outputs["matrices"])
    assert {c["id"] for c in cells_of(outputs)} == {j.id for j in jobs}
    assert outputs["level-1-part-1-count"] == 0 and "level-1-part-1" not in outputs
    assert len(github.output_text(outputs, "EOF").encode()) < github.MAX_OUTPUT_BYTES


def test_more_parts_than_the_workflow_has_are_refused():
    jobs = [job(f"t/base:b{n:03}@amd64") for n in range(600)]
    with pytest.raises(InputError, match=re.escape(
            "level 0 has 600 cells, 3 matrices of at most 256, but "
            ".github/workflows/factory.yml has 2 jobs a level")):
        github.matrices(ci_levels(jobs))


def test_more_levels_than_the_workflow_has_are_refused(tmp_path, capsys, monkeypatch):
    chain = [job("t/base:l0@amd64")]
    for level in range(1, 5):  # five levels, each needing the one before
        chain.append(job(f"t/base:l{level}@amd64", (chain[-1].id,)))
    with pytest.raises(InputError, match=re.escape(
            "the plan has 5 dependency levels, but .github/workflows/factory.yml has build "
            "jobs for 4 (build-l0-p1 .. build-l3-p1); add the jobs")):
        github.matrices(ci_levels(chain))
    monkeypatch.setattr(github, "WORKFLOW_LEVELS", 1)  # through the command line: exit 2
    assert main(["ci", "github", "--matrix", str(write(tmp_path))]) == BAD_INPUT
    assert "ci github: the plan has 2 dependency levels" in capsys.readouterr().err


def test_every_parent_is_at_a_lower_level_than_its_children(tmp_path):
    levels = ci_levels(make_plan(write(tmp_path), "pr"))
    outputs = github.matrices(levels)
    level_of = {cell["id"]: int(name.split("-")[1]) for name in outputs["matrices"]
                for cell in outputs[name]["include"]}
    assert set(level_of) == {j.id for j in levels.jobs}
    for ci_job in levels.jobs:
        assert all(level_of[need] < level_of[ci_job.id] for need in ci_job.needs)


def test_outputs_over_1_mb_are_refused(monkeypatch):
    monkeypatch.setattr(github, "MAX_OUTPUT_BYTES", 1000)
    with pytest.raises(InputError, match="over GitHub's 1000"):
        github.matrices(ci_levels(fan_plan(20)))


def test_an_empty_plan_has_counts_of_0_and_no_matrix(tmp_path, capsys):
    matrix = write(tmp_path)
    init_repo(tmp_path)
    assert main(["ci", "github", "--matrix", str(matrix), "--mode", "main",
                 "--changed-from", "HEAD"]) == 0
    outputs = json.loads(capsys.readouterr().out)
    assert outputs["matrices"] == [] and outputs["cells"] == 0 and outputs["levels"] == 0
    assert {k for k in outputs if k.startswith("level-")} == {
        f"{github.slot(level, part)}-count" for level in range(github.WORKFLOW_LEVELS)
        for part in range(1, github.WORKFLOW_PARTS + 1)}
    assert all(outputs[k] == 0 for k in outputs if k.endswith("-count"))


def parse_github_output(text: str) -> dict:
    """Read ``$GITHUB_OUTPUT`` as the runner does: ``key<<DELIM`` ... ``DELIM``."""
    lines = iter(text.splitlines())
    found = {}
    for line in lines:
        key, sep, delimiter = line.partition("<<")
        assert sep, f"not in heredoc form: {line!r}"
        value = []
        for body in lines:
            if body == delimiter:
                break
            value.append(body)
        found[key] = json.loads("\n".join(value))
    return found


def test_the_cli_writes_github_outputs_in_heredoc_form(tmp_path, capsys, monkeypatch):
    matrix = write(tmp_path)
    output = tmp_path / "github_output"
    output.write_text("earlier=1\n")
    monkeypatch.setenv("GITHUB_OUTPUT", str(output))
    assert main(["ci", "github", "--matrix", str(matrix), "--runner", "arm64=my-arm"]) == 0
    printed = json.loads(capsys.readouterr().out)
    text = output.read_text()
    assert text.startswith("earlier=1\n")  # appended, never overwritten
    written = parse_github_output(text.split("\n", 1)[1])
    assert written == printed
    assert written["levels"] == 2 and written["level-1-part-1-count"] == 2
    runners = {(c["arch"], c["runner"]) for c in cells_of(written)}
    assert runners == {("amd64", "ubuntu-24.04"), ("arm64", "my-arm")}


# Runners from matrix.yaml's ci section

RUNNERS = """\
ci:
  runners:
    arm64: {github: big-x86, gitlab: arm-emulated, emulated: true}
    amd64: {timeout_minutes: 90}
"""


def test_runners_timeouts_and_qemu_come_from_the_catalogue(tmp_path, capsys):
    matrix = write(tmp_path, BASIC + RUNNERS)
    assert main(["ci", "github", "--matrix", str(matrix)]) == 0
    cells = {c["arch"]: c for c in cells_of(json.loads(capsys.readouterr().out))}
    assert {k: cells["arm64"][k] for k in ("runner", "timeout", "qemu")} == {
        "runner": "big-x86", "timeout": EMULATED_TIMEOUT, "qemu": True}
    assert {k: cells["amd64"][k] for k in ("runner", "timeout", "qemu")} == {
        "runner": "ubuntu-24.04", "timeout": 90, "qemu": False}
    # --runner changes the label only: the arch is still emulated, with its timeout.
    assert main(["ci", "github", "--matrix", str(matrix), "--runner", "arm64=other"]) == 0
    cells = {c["arch"]: c for c in cells_of(json.loads(capsys.readouterr().out))}
    assert (cells["arm64"]["runner"], cells["arm64"]["qemu"]) == ("other", True)
    out = tmp_path / "child.yml"
    assert main(["ci", "gitlab", "--matrix", str(matrix), "--out", str(out)]) == 0
    jobs = ci_jobs(yaml.safe_load(out.read_text()))
    assert jobs[ci_name(APP)]["tags"] == ["amd64"]  # the default: ci.runners gives none
    assert jobs[ci_name("t/app:app-2022@arm64")]["tags"] == ["arm-emulated"]


def test_without_a_ci_section_the_defaults_apply():
    assert placements("github", {}) == {
        "amd64": Placement("ubuntu-24.04", 120, False),
        "arm64": Placement("ubuntu-24.04-arm", 120, False)}
    assert placements("gitlab", {}, ["arm64=a,b"])["arm64"] == Placement(
        ("a", "b"), 120, False)


@pytest.mark.parametrize("entry,needle,expected", [
    ("ppc64le: {github: x}", "ppc64le",
     "ci.runners: 'ppc64le' is not a value of axis arch; use one of amd64, arm64 or add it "
     "under axes.arch.values"),
    ("amd64: {timeout_minutes: soon}", "amd64",
     "ci.runners.amd64.timeout_minutes: 'soon' is not valid here: give a whole number of "
     "minutes, e.g. 180"),
    ("amd64: {timeout_minutes: 9000}", "amd64",
     "ci.runners.amd64.timeout_minutes: 9000 is over 7200 (5 days, GitHub's limit for a job "
     "on a self-hosted runner); give fewer minutes"),
    ("amd64: {label: x}", "amd64",
     "unknown key 'label' in ci.runners.amd64; allowed keys: emulated, github, gitlab, "
     "timeout_minutes"),
    ("amd64: {emulated: maybe}", "amd64",
     "ci.runners.amd64.emulated must be true or false, not 'maybe'"),
    ("amd64: {github: two words}", "amd64",
     "ci.runners.amd64.github: 'two words' is not valid here: give one runner label without "
     "spaces, e.g. ubuntu-24.04-arm"),
])
def test_a_bad_ci_section_is_bad_input_with_its_line(tmp_path, capsys, entry, needle,
                                                      expected):
    text = BASIC + f"ci:\n  runners:\n    {entry}\n"
    matrix = write(tmp_path, text)
    assert main(["ci", "github", "--matrix", str(matrix)]) == BAD_INPUT
    err = capsys.readouterr().err.replace(str(matrix), "matrix.yaml").splitlines()
    assert err[0] == f"matrix.yaml:{line_of(text, needle + ':')}: {expected}"
