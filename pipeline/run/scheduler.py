"""``run``: the plan's jobs in dependency order, N at a time, each through the stages.

A job runs once every job it needs has passed; a job whose need failed is skipped with
that reason.  Jobs the plan marked ``skip`` stay skipped, except those a job to build
needs: they run too, and the build stage finds their image already built when it is.
Every job writes its own log; the command line then writes ``summary.json``, ``junit.xml``
and a table from :attr:`Run.outcomes`, whatever happened.

Before any job starts, the Docker daemon, a build client, the lab registry and (for the
stages after build) Apptainer must be there; otherwise every job fails with the reason and
:class:`InfrastructureUnreachable` is raised (exit 4).

On SIGINT or SIGTERM (``run/signals.py``) no new job starts; the running jobs' processes
and the containers labelled with the run id are ended, their scratch folders removed; the
jobs that were running become ``interrupted``, the ones not started ``skipped``, and
:class:`Interrupted` is raised (exit 130 or 143).  Any other exception that escapes the
scheduler stops the jobs the same way before it goes on up (exit 3).
"""

from __future__ import annotations

import os
import queue
import secrets as random
import shutil
import threading
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from pipeline.catalogue.model import Catalogue, Target
from pipeline.errors import FactoryError, InfrastructureUnreachable, Interrupted
from pipeline.names import file_name, sif_name
from pipeline.planning.jobs import Job
from pipeline.run.failures import INFRASTRUCTURE, first_line
from pipeline.run.outcomes import STYLES, Outcome
from pipeline.run.publishing import Publisher
from pipeline.run.signals import Interruption, scratch_paths, stop_jobs
from pipeline.settings import Settings
from pipeline.stages import build as build_stage
from pipeline.stages import convert as convert_stage
from pipeline.stages import handoff
from pipeline.stages import test as test_stage
from pipeline.stages.context import StageContext
from pipeline.stages.definition import UnsafeDefinition
from pipeline.stages.labels import UnsafeValue
from pipeline.tools import docker_engine, processes
from pipeline.tools.apptainer import ApptainerMissing
from pipeline.tools.apptainer import find as find_apptainer
from pipeline.tools.credentials import Masker, Secrets
from pipeline.tools.git import describe
from pipeline.tools.os_bases import BaseNotFound, OsBases
from pipeline.tools.registry.client import RegistryError
from pipeline.tools.registry.staging import StagingUnavailable, staging_for
from pipeline.tools.upstream import Upstream, UpstreamUnknown

__all__ = ["STAGES", "Outcome", "Run", "check_stages", "default_workers", "jobs_to_run"]

STAGES = ("build", "convert", "test", "publish")
EXPECTED_FAILURES = (build_stage.BuildFailed, build_stage.NeedNotStaged, BaseNotFound,
                     docker_engine.DockerUnavailable, RegistryError,
                     convert_stage.ConvertFailed, test_stage.TestsFailed,
                     ApptainerMissing, UnsafeDefinition, UnsafeValue, UpstreamUnknown)
POLL = 0.5  # seconds between looks at the interrupt flag while jobs run


def jobs_to_run(jobs: list[Job]) -> list[Job]:
    """Promote the ``skip`` jobs that a ``build`` job needs; they are reused when built."""
    by_id = {j.id: j for j in jobs}
    wanted: set[str] = set()
    stack = [j.id for j in jobs if j.action == "build"]
    while stack:
        for need in by_id[stack.pop()].needs:
            if by_id[need].action == "skip" and need not in wanted:
                wanted.add(need)
                stack.append(need)
    return [replace(j, action="build", reason=f"{j.reason}; needed by a job to build "
                    "(reused if already built)") if j.id in wanted else j for j in jobs]


def check_stages(stages: tuple) -> str | None:
    """Why ``stages`` cannot run, or None: each stage needs the ones before it."""
    if not stages or stages != STAGES[:len(stages)]:
        return (f"give the stages in order, each with the ones before it: "
                f"{', '.join(','.join(STAGES[:n]) for n in range(1, len(STAGES) + 1))}")
    return None


