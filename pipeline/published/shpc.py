"""singularity-hpc registry entries for what the catalogue lists.

shpc (singularity-hpc) installs a container as a module from a *registry*: a folder per
module, named after it, holding a ``container.yaml``.  The factory writes one per repository,
``registry/<repository>/container.yaml``, so a site adds the folder as a registry
(``shpc config add registry DIR/registry``) and runs
``shpc install sjtuhpc/hpc-app-container:lammps-gnu-2022`` unchanged.

What goes where (shpc's ``containerConfig`` schema; the tests validate every file with it):

- ``docker``: ``<registry>/<repository>`` (no host for docker.io, shpc's default); ``tags``
  maps each moving tag to its multi-arch list's digest, and shpc pulls
  ``docker://<docker>@<digest>``: by digest, Apptainer picking the host's platform.
- ``latest`` (shpc wants exactly one): the tag created last, ties broken by the highest tag.
- ``aliases``: the image's commands, each to itself (the catalogue names commands; shpc runs
  an alias's value inside the container, where PATH finds it), or a path's base name to the
  path.
- ``features: {gpu: true}`` for images with CUDA: the site's shpc settings
  (``container_features: gpu: nvidia``) turn it into ``--nv``.
- One repository holds several images (lammps, gromacs, ... in the app repository, base and
  CUDA tags in the base one), but shpc has one set of aliases per entry.  The entry's own
  aliases, description and features are those of ``latest``; every tag that differs gets an
  *override file* (shpc's ``overrides: {tag: file}``, ``<tag>.yml`` beside ``container.yaml``) with
  its own, all three keys complete: shpc replaces a key, never merges, and it adds ``--nv``
  for any ``gpu`` key, even ``false``, so a CPU tag overrides ``features`` with ``{}``.
- SIFs: a tag built from a ``recipe.def`` has no Docker image (``reference`` null), so it
  cannot be a ``docker:`` tag.  Each SIF repository (``<repository>-sif``) gets an entry of its
  own with ``oras: <registry>/<repository>-sif`` and ``tags`` mapping ``<tag>-<arch>`` to
  the SIF's manifest digest (shpc pulls ``oras://<oras>@<digest>``).  It lists every SIF, not
  only those tags': the SIF is the artifact the factory tested, which a site may prefer to
  shpc converting the Docker image itself.

shpc pastes descriptions, URLs, alias names and commands into Lua and Tcl modulefiles
unquoted, so what comes from the catalogue (registry labels: untrusted) is reduced to what
cannot break out of those strings: tags and digests as the OCI grammar has them, commands
as plain names or paths, free text without quotes, brackets, braces, ``$`` or backslashes.
An image or command that does not fit is left out rather than escaped.

The runtime code does not import shpc (a test dependency only); it writes plain YAML.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path, PurePosixPath

import yaml

from pipeline.published.html import natural_key

MAINTAINER = "hpc-container-factory"
TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
REPOSITORY = re.compile(r"[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*")
# A name, or an absolute path; no segment starts with a dot (no "..").
COMMAND = re.compile(r"[A-Za-z0-9_+-][A-Za-z0-9._+-]*|(?:/[A-Za-z0-9_+-][A-Za-z0-9._+-]*)+")


def write_entries(catalog: dict, out: Path) -> list[Path]:
    """Write ``out/registry/<repository>/container.yaml`` (and its override files) per
    repository; return every file written, in order."""
    registry = str((catalog.get("target") or {}).get("registry") or "")
    docker: dict[str, list[tuple[str, str, dict]]] = defaultdict(list)
    oras: dict[str, list[tuple[str, str, dict]]] = defaultdict(list)
    for image in catalog.get("images") or ():
        repository, tag = str(image.get("repository", "")), str(image.get("tag", ""))
        if not (REPOSITORY.fullmatch(repository) and TAG.fullmatch(tag)):
            continue
        digest = str(image.get("digest") or "")
        if image.get("reference") and DIGEST.fullmatch(digest):
            docker[repository].append((tag, digest, image))
        for arch, entry in sorted((image.get("arches") or {}).items()):
            sif = (entry or {}).get("sif") or {}
            sif_repository, manifest = str(sif.get("repository", "")), str(sif.get("manifest"))
            sif_tag = f"{tag}-{arch}"
            if (REPOSITORY.fullmatch(sif_repository) and DIGEST.fullmatch(manifest)
                    and TAG.fullmatch(sif_tag)):
                oras[sif_repository].append((sif_tag, manifest, image))
    written = []
    for kind, entries in (("docker", docker), ("oras", oras)):
        for repository, tags in sorted(entries.items()):
            uri = repository if registry in ("", "docker.io") and kind == "docker" \
                else f"{registry}/{repository}"
            written += _write_entry(out / "registry" / repository, kind, uri, tags)
    _remove_stale(out / "registry", written)
    return written


def _remove_stale(root: Path, written: list[Path]) -> None:
    """An entry or override file of an earlier catalogue that this one no longer has goes:
    a site's shpc must not offer a tag that is gone.  Only the files this module writes."""
    keep = {p.resolve() for p in written}
    for path in sorted(root.rglob("*"), reverse=True):
        if path.is_file() and (path.name == "container.yaml" or path.suffix == ".yml") \
                and path.resolve() not in keep:
            path.unlink()
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()


