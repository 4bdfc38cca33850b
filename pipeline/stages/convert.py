"""Convert stage: the built image to ``<repository>_<tag>_<arch>.sif``, then check the SIF.

The definition file (``Bootstrap: docker-daemon``, see ``pipeline.deffile``) is kept beside
the SIF.  The SIF is built with ``--notest`` (the test stage runs ``%test`` unprivileged)
under a temporary name and renamed when complete, so a half-written SIF is never taken
for a result.  It is then checked: it holds the definition file and a Squashfs system
partition of the job's arch, and its labels read back with ``apptainer inspect``.

A SIF is reused only when it was converted from this very image: its stamp
(``<sif>.build-id``, JSON ``{"build_id", "image_digest"}``) must hold the job's build_id
*and* the digest of the image the build stage gives now.  The same build_id can come with
another digest (a fresh registry, an image rebuilt into staging), and the SIF's labels carry
the digest, so that SIF is converted again.  A stamp of an older factory (the build_id
alone) matches nothing; a reused SIF that does not verify is converted again too.

A job built from a ``recipe.def`` has no image to convert: its build stage made the SIF,
which this stage hands on as it is.

Conversion scratch comes from the run's ``ScratchBudget`` (``pipeline.stages.scratch``): a
conversion may wait for room there, or fail at once when it can never fit.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from pipeline.names import sif_name
from pipeline.planning.jobs import Job
from pipeline.stages.built import Built
from pipeline.stages.context import StageContext
from pipeline.stages.definition import definition, sif_labels
from pipeline.stages.scratch import ScratchTooSmall
from pipeline.stages.sif_check import ConvertFailed, verify
from pipeline.tools.apptainer import Scratch
from pipeline.tools.docker_engine import inspect_image, pull
from pipeline.tools.processes import Log


@dataclass(frozen=True)
class Converted:
    sif: Path
    definition: Path
    size: int
    cached: bool

    def to_json(self) -> dict:
        return {"sif": str(self.sif), "definition": str(self.definition), "size": self.size,
                "cached": self.cached}


def stamp_text(build_id: str, image_digest: str) -> str:
    """What ``<sif>.build-id`` records: the image the SIF was converted from."""
    return json.dumps({"build_id": build_id, "image_digest": image_digest}) + "\n"


def reusable(stamp: str | None, build_id: str, image_digest: str) -> bool:
    """Whether a SIF stamped ``stamp`` was converted from this build_id *and* image digest.

    >>> reusable(stamp_text("b1", "sha256:aa"), "b1", "sha256:aa")
    True
    >>> reusable(stamp_text("b1", "sha256:aa"), "b1", "sha256:bb")  # same build, new image
    False
    >>> reusable("b1", "b1", "sha256:aa")  # an old stamp: the build_id alone
    False
    """
    try:
        recorded = json.loads(stamp or "")
    except json.JSONDecodeError:
        return False
    return (isinstance(recorded, dict) and recorded.get("build_id") == build_id
            and recorded.get("image_digest") == image_digest)


def convert(job: Job, built: Built, ctx: StageContext, log: Log) -> Converted:
    if built.sif is not None:  # recipe.def: the build stage made (and checked) the SIF
        log(f"nothing to convert: {built.sif.name} was built from the recipe's definition file")
        return Converted(built.sif, built.sif.with_suffix(".def"), built.sif.stat().st_size, True)
    ctx.sif_dir.mkdir(parents=True, exist_ok=True)
    sif = ctx.sif_dir / sif_name(job.id)
    def_file = sif.with_suffix(".def")
    stamp = sif.parent / (sif.name + ".build-id")
    if subprocess.run([ctx.client.path, "image", "inspect", built.tagged], capture_output=True,
                      check=False).returncode:
        pull(ctx.client.path, built.tagged, job.arch, log, env=ctx.client.env())  # built before
    # The revision the image was built from, which may be older than HEAD for a reused image.
    revision = inspect_image(ctx.client.path, built.tagged,
                             '{{index .Config.Labels "org.opencontainers.image.revision"}}')
    labels = sif_labels(job, built.build_id, built.digest, revision)
    recorded = stamp.read_text() if stamp.exists() else None
    if sif.exists() and reusable(recorded, built.build_id, built.digest):
        log(f"already converted: {sif} (build_id {built.build_id[:12]}, image {built.digest})")
        try:
            verify(sif, job, labels, ctx, log)
            return Converted(sif, def_file, sif.stat().st_size, True)
        except ConvertFailed as err:
            log(f"converting again: the SIF there does not verify: {err}")
    elif sif.exists():
        log(f"converting again: {sif.name} was not converted from build_id "
            f"{built.build_id[:12]} and image {built.digest} (stamp: "
            f"{(recorded or 'none').strip()})")

    script = ctx.catalogue_dir / job.recipe / "test.sh"
    def_file.write_text(definition(job, built.tagged, labels, ctx.descriptions.get(job.image, ""),
                                   script.read_text() if script.exists() else None))
    partial = sif.parent / (sif.name + ".partial")
    partial.unlink(missing_ok=True)
    stamp.unlink(missing_ok=True)  # the SIF is replaced: until then, nothing is stamped
    image_bytes = int(inspect_image(ctx.client.path, built.tagged, "{{.Size}}"))
    try:
        reservation = ctx.scratch_budget.reserve(ctx.settings.convert_scratch, image_bytes,
                                                 ctx.scratch / sif.stem, ctx.apptainer.kind, log)
        with reservation as scratch:
            log(f"scratch {scratch.reason}")
            _build(partial, def_file, scratch, ctx, log)
    except ScratchTooSmall as err:
        raise ConvertFailed(str(err)) from None
    partial.chmod(0o644)
    partial.replace(sif)
    stamp.write_text(stamp_text(built.build_id, built.digest))
    verify(sif, job, labels, ctx, log)
    return Converted(sif, def_file, sif.stat().st_size, False)


def _build(partial: Path, def_file: Path, scratch: Scratch, ctx: StageContext, log: Log) -> None:
    scratch.path.mkdir(parents=True, exist_ok=True)
    try:
        ctx.apptainer.run(["build", "--notest", "--disable-cache", str(partial), str(def_file)],
                          [ctx.sif_dir], log, docker_socket=True, scratch=scratch)
    except subprocess.CalledProcessError:
        partial.unlink(missing_ok=True)
        raise ConvertFailed(f"apptainer build failed for {def_file.name}; see the log") from None
    finally:
        shutil.rmtree(scratch.path, ignore_errors=True)
