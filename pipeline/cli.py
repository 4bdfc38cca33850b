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
from dataclasses import dataclass, field, replace
from pathlib import Path

from pipeline import runner
from pipeline.catalogue import Catalogue, Target, load_catalogue
from pipeline.changes import MODES, decide, load_baseline
from pipeline.credentials import Secrets
from pipeline.distribution import Registry, RetryPolicy
from pipeline.lab import lab
from pipeline.plan import Job, build_plan
from pipeline.problems import InputError, Problem
from pipeline.published import effective_build_ids, mark_published, tag_closure
from pipeline.report import make_console, plan_json, plan_table
from pipeline.select import parse_globs, select
from pipeline.settings import Settings
from pipeline.summary import print_summary, write_summary
from pipeline.tree import WorkTree
from pipeline.upstream import Upstream


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
    """The plan as ``plan`` prints it, without asking any registry."""
    return plan_with_catalogue(matrix, mode, changed_from, globs).jobs


@dataclass(frozen=True)
class Planned:
    catalogue: Catalogue
    declared: list[Job]  # every decided job, selected or not: which arches each tag declares
    jobs: list[Job]  # the selection, in dependency order
    published_ids: dict = field(default_factory=dict)  # job id -> effective build_id


def plan_with_catalogue(matrix: Path, mode: str, changed_from: str | None = None,
                        globs: list[str] | None = None) -> Planned:
    """The catalogue and its plan (decided and selected), for the commands that run it."""
    if mode == "nightly" and changed_from:
        raise InputError([Problem("--changed-from", None, "nightly considers every cell; "
                                  "leave --changed-from out or use --mode main")])
    folder = matrix.parent
    tree = WorkTree(folder)
    catalogue = load_catalogue(tree, matrix.name, display=str(matrix))
    jobs = build_plan(catalogue, tree)
    baseline = load_baseline(folder, matrix.name, changed_from) if changed_from else None
    jobs = decide(jobs, mode, baseline)
    return Planned(catalogue, jobs, select(jobs, globs) if globs else jobs)


def target_of(catalogue: Catalogue, name: str | None, settings: Settings) -> Target:
    """The named target (default: the catalogue's); PIPELINE_REGISTRY moves ``local``."""
    name = name or catalogue.default_target
    if name not in catalogue.targets:
        raise InputError([Problem("--target", None, f"'{name}' is not a target of "
                                  f"{catalogue.file} ({', '.join(catalogue.targets)})")])
    target = catalogue.targets[name]
    return replace(target, registry=settings.registry) if name == "local" else target


def planned_for(args: argparse.Namespace, settings: Settings) -> tuple[Planned, Target]:
    """The plan and its target.  Outside ``pr`` mode the effective build_ids are computed
    (publishing compares them with the target's), and jobs already published on the
    target become ``skip``: a rerun of the same revision, or a nightly run with nothing
    changed upstream, builds nothing."""
    planned = plan_with_catalogue(Path(args.matrix), args.mode, args.changed_from,
                                  parse_globs(args.select) if args.select else None)
    target = target_of(planned.catalogue, args.target, settings)
    if args.mode == "pr":  # never publishes: the registry is not asked
        return planned, target
    upstream = Upstream(settings)
    # The closure holds every selected job, so these ids serve both publishing and skipping.
    ids, unknown = effective_build_ids(tag_closure(planned.declared, planned.jobs), upstream)
    jobs = planned.jobs
    if args.mode in ("main", "nightly"):
        secrets = Secrets.from_env()
        registry = Registry(target.registry, secrets.registry,
                            RetryPolicy(attempts=4, total_seconds=60))
        jobs = mark_published(jobs, registry, ids, unknown)
    return replace(planned, jobs=jobs, published_ids=ids), target


def _plan(args: argparse.Namespace) -> int:
    planned, _ = planned_for(args, _settings(args))
    if args.format == "json":
        print(plan_json(planned.jobs, args.mode))
    else:
        plan_table(planned.jobs, args.mode, sys.stdout)
    return 0


def _run(args: argparse.Namespace) -> int:
    stages = tuple(s.strip() for s in args.stages.split(",") if s.strip())
    unusable = runner.check_stages(stages)
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
    run = runner.Run(settings, Path(args.matrix).resolve().parent, stages, args.jobs, console,
                     {image.name: image.description for image in planned.catalogue.images},
                     mode=args.mode, target=target, declared=planned.declared,
                     published_ids=planned.published_ids)
    outcomes = run.execute(planned.jobs)
    summary = settings.out_dir / "summary.json"
    write_summary(outcomes, summary, run.publications)
    print_summary(outcomes, console, summary, run.publications)
    return 0 if all(o.result != "failed" for o in outcomes) else 1


def _lab(args: argparse.Namespace) -> int:
    action = {"up": lab.up, "status": lab.status, "down": lab.down}[args.action]
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
    run.add_argument("--stages", default=",".join(runner.STAGES),
                     help=f"comma-separated stages to run (of {', '.join(runner.STAGES)})")
    run.add_argument("-j", "--jobs", type=int, default=runner.default_workers(),
                     help="jobs at a time (default: the number of cores)")
    run.add_argument("--out", help="output folder (default: out/, or PIPELINE_OUT_DIR)")
    run.set_defaults(func=_run)
    lab_parser = sub.add_parser("lab", help="bring up, show or stop the local lab")
    lab_parser.add_argument("action", choices=("up", "status", "down"))
    lab_parser.set_defaults(func=_lab)
    return parser
