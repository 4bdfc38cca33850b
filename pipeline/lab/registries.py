"""The lab's two registries, each behind its own htpasswd login.

* **trusted** (``PIPELINE_REGISTRY``, default ``127.0.0.1:5000``): the local publish target,
  the OS bases and the staging area of ``main`` and ``nightly`` runs;
* **pr** (``PIPELINE_PR_REGISTRY``, default ``127.0.0.1:5001``): the staging area of ``pr``
  runs, and nothing else.

Why logins, and why two: builds need the host's network to download packages, and a
recipe's ``RUN`` step (code from a pull request) then reaches every port of the host.
Without a login it could PUT a manifest into trusted staging or the publish target, and a
later ``main`` run would publish it.  So every request needs a password that only the
factory process has (``.lab/registry-<name>/credentials.json``, mode 0600, never passed
into a build or test container), and a ``pr`` run is only ever given the pr registry's.
Distribution's htpasswd auth has no per-repository rights, hence two registries rather
than one with two accounts.

bcrypt (PyPI ``bcrypt``) hashes the passwords: the registry's htpasswd accepts bcrypt only,
and the standard library has no bcrypt.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from pathlib import Path

import bcrypt

from pipeline.settings import Settings
from pipeline.tools.private_files import write_private
from pipeline.tools.registry.client import Credentials
from pipeline.tools.registry.staging import read_credentials

USERS = {"trusted": "factory", "pr": "factory-pr"}


@dataclass(frozen=True)
class LabRegistry:
    name: str  # "trusted" or "pr"
    address: str  # host:port
    folder: Path

    @property
    def config(self) -> Path:
        return self.folder / "config.yml"

    @property
    def htpasswd(self) -> Path:
        return self.folder / "htpasswd"

    @property
    def credentials_file(self) -> Path:
        return self.folder / "credentials.json"

    @property
    def service(self) -> str:
        return "registry" if self.name == "trusted" else f"registry-{self.name}"

    def config_text(self) -> str:
        return ("version: 0.1\n"
                "log: {level: info}\n"
                f"storage:\n  filesystem: {{rootdirectory: {self.folder / 'data'}}}\n"
                "  delete: {enabled: true}\n"
                f"http: {{addr: '{self.address}'}}\n"
                f"auth:\n  htpasswd: {{realm: factory-{self.name}, path: {self.htpasswd}}}\n")


def lab_registries(settings: Settings) -> list[LabRegistry]:
    # The trusted one keeps the folder it always had, so earlier lab data stays usable.
    return [LabRegistry("trusted", settings.registry, settings.lab_dir / "registry"),
            LabRegistry("pr", settings.pr_registry, settings.lab_dir / "registry-pr")]


def ensure_login(registry: LabRegistry) -> Credentials:
    """The registry's credentials, made (random password, bcrypt htpasswd) on first use."""
    registry.folder.mkdir(parents=True, exist_ok=True)
    if registry.credentials_file.exists() and registry.htpasswd.exists():
        return read_credentials(registry.credentials_file)
    user, password = USERS[registry.name], secrets.token_urlsafe(24)
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt()).decode()
    write_private(registry.htpasswd, f"{user}:{hashed}\n")
    write_private(registry.credentials_file, json.dumps({"username": user,
                                                          "password": password}) + "\n")
    return Credentials(user, password)
