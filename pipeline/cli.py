"""``python -m pipeline``: the factory's command line.

    python -m pipeline plan [--matrix FILE] [--mode pr|main|nightly] [--changed-from REF]
                            [--select GLOBS] [--target NAME] [--format table|json]
    python -m pipeline run  [same as plan] [--stages STAGES] [-j N] [--out DIR]
    python -m pipeline lab  up|status|down
    python -m pipeline ci   gitlab [plan options] [--runner ARCH=TAGS ...] [--out FILE]
    python -m pipeline ci   github [plan options] [--runner ARCH=LABEL ...]

Exit codes (``pipeline/errors.py``):

    0    every job passed (run); the plan was printed (plan)
    1    a job or a publication failed (run); the lab is not ready (lab status)
    2    bad input: every problem printed as FILE:LINE: message; nothing ran
    3    the factory itself broke: an unexpected exception outside any one job; its
         traceback is in out/logs/factory-error.log (.lab/factory-error.log for lab),
         the console gets one plain line with that path
    4    infrastructure unreachable: the Docker daemon, the lab registry or Apptainer is
         not there
    130  interrupted by SIGINT (Ctrl-C): running jobs stopped, their containers and
         scratch removed, the jobs marked interrupted; a second Ctrl-C exits at once
    143  the same for SIGTERM

An unexpected exception inside one job's stage or one tag's publication fails that job or
tag (exit 1, traceback in its log); the other jobs go on.  ``run`` writes
``out/summary.json``, ``out/junit.xml`` and its tables whatever the exit code, except 2.
Every secret value (``PIPELINE_REGISTRY_PASSWORD``, ``PIPELINE_LIBRARY_TOKEN``,
``PIPELINE_SIGNING_PASSPHRASE``) is replaced by ``***`` in everything the command writes
or prints: one Masker, made here from the environment, is handed to all of it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace
from pathlib import Path

from pipeline.ci import github as ci_github
from pipeline.ci import gitlab as ci_gitlab
from pipeline.ci.levels import GITHUB_RUNNERS, GITLAB_TAGS, ci_levels, parse_runners
from pipeline.console import make_console
from pipeline.errors import InputError, Interrupted, Problem
from pipeline.lab import commands as lab_commands
from pipeline.planning.changes import MODES
from pipeline.planning.output import plan_json, plan_table
from pipeline.planning.planner import plan_with_catalogue, planned_for
from pipeline.planning.selection import parse_globs
from pipeline.run import scheduler
from pipeline.run.failures import ERROR_LOG, broke, classify, first_line, known
from pipeline.run.outcomes import jobs_exit_code
from pipeline.run.signals import Interruption
from pipeline.run.summary import Report
from pipeline.settings import Settings
from pipeline.tools.credentials import Masker, Secrets


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    masker = Masker.from_env()
    interruption = Interruption()
    try:
        with interruption.installed():
            return args.func(args, masker, interruption)
    except InputError as err:
        for problem in err.problems:
            print(masker(str(problem)), file=sys.stderr)
        print(f"{len(err.problems)} problem(s); nothing was planned, built or pushed.",
              file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt as err:  # Interrupted too: SIGINT or SIGTERM
        failure = known(err)
        print(failure, file=sys.stderr)
        return failure.exit_code
    except Exception as err:  # exit 3 or 4 with one plain line, never a traceback
        failure = known(err) or broke(err, _error_log(args), masker)
        print(masker(_one_line(failure)), file=sys.stderr)
        return failure.exit_code


def _one_line(failure) -> str:
    status = getattr(failure, "status", "")
    text = first_line(str(failure), 1000)
    return text if status in ("factory error", "interrupted") else f"{status}: {text}"


def _error_log(args: argparse.Namespace) -> Path:
    """Where the traceback of an unexpected exception goes."""
    try:
        settings = _settings(args)
    except Exception:  # the settings themselves may be what broke
        return Path.cwd() / "out" / "logs" / ERROR_LOG
    if args.command == "lab":
        return settings.lab_dir / ERROR_LOG
    return settings.out_dir / "logs" / ERROR_LOG


def _plan(args: argparse.Namespace, masker: Masker, interruption: Interruption) -> int:
    planned, _ = planned_for(args, _settings(args))
    if args.format == "json":
        print(plan_json(planned.jobs, args.mode))
    else:
        plan_table(planned.jobs, args.mode, sys.stdout)
    return 0


def _run(args: argparse.Namespace, masker: Masker, interruption: Interruption) -> int:
    stages = tuple(s.strip() for s in args.stages.split(",") if s.strip())
    unusable = scheduler.check_stages(stages)
    if unusable:
        raise InputError([Problem("--stages", None, f"'{args.stages}': {unusable}")])
    if args.jobs < 1:
        raise InputError([Problem("-j", None, "give at least 1 job at a time")])
    settings = _settings(args)
    secrets = Secrets.from_env()
    key_problem = secrets.signing_key_problem() if args.mode != "pr" else None
    if key_problem:  # before anything is built: publishing would fail at the end
        raise InputError([Problem("PIPELINE_SIGNING_KEY", None, key_problem)])
    console = make_console(mask=masker)
    error_log = settings.out_dir / "logs" / ERROR_LOG
    run = None
    failure = None
    try:
        planned, target = planned_for(args, settings)
        run = scheduler.Run(settings, Path(args.matrix).resolve().parent, stages, args.jobs,
                            console, {image.name: image.description
                                      for image in planned.catalogue.images},
                            mode=args.mode, target=target, declared=planned.declared,
                            published_ids=planned.published_ids, secrets=secrets,
                            masker=masker, interruption=interruption)
        run.prepare(planned.jobs)
        run.execute()
    except InputError:
        raise
    except (Exception, KeyboardInterrupt) as err:  # classified, then reported
        failure = classify(err, error_log, masker)
    return _report(run, failure, settings, console, masker)


def _report(run, failure, settings: Settings, console, masker: Masker) -> int:
    """Write summary.json, junit.xml and the tables, whatever happened; the exit code."""
    error_log = settings.out_dir / "logs" / ERROR_LOG
    reason = masker(first_line(str(failure), 1000)) if failure else ""
    outcomes = run.finish(reason or "not run") if run is not None else []
    code = failure.exit_code if failure else jobs_exit_code(outcomes)
    status = failure.status if failure else ("passed" if code == 0 else "failed")
    info = {"id": run.run_id if run else None, "status": status, "exit_code": code,
            "reason": reason}
    if isinstance(failure, Interrupted):
        info["signal"] = failure.signal_name
    errors = Report(outcomes, run.publications if run else [], settings.out_dir, masker,
                    info).write(console)
    if errors:  # the report itself could not be written: that is the factory breaking
        broken = broke(errors[0], error_log, masker)
        print(masker(_one_line(broken)), file=sys.stderr)
        if failure is None or code < broken.exit_code:
            code = broken.exit_code
    if failure is not None:
        print(masker(_one_line(failure)), file=sys.stderr)
    return code


def _lab(args: argparse.Namespace, masker: Masker, interruption: Interruption) -> int:
    action = {"up": lab_commands.up, "status": lab_commands.status,
              "down": lab_commands.down}[args.action]
    try:
        return action(_settings(args))
    except (RuntimeError, OSError) as err:
        print(masker(f"lab {args.action}: {err}"), file=sys.stderr)
        return 1


def _ci(args: argparse.Namespace, masker: Masker, interruption: Interruption) -> int:
    """The plan as CI data.  The registry is not asked (``plan_with_catalogue``), so in
    main/nightly jobs already published are not marked skip here yet."""
    planned = plan_with_catalogue(Path(args.matrix), args.mode, args.changed_from,
                                  parse_globs(args.select) if args.select else None)
    levels = ci_levels(planned.jobs)
    if args.forge == "gitlab":
        text = ci_gitlab.child_pipeline(levels, args.mode,
                                        parse_runners(args.runner, GITLAB_TAGS, tags=True))
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        print(out)
        return 0
    outputs = ci_github.matrices(levels, parse_runners(args.runner, GITHUB_RUNNERS))
    print(json.dumps(outputs, indent=2, sort_keys=True))
    if os.environ.get("GITHUB_OUTPUT"):
        ci_github.write_github_output(outputs, Path(os.environ["GITHUB_OUTPUT"]))
    return 0


def _settings(args: argparse.Namespace) -> Settings:
    settings = Settings.from_env(Path.cwd())
    if getattr(args, "out", None):
        settings = replace(settings, out_dir=Path(args.out))
    return settings


def _plan_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--matrix", default="matrix.yaml", help="catalogue file (matrix.yaml)")
    parser.add_argument("--mode", choices=MODES, default="pr",
                        help="pr: build and test; main: also publish; nightly: every cell")
    parser.add_argument("--changed-from", metavar="REF",
                        help="build only cells whose inputs changed since this git revision")
    parser.add_argument("--select", metavar="GLOBS",
                        help="comma-separated fnmatch globs over job ids; needed jobs come along")
    parser.add_argument("--target", help="where to publish, a target of matrix.yaml "
                        "(default: its default_target, the local lab registry)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline",
                                     description="HPC container image factory")
    sub = parser.add_subparsers(dest="command", required=True)
    plan = sub.add_parser("plan", help="expand matrix.yaml into the ordered build plan")
    _plan_arguments(plan)
    plan.add_argument("--format", choices=("table", "json"), default="table")
    plan.set_defaults(func=_plan)
    run = sub.add_parser("run", help="run the plan's jobs through the stages")
    _plan_arguments(run)
    run.add_argument("--stages", default=",".join(scheduler.STAGES),
                     help=f"comma-separated stages to run (of {', '.join(scheduler.STAGES)})")
    run.add_argument("-j", "--jobs", type=int, default=scheduler.default_workers(),
                     help="jobs at a time (default: the number of cores)")
    run.add_argument("--out", help="output folder (default: out/, or PIPELINE_OUT_DIR)")
    run.set_defaults(func=_run)
    lab_parser = sub.add_parser("lab", help="bring up, show or stop the local lab")
    lab_parser.add_argument("action", choices=("up", "status", "down"))
    lab_parser.set_defaults(func=_lab)
    ci = sub.add_parser("ci", help="write the plan as CI data (GitLab child pipeline, "
                        "GitHub matrices)")
    forges = ci.add_subparsers(dest="forge", required=True)
    for forge, runners, what in (("gitlab", GITLAB_TAGS, "the runner tags (comma-separated)"),
                                 ("github", GITHUB_RUNNERS, "the runs-on label")):
        forge_parser = forges.add_parser(forge, help=f"the plan for {forge}")
        _plan_arguments(forge_parser)
        forge_parser.add_argument(
            "--runner", action="append", metavar="ARCH=LABEL",
            help=f"{what} of an arch's jobs (repeatable; default: " + " ".join(
                f"{a}={','.join(v) if isinstance(v, list) else v}"
                for a, v in runners.items()) + ")")
        forge_parser.set_defaults(func=_ci)
    forges.choices["gitlab"].add_argument(
        "--out", default="out/ci/child-pipeline.yml",
        help="where to write the child pipeline (default: out/ci/child-pipeline.yml)")
    return parser
