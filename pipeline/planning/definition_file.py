"""Definition-file recipes: a recipe folder's ``recipe.def``, read and checked as code from
a stranger.

A recipe folder holds a ``Dockerfile`` or an Apptainer ``recipe.def`` written the way the
centre's users write them: one or more ``Bootstrap: docker`` stages whose ``From:`` names a
tag this catalogue publishes (the planner turns it into a need, so the base is built first
and a change to it replans the app) or a public image.

What is refused, each with its line: a stage without ``From:``; a ``Bootstrap:`` other
than ``docker`` (``localimage``, ``library``, ``shub``, ``scratch``, ... read host paths or
moving sources the plan cannot pin); header keys other than ``Bootstrap:``, ``From:`` and
``Stage:`` (``Registry:``/``Namespace:`` would make ``From:`` mean another image);
``%setup`` (it runs as root on the build host) and any section the factory does not build;
``%files from X`` naming a stage that does not exist or comes later; a ``%files`` source
outside the recipe folder (absolute, ``~``, ``..``: the build host's files, its registry
credentials included, would end up in a published image); two stages with one name; a
``From:`` that is no valid image reference; control characters (a carriage return or a
Unicode line separator splits lines differently in Apptainer and here).

Reading follows Apptainer (``pkg/build/types/parser/deffile.go``): the file is cut into
stages at each line that starts with ``bootstrap:`` (any case, column 0); a stage's header
is every line before its first section line (a line whose first word starts with ``%``,
indented or not), read as ``KEY: VALUE`` with the key's case and blanks ignored and ``#``
starting a comment.  spython's SingularityParser reads the section headers (``%files from
X``: its ``layer_files``); where it is lossy we read the text ourselves, said where.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from spython.main.parse.parsers import SingularityParser

from pipeline.catalogue.model import Catalogue
from pipeline.catalogue.text import CONTROL, describe
from pipeline.errors import Problems

# Apptainer's stage delimiter, ``(?mi)^bootstrap:``, applied to one line.
_STAGE_START = re.compile(r"(?i)bootstrap:")
_MISPLACED_START = re.compile(r"(?i)\s*bootstrap\s*:")  # a header Apptainer does not split at
# What a stage header may say.  Registry: and Namespace: change where From: is pulled from,
# the other keys belong to bootstrap agents the factory refuses.
_HEADER_KEYS = ("bootstrap", "from", "stage")
# Sections run inside the container (or are metadata).  %setup and %pre run on the build
# host; %arguments would template From: and %post at build time, out of the plan's sight.
_SECTIONS = ("post", "files", "environment", "labels", "help", "runscript", "startscript",
             "test")

_FILES_FROM = 2  # words after %files in "%files from STAGE"
# The distribution reference grammar (github.com/distribution/reference, regexp.go).
_ALNUM = r"[a-z0-9]+"
_COMPONENT = rf"{_ALNUM}(?:(?:[._]|__|-+){_ALNUM})*"
_DOMAIN_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_REFERENCE = re.compile(rf"(?:(?P<host>{_DOMAIN})/)?(?P<path>{_COMPONENT}(?:/{_COMPONENT})*)"
                        rf"(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?")
_NAME_MAX = 255  # characters of host/path, the grammar's limit
_DOCKER_HUB = ("docker.io", "index.docker.io", "registry-1.docker.io")
FEW_TAGS = 5  # tags named in a message about a tag the catalogue does not have


@dataclass(frozen=True)
class DefStage:
    """One build stage of a definition file; lines are 1-based lines of the whole file."""

    name: str | None  # its ``Stage:``, None when it has none
    bootstrap: str  # the Bootstrap: value (always "docker" once read without problems)
    source: str  # the From: value as written, without its comment
    bootstrap_line: int
    from_line: int
    files_from: tuple[tuple[str, int], ...]  # (stage name, line) of each ``%files from X``


@dataclass(frozen=True)
class DefinitionFile:
    path: str  # relative to the catalogue's folder, e.g. images/app/x/recipe.def
    text: str
    stages: tuple[DefStage, ...]


@dataclass(frozen=True)
class Reference:
    """An image reference split by the distribution grammar; Docker Hub when host is None."""

    host: str | None
    path: str
    tag: str | None
    digest: str | None


@dataclass(frozen=True)
class StageSource:
    """What a stage's ``From:`` names: ``need`` (a tag this catalogue publishes: planned as
    the job ``repository:tag@<the cell's arch>``) or ``public``."""

    line: int  # the From: line
    kind: str  # "need" | "public"
    ref: str  # the From: value as written
    repository: str = ""  # need only
    tag: str = ""  # need only


