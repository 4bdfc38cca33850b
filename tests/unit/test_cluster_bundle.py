"""``cluster bundle`` and ``cluster import``: SIFs carried in a tar to a site with no
registry, checked whole before anything is placed.

The registry is the pull tests' :class:`SifRegistry`; imports run with it stopped.
"""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
from pathlib import Path

import pytest

from pipeline.cluster.bundle import SUMS
from pipeline.cluster.layout import CATALOG, sif_path
from pipeline.errors import EXIT_BAD_INPUT, EXIT_JOB_FAILED, EXIT_PASSED
from tests.unit.test_cluster_pull import (
    BASE,
    LAMMPS,
    SifRegistry,
    cluster,
    image_of,
    no_lab,  # noqa: F401 - a fixture, used by name in pytestmark
    published,
    sha256,
    write_catalog,
)

SELECT = f"{':'.join(LAMMPS)},{':'.join(BASE)}"


pytestmark = pytest.mark.usefixtures("no_lab")


@pytest.fixture
def bundled(tmp_path) -> tuple[Path, dict, dict]:
    """A bundle of LAMMPS and the base (amd64), made while the registry was up; (tar,
    catalogue, the blobs by digest).  The registry is gone afterwards."""
    with SifRegistry() as registry:
        catalog = published(registry)
        out = tmp_path / "lammps.tar"
        assert cluster("bundle", "--catalog", str(write_catalog(tmp_path, catalog)),
                       "--select", SELECT, "--arch", "amd64", "--out", str(out)) == EXIT_PASSED
        blobs = dict(registry.blobs)
    return out, catalog, blobs


def members(tar_path: Path) -> dict[str, bytes]:
    with tarfile.open(tar_path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}


