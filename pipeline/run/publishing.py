"""After the jobs: publish each tag whose arches are ready, and record what was pushed.

The per-tag work is ``stages/publish.py``; this module decides, from the run's outcomes
and the plan, what state each declared arch is in, and writes the results back into the
jobs' summaries (``stages.publish``) and the run's list of publications.  ``pr`` mode
never publishes, whatever credentials are set.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

from pipeline.names import file_name
from pipeline.stages.publish import (
    ArchState,
    PublishContext,
    PublishFailed,
    PublishRefused,
    publish_tag,
)
from pipeline.tools.registry.client import Registry


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
        ctx = self._context()
        for (repository, tag), jobs in groups.items():
            ran = [outcomes[j.id] for j in jobs if j.id in outcomes]
            if not any(o.result == "passed" for o in ran):
                continue
            self._publish(repository, tag, jobs, outcomes, ctx)

    def _context(self) -> PublishContext:
        run, settings = self.run, self.run.settings
        target = run.target
        return PublishContext(
            target.name,
            Registry(settings.registry, log=lambda line: None),
            Registry(target.registry, run.secrets.registry),
            run.secrets, target.library_endpoint, target.library_collection,
            self.context.apptainer, self.context.scratch, self.context.source.revision,
            datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))

    def _state(self, job, outcome) -> ArchState:
        known = self.run.published_ids.get(job.id)
        if outcome is None:
            return ArchState(job.arch, job.id, known, missing=None if known else
                             "is not in this run (not selected) and its build_id is unknown")
        if outcome.result == "passed":
            if "test" not in outcome.stages:
                return ArchState(job.arch, job.id, outcome.built.build_id,
                                 missing="was not tested in this run (publish needs the "
                                         "build, convert and test stages)")
            staging = outcome.built.reference.split("/", 1)[1].rsplit("@", 1)[0]
            return ArchState(job.arch, job.id, outcome.built.build_id, outcome.built.digest,
                             staging, outcome.converted.sif)
        first = outcome.reason.splitlines()[0] if outcome.reason else outcome.result
        if outcome.result == "failed" or not known or first.startswith("needs "):
            return ArchState(job.arch, job.id, known, missing=f"{outcome.result} ({first})")
        return ArchState(job.arch, job.id, known)

    def _publish(self, repository: str, tag: str, jobs: list, outcomes: dict,
                 ctx: PublishContext) -> None:
        run = self.run
        states = [self._state(j, outcomes.get(j.id)) for j in jobs]
        log_path = run.settings.out_dir / "logs" / "publish" / f"{file_name(repository + ':' + tag)}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        start = time.monotonic()
        run.console.log(f"publish {repository}:{tag}")
        with open(log_path, "w", encoding="utf-8") as handle:
            def log(line: str) -> None:
                handle.write(run.secrets.mask(line) + "\n")
                handle.flush()

            try:
                result = publish_tag(repository, tag, states, ctx, log)
            except (PublishRefused, PublishFailed) as err:
                failed = isinstance(err, PublishFailed)
                result = {"result": "failed" if failed else "refused",
                          "reason": run.secrets.mask(str(err))}
                log(f"{result['result'].upper()}: {result['reason']}")
        result["duration"] = round(time.monotonic() - start, 1)
        refs = ([result["index"]] if "index" in result else []) + [
            s.pushed[k] for s in states for k in ("sif",) if k in s.pushed]
        run.publications.append({"repository": repository, "tag": tag, **result,
                                 "refs": refs, "log": str(log_path)})
        style = {"published": "green", "already published": "green"}.get(result["result"], "red")
        run.console.log(f"[{style}]{result['result']}[/] {repository}:{tag} "
                        f"{result.get('index', result.get('reason', ''))}")
        for state in states:
            outcome = outcomes.get(state.job_id)
            if outcome is None or outcome.result != "passed":
                continue
            outcome.stages["publish"] = {**{k: v for k, v in result.items() if k != "duration"},
                                         **state.pushed, "duration": result["duration"]}
            if result["result"] == "failed":
                outcome.result = "failed"
                outcome.reason = f"publish: {result['reason']}\n    log: {log_path}"
            elif result["result"] == "refused":
                outcome.reason += f"; {result['reason']}"
            else:
                outcome.reason += f"; {state.pushed.get('result', result['result'])}"
