"""The catalogue's browsable page: ``index.html`` beside ``catalog.json``.

Rendered with Jinja2 from ``templates/index.html.j2``; its stylesheet and script are copied
beside it (``index.css``, ``index.js``), so the folder is the whole site: the page makes no
request outside it (no CDN, no web font), which is what a site behind a firewall can serve
as is.  The Content-Security-Policy in the page says the same to the browser.

Every value in the catalogue comes from registry labels, i.e. from whoever could push a tag:
it is untrusted text.  Autoescaping is on, the template never marks a value safe, and the
script reads commands from the page's text, never from markup.

The page holds no wall-clock time: the same catalogue gives the same bytes, so publishing it
again changes nothing.

Layout, for a cluster user looking for "LAMMPS with Open MPI on Debian 12": one grid per image
name (rows OS x compiler, columns MPI x CUDA), each application's grid right after the grid of
the base it was built FROM, and each application cell linking to that base cell.  A grid
position can hold more than one tag (two versions of one application on the same base); a
*cell* of the page is one tag.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import jinja2

TEMPLATES = Path(__file__).parent / "templates"
TEMPLATE = "index.html.j2"
STATIC = ("index.css", "index.js")

# A test result that makes a tag's status "failed"; "skipped" is not a failure (the reason
# says why: no GPU, no compatible host MPI).
FAILED_RESULTS = frozenset({"failed", "error"})
KIND_ORDER = {"base": 0, "gpu": 1, "app": 2}
MPI_FAMILIES = {"openmpi": "Open MPI", "mpich": "MPICH", "none": "no MPI", "": "no MPI"}


@dataclass(frozen=True)
class Command:
    """One copyable line: what it is for, and the text the copy button copies."""

    label: str
    text: str


@dataclass(frozen=True)
class TestLine:
    name: str
    result: str
    reason: str


@dataclass(frozen=True)
class ArchView:
    """One architecture of a tag, or of the catalogue that this tag was not published for
    (``published`` false)."""

    arch: str
    published: bool
    platform: str = ""
    manifest: str = ""
    build_id: str = ""
    sif: str = ""              # the moving oras:// reference
    sif_immutable: str = ""
    sif_size: str = ""
    signed: bool = False
    sif_missing: str = ""
    tests: tuple[TestLine, ...] = ()

    @property
    def badge(self) -> str:
        """CSS class of the arch badge: a SIF to pull, an image without a SIF, or nothing."""
        if not self.published:
            return "arch-absent"
        return "arch-ok" if self.sif else "arch-nosif"

    @property
    def title(self) -> str:
        if not self.published:
            return f"not published for {self.arch}"
        if not self.sif:
            return self.sif_missing or f"no SIF for {self.arch}"
        counts = defaultdict(int)
        for t in self.tests:
            counts[t.result] += 1
        tests = ", ".join(f"{n} {result}" for result, n in sorted(counts.items()))
        signed = ", signed" if self.signed else ""
        return f"{self.platform}: SIF {self.sif_size}{signed}; tests: {tests or 'none'}"


@dataclass(frozen=True)
class Cell:
    """One published tag."""

    anchor: str
    repository: str
    tag: str
    name: str
    description: str
    status: str                # ok | incomplete | failed: the CSS class is status-<status>
    status_text: str
    arches: tuple[ArchView, ...]
    commands: tuple[Command, ...]
    base: str
    base_anchor: str           # "" when the base is not in this catalogue (an OS image)
    details: tuple[tuple[str, str], ...]
    search: str                # lower-case words the page's filter matches


@dataclass(frozen=True)
class Grid:
    """All the tags of one image name, on rows OS x compiler and columns MPI x CUDA."""

    anchor: str
    name: str
    kind: str
    description: str
    depth: int                 # 0 for a root image, 1 for an image built FROM it, ...
    parent: str                # the name of the image this one is built FROM, or ""
    parent_anchor: str
    rows: tuple[str, ...]
    columns: tuple[tuple[str, str], ...]       # (MPI label, CUDA label or "")
    table: tuple[tuple[tuple[Cell, ...], ...], ...]   # [row][column] -> the cells there
    count: int


def write_page(catalog: dict, out: Path, digest: str | None = None) -> Path:
    """Write ``out/index.html`` and its static files; return the page's path.

    ``digest`` is the sha256 of ``catalog.json`` (hex, with or without ``sha256:``), shown
    in the page so that a reader can check the file they mirror is the one they browsed."""
    out.mkdir(parents=True, exist_ok=True)
    for name in STATIC:
        _write_if_changed(out / name, (TEMPLATES / name).read_bytes())
    page = out / "index.html"
    _write_if_changed(page, render_page(catalog, digest).encode())
    return page


def render_page(catalog: dict, digest: str | None = None) -> str:
    """The text of ``index.html`` for ``catalog`` (a dict of the catalogue's schema 1)."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True,
                             lstrip_blocks=True, keep_trailing_newline=True)
    env.filters["token"] = css_token
    grids = _grids(catalog)
    target = catalog.get("target") or {}
    signing = catalog.get("signing") or None
    if digest and not digest.startswith("sha256:"):
        digest = f"sha256:{digest}"
    catalog_ref = str(catalog.get("catalog") or "")
    return env.get_template(TEMPLATE).render(
        target_name=str(target.get("name") or ""),
        registry=str(target.get("registry") or ""),
        catalog_ref=f"{catalog_ref}:latest" if catalog_ref else "",
        digest=digest or "",
        fingerprint=str(signing.get("fingerprint") or "") if signing else "",
        generator=str(catalog.get("generator") or ""),
        schema=str(catalog.get("schema", "")),
        grids=grids,
        tags=sum(g.count for g in grids),
        # Each static file's own hash in its URL: a browser never keeps an old stylesheet or
        # script for a new page (the query stays inside the page's folder).
        static={name: hashlib.sha256((TEMPLATES / name).read_bytes()).hexdigest()[:12]
                for name in STATIC},
    )


