"""What the build stage hands on: ``Built``, and the failures it raises.

Kept apart from ``build.py`` so that both builders (``build.py`` for Dockerfiles,
``build_definition.py`` for ``recipe.def``) and the later stages share it without importing
one another in a circle.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.planning.jobs import Job
from pipeline.tools.registry.staging import Staging


class BuildFailed(RuntimeError):
    """The recipe did not build; the message holds the last lines of the build output."""


class NeedNotStaged(RuntimeError):
    """A job taken from staging (``run --only``'s needs) is not there, or not trusted:
    its own CI job has not staged it (an infrastructure failure, exit 4, never a rebuild)."""


@dataclass(frozen=True)
class Built:
    # A Docker image: REGISTRY/factory-staging/<repository>:<build_id>-<arch> and @sha256:...
    # A SIF built from recipe.def (``sif`` set): the ORAS artifact staged there, as oras://
    tagged: str
    reference: str
    digest: str  # the image's manifest digest, or the staged SIF artifact's
    build_id: str  # effective: plan build_id + what is below it
    base_name: str
    base_digest: str
    cached: bool
    # recipe.def jobs only: the SIF the build made (there is no Docker image to convert)
    sif: Path | None = None

    @property
    def sif_only(self) -> bool:
        return self.sif is not None

    def to_json(self) -> dict:
        data = {"image": self.tagged, "reference": self.reference, "digest": self.digest,
                "build_id": self.build_id,
                "base": f"{self.base_name}@{self.base_digest}", "cached": self.cached}
        if self.sif is not None:
            data["sif"] = str(self.sif)
        return data

    @property
    def staging_repository(self) -> str:
        """The repository in staging, without host: ``factory-staging/<repository>``."""
        reference = self.reference.removeprefix("oras://")
        return reference.split("/", 1)[1].rsplit("@", 1)[0]


def staging_ref(job: Job, build_id: str, staging: Staging) -> tuple[str, str]:
    """(repository, tag) of a job's image (or recipe.def SIF) in its staging area."""
    return staging.repository(job.repository), staging.tag(build_id, job.arch)
