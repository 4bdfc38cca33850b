"""Staging: where built images wait between stages and runners, and who may trust them.

Two kinds, never mixed:

* **trusted** (``main``, ``nightly``): ``<registry>/factory-staging/<repository>``, OS bases
  in ``<registry>/factory/os``.  Each image staged by a trusted run gets an *attestation*:
  a small OCI artifact ``<repository>:<tag>.att`` whose record (digest, build_id, job id)
  is signed with HMAC-SHA256 under a key only trusted runs have.  Before a trusted run
  builds FROM a staged image, reuses it ("already built") or publishes it, it checks the
  attestation and the image's own labels; anything else in staging (planted by someone
  who got hold of the registry's password, or left by an older factory) is not used.
* **pr** (``pr``): ``<pr registry>/factory-staging-pr/<repository>``, OS bases in
  ``factory-pr/os``, with credentials of its own.  A pr run never sees the trusted
  registry's credentials or the attestation key, and trusted runs never read pr staging.

Where the settings come from, first found wins:

* registry: in CI or given explicitly, ``PIPELINE_STAGING`` (trusted) /
  ``PIPELINE_PR_STAGING`` (pr), ``HOST[:PORT][/PATH]`` (the namespaces go under PATH, e.g.
  ``ghcr.io/sjtuhpc`` or ``$CI_REGISTRY_IMAGE``); in the lab, ``PIPELINE_REGISTRY`` /
  ``PIPELINE_PR_REGISTRY``.
* login: in CI or given explicitly, ``PIPELINE_STAGING_USERNAME`` +
  ``PIPELINE_STAGING_PASSWORD``; in the lab, ``.lab/registry[-pr]/credentials.json``.
* attestation key: in CI or given explicitly, ``PIPELINE_STAGING_KEY``; in the lab,
  ``.lab/registry/attestation.key``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from pipeline.names import BUILD_ID, FACTORY
from pipeline.tools.oci_artifacts import image_labels
from pipeline.tools.private_files import write_private
from pipeline.tools.registry.client import Credentials, Registry, RegistryError
from pipeline.tools.registry.retries import LAB_RETRIES, RetryPolicy

TRUSTED_MODES = ("main", "nightly")
ATTESTATION_TYPE = "application/vnd.sjtuhpc.factory.staging-attestation.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
EMPTY_LAYER = ("application/vnd.oci.empty.v1+json",
               "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a", b"{}")


class StagingUnavailable(RuntimeError):
    """Staging cannot be used: no login, no key; the message says what to set."""


@dataclass(frozen=True, repr=False)
class Staging:
    trusted: bool
    registry: str  # host:port
    namespace: str  # image repositories go under it
    os_repository: str
    credentials: Credentials
    key: bytes | None  # the attestation key: trusted staging only

    def client(self, policy: RetryPolicy = LAB_RETRIES, log=None) -> Registry:
        return Registry(self.registry, self.credentials, policy, log=log)

    def repository(self, repository: str) -> str:
        return f"{self.namespace}/{repository}"

    @staticmethod
    def tag(build_id: str, arch: str) -> str:
        """The staging tag of an image: its effective build_id (shortened) and arch."""
        return f"{build_id[:32]}-{arch}"

    def reference(self, repository: str, tag_or_digest: str) -> str:
        sep = "@" if tag_or_digest.startswith("sha256:") else ":"
        return f"{self.registry}/{self.repository(repository)}{sep}{tag_or_digest}"

    def __repr__(self) -> str:  # no password, no key
        return (f"Staging(trusted={self.trusted}, registry={self.registry!r}, "
                f"namespace={self.namespace!r})")

    # -- attestations ---------------------------------------------------------------------
    def _mac(self, record: bytes) -> str:
        assert self.key is not None
        return hmac.new(self.key, record, hashlib.sha256).hexdigest()

    def attest(self, registry: Registry, repository: str, tag: str, digest: str,
               build_id: str, job_id: str) -> None:
        """Record that this trusted run staged ``digest`` for ``job_id`` at ``build_id``."""
        if not self.trusted:
            return
        record = _record(repository, tag, digest, build_id, job_id)
        config = registry.upload_bytes(repository, record)
        empty = registry.upload_bytes(repository, EMPTY_LAYER[2])
        manifest = {
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": ATTESTATION_TYPE, "digest": config, "size": len(record)},
            "layers": [{"mediaType": EMPTY_LAYER[0], "digest": empty, "size": 2}],
            "annotations": {f"{FACTORY}.attestation": self._mac(record)},
        }
        registry.put_manifest(repository, f"{tag}.att",
                              json.dumps(manifest, separators=(",", ":")).encode(), OCI_MANIFEST)

    def distrust(self, registry: Registry, repository: str, tag: str, digest: str,
                 build_id: str, job_id: str) -> str | None:
        """Why the staged ``digest`` may not be used for ``job_id``, or None when it may.

        Trusted staging: a valid attestation for exactly this digest, build_id and job, and
        the image's labels agree.  pr staging: the labels agree.
        """
        try:
            labels = image_labels(registry, repository, digest)
        except (RegistryError, KeyError, ValueError) as err:
            return f"cannot read the labels of {repository}@{digest}: {err}"
        if labels.get(BUILD_ID) != build_id or labels.get(f"{FACTORY}.id") != job_id:
            return (f"its labels say {labels.get(f'{FACTORY}.id')!r} at build_id "
                    f"{str(labels.get(BUILD_ID))[:12]}, not {job_id} at {build_id[:12]}")
        if not self.trusted:
            return None
        return self._attestation_problem(registry, repository, tag,
                                         _record(repository, tag, digest, build_id, job_id))

    def distrust_artifact(self, registry: Registry, repository: str, tag: str, digest: str,
                          build_id: str, job_id: str) -> str | None:
        """``distrust`` for an artifact without image labels (a staged SIF): trusted staging
        needs the attestation; pr staging trusts nothing (pr runs never publish)."""
        if not self.trusted:
            return "pr staging is never published from"
        return self._attestation_problem(registry, repository, tag,
                                         _record(repository, tag, digest, build_id, job_id))

    def _attestation_problem(self, registry: Registry, repository: str, tag: str,
                             expected: bytes) -> str | None:
        """Why the attestation of ``repository:tag`` does not vouch for the ``expected``
        record, or None when it does."""
        found = registry.manifest(repository, f"{tag}.att")
        if found is None:
            return "no attestation: it was not staged by a trusted (main/nightly) run"
        try:
            manifest = json.loads(found[0])
            record = registry.blob_bytes(repository, manifest["config"]["digest"])
            mac = manifest["annotations"][f"{FACTORY}.attestation"]
        except (KeyError, ValueError, TypeError, RegistryError):
            return "its attestation cannot be read"
        if not hmac.compare_digest(mac, self._mac(record)):
            return "its attestation is not signed with this factory's staging key"
        if record != expected:
            return "its attestation is for another image, build_id or job"
        return None


def _record(repository: str, tag: str, digest: str, build_id: str, job_id: str) -> bytes:
    return json.dumps({"repository": repository, "tag": tag, "digest": digest,
                       "build_id": build_id, "job": job_id}, sort_keys=True,
                      separators=(",", ":")).encode()


# -- where staging is --------------------------------------------------------------------
def credentials_file(lab_dir: Path, trusted: bool) -> Path:
    return lab_dir / ("registry" if trusted else "registry-pr") / "credentials.json"


def key_file(lab_dir: Path) -> Path:
    return lab_dir / "registry" / "attestation.key"


def read_credentials(path: Path) -> Credentials:
    data = json.loads(path.read_text())
    return Credentials(data["username"], data["password"], f"the lab's login file {path}", "")


def ensure_key(lab_dir: Path) -> bytes:
    """The lab's attestation key, made on first use (0600, beside the trusted login)."""
    path = key_file(lab_dir)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_private(path, secrets.token_hex(32) + "\n")
    return path.read_text().strip().encode()


