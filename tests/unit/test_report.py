"""``python -m pipeline report``: the report written locally and posted on the forge.

The real PyGithub and python-gitlab clients talk to fake REST servers on 127.0.0.1
(``tests/fakes/github_api.py``, ``tests/fakes/gitlab_api.py``) that record every request.
Retry waits are made tiny with the ``PIPELINE_FORGE_*`` settings.  Once ``report`` is
registered in ``pipeline/cli.py`` these tests go through ``pipeline.cli.main``; until then
through the same contract (Masker from the environment, InputError -> exit 2).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import pytest

from pipeline.errors import InputError
from pipeline.forge import command
from pipeline.forge.comment import MARKER, Links, render
from pipeline.forge.detect import detect
from pipeline.forge.summary_parts import load
from pipeline.tools.credentials import Masker
from tests.fakes.github_api import FakeGitHub
from tests.fakes.gitlab_api import FakeGitLab

SHA = "0123456789abcdef0123456789abcdef01234567"
BASE = "sjtuhpc/hpc-base-container:ompi-4.1"
APP = "sjtuhpc/hpc-app-container:lammps-gnu-2022"


# -- helpers -------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    """No CI variable of the machine running the tests; tiny retry waits."""
    for name in list(os.environ):
        if name.startswith(("GITHUB_", "GITLAB_", "CI_", "PIPELINE_")):
            monkeypatch.delenv(name)
    for name, value in {"PIPELINE_FORGE_WRITE_INTERVAL": "0", "PIPELINE_FORGE_BACKOFF": "0",
                        "PIPELINE_FORGE_ATTEMPTS": "3", "PIPELINE_FORGE_RETRY_SECONDS": "10",
                        "PIPELINE_FORGE_RATE_LIMIT_WAIT": "0"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)


def job(name: str, arch: str, result: str = "passed", reason: str = "built; converted",
        duration: float = 100.0) -> dict:
    return {"id": f"{name}@{arch}", "arch": arch, "result": result, "reason": reason,
            "image_digest": None, "sif": None, "stages": {},
            "log": f"out/logs/{name.replace('/', '_')}_{arch}.log", "duration": duration}


def write_summary(path: Path, jobs: list[dict], *, mode: str = "pr", status: str | None = None,
                  publications: list | None = None, **run) -> Path:
    failed = any(j["result"] == "failed" for j in jobs)
    data = {"run": {"id": "run-1", "status": status or ("failed" if failed else "passed"),
                    "exit_code": 1 if failed else 0, "reason": "", "mode": mode,
                    "only": None, "job_url": None, **run},
            "jobs": jobs, "publications": publications or []}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def failing(path: Path = Path("out/summary.json")) -> Path:
    return write_summary(path, [job(BASE, "amd64"), job(BASE, "arm64", "failed",
                                                         "build failed: exit 100")])


def passing(path: Path = Path("out/summary.json")) -> Path:
    return write_summary(path, [job(BASE, "amd64"), job(BASE, "arm64")])


def github_env(monkeypatch, api: FakeGitHub, *, token: str | None = None,
               event: dict | None = None, tmp: Path | None = None) -> None:
    values = {"GITHUB_ACTIONS": "true", "GITHUB_REPOSITORY": api.repository,
              "GITHUB_API_URL": api.url, "GITHUB_SERVER_URL": "https://github.example",
              "GITHUB_RUN_ID": "4242", "GITHUB_SHA": SHA,
              "GITHUB_TOKEN": api.token if token is None else token}
    if event is not None:
        path = (tmp or Path.cwd()) / "event.json"
        path.write_text(json.dumps(event))
        values.update(GITHUB_EVENT_PATH=str(path), GITHUB_EVENT_NAME=next(iter(event)))
    for name, value in values.items():
        if value:
            monkeypatch.setenv(name, value)


def gitlab_env(monkeypatch, api: FakeGitLab, *, iid: int = 3) -> None:
    for name, value in {"GITLAB_CI": "true", "CI_API_V4_URL": api.api_url,
                        "CI_SERVER_URL": api.url, "CI_PROJECT_ID": str(api.project_id),
                        "CI_COMMIT_SHA": SHA, "CI_MERGE_REQUEST_IID": str(iid),
                        "CI_PIPELINE_URL": f"{api.url}/sjtuhpc/factory/-/pipelines/9",
                        "PIPELINE_GITLAB_TOKEN": api.token}.items():
        monkeypatch.setenv(name, value)


def pr_event(number: int = 5, head: str = "sjtuhpc/factory") -> dict:
    return {"pull_request": {"number": number, "head": {"sha": SHA, "repo": {"full_name": head}},
                             "base": {"repo": {"full_name": "sjtuhpc/factory"}}}}


def report(*argv: str) -> int:
    """``python -m pipeline report ARGV``: through pipeline.cli once it is wired there."""
    from pipeline import cli  # noqa: PLC0415 - imported late: it loads every stage

    parser = cli._parser()
    subcommands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    if "report" in subcommands.choices:
        return cli.main(["report", *argv])
    parser = argparse.ArgumentParser(prog="python -m pipeline")
    command.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["report", *argv])
    masker = Masker.from_env()
    try:
        return args.func(args, masker, None)
    except InputError as err:
        for problem in err.problems:
            print(masker(str(problem)), file=sys.stderr)
        return err.exit_code


def posts(api, fragment: str, method: str = "POST") -> list:
    return [r for r in api.requests if r.method == method and fragment in r.path]


# -- GitHub --------------------------------------------------------------------------------
def test_first_run_posts_one_status_one_comment_and_a_check_run(monkeypatch, capsys):
    failing()
    with FakeGitHub() as api:
        github_env(monkeypatch, api, event=pr_event())
        assert report() == 0  # a failed job does not fail the report
    comments = api.comments[5]
    assert len(comments) == 1 and len(posts(api, "/comments")) == 1
    assert comments[0]["body"].startswith(MARKER + "\n")
    assert "❌ failed (arm64)" in comments[0]["body"]
    [status] = api.statuses
    assert (status["sha"], status["state"], status["context"]) == (SHA, "failure", "factory")
    assert status["target_url"] == "https://github.example/sjtuhpc/factory/actions/runs/4242"
    assert status["description"] == "1 failed, 1 passed (pr)"
    [check] = api.check_runs
    assert (check["head_sha"], check["status"], check["conclusion"]) == (SHA, "completed",
                                                                         "failure")
    assert [a["title"] for a in check["annotations"]] == [f"{BASE}@arm64"]
    assert Path("out/report.md").read_text() == comments[0]["body"]
    out = capsys.readouterr().out
    assert "comment: created" in out and "commit status: posted: factory=failure" in out


def test_second_run_edits_the_same_comment(monkeypatch):
    with FakeGitHub() as api:
        github_env(monkeypatch, api, event=pr_event())
        failing()
        assert report() == 0
        passing()
        assert report() == 0
    [comment] = api.comments[5]
    assert len(posts(api, "/comments")) == 1
    assert [r.path for r in posts(api, "/issues/comments/", "PATCH")] == [
        f"/repos/sjtuhpc/factory/issues/comments/{comment['id']}"]
    assert "2 passed" in comment["body"] and "failed" not in comment["body"]
    assert [s["state"] for s in api.statuses] == ["failure", "success"]


def test_our_comment_is_found_on_page_two_and_quotes_are_left_alone(monkeypatch):
    """Ours: the body starts with the marker and the author is the token's user."""
    with FakeGitHub(page_size=2) as api:
        quote = api.add_comment(5, f"Why does it say\n> {MARKER}\n> ## factory", "reviewer")
        impostor = api.add_comment(5, f"{MARKER}\n## ✅ factory: all passed", "reviewer")
        api.add_comment(5, "LGTM", "reviewer")
        ours = api.add_comment(5, f"{MARKER}\nold report", api.login)
        github_env(monkeypatch, api, event=pr_event())
        failing()
        assert report() == 0
    pages = [r.path for r in posts(api, "/issues/5/comments", "GET")]
    assert len(pages) == 2 and "page=2" in pages[1]
    assert not posts(api, "/issues/5/comments")  # no new comment
    assert [r.path.rsplit("/", 1)[1] for r in posts(api, "/issues/comments/", "PATCH")] == [
        str(ours["id"])]
    assert "❌" in ours["body"]
    assert quote["body"].startswith("Why") and impostor["body"].endswith("all passed")


