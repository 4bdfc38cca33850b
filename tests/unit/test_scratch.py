"""Where SIF conversion works: the choice between a tmpfs and the lab folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import InputError
from pipeline.settings import Settings
from pipeline.stages.scratch import MB, available_memory, choose

DISK = Path("/lab/scratch/job")


def test_an_image_that_fits_five_times_in_half_the_memory_is_converted_in_memory():
    scratch = choose("auto", 800 * MB, DISK, "container", 8000 * MB)
    assert scratch.in_memory and scratch.memory_bytes == 4000 * MB
    assert scratch.reason.startswith("in memory")


def test_a_big_image_goes_to_disk_and_says_why():
    scratch = choose("auto", 801 * MB, DISK, "container", 8000 * MB)
    assert not scratch.in_memory and scratch.path == DISK
    assert scratch.reason == ("on disk: the image (801 MB) needs about 4005 MB, more than half "
                              "of 8000 MB available")


def test_the_setting_and_the_runtime_can_force_the_disk():
    assert not choose("disk", MB, DISK, "container", 8000 * MB).in_memory
    assert not choose("auto", MB, DISK, "host", 8000 * MB).in_memory  # host apptainer
    forced = choose("memory", 4000 * MB, DISK, "container", 8000 * MB)
    assert forced.in_memory and forced.memory_bytes == 20000 * MB


def test_available_memory_is_read_from_meminfo(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24000000 kB\nMemAvailable:   1000 kB\n")
    assert available_memory(meminfo) == 1024000
    assert available_memory() > 0


def test_a_wrong_policy_is_named():
    with pytest.raises(InputError, match="PIPELINE_CONVERT_SCRATCH"):
        Settings.from_env(Path("."), {"PIPELINE_CONVERT_SCRATCH": "ram"})