def _write_entry(folder: Path, kind: str, uri: str, tags: list[tuple[str, str, dict]]
                 ) -> list[Path]:
    tags = sorted(tags, key=lambda t: t[0])
    latest_tag, latest_digest, latest_image = max(
        tags, key=lambda t: (str(t[2].get("created") or ""), natural_key(t[0])))
    own = _module_keys(latest_image)
    overrides, written = {}, []
    folder.mkdir(parents=True, exist_ok=True)
    for tag, _, image in tags:
        keys = _module_keys(image)
        if keys != own:
            # .yml: shpc takes any file whose path matches "container.yaml" for an entry
            name = f"{tag}.yml"
            written.append(_write_yaml(folder / name, keys))
            overrides[tag] = name
    source = latest_image.get("source") or {}
    entry = {
        kind: uri,
        "url": _plain(source.get("url") or ""),
        "maintainer": MAINTAINER,
        "description": own["description"],
        "latest": {latest_tag: latest_digest},
        "tags": {tag: digest for tag, digest, _ in tags},
        "aliases": own["aliases"],
    }
    if not entry["url"]:
        del entry["url"]
    if own["features"]:
        entry["features"] = own["features"]
    if overrides:
        entry["overrides"] = overrides
    return [_write_yaml(folder / "container.yaml", entry), *written]


def _module_keys(image: dict) -> dict:
    """What shpc lets an override file change, as this image has it."""
    aliases = {}
    for command in map(str, image.get("commands") or ()):
        name = PurePosixPath(command).name
        if COMMAND.fullmatch(command):
            aliases.setdefault(name, command)
    cuda = str((image.get("variables") or {}).get("cuda") or "none")
    gpu = image.get("kind") == "gpu" or cuda != "none"
    return {"description": _plain(image.get("description") or image.get("name") or ""),
            "aliases": aliases, "features": {"gpu": True} if gpu else {}}


def _plain(text) -> str:
    """One line of text that cannot end the Lua/Tcl string shpc pastes it into."""
    text = str(text).replace('"', "'")
    text = re.sub(r"[\\$`\[\]{}]", "", text)
    return " ".join(text.split())


def _write_yaml(path: Path, data: dict) -> Path:
    text = "# Written by the factory from catalog.json (pipeline/published/shpc.py).\n"
    text += yaml.safe_dump(data, sort_keys=False, default_flow_style=False, width=100)
    if not path.is_file() or path.read_text() != text:
        partial = path.with_name(path.name + ".partial")
        partial.write_text(text)
        partial.replace(path)
    return path
