"""Where Apptainer works while converting an image, and one budget of it for the whole run.

``Bootstrap: docker-daemon`` writes the image several times before mksquashfs reads it: the
``docker save`` archive, its extracted OCI layout, Apptainer's copy of that layout, and the
unpacked root filesystem, then the squashfs itself.  That is I/O, not computation, and on a
tmpfs it costs about a fifth of the conversion less (58 s instead of 70 s for a 770 MB
image here).  A conversion is taken to need ``PEAK_FACTOR`` times the image's size (at
least ``MIN_SCRATCH``), in memory or on the disk of the lab folder.

**One budget for all the jobs** (``ScratchBudget``, made once per run): memory is half of
``MemAvailable`` when the run starts (the other half is for the builds, the tests and the
page cache), disk is the free space of the scratch folder's filesystem less a margin
(``DISK_MARGIN``, or 5 % of the filesystem when that is more).  Each conversion *reserves*
its need for as long as it runs and gives it back when done:

* where, per ``PIPELINE_CONVERT_SCRATCH``: ``memory`` or ``disk`` forces the place;
  ``auto`` takes memory when the need fits in the memory not held by other conversions,
  else the disk.  A host Apptainer is not given a tmpfs: always the disk;
* a need that does not fit now *waits* until other conversions give enough back (the job
  log says "waiting for 39 GB of scratch: 6 GB free, 30 GB held by 1 other conversion");
* a need larger than the whole budget fails at once (``ScratchTooSmall``), saying where to
  make room, instead of deep inside Apptainer with "no space left on device".

The choice alone, for what is free now in memory and on disk (``None``: wait)::

    >>> free, here = {"memory": 12 * GB, "disk": 50 * GB}, Path("/lab/scratch/x")
    >>> choose("auto", 800 * MB, here, "container", free).reason
    'in memory: the image (800 MB) needs about 4 GB of 12 GB memory free for scratch'
    >>> choose("auto", 4000 * MB, here, "container", free).reason
    'on disk: the image (4 GB) needs about 20 GB, more than the 12 GB memory free for scratch'
    >>> choose("disk", 800 * MB, here, "container", free).reason
    'on disk: PIPELINE_CONVERT_SCRATCH=disk'
    >>> choose("auto", 8000 * MB, here, "container", {"memory": 12 * GB, "disk": 30 * GB}) is None
    True
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.tools.apptainer import Scratch

MB = 1_000_000
GB = 1_000_000_000
PEAK_FACTOR = 5
MIN_SCRATCH = 500 * MB  # fixed costs that do not shrink with the image
DISK_MARGIN = 2 * GB  # left free on the scratch folder's disk, at least
MEMORY_SHARE = 0.5  # of MemAvailable at the start of the run, for tmpfs scratch


class ScratchTooSmall(RuntimeError):
    """The conversion needs more scratch than the whole budget: waiting would not help."""


def available_memory(meminfo: Path = Path("/proc/meminfo")) -> int:
    for line in meminfo.read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def size(n: int) -> str:
    """``39e9`` -> ``'39 GB'``, ``1.62e9`` -> ``'1.6 GB'``, ``6e9`` -> ``'6 GB'``; else MB."""
    if n >= 10 * GB:
        return f"{n / GB:.0f} GB"
    if n >= GB:
        return f"{n / GB:.1f}".removesuffix(".0") + " GB"
    return f"{n // MB} MB"


def need_of(image_bytes: int) -> int:
    return max(PEAK_FACTOR * image_bytes, MIN_SCRATCH)


def places(policy: str, runtime_kind: str) -> tuple[str, ...]:
    """Where a conversion may work, in order of preference."""
    if policy == "disk" or runtime_kind != "container":
        return ("disk",)
    if policy == "memory":
        return ("memory",)
    return ("memory", "disk")


def choose(policy: str, image_bytes: int, disk: Path, runtime_kind: str,
           free: dict) -> Scratch | None:
    """The scratch for an image of ``image_bytes`` given what is ``free`` now (bytes by place,
    ``memory`` and ``disk``); None when it fits nowhere now.

    A tmpfs is as large as the need: what a conversion reserves is what it may use."""
    need = need_of(image_bytes)
    memory_free, disk_free = free["memory"], free["disk"]
    allowed = places(policy, runtime_kind)
    if "memory" in allowed and need <= memory_free:
        why = ("PIPELINE_CONVERT_SCRATCH=memory" if policy == "memory" else
               f"the image ({size(image_bytes)}) needs about {size(need)} of "
               f"{size(memory_free)} memory free for scratch")
        return Scratch(disk, need, f"in memory: {why}")
    if "disk" in allowed and need <= disk_free:
        if policy == "disk":
            why = "PIPELINE_CONVERT_SCRATCH=disk"
        elif runtime_kind != "container":
            why = "the host's apptainer is not given a tmpfs"
        else:
            why = (f"the image ({size(image_bytes)}) needs about {size(need)}, more than the "
                   f"{size(memory_free)} memory free for scratch")
        return Scratch(disk, 0, f"on disk: {why}")
    return None


class ScratchBudget:
    """The scratch space of one run, shared by its conversions (thread-safe)."""

    def __init__(self, memory: int, disk: int, folder: Path):
        self.folder = folder
        self.total = {"memory": max(memory, 0), "disk": max(disk, 0)}
        self.held = {"memory": 0, "disk": 0}
        self.holders = {"memory": 0, "disk": 0}
        self._changed = threading.Condition()

    @classmethod
    def measure(cls, folder: Path, meminfo: Path = Path("/proc/meminfo")) -> ScratchBudget:
        """Half of MemAvailable now; the free space of ``folder``'s disk less the margin."""
        existing = folder
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        usage = shutil.disk_usage(existing)
        margin = max(DISK_MARGIN, usage.total // 20)
        return cls(int(available_memory(meminfo) * MEMORY_SHARE), usage.free - margin, folder)

    def free(self, place: str) -> int:
        return self.total[place] - self.held[place]

    @contextmanager
    def reserve(self, policy: str, image_bytes: int, path: Path, runtime_kind: str,
                log: Callable[[str], None]) -> Iterator[Scratch]:
        """Hold the scratch for converting an image of ``image_bytes`` until the block ends.

        Waits while other conversions hold too much; ScratchTooSmall when it can never fit."""
        need = need_of(image_bytes)
        allowed = places(policy, runtime_kind)
        possible = [p for p in allowed if need <= self.total[p]]
        if not possible:
            raise ScratchTooSmall(self._too_small(need, allowed, policy))
        waited = None
        with self._changed:
            while True:
                scratch = choose(policy, image_bytes, path, runtime_kind,
                                 {p: self.free(p) for p in self.total})
                if scratch is not None:
                    break
                if waited is None:
                    waited = time.monotonic()
                    log(self._waiting(need, possible[-1]))
                self._changed.wait()
            place = "memory" if scratch.in_memory else "disk"
            self.held[place] += need
            self.holders[place] += 1
        if waited is not None:
            log(f"got {size(need)} of scratch after waiting {time.monotonic() - waited:.0f} s")
        try:
            yield scratch
        finally:
            with self._changed:
                self.held[place] -= need
                self.holders[place] -= 1
                self._changed.notify_all()

    def _waiting(self, need: int, place: str) -> str:
        others = self.holders[place]
        where = " in memory" if place == "memory" else ""
        return (f"waiting for {size(need)} of scratch{where}: {size(max(self.free(place), 0))} "
                f"free, {size(self.held[place])} held by {others} other "
                f"conversion{'s' if others != 1 else ''}")

    def _too_small(self, need: int, allowed: tuple, policy: str) -> str:
        if allowed == ("memory",):
            return (f"needs {size(need)} of scratch, {size(self.total['memory'])} of memory "
                    "for scratch (half of what was available at the start); set "
                    f"PIPELINE_CONVERT_SCRATCH=auto or disk instead of {policy}")
        return (f"needs {size(need)} of scratch, {size(self.total['disk'])} free in "
                f"{self.folder}; free space there or set PIPELINE_LAB_DIR to a bigger disk")
