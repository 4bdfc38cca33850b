"""Bundles: the SIFs of a selection in one tar, for a site that cannot reach the registry.

A bundle is a plain tar laid out like the site folder (``layout.py``), so that
``tar xf`` and ``sha256sum -c SHA256SUMS`` check it by hand::

    SHA256SUMS                 first: "<hex>  <name>" for every other member
    catalog.json               the catalogue slice of what the bundle carries
    catalog.json.sha256        "<hex>  catalog.json"
    keys/<fingerprint>.asc     the factory's public key, when the SIFs are signed
    containers/<repository>/<tag>/<name>-<hex>.sif

``import`` trusts nothing in it until everything is checked: it reads the tar member by
member into a staging folder inside the site folder (the same filesystem, so placing is a
rename), refusing any name that is not one of the above (absolute, ``..``, backslashes,
anything else), any member that is not a regular file (links, devices), duplicates, and
any member whose sha256 is not the one ``SHA256SUMS`` lists.  Then the slice: its own
sha256, its schema and fields (``source.parse``), every SIF it lists present with the
catalogue's digest and size, no SIF it does not list, and the signatures of signed SIFs
with the slice's key.  Only then is anything placed; any problem removes the staging
folder and leaves the site as it was.

What the sums prove: that the bundle is the one ``bundle`` wrote, unless whoever changed it
also rewrote the sums.  Signed SIFs are checked against the factory's key; for unsigned
ones, compare ``catalog.json``'s entries with the published catalogue when in doubt.
"""

from __future__ import annotations

import hashlib
import io
import re
import shutil
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from pipeline.cluster import source
from pipeline.cluster.layout import CATALOG, CONTAINERS, KEYS, sif_path
from pipeline.cluster.mirror import HERE, IMPORTED, Row, in_place
from pipeline.cluster.signatures import Verifier
from pipeline.errors import InputError, Problem
from pipeline.published.catalog import CHECKSUM, catalog_bytes
from pipeline.tools.digests import remember_sha256, sha256_bytes
from pipeline.tools.registry.client import CHUNK

SUMS = "SHA256SUMS"
CATALOG_SUM = CHECKSUM
MAX_SMALL = 64 << 20  # SHA256SUMS, catalog.json, a key: never this big
# Folders and files named like the catalogue's (one component each, never '.' or '..');
# which SIFs exactly is checked against the slice afterwards.
_SIF_NAME = re.compile(rf"{CONTAINERS}/(?:{source.NAME.pattern}/)+{source.NAME.pattern}"
                       r"-[0-9a-f]{64}\.sif")
_KEY_NAME = re.compile(rf"{KEYS}/{source.NAME.pattern}\.asc")
_SUM_LINE = re.compile(r"([0-9a-f]{64}) [ *](.+)")


@dataclass(frozen=True)
class Member:
    name: str
    sha256: str  # hex
    path: Path | None = None  # a file to copy, or
    content: bytes = b""  # its bytes


# -- writing ------------------------------------------------------------------------------
def write(out: Path, staging: Path, slice_: dict) -> Path:
    """Write the bundle of ``slice_``, whose SIFs are in ``staging`` (checked by the pull),
    to ``out``, through ``out.part`` renamed at the end."""
    catalog = catalog_bytes(slice_)
    members = [Member(CATALOG, _hex(catalog), content=catalog)]
    catalog_sum = f"{_hex(catalog)}  {CATALOG}\n".encode()
    members.append(Member(CATALOG_SUM, _hex(catalog_sum), content=catalog_sum))
    signing = slice_.get("signing")
    if signing:
        key = signing["public_key"].encode()
        members.append(Member(f"{KEYS}/{signing['fingerprint']}.asc", _hex(key), content=key))
    for image in slice_["images"]:
        for arch, entry in image["arches"].items():
            path = sif_path(staging, image, arch)
            members.append(Member(path.relative_to(staging).as_posix(),
                                  entry["sif"]["blob"].removeprefix("sha256:"), path))
    sums = "".join(f"{m.sha256}  {m.name}\n" for m in members).encode()
    partial = out.with_name(out.name + ".part")
    with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as tar:
        for member in [Member(SUMS, _hex(sums), content=sums), *members]:
            _add(tar, member)
    partial.replace(out)
    return out


