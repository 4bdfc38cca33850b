"""Credentials, from environment variables only, and the masking of their values.

| variable | used for |
|---|---|
| ``PIPELINE_REGISTRY_USERNAME`` | login to the target registry (Docker Hub: the account) |
| ``PIPELINE_REGISTRY_PASSWORD`` | its password or access token (secret) |
| ``PIPELINE_LIBRARY_URL`` | the Sylabs library endpoint, used as given (e.g. ``https://library.sylabs.io``; ``http://`` for a local one); overrides the target's ``library.endpoint`` |
| ``PIPELINE_LIBRARY_TOKEN`` | the library's access token (secret) |
| ``PIPELINE_SIGNING_KEY`` | a PGP private key file (ASCII-armoured); SIFs are signed with ``apptainer sign``; PEM keys are refused (the library rejects their signatures) |
| ``PIPELINE_SIGNING_PASSPHRASE`` | its passphrase (secret) |

Every value of a secret variable is replaced by ``***`` in whatever ``mask`` is given: the
job logs, the summary, the console and error messages all go through it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pipeline.tools.registry.client import Credentials

SECRET_VARIABLES = ("PIPELINE_REGISTRY_PASSWORD", "PIPELINE_LIBRARY_TOKEN",
                    "PIPELINE_SIGNING_PASSPHRASE")


@dataclass(frozen=True, repr=False)
class Secrets:
    registry: Credentials
    library_url: str | None
    library_token: str | None
    signing_key: Path | None
    signing_passphrase: str | None

    @classmethod
    def from_env(cls, env: dict | None = None) -> Secrets:
        env = os.environ if env is None else env
        key = env.get("PIPELINE_SIGNING_KEY")
        return cls(Credentials(env.get("PIPELINE_REGISTRY_USERNAME") or None,
                               env.get("PIPELINE_REGISTRY_PASSWORD") or None),
                   env.get("PIPELINE_LIBRARY_URL") or None,
                   env.get("PIPELINE_LIBRARY_TOKEN") or None,
                   Path(key) if key else None,
                   env.get("PIPELINE_SIGNING_PASSPHRASE") or None)

    def signing_key_problem(self) -> str | None:
        """Why ``PIPELINE_SIGNING_KEY`` cannot sign, or None (also when no key is set)."""
        key = self.signing_key
        if key is None:
            return None
        if not key.is_file():
            return f"'{key}' is not a file; give the path of a PGP private key, or unset it"
        head = key.read_bytes()[:4096]
        if b"BEGIN PGP PRIVATE KEY BLOCK" in head or (head[:1] and head[0] & 0x80):
            return None  # armoured, or binary OpenPGP packets
        return (f"'{key}' is not a PGP private key (a PEM key?); the library rejects PEM "
                "signatures: export a PGP key with `apptainer key export --secret`")

    def values(self) -> list[str]:
        return [v for v in (self.registry.password, self.library_token,
                            self.signing_passphrase) if v]

    def mask(self, text: str) -> str:
        return mask(text, self.values())

    def __repr__(self) -> str:
        return "Secrets(***)"


def mask(text: str, secrets: list) -> str:
    """``text`` with every secret value replaced by ``***``."""
    # Longest first, so a secret that contains another is masked whole.
    for value in sorted({v for v in secrets if v}, key=len, reverse=True):
        text = text.replace(value, "***")
    return text
