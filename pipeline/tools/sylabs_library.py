"""Pushing a SIF to a Sylabs Library (``library://``) with the real ``apptainer push``.

Apptainer 1.4.5 attaches a library token only for its active remote endpoint: ``push
--library URL`` builds a client without one and refuses to push. So each push gets a
throwaway Apptainer config folder (``APPTAINER_CONFIGDIR``, mode 0700, deleted afterwards)
whose ``remote.yaml`` (0600) names the endpoint and holds the token. The token is thus in a
file only: never on a command line, in the environment or in the log. A containerized
Apptainer gets the folder bound and ``docker run -e APPTAINER_CONFIGDIR``, which takes the
value from this process's environment.

``remote.yaml`` is written directly rather than with ``apptainer remote add``: that command
stores the endpoint without its scheme, which 1.4.5 then cannot parse back when it has a
port (``parse "127.0.0.1:8080": first path segment in URL cannot contain colon``). An
``http://`` endpoint is marked ``Insecure``, without which Apptainer only speaks https.

With a signing key (an OpenPGP private key, armored or binary) the SIF is copied, the key
imported into the throwaway keyring and the copy signed (``apptainer sign --keyidx 0``);
the passphrase goes on the standard input of those two commands. ``push`` then verifies
the signature against that keyring before uploading. Without a key, ``push -U``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import yaml

from pipeline.tools.apptainer import Apptainer
from pipeline.tools.credentials import mask
from pipeline.tools.digests import sha256_file
from pipeline.tools.private_files import write_private
from pipeline.tools.processes import Log

REMOTE = "pipeline"
REFUSED = re.compile(r"\b40[13]\b|Unauthorized|Forbidden|Invalid Credentials", re.IGNORECASE)


class LibraryPushFailed(RuntimeError):
    """Signing or pushing failed; the message holds neither the token nor the passphrase."""


@dataclass(frozen=True)
class Signing:
    """What a SIF is signed with: an OpenPGP private key file and its passphrase."""

    key: Path
    passphrase: str | None = None


def push(apptainer: Apptainer, sif: Path, reference: str, endpoint: str, token: str, log: Log,
         *, signing: Signing | None = None) -> str:
    """Push ``sif`` to ``library://<reference>`` at ``endpoint``; return its ``sha256:<hex>``.

    ``reference`` is ``entity/collection/container:tag`` (the ``library://`` prefix is
    optional); ``endpoint`` is the remote endpoint's URL, the one serving
    ``/assets/config/config.prod.json`` (https is assumed without a scheme). The digest is
    that of the file pushed, which the library keys as ``sha256.<hex>``: with a signing key
    that is the signed copy, and ``sif`` itself is left as it was.
    """
    reference = reference.removeprefix("library://")
    sif = sif.resolve()
    if not sif.is_file():
        raise LibraryPushFailed(f"no SIF to push at {sif}")
    passphrase = signing.passphrase if signing is not None else None
    secrets = [s for s in (token, passphrase) if s]
    with ExitStack() as stack:
        config = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="library-push-")))
        _write_remote(config / "remote.yaml", endpoint, token)
        runner = ConfigRunner(apptainer, config, [sif.parent, config], log, secrets)
        pushed = sif
        if signing is not None:
            # Beside the SIF (so on its disk, and bound already), not in the small /tmp.
            folder = stack.enter_context(tempfile.TemporaryDirectory(prefix=".signing-",
                                                                     dir=sif.parent))
            pushed = Path(folder) / sif.name
            _sign(runner, sif, pushed, signing)
        digest = sha256_file(pushed)
        allow_unsigned = [] if signing is not None else ["-U"]
        code, lines = runner.run(["push", *allow_unsigned, str(pushed),
                                  f"library://{reference}"])
    if code:
        raise LibraryPushFailed(_why(lines, reference, endpoint))
    log(f"pushed library://{reference} ({digest})")
    return digest


def _write_remote(path: Path, endpoint: str, token: str) -> None:
    uri = endpoint if "://" in endpoint else f"https://{endpoint}"
    remote = {"Active": REMOTE,
              "Remotes": {REMOTE: {"URI": uri.rstrip("/"), "Token": token, "System": False,
                                   "Exclusive": False, "Insecure": uri.startswith("http://")}}}
    write_private(path, yaml.safe_dump(remote))


@dataclass(frozen=True)
class ConfigRunner:
    """Runs ``apptainer`` with a throwaway config folder (``APPTAINER_CONFIGDIR``: a library
    push here, a signature check in ``pipeline.cluster``), the folders it sees, where its
    output is logged and the secrets masked in that output."""

    apptainer: Apptainer
    config: Path
    binds: list
    log: Log
    secrets: list

    def run(self, args: list, stdin: str | None = None) -> tuple[int, list[str]]:
        """``apptainer ARGS`` with ``config`` as its config folder: (exit code, output lines)."""
        env = {**os.environ, "APPTAINER_CONFIGDIR": str(self.config)}
        argv = self.apptainer.argv(args, self.binds)
        if self.apptainer.kind == "container":
            # Right after `docker run`: `-e NAME` with no value makes docker pass on its own
            # environment's value, the one a host Apptainer would read; -i forwards the stdin.
            extra = ["-e", "APPTAINER_CONFIGDIR", *(["-i"] if stdin is not None else [])]
            argv = [*argv[:2], *extra, *argv[2:]]
        self.log("$ " + " ".join(map(str, argv)))
        lines = []
        with subprocess.Popen(argv,
                              stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=env, errors="replace") as child:
            if stdin is not None:
                try:
                    child.stdin.write(stdin)
                    child.stdin.close()
                except BrokenPipeError:  # it exited without asking; its output says why
                    pass
            for raw in child.stdout:
                line = mask(raw.rstrip("\n"), self.secrets)
                lines.append(line)
                self.log(line)
        return child.returncode, lines


def _sign(runner: ConfigRunner, sif: Path, copy: Path, signing: Signing) -> None:
    """Import the key into the throwaway keyring; sign ``copy`` (a copy of ``sif``) with it."""
    key = signing.key
    # The key's own folder is not bound; a 0600 copy sits with the token instead.
    imported = runner.config / "signing-key"
    try:
        material = Path(key).read_bytes()
    except OSError as err:
        raise LibraryPushFailed(f"cannot read the signing key {key} (PIPELINE_SIGNING_KEY): "
                                f"{err.strerror}") from None
    write_private(imported, material)
    answer = (signing.passphrase or "") + "\n"
    code, lines = runner.run(["key", "import", str(imported)], stdin=answer)
    if code:
        raise LibraryPushFailed(
            f"cannot import the signing key {key} (PIPELINE_SIGNING_KEY, an OpenPGP private "
            f"key; is PIPELINE_SIGNING_PASSPHRASE right?): {last_error(lines)}")
    shutil.copyfile(sif, copy)
    code, lines = runner.run(["sign", "--keyidx", "0", str(copy)], stdin=answer)
    if code:
        raise LibraryPushFailed(f"apptainer sign failed for {sif.name} with {key} "
                                f"(PIPELINE_SIGNING_KEY): {last_error(lines)}")


def _why(lines: list[str], reference: str, endpoint: str) -> str:
    error = last_error(lines)
    if REFUSED.search("\n".join(lines)):
        return (f"the library at {endpoint} refused the token when pushing "
                f"library://{reference}: {error}; check PIPELINE_LIBRARY_TOKEN (and that "
                f"PIPELINE_LIBRARY_URL is the library it belongs to)")
    return f"apptainer push to library://{reference} at {endpoint} failed: {error}"


def last_error(lines: list[str]) -> str:
    """Apptainer's last FATAL or ERROR message, without its prefix, else its last line."""
    errors = [line for line in lines if re.match(r"\s*(FATAL|ERROR):", line)]
    last = (errors or [line for line in lines if line.strip()] or ["no output"])[-1]
    return re.sub(r"^\s*(FATAL|ERROR):\s*", "", last).strip()


