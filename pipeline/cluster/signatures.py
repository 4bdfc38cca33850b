"""A signed SIF checked with ``apptainer verify`` against the factory's public key.

The key comes from the catalogue (``signing.public_key``), not from a keyserver: it is
imported into a throwaway keyring (``APPTAINER_CONFIGDIR``, as ``sylabs_library`` signs
with one) and ``apptainer verify --local`` checks the SIF against that keyring only, so a
key the site happens to trust for something else never vouches for a factory SIF.

The runtime is found the first time a signed SIF needs it: the host's ``apptainer`` (a
cluster's login node has one), else the lab's containerized one.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from pipeline.settings import Settings
from pipeline.tools.apptainer import Apptainer, ApptainerMissing, find
from pipeline.tools.docker_engine import DockerUnavailable, find_build_client
from pipeline.tools.sylabs_library import ConfigRunner, last_error


class Verifier:
    """Verifies SIFs against a public key; finds the runtime on first use."""

    def __init__(self, settings: Settings, log=lambda line: None):
        self.settings = settings
        self.log = log
        self._runtime: Apptainer | None = None

    def runtime(self) -> Apptainer:
        if self._runtime is None:
            try:
                self._runtime = find(self.settings.lab_dir, None)
            except ApptainerMissing:
                try:
                    client = find_build_client(self.settings)
                except DockerUnavailable:
                    raise ApptainerMissing(
                        "a signed SIF needs `apptainer verify`, and there is no Apptainer "
                        "here: install it (apptainer or singularity on PATH)") from None
                self._runtime = find(self.settings.lab_dir, client)
        return self._runtime

    def problem(self, sif: Path, signing: dict) -> str | None:
        """Why ``sif`` does not verify with ``signing``'s key, or None when it does."""
        fingerprint = signing.get("fingerprint")
        with tempfile.TemporaryDirectory(prefix="cluster-verify-") as folder:
            config = Path(folder)
            key = config / "factory.asc"
            key.write_text(signing["public_key"])
            runner = ConfigRunner(self.runtime(), config, [sif.parent.resolve(), config],
                             self.log, [])
            code, lines = runner.run(["key", "import", str(key)])
            if code:
                return (f"the catalogue's public key {fingerprint} cannot be imported: "
                        f"{last_error(lines)}")
            code, lines = runner.run(["verify", "--local", str(sif.resolve())])
        if code:
            return (f"its signature does not verify with the factory's key {fingerprint}: "
                    f"{last_error(lines)}")
        return None
