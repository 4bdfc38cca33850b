"""The convert stage's decisions: where SIF conversion works (memory or disk, from one budget
shared by the run's jobs), and when a SIF already there is reused."""

from __future__ import annotations

import doctest
import hashlib
import json
import shutil
import threading
from pathlib import Path
from typing import ClassVar

import pytest

import pipeline.stages.convert
import pipeline.stages.scratch
from pipeline.errors import InputError
from pipeline.settings import Settings
from pipeline.stages.convert import reusable, stamp_text
from pipeline.stages.scratch import (
    GB,
    MB,
    ScratchBudget,
    ScratchTooSmall,
    available_memory,
    choose,
)
from pipeline.tools import os_bases
from pipeline.tools.docker_engine import BuildClient
from pipeline.tools.oci_artifacts import OCI_INDEX, OCI_MANIFEST
from pipeline.tools.upstream import Upstream

DISK = Path("/lab/scratch/job")
FOLDER = Path("/work/.lab/scratch")


def quiet(_line: str) -> None:
    pass


def free(memory: int, disk: int) -> dict:
    return {"memory": memory, "disk": disk}


# -- the choice, per policy ------------------------------------------------------------------
def test_an_image_whose_need_fits_in_the_free_memory_is_converted_in_memory():
    scratch = choose("auto", 800 * MB, DISK, "container", free(8000 * MB, 50 * GB))
    assert scratch.in_memory and scratch.memory_bytes == 4000 * MB  # the tmpfs: the need
    assert scratch.reason.startswith("in memory: the image (800 MB) needs about 4 GB")


def test_a_big_image_goes_to_disk_and_says_why():
    scratch = choose("auto", 1601 * MB, DISK, "container", free(8000 * MB, 50 * GB))
    assert not scratch.in_memory and scratch.path == DISK
    assert scratch.reason == ("on disk: the image (1.6 GB) needs about 8 GB, more than the "
                              "8 GB memory free for scratch")


def test_the_setting_and_the_runtime_can_force_the_place():
    assert choose("disk", MB, DISK, "container", free(8 * GB, 50 * GB)).reason == (
        "on disk: PIPELINE_CONVERT_SCRATCH=disk")
    host = choose("auto", MB, DISK, "host", free(8 * GB, 50 * GB))  # a host apptainer: no tmpfs
    assert not host.in_memory and "host's apptainer" in host.reason
    forced = choose("memory", 1000 * MB, DISK, "container", free(8 * GB, 50 * GB))
    assert forced.in_memory and forced.reason == "in memory: PIPELINE_CONVERT_SCRATCH=memory"
    # Forced to memory, it does not go to disk when memory is short: it waits.
    assert choose("memory", 2000 * MB, DISK, "container", free(8 * GB, 50 * GB)) is None
    # Nothing fits now: wait.
    assert choose("auto", 2000 * MB, DISK, "container", free(8 * GB, 9 * GB)) is None


def test_the_examples_in_the_module_hold():
    failed, attempted = doctest.testmod(pipeline.stages.scratch)
    assert attempted > 0 and failed == 0


# -- the budget ------------------------------------------------------------------------------
def test_two_jobs_that_fit_alone_but_not_together_run_one_after_the_other():
    budget = ScratchBudget(memory=0, disk=50 * GB, folder=FOLDER)  # 30 GB each (6 GB images)
    first_in, first_may_go, second_waits, second_in = (threading.Event() for _ in range(4))
    order: list[str] = []
    lines: list[str] = []

    def first() -> None:
        with budget.reserve("auto", 6 * GB, DISK / "a", "container", quiet) as scratch:
            assert not scratch.in_memory
            order.append("first in")
            first_in.set()
            assert first_may_go.wait(5)
            order.append("first out")

    def second_log(line: str) -> None:
        lines.append(line)
        if line.startswith("waiting"):
            second_waits.set()

    def second() -> None:
        assert first_in.wait(5)
        with budget.reserve("auto", 6 * GB, DISK / "b", "container", second_log):
            order.append("second in")
            second_in.set()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    assert second_waits.wait(5)
    assert not second_in.wait(0.2)  # still waiting while the first holds its 30 GB
    assert lines[0] == ("waiting for 30 GB of scratch: 20 GB free, 30 GB held by 1 other "
                        "conversion")
    first_may_go.set()
    assert second_in.wait(5)
    for thread in threads:
        thread.join(5)
    assert order == ["first in", "first out", "second in"]
    assert lines[1].startswith("got 30 GB of scratch after waiting")
    assert budget.held == {"memory": 0, "disk": 0}  # everything given back


def test_a_job_bigger_than_the_whole_budget_fails_at_once():
    budget = ScratchBudget(memory=4 * GB, disk=6 * GB, folder=FOLDER)
    with pytest.raises(ScratchTooSmall) as failed, budget.reserve(
            "auto", 7800 * MB, DISK, "container", quiet):
        pass
    assert str(failed.value) == ("needs 39 GB of scratch, 6 GB free in /work/.lab/scratch; "
                                 "free space there or set PIPELINE_LAB_DIR to a bigger disk")
    forced = ScratchBudget(memory=4 * GB, disk=60 * GB, folder=FOLDER)
    with pytest.raises(ScratchTooSmall, match="PIPELINE_CONVERT_SCRATCH=auto or disk"), \
            forced.reserve("memory", 1000 * MB, DISK, "container", quiet):
        pass


