"""``python -m pipeline``: the factory's command line.

    python -m pipeline plan [--matrix FILE] [--mode pr|main|nightly] [--changed-from REF]
                            [--select GLOBS] [--target NAME] [--format table|json]
    python -m pipeline run  [same as plan] [--stages STAGES] [-j N] [--out DIR]
    python -m pipeline lab  up|status|down

Exit codes: 0 success, 1 a job failed (run) or the lab is not ready (lab status),
2 bad input (every problem printed as FILE:LINE: message).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from pipeline.console import make_console
from pipeline.errors import InputError, Problem
from pipeline.lab import commands as lab_commands
from pipeline.planning.changes import MODES
from pipeline.planning.output import plan_json, plan_table
from pipeline.planning.planner import planned_for
from pipeline.run import scheduler
from pipeline.run.summary import print_summary, write_summary
from pipeline.settings import Settings
from pipeline.tools.credentials import Secrets


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.func(args)
    except InputError as err:
        for problem in err.problems:
            print(problem, file=sys.stderr)
        print(f"{len(err.problems)} problem(s); nothing was planned, built or pushed.",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _plan(args: argparse.Namespace) -> int:
    planned, _ = planned_for(args, _settings(args))
    if args.format == "json":
        print(plan_json(planned.jobs, args.mode))
    else:
        plan_table(planned.jobs, args.mode, sys.stdout)
    return 0


def _run(args: argparse.Namespace) -> int:
    stages = tuple(s.strip() for s in args.stages.split(",") if s.strip())
    unusable = scheduler.check_stages(stages)
    if unusable:
        raise InputError([Problem("--stages", None, f"'{args.stages}': {unusable}")])
    if args.jobs < 1:
        raise InputError([Problem("-j", None, "give at least 1 job at a time")])
    settings = _settings(args)
    key_problem = Secrets.from_env().signing_key_problem() if args.mode != "pr" else None
    if key_problem:  # before anything is built: publishing would fail at the end
        raise InputError([Problem("PIPELINE_SIGNING_KEY", None, key_problem)])
    planned, target = planned_for(args, settings)
    console = make_console()
    run = scheduler.Run(settings, Path(args.matrix).resolve().parent, stages, args.jobs, console,
                     {image.name: image.description for image in planned.catalogue.images},
                     mode=args.mode, target=target, declared=planned.declared,
                     published_ids=planned.published_ids)
    outcomes = run.execute(planned.jobs)
    summary = settings.out_dir / "summary.json"
    write_summary(outcomes, summary, run.publications)
    print_summary(outcomes, console, summary, run.publications)
    return 0 if all(o.result != "failed" for o in outcomes) else 1


def _lab(args: argparse.Namespace) -> int:
    action = {"up": lab_commands.up, "status": lab_commands.status, "down": lab_commands.down}[args.action]
    try:
        return action(_settings(args))
    except (RuntimeError, OSError) as err:
        print(f"lab {args.action}: {err}", file=sys.stderr)
        return 1


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
    return parser