def parse_reference(text: str) -> Reference | None:
    """``text`` split as Docker reads an image reference; None when it is not one.

    >>> parse_reference("docker.io/sjtuhpc/base:ompi-4.1")
    Reference(host='docker.io', path='sjtuhpc/base', tag='ompi-4.1', digest=None)
    >>> parse_reference("Ubuntu:22.04") is None
    True
    """
    found = _REFERENCE.fullmatch(text)
    if not found:
        return None
    host, path = found["host"], found["path"]
    # The first component is a host only when it looks like one (as Docker decides).
    if host is not None and not ("." in host or ":" in host or host == "localhost"):
        path, host = f"{host}/{path}", None
        if not re.fullmatch(rf"{_COMPONENT}(?:/{_COMPONENT})*", path):
            return None
    if len(f"{host}/{path}" if host else path) > _NAME_MAX:
        return None
    return Reference(host, path, found["tag"], found["digest"])


def read_definition(path: str, text: str) -> DefinitionFile:
    """``text``, the recipe.def at ``path``, read into stages; InputError listing every
    problem, each as ``path:LINE: message; what to do``."""
    problems = Problems(path)
    lines = text.split("\n")  # Go's bufio.ScanLines splits at "\n" only
    _check_controls(lines, problems)
    problems.raise_if_any()  # other characters split lines otherwise: no more guessing
    starts = [i for i, line in enumerate(lines) if _STAGE_START.match(line)]
    for number, line in enumerate(lines[:starts[0]] if starts else lines, 1):
        if _MISPLACED_START.match(line):
            problems.add(number, "write 'Bootstrap:' at the very start of its line, with no "
                         "blank before it or before its ':': Apptainer starts a stage only there")
            break
        if line.strip() and not line.strip().startswith("#"):
            problems.add(number, "text before the first 'Bootstrap:' line: Apptainer would "
                         "read it as a stage of its own, with no base image; start the file "
                         "with 'Bootstrap: docker' and 'From: IMAGE'")
            break
    if not starts and not problems:
        problems.add(1, "no 'Bootstrap:' line: start the file with 'Bootstrap: docker' "
                     "and 'From: IMAGE'")
    ends = [*starts[1:], len(lines)] if starts else []
    stages = [_stage(lines, start, end, problems) for start, end in zip(starts, ends, strict=True)]
    _check_stage_names([s for s in stages if s is not None], problems)
    problems.items.sort(key=lambda problem: problem.line or 0)  # in the order of the file
    problems.raise_if_any()
    return DefinitionFile(path, text, tuple(stages))


def stage_sources(definition: DefinitionFile, catalogue: Catalogue) -> tuple[StageSource, ...]:
    """What each stage's From: names, in stage order; InputError for a reference that is
    not one, or that names this catalogue's repository by digest."""
    problems = Problems(definition.path)
    own = own_repositories(catalogue)
    hosts = {*_DOCKER_HUB, *(t.registry.lower() for t in catalogue.targets.values())}
    sources = []
    for stage in definition.stages:
        ref = parse_reference(stage.source)
        if ref is None:
            problems.add(stage.from_line, f"From: '{stage.source}' is not an image reference "
                         "(as Docker reads them: lower-case [HOST/]NAMESPACE/NAME[:TAG]"
                         "[@sha256:DIGEST]); name a tag of this catalogue (e.g. "
                         f"{_example(catalogue)}) or a public image")
            continue
        if ref.path not in own or (ref.host is not None and ref.host.lower() not in hosts):
            sources.append(StageSource(stage.from_line, "public", stage.source))
            continue
        if ref.digest is not None:
            problems.add(stage.from_line, f"From: '{stage.source}' names this catalogue's "
                         f"repository {ref.path} by digest: the plan cannot tell which job "
                         "builds it; name its tag, the factory pins the digest itself")
            continue
        sources.append(StageSource(stage.from_line, "need", stage.source, ref.path,
                                   ref.tag or "latest"))
    problems.raise_if_any()
    return tuple(sources)


