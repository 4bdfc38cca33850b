"""``pipeline.library.push``: the real ``apptainer push library://...`` against a fake Library.

The Sylabs Library is a hosted service that cannot run here (no network to it, no account),
so the server is ``tests.fake_library``: a fake that speaks the Library API the way
Apptainer 1.4.5's library client calls it. Everything else is real: the lab's Apptainer
builds a tiny SIF, signs it with an OpenPGP key it generated, and pushes it; the tests then
read what the server received.
"""

from __future__ import annotations

import hashlib
import secrets
from pathlib import Path

import pytest

from pipeline.tools import sylabs_library as library
from pipeline.tools.apptainer import find
from pipeline.tools.docker_engine import find_build_client
from tests.fakes.fake_library import FakeLibrary
from tests.integration.lab import bring_up

TOKEN = "fake-library-token." + secrets.token_urlsafe(48)
PASSPHRASE = "pass-" + secrets.token_urlsafe(12)
REFERENCE = "factory/hpc/tiny:v1"


@pytest.fixture(scope="module")
def apptainer():
    settings = bring_up()
    return find(settings.lab_dir, find_build_client(settings))


@pytest.fixture(scope="module")
def sif(apptainer, tmp_path_factory) -> Path:
    """A SIF of one small file, built from a folder: a second or less."""
    root = tmp_path_factory.mktemp("sif")
    (root / "rootfs").mkdir()
    (root / "rootfs" / "hello.txt").write_text("hello from the factory\n")
    out = root / "tiny.sif"
    apptainer.run(["build", str(out), str(root / "rootfs")], [root], print)
    return out


@pytest.fixture(scope="module")
def pgp_key(apptainer, tmp_path_factory) -> Path:
    """An OpenPGP key pair made by Apptainer; its secret keyring is a private key file."""
    keys = tmp_path_factory.mktemp("keys")
    apptainer.output(["key", "newpair", "--keysdir", str(keys / "ring"), "-N", "Factory Test",
                      "-E", "factory@example.org", "-C", "tests", "-P", PASSPHRASE, "-b", "2048"],
                     [keys])
    return keys / "ring" / "pgp-secret"


@pytest.fixture
def server():
    with FakeLibrary(TOKEN) as fake:
        yield fake


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_push_stores_the_sif_under_its_reference(apptainer, sif, server):
    lines: list[str] = []
    before = sha256(sif)
    digest = library.push(apptainer, sif, REFERENCE, server.url, TOKEN, lines.append)

    assert digest == f"sha256:{before}"
    assert REFERENCE in server.images, server.requests
    assert hashlib.sha256(server.images[REFERENCE]).hexdigest() == before
    assert server.hashes[REFERENCE] == f"sha256.{before}"
    assert server.tagged()[REFERENCE].arch  # the SIF's arch, sent with the tag
    assert "factory" in server.entities
    assert "factory/hpc" in server.collections
    assert "factory/hpc/tiny" in server.containers
    # The path the real client took: the v2 upload, then the tag with its arch.
    calls = [(r.method, r.path.split("?")[0].rsplit("/", 1)[0]) for r in server.requests]
    assert ("POST", "/v2/imagefile") in calls and ("POST", "/v2/tags") in calls
    # Every API call carried the token; only the config map, /version and the upload URL
    # (which has its own signature, as S3's presigned URLs do) went without it.
    anonymous = {r.path.split("?")[0].split("/")[1] for r in server.requests if not r.authorized}
    assert anonymous <= {"assets", "version", "_upload"}
    assert any("-U" in line.split() for line in lines if line.startswith("$ "))
    assert TOKEN not in "\n".join(lines)
    assert sha256(sif) == before


def test_a_wrong_token_is_refused_plainly(apptainer, sif, server):
    lines: list[str] = []
    wrong = "wrong-token." + secrets.token_urlsafe(48)
    with pytest.raises(library.LibraryPushFailed) as failed:
        library.push(apptainer, sif, REFERENCE, server.url, wrong, lines.append)

    message = str(failed.value)
    assert "PIPELINE_LIBRARY_TOKEN" in message and "PIPELINE_LIBRARY_URL" in message
    assert wrong not in message and TOKEN not in message
    assert wrong not in "\n".join(lines)
    assert any(r.status == 401 for r in server.requests)
    assert server.images == {}


def test_signed_push_verifies_and_leaves_the_sif_alone(apptainer, sif, pgp_key, server,
                                                       tmp_path):
    lines: list[str] = []
    before = sha256(sif)
    digest = library.push(apptainer, sif, "factory/hpc/tiny:signed", server.url, TOKEN,
                          lines.append, signing=library.Signing(pgp_key, PASSPHRASE))

    stored = server.images["factory/hpc/tiny:signed"]
    assert digest == "sha256:" + hashlib.sha256(stored).hexdigest()
    assert digest != f"sha256:{before}" and sha256(sif) == before
    # Without -U: apptainer push itself checked the signature against the imported key.
    pushes = [line for line in lines if line.startswith("$ ") and " push " in line]
    assert pushes and "-U" not in pushes[-1].split()
    copy = tmp_path / "pulled.sif"
    copy.write_bytes(stored)
    assert "Signature" in apptainer.output(["sif", "list", str(copy)], [tmp_path])
    text = "\n".join(lines)
    assert PASSPHRASE not in text and TOKEN not in text
    assert not list(sif.parent.glob(".signing-*"))


def test_a_wrong_passphrase_stops_before_the_push(apptainer, sif, pgp_key, server):
    lines: list[str] = []
    with pytest.raises(library.LibraryPushFailed) as failed:
        library.push(apptainer, sif, REFERENCE, server.url, TOKEN, lines.append,
                     signing=library.Signing(pgp_key, "not-" + PASSPHRASE))

    assert "PIPELINE_SIGNING_PASSPHRASE" in str(failed.value)
    assert PASSPHRASE not in str(failed.value) + "\n".join(lines)
    assert server.requests == []