def _write_if_changed(path: Path, data: bytes) -> None:
    """Leave an identical file alone (its mtime too: a web server's caches stay valid)."""
    if path.is_file() and path.read_bytes() == data:
        return
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(data)
    partial.replace(path)


# -- labels ------------------------------------------------------------------------------

def natural_key(text: str) -> tuple:
    """``gcc 9`` before ``gcc 11``; ``none`` (no MPI, no CUDA) first."""
    if text in ("", "none"):
        return ((0, ""),)
    return tuple((1, int(part)) if part.isdigit() else (2, part)
                 for part in re.split(r"(\d+)", text) if part)


def os_label(value: str) -> str:
    """``debian12`` -> ``Debian 12``, ``ubuntu22.04`` -> ``Ubuntu 22.04``."""
    match = re.fullmatch(r"([A-Za-z]+)[-_]?(\d[\w.]*)", value)
    if not match:
        return value or "any OS"
    return f"{match.group(1).capitalize()} {match.group(2)}"


def mpi_label(variables: dict) -> str:
    family = str(variables.get("mpi_family") or "")
    version = str(variables.get("mpi_version") or "")
    if family in ("", "none") and variables.get("mpi") not in (None, "", "none"):
        return str(variables["mpi"])
    name = MPI_FAMILIES.get(family, family)
    return f"{name} {version}".strip() if family not in ("", "none") else name


def cuda_label(variables: dict) -> str:
    cuda = str(variables.get("cuda") or "none")
    return "" if cuda == "none" else f"CUDA {cuda}"


def size_label(size) -> str:
    """Decimal units, as registries and ``ls -h --si`` show them: ``412.0 MB``."""
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        return ""
    units = ("B", "kB", "MB", "GB", "TB")
    power = 0
    while size >= 1000 ** (power + 1) and power < len(units) - 1:
        power += 1
    return f"{size} B" if power == 0 else f"{size / 1000 ** power:.1f} {units[power]}"