def staging_for(mode: str, lab_dir: Path, lab_registry: str, lab_pr_registry: str,
                env: dict | None = None) -> Staging:
    """The staging a run of ``mode`` uses (see the module's table)."""
    env = os.environ if env is None else env
    trusted = mode in TRUSTED_MODES
    where = env.get("PIPELINE_STAGING" if trusted else "PIPELINE_PR_STAGING") or (
        lab_registry if trusted else lab_pr_registry)
    # HOST[:PORT][/PATH]: a forge registry puts a project's images under a path
    # (ghcr.io/OWNER, $CI_REGISTRY_IMAGE); staging's namespaces go below it.
    registry, _, path = where.strip().strip("/").partition("/")
    prefix = f"{path.strip('/')}/" if path.strip("/") else ""
    user, password = env.get("PIPELINE_STAGING_USERNAME"), env.get("PIPELINE_STAGING_PASSWORD")
    if user and password:
        credentials = Credentials(user, password, "PIPELINE_STAGING_USERNAME",
                                  "PIPELINE_STAGING_PASSWORD")
    elif credentials_file(lab_dir, trusted).exists():
        credentials = read_credentials(credentials_file(lab_dir, trusted))
    else:
        credentials = Credentials()  # an open registry; fine for a private one
    key = None
    if trusted:
        given = env.get("PIPELINE_STAGING_KEY")
        key = given.encode() if given else (
            ensure_key(lab_dir) if credentials_file(lab_dir, True).exists() else None)
        if key is None:
            raise StagingUnavailable(
                "trusted staging needs an attestation key: set PIPELINE_STAGING_KEY (CI) or "
                "run `python -m pipeline lab up`")
    return Staging(trusted, registry,
                   prefix + ("factory-staging" if trusted else "factory-staging-pr"),
                   prefix + ("factory/os" if trusted else "factory-pr/os"), credentials, key)


def target_credentials(given: Credentials, target_registry: str, lab_dir: Path,
                       lab_registry: str) -> Credentials:
    """The login for a publish target: the environment's, else the lab's own for the lab's
    trusted registry (the ``local`` target), else none (a registry that allows it)."""
    if given.given or target_registry != lab_registry:
        return given
    path = credentials_file(lab_dir, True)
    return read_credentials(path) if path.exists() else given
