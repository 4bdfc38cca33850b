"""Which login and retry policy the cluster commands use for a registry.

The login is the one publishing uses for its target: ``PIPELINE_REGISTRY_USERNAME`` and
``PIPELINE_REGISTRY_PASSWORD``, else, for the lab's own trusted registry, the lab's login
file (``target_credentials``), else none (a registry that lets anyone pull).  Requests are
retried as publishing retries them (``RetryPolicy``: 429, 5xx, dropped connections).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pipeline.settings import Settings
from pipeline.tools.credentials import Secrets
from pipeline.tools.registry.client import Credentials, Registry, RegistryError
from pipeline.tools.registry.retries import RetryPolicy
from pipeline.tools.registry.staging import target_credentials


@dataclass(frozen=True)
class Access:
    """How to reach registries: the environment's login, the lab's, and the retries."""

    credentials: Credentials = field(default_factory=Credentials)
    lab_dir: Path | None = None  # where the lab keeps its login; None: no lab here
    lab_registry: str | None = None
    policy: RetryPolicy = field(default_factory=RetryPolicy)

    @classmethod
    def from_env(cls, settings: Settings, policy: RetryPolicy | None = None) -> Access:
        return cls(Secrets.from_env().registry, settings.lab_dir, settings.registry,
                   policy or RetryPolicy())

    def registry(self, host: str, log=None) -> Registry:
        credentials = self.credentials
        if self.lab_dir is not None and self.lab_registry is not None:
            credentials = target_credentials(credentials, host, self.lab_dir, self.lab_registry)
        return Registry(host, credentials, self.policy, log=log)


def unreachable(err: BaseException) -> bool:
    """A registry that stayed unreachable (refused connections, 5xx, 429) past the retries.

    ``Registry.call`` says so in its message only; ``run.failures`` reads it the same way
    (it is a layer this package may not import)."""
    return isinstance(err, RegistryError) and "gave up after retries" in str(err)