def css_token(text: str) -> str:
    """A catalogue value (a test result, a kind) as one CSS class name: a value with spaces
    would otherwise add classes of its own (``passed cell``)."""
    return re.sub(r"[^a-z0-9_-]+", "-", str(text).lower()) or "none"


def anchor(*parts: str) -> str:
    """An id for ``href="#..."``: made of safe characters only, whatever the parts hold."""
    return "-".join(re.sub(r"[^A-Za-z0-9_.]+", "_", p) for p in parts)


# -- the view ----------------------------------------------------------------------------

def _arch_view(arch: str, entry: dict | None) -> ArchView:
    if entry is None:
        return ArchView(arch, published=False)
    sif = entry.get("sif") or {}
    tests = tuple(TestLine(str(t.get("name", "")), str(t.get("result", "")),
                           str(t.get("reason") or ""))
                  for t in entry.get("tests") or ())
    return ArchView(
        arch, published=True, platform=str(entry.get("platform") or f"linux/{arch}"),
        manifest=str(entry.get("manifest") or ""), build_id=str(entry.get("build_id") or ""),
        sif=str(sif.get("reference") or ""), sif_immutable=str(sif.get("immutable") or ""),
        sif_size=size_label(sif.get("size")), signed=bool(sif.get("signed")),
        sif_missing=str(entry.get("sif_missing") or ""), tests=tests)


def _status(arches: list[ArchView]) -> tuple[str, str]:
    published = [a for a in arches if a.published]
    failed = [f"{t.name} on {a.arch}" for a in published for t in a.tests
              if t.result in FAILED_RESULTS]
    if failed:
        return "failed", "failed: " + ", ".join(failed)
    missing = [a.sif_missing or f"no SIF for {a.arch}" for a in published if not a.sif]
    if missing or not published:
        return "incomplete", "; ".join(missing) or "no architecture published"
    return "ok", f"a tested SIF for {', '.join(a.arch for a in published)}"


def _cell(image: dict, arch_names: list[str], anchors: dict[str, str]) -> Cell:
    repository, tag = str(image.get("repository", "")), str(image.get("tag", ""))
    entries = image.get("arches") or {}
    arches = [_arch_view(arch, entries.get(arch)) for arch in arch_names]
    status, status_text = _status(arches)
    commands = []
    if image.get("reference"):
        commands.append(Command("Docker", f"docker pull {image['reference']}"))
    commands += [Command(f"Apptainer, {a.arch}", f"apptainer pull {a.sif}")
                 for a in arches if a.sif]
    if image.get("module"):
        commands.append(Command("module", f"module load {image['module']}"))
    variables = image.get("variables") or {}
    source = image.get("source") or {}
    details = [("repository", repository), ("list digest", image.get("digest") or ""),
               ("immutable tag", image.get("immutable") or ""), ("FROM", image.get("base") or ""),
               ("commands", " ".join(str(c) for c in image.get("commands") or ())),
               ("source", " @ ".join(str(s) for s in (source.get("url"), source.get("revision"))
                                     if s)),
               ("created", image.get("created") or ""),
               ("variables", " ".join(f"{k}={v}" for k, v in sorted(variables.items())))]
    if not image.get("reference"):
        details.insert(1, ("image", "SIF only (built from a definition file): no Docker image"))
    words = [image.get("name"), tag, repository, image.get("description"), image.get("module"),
             os_label(str(variables.get("os") or "")), f"gcc {variables.get('gcc', '')}",
             mpi_label(variables), cuda_label(variables), image.get("kind"),
             *(str(v) for _, v in sorted(variables.items())), *(image.get("commands") or ())]
    base = str(image.get("base") or "")
    return Cell(
        anchor=anchors[f"{repository}:{tag}"], repository=repository, tag=tag,
        name=str(image.get("name", "")), description=str(image.get("description") or ""),
        status=status, status_text=status_text, arches=tuple(arches), commands=tuple(commands),
        base=base, base_anchor=anchors.get(base, ""),
        details=tuple((k, str(v)) for k, v in details if v),
        search=" ".join(str(w) for w in words if w).lower())


