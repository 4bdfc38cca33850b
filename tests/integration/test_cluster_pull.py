"""``cluster pull``, ``bundle`` and ``import`` against the lab's real registry and Apptainer.

A tiny SIF is built with the lab's Apptainer and pushed as an ORAS artifact with the
publish code (``push_sif``), once as it is and once signed with an OpenPGP key Apptainer
made; the catalogue names them as ``python -m pipeline catalog`` would.  Then: a pull (the
signature checked with ``apptainer verify``), a second pull that fetches nothing, a byte
flipped in the registry's own storage and refused, a SIF whose signature is not the
catalogue key's refused, and a bundle imported in a process with no network at all.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from pipeline.cluster.layout import CATALOG, sif_path
from pipeline.lab.registries import lab_registries
from pipeline.published.signing import fingerprint_of
from pipeline.tools import sylabs_library as library
from pipeline.tools.apptainer import find
from pipeline.tools.docker_engine import find_build_client
from pipeline.tools.oci_artifacts import push_sif
from tests.integration.lab import REPO, bring_up, trusted

PASSPHRASE = "cluster-test-passphrase"
# Runs a cluster command as ``python -m pipeline cluster ...`` does, in a process of its own.
RUNNER = ("import sys; from tests.unit.test_cluster_pull import cluster; "
          "sys.exit(cluster(*sys.argv[1:]))")


@pytest.fixture(scope="module")
def lab():
    settings = bring_up()
    return settings, find(settings.lab_dir, find_build_client(settings))


def make_key(apptainer, folder: Path, name: str) -> tuple[Path, str]:
    """(the secret keyring file, the armoured public key) of a new key pair."""
    apptainer.output(["key", "newpair", "--keysdir", str(folder / name), "-N", name,
                      "-E", f"{name}@example.org", "-C", "tests", "-P", PASSPHRASE,
                      "-b", "2048"], [folder])
    config = folder / f"{name}-config"
    config.mkdir()
    runner = library.ConfigRunner(apptainer, config, [folder], print, [PASSPHRASE])
    code, lines = runner.run(["key", "import", str(folder / name / "pgp-secret")],
                             stdin=PASSPHRASE + "\n")
    assert code == 0, lines
    code, lines = runner.run(["key", "export", "--armor", str(folder / f"{name}.asc")],
                             stdin="0\n")
    assert code == 0, lines
    return folder / name / "pgp-secret", (folder / f"{name}.asc").read_text()


@pytest.fixture(scope="module")
def published(lab, tmp_path_factory):
    """Two SIFs in the lab registry (one signed) and a catalogue naming them."""
    apptainer = lab[1]
    root = tmp_path_factory.mktemp("cluster")
    (root / "rootfs").mkdir()
    # Unique bytes: no other run's blob is this one (the flip test changes it on disk).
    (root / "rootfs" / "hello.txt").write_text(f"hello from the factory {uuid.uuid4()}\n")
    tiny = root / "tiny.sif"
    apptainer.run(["build", str(tiny), str(root / "rootfs")], [root], print)
    secret, public = make_key(apptainer, root, "factory")
    config = root / "sign-config"
    config.mkdir()
    signed = root / "signed" / "tiny.sif"
    signed.parent.mkdir()
    library._sign(library.ConfigRunner(apptainer, config, [root], print, [PASSPHRASE]), tiny,
                  signed, library.Signing(secret, PASSPHRASE))
    registry = trusted()
    repository = f"factorytest/cluster-{uuid.uuid4().hex[:8]}"
    entries = []
    for tag, sif, is_signed in (("tiny-1.0", tiny, False), ("tiny-signed-1.0", signed, True)):
        pushed = push_sif(registry, f"{repository}-sif", f"{tag}-amd64", sif, {})
        entries.append(entry(registry.host, repository, tag, sif, pushed, is_signed))
    catalog = {"schema": 1, "generator": "hpc-container-factory",
               "target": {"name": "local", "registry": registry.host},
               "catalog": f"{registry.host}/factorytest/catalog",
               "repositories": [repository],
               "signing": {"public_key": public, "fingerprint": fingerprint_of(public)},
               "images": entries}
    path = root / "catalog.json"
    path.write_text(json.dumps(catalog, indent=2))
    return path, catalog


def entry(host: str, repository: str, tag: str, sif: Path, pushed, signed: bool) -> dict:
    name = tag.rsplit("-", 1)[0]
    return {
        "repository": repository, "tag": tag, "name": name, "kind": "base",
        "description": "a tiny SIF for the cluster tests", "module": f"{name}/1.0",
        "commands": ["cat"], "reference": None, "digest": None, "immutable": None,
        "base": None, "variables": {"os": "debian12"},
        "source": {"url": None, "revision": None}, "created": None,
        "arches": {"amd64": {
            "platform": "linux/amd64", "manifest": None, "build_id": None,
            "base_digest": None, "tests": [], "sif_missing": None,
            "sif": {"repository": f"{repository}-sif",
                    "reference": f"oras://{host}/{repository}-sif:{tag}-amd64",
                    "immutable": f"oras://{host}/{repository}-sif@{pushed.manifest}",
                    "manifest": pushed.manifest, "blob": pushed.sif,
                    "size": sif.stat().st_size, "signed": signed}}},
    }


def cluster(*argv: str, network: bool = True) -> tuple[int, str]:
    """A cluster command in a process of its own (with no network at all when asked)."""
    prefix = [] if network else ["unshare", "--net"]
    done = subprocess.run([*prefix, sys.executable, "-c", RUNNER, *argv], cwd=REPO,
                          capture_output=True, text=True, check=False)
    return done.returncode, " ".join((done.stdout + done.stderr).split())


def test_a_pull_verifies_and_a_second_pull_fetches_nothing(published, tmp_path):
    path, catalog = published
    site = tmp_path / "site"
    code, out = cluster("pull", "--catalog", str(path), "--dest", str(site), "--arch", "amd64")
    assert code == 0, out
    for image in catalog["images"]:
        placed = sif_path(site, image, "amd64")
        assert "sha256:" + subprocess.run(["sha256sum", str(placed)], capture_output=True,
                                          text=True, check=True).stdout.split()[0] == \
            image["arches"]["amd64"]["sif"]["blob"]
    assert f"signature verified ({catalog['signing']['fingerprint']})" in out
    assert (site / "keys" / f"{catalog['signing']['fingerprint']}.asc").read_text() == \
        catalog["signing"]["public_key"]
    started = time.monotonic()
    code, out = cluster("pull", "--catalog", str(path), "--dest", str(site), "--arch", "amd64")
    print(f"second pull: {time.monotonic() - started:.2f} s (a new Python process included)")
    assert code == 0, out
    assert out.count("already here") == 2 and "downloaded" not in out


def test_a_sif_signed_with_another_key_is_refused(published, lab, tmp_path):
    _, catalog = published
    _, other = make_key(lab[1], tmp_path, "stranger")
    changed = {**catalog, "signing": {"public_key": other, "fingerprint": fingerprint_of(other)}}
    (tmp_path / "catalog.json").write_text(json.dumps(changed))
    site = tmp_path / "site"
    code, out = cluster("pull", "--catalog", str(tmp_path / "catalog.json"), "--select",
                        "*:tiny-signed-1.0", "--dest", str(site), "--arch", "amd64")
    assert code == 1, out
    assert "its signature does not verify with the factory's key" in out
    assert not list(site.rglob("*.sif")) and not list(site.rglob("*.part"))


def test_a_byte_flipped_in_the_registry_is_refused(published, lab, tmp_path):
    path, catalog = published
    settings, _ = lab
    sif = catalog["images"][0]["arches"]["amd64"]["sif"]
    hexdigest = sif["blob"].removeprefix("sha256:")
    data = (lab_registries(settings)[0].folder / "data" / "docker" / "registry" / "v2" / "blobs"
            / "sha256" / hexdigest[:2] / hexdigest / "data")
    original = data.read_bytes()
    changed = bytearray(original)
    changed[len(changed) // 2] ^= 0x01
    data.write_bytes(bytes(changed))
    try:
        site = tmp_path / "site"
        code, out = cluster("pull", "--catalog", str(path), "--select", "*:tiny-1.0",
                            "--dest", str(site), "--arch", "amd64")
    finally:
        data.write_bytes(original)
    assert code == 1, out
    assert f"{sif['repository']}@{sif['manifest']}: the SIF arrived with" in out
    assert sif["blob"] in out and "refused, nothing was replaced" in out
    assert not list(site.rglob("*.sif")) and not list(site.rglob("*.part"))


def test_a_bundle_imports_where_there_is_no_network(published, tmp_path):
    path, catalog = published
    out = tmp_path / "tiny.tar"
    code, text = cluster("bundle", "--catalog", str(path), "--arch", "amd64", "--out", str(out))
    assert code == 0, text
    site = tmp_path / "site"
    code, text = cluster("import", str(out), "--dest", str(site), network=False)
    assert code == 0, text
    assert text.count("imported") >= 2
    slice_ = json.loads((site / CATALOG).read_text())
    assert [i["tag"] for i in slice_["images"]] == ["tiny-1.0", "tiny-signed-1.0"]
    for image in catalog["images"]:
        assert sif_path(site, image, "amd64").stat().st_size == \
            image["arches"]["amd64"]["sif"]["size"]
