"""The published catalogue a cluster command starts from: a file, a URL or an OCI reference.

``--catalog`` is read as

* an ``http://`` or ``https://`` URL: fetched with requests, retried like registry requests
  (429 after its ``Retry-After``, 5xx and dropped connections, with backoff);
* an existing file;
* otherwise an OCI reference, ``HOST[:PORT]/NAMESPACE/catalog:TAG`` (or ``@sha256:...``,
  with or without ``oras://``): the artifact ``python -m pipeline catalog`` pushes,
  pulled with the registry's login (``access.py``).

Only schema 1 is read, checked against its JSON schema (``published/catalog.schema.json``).
The catalogue comes from elsewhere and its fields become paths under the site folder
(``layout.py``: repository, tag, name, the blob's digest, the module and the commands), so
each of those must keep to its grammar before anything is written: a catalogue that names
``../../etc`` is refused, not followed.
"""

from __future__ import annotations

import json
import re
from http import HTTPStatus
from pathlib import Path

import requests
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, stop_after_delay

from pipeline.cluster.access import Access, unreachable
from pipeline.errors import InputError, Problem, Problems
from pipeline.published.artifact import pull_catalog, split_catalog_reference
from pipeline.published.catalog import SCHEMA, catalog_problems
from pipeline.tools.registry.client import RegistryError
from pipeline.tools.registry.retries import Transient, WaitOrRetryAfter, retry_after

# One path component that is neither '.' nor '..' nor hidden; the schema (helper of
# ``published``) gives repositories, tags, digests and arches their own grammar.
NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._+-]*")


class CatalogUnreachable(RuntimeError):
    """The catalogue's URL or registry could not be read (after retries)."""


def read(where: str, access: Access, log=None) -> tuple[dict, bytes]:
    """The catalogue at ``where`` (checked) and its bytes as they were read."""
    if where.startswith(("http://", "https://")):
        raw = _from_url(where, access)
    elif Path(where).is_file():
        raw = Path(where).read_bytes()
    elif _looks_like_reference(where):
        raw = _from_registry(where.removeprefix("oras://"), access, log)
    else:
        raise InputError([Problem("--catalog", None, f"'{where}' is neither a file, an "
                                  "http(s) URL nor an OCI reference (HOST/NAMESPACE/catalog:"
                                  "TAG)")])
    return parse(raw, where), raw


def parse(raw: bytes, origin: str) -> dict:
    """The catalogue in ``raw``; InputError naming ``origin`` when it is not one we read."""
    try:
        catalog = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as err:
        raise InputError([Problem(origin, getattr(err, "lineno", None),
                                  f"not a catalogue: not JSON ({err})")]) from None
    if not isinstance(catalog, dict) or "schema" not in catalog:
        raise InputError([Problem(origin, None, "not a catalogue: no 'schema' (write it with "
                                  "`python -m pipeline catalog`)")])
    if catalog["schema"] != SCHEMA:
        raise InputError([Problem(origin, None, f"catalogue schema {catalog['schema']!r}: this "
                                  f"factory reads schema {SCHEMA} only; use a factory of the "
                                  "same version as the one that published it")])
    problems = Problems(origin)
    for problem in catalog_problems(catalog):
        problems.add(None, problem)
    problems.raise_if_any()  # the shape first: the checks below rely on it
    for number, image in enumerate(catalog["images"]):
        _check_paths(image, f"images[{number}]", problems)
    problems.raise_if_any()
    return catalog


def _check_paths(image: dict, where: str, problems: Problems) -> None:
    """The schema's patterns leave the name and the module's parts free; they become
    folder and file names (``containers/.../<name>-<hex>.sif``, ``modules/<name>/...``)."""
    parts = [image["name"], *image["module"].split("/")]
    bad = [part for part in parts if not NAME.fullmatch(part)]
    if bad:
        problems.add(None, f"{where} ({image['repository']}:{image['tag']}): {bad[0]!r} "
                     "cannot be a file name (name and module must be letters, digits, '.', "
                     "'_', '+', '-', not starting with '.' or '-')")


def _looks_like_reference(where: str) -> bool:
    first = where.removeprefix("oras://").split("/", 1)[0]
    return "/" in where and ("." in first or ":" in first or first == "localhost")


def _from_url(url: str, access: Access) -> bytes:
    policy = access.policy

    def attempt() -> bytes:
        try:
            response = requests.get(url, timeout=(10, 120))
        except requests.RequestException as err:
            raise Transient(f"GET {url}: connection failed ({type(err).__name__})") from None
        if response.status_code == HTTPStatus.TOO_MANY_REQUESTS or \
                response.status_code >= HTTPStatus.INTERNAL_SERVER_ERROR:
            raise Transient(f"GET {url}: HTTP {response.status_code}",
                            retry_after(response.headers))
        if response.status_code != HTTPStatus.OK:
            raise InputError([Problem("--catalog", None, f"{url} answered HTTP "
                                      f"{response.status_code}; check the URL")])
        return response.content

    try:
        return Retrying(retry=retry_if_exception_type(Transient), reraise=True,
                        wait=WaitOrRetryAfter(policy),
                        stop=stop_after_attempt(policy.attempts)
                        | stop_after_delay(policy.total_seconds))(attempt)
    except Transient as err:
        raise CatalogUnreachable(f"{err}; gave up after retries") from None


def _from_registry(reference: str, access: Access, log) -> bytes:
    try:
        host, _, _ = split_catalog_reference(reference)
        return pull_catalog(access.registry(host, log), reference)
    except (KeyError, ValueError) as err:  # not there, or not a catalogue artifact
        raise InputError([Problem("--catalog", None, str(err).strip("'\""))]) from None
    except RegistryError as err:
        if unreachable(err):
            raise CatalogUnreachable(f"cannot read the catalogue {reference}: {err}") from None
        raise InputError([Problem("--catalog", None, f"cannot read the catalogue {reference}: "
                                  f"{err}")]) from None