def own_repositories(catalogue: Catalogue) -> set:
    """The repositories this catalogue publishes to: ``repositories:`` and overrides."""
    return {*catalogue.repositories.values(), *(i.repository for i in catalogue.images)}


def missing_tag(source: StageSource, arches: list, known: list) -> str:
    """The message for a need whose tag the catalogue has for none of ``arches``."""
    few = ", ".join(known[:FEW_TAGS]) + (f" (and {len(known) - FEW_TAGS} more)"
                                         if len(known) > FEW_TAGS else "")
    return (f"From: '{source.ref}' names this catalogue's repository {source.repository}, "
            f"but the catalogue has no tag '{source.tag}' for {', '.join(arches)} there"
            + (f" (it has {few})" if known else " (it has none)")
            + "; name one of its tags, or add the cell that makes this one")


def _example(catalogue: Catalogue) -> str:
    return f"{next(iter(catalogue.repositories.values()), 'ns/name')}:TAG"


def _check_controls(lines: list, problems: Problems) -> None:
    for number, line in enumerate(lines, 1):
        bad = [m.group() for m in CONTROL.finditer(line) if m.group() != "\t"]
        if bad:
            problems.add(number, f"{describe(bad[0])}: Apptainer and the factory would split "
                         "this line differently; save the file with LF line endings and no "
                         "control characters")


def _stage(lines: list, start: int, end: int, problems: Problems) -> DefStage | None:
    """The stage in ``lines[start:end]``; None (and problems) when it has any."""
    before = len(problems.items)
    header: dict = {}  # key -> (value, line)
    number = start
    for number in range(start + 1, end + 1):
        line = lines[number - 1]
        words = line.split()
        if words and words[0].startswith("%"):
            break
        _header_line(line, number, header, problems)
    else:
        number = end + 1
    files_from = _sections(lines, number, end, problems)
    bootstrap, bootstrap_line = header.get("bootstrap", ("", start + 1))
    if bootstrap != "docker":
        problems.add(bootstrap_line, f"'Bootstrap: {bootstrap}': the factory builds only "
                     "from registry images it can pin by digest, and other bootstrap agents "
                     "read files of the build host (localimage, oras, yum, debootstrap, ...) "
                     "or moving sources (library, shub); write 'Bootstrap: docker'")
    if "from" not in header:
        problems.add(bootstrap_line, "this stage has no 'From:' line; add 'From: IMAGE' "
                     "under its 'Bootstrap: docker' (a tag of this catalogue, or a public "
                     "image)")
    if len(problems.items) > before:
        return None
    source, from_line = header["from"]
    name = header["stage"][0] if "stage" in header else None
    return DefStage(name, bootstrap, source, bootstrap_line, from_line, files_from)


def _header_line(line: str, number: int, header: dict, problems: Problems) -> None:
    """One header line, read as Apptainer's doHeader reads it, into ``header``."""
    text = line.strip()
    if not text or text.startswith("#"):
        return
    text = text.split("#", 1)[0]
    if ":" not in text:
        problems.add(number, f"'{text.strip()}' is not a header line ('KEY: VALUE'); "
                     "sections start with '%' (e.g. %post)")
        return
    key, value = (part.strip() for part in text.split(":", 1))
    key = key.lower()
    if value.endswith("\\"):
        problems.add(number, f"'{key}:' continues on the next line; write it on one line")
    elif key not in _HEADER_KEYS:
        why = (" (it changes which registry From: is pulled from)"
               if key in ("registry", "namespace") else "")
        problems.add(number, f"header '{key}:' is not allowed{why}; the factory reads only "
                     "Bootstrap:, From: and Stage:, delete it")
    elif key in header:
        problems.add(number, f"'{key}:' is given twice in this stage (first on line "
                     f"{header[key][1]}), and Apptainer would take this one; keep one")
    elif not value:
        problems.add(number, f"'{key}:' has no value; give one")
    else:
        header[key] = (value, number)