def test_an_actions_token_finds_the_comments_of_github_actions_bot(monkeypatch):
    """GITHUB_TOKEN may not read /user (403): its comments are github-actions[bot]'s."""
    with FakeGitHub(user_endpoint=False, login="github-actions[bot]") as api:
        other = api.add_comment(5, f"{MARKER}\nnot ours", "someone")
        ours = api.add_comment(5, f"{MARKER}\nold", "github-actions[bot]")
        github_env(monkeypatch, api, event=pr_event())
        failing()
        assert report() == 0
    assert len(api.comments[5]) == 2
    assert other["body"] == f"{MARKER}\nnot ours" and "❌" in ours["body"]


@pytest.mark.parametrize("retry_after", ["1", None], ids=["retry-after", "message-only"])
def test_a_secondary_rate_limit_is_retried(monkeypatch, capsys, retry_after):
    failing()
    with FakeGitHub(rate_limit_first=1, retry_after=retry_after) as api:
        github_env(monkeypatch, api, event=pr_event())
        assert report() == 0
    assert [r.status for r in api.requests[:2]] == [403, 201]
    assert len(api.statuses) == 1 and len(api.comments[5]) == 1
    err = capsys.readouterr().err
    assert "secondary rate limit" in err
    assert f"trying again in {retry_after or 0} s (try 2 of 3)" in err


