"""``python -m pipeline report``: the run's report, written locally and posted on the forge.

    python -m pipeline report [SUMMARY_OR_DIR ...] [--out DIR] [--pr N] [--sha SHA]
                              [--read-only]

Reads the ``summary.json`` of each CI cell (files, or folders searched for them; default
``OUT/summary.json``), merges them, and writes the Markdown report to ``OUT/report.md``
(always) and appends it to ``$GITHUB_STEP_SUMMARY`` when that is set.  Then, on GitHub
Actions or GitLab CI with a token and a context that may write, it posts the commit
status, the sticky comment (merge request note) and, on GitHub, a check run.  No forge,
no token (``GITHUB_TOKEN``, ``PIPELINE_GITLAB_TOKEN``), a fork's pull request or
``--read-only``: no API call at all.

Exit codes: 0 the report was written (and posted where it could be: a 4xx is reported in
one line, not retried); 2 bad input (a summary that is not JSON or has a value of the
wrong type, a bad setting); 4 the forge's API stayed unreachable, 5xx or rate-limited
after the retries (``forge.retries``).  A failed job does not fail ``report``: the run's
own exit code fails the pipeline.  The tokens are added to the masker, so they appear in
nothing written or printed.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from pipeline.errors import EXIT_INFRASTRUCTURE, EXIT_PASSED
from pipeline.forge.comment import Links, description, render, title
from pipeline.forge.detect import TOKEN_VARIABLES, ForgeContext, detect
from pipeline.forge.posting import Posted, Report
from pipeline.forge.retries import Pacing
from pipeline.forge.summary_parts import SUMMARY, View, load
from pipeline.tools.credentials import Masker

REPORT = "report.md"


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``report`` on the command line's subparsers."""
    parser = subparsers.add_parser(
        "report", help="write the run's report (report.md) and post it on the pull/merge "
        "request: commit status, sticky comment, check run")
    parser.add_argument("summaries", nargs="*", metavar="SUMMARY_OR_DIR",
                        help=f"{SUMMARY} files, or folders searched for them "
                        f"(default: OUT/{SUMMARY})")
    parser.add_argument("--out", help="output folder for report.md (default: out/, or "
                        "PIPELINE_OUT_DIR)")
    parser.add_argument("--pr", type=_number, metavar="N",
                        help="the pull request (GitLab: merge request iid) to comment on")
    parser.add_argument("--sha", help="the commit to set the status on")
    parser.add_argument("--read-only", action="store_true",
                        help="write the local files only; make no API call")
    parser.set_defaults(func=report)
    return parser


def report(args: argparse.Namespace, masker: Masker, interruption) -> int:
    env = os.environ
    masker.add(*(env.get(variable) for variable in TOKEN_VARIABLES))
    pacing = Pacing.from_env(env)
    out = Path(args.out or env.get("PIPELINE_OUT_DIR") or "out")
    view = load([Path(p) for p in args.summaries] or [out / SUMMARY])
    context = detect(env, pr=args.pr, sha=args.sha, read_only=args.read_only)
    for note in view.notes:
        _say(masker, f"note: {note}", err=True)
    links = Links(run_url=context.run_url, trusted_prefix=context.server_url,
                  sha=context.sha) if context else Links(sha=args.sha)
    markdown = render(view, links, masker)
    written = write_local(markdown, out, env)
    _say(masker, f"wrote {', '.join(str(p) for p in written)}")
    if context is None:
        _say(masker, "no forge detected (neither GITHUB_ACTIONS nor GITLAB_CI is true); "
             "nothing posted")
        return EXIT_PASSED
    why = context.why_not_post()
    if why:
        _say(masker, f"not posted on {context.forge}: {why}")
        return EXIT_PASSED
    results = post(context, _report(view, markdown, masker), pacing,
                   lambda text: _say(masker, text, err=True))
    for result in results:
        _say(masker, str(result), err=result.failed)
    if any(r.outcome == "unreachable" for r in results):
        return EXIT_INFRASTRUCTURE
    return EXIT_PASSED


def write_local(markdown: str, out: Path, env) -> list[Path]:
    """``OUT/report.md``, and the same text appended to ``$GITHUB_STEP_SUMMARY``."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / REPORT
    partial = path.with_name(REPORT + ".partial")
    partial.write_text(markdown, encoding="utf-8")
    partial.replace(path)
    written = [path]
    if env.get("GITHUB_STEP_SUMMARY"):
        summary = Path(env["GITHUB_STEP_SUMMARY"])
        with open(summary, "a", encoding="utf-8") as stream:
            stream.write(markdown + "\n")
        written.append(summary)
    return written


def post(context: ForgeContext, report_: Report, pacing: Pacing, notice) -> list[Posted]:
    if context.forge == "github":
        from pipeline.forge.github_reporter import GitHubReporter  # noqa: PLC0415 - lazy
        return GitHubReporter(context, pacing, notice).post(report_)
    from pipeline.forge.gitlab_reporter import GitLabReporter  # noqa: PLC0415 - lazy
    return GitLabReporter(context, pacing, notice).post(report_)


def _report(view: View, markdown: str, masker: Masker) -> Report:
    return Report(markdown, view.state, masker(description(view)), masker(title(view)),
                  tuple((masker(j.id), masker(j.reason)) for j in view.jobs
                        if j.result == "failed"))


def _say(masker: Masker, text: str, *, err: bool = False) -> None:
    print(masker(f"report: {text}"), file=sys.stderr if err else sys.stdout, flush=True)


def _number(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"'{text}' is not a pull request number")
    return int(text)
