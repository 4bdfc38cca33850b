"""Credentials, from environment variables only, and the masking of their values.

* ``PIPELINE_REGISTRY_USERNAME``: login to the target registry (Docker Hub: the account);
* ``PIPELINE_REGISTRY_PASSWORD``: its password or access token (secret);
* ``PIPELINE_LIBRARY_URL``: the Sylabs library endpoint, used as given (e.g.
  ``https://library.sylabs.io``; ``http://`` for a local one); overrides the target's
  ``library.endpoint``;
* ``PIPELINE_LIBRARY_TOKEN``: the library's access token (secret);
* ``PIPELINE_SIGNING_KEY``: a PGP private key file (ASCII-armoured); SIFs are signed with
  ``apptainer sign``; PEM keys are refused (the library rejects their signatures);
* ``PIPELINE_SIGNING_PASSPHRASE``: its passphrase (secret).

Every value of a secret variable is replaced by ``***`` by a :class:`Masker`, made once per
command from the environment (``Masker.from_env()``) and handed to everything that writes:
the job and publish logs, ``summary.json``, the JUnit file, the console and the error log.
Besides the values as they are, their URL-encoded and JSON-escaped forms and the Basic
``Authorization`` header made from the registry credentials are masked.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, quote_plus

from pipeline.tools.registry.client import Credentials

SECRET_VARIABLES = ("PIPELINE_REGISTRY_PASSWORD", "PIPELINE_LIBRARY_TOKEN",
                    "PIPELINE_SIGNING_PASSPHRASE", "PIPELINE_STAGING_PASSWORD",
                    "PIPELINE_STAGING_KEY")


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
        return self.masker()(text)

    def masker(self) -> Masker:
        """A Masker for these secrets: their values, encoded forms and the Basic auth."""
        extra = []
        if self.registry.username and self.registry.password:
            pair = f"{self.registry.username}:{self.registry.password}".encode()
            extra.append(base64.b64encode(pair).decode())
        return Masker([*self.values(), *extra])

    def __repr__(self) -> str:
        return "Secrets(***)"


class Masker:
    """``masker(text)``: ``text`` with every secret replaced by ``***``.

    Each secret is also masked URL-encoded and JSON-escaped, so that a token in a query
    string or in a JSON body does not get through either.  ``masker.data(obj)`` masks every
    string in a JSON-like structure (keys too).
    """

    def __init__(self, secrets: Iterable[str] = ()):
        self._forms: list[str] = []
        self.add(*secrets)

    def add(self, *secrets: str | None) -> Masker:
        """Mask these values too (e.g. a login read from the lab's files); returns self."""
        forms = set(self._forms)
        for value in secrets:
            if not value:
                continue
            forms.update({value, quote(value, safe=""), quote_plus(value),
                          json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]})
        # Longest first, so a secret that contains another is masked whole.
        self._forms = sorted(forms, key=len, reverse=True)
        return self

    @classmethod
    def from_env(cls, env: dict | None = None) -> Masker:
        """The secrets of ``Secrets.from_env`` and every variable of SECRET_VARIABLES."""
        env = os.environ if env is None else env
        return Secrets.from_env(env).masker().add(*(env.get(n) for n in SECRET_VARIABLES))

    def __bool__(self) -> bool:  # a Masker is always given, even when it has nothing to mask
        return True

    def __call__(self, text) -> str:
        text = text if isinstance(text, str) else str(text)
        for form in self._forms:
            text = text.replace(form, "***")
        return text

    def data(self, obj):
        """``obj`` (dicts, lists, strings, numbers) with every string masked."""
        if isinstance(obj, str):
            return self(obj)
        if isinstance(obj, dict):
            return {self(k) if isinstance(k, str) else k: self.data(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return [self.data(v) for v in obj]
        return obj

    def __repr__(self) -> str:
        return f"Masker({len(self._forms)} forms)"


def mask(text: str, secrets: list) -> str:
    """``text`` with every secret value (and its encoded forms) replaced by ``***``."""
    return Masker(secrets)(text)
