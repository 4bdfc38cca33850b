"""``run``: the plan's jobs in dependency order, N at a time, each through the stages.

A job runs once every job it needs has passed; a job whose need failed is skipped with
that reason.  Jobs the plan marked ``skip`` stay skipped, except those a job to build
needs: they run too, and the build stage finds their image already built when it is.
Every job writes its own log; the run ends with ``summary.json`` and a table.
"""

from __future__ import annotations

import os
import threading
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
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

from pipeline.catalogue.model import Target
from pipeline.names import file_name
from pipeline.planning.jobs import Job
from pipeline.run.publishing import Publisher
from pipeline.settings import Settings
from pipeline.stages import build as build_stage
from pipeline.stages import convert as convert_stage
from pipeline.stages import test as test_stage
from pipeline.stages.context import StageContext
from pipeline.tools import docker_engine
from pipeline.tools.apptainer import ApptainerMissing
from pipeline.tools.apptainer import find as find_apptainer
from pipeline.tools.credentials import Secrets
from pipeline.tools.git import describe
from pipeline.tools.os_bases import BaseNotFound, OsBases
from pipeline.tools.registry.client import RegistryError
from pipeline.tools.upstream import Upstream

STAGES = ("build", "convert", "test", "publish")
EXPECTED_FAILURES = (build_stage.BuildFailed, BaseNotFound, docker_engine.DockerUnavailable,
                     RegistryError, convert_stage.ConvertFailed, test_stage.TestsFailed,
                     ApptainerMissing)