def test_a_forge_that_keeps_failing_exits_4_and_the_report_is_written(monkeypatch, capsys):
    failing()
    with FakeGitHub(fail_first=100) as api:
        github_env(monkeypatch, api, event=pr_event())
        assert report() == 4
    assert len(api.requests) == 3  # PIPELINE_FORGE_ATTEMPTS; the other parts not tried
    assert Path("out/report.md").read_text().startswith(MARKER)
    err = capsys.readouterr().err
    assert ("report: commit status: unreachable: 502 Server Error; gave up after 3 tries"
            in err.splitlines())
    assert "report: comment: not tried" in err and "Traceback" not in err


def test_a_refused_token_is_one_plain_line_and_stops(monkeypatch, capsys):
    failing()
    with FakeGitHub() as api:
        github_env(monkeypatch, api, token="ghp_wrong-token-4444", event=pr_event())
        assert report() == 0
    assert [r.status for r in api.requests] == [401]
    err = capsys.readouterr().err
    assert "report: commit status: refused: 401 Bad credentials" in err.splitlines()
    assert "ghp_wrong-token-4444" not in err


def test_a_token_that_may_not_create_check_runs_only_skips_them(monkeypatch, capsys):
    failing()
    with FakeGitHub(checks_forbidden=True) as api:
        github_env(monkeypatch, api, event=pr_event())
        assert report() == 0
    assert len(api.statuses) == 1 and len(api.comments[5]) == 1 and not api.check_runs
    assert "check run: skipped: this token may not create check runs (403" in (
        capsys.readouterr().out)


def test_more_than_50_failures_are_annotated_50_per_request(monkeypatch):
    write_summary(Path("out/summary.json"),
                  [job(f"sjtuhpc/hpc-app-container:app-{n}", "amd64", "failed", f"boom {n}")
                   for n in range(60)])
    with FakeGitHub() as api:
        github_env(monkeypatch, api, event=pr_event())
        assert report() == 0
    [check] = api.check_runs
    assert len(check["annotations"]) == 60
    assert [r.method for r in api.requests if "check-runs" in r.path] == ["POST", "PATCH"]


def test_no_token_makes_no_request(monkeypatch, capsys):
    failing()
    with FakeGitHub() as api:
        github_env(monkeypatch, api, token="", event=pr_event())
        assert report() == 0
    assert api.requests == []
    assert Path("out/report.md").exists()
    assert "not posted on github: no token: set GITHUB_TOKEN" in capsys.readouterr().out


@pytest.mark.parametrize("how", ["fork", "--read-only"])
def test_a_read_only_context_makes_no_request(monkeypatch, capsys, how):
    failing()
    with FakeGitHub() as api:
        github_env(monkeypatch, api, event=pr_event(head="contributor/factory")
                   if how == "fork" else pr_event())
        assert report(*(["--read-only"] if how == "--read-only" else [])) == 0
    assert api.requests == []
    assert Path("out/report.md").exists()
    assert "read-only" in capsys.readouterr().out


def test_the_fork_reporter_posts_for_the_workflow_runs_pull_request(monkeypatch, tmp_path):
    """workflow_run: the number and commit come from the run; a part's job_url that is not
    on the forge's server (a fork wrote the part) is not linked."""
    write_summary(Path("artifacts/cell-1/summary.json"), [job(BASE, "amd64")],
                  job_url="https://evil.example/phish")
    write_summary(Path("artifacts/cell-2/summary.json"), [job(BASE, "arm64")],
                  job_url="https://github.example/sjtuhpc/factory/actions/runs/77/job/2")
    event = {"workflow_run": {"head_sha": SHA, "pull_requests": [{"number": 12}]}}
    with FakeGitHub() as api:
        github_env(monkeypatch, api, event=event, tmp=tmp_path)
        assert report("artifacts") == 0
    [comment] = api.comments[12]
    assert "evil.example" not in comment["body"]
    assert "[amd64](https://github.example/sjtuhpc/factory/actions/runs/4242)" in comment["body"]
    assert "[arm64](https://github.example/sjtuhpc/factory/actions/runs/77/job/2)" in (
        comment["body"])
    assert api.statuses[0]["sha"] == SHA


