"""``cluster pull``: SIFs mirrored by digest from a registry, checked, resumed, idempotent.

The registry is :class:`SifRegistry`, a small in-process server that follows the OCI
distribution protocol for what a pull reads (manifests and blobs by digest, ``Range``
requests answered 206) and can misbehave on request: a blob served with one byte flipped,
a connection dropped half-way, ranges ignored, 503s.  The catalogue is the sample of the
published format (``tests/data/catalog-sample.json``) pointed at it, with real blobs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import socket
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from pipeline.cluster import command
from pipeline.cluster.access import Access
from pipeline.cluster.layout import CATALOG, sif_path
from pipeline.cluster.mirror import Mirror, pull
from pipeline.cluster.progress import Bars
from pipeline.cluster.selection import select
from pipeline.cluster.signatures import Verifier
from pipeline.console import make_console
from pipeline.errors import (
    EXIT_BAD_INPUT,
    EXIT_INFRASTRUCTURE,
    EXIT_JOB_FAILED,
    EXIT_PASSED,
    FactoryError,
)
from pipeline.published.artifact import CATALOG_TYPE
from pipeline.settings import Settings
from pipeline.tools.credentials import Masker
from pipeline.tools.oci_artifacts import OCI_MANIFEST, file_manifest, sif_manifest
from pipeline.tools.registry.retries import RetryPolicy
from tests.fakes.local_server import LocalServer

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "catalog-sample.json"
LAMMPS = ("sjtuhpc/hpc-app-container", "lammps-gnu-2022")
BASE = ("sjtuhpc/hpc-base-container", "ompi-4.1")
BIG = 2_500_000  # the LAMMPS SIF: a few chunks of the client's 1 MiB
SMALL = 300_000
_BLOB = re.compile(r"^/v2/(?P<name>.+)/blobs/(?P<digest>sha256:[0-9a-f]{64})$")
_MANIFEST = re.compile(r"^/v2/(?P<name>.+)/manifests/(?P<reference>[^/]+)$")


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def sif_bytes(seed: str, size: int) -> bytes:
    """Bytes that start like a SIF (its magic) and are unique to ``seed``."""
    head = b"#!/usr/bin/env run-singularity\nSIF_MAGIC0x01"
    body = hashlib.shake_256(seed.encode()).digest(size - len(head))
    return head + body


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    range: str | None
    status: int
    sent: int  # body bytes written


class SifRegistry(LocalServer):
    """Manifests and blobs by digest (tags too), with Range support and faults on request.

    * ``flip``: blob digests served with their middle byte changed;
    * ``drop_after``: blob digest -> bytes after which the connection is closed, once;
    * ``ranges``: False to ignore ``Range`` (answer 200 with the whole blob);
    * ``unavailable``: how many of the next requests answer 503 (``Retry-After: 0``);
    * ``files``: other paths served as they are (a catalogue behind a URL).
    """

    def __init__(self):
        self.blobs: dict[str, bytes] = {}
        self.manifests: dict[str, bytes] = {}
        self.tags: dict[tuple[str, str], str] = {}
        self.files: dict[str, bytes] = {}
        self.flip: set[str] = set()
        self.drop_after: dict[str, int] = {}
        self.ranges = True
        self.unavailable = 0
        self.seen: list[Seen] = []
        self._listen(type("Handler", (_Handler,), {"registry": self}))
        self.address = self.url.removeprefix("http://")

    def add_sif(self, repository: str, tag: str, data: bytes) -> tuple[str, str]:
        """Push ``data`` as an ORAS SIF artifact; (manifest digest, blob digest)."""
        body = sif_manifest(sha256(b"{}"), sha256(data), len(data), f"{tag}.sif", {})
        return self.add(repository, tag, body, [b"{}", data]), sha256(data)

    def add(self, repository: str, tag: str, manifest: bytes, blobs: list[bytes]) -> str:
        for blob in blobs:
            self.blobs[sha256(blob)] = blob
        self.manifests[sha256(manifest)] = manifest
        self.tags[(repository, tag)] = sha256(manifest)
        return sha256(manifest)

    def blob_gets(self, digest: str | None = None) -> list[Seen]:
        return [s for s in self.seen if s.method == "GET" and "/blobs/" in s.path
                and (digest is None or s.path.endswith(digest))]


class _Handler(BaseHTTPRequestHandler):
    registry: SifRegistry
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        reg = self.registry
        blob = _BLOB.match(self.path)
        if reg.unavailable > 0:
            reg.unavailable -= 1
            self._answer(503, b"busy", {"Retry-After": "0"})
        elif self.path in reg.files:
            self._answer(200, reg.files[self.path])
        elif self.path == "/v2/":
            self._answer(200, b"{}")
        elif found := _MANIFEST.match(self.path):
            self._manifest(found["name"], found["reference"])
        elif blob and blob["digest"] in reg.blobs:
            self._blob(blob["digest"])
        else:
            self._answer(404, b'{"errors":[{"code":"BLOB_UNKNOWN"}]}')

    def _manifest(self, name: str, reference: str) -> None:
        reg = self.registry
        digest = reference if reference.startswith("sha256:") else reg.tags.get((name, reference))
        if digest not in reg.manifests:
            self._answer(404, b'{"errors":[{"code":"MANIFEST_UNKNOWN"}]}')
        else:
            self._answer(200, reg.manifests[digest], {
                "Content-Type": OCI_MANIFEST, "Docker-Content-Digest": digest})

    def _blob(self, digest: str) -> None:
        reg = self.registry
        data = bytearray(reg.blobs[digest])
        if digest in reg.flip:
            data[len(data) // 2] ^= 0x01
        asked = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        start = int(asked.group(1)) if asked and reg.ranges else 0
        if start >= len(data) and start:
            return self._answer(416, b"", {"Content-Range": f"bytes */{len(data)}"})
        headers = {"Content-Type": "application/octet-stream", "Docker-Content-Digest": digest}
        if asked and reg.ranges:
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        body = bytes(data[start:])
        cut = reg.drop_after.pop(digest, None)
        if cut is not None and cut > start:
            return self._answer(206 if start else 200, body, headers, cut=cut - start)
        return self._answer(206 if start else 200, body, headers)

    def _answer(self, status: int, body: bytes, headers: dict | None = None,
                cut: int | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        sent = 0
        if self.command != "HEAD":
            sent = len(body) if cut is None else cut
            self.wfile.write(body[:sent])
        self.registry.seen.append(Seen(self.command, self.path, self.headers.get("Range"),
                                       status, sent))
        if cut is not None:  # the rest never comes: the connection drops half-way
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True


def published(registry: SifRegistry, sizes: dict | None = None, seed: str = "v1") -> dict:
    """The sample catalogue pointed at ``registry``, each SIF pushed there for real."""
    catalog = json.loads(SAMPLE.read_text())
    catalog["target"]["registry"] = registry.address
    catalog["catalog"] = f"{registry.address}/sjtuhpc/catalog"
    for image in catalog["images"]:
        for arch, entry in image["arches"].items():
            sif = entry["sif"]
            if sif is None:
                continue
            tag = f"{image['tag']}-{arch}"
            size = (sizes or {}).get((image["repository"], image["tag"]), SMALL)
            manifest, blob = registry.add_sif(sif["repository"], tag,
                                              sif_bytes(f"{seed}{tag}", size))
            sif.update(manifest=manifest, blob=blob, size=size,
                       reference=f"oras://{registry.address}/{sif['repository']}:{tag}")
    return catalog


def write_catalog(folder: Path, catalog: dict, name: str = "catalog.json") -> Path:
    path = folder / name
    path.write_text(json.dumps(catalog, indent=2))
    return path


def cluster(*argv: str) -> int:
    """``python -m pipeline cluster ARGV``: the exit code, as the command line gives it."""
    parser = argparse.ArgumentParser()
    command.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["cluster", *argv])
    try:
        return args.func(args, Masker(), None)
    except FactoryError as err:  # what pipeline.cli prints in one line, with this code
        print(err)
        return err.exit_code


def image_of(catalog: dict, key: tuple[str, str]) -> dict:
    return next(i for i in catalog["images"] if (i["repository"], i["tag"]) == key)


@pytest.fixture(autouse=True)
def no_lab(tmp_path, monkeypatch):
    """No lab login: the fake registry wants none, and the checkout's lab is not ours."""
    monkeypatch.setenv("PIPELINE_LAB_DIR", str(tmp_path / "no-lab"))
    for name in ("PIPELINE_REGISTRY_USERNAME", "PIPELINE_REGISTRY_PASSWORD"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def registry():
    with SifRegistry() as server:
        yield server


@pytest.fixture
def catalog(registry):
    return published(registry, {LAMMPS: BIG})


def test_a_pull_into_an_empty_folder_brings_each_selected_sif_by_digest(
        tmp_path, registry, catalog, capsys):
    site = tmp_path / "site"
    code = cluster("pull", "--catalog", str(write_catalog(tmp_path, catalog)),
                   "--dest", str(site), "--arch", "amd64")
    assert code == EXIT_PASSED
    for image in catalog["images"]:
        path = sif_path(site, image, "amd64")
        assert path.read_bytes() == registry.blobs[image["arches"]["amd64"]["sif"]["blob"]]
    assert not list(site.rglob("*.part"))
    # By digest only: no manifest was asked for by tag.
    manifests = [s.path for s in registry.seen if "/manifests/" in s.path]
    assert manifests and all("/manifests/sha256:" in p for p in manifests)
    # The site's catalogue: the published shape, with what is there and nothing else.
    slice_ = json.loads((site / CATALOG).read_text())
    assert slice_["schema"] == 1
    assert [(i["tag"], sorted(i["arches"])) for i in slice_["images"]] == [
        ("lammps-gnu-2022", ["amd64"]), ("pi-mpi-1.0", ["amd64"]),
        ("gcc-11.cuda-11.8.ompi-4.1", ["amd64"]), ("ompi-4.1", ["amd64"])]
    out = capsys.readouterr().out
    assert "sjtuhpc/hpc-app-container:lammps-gnu-2022 amd64: 2.5/2.5 MB" in out
    assert out.count("downloaded") == 4


def test_a_second_pull_downloads_nothing(tmp_path, registry, catalog, capsys):
    site, source = tmp_path / "site", str(write_catalog(tmp_path, catalog))
    assert cluster("pull", "--catalog", source, "--dest", str(site), "--arch", "amd64") == 0
    before = {p: p.stat().st_mtime_ns for p in site.rglob("*.sif")}
    registry.seen.clear()
    capsys.readouterr()
    assert cluster("pull", "--catalog", source, "--dest", str(site), "--arch", "amd64") == 0
    assert registry.seen == []  # not even a manifest: the stamps say the files are right
    assert {p: p.stat().st_mtime_ns for p in site.rglob("*.sif")} == before
    assert capsys.readouterr().out.count("already here") == 4


def test_a_damaged_file_in_place_is_fetched_again(tmp_path, registry, catalog):
    site, source = tmp_path / "site", str(write_catalog(tmp_path, catalog))
    assert cluster("pull", "--catalog", source, "--dest", str(site), "--arch", "amd64") == 0
    lammps = image_of(catalog, LAMMPS)
    path = sif_path(site, lammps, "amd64")
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))  # newer than its stamp: hashed again
    assert cluster("pull", "--catalog", source, "--dest", str(site), "--arch", "amd64") == 0
    assert path.read_bytes() == registry.blobs[lammps["arches"]["amd64"]["sif"]["blob"]]
    assert len(registry.blob_gets()) == 4 + 1


