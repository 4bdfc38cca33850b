"""The labels every built image carries: OCI annotations plus the cell's variables and build_id.

Example for an app job::

    org.opencontainers.image.title       sjtuhpc/hpc-app-container:lammps-gnu-2022
    org.opencontainers.image.version     lammps-gnu-2022
    org.opencontainers.image.base.name   sjtuhpc/hpc-base-container:ompi-4.1
    org.opencontainers.image.base.digest sha256:...
    org.sjtuhpc.factory.build-id         <sha256 hex>
    org.sjtuhpc.factory.var.mpi_family   openmpi

Both go to ``docker build`` as separate arguments (``--label KEY=VALUE``, ``--build-arg
NAME=VALUE``; no shell).  The catalogue refuses control characters; here too, a label
value has them escaped (``\\n``), and a build argument with one, or a name that is not a
plain name, is refused (``UnsafeValue``): a recipe puts build arguments into shell
commands.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone

from pipeline.catalogue.text import escape_controls, first_control
from pipeline.names import FACTORY, OCI
from pipeline.planning.jobs import Job
from pipeline.tools.git import Source

_LABEL_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")
_ARG_NAME = re.compile(r"[A-Z_][A-Z0-9_]*\Z")


class UnsafeValue(ValueError):
    """A label or build argument that could change what a recipe's commands do."""


def image_labels(job: Job, build_id: str, base_name: str, base_digest: str,
                 source: Source, *, created: datetime | None = None) -> dict:
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
    for key in labels:
        if not _LABEL_KEY.match(key):
            raise UnsafeValue(f"label name '{escape_controls(key)}' is not letters, digits, "
                              "'.', '_' and '-'")
    return {key: escape_controls(str(value)) for key, value in labels.items()}


def build_args(job: Job) -> dict:
    """The cell's variables as build arguments: upper-cased names (``MPI_FAMILY``)."""
    args = {}
    for key, value in job.variables.items():
        name = key.upper()
        if not _ARG_NAME.match(name):
            raise UnsafeValue(f"variable '{escape_controls(key)}' is not a build argument name "
                              "([A-Z_][A-Z0-9_]*)")
        found = first_control(str(value))
        if found:
            raise UnsafeValue(f"variable {key}: control character {found[1]} in "
                              f"'{escape_controls(str(value))}'; build arguments are one line")
        args[name] = value
    return args