def test_tokens_never_appear_in_files_or_output(monkeypatch, capsys, tmp_path):
    with FakeGitHub() as api:
        leaky = f"curl -H 'Authorization: token {api.token}' failed | see log"
        write_summary(Path("out/summary.json"), [job(BASE, "amd64", "failed", leaky)])
        github_env(monkeypatch, api, event=pr_event())
        step_summary = tmp_path / "step-summary.md"
        monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(step_summary))
        assert report() == 0
    captured = capsys.readouterr()
    written = [p.read_text() for p in Path("out").rglob("*") if p.is_file()
               and p.name != "summary.json"]  # the input, as the test wrote it
    for text in [captured.out, captured.err, step_summary.read_text(), *written,
                 api.comments[5][0]["body"], json.dumps(api.check_runs)]:
        assert api.token not in text
    assert "token \\*\\*\\*" in api.comments[5][0]["body"]


# -- the Markdown and the parts -----------------------------------------------------------
def test_the_table_escapes_pipes_newlines_and_markup(tmp_path):
    reason = "a | b `c` <script> [x](http://evil) @team\nsecond line"
    view = load([write_summary(tmp_path / "summary.json",
                               [job(BASE, "amd64", "failed", reason)])])
    text = render(view, Links(), Masker())
    [row] = [line for line in text.splitlines() if line.startswith(f"| `{BASE}`")]
    assert "a \\| b \\`c\\` &lt;script&gt; \\[x\\](http://evil) @\u200bteam" in row
    assert row.count(" | ") == 5 and row.endswith(" |")
    assert "second line" not in text


def test_a_long_report_is_cut_with_a_line_saying_so(tmp_path):
    jobs = [job(f"sjtuhpc/hpc-app-container:app-{n:04d}", "amd64", reason="x" * 150)
            for n in range(1500)]
    jobs.append(job("sjtuhpc/hpc-app-container:zzz-broken", "amd64", "failed", "boom"))
    view = load([write_summary(tmp_path / "summary.json", jobs, mode="main")])
    text = render(view, Links(run_url="https://github.example/run/1"), Masker())
    assert len(text) <= 65_000
    assert "zzz-broken" in text  # failed rows first, passed ones cut
    cut = next(line for line in text.splitlines() if line.startswith("... "))
    assert cut.endswith("more rows, see the run")


def test_publishing_pr_would_publish_main_lists_publications(tmp_path):
    pr = load([write_summary(tmp_path / "pr/summary.json", [
        job(BASE, "amd64"), job(BASE, "arm64"), job(APP, "amd64"),
        job(APP, "arm64", "failed", "mpi failed")])])
    text = render(pr, Links(), Masker())
    assert f"- would publish `{BASE}` (amd64, arm64)" in text
    assert f"would publish `{APP}`" not in text
    main = load([write_summary(tmp_path / "main/summary.json", [job(BASE, "amd64")],
                               mode="main", publications=[
        {"repository": "sjtuhpc/hpc-base-container", "tag": "ompi-4.1",
         "result": "published", "refs": ["127.0.0.1:5000/sjtuhpc/hpc-base-container:ompi-4.1"],
         "log": "x", "duration": 3},
        {"repository": "sjtuhpc/hpc-app-container", "tag": "lammps-gnu-2022",
         "result": "refused", "reason": "tag exists with another digest", "refs": []}])])
    text = render(main, Links(), Masker())
    assert f"✅ published `{BASE}`: `127.0.0.1:5000/sjtuhpc/hpc-base-container:ompi-4.1`" in text
    assert f"🚫 refused `{APP}`: tag exists with another digest" in text
    assert main.state == "failed"


def test_parts_are_merged_and_the_later_finished_wins(capsys):
    write_summary(Path("parts/a/summary.json"), [job(BASE, "amd64", "failed", "flaky")],
                  finished="2024-05-01T10:00:00Z")
    write_summary(Path("parts/b/summary.json"), [job(BASE, "amd64"), job(BASE, "arm64")],
                  finished="2024-05-01T11:00:00Z")
    assert report("parts", "--out", "out") == 0
    text = Path("out/report.md").read_text()
    assert "2 passed" in text and "flaky" not in text
    err = capsys.readouterr().err
    assert (f"job {BASE}@amd64 is in {Path('parts/a/summary.json').resolve()} and "
            f"{Path('parts/b/summary.json').resolve()}; "
            f"{Path('parts/b/summary.json').resolve()} finished later and is used") in err