def _order(names: dict[str, list[dict]], parents: dict[str, str]) -> list[tuple[str, int]]:
    """Image names in page order, with their depth: each root (an image built FROM no image
    of this catalogue; bases, then GPU bases), then what is built FROM it, applications
    first (a reader looking at a base sees what runs on it next)."""
    def kind(name: str) -> int:
        return KIND_ORDER.get(str(names[name][0].get("kind")), len(KIND_ORDER))

    children = defaultdict(list)
    for name, parent in parents.items():
        children[parent].append(name)
    order, seen = [], set()

    def visit(name: str, depth: int) -> None:
        if name in seen:
            return
        seen.add(name)
        order.append((name, depth))
        for child in sorted(children[name], key=lambda n: (-kind(n), n)):
            visit(child, depth + 1)

    for name in sorted(names, key=lambda n: (n in parents, kind(n), n)):
        visit(name, 0)     # roots first; then a cycle of FROMs (never built) is still listed
    return order


def _grids(catalog: dict) -> list[Grid]:
    images = sorted((i for i in catalog.get("images") or () if isinstance(i, dict)),
                    key=lambda i: (str(i.get("repository", "")), str(i.get("tag", ""))))
    arch_names = sorted({str(a) for i in images for a in i.get("arches") or {}})
    anchors = {f"{i.get('repository', '')}:{i.get('tag', '')}":
               anchor("tag", str(i.get("repository", "")), str(i.get("tag", "")))
               for i in images}
    by_name: dict[str, list[dict]] = defaultdict(list)
    name_of_ref = {}
    for image in images:
        by_name[str(image.get("name", ""))].append(image)
        name_of_ref[f"{image.get('repository', '')}:{image.get('tag', '')}"] = \
            str(image.get("name", ""))
    parents = {}
    for name, members in by_name.items():
        bases = sorted({name_of_ref[b] for b in (m.get("base") for m in members)
                        if b in name_of_ref} - {name})
        if bases:
            parents[name] = bases[0]
    grids = []
    for name, depth in _order(by_name, parents):
        cells = [(_row(i), _column(i), _cell(i, arch_names, anchors)) for i in by_name[name]]
        rows = sorted({r for r, _, _ in cells}, key=lambda r: r[0])
        columns = sorted({c for _, c, _ in cells}, key=lambda c: c[0])
        table = tuple(tuple(tuple(cell for r, c, cell in cells if r == row and c == column)
                            for column in columns) for row in rows)
        first = by_name[name][0]
        grids.append(Grid(
            anchor=anchor("image", name), name=name, kind=str(first.get("kind") or ""),
            description=str(first.get("description") or ""), depth=depth,
            parent=parents.get(name, ""),
            parent_anchor=anchor("image", parents[name]) if name in parents else "",
            rows=tuple(r[1] for r in rows),
            columns=tuple(c[1] for c in columns), table=table, count=len(cells)))
    return grids


def _row(image: dict) -> tuple[tuple, str]:
    """(sort key, label) of the image's row: its OS and compiler."""
    variables = image.get("variables") or {}
    os_value, gcc = str(variables.get("os") or ""), str(variables.get("gcc") or "")
    label = os_label(os_value) + (f" · GCC {gcc}" if gcc else "")
    return (natural_key(os_value), natural_key(gcc)), label


def _column(image: dict) -> tuple[tuple, tuple[str, str]]:
    """(sort key, (MPI label, CUDA label)) of the image's column."""
    variables = image.get("variables") or {}
    family = str(variables.get("mpi_family") or variables.get("mpi") or "none")
    key = (natural_key(family), natural_key(str(variables.get("mpi_version") or "")),
           natural_key(str(variables.get("cuda") or "none")))
    return key, (mpi_label(variables), cuda_label(variables))