def new_run_id() -> str:
    """A run's id: its start time and a random suffix (labels and names its containers)."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{random.token_hex(3)}"


@dataclass
class Run:
    settings: Settings
    catalogue_dir: Path
    stages: tuple
    workers: int
    console: Console
    descriptions: dict = field(default_factory=dict)
    mode: str = "pr"
    target: Target | None = None
    # matrix.yaml as read: what publishing records of each image (its commands)
    catalogue: Catalogue | None = None
    declared: list = field(default_factory=list)  # every job of the plan, selected or not
    published_ids: dict = field(default_factory=dict)  # job id -> effective build_id
    # ``run --only``: the needs of the one job, taken from staging (never built here)
    taken: frozenset = frozenset()
    only: str | None = None
    # Leave each tested SIF in staging (``stages/handoff.py``) for a later publish job
    handoff: bool = False
    secrets: Secrets = field(default_factory=Secrets.from_env)
    masker: Masker | None = None  # None: made from ``secrets``; everything written uses it
    interruption: Interruption = field(default_factory=Interruption)
    run_id: str = field(default_factory=new_run_id)
    publications: list = field(default_factory=list)
    outcomes: dict = field(default_factory=dict)  # job id -> Outcome, in plan order
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        if self.masker is None:
            self.masker = self.secrets.masker()
        self._docker: str | None = None
        self._docker_config: Path | None = None  # the run's docker login; removed at its end
        self._threads: dict[str, threading.Thread] = {}

    # -- the run --------------------------------------------------------------------------
    def prepare(self, jobs: list[Job], promote: bool = True) -> list[Outcome]:
        """One pending Outcome (and an empty log) per job to run; skipped ones as such.
        ``promote``: the ``skip`` jobs a job to build needs run too (``jobs_to_run``)."""
        jobs = jobs_to_run(jobs) if promote else jobs
        log_dir = self.settings.out_dir / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        self.outcomes = {j.id: Outcome(j, log_dir / f"{file_name(j.id)}.log") for j in jobs}
        for outcome in self.outcomes.values():
            outcome.log.write_text("")
            if outcome.job.action == "skip":
                outcome.result, outcome.reason = "skipped", outcome.job.reason
        return list(self.outcomes.values())

    def execute(self, jobs: list[Job] | None = None, collect=None) -> list[Outcome]:
        """Run the jobs (``prepare``\\ d before, or given here) and publish; see the module.

        ``collect(run, context, todo)``, when given, stands in for running the jobs: it
        gives each pending outcome its result from elsewhere (``publish`` takes them from
        staging, ``run/from_staging.py``)."""
        if jobs is not None:
            self.prepare(jobs)
        todo = [o for o in self.outcomes.values() if o.result == "pending"]
        if not todo:
            return list(self.outcomes.values())
        processes.allow_again()
        self.console.log(f"run {self.run_id}: {len(todo)} job(s) "
                         + ("to take from staging" if collect else
                            f"to run through {','.join(self.stages)}"))
        with self.interruption.installed():
            try:
                self.interruption.check()
                context = self._context()
                if collect is None:
                    self._schedule(todo, context)
                else:
                    collect(self, context, todo)
                self.interruption.check()
                if "publish" in self.stages:
                    Publisher(self, context).publish_all(self.outcomes)
            except BaseException as err:
                self._stop(err)
                raise
            finally:
                if self._docker_config is not None:
                    shutil.rmtree(self._docker_config, ignore_errors=True)
        return list(self.outcomes.values())

    def _context(self) -> StageContext:
        """What the stages share; InfrastructureUnreachable when a part of the lab is missing."""
        try:
            client = docker_engine.find_build_client(self.settings)
            docker_engine.engine()
            self._docker = client.path
            apptainer = (find_apptainer(self.settings.lab_dir, client)
                         if len(self.stages) > 1 else None)
            staging = staging_for(self.mode, self.settings.lab_dir, self.settings.registry,
                                  self.settings.pr_registry)
        except (*INFRASTRUCTURE, StagingUnavailable) as err:
            raise InfrastructureUnreachable(str(err)) from None
        self.masker.add(staging.credentials.password,
                        staging.key.decode(errors="replace") if staging.key else None)
        if not staging.client().answers():
            which = "trusted" if staging.trusted else "pr"
            raise InfrastructureUnreachable(
                f"the {which} staging registry {staging.registry} does not answer (builds are "
                "staged there); start it with `python -m pipeline lab up`")
        if staging.credentials.given:  # docker push/pull to staging with its login, for this run
            self._docker_config = self.settings.lab_dir / "run" / f"docker-{self.run_id}"
            try:
                client = docker_engine.docker_login(
                    client, staging.registry, staging.credentials.username,
                    staging.credentials.password, self._docker_config)
            except docker_engine.DockerUnavailable as err:
                raise InfrastructureUnreachable(str(err)) from None
        if apptainer is not None:
            apptainer = replace(apptainer, run_id=self.run_id)
        return StageContext(self.settings, client,
                            OsBases(self.settings, client, Upstream(self.settings),
                                    staging=staging),
                            describe(self.catalogue_dir), self.catalogue_dir,
                            self.descriptions, apptainer, staging=staging)

    def _schedule(self, todo: list[Outcome], context) -> None:
        outcomes = self.outcomes
        total = len(todo)
        # A live bar on a terminal; in CI logs the start/end lines below say the same.
        self._progress = Progress(SpinnerColumn(), TextColumn("{task.description}"),
                                  BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                  console=self.console, transient=True,
                                  disable=not self.console.is_terminal)
        self._overall = self._progress.add_task("jobs", total=total)
        self._tasks: dict = {}
        finished: queue.Queue = queue.Queue()
        with self._progress, self.interruption.flagging():
            waiting = list(todo)
            while (waiting or self._threads) and not self.interruption.interrupted:
                for outcome in list(waiting):
                    needs = [outcomes[n] for n in outcome.job.needs]
                    broken = [n for n in needs if n.result in ("failed", "skipped",
                                                               "interrupted")]
                    if broken:
                        waiting.remove(outcome)
                        outcome.result = "skipped"
                        which = broken[0].result
                        outcome.reason = (f"needs {broken[0].job.id}, which "
                                          f"{'was skipped' if which == 'skipped' else which}")
                        self._say(outcome, total)
                    elif (all(n.result == "passed" for n in needs)
                          and len(self._threads) < self.workers):
                        waiting.remove(outcome)
                        self._start(outcome, context, finished)
                if not self._threads:
                    if waiting:  # nothing runs and nothing can start: a need never ran
                        for outcome in waiting:
                            outcome.result, outcome.reason = "skipped", "a job it needs never ran"
                        waiting.clear()
                    continue
                try:
                    outcome = finished.get(timeout=POLL)
                except queue.Empty:
                    continue
                self._threads.pop(outcome.job.id, None)
                self._say(outcome, total)
        self.interruption.check()

    def _start(self, outcome: Outcome, context, finished: queue.Queue) -> None:
        outcome.result = "running"

        def work() -> None:
            try:
                self._run_job(outcome, context)
            finally:
                finished.put(outcome)

        # Daemon threads: an interrupted run exits without waiting for a stuck one.
        thread = threading.Thread(target=work, name=f"job {outcome.job.id}", daemon=True)
        self._threads[outcome.job.id] = thread
        self._tasks[outcome.job.id] = self._progress.add_task(
            f"  {outcome.job.id}: {self.stages[0]}", total=None)
        self.console.log(f"start  {escape(outcome.job.id)}")
        thread.start()

    def _stop(self, err: BaseException) -> None:
        """After ``err`` stopped the run: end what it started, and give every job a result."""
        with self.interruption.flagging():
            running = [o for o in self.outcomes.values() if o.result == "running"]
            if isinstance(err, Interrupted):
                self.console.log(f"[magenta]{escape(str(err))}[/]: stopping {len(running)} "
                                 "running job(s); press Ctrl-C again to exit at once")
                stopped, not_run = str(err), "the run was interrupted"
            elif isinstance(err, FactoryError):
                stopped = not_run = self.masker(first_line(str(err)))
            else:
                why = self.masker(first_line(f"{type(err).__name__}: {err}"))
                stopped = f"stopped: the factory itself broke ({why})"
                not_run = f"not run: the factory itself broke ({why})"
            if not isinstance(err, InfrastructureUnreachable):  # else nothing was started
                # Jobs, or a publication (its apptainer push, in a container of the run).
                cleanup = scratch_paths(self.settings.lab_dir / "scratch",
                                        [o.job.id for o in running])
                cleanup += [self.settings.out_dir / "sif" / (sif_name(o.job.id) + ".partial")
                            for o in running]
                stop_jobs(self._docker, self.run_id,
                          lambda: not any(t.is_alive() for t in self._threads.values()),
                          cleanup, lambda line: self.console.log(escape(line)))
            with self._lock:
                for outcome in self.outcomes.values():
                    if outcome.result == "running":
                        self._mark_stopped(outcome, stopped)
                    elif outcome.result == "pending":
                        failed = isinstance(err, InfrastructureUnreachable)
                        outcome.result = "failed" if failed else "skipped"
                        outcome.reason = not_run
                    elif (outcome.result == "passed" and "publish" in self.stages
                          and "publish" not in outcome.stages):
                        outcome.stages["publish"] = {"result": "skipped", "reason": not_run}
            if not any(t.is_alive() for t in self._threads.values()):
                processes.allow_again()  # nothing of this run is left to start one

    @staticmethod
    def _mark_stopped(outcome: Outcome, reason: str) -> None:
        outcome.result, outcome.reason = "interrupted", reason
        for stage, details in outcome.stages.items():
            if isinstance(details, dict) and details.get("result") == "running":
                outcome.stages[stage] = {**details, "result": "interrupted", "reason": reason}

    def _say(self, outcome: Outcome, total: int) -> None:
        if outcome.job.id in self._tasks:
            self._progress.remove_task(self._tasks.pop(outcome.job.id))
        self._progress.advance(self._overall)
        finished = sum(o.finished for o in self.outcomes.values())
        first = outcome.reason.splitlines()[0] if outcome.reason else ""
        self.console.log(f"[{STYLES.get(outcome.result, '')}]{outcome.result:7}[/] "
                         f"{escape(outcome.job.id)} ({outcome.duration:.0f} s) "
                         f"{escape(self.masker(first))}  [{finished}/{len(self.outcomes)}]")

    def _run_job(self, outcome: Outcome, context) -> None:
        start = time.monotonic()
        with open(outcome.log, "a", encoding="utf-8") as handle:
            def log(line: str) -> None:
                handle.write(self.masker(line) + "\n")
                handle.flush()

            log(f"job {outcome.job.id}: {outcome.job.reason}")
            stages = self.stages_of(outcome.job)
            stage = stages[0]
            result, reason = "failed", ""
            try:
                for stage in stages:
                    stage_start = time.monotonic()
                    self._update(outcome, stage)
                    outcome.stages[stage] = {"result": "running"}
                    details = self._stage(stage, outcome, context, log)
                    outcome.stages[stage] = {**details, "result": "passed",
                                             "duration": round(time.monotonic() - stage_start, 1)}
                result, reason = "passed", self._passed_reason(outcome)
            except EXPECTED_FAILURES as err:
                reason = f"{stage}: {err}\n    log: {outcome.log}"
                self._stage_failed(outcome, stage, str(err))
                if not self.interruption.interrupted:
                    log(f"FAILED in {stage}: {err}")
            except Exception as err:  # a bug or an unforeseen outside error: keep the others going
                reason = f"{stage}: internal error: {err!r}; see {outcome.log}"
                self._stage_failed(outcome, stage, f"internal error: {err!r}")
                log(traceback.format_exc())
            finally:
                with self._lock:
                    outcome.duration = time.monotonic() - start
                    if outcome.result == "running":  # not already marked by _stop
                        if self.interruption.interrupted and result != "passed":
                            self._mark_stopped(outcome, str(self.interruption.error()))
                        else:
                            outcome.result, outcome.reason = result, self.masker(reason)
            if outcome.result == "interrupted":
                log(f"INTERRUPTED in {stage}: {outcome.reason}")

    def _stage_failed(self, outcome: Outcome, stage: str, reason: str) -> None:
        if self.interruption.interrupted:  # its process was ended: interrupted, not failed
            return
        details = outcome.stages.get(stage) or {}
        if details.get("result") in (None, "running"):
            details = {k: v for k, v in details.items() if k != "result"}
            outcome.stages[stage] = {**details, "result": "failed",
                                     "reason": self.masker(reason)}

    @property
    def job_stages(self) -> tuple:
        """The stages run per job; publish runs per tag, once the jobs are done.  With
        ``handoff``, a job that passed its tests then leaves its SIF in staging."""
        stages = tuple(s for s in self.stages if s != "publish")
        return (*stages, "handoff") if self.handoff and "test" in stages else stages

    def stages_of(self, job: Job) -> tuple:
        """A job taken from staging is looked up (build, reuse only); the others run."""
        return ("build",) if job.id in self.taken else self.job_stages

    def missing_needs(self) -> list[Outcome]:
        """The needs ``--only`` could not take from staging."""
        return [o for o in self.outcomes.values()
                if o.job.id in self.taken and o.result == "failed"]

    def _stage(self, stage: str, outcome: Outcome, context, log) -> dict:
        job = outcome.job
        if stage == "build":
            needs = {n: self.outcomes[n].built for n in job.needs}
            outcome.built = build_stage.build(job, needs, context, log,
                                              reuse_only=job.id in self.taken)
            return outcome.built.to_json()
        if stage == "handoff":
            return handoff.stage_sif(job, outcome.built.build_id, outcome.built.digest,
                                     outcome.converted.sif, context.staging, log).to_json()
        if stage == "convert":
            outcome.converted = convert_stage.convert(job, outcome.built, context, log)
            return outcome.converted.to_json()
        # The job's base SIF, when converted in this run: an image without mpicc has the MPI
        # hello world compiled there (same MPI).
        base = self.outcomes[job.needs[0]].converted if job.needs else None
        results = test_stage.run_tests(job, outcome.converted.sif, context, log,
                                       compile_in=base.sif if base else None)
        outcome.stages["test"] = {"tests": [r.to_json() for r in results]}
        failed = [r for r in results if r.result == "failed"]
        if failed:
            outcome.stages["test"]["result"] = "failed"
            raise test_stage.TestsFailed("; ".join(f"{r.name} failed: {r.reason}" for r in failed))
        return outcome.stages["test"]

    def _passed_reason(self, outcome: Outcome) -> str:
        if outcome.job.id in self.taken:
            return f"taken from staging: {outcome.built.reference}"
        parts = ["already built" if outcome.built.cached else "built"]
        if outcome.converted and outcome.built.sif_only:  # recipe.def: apptainer built it
            parts.append("SIF built from recipe.def")
        elif outcome.converted:
            parts.append("SIF reused" if outcome.converted.cached else "converted")
        if "test" in outcome.stages:
            tests = outcome.stages["test"]["tests"]
            parts.append(", ".join(f"{t['name']} {t['result']}" for t in tests))
        if "handoff" in outcome.stages:
            parts.append("SIF staged")
        return "; ".join(parts)

    def _update(self, outcome: Outcome, stage: str) -> None:
        task = self._tasks.get(outcome.job.id)
        if task is not None:
            self._progress.update(task, description=f"  {outcome.job.id}: {stage}")

    # -- after it -------------------------------------------------------------------------
    def finish(self, reason: str) -> list[Outcome]:
        """Give a result to every job that has none (the run ended early): ``reason``."""
        with self._lock:
            for outcome in self.outcomes.values():
                if outcome.result == "running":
                    self._mark_stopped(outcome, reason)
                elif outcome.result == "pending":
                    outcome.result, outcome.reason = "skipped", reason
        return list(self.outcomes.values())


def default_workers() -> int:
    return max(1, os.cpu_count() or 1)