def write_tar(path: Path, files: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return path


def sums_of(files: dict[str, bytes]) -> bytes:
    return "".join(f"{sha256(data)[7:]}  {name}\n" for name, data in files.items()
                   if name != SUMS).encode()


def test_bundle_then_import_with_the_registry_stopped(tmp_path, bundled, capsys):
    tar_path, catalog, blobs = bundled
    assert not list(tmp_path.glob(".*.staging"))  # removed once the tar was written
    site = tmp_path / "site"
    assert cluster("import", str(tar_path), "--dest", str(site)) == EXIT_PASSED
    for key in (LAMMPS, BASE):
        image = image_of(catalog, key)
        placed = sif_path(site, image, "amd64")
        assert placed.read_bytes() == blobs[image["arches"]["amd64"]["sif"]["blob"]]
    slice_ = json.loads((site / CATALOG).read_text())
    assert [i["tag"] for i in slice_["images"]] == [LAMMPS[1], BASE[1]]
    assert not list(site.glob(".import-*"))
    assert capsys.readouterr().out.count("imported") >= 2
    # A second import of the same bundle places nothing new.
    assert cluster("import", str(tar_path), "--dest", str(site)) == EXIT_PASSED
    assert capsys.readouterr().out.count("already here") == 2


def test_an_import_adds_to_what_the_site_has(tmp_path, bundled):
    tar_path, _, _ = bundled
    site = tmp_path / "site"
    with SifRegistry() as registry:  # the site pulled another tag from elsewhere earlier
        other = published(registry)
        assert cluster("pull", "--catalog", str(write_catalog(tmp_path, other, "o.json")),
                       "--select", "*:pi-mpi-1.0", "--dest", str(site), "--arch", "amd64") == 0
    assert cluster("import", str(tar_path), "--dest", str(site)) == EXIT_PASSED
    slice_ = json.loads((site / CATALOG).read_text())
    assert [i["tag"] for i in slice_["images"]] == [LAMMPS[1], "pi-mpi-1.0", BASE[1]]


def test_the_bundle_checks_by_hand_with_sha256sum(tmp_path, bundled):
    tar_path, _, _ = bundled
    folder = tmp_path / "by-hand"
    folder.mkdir()
    subprocess.run(["tar", "-xf", str(tar_path), "-C", str(folder)], check=True)
    checked = subprocess.run(["sha256sum", "-c", SUMS], cwd=folder, capture_output=True,
                             text=True, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.count(": OK") == 4  # two SIFs, catalog.json and its sum


def test_an_import_refuses_a_bundle_with_a_changed_byte(tmp_path, bundled, capsys):
    tar_path, catalog, _ = bundled
    sif_name = sif_path(Path(), image_of(catalog, LAMMPS), "amd64").as_posix()
    data = bytearray(tar_path.read_bytes())
    with tarfile.open(tar_path) as tar:
        offset = tar.getmember(sif_name).offset_data
    data[offset + 5000] ^= 0x01
    tar_path.write_bytes(bytes(data))
    site = tmp_path / "site"
    assert cluster("import", str(tar_path), "--dest", str(site)) == EXIT_BAD_INPUT
    out = " ".join(capsys.readouterr().out.split())
    assert f"{sif_name} has sha256" in out and "nothing was imported" in out
    assert not (site / "containers").exists() and not (site / CATALOG).exists()
    assert not list(site.glob(".import-*"))


def test_an_import_refuses_a_slice_changed_with_its_sums_rewritten(tmp_path, bundled, capsys):
    tar_path, _, _ = bundled
    files = members(tar_path)
    slice_ = json.loads(files[CATALOG])
    slice_["images"][0]["description"] = "something else"
    files[CATALOG] = json.dumps(slice_).encode()
    files[SUMS] = sums_of(files)
    write_tar(tar_path, {SUMS: files.pop(SUMS), **files})
    assert cluster("import", str(tar_path), "--dest", str(tmp_path / "site")) == EXIT_BAD_INPUT
    assert "catalog.json does not have the sha256 catalog.json.sha256 gives" in " ".join(
        capsys.readouterr().out.split())


OUTSIDE = "points outside the folder it is unpacked to"


@pytest.mark.parametrize(("name", "link", "message"), [
    ("../escape.sif", None, OUTSIDE), ("/tmp/escape.sif", None, OUTSIDE),
    ("containers/../../escape.sif", None, OUTSIDE),
    ("containers/a/b/evil.sif", "/etc/passwd", "is a link or special file")])
def test_an_import_refuses_names_that_lead_outside_and_links(
        tmp_path, bundled, capsys, name, link, message):
    tar_path, _, _ = bundled
    files = members(tar_path)
    sums = files.pop(SUMS)
    evil = {} if link else {name: b"x"}
    write_tar(tar_path, {SUMS: sums, **files, **evil}, {name: link} if link else None)
    site = tmp_path / "site"
    assert cluster("import", str(tar_path), "--dest", str(site)) == EXIT_BAD_INPUT
    out = " ".join(capsys.readouterr().out.split())
    assert f"member {name!r} {message}" in out and "nothing was imported" in out
    assert not (site / "containers").exists()
    assert not (tmp_path / "escape.sif").exists() and not Path("/tmp/escape.sif").exists()


def test_an_import_refuses_what_is_not_a_bundle(tmp_path, capsys):
    plain = write_tar(tmp_path / "other.tar", {"README": b"hello"})
    assert cluster("import", str(plain), "--dest", str(tmp_path / "site")) == EXIT_BAD_INPUT
    assert f"its first member is not {SUMS}" in capsys.readouterr().out


def test_no_bundle_is_written_while_a_download_fails_and_a_rerun_resumes(tmp_path, capsys):
    out = tmp_path / "lammps.tar"
    with SifRegistry() as registry:
        catalog = published(registry)
        source = str(write_catalog(tmp_path, catalog))
        lammps = image_of(catalog, LAMMPS)["arches"]["amd64"]["sif"]["blob"]
        registry.flip.add(lammps)
        assert cluster("bundle", "--catalog", source, "--select", SELECT, "--arch", "amd64",
                       "--out", str(out)) == EXIT_JOB_FAILED
        assert not out.exists() and not out.with_name(out.name + ".part").exists()
        assert "no bundle written" in capsys.readouterr().out
        registry.flip.clear()
        registry.seen.clear()
        assert cluster("bundle", "--catalog", source, "--select", SELECT, "--arch", "amd64",
                       "--out", str(out)) == EXIT_PASSED
        assert [g.path.rsplit("/", 1)[1] for g in registry.blob_gets()] == [lammps]
    assert sorted(n for n in members(out) if n.endswith(".sif")) == sorted(
        sif_path(Path(), image_of(catalog, key), "amd64").as_posix() for key in (LAMMPS, BASE))
    assert not list(tmp_path.glob(".*.staging"))
