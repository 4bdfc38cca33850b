"""The labels every built image carries: OCI annotations plus the cell's variables and build_id.

Example for an app job::

    org.opencontainers.image.title       sjtuhpc/hpc-app-container:lammps-gnu-2022
    org.opencontainers.image.version     lammps-gnu-2022
    org.opencontainers.image.base.name   sjtuhpc/hpc-base-container:ompi-4.1
    org.opencontainers.image.base.digest sha256:...
    org.sjtuhpc.factory.build-id         <sha256 hex>
    org.sjtuhpc.factory.var.mpi_family   openmpi
"""

from __future__ import annotations

from datetime import datetime, timezone

from pipeline.names import FACTORY, OCI
from pipeline.planning.jobs import Job
from pipeline.tools.git import Source


def image_labels(job: Job, build_id: str, base_name: str, base_digest: str, source: Source,
                 created: datetime | None = None) -> dict:
    created = created or datetime.now(timezone.utc)
    labels = {
        f"{OCI}.title": f"{job.repository}:{job.tag}",
        f"{OCI}.source": source.url,
        f"{OCI}.revision": source.revision,
        f"{OCI}.created": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
        f"{OCI}.version": job.tag,
        f"{OCI}.base.name": base_name,
        f"{OCI}.base.digest": base_digest,
        f"{FACTORY}.id": job.id,
        f"{FACTORY}.build-id": build_id,
    }
    labels.update({f"{FACTORY}.var.{k}": v for k, v in job.variables.items()})
    return labels


def build_args(job: Job) -> dict:
    """The cell's variables as build arguments: upper-cased names (``MPI_FAMILY``)."""
    return {k.upper(): v for k, v in job.variables.items()}