def _sections(lines: list, first: int, end: int, problems: Problems) -> tuple:
    """Check the section lines of ``lines[first-1:end]`` (1-based ``first``); the
    ``(stage, line)`` of each ``%files from X``."""
    skeleton, where = [], {}
    host_files = False  # in a %files section without "from": its sources are host paths
    for number in range(first, end + 1):
        words = lines[number - 1].split()
        if not words or not words[0].startswith("%"):
            if host_files:
                _check_host_source(lines[number - 1], number, problems)
            continue
        section = words[0].lstrip("%").lower()
        args = _before_comment(words[1:])
        host_files = section == "files" and not args
        if section == "setup":
            problems.add(number, "%setup runs as root on the build host, outside the "
                         "container: refused for security; do the work in %post, and copy "
                         "files in with %files")
        elif section not in _SECTIONS:
            problems.add(number, f"'{words[0]}' is not a section the factory builds; use "
                         f"{', '.join('%' + s for s in _SECTIONS)}")
        elif section == "files" and args and not (len(args) == _FILES_FROM
                                                  and args[0].lower() == "from"):
            problems.add(number, f"'{' '.join(words)}': write '%files' or '%files from STAGE'")
        elif section == "files" and args:
            where.setdefault(args[1], number)
            # spython splits the header at single spaces: give it one between words, and a
            # body line that no keyword of its own matches (it needs one to record it).
            skeleton += [f"%files from {args[1]}", "    :"]
    return tuple((name, where[name]) for name in _spython_layer_files(skeleton))


def _check_host_source(line: str, number: int, problems: Problems) -> None:
    """A ``%files`` line copies its source from the build host: only a relative path inside
    the recipe folder may be one (the build runs there).  An absolute path, ``~`` or ``..``
    would copy the build host's files, its registry credentials included, into an image
    that is then published; ``{{ }}`` would be filled in at build time, out of sight."""
    text = line.strip()
    if not text or text.startswith("#"):
        return
    quote = text[0] if text[0] in "\"'" else ""
    source = text[1:].split(quote, 1)[0] if quote else text.split()[0]
    if source.startswith(("/", "~")) or ".." in source.split("/") or "{{" in text:
        problems.add(number, f"%files copies '{source}' from the build host into the image: "
                     "only files of the recipe folder may go in (a relative path, no '..', "
                     "no {{ }}); put the file next to recipe.def and name it relative to it")


def _spython_layer_files(skeleton: list) -> list:
    """The stage names of ``%files from X`` as spython reads them (its ``layer_files``).

    spython gets only the section headers, each with a neutral body: it is lossy for the
    rest, in ways that matter here.  It merges stages (a second stage without ``Stage:``
    overwrites the first), lower-cases ``From:`` (tags are case-sensitive), reads any line
    that contains "bootstrap" or "from:" as a header (even in %post, or a From: value that
    contains "bootstrap"), raises on a non-docker Bootstrap, ignores Registry:, and keeps
    no line numbers.  So stages, headers and lines are read above, as Apptainer reads them.
    """
    if not skeleton:
        return []
    parser = SingularityParser(filename=None, load=False)
    parser.lines = [f"{line}\n" for line in skeleton]
    recipes = parser.parse()
    return list(recipes[parser.active_layer].layer_files)


def _before_comment(words: list) -> list:
    for index, word in enumerate(words):
        if word.startswith("#"):
            return words[:index]
    return words


def _check_stage_names(stages: list, problems: Problems) -> None:
    seen: dict = {}  # name -> its stage's Bootstrap line
    for stage in stages:
        for name, line in stage.files_from:
            if name == stage.name:
                problems.add(line, f"'%files from {name}' names this stage itself; name an "
                             "earlier stage")
            elif name not in seen:
                later = any(s.name == name for s in stages)
                problems.add(line, f"'%files from {name}': " + (
                    f"stage '{name}' comes later; move it before this one" if later else
                    f"there is no stage '{name}'; give the stage it means 'Stage: {name}'"))
        if stage.name is not None and stage.name in seen:
            problems.add(stage.bootstrap_line, f"two stages are named '{stage.name}' (the "
                         f"first at line {seen[stage.name]}); rename one")
        if stage.name is not None:
            seen.setdefault(stage.name, stage.bootstrap_line)
