"""The check every SIF gets before it is tested: a definition file, a Squashfs system
partition of the job's arch, and the factory's labels read back with ``apptainer inspect``.

Both ways of making a SIF use it: the convert stage (a Dockerfile image, converted) and
the build stage of a ``recipe.def`` (built by Apptainer directly).
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from pipeline.planning.jobs import Job
from pipeline.stages.context import StageContext
from pipeline.tools.processes import Log


class ConvertFailed(RuntimeError):
    """The SIF could not be built, or is not what the job says."""


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
