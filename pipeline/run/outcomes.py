"""What happened to each job of a run, and the run's exit code from it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import EXIT_JOB_FAILED, EXIT_PASSED
from pipeline.planning.jobs import Job

# pending and running only while the run goes on; every job ends as one of the others.
RESULTS = ("passed", "failed", "skipped", "interrupted")
STYLES = {"passed": "green", "failed": "red", "skipped": "yellow", "interrupted": "magenta",
          "pending": "", "running": ""}


@dataclass
class Outcome:
    """What happened to one job in this run (mutable while the run goes on)."""

    job: Job
    log: Path
    result: str = "pending"  # running, then passed | failed | skipped | interrupted
    reason: str = ""
    stages: dict = field(default_factory=dict)
    built: object = None  # stages.build.Built, when the build stage passed
    converted: object = None  # stages.convert.Converted, when the convert stage passed
    duration: float = 0.0

    @property
    def finished(self) -> bool:
        return self.result in RESULTS

    def to_json(self) -> dict:
        return {
            "id": self.job.id, "arch": self.job.arch, "result": self.result,
            "reason": self.reason,
            "image_digest": self.built.digest if self.built else None,
            "sif": str(self.converted.sif) if self.converted else None,
            "stages": self.stages, "log": str(self.log),
            "duration": round(self.duration, 1),
        }


def jobs_exit_code(outcomes: list[Outcome]) -> int:
    """0 when no job failed, else 1 (the run's failure classes come on top of this)."""
    return EXIT_JOB_FAILED if any(o.result == "failed" for o in outcomes) else EXIT_PASSED
