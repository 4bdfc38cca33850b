"""``python -m pipeline``: the factory's command line.

    python -m pipeline plan [--matrix FILE] [--mode pr|main|nightly] [--changed-from REF]
                            [--select GLOBS] [--target NAME] [--format table|json]
    python -m pipeline run  [same as plan] [--stages STAGES] [--only JOB_ID] [-j N]
                            [--out DIR]
    python -m pipeline publish [same as plan] [--out DIR]
    python -m pipeline report  [SUMMARY_OR_DIR ...] [--out DIR] [--pr N] [--sha SHA]
                               [--read-only]
    python -m pipeline lab  up|status|down [--with cluster]
    python -m pipeline catalog [--matrix FILE] [--target NAME] [--out DIR] [--push]
    python -m pipeline cluster pull|bundle|import|modules ...
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
from datetime import datetime, timezone
from pathlib import Path

from pipeline.ci import github as ci_github
from pipeline.ci import gitlab as ci_gitlab
from pipeline.ci.levels import GITHUB_RUNNERS, GITLAB_TAGS, ci_levels, placements
from pipeline.cluster import command as cluster_command
from pipeline.console import make_console
from pipeline.errors import InfrastructureUnreachable, InputError, Interrupted, Problem
from pipeline.forge import command as forge_command
from pipeline.lab import commands as lab_commands
from pipeline.planning.changes import MODES
from pipeline.planning.output import plan_json, plan_table
from pipeline.planning.planner import plan_with_catalogue, planned_for
from pipeline.planning.selection import only, parse_globs
from pipeline.published import command as catalog_command
from pipeline.run import from_staging, scheduler
from pipeline.run.failures import ERROR_LOG, broke, classify, first_line, known
from pipeline.run.outcomes import jobs_exit_code
from pipeline.run.publishing import publications_exit_code
from pipeline.run.signals import Interruption
from pipeline.run.summary import Report, job_url
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
    return _execute(args, masker, interruption, publish_only=False)


def _publish(args: argparse.Namespace, masker: Masker, interruption: Interruption) -> int:
    """``publish``: what the CI jobs of this plan staged, published tag by tag."""
    if args.mode == "pr":
        raise InputError([Problem("--mode", None, "pr runs never publish; give --mode main "
                                  "or --mode nightly")])
    return _execute(args, masker, interruption, publish_only=True)


def _stages(args: argparse.Namespace, publish_only: bool) -> tuple:
    if publish_only:
        return scheduler.STAGES
    given = args.stages or ",".join(scheduler.STAGES[:-1] if args.only else scheduler.STAGES)
    stages = tuple(s.strip() for s in given.split(",") if s.strip())
    unusable = scheduler.check_stages(stages)
    if unusable:
        raise InputError([Problem("--stages", None, f"'{given}': {unusable}")])
    if args.only and "publish" in stages:
        raise InputError([Problem("--stages", None, "--only runs one job of a tag; publish "
                                  "runs after every arch passed: `python -m pipeline publish`")])
    return stages


def _execute(args: argparse.Namespace, masker: Masker, interruption: Interruption, *,
             publish_only: bool) -> int:
    """``run`` (the jobs, through the stages) and ``publish`` (the jobs taken from staging,
    then published): one path, so both write the same summary, JUnit and tables."""
    stages = _stages(args, publish_only)
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
        jobs, taken = (only(planned.jobs, args.only) if getattr(args, "only", None)
                       else (planned.jobs, frozenset()))
        run = scheduler.Run(settings, Path(args.matrix).resolve().parent, stages, args.jobs,
                            console, {image.name: image.description
                                      for image in planned.catalogue.images},
                            mode=args.mode, target=target, declared=planned.declared,
                            catalogue=planned.catalogue,
                            published_ids=planned.published_ids, secrets=secrets,
                            masker=masker, interruption=interruption, taken=taken,
                            only=getattr(args, "only", None),
                            # a later publish job takes the tested SIFs from staging
                            handoff=args.mode != "pr" and "publish" not in stages)
        if publish_only:  # the jobs' results come from staging; nothing is built
            run.prepare(jobs, promote=False)
            run.execute(collect=from_staging.collect)
        else:
            run.prepare(jobs)
            run.execute()
            missing = run.missing_needs()
            if missing:
                raise InfrastructureUnreachable(
                    f"{len(missing)} job(s) this one needs are not in staging: "
                    + "; ".join(first_line(o.reason) for o in missing))
    except InputError:
        raise
    except (Exception, KeyboardInterrupt) as err:  # classified, then reported
        failure = classify(err, error_log, masker)
    return _report(run, failure, settings, console, masker,
                   "publish" if publish_only else "run")


def _report(run, failure, settings: Settings, console, masker: Masker,
            command: str = "run") -> int:
    """Write summary.json, junit.xml and the tables, whatever happened; the exit code.

    The jobs ``--only`` took from staging are not this run's jobs: the summary names them
    under ``run.taken`` (their own CI jobs report them), not among ``jobs``."""
    error_log = settings.out_dir / "logs" / ERROR_LOG
    reason = masker(first_line(str(failure), 1000)) if failure else ""
    outcomes = run.finish(reason or "not run") if run is not None else []
    taken = [o for o in outcomes if run is not None and o.job.id in run.taken]
    outcomes = [o for o in outcomes if o not in taken]
    # A failed publication (a tag's fails its jobs too; the catalogue's only itself) is 1.
    code = failure.exit_code if failure else max(
        jobs_exit_code(outcomes), publications_exit_code(run.publications if run else []))
    status = failure.status if failure else ("passed" if code == 0 else "failed")
    info = {"id": run.run_id if run else None, "command": command, "status": status,
            "exit_code": code,
            "reason": reason, "mode": run.mode if run else None,
            "only": run.only if run else None,
            "job_url": job_url(os.environ),
            # when this part of a CI run ended: the reporter keeps the later of two parts
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "taken": [{"id": o.job.id, "result": o.result,
                       "image": o.built.reference if o.built else None} for o in taken]}
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
        return action(_settings(args), extras=tuple(args.extras))
    except (RuntimeError, OSError) as err:
        print(masker(f"lab {args.action}: {err}"), file=sys.stderr)
        return 1


def _ci(args: argparse.Namespace, masker: Masker, interruption: Interruption) -> int:
    """The plan as CI data.  The registry is not asked (``plan_with_catalogue``), so in
    main/nightly jobs already published are not marked skip here yet."""
    planned = plan_with_catalogue(Path(args.matrix), args.mode, args.changed_from,
                                  parse_globs(args.select) if args.select else None)
    levels = ci_levels(planned.jobs)
    # Runners: --runner, else matrix.yaml's ci.runners, else the defaults in ci/levels.py.
    runners = placements(args.forge, planned.catalogue.runners, args.runner)
    if args.forge == "gitlab":
        text = ci_gitlab.child_pipeline(levels, args.mode,
                                        {arch: list(p.runner) for arch, p in runners.items()},
                                        options=ci_gitlab.PlanOptions.from_args(args))
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        print(out)
        return 0
    outputs = ci_github.matrices(levels, runners)
    print(json.dumps(outputs, indent=2, sort_keys=True))
    if os.environ.get("GITHUB_OUTPUT"):
        ci_github.write_github_output(outputs, Path(os.environ["GITHUB_OUTPUT"]))
    return 0


def _settings(args: argparse.Namespace) -> Settings:
    settings = Settings.from_env(Path.cwd())
    if getattr(args, "out", None):
        # absolute: docker -v and apptainer binds refuse a relative path
        settings = replace(settings, out_dir=Path(args.out).resolve())
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
    run.add_argument("--stages", default=None,
                     help=f"comma-separated stages to run (of {', '.join(scheduler.STAGES)}; "
                     "default: all, without publish with --only)")
    run.add_argument("--only", metavar="JOB_ID",
                     help="run this one job (a CI job): what it needs is taken from staging "
                     "by digest, never built (missing: exit 4); in main/nightly its tested "
                     "SIF is left in staging for `publish`")
    run.add_argument("-j", "--jobs", type=int, default=scheduler.default_workers(),
                     help="jobs at a time (default: the number of cores)")
    run.add_argument("--out", help="output folder (default: out/, or PIPELINE_OUT_DIR)")
    run.set_defaults(func=_run)
    publish = sub.add_parser("publish", help="publish what the CI jobs of the plan staged "
                             "(after `run --only` per job): a tag when every arch passed")
    _plan_arguments(publish)
    publish.add_argument("--out", help="output folder (default: out/, or PIPELINE_OUT_DIR)")
    publish.set_defaults(func=_publish, jobs=1, only=None, stages=None)
    lab_parser = sub.add_parser("lab", help="bring up, show or stop the local lab")
    lab_parser.add_argument("action", choices=("up", "status", "down"))
    lab_parser.add_argument("--with", dest="extras", action="append", default=[],
                            choices=lab_commands.EXTRAS,
                            help="also bring up, show or stop this part (cluster: the one-node "
                                 "Slurm cluster; down stops a running one anyway)")
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
            help=f"{what} of an arch's jobs (repeatable; default: matrix.yaml's ci.runners, "
            "else " + " ".join(f"{a}={','.join(v) if isinstance(v, list) else v}"
                               for a, v in runners.items()) + ")")
        forge_parser.set_defaults(func=_ci)
    forges.choices["gitlab"].add_argument(
        "--out", default="out/ci/child-pipeline.yml",
        help="where to write the child pipeline (default: out/ci/child-pipeline.yml)")
    forge_command.add_parser(sub)
    catalog_command.add_parser(sub)
    cluster_command.add_parser(sub)
    return parser
