"""``python -m pipeline``: the factory's command line.

    python -m pipeline plan [--matrix FILE] [--mode pr|main|nightly] [--changed-from REF]
                            [--select GLOBS] [--format table|json]

Exit codes: 0 success, 2 bad input (every problem printed as FILE:LINE: message).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.catalogue import load_catalogue
from pipeline.changes import MODES, decide, load_baseline
from pipeline.plan import Job, build_plan
from pipeline.problems import InputError, Problem
from pipeline.report import plan_json, plan_table
from pipeline.select import parse_globs, select
from pipeline.tree import WorkTree


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


def make_plan(matrix: Path, mode: str, changed_from: str | None = None,
              globs: list[str] | None = None) -> list[Job]:
    """The plan as ``plan`` prints it; the entry point later stages use too."""
    if mode == "nightly" and changed_from:
        raise InputError([Problem("--changed-from", None, "nightly considers every cell; "
                                  "leave --changed-from out or use --mode main")])
    folder = matrix.parent
    tree = WorkTree(folder)
    catalogue = load_catalogue(tree, matrix.name, display=str(matrix))
    jobs = build_plan(catalogue, tree)
    baseline = load_baseline(folder, matrix.name, changed_from) if changed_from else None
    jobs = decide(jobs, mode, baseline)
    return select(jobs, globs) if globs else jobs


def _plan(args: argparse.Namespace) -> int:
    jobs = make_plan(Path(args.matrix), args.mode, args.changed_from,
                     parse_globs(args.select) if args.select else None)
    if args.format == "json":
        print(plan_json(jobs, args.mode))
    else:
        plan_table(jobs, args.mode, sys.stdout)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline",
                                     description="HPC container image factory")
    sub = parser.add_subparsers(dest="command", required=True)
    plan = sub.add_parser("plan", help="expand matrix.yaml into the ordered build plan")
    plan.add_argument("--matrix", default="matrix.yaml", help="catalogue file (matrix.yaml)")
    plan.add_argument("--mode", choices=MODES, default="pr",
                      help="pr: build and test; main: also publish; nightly: consider every cell")
    plan.add_argument("--changed-from", metavar="REF",
                      help="build only cells whose inputs changed since this git revision")
    plan.add_argument("--select", metavar="GLOBS",
                      help="comma-separated fnmatch globs over job ids; needed jobs come along")
    plan.add_argument("--format", choices=("table", "json"), default="table")
    plan.set_defaults(func=_plan)
    return parser
