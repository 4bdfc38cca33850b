"""SIFs mirrored by digest onto the site folder, each checked before it is put in place.

For each wanted tag and arch (``selection.py``), in the catalogue's order, one at a time:

1. already here: the file at its place (``layout.sif_path``, named by the digest) has the
   catalogue's size and sha256 (hashed once, then remembered in a ``.digest`` stamp beside
   it while the file is not newer than the stamp): nothing is downloaded;
2. the SIF's manifest is read by digest (``<sif.repository>@<sif.manifest>``, never the
   moving tag), and its SIF layer must be the catalogue's blob and size: a catalogue and a
   registry that disagree are refused before a byte of the SIF is fetched;
3. the blob is downloaded by digest into ``<final>.part`` (``transfer.py``: resumed with a
   Range request, hashed while it streams); a sha256 other than the catalogue's removes the
   part file and refuses that SIF, naming the reference and both digests (a resumed file is
   first downloaded whole once more, in case the part left before was not this blob's);
4. a signed SIF is verified with the catalogue's public key (``signatures.py``);
5. ``os.replace`` moves it into place: a reader sees no file or the whole one.

A failure of one SIF is reported and the others go on.  A registry that stays unreachable
past the retries (or refuses the login) stops the pull: the SIFs not tried yet are listed as
such.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.cluster.access import Access, unreachable
from pipeline.cluster.layout import sif_path
from pipeline.cluster.progress import MB, Bars
from pipeline.cluster.selection import Wanted
from pipeline.cluster.signatures import Verifier
from pipeline.cluster.transfer import TooBig, fetch
from pipeline.errors import EXIT_INFRASTRUCTURE, EXIT_JOB_FAILED, EXIT_PASSED
from pipeline.tools.digests import cached_sha256_file, remember_sha256
from pipeline.tools.oci_artifacts import SIF_LAYER
from pipeline.tools.registry.client import Registry, RegistryAuthError, RegistryError

DOWNLOADED = "downloaded"
IMPORTED = "imported"
HERE = "already here"
NOT_BUILT = "not built"
NO_SIF = "no SIF"
FAILED = "failed"
REFUSED = "refused"
NOT_TRIED = "not tried"
PRESENT = (DOWNLOADED, IMPORTED, HERE)


class Refused(Exception):
    """The SIF is not what the catalogue says; nothing of it is placed."""


@dataclass(frozen=True)
class Row:
    """One line of the report: a tag and arch, what happened, where the SIF is or why not."""

    repository: str
    tag: str
    arch: str
    result: str
    path: Path | None = None
    reason: str = ""

    @classmethod
    def of(cls, wanted: Wanted, result: str, path: Path | None = None, reason: str = ""
           ) -> Row:
        return cls(wanted.image["repository"], wanted.image["tag"], wanted.arch, result,
                   path, reason)

    @property
    def ok(self) -> bool:
        return self.result in (*PRESENT, NOT_BUILT)


@dataclass
class Outcome:
    rows: list[Row] = field(default_factory=list)
    stopped: str | None = None  # why the pull stopped early (the registry failed)
    unreachable: bool = False  # it stopped because the registry could not be reached

    def exit_code(self) -> int:
        """4: the registry could not be reached; 1: a selected SIF is not in place; else 0."""
        if self.unreachable:
            return EXIT_INFRASTRUCTURE
        return EXIT_PASSED if all(row.ok for row in self.rows) else EXIT_JOB_FAILED

    def kept(self) -> dict[tuple[str, str], set[str]]:
        """The tags and arches whose SIF is in place."""
        kept: dict[tuple[str, str], set[str]] = {}
        for row in self.rows:
            if row.result in PRESENT:
                kept.setdefault((row.repository, row.tag), set()).add(row.arch)
        return kept


@dataclass(frozen=True)
class Mirror:
    """What a pull needs besides the catalogue: the site folder and the means."""

    dest: Path
    access: Access
    verifier: Verifier
    bars: Bars
    say: Callable[[str], None]  # messages for the console


def pull(catalog: dict, wanted: list[Wanted], mirror: Mirror) -> Outcome:
    """Bring every wanted SIF into ``mirror.dest`` (see the module's steps)."""
    outcome = Outcome()
    registry: Registry | None = None
    for item in wanted:
        if item.not_built:
            outcome.rows.append(Row.of(item, NOT_BUILT, reason=f"the catalogue has no "
                                       f"{item.arch} entry for this tag"))
            continue
        if item.sif is None:
            outcome.rows.append(Row.of(item, NO_SIF, reason=(item.entry or {}).get(
                "sif_missing") or "no SIF is published for this arch"))
            continue
        final = sif_path(mirror.dest, item.image, item.arch)
        if in_place(final, item.sif, mirror.say):
            outcome.rows.append(Row.of(item, HERE, final))
        elif outcome.stopped:
            outcome.rows.append(Row.of(item, NOT_TRIED, reason=outcome.stopped))
        else:
            registry = registry or mirror.access.registry(catalog["target"]["registry"],
                                                          log=mirror.say)
            row, error = _try(item, final, registry, catalog.get("signing"), mirror)
            outcome.rows.append(row)
            if unreachable(error) or isinstance(error, RegistryAuthError):
                outcome.stopped = f"not tried: {registry.host} failed before it"
                outcome.unreachable = unreachable(error)
    return outcome


def _try(item: Wanted, final: Path, registry: Registry, signing: dict | None,
         mirror: Mirror) -> tuple[Row, RegistryError | None]:
    """The row of one download, and the registry's error when it failed on one."""
    try:
        return _download(item, final, registry, signing, mirror), None
    except Refused as err:
        return Row.of(item, REFUSED, reason=str(err)), None
    except RegistryError as err:
        return Row.of(item, FAILED, reason=str(err)), err


def in_place(final: Path, sif: dict, say=lambda line: None) -> bool:
    """The SIF is at ``final`` with the catalogue's size and digest (stamped once hashed)."""
    if not final.is_file():
        return False
    if final.stat().st_size == sif["size"] and cached_sha256_file(final) == sif["blob"]:
        return True
    say(f"{final} is not the SIF it is named after (size or sha256 differ); fetching it again")
    return False


def _download(item: Wanted, final: Path, registry: Registry, signing: dict | None,
              mirror: Mirror) -> Row:
    sif = item.sif
    where = f"{registry.host}/{sif['repository']}@{sif['manifest']}"
    _check_manifest(registry, sif, where)
    final.parent.mkdir(parents=True, exist_ok=True)
    part = final.with_name(final.name + ".part")
    label = f"{item.label} {item.arch}"
    try:
        fetched = fetch(registry, sif["repository"], sif["blob"], sif["size"], part,
                        mirror.bars.file(label, sif["size"]))
        if fetched.digest != sif["blob"] and fetched.resumed_from:
            mirror.say(f"{label}: the resumed download hashes to {fetched.digest}, not "
                       f"{sif['blob']}; downloading it whole once more")
            part.unlink()
            fetched = fetch(registry, sif["repository"], sif["blob"], sif["size"], part,
                            mirror.bars.file(label, sif["size"]))
    except TooBig as err:
        part.unlink(missing_ok=True)
        raise Refused(f"{where}: {err}; nothing was replaced") from None
    if fetched.digest != sif["blob"]:
        part.unlink()
        raise Refused(f"{where}: the SIF arrived with {fetched.digest}, but the catalogue "
                      f"says {sif['blob']}; refused, nothing was replaced")
    note = _verify(part, sif, signing, mirror.verifier)
    if note:
        mirror.say(f"{label}: {note}")
    os.replace(part, final)
    remember_sha256(final, sif["blob"])
    if fetched.resumed_from:
        note = "; ".join(filter(None, [f"resumed at {fetched.resumed_from / MB:.0f} MB", note]))
    return Row.of(item, DOWNLOADED, final, note)


def _check_manifest(registry: Registry, sif: dict, where: str) -> None:
    found = registry.manifest(sif["repository"], sif["manifest"])
    if found is None:
        raise RegistryError(f"{where} is not in the registry (removed since the catalogue was "
                            "written?); write the catalogue again")
    try:
        layers = [layer for layer in json.loads(found[0]).get("layers", [])
                  if layer.get("mediaType") == SIF_LAYER]
    except (ValueError, AttributeError):
        layers = []
    if len(layers) != 1:
        raise Refused(f"{where} is not a SIF artifact (no single {SIF_LAYER} layer)")
    layer = layers[0]
    if layer.get("digest") != sif["blob"] or layer.get("size") != sif["size"]:
        raise Refused(f"{where}: its SIF layer is {layer.get('digest')} ({layer.get('size')} "
                      f"bytes) but the catalogue says {sif['blob']} ({sif['size']} bytes); the "
                      "catalogue and the registry disagree: refused")


def _verify(path: Path, sif: dict, signing: dict | None, verifier: Verifier) -> str:
    """A note for the report; Refused (and ``path`` removed) when the signature is bad."""
    if not sif.get("signed"):
        return ""
    if not signing:
        return "signed, but the catalogue carries no public key: signature not checked"
    problem = verifier.problem(path, signing)
    if problem:
        path.unlink(missing_ok=True)
        raise Refused(f"{sif['repository']}@{sif['manifest']}: {problem}; nothing was "
                      "replaced")
    return f"signature verified ({signing['fingerprint']})"
