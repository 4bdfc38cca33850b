"""The Apptainer definition file of a job: ``Bootstrap: docker-daemon`` from the built image.

Example (shortened)::

    Bootstrap: docker-daemon
    From: 127.0.0.1:5000/factory-staging/sjtuhpc/hpc-base-container:3f9c...-amd64

    %labels
        org.sjtuhpc.factory.id sjtuhpc/hpc-base-container:ompi-4.1@amd64
        org.sjtuhpc.factory.build-id 3f9c...
        org.sjtuhpc.factory.image-digest sha256:...
        org.sjtuhpc.factory.var.gcc 12
    %test
        set -eu
        export GCC='12' MPI_FAMILY='openmpi' ...
        <the recipe's test.sh>
"""

from __future__ import annotations

import shlex

from pipeline.names import FACTORY, sif_name
from pipeline.planning.jobs import Job


def sif_labels(job: Job, build_id: str, image_digest: str, revision: str) -> dict:
    labels = {
        f"{FACTORY}.id": job.id,
        f"{FACTORY}.build-id": build_id,
        f"{FACTORY}.image-digest": image_digest,
        "org.opencontainers.image.revision": revision,
    }
    labels.update({f"{FACTORY}.var.{k}": v for k, v in job.variables.items()})
    return labels


def test_body(script: str) -> str:
    """The recipe's test script without its shebang."""
    lines = script.splitlines()
    if lines and lines[0].startswith("#!"):
        lines = lines[1:]
    return "\n".join(lines)


def definition(job: Job, image_ref: str, labels: dict, description: str,
               test_script: str | None) -> str:
    """The whole definition file; %test only when the recipe has a test script."""
    v = job.variables
    has_mpi = v.get("mpi_family", "none") not in ("none", "")
    sif = sif_name(job.id)
    exports = " ".join(f"{k.upper()}={shlex.quote(str(val))}" for k, val in v.items())
    out = ["Bootstrap: docker-daemon", f"From: {image_ref}", "", "%labels"]
    out += [f"    {key} {value}" for key, value in labels.items()]
    out += ["", "%help",
            f"    {job.id.rsplit('@', 1)[0]} for {job.arch}, built by the HPC container image factory.",
            f"    {description}" if description else "    ",
            "    " + ", ".join(f"{k}={val}" for k, val in v.items() if "_" not in k),
            "",
            f"    Run a command:   apptainer exec {sif} COMMAND",
            f"    A shell:         apptainer run {sif}"]
    if has_mpi:
        out += [f"    MPI inside:      apptainer exec {sif} mpirun -np 4 PROGRAM",
                (f"    MPI from host:   mpirun -np 4 apptainer exec {sif} PROGRAM "
                f"(host {v.get('mpi_family')} {v.get('mpi_version', '')})")]
    out += [f"    Its tests:       apptainer test {sif}",
            "", "%environment",
            f"    export FACTORY_IMAGE={shlex.quote(job.id)}",
            f"    export FACTORY_BUILD_ID={labels[f'{FACTORY}.build-id']}",
            "", "%runscript",
            '    if [ "$#" -eq 0 ]; then exec /bin/sh; fi',
            '    exec "$@"']
    if test_script is not None:
        # /bin/sh runs %test without -e: without `set -eu` a failing line is ignored.
        out += ["", "%test", "    set -eu", f"    export {exports}"]
        out += [f"    {line}" if line else "" for line in test_body(test_script).splitlines()]
    return "\n".join(out) + "\n"