def test_memory_is_taken_while_it_lasts_then_the_disk():
    budget = ScratchBudget(memory=6 * GB, disk=50 * GB, folder=FOLDER)
    with budget.reserve("auto", 800 * MB, DISK, "container", quiet) as one, \
            budget.reserve("auto", 800 * MB, DISK, "container", quiet) as two:
        assert one.in_memory and not two.in_memory  # 4 GB held: 2 GB left, 4 GB needed
        assert budget.held == {"memory": 4 * GB, "disk": 4 * GB}
    with budget.reserve("auto", 800 * MB, DISK, "container", quiet) as again:
        assert again.in_memory  # given back
    with budget.reserve("disk", 800 * MB, DISK, "container", quiet) as disk:
        assert not disk.in_memory and budget.held["memory"] == 0


def test_a_failing_conversion_gives_its_scratch_back():
    budget = ScratchBudget(memory=0, disk=10 * GB, folder=FOLDER)
    with pytest.raises(RuntimeError), budget.reserve("disk", GB, DISK, "container", quiet):
        raise RuntimeError("apptainer failed")
    assert budget.held == {"memory": 0, "disk": 0} and budget.holders["disk"] == 0


def test_the_budget_is_measured_from_memory_and_the_scratch_disk(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24000000 kB\nMemAvailable:   8000000 kB\n")
    budget = ScratchBudget.measure(tmp_path / "not" / "made" / "yet", meminfo)
    assert budget.total["memory"] == 8000000 * 1024 // 2
    assert 0 <= budget.total["disk"] < shutil.disk_usage(tmp_path).free
    assert budget.folder == tmp_path / "not" / "made" / "yet"


def test_available_memory_is_read_from_meminfo(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24000000 kB\nMemAvailable:   1000 kB\n")
    assert available_memory(meminfo) == 1000 * 1024
    assert available_memory() > 0


def test_a_wrong_policy_is_named():
    with pytest.raises(InputError, match="PIPELINE_CONVERT_SCRATCH"):
        Settings.from_env(Path("."), {"PIPELINE_CONVERT_SCRATCH": "ram"})


# -- SIF reuse ---------------------------------------------------------------------------
BUILD_ID = "3f9c" * 16
DIGEST = "sha256:" + "a" * 64


def test_a_sif_is_reused_only_for_the_same_build_id_and_image_digest():
    stamp = stamp_text(BUILD_ID, DIGEST)
    assert reusable(stamp, BUILD_ID, DIGEST)
    # Same build_id, another image (a fresh registry, a rebuild into staging): convert again.
    assert not reusable(stamp, BUILD_ID, "sha256:" + "b" * 64)
    assert not reusable(stamp, "0" * 64, DIGEST)


def test_an_old_plain_stamp_or_none_matches_nothing():
    assert not reusable(BUILD_ID + "\n", BUILD_ID, DIGEST)  # what older factories wrote
    assert not reusable("1234\n", "1234", DIGEST)  # JSON, but not a stamp
    assert not reusable(None, BUILD_ID, DIGEST)
    assert not reusable("", BUILD_ID, DIGEST)
    assert not reusable('{"build_id": "%s"}' % BUILD_ID, BUILD_ID, DIGEST)


def test_the_examples_of_the_convert_stage_hold():
    failed, attempted = doctest.testmod(pipeline.stages.convert)
    assert attempted > 0 and failed == 0


# -- OS base images of an `image` OS (pipeline/tools/os_bases.py) ------------------------
# (Here because no test file of os_bases is this change's; tests/unit/test_os_bases.py would
# be its home.)
def _sha(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()


class FakeRegistry:
    """Manifests and blobs by host, as ``Registry`` serves them; ``meet`` makes the threads
    that fetch an upstream manifest by digest wait for each other there (interleaving them)."""

    stores: ClassVar[dict] = {}
    meet: ClassVar[threading.Barrier | None] = None
    lose_tags: ClassVar[bool] = False  # the registry drops tags (digest() is None)

    def __init__(self, host: str, credentials=None, policy=None, log=None):
        self.host = host
        self.store = FakeRegistry.stores.setdefault(host, {"manifests": {}, "blobs": {}})

    def manifest(self, repository: str, reference: str):
        if (FakeRegistry.meet is not None and reference.startswith("sha256:")
                and self.host != "lab:5000"):
            FakeRegistry.meet.wait(5)
        found = self.store["manifests"].get((repository, reference))
        return None if found is None else (found[0], found[1], _sha(found[0]))

    def digest(self, repository: str, reference: str):
        if FakeRegistry.lose_tags and not reference.startswith("sha256:"):
            return None
        found = self.store["manifests"].get((repository, reference))
        return None if found is None else _sha(found[0])

    def put_manifest(self, repository, reference, body, media_type):
        self.store["manifests"][(repository, reference)] = (body, media_type)
        return _sha(body)

    def has_blob(self, repository, digest):
        return digest in self.store["blobs"]

    def mount_blob(self, repository, digest, source_repository):
        return False

    def download_blob(self, repository, digest, target: Path):
        target.write_bytes(self.store["blobs"][digest])

    def upload_blob(self, repository, digest, path: Path):
        assert _sha(path.read_bytes()) == digest
        self.store["blobs"][digest] = path.read_bytes()

    def blob_bytes(self, repository, digest):
        return self.store["blobs"][digest]


def _image(host: str, repository: str, arch: str) -> tuple[str, bytes]:
    blobs = FakeRegistry.stores.setdefault(host, {"manifests": {}, "blobs": {}})["blobs"]
    config = json.dumps({"architecture": arch, "os": "linux"}).encode()
    layer = f"root filesystem for {arch}".encode()
    blobs[_sha(config)], blobs[_sha(layer)] = config, layer
    body = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                       "config": {"digest": _sha(config), "size": len(config)},
                       "layers": [{"digest": _sha(layer), "size": len(layer)}]}).encode()
    FakeRegistry(host).put_manifest(repository, _sha(body), body, OCI_MANIFEST)
    return _sha(body), body


@pytest.fixture
def upstream_index(monkeypatch, tmp_path):
    """An upstream ``mirror.example:5000/library/rocky:8`` index of amd64 and arm64 (and an
    attestation); ``OsBases`` for a lab registry ``lab:5000``, with no docker engine."""
    FakeRegistry.stores, FakeRegistry.meet, FakeRegistry.lose_tags = {}, None, False
    monkeypatch.setattr(os_bases, "Registry", FakeRegistry)

    def no_engine(*args, **kwargs):
        raise AssertionError(f"the docker engine was used: {args}")

    monkeypatch.setattr(os_bases, "push", no_engine)
    monkeypatch.setattr(os_bases.rootfs, "build_image", no_engine)
    host, repository = "mirror.example:5000", "library/rocky"
    digests = {arch: _image(host, repository, arch)[0] for arch in ("amd64", "arm64")}
    entries = [{"mediaType": OCI_MANIFEST, "digest": digests["amd64"], "size": 1,
                "platform": {"os": "linux", "architecture": "amd64"}},
               {"mediaType": OCI_MANIFEST, "digest": "sha256:" + "0" * 64, "size": 1,
                "platform": {"os": "unknown", "architecture": "unknown"}},
               {"mediaType": OCI_MANIFEST, "digest": digests["arm64"], "size": 1,
                "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}}]
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries})
    FakeRegistry(host).put_manifest(repository, "8", index.encode(), OCI_INDEX)
    settings = Settings.from_env(tmp_path, {"PIPELINE_REGISTRY": "lab:5000",
                                            "PIPELINE_LAB_DIR": str(tmp_path / "lab"),
                                            "PIPELINE_MIRRORS": f"docker.io={host}"})
    bases = os_bases.OsBases(settings, BuildClient("buildx", "/no/docker", "0"),
                             Upstream(settings))
    return bases, digests, _sha(index.encode())


def _variables(arch: str) -> dict:
    return {"os": "rocky8", "arch": arch, "os_source": "image",
            "os_image": "docker.io/library/rocky:8"}


def test_two_arches_of_one_image_os_copied_at_once_each_get_their_own_image(upstream_index):
    bases, digests, index_digest = upstream_index
    FakeRegistry.meet = threading.Barrier(2)  # both copies are under way at the same time
    got: dict = {}

    def get(arch: str) -> None:
        got[arch] = bases.get(_variables(arch), quiet)

    threads = [threading.Thread(target=get, args=(arch,)) for arch in ("amd64", "arm64")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    FakeRegistry.meet = None
    assert {arch: base.digest for arch, base in got.items()} == digests
    assert got["amd64"].reference == f"lab:5000/factory/os@{digests['amd64']}"
    assert got["amd64"].reference != got["arm64"].reference
    lab = FakeRegistry("lab:5000")
    for arch, digest in digests.items():
        tag = f"rocky8-{arch}-{digest[7:23]}"
        assert lab.digest("factory/os", tag) == digest  # each arch under its own tag
        layer = json.loads(lab.manifest("factory/os", digest)[0])["layers"][0]["digest"]
        assert lab.blob_bytes("factory/os", layer) == f"root filesystem for {arch}".encode()
    # What the build_ids fold in: the upstream index, as upstream.identity reads it.
    assert got["amd64"].content_id == got["arm64"].content_id == index_digest


def test_an_arch_the_index_lacks_or_a_tag_the_registry_drops_is_named(upstream_index):
    bases, _, _ = upstream_index
    with pytest.raises(os_bases.BaseNotFound, match=r"has no linux/riscv64 image; its index "
                       r"lists linux/amd64, unknown/unknown, linux/arm64/v8"):
        bases.get(_variables("riscv64"), quiet)
    FakeRegistry.lose_tags = True
    with pytest.raises(os_bases.BaseNotFound, match=r"into lab:5000/factory/os:rocky8-amd64-"
                       r"\w+, but the registry does not list it"):
        bases.get(_variables("amd64"), quiet)
