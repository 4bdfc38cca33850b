"""The public key the catalogue ships (``signing``), and its fingerprint as gpg prints it."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from pipeline.errors import InputError
from pipeline.published.signing import VARIABLE, fingerprint_of, signing_of


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """An Ed25519 and an RSA key made by gpg: {armoured public key: gpg's fingerprint}."""
    if shutil.which("gpg") is None:
        pytest.skip("no gpg on this machine (Debian: apt-get install gpg) to make test keys")
    home = tmp_path_factory.mktemp("gnupg")
    home.chmod(0o700)

    def gpg(*args: str) -> str:
        return subprocess.run(["gpg", "--homedir", str(home), "--batch", *args], check=True,
                              capture_output=True, text=True).stdout

    found = {}
    for uid, algorithm in (("ed@factory.test", "ed25519"), ("rsa@factory.test", "rsa2048")):
        gpg("--passphrase", "", "--quick-gen-key", uid, algorithm, "sign", "never")
        fingerprint = next(line.split(":")[9] for line in gpg(
            "--with-colons", "--fingerprint", uid).splitlines() if line.startswith("fpr:"))
        found[gpg("--armor", "--export", uid)] = fingerprint
    return found


def test_the_fingerprint_is_the_one_gpg_prints(keys):
    for armoured, fingerprint in keys.items():
        assert fingerprint_of(armoured) == fingerprint


def test_the_catalogue_carries_the_key_named_by_the_variable(keys, tmp_path):
    armoured, fingerprint = next(iter(keys.items()))
    path = tmp_path / "public.asc"
    path.write_text(armoured)
    assert signing_of({VARIABLE: str(path)}) == {"public_key": armoured.strip() + "\n",
                                                 "fingerprint": fingerprint}
    assert signing_of({}) is None


@pytest.mark.parametrize(("content", "reason"), [
    (None, "No such file or directory"),
    ("-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nlQ==\n", "no '-----BEGIN PGP PUBLIC KEY"),
    ("-----BEGIN PGP PUBLIC KEY BLOCK-----\n\n%%%\n-----END PGP PUBLIC KEY BLOCK-----\n",
     "its armour is not base64"),
])
def test_a_file_that_is_not_a_public_key_is_bad_input(tmp_path, content, reason):
    path = tmp_path / "public.asc"
    if content is not None:
        path.write_text(content)
    with pytest.raises(InputError) as raised:
        signing_of({VARIABLE: str(path)})
    [problem] = raised.value.problems
    assert str(problem).startswith(f"{VARIABLE}: '{path}' is not an ASCII-armoured OpenPGP "
                                   f"public key ({reason}")