def test_a_cells_own_part_wins_over_what_publish_found_in_staging(capsys):
    """publish lists the jobs it took from staging; a cell's part has its stages and log,
    so it is used whenever there is one, and publish's row only for a cell that left none."""
    write_summary(Path("parts/cell/summary.json"), [job(BASE, "amd64", "passed", "built")],
                  mode="main", finished="2024-05-01T10:00:00Z")
    write_summary(Path("parts/publish/summary.json"),
                  [job(BASE, "amd64", "passed", "taken from staging"),
                   job(BASE, "arm64", "failed", "no image in staging: its CI job failed")],
                  mode="main", command="publish", finished="2024-05-01T11:00:00Z")
    assert report("parts", "--out", "out") == 0
    text = Path("out/report.md").read_text()
    assert "taken from staging" not in text and "no image in staging" in text
    assert "finished later" not in capsys.readouterr().err


def test_bad_summaries_are_bad_input_naming_the_file(capsys):
    Path("broken.json").write_text('{"jobs": [')
    write_summary(Path("typed.json"), [{**job(BASE, "amd64"), "duration": "long"}])
    assert report("broken.json", "typed.json", "missing.json") == 2
    err = capsys.readouterr().err
    assert "missing.json: no such file or folder" in err
    assert "broken.json:1: not JSON" in err
    assert "typed.json: jobs[0].duration: expected a number, got a string" in err
    assert not Path("out/report.md").exists()


def test_an_empty_folder_of_parts_is_a_report_with_no_jobs(capsys):
    """The workflows run `mkdir -p parts` before `report parts/`: a plan with no cells."""
    Path("parts").mkdir()
    assert report("parts/") == 0
    text = Path("out/report.md").read_text()
    assert "factory: no jobs" in text and "No jobs ran." in text
    assert "no summary.json under parts" in capsys.readouterr().err


def test_without_a_forge_only_the_local_files_are_written(capsys):
    failing()
    assert report() == 0
    assert Path("out/report.md").read_text().startswith(MARKER)
    assert "no forge detected" in capsys.readouterr().out


def test_a_pull_request_event_reports_on_the_head_commit(tmp_path):
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"pull_request": {
        "number": 8, "head": {"sha": "feed" * 10, "repo": {"full_name": "o/r"}},
        "base": {"repo": {"full_name": "o/r"}}}}))
    context = detect({"GITHUB_ACTIONS": "true", "GITHUB_REPOSITORY": "o/r",
                      "GITHUB_SHA": "merge" * 8, "GITHUB_EVENT_PATH": str(event),
                      "GITHUB_EVENT_NAME": "pull_request", "GITHUB_TOKEN": "t"})
    assert (context.number, context.sha, context.read_only) == (8, "feed" * 10, None)
    assert "t" not in repr(context).split("token")[0][-3:]  # the token is not in the repr
    assert detect({}) is None


# -- GitLab --------------------------------------------------------------------------------
def test_gitlab_posts_a_status_and_one_note_edited_on_the_second_run(monkeypatch):
    with FakeGitLab(page_size=2) as api:
        api.add_note(3, f"{MARKER}\nsomeone else's", user_id=1)
        api.add_note(3, f"{MARKER}\nsystem", user_id=api.user_id, system=True)
        api.add_note(3, "a review remark", user_id=1)
        gitlab_env(monkeypatch, api)
        failing()
        assert report() == 0
        passing()
        assert report() == 0
    ours = [n for n in api.notes[3] if n["author"]["id"] == api.user_id and not n["system"]]
    assert len(ours) == 1 and len(posts(api, "/notes")) == 1
    assert len(posts(api, f"/notes/{ours[0]['id']}", "PUT")) == 1
    assert "2 passed" in ours[0]["body"] and "❌" not in ours[0]["body"]
    assert api.notes[3][0]["body"] == f"{MARKER}\nsomeone else's"
    assert [(s["status"], s["name"], s["sha"]) for s in api.statuses] == [
        ("failed", "factory", SHA), ("success", "factory", SHA)]
    assert api.statuses[0]["target_url"].endswith("/pipelines/9")


def test_gitlab_429_is_retried_and_a_token_never_leaks(monkeypatch, capsys):
    failing()
    with FakeGitLab(rate_limit_first=1, retry_after="0") as api:
        gitlab_env(monkeypatch, api)
        assert report() == 0
    assert [r.status for r in api.requests[:2]] == [429, 201]
    assert len(api.statuses) == 1 and len(api.notes[3]) == 1
    captured = capsys.readouterr()
    assert "429 Too Many Requests; trying again in 0 s" in captured.err
    for text in (captured.out, captured.err, Path("out/report.md").read_text()):
        assert api.token not in text