def test_a_flipped_byte_is_refused_and_nothing_of_it_is_placed(
        tmp_path, registry, catalog, capsys):
    lammps = image_of(catalog, LAMMPS)
    sif = lammps["arches"]["amd64"]["sif"]
    registry.flip.add(sif["blob"])
    site = tmp_path / "site"
    code = cluster("pull", "--catalog", str(write_catalog(tmp_path, catalog)),
                   "--dest", str(site), "--arch", "amd64")
    assert code == EXIT_JOB_FAILED
    assert not sif_path(site, lammps, "amd64").parent.exists() or not list(
        sif_path(site, lammps, "amd64").parent.iterdir())
    out = " ".join(capsys.readouterr().out.split())
    assert "refused" in out
    assert f"{registry.address}/{sif['repository']}@{sif['manifest']}" in out
    assert sif["blob"] in out
    assert sha256(bytes(_flipped(registry.blobs[sif["blob"]]))) in out
    # The others went on, and the site's catalogue lists only what is there.
    slice_ = json.loads((site / CATALOG).read_text())
    assert [i["tag"] for i in slice_["images"]] == [
        "pi-mpi-1.0", "gcc-11.cuda-11.8.ompi-4.1", "ompi-4.1"]


def _flipped(data: bytes) -> bytearray:
    changed = bytearray(data)
    changed[len(changed) // 2] ^= 0x01
    return changed


def test_a_refused_sif_leaves_the_one_the_site_had(tmp_path, registry, catalog):
    site = tmp_path / "site"
    first = write_catalog(tmp_path, catalog, "v1.json")
    assert cluster("pull", "--catalog", str(first), "--dest", str(site), "--arch", "amd64") == 0
    old = sif_path(site, image_of(catalog, LAMMPS), "amd64")
    old_bytes = old.read_bytes()
    # The tag is published again; its new blob reaches this site damaged.
    newer = published(registry, {LAMMPS: BIG}, seed="v2")
    new_sif = image_of(newer, LAMMPS)["arches"]["amd64"]["sif"]
    registry.flip.add(new_sif["blob"])
    second = write_catalog(tmp_path, newer, "v2.json")
    assert cluster("pull", "--catalog", str(second), "--select", ":".join(LAMMPS),
                   "--dest", str(site), "--arch", "amd64") == EXIT_JOB_FAILED
    assert old.read_bytes() == old_bytes
    assert not sif_path(site, image_of(newer, LAMMPS), "amd64").exists()
    slice_ = json.loads((site / CATALOG).read_text())
    kept = image_of(slice_, LAMMPS)["arches"]["amd64"]["sif"]
    assert kept["blob"] == image_of(catalog, LAMMPS)["arches"]["amd64"]["sif"]["blob"]


def test_a_catalogue_the_registry_disagrees_with_is_refused_before_downloading(
        tmp_path, registry, catalog, capsys):
    sif = image_of(catalog, LAMMPS)["arches"]["amd64"]["sif"]
    published_blob = sif["blob"]
    sif["blob"] = "sha256:" + "0" * 64
    code = cluster("pull", "--catalog", str(write_catalog(tmp_path, catalog)), "--select",
                   ":".join(LAMMPS), "--dest", str(tmp_path / "site"), "--arch", "amd64")
    assert code == EXIT_JOB_FAILED
    assert registry.blob_gets() == []
    out = " ".join(capsys.readouterr().out.split())
    assert "the catalogue and the registry disagree" in out
    assert published_blob in out


def test_an_interrupted_download_resumes_with_a_range_request(tmp_path, registry, catalog):
    sif = image_of(catalog, LAMMPS)["arches"]["amd64"]["sif"]
    registry.drop_after[sif["blob"]] = 1_100_000
    site = tmp_path / "site"
    assert cluster("pull", "--catalog", str(write_catalog(tmp_path, catalog)), "--select",
                   ":".join(LAMMPS), "--dest", str(site), "--arch", "amd64") == EXIT_PASSED
    gets = registry.blob_gets(sif["blob"])
    # The client had written one whole chunk (1 MiB) when the connection dropped: it asked
    # for the rest only.
    assert [(g.status, g.range, g.sent) for g in gets] == [
        (200, None, 1_100_000), (206, "bytes=1048576-", BIG - 1_048_576)]
    path = sif_path(site, image_of(catalog, LAMMPS), "amd64")
    assert sha256(path.read_bytes()) == sif["blob"]


def test_a_part_file_left_by_an_earlier_run_is_continued(tmp_path, registry, catalog):
    lammps = image_of(catalog, LAMMPS)
    sif = lammps["arches"]["amd64"]["sif"]
    site = tmp_path / "site"
    final = sif_path(site, lammps, "amd64")
    final.parent.mkdir(parents=True)
    final.with_name(final.name + ".part").write_bytes(registry.blobs[sif["blob"]][:1_000_000])
    assert cluster("pull", "--catalog", str(write_catalog(tmp_path, catalog)), "--select",
                   ":".join(LAMMPS), "--dest", str(site), "--arch", "amd64") == EXIT_PASSED
    gets = registry.blob_gets(sif["blob"])
    assert [(g.status, g.range, g.sent) for g in gets] == [(206, "bytes=1000000-", BIG - 1_000_000)]
    assert sha256(final.read_bytes()) == sif["blob"]
    assert not final.with_name(final.name + ".part").exists()


def test_a_registry_that_ignores_ranges_gets_the_download_restarted(
        tmp_path, registry, catalog):
    lammps = image_of(catalog, LAMMPS)
    sif = lammps["arches"]["amd64"]["sif"]
    registry.ranges = False
    final = sif_path(tmp_path / "site", lammps, "amd64")
    final.parent.mkdir(parents=True)
    final.with_name(final.name + ".part").write_bytes(registry.blobs[sif["blob"]][:700_000])
    assert cluster("pull", "--catalog", str(write_catalog(tmp_path, catalog)), "--select",
                   ":".join(LAMMPS), "--dest", str(tmp_path / "site"), "--arch", "amd64") == 0
    assert [(g.status, g.sent) for g in registry.blob_gets(sif["blob"])] == [(200, BIG)]
    assert sha256(final.read_bytes()) == sif["blob"]


def test_a_part_file_of_other_bytes_is_downloaded_whole_once_more(
        tmp_path, registry, catalog, capsys):
    lammps = image_of(catalog, LAMMPS)
    sif = lammps["arches"]["amd64"]["sif"]
    final = sif_path(tmp_path / "site", lammps, "amd64")
    final.parent.mkdir(parents=True)
    final.with_name(final.name + ".part").write_bytes(b"\0" * 500_000)  # not this blob's
    assert cluster("pull", "--catalog", str(write_catalog(tmp_path, catalog)), "--select",
                   ":".join(LAMMPS), "--dest", str(tmp_path / "site"), "--arch", "amd64") == 0
    assert [g.status for g in registry.blob_gets(sif["blob"])] == [206, 200]
    assert sha256(final.read_bytes()) == sif["blob"]
    assert "downloading it whole once more" in capsys.readouterr().out


def test_a_busy_registry_is_asked_again(tmp_path, registry, catalog):
    registry.unavailable = 3  # 503 with Retry-After: 0
    site = tmp_path / "site"
    assert cluster("pull", "--catalog", str(write_catalog(tmp_path, catalog)), "--select",
                   ":".join(BASE), "--dest", str(site), "--arch", "amd64") == EXIT_PASSED
    assert [s.status for s in registry.seen[:3]] == [503, 503, 503]
    assert sif_path(site, image_of(catalog, BASE), "amd64").is_file()


def test_an_unreachable_registry_stops_the_pull_with_exit_code_4(tmp_path, registry, catalog):
    site = tmp_path / "site"
    base = image_of(catalog, BASE)
    assert cluster("pull", "--catalog", str(write_catalog(tmp_path, catalog)), "--select",
                   ":".join(BASE), "--dest", str(site), "--arch", "amd64") == 0
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        catalog["target"]["registry"] = f"127.0.0.1:{probe.getsockname()[1]}"
    access = Access(policy=RetryPolicy(attempts=2, total_seconds=2, max_backoff=0.1))
    console = make_console(mask=Masker())
    with Bars(console) as bars:
        outcome = pull(catalog, select(catalog, [], ["amd64"]), Mirror(
            site, access, Verifier(Settings.from_env(tmp_path)), bars, console.print))
    assert outcome.exit_code() == EXIT_INFRASTRUCTURE
    by_tag = {row.tag: row for row in outcome.rows}
    assert by_tag[BASE[1]].result == "already here"  # no registry needed for it
    assert by_tag[LAMMPS[1]].result == "failed"
    assert "gave up after retries" in by_tag[LAMMPS[1]].reason
    assert {by_tag[t].result for t in ("pi-mpi-1.0", "gcc-11.cuda-11.8.ompi-4.1")} == {
        "not tried"}
    assert sif_path(site, base, "amd64").is_file()


def test_select_and_arch_pick_what_is_pulled(tmp_path, registry, catalog, capsys):
    site = tmp_path / "site"
    code = cluster("pull", "--catalog", str(write_catalog(tmp_path, catalog)), "--select",
                   "sjtuhpc/hpc-base-container:*", "--dest", str(site), "--arch", "arm64")
    assert code == EXIT_PASSED  # the CUDA image is not built for arm64: not a failure
    assert [p.relative_to(site).as_posix() for p in site.rglob("*.sif")] == [
        sif_path(site, image_of(catalog, BASE), "arm64").relative_to(site).as_posix()]
    assert "not built" in capsys.readouterr().out
    slice_ = json.loads((site / CATALOG).read_text())
    assert [(i["tag"], list(i["arches"])) for i in slice_["images"]] == [("ompi-4.1", ["arm64"])]


def test_a_selected_tag_without_a_sif_for_the_arch_is_reported_and_fails(
        tmp_path, registry, catalog, capsys):
    code = cluster("pull", "--catalog", str(write_catalog(tmp_path, catalog)), "--select",
                   "*:lammps-*,*:ompi-4.1", "--dest", str(tmp_path / "site"), "--arch", "arm64")
    assert code == EXIT_JOB_FAILED
    out = " ".join(capsys.readouterr().out.split())
    assert "no SIF" in out and "lammps-gnu-2022-arm64 does not exist" in out
    assert sif_path(tmp_path / "site", image_of(catalog, BASE), "arm64").is_file()


def test_the_catalogue_can_come_from_a_url(tmp_path, registry, catalog):
    registry.files["/site/catalog.json"] = json.dumps(catalog).encode()
    registry.unavailable = 1  # the web server is busy once: asked again
    site = tmp_path / "site"
    assert cluster("pull", "--catalog", f"{registry.url}/site/catalog.json", "--select",
                   ":".join(BASE), "--dest", str(site), "--arch", "amd64") == EXIT_PASSED
    assert sif_path(site, image_of(catalog, BASE), "amd64").is_file()


def test_the_catalogue_can_come_from_its_oci_reference(tmp_path, registry, catalog):
    body = json.dumps(catalog).encode()
    registry.add("sjtuhpc/catalog", "latest", file_manifest(body, CATALOG_TYPE, "catalog.json",
                                                            {}), [b"{}", body])
    site = tmp_path / "site"
    assert cluster("pull", "--catalog", f"{registry.address}/sjtuhpc/catalog:latest",
                   "--select", ":".join(BASE), "--dest", str(site), "--arch", "amd64") == 0
    assert sif_path(site, image_of(catalog, BASE), "amd64").is_file()


def test_a_catalogue_reference_that_does_not_exist_is_bad_input(tmp_path, registry, capsys):
    assert cluster("pull", "--catalog", f"{registry.address}/sjtuhpc/catalog:latest",
                   "--dest", str(tmp_path / "site")) == EXIT_BAD_INPUT
    assert "sjtuhpc/catalog:latest does not exist" in capsys.readouterr().out


@pytest.mark.parametrize(("change", "message"), [
    (lambda c: c.update(schema=2), "catalogue schema 2: this factory reads schema 1 only"),
    # The published schema's own patterns...
    (lambda c: c["images"][0].update(repository="../../etc"),
     "images[0].repository: '../../etc' does not match"),
    (lambda c: c["images"][0].update(tag="../x"), "images[0].tag: '../x' does not match"),
    (lambda c: c["images"][0]["arches"]["amd64"]["sif"].update(blob="sha256:../../x"),
     "images[0].arches.amd64.sif.blob: 'sha256:../../x' does not match"),
    # ... and what it leaves free but becomes a file name on the site.
    (lambda c: c["images"][0].update(name="../../x"), "'../../x' cannot be a file name"),
    (lambda c: c["images"][0].update(module="lammps/.."), "'..' cannot be a file name"),
])
def test_a_catalogue_that_is_not_one_we_read_is_bad_input(
        tmp_path, registry, catalog, capsys, change, message):
    change(catalog)
    site = tmp_path / "site"
    code = cluster("pull", "--catalog", str(write_catalog(tmp_path, catalog)),
                   "--dest", str(site), "--arch", "amd64")
    assert code == EXIT_BAD_INPUT
    assert message in capsys.readouterr().out
    assert registry.seen == [] and not site.exists()


@pytest.mark.parametrize(("argv", "message"), [
    (["--select", "nothing:*"], "'nothing:*' matches no tag of the catalogue"),
    (["--arch", "riscv64"], "'riscv64' is no arch of the catalogue"),
])
def test_a_selection_that_matches_nothing_is_bad_input(
        tmp_path, registry, catalog, capsys, argv, message):
    code = cluster("pull", "--catalog", str(write_catalog(tmp_path, catalog)),
                   "--dest", str(tmp_path / "site"), "--arch", "amd64", *argv)  # the last wins
    assert code == EXIT_BAD_INPUT
    assert message in capsys.readouterr().out


def test_a_catalogue_that_is_neither_file_url_nor_reference_is_bad_input(tmp_path, capsys):
    assert cluster("pull", "--catalog", str(tmp_path / "nope.json"), "--dest",
                   str(tmp_path / "site")) == EXIT_BAD_INPUT
    assert "is neither a file, an http(s) URL nor an OCI reference" in capsys.readouterr().out


def test_a_second_writer_of_the_same_site_is_turned_away(tmp_path, registry, catalog, capsys):
    from pipeline.cluster.lock import site_lock  # noqa: PLC0415
    site = tmp_path / "site"
    with site_lock(site):
        code = cluster("pull", "--catalog", str(write_catalog(tmp_path, catalog)),
                       "--dest", str(site), "--arch", "amd64")
    assert code == EXIT_JOB_FAILED
    assert f"pid {os.getpid()}" in capsys.readouterr().out
    assert registry.blob_gets() == []


def test_a_signed_sif_without_a_key_in_the_catalogue_is_placed_with_a_note(
        tmp_path, registry, catalog, capsys):
    image_of(catalog, BASE)["arches"]["amd64"]["sif"]["signed"] = True  # signing is null
    site = tmp_path / "site"
    assert cluster("pull", "--catalog", str(write_catalog(tmp_path, catalog)), "--select",
                   ":".join(BASE), "--dest", str(site), "--arch", "amd64") == EXIT_PASSED
    assert "signature not checked" in " ".join(capsys.readouterr().out.split())
    assert sif_path(site, image_of(catalog, BASE), "amd64").is_file()
