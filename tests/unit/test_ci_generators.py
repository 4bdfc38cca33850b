"""The plan as CI data: levels, the GitLab child pipeline, the GitHub matrices.

Fast and offline: plans of the small catalogues in tests/catalogues.py, and synthetic plans
of Job objects for the limits (fan-in past 50 needs, matrices past 256 cells).  The GitLab
files are also checked against GitLab's own schema when check-jsonschema is installed.
"""

from __future__ import annotations

import importlib.util
import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.ci import github, gitlab
from pipeline.ci.levels import GITLAB_TAGS, MAX_NAME, ci_levels, ci_name
from pipeline.cli import main
from pipeline.errors import InputError
from pipeline.planning.jobs import Job
from pipeline.planning.planner import make_plan
from tests.catalogues import init_repo, write

APP = "t/app:app-2022@amd64"
APP_BASE = "t/base:ompi-4.1@amd64"
BAD_INPUT = 2
PIPELINE_KEYS = {"stages", "variables"}


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
    """GitLab's CI schema, as check-jsonschema bundles it (offline), when installed."""
    if importlib.util.find_spec("check_jsonschema") is None:
        return
    path = tmp_path / "child.yml"
    path.write_text(text)
    done = subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema",
                           "vendor.gitlab-ci", str(path)], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stdout + done.stderr


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
        entry = jobs[ci_name(planned.id)]
        assert entry["tags"] == GITLAB_TAGS[planned.arch]
        assert entry["script"] == [
            f"python -m pipeline run --mode $MODE --only {shlex.quote(planned.id)}"]
        assert entry["retry"] == {"max": 2, "exit_codes": [4]}
        assert entry["interruptible"] is True
        assert entry["artifacts"]["reports"] == {"junit": "out/junit.xml"}
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
    check_schema(text, tmp_path)


def test_pr_mode_has_no_publish_job(tmp_path):
    pipeline = child(make_plan(write(tmp_path), "pr"))
    assert "publish" not in pipeline and "publish" not in pipeline["stages"]
    assert pipeline["variables"] == {"MODE": "pr"}


def test_main_mode_publishes_only_on_a_protected_ref(tmp_path):
    pipeline = child(make_plan(write(tmp_path), "main"), "main")
    publish = pipeline["publish"]
    assert pipeline["stages"] == ["level-0", "level-1", "publish"]
    assert publish["rules"] == [{"if": '$CI_COMMIT_REF_PROTECTED == "true"'}]
    assert publish["resource_group"] == "publish"
    assert publish["script"] == ["python -m pipeline publish --mode $MODE"]
    assert set(needed(publish)) == set(ci_jobs(pipeline)) - {"publish"}


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
    check_schema(out.read_text(), tmp_path)


def test_the_cli_writes_the_child_pipeline_with_runner_tags(tmp_path, capsys):
    matrix = write(tmp_path)
    out = tmp_path / "child.yml"
    assert main(["ci", "gitlab", "--matrix", str(matrix), "--select", "t/app:*@arm64",
                 "--runner", "arm64=arm,big", "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    jobs = ci_jobs(yaml.safe_load(out.read_text()))
    assert {tuple(e["tags"]) for e in jobs.values()} == {("arm", "big")}


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


# GitHub


def test_a_big_level_is_split_into_matrices_of_at_most_256_cells():
    outputs = github.matrices(ci_levels([job(f"t/base:b{n:03}@amd64") for n in range(600)]))
    parts = [f"level-0-amd64-part{k}" for k in (1, 2, 3)]
    assert outputs["matrices"] == parts
    assert [outputs[f"{p}-count"] for p in parts] == [256, 256, 88]
    assert all(len(outputs[p]["include"]) <= github.MAX_CELLS for p in parts)
    assert outputs["level-0-arm64-count"] == 0 and "level-0-arm64" not in outputs
    assert len(github.output_text(outputs, "EOF").encode()) < github.MAX_OUTPUT_BYTES


def test_every_parent_is_at_a_lower_level_than_its_children(tmp_path):
    levels = ci_levels(make_plan(write(tmp_path), "pr"))
    outputs = github.matrices(levels, {"amd64": "a", "arm64": "b"})
    level_of = {cell["id"]: int(name.split("-")[1]) for name in outputs["matrices"]
                for cell in outputs[name]["include"]}
    assert set(level_of) == {j.id for j in levels.jobs}
    for ci_job in levels.jobs:
        assert all(level_of[need] < level_of[ci_job.id] for need in ci_job.needs)
    assert outputs["level-1-arm64"]["include"] == [
        {"id": "t/app:app-2022@arm64", "name": "t_app_app-2022_arm64", "arch": "arm64",
         "runner": "b"}]


def test_outputs_over_1_mb_are_refused(monkeypatch):
    monkeypatch.setattr(github, "MAX_OUTPUT_BYTES", 1000)
    with pytest.raises(InputError, match="over GitHub's 1000"):
        github.matrices(ci_levels(fan_plan(20)))


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
    assert written["levels"] == 2 and written["level-1-amd64-count"] == 1
    assert {c["runner"] for c in written["level-0-arm64"]["include"]} == {"my-arm"}
    assert {c["runner"] for c in written["level-0-amd64"]["include"]} == {"ubuntu-24.04"}
