"""After the jobs: publish each tag whose arches are ready, and record what was pushed.

The per-tag work is ``stages/publish.py``; this module decides, from the run's outcomes
and the plan, what state each declared arch is in, and writes the results back into the
jobs' summaries (``stages.publish``) and the run's list of publications.  ``pr`` mode
never publishes, whatever credentials are set.

A tag's publication never stops the others: any exception while publishing it (a
``KeyError``, a token service's ``JSONDecodeError``, an ``OSError`` ...) fails that tag,
with the exception's type and message (masked) as the reason and its traceback in the
tag's log, and the next tag goes on.  An interrupt marks the tag ``interrupted`` and stops.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from rich.markup import escape

from pipeline.errors import Interrupted
from pipeline.names import file_name
from pipeline.planning.already_published import sif_only
from pipeline.run.failures import first_line
from pipeline.stages.publish import (
    ArchState,
    PublishContext,
    PublishFailed,
    PublishRefused,
    publish_tag,
)
from pipeline.tools.git import commit_time
from pipeline.tools.registry.client import Registry
from pipeline.tools.registry.staging import target_credentials


@dataclass
class _Tag:
    """One tag being published: where its log goes, when it started, its arches."""

    repository: str
    tag: str
    log_path: Path
    start: float = field(default_factory=time.monotonic)
    states: list = field(default_factory=list)


class Publisher:
    def __init__(self, run, context):
        self.run = run
        self.context = context

    def publish_all(self, outcomes: dict) -> None:
        run = self.run
        if run.mode == "pr":
            for outcome in outcomes.values():
                if outcome.result == "passed":
                    outcome.stages["publish"] = {"result": "skipped",
                                                 "reason": "pr mode never publishes"}
            run.console.log("publish: skipped, pr mode never publishes")
            return
        groups: dict = {}
        for job in run.declared or [o.job for o in outcomes.values()]:
            groups.setdefault((job.repository, job.tag), []).append(job)
        try:
            ctx: PublishContext | Exception = self._context()
        except Exception as err:  # every tag fails with it, the run reports
            ctx = err
        for (repository, tag), jobs in groups.items():
            ran = [outcomes[j.id] for j in jobs if j.id in outcomes]
            if not any(o.result == "passed" for o in ran):
                continue
            self._publish(repository, tag, jobs, outcomes, ctx)

    def _context(self) -> PublishContext:
        run, settings, context = self.run, self.run.settings, self.context
        target = run.target
        staging = getattr(context, "staging", None)  # the run's, with its login
        source = (staging.client(log=lambda line: None) if staging is not None
                  else Registry(settings.registry, log=lambda line: None))
        credentials = target_credentials(run.secrets.registry, target.registry,
                                         settings.lab_dir, settings.registry)
        return PublishContext(
            target.name, source, Registry(target.registry, credentials),
            run.secrets, target.library_endpoint, target.library_collection,
            context.apptainer, context.scratch, context.source.revision,
            # The commit's time, not now: a rerun stamps the same manifests.
            commit_time(context.catalogue_dir, context.source.revision), trust=staging)

    def _state(self, job, outcome) -> ArchState:
        state = self._arch_state(job, outcome)
        state.sif_only = sif_only(job)  # recipe.def: SIFs only, whether it ran or not
        return state

    def _arch_state(self, job, outcome) -> ArchState:
        known = self.run.published_ids.get(job.id)
        if outcome is None:
            return ArchState(job.arch, job.id, known, missing=None if known else
                             "is not in this run (not selected) and its build_id is unknown")
        if outcome.result == "passed":
            if "test" not in outcome.stages:
                return ArchState(job.arch, job.id, outcome.built.build_id,
                                 missing="was not tested in this run (publish needs the "
                                         "build, convert and test stages)")
            return ArchState(job.arch, job.id, outcome.built.build_id, outcome.built.digest,
                             outcome.built.staging_repository, outcome.converted.sif)
        first = outcome.reason.splitlines()[0] if outcome.reason else outcome.result
        if outcome.result == "failed" or not known or first.startswith("needs "):
            return ArchState(job.arch, job.id, known, missing=f"{outcome.result} ({first})")
        return ArchState(job.arch, job.id, known)

    def _publish(self, repository: str, tag: str, jobs: list, outcomes: dict,
                 ctx: PublishContext | Exception) -> None:
        run = self.run
        mask = run.masker
        where = _Tag(repository, tag, run.settings.out_dir / "logs" / "publish" /
                     f"{file_name(repository + ':' + tag)}.log")
        where.log_path.parent.mkdir(parents=True, exist_ok=True)
        run.console.log(f"publish {escape(repository)}:{escape(tag)}")
        with open(where.log_path, "w", encoding="utf-8") as handle:
            def log(line: str) -> None:
                handle.write(mask(line) + "\n")
                handle.flush()

            try:
                if isinstance(ctx, Exception):
                    raise ctx
                where.states = [self._state(j, outcomes.get(j.id)) for j in jobs]
                result = publish_tag(repository, tag, where.states, ctx, log)
            except (PublishRefused, PublishFailed) as err:
                failed = isinstance(err, PublishFailed)
                result = {"result": "failed" if failed else "refused", "reason": mask(str(err))}
                log(f"{result['result'].upper()}: {result['reason']}")
            except Interrupted as err:
                result = {"result": "interrupted", "reason": str(err)}
                log(f"INTERRUPTED: {err}")
                self._record(where, outcomes, result)
                raise
            except Exception as err:  # this tag fails, the next goes on
                result = {"result": "failed",
                          "reason": mask(f"{type(err).__name__}: {first_line(str(err))}")}
                log(traceback.format_exc())
                log(f"FAILED: {result['reason']}")
        self._record(where, outcomes, result)

    def _record(self, where: _Tag, outcomes: dict, result: dict) -> None:
        run = self.run
        mask = run.masker
        repository, tag, log_path = where.repository, where.tag, where.log_path
        states = where.states
        result = {**result, "duration": round(time.monotonic() - where.start, 1)}
        refs = ([result["index"]] if "index" in result else []) + [
            s.pushed[k] for s in states for k in ("sif",) if k in s.pushed]
        run.publications.append(mask.data({"repository": repository, "tag": tag, **result,
                                           "refs": refs, "log": str(log_path)}))
        style = {"published": "green", "already published": "green"}.get(result["result"], "red")
        run.console.log(f"[{style}]{result['result']}[/] {escape(repository)}:{escape(tag)} "
                        f"{escape(mask(str(result.get('index', result.get('reason', '')))))}")
        for state in states:
            outcome = outcomes.get(state.job_id)
            if outcome is None or outcome.result != "passed":
                continue
            outcome.stages["publish"] = {**{k: v for k, v in result.items() if k != "duration"},
                                         **state.pushed, "duration": result["duration"]}
            if result["result"] == "failed":
                outcome.result = "failed"
                outcome.reason = f"publish: {result['reason']}\n    log: {log_path}"
            elif result["result"] == "interrupted":
                outcome.result = "interrupted"
                outcome.reason = f"publish: {result['reason']}"
            elif result["result"] == "refused":
                outcome.reason += f"; {result['reason']}"
            else:
                outcome.reason += f"; {state.pushed.get('result', result['result'])}"
