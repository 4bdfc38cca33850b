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

from pipeline.catalogue.model import default_commands
from pipeline.errors import EXIT_JOB_FAILED, EXIT_PASSED, Interrupted
from pipeline.names import file_name
from pipeline.planning.already_published import sif_only
from pipeline.published.artifact import LATEST
from pipeline.published.catalog import Scope
from pipeline.published.site import FOLDER, make_site
from pipeline.run.failures import first_line
from pipeline.stages.publish import (
    ArchState,
    PublishContext,
    PublishFailed,
    PublishRefused,
    Record,
    publish_tag,
)
from pipeline.tools.git import commit_time
from pipeline.tools.registry.client import Registry
from pipeline.tools.registry.staging import target_credentials

KIND_ORDER = {"gpu": 0, "base": 1, "app": 2}  # a repository of several kinds: the last wins


def publications_exit_code(publications: list) -> int:
    """1 when a publication failed (a tag, or the catalogue after them), else 0."""
    return EXIT_JOB_FAILED if any(p.get("result") == "failed" for p in publications) \
        else EXIT_PASSED


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
        done = len(run.publications)
        for (repository, tag), jobs in groups.items():
            ran = [outcomes[j.id] for j in jobs if j.id in outcomes]
            if not any(o.result == "passed" for o in ran):
                continue
            self._publish(repository, tag, jobs, outcomes, ctx)
        if isinstance(ctx, Exception):  # every tag failed with it; so would the catalogue
            run.console.log("catalog: not refreshed, the target could not be used")
            return
        self._refresh_catalog(ctx, run.publications[done:])

    # -- the published catalogue -----------------------------------------------------------
    @property
    def _matrix(self):
        """``Run.catalogue`` (matrix.yaml as read), when the command line gave the run one."""
        return self.run.catalogue

    def _scope(self) -> Scope:
        """What the catalogue covers: matrix.yaml's repositories (else those of the plan's
        jobs)."""
        run = self.run
        if self._matrix is not None:
            return Scope.of(self._matrix, run.target)
        jobs = run.declared or [o.job for o in run.outcomes.values()]
        kinds = {j.repository: j.kind for j in sorted(jobs, key=lambda j: KIND_ORDER[j.kind])}
        return Scope(run.target, tuple(sorted(kinds)), kinds)

    def _refresh_catalog(self, ctx: PublishContext, tags: list) -> None:
        """Refresh ``out/site/`` from the target and push ``catalog.json``, when a tag was
        published in this run or the target has no catalogue yet; recorded (and failing
        the run) like a tag's publication.  A tag that failed does not stop it: the
        registry is the truth, and the catalogue lists what it holds."""
        run = self.run
        log_path = run.settings.out_dir / "logs" / "publish" / "catalog.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        where = _Tag("catalog", LATEST, log_path)
        with open(log_path, "w", encoding="utf-8") as handle:
            def log(line: str) -> None:
                handle.write(run.masker(line) + "\n")
                handle.flush()

            try:
                scope = self._scope()
                where.repository = scope.catalog_repository
                if not any(p["result"] == "published" for p in tags) and \
                        ctx.registry.digest(where.repository, LATEST) is not None:
                    log("catalog: nothing was published in this run; not refreshed")
                    return
                failed = [f"{p['repository']}:{p['tag']}" for p in tags
                          if p["result"] == "failed"]
                if failed:
                    log(f"catalog: {len(failed)} tag(s) failed to publish "
                        f"({', '.join(failed)}); the catalogue lists what the registry holds")
                run.console.log(f"catalog: refreshing {escape(str(run.settings.out_dir))}"
                                f"/{FOLDER} from {escape(ctx.registry.host)}")
                site = make_site(ctx.registry, scope, run.settings.out_dir / FOLDER, push=True,
                                 log=log)
                result = {"result": "published" if site.pushed.changed else "already published",
                          "index": f"{site.pushed.latest}@{site.pushed.manifest}",
                          "tags": [site.pushed.immutable.rsplit(":", 1)[1], LATEST]}
            except Exception as err:  # the run goes on to its report, and fails
                result = {"result": "failed", "reason": run.masker(
                    f"catalog: {type(err).__name__}: {first_line(str(err))}")}
                log(traceback.format_exc())
                log(f"FAILED: {result['reason']}")
        self._record(where, {}, result)

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
        state.record = self._record_of(job, outcome)
        return state

    def _record_of(self, job, outcome) -> Record:
        """What the catalogue reads back of this arch: the job's tests (masked: they go to
        a registry), the matrix image's facts, the cell, base and source."""
        run = self.run
        image = next((i for i in self._matrix.images if i.name == job.image), None) \
            if self._matrix is not None else None
        commands = (image.commands_of(job.variables) if image is not None
                    else default_commands(job.kind, job.variables))
        tests = ((outcome.stages.get("test") or {}).get("tests") or []) if outcome else []
        built = outcome.built if outcome is not None else None
        return Record(job.image, job.kind, run.descriptions.get(job.image, ""), commands,
                      tuple(run.masker.data(dict(test)) for test in tests),
                      dict(job.variables), built.base_name if built else "",
                      built.base_digest if built else "", self.context.source.url)

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