def _add(tar: tarfile.TarFile, member: Member) -> None:
    info = tarfile.TarInfo(member.name)
    info.mode, info.mtime = 0o644, int(time.time())
    if member.path is not None:
        info.size = member.path.stat().st_size
        with open(member.path, "rb") as handle:
            tar.addfile(info, handle)
    else:
        info.size = len(member.content)
        tar.addfile(info, io.BytesIO(member.content))


# -- importing ----------------------------------------------------------------------------
class Unpacked:
    """A bundle read into ``staging``, every member checked against ``SHA256SUMS``."""

    def __init__(self, tar_path: Path, staging: Path):
        self.tar_path, self.staging = tar_path, staging
        self.sums: dict[str, str] = {}
        self._seen: set[str] = set()

    def refuse(self, message: str) -> InputError:
        return InputError([Problem(str(self.tar_path), None,
                                   f"{message}; nothing was imported")])

    def read(self) -> None:
        try:
            tar = tarfile.open(self.tar_path, "r:*")
        except (tarfile.TarError, OSError) as err:
            raise self.refuse(f"not a tar file ({err})") from None
        with tar:
            try:
                self._members(tar)
            except tarfile.TarError as err:
                raise self.refuse(f"the tar is damaged ({err})") from None
        missing = sorted(set(self.sums) - self._seen)
        if missing:
            raise self.refuse(f"{SUMS} lists {missing[0]}, which the tar does not hold")

    def _members(self, tar: tarfile.TarFile) -> None:
        first = tar.next()
        if first is None or first.name != SUMS or not first.isreg():
            raise self.refuse(f"not a bundle of `cluster bundle`: its first member is not {SUMS}")
        self.sums = self._parse_sums(self._small(tar, first))
        while (member := tar.next()) is not None:
            self._check_name(member)
            if member.isdir():
                continue
            if member.name in self._seen:
                raise self.refuse(f"{member.name} is in the tar twice")
            self._seen.add(member.name)
            target = self.staging / member.name
            target.parent.mkdir(parents=True, exist_ok=True)
            digest = hashlib.sha256()
            with tar.extractfile(member) as stream, open(target, "wb") as out:
                while chunk := stream.read(CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
            if digest.hexdigest() != self.sums[member.name]:
                raise self.refuse(f"{member.name} has sha256 {digest.hexdigest()}, but {SUMS} "
                                  f"says {self.sums[member.name]}: the bundle was changed or "
                                  "damaged")

    def _check_name(self, member: tarfile.TarInfo) -> None:
        name = member.name
        path = PurePosixPath(name)
        if path.is_absolute() or ".." in path.parts or "\\" in name:
            raise self.refuse(f"member {name!r} points outside the folder it is unpacked to")
        if member.isdir():
            return
        if not member.isreg():
            raise self.refuse(f"member {name!r} is a link or special file; a bundle holds "
                              "regular files only")
        if name not in self.sums:
            raise self.refuse(f"member {name!r} is not listed in {SUMS}")

    def _small(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
        if member.size > MAX_SMALL:
            raise self.refuse(f"{member.name} is {member.size} bytes: not a bundle's")
        with tar.extractfile(member) as stream:
            return stream.read()

    def _parse_sums(self, text: bytes) -> dict[str, str]:
        sums: dict[str, str] = {}
        for number, line in enumerate(text.decode("utf-8", "replace").splitlines(), 1):
            found = _SUM_LINE.fullmatch(line)
            if not found or not _allowed(found.group(2)) or found.group(2) in sums:
                raise self.refuse(f"{SUMS} line {number} is not '<sha256 hex>  <name>' for a "
                                  f"member a bundle holds: {line[:120]!r}")
            sums[found.group(2)] = found.group(1)
        if CATALOG not in sums or CATALOG_SUM not in sums:
            raise self.refuse(f"{SUMS} does not list {CATALOG} and {CATALOG_SUM}")
        return sums

    def slice(self, verifier: Verifier) -> dict:
        """The checked catalogue slice (see the module's list)."""
        catalog = (self.staging / CATALOG).read_bytes()
        listed = (self.staging / CATALOG_SUM).read_text(errors="replace").split()
        if not listed or listed[0].removeprefix("sha256:") != _hex(catalog):
            raise self.refuse(f"{CATALOG} does not have the sha256 {CATALOG_SUM} gives")
        slice_ = source.parse(catalog, f"{self.tar_path}:{CATALOG}")
        expected = set()
        for image in slice_["images"]:
            for arch, entry in image["arches"].items():
                if entry.get("sif"):
                    expected.add(self._check_sif(image, arch, entry["sif"]))
        extra = sorted(n for n in self.sums if n.startswith(f"{CONTAINERS}/") and
                       n not in expected)
        if extra:
            raise self.refuse(f"{extra[0]} is not a SIF of the bundle's {CATALOG}")
        self._check_signatures(slice_, verifier)
        return slice_

    def _check_sif(self, image: dict, arch: str, sif: dict) -> str:
        name = sif_path(self.staging, image, arch).relative_to(self.staging).as_posix()
        label = f"{image['repository']}:{image['tag']} {arch}"
        if name not in self.sums:
            raise self.refuse(f"{CATALOG} lists the SIF of {label}, which the bundle lacks")
        if f"sha256:{self.sums[name]}" != sif["blob"] or \
                (self.staging / name).stat().st_size != sif["size"]:
            raise self.refuse(f"{name} is not the SIF {CATALOG} names for {label} "
                              f"({sif['blob']}, {sif['size']} bytes)")
        return name

    def _check_signatures(self, slice_: dict, verifier: Verifier) -> None:
        signing = slice_.get("signing")
        if signing:
            key = self.staging / KEYS / f"{signing['fingerprint']}.asc"
            if not key.is_file() or key.read_text(errors="replace") != signing["public_key"]:
                raise self.refuse(f"{KEYS}/{signing['fingerprint']}.asc is missing or is not "
                                  f"the key {CATALOG} carries")
        for image in slice_["images"]:
            for arch, entry in image["arches"].items():
                sif = entry.get("sif")
                if sif and sif.get("signed") and signing:
                    problem = verifier.problem(sif_path(self.staging, image, arch), signing)
                    if problem:
                        raise self.refuse(f"the SIF of {image['repository']}:{image['tag']} "
                                          f"{arch}: {problem}")


def import_bundle(tar_path: Path, dest: Path, verifier: Verifier) -> tuple[dict, list[Row]]:
    """Check everything in the bundle, then place its SIFs in ``dest``; (slice, rows)."""
    dest.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".import-", dir=dest))
    try:
        unpacked = Unpacked(tar_path, staging)
        unpacked.read()
        slice_ = unpacked.slice(verifier)
        rows = []
        for image in slice_["images"]:
            for arch, entry in image["arches"].items():
                if entry.get("sif"):
                    rows.append(_place(image, arch, entry["sif"], staging, dest))
        return slice_, rows
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _place(image: dict, arch: str, sif: dict, staging: Path, dest: Path) -> Row:
    final = sif_path(dest, image, arch)
    result = HERE
    if not in_place(final, sif):
        final.parent.mkdir(parents=True, exist_ok=True)
        sif_path(staging, image, arch).replace(final)
        remember_sha256(final, sif["blob"])
        result = IMPORTED
    return Row(image["repository"], image["tag"], arch, result, final)


def _allowed(name: str) -> bool:
    return name in (CATALOG, CATALOG_SUM) or bool(
        _KEY_NAME.fullmatch(name) or _SIF_NAME.fullmatch(name))


def _hex(data: bytes) -> str:
    return sha256_bytes(data).removeprefix("sha256:")
