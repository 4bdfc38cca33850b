"""Where Apptainer works while converting an image: in memory (tmpfs) when it fits.

``Bootstrap: docker-daemon`` writes the image several times before mksquashfs reads it: the
``docker save`` archive, its extracted OCI layout, Apptainer's copy of that layout, and the
unpacked root filesystem, then the squashfs itself.  That is I/O, not computation, and on a
tmpfs it costs about a fifth of the conversion less (58 s instead of 70 s for a 770 MB
image here).  Memory is used only as files are written, but the tmpfs is only chosen when
five times the image fits in half of the memory available, so that two conversions at once
still fit; otherwise, or with ``PIPELINE_CONVERT_SCRATCH=disk``, the lab folder is used.

Example::

    >>> choose("auto", 800 * MB, Path("/lab/scratch/x"), "container", 24_000 * MB).in_memory
    True
    >>> choose("auto", 4000 * MB, Path("/lab/scratch/x"), "container", 24_000 * MB).reason
    'on disk: the image (4000 MB) needs about 20000 MB, more than half of 24000 MB available'
"""

from __future__ import annotations

from pathlib import Path

from pipeline.tools.apptainer import Scratch

MB = 1_000_000
PEAK_FACTOR = 5


def available_memory(meminfo: Path = Path("/proc/meminfo")) -> int:
    for line in meminfo.read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def choose(policy: str, image_bytes: int, disk: Path, runtime_kind: str,
           available: int) -> Scratch:
    """The scratch space for converting an image of ``image_bytes`` (see the module's text)."""
    need = PEAK_FACTOR * image_bytes
    if policy == "disk":
        return Scratch(disk, 0, "on disk: PIPELINE_CONVERT_SCRATCH=disk")
    if runtime_kind != "container":
        return Scratch(disk, 0, "on disk: the host's apptainer is not given a tmpfs")
    if policy == "memory":
        return Scratch(disk, max(available, need), "in memory: PIPELINE_CONVERT_SCRATCH=memory")
    if 2 * need <= available:
        return Scratch(disk, available // 2, f"in memory: the image ({image_bytes // MB} MB) "
                       f"needs about {need // MB} MB of {available // MB} MB available")
    return Scratch(disk, 0, f"on disk: the image ({image_bytes // MB} MB) needs about "
                   f"{need // MB} MB, more than half of {available // MB} MB available")