@dataclass
class Outcome:
    """What happened to one job in this run (mutable while the run goes on)."""

    job: Job
    log: Path
    result: str = "pending"  # passed | failed | skipped
    reason: str = ""
    stages: dict = field(default_factory=dict)
    built: build_stage.Built | None = None
    converted: convert_stage.Converted | None = None
    duration: float = 0.0

    def to_json(self) -> dict:
        return {
            "id": self.job.id, "arch": self.job.arch, "result": self.result,
            "reason": self.reason,
            "image_digest": self.built.digest if self.built else None,
            "sif": str(self.converted.sif) if self.converted else None, "stages": self.stages, "log": str(self.log),
            "duration": round(self.duration, 1),
        }


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
    declared: list = field(default_factory=list)  # every job of the plan, selected or not
    published_ids: dict = field(default_factory=dict)  # job id -> effective build_id
    secrets: Secrets = field(default_factory=Secrets.from_env)
    publications: list = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def execute(self, jobs: list[Job]) -> list[Outcome]:
        jobs = jobs_to_run(jobs)
        log_dir = self.settings.out_dir / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        outcomes = {j.id: Outcome(j, log_dir / f"{file_name(j.id)}.log") for j in jobs}
        for outcome in outcomes.values():
            outcome.log.write_text("")
            if outcome.job.action == "skip":
                outcome.result, outcome.reason = "skipped", outcome.job.reason
        todo = [o for o in outcomes.values() if o.result == "pending"]
        if not todo:
            return list(outcomes.values())
        try:
            client = docker_engine.find_build_client(self.settings)
            docker_engine.engine()
            apptainer = (find_apptainer(self.settings.lab_dir, client)
                         if len(self.stages) > 1 else None)
        except (docker_engine.DockerUnavailable, ApptainerMissing) as err:
            for outcome in todo:
                outcome.result, outcome.reason = "failed", str(err)
            self.console.print(f"[red]cannot run:[/] {err}")
            return list(outcomes.values())
        context = StageContext(self.settings, client, OsBases(self.settings, client, Upstream(self.settings)),
                               describe(self.catalogue_dir), self.catalogue_dir,
                               self.descriptions, apptainer)
        self._schedule(todo, outcomes, context)
        if "publish" in self.stages:
            Publisher(self, context).publish_all(outcomes)
        return list(outcomes.values())

    def _schedule(self, todo: list[Outcome], outcomes: dict, context) -> None:
        total = len(todo)
        # A live bar on a terminal; in CI logs the start/end lines below say the same.
        self._progress = Progress(SpinnerColumn(), TextColumn("{task.description}"),
                                  BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                  console=self.console, transient=True,
                                  disable=not self.console.is_terminal)
        self._overall = self._progress.add_task("jobs", total=total)
        self._tasks: dict = {}
        with self._progress, ThreadPoolExecutor(max_workers=self.workers) as pool:
            running: dict = {}
            waiting = list(todo)
            while waiting or running:
                for outcome in list(waiting):
                    needs = [outcomes[n] for n in outcome.job.needs]
                    broken = [n for n in needs if n.result in ("failed", "skipped")]
                    if broken:
                        waiting.remove(outcome)
                        outcome.result = "skipped"
                        outcome.reason = (f"needs {broken[0].job.id}, which "
                                          f"{'failed' if broken[0].result == 'failed' else 'was skipped'}")
                        self._say(outcome, total, outcomes)
                    elif all(n.result == "passed" for n in needs):
                        waiting.remove(outcome)
                        running[pool.submit(self._run_job, outcome, outcomes, context)] = outcome
                        self._tasks[outcome.job.id] = self._progress.add_task(
                            f"  {outcome.job.id}: {self.stages[0]}", total=None)
                        self.console.log(f"start  {outcome.job.id}")
                if not running:
                    continue
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    self._say(running.pop(future), total, outcomes)

    def _say(self, outcome: Outcome, total: int, outcomes: dict) -> None:
        if outcome.job.id in self._tasks:
            self._progress.remove_task(self._tasks.pop(outcome.job.id))
        self._progress.advance(self._overall)
        finished = sum(o.result != "pending" for o in outcomes.values())
        style = {"passed": "green", "failed": "red", "skipped": "yellow"}[outcome.result]
        first = outcome.reason.splitlines()[0] if outcome.reason else ""
        self.console.log(f"[{style}]{outcome.result:7}[/] {outcome.job.id} "
                         f"({outcome.duration:.0f} s) {escape(self.secrets.mask(first))}  "
                         f"[{finished}/{len(outcomes)}]")

    def _run_job(self, outcome: Outcome, outcomes: dict, context) -> None:
        start = time.monotonic()
        with open(outcome.log, "a", encoding="utf-8") as handle:
            def log(line: str) -> None:
                handle.write(self.secrets.mask(line) + "\n")
                handle.flush()

            log(f"job {outcome.job.id}: {outcome.job.reason}")
            stage = self.job_stages[0]
            try:
                for stage in self.job_stages:
                    stage_start = time.monotonic()
                    self._update(outcome, stage)
                    details = self._stage(stage, outcome, outcomes, context, log)
                    outcome.stages[stage] = {**details, "result": "passed",
                                             "duration": round(time.monotonic() - stage_start, 1)}
                outcome.result = "passed"
                outcome.reason = self._passed_reason(outcome)
            except EXPECTED_FAILURES as err:
                outcome.result = "failed"
                outcome.reason = f"{stage}: {err}\n    log: {outcome.log}"
                outcome.stages.setdefault(stage, {"result": "failed", "reason": str(err)})
                log(f"FAILED in {stage}: {err}")
            except Exception as err:  # noqa: BLE001 - a bug or an unforeseen outside error: keep the others going
                outcome.result = "failed"
                outcome.reason = f"{stage}: internal error: {err!r}; see {outcome.log}"
                log(traceback.format_exc())
            finally:
                outcome.duration = time.monotonic() - start


    @property
    def job_stages(self) -> tuple:
        """The stages run per job; publish runs per tag, once the jobs are done."""
        return tuple(s for s in self.stages if s != "publish")

    def _stage(self, stage: str, outcome: Outcome, outcomes: dict, context, log) -> dict:
        job = outcome.job
        if stage == "build":
            needs = {n: outcomes[n].built for n in job.needs}
            outcome.built = build_stage.build(job, needs, context, log)
            return outcome.built.to_json()
        if stage == "convert":
            outcome.converted = convert_stage.convert(job, outcome.built, context, log)
            return outcome.converted.to_json()
        results = test_stage.run_tests(job, outcome.converted.sif, context, log)
        outcome.stages["test"] = {"tests": [r.to_json() for r in results]}
        failed = [r for r in results if r.result == "failed"]
        if failed:
            outcome.stages["test"]["result"] = "failed"
            raise test_stage.TestsFailed("; ".join(f"{r.name} failed: {r.reason}" for r in failed))
        return outcome.stages["test"]

    @staticmethod
    def _passed_reason(outcome: Outcome) -> str:
        parts = ["already built" if outcome.built.cached else "built"]
        if outcome.converted:
            parts.append("SIF reused" if outcome.converted.cached else "converted")
        if "test" in outcome.stages:
            tests = outcome.stages["test"]["tests"]
            parts.append(", ".join(f"{t['name']} {t['result']}" for t in tests))
        return "; ".join(parts)

    def _update(self, outcome: Outcome, stage: str) -> None:
        task = self._tasks.get(outcome.job.id)
        if task is not None:
            self._progress.update(task, description=f"  {outcome.job.id}: {stage}")


def default_workers() -> int:
    return max(1, os.cpu_count() or 1)
