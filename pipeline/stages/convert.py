"""Convert stage: the built image to ``<repository>_<tag>_<arch>.sif``, then check the SIF.

The definition file (``Bootstrap: docker-daemon``, see ``pipeline.deffile``) is kept beside
the SIF.  The SIF is built with ``--notest`` (the test stage runs ``%test`` unprivileged)
under a temporary name and renamed when complete, so a half-written SIF is never taken
for a result.  It is then checked: it holds the definition file and a Squashfs system
partition of the job's arch, and its labels read back with ``apptainer inspect``.
A SIF whose recorded build_id matches the job's is reused.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from pipeline.names import sif_name
from pipeline.planning.jobs import Job
from pipeline.stages.build import Built
from pipeline.stages.context import StageContext
from pipeline.stages.definition import definition, sif_labels
from pipeline.stages.scratch import available_memory, choose
from pipeline.tools.docker_engine import inspect_image, pull
from pipeline.tools.processes import Log


class ConvertFailed(RuntimeError):
    """The SIF could not be built, or is not what the job says."""


@dataclass(frozen=True)
class Converted:
    sif: Path
    definition: Path
    size: int
    cached: bool

    def to_json(self) -> dict:
        return {"sif": str(self.sif), "definition": str(self.definition), "size": self.size,
                "cached": self.cached}


def convert(job: Job, built: Built, ctx: StageContext, log: Log) -> Converted:
    ctx.sif_dir.mkdir(parents=True, exist_ok=True)
    sif = ctx.sif_dir / sif_name(job.id)
    def_file = sif.with_suffix(".def")
    stamp = sif.parent / (sif.name + ".build-id")
    if subprocess.run([ctx.client.path, "image", "inspect", built.tagged], capture_output=True,
                      check=False).returncode:
        pull(ctx.client.path, built.tagged, job.arch, log)  # built in an earlier run
    # The revision the image was built from, which may be older than HEAD for a reused image.
    revision = inspect_image(ctx.client.path, built.tagged,
                             '{{index .Config.Labels "org.opencontainers.image.revision"}}')
    labels = sif_labels(job, built.build_id, built.digest, revision)
    if sif.exists() and stamp.exists() and stamp.read_text().strip() == built.build_id:
        log(f"already converted: {sif}")
        verify(sif, job, labels, ctx, log)
        return Converted(sif, def_file, sif.stat().st_size, True)

    script = ctx.catalogue_dir / job.recipe / "test.sh"
    def_file.write_text(definition(job, built.tagged, labels, ctx.descriptions.get(job.image, ""),
                                   script.read_text() if script.exists() else None))
    partial = sif.parent / (sif.name + ".partial")
    partial.unlink(missing_ok=True)
    scratch = choose(ctx.settings.convert_scratch,
                     int(inspect_image(ctx.client.path, built.tagged, "{{.Size}}")),
                     ctx.scratch / sif.stem, ctx.apptainer.kind, available_memory())
    log(f"scratch {scratch.reason}")
    scratch.path.mkdir(parents=True, exist_ok=True)
    try:
        ctx.apptainer.run(["build", "--notest", "--disable-cache", str(partial), str(def_file)],
                          [ctx.sif_dir], log, docker_socket=True, scratch=scratch)
    except subprocess.CalledProcessError:
        partial.unlink(missing_ok=True)
        raise ConvertFailed(f"apptainer build failed for {def_file.name}; see the log") from None
    finally:
        shutil.rmtree(scratch.path, ignore_errors=True)
    partial.chmod(0o644)
    partial.replace(sif)
    stamp.write_text(built.build_id + "\n")
    verify(sif, job, labels, ctx, log)
    return Converted(sif, def_file, sif.stat().st_size, False)


def verify(sif: Path, job: Job, labels: dict, ctx: StageContext, log: Log) -> None:
    """ConvertFailed unless the SIF has its def file, a system partition of the job's arch,
    and every label."""
    try:
        # Unprivileged: that runtime also sees QEMU, without which Apptainer refuses to
        # inspect a SIF of a foreign arch.
        listing = ctx.apptainer.output(["sif", "list", str(sif)], [sif.parent], unprivileged=True)
        inspected = json.loads(ctx.apptainer.output(["inspect", "--json", str(sif)], [sif.parent],
                                                    unprivileged=True))
    except subprocess.CalledProcessError as err:
        why = (err.stderr or err.stdout or "").strip().splitlines()[-1:]
        raise ConvertFailed(f"cannot read {sif.name} back: {' '.join(why)}") from None
    except json.JSONDecodeError as err:
        raise ConvertFailed(f"cannot read {sif.name}'s labels: {err}") from None
    log(listing)
    if "Def.FILE" not in listing:
        raise ConvertFailed(f"{sif.name} holds no definition file")
    partition = re.search(r"FS \(Squashfs/\*System/(\w+)\)", listing)
    if not partition:
        raise ConvertFailed(f"{sif.name} has no Squashfs system partition")
    if partition.group(1) != job.arch:
        raise ConvertFailed(f"{sif.name}'s system partition is for {partition.group(1)}, not "
                            f"{job.arch}")
    found = inspected.get("data", {}).get("attributes", {}).get("labels", {})
    wrong = [f"{k}={found.get(k)!r} (expected {v!r})" for k, v in labels.items()
             if found.get(k) != v]
    if wrong:
        raise ConvertFailed(f"{sif.name}'s labels do not read back: {'; '.join(wrong[:3])}")
    log(f"verified {sif.name}: definition file, {job.arch} system partition, "
        f"{len(labels)} labels")
