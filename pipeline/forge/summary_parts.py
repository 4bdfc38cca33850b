"""The ``summary.json`` of each CI cell ("part"), read and merged into one view of the run.

A path given is a ``summary.json`` file, or a folder searched recursively for them (CI
artifacts of every cell downloaded side by side; a folder with none, as a plan with no
cells leaves, is only noted).  Reading is lenient about missing keys
(older parts lack ``mode``, ``job_url``, ``publications``...) and strict about types: a
file that is not JSON, or a value of the wrong type, is bad input naming the file and the
key (exit 2), every problem of every file at once.

Each job (by id) and each publication (by ``repository:tag``) is taken from one part: when
two parts hold the same one, the part that finished later wins, and the view says so in
its ``notes``.  When a part finished is its ``run.finished`` (epoch seconds or ISO 8601)
when it has one, else the file's modification time.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from pipeline.errors import InputError, Problem, Problems

SUMMARY = "summary.json"
JOB_RESULTS = ("passed", "failed", "skipped", "interrupted")
PUBLICATION_RESULTS = ("published", "already published", "refused", "failed", "interrupted")
BAD_PUBLICATIONS = ("refused", "failed", "interrupted")
RUN_ERRORS = ("infrastructure unreachable", "factory error", "bad input")


@dataclass(frozen=True)
class Job:
    id: str  # REPOSITORY:TAG@ARCH
    name: str  # REPOSITORY:TAG
    arch: str
    result: str
    reason: str
    duration: float | None
    log: str | None
    job_url: str | None  # the CI job page of the part that ran it
    source: str  # the summary.json it came from


@dataclass(frozen=True)
class Publication:
    repository: str
    tag: str
    result: str
    reason: str
    refs: tuple[str, ...]
    duration: float | None
    source: str

    @property
    def name(self) -> str:
        return f"{self.repository}:{self.tag}"


@dataclass(frozen=True)
class Part:
    path: str
    finished: float
    status: str | None  # the run's: passed, failed, infrastructure unreachable, ...
    exit_code: int | None
    reason: str
    mode: str | None
    job_url: str | None
    jobs: tuple[Job, ...]
    publications: tuple[Publication, ...]
    command: str = "run"  # "publish": its jobs are what it found in staging


@dataclass(frozen=True)
class View:
    """The merged run: every job and publication once, and what the merge had to decide."""

    parts: tuple[Part, ...]
    jobs: tuple[Job, ...]
    publications: tuple[Publication, ...]
    notes: tuple[str, ...]

    @property
    def modes(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(p.mode for p in self.parts if p.mode))

    def counts(self) -> Counter:
        return Counter(j.result for j in self.jobs)

    def troubled_parts(self) -> tuple[Part, ...]:
        """Parts whose run did not end with its jobs: broken, unreachable, interrupted."""
        return tuple(p for p in self.parts if p.status in (*RUN_ERRORS, "interrupted"))

    @property
    def state(self) -> str:
        """passed, failed, error (the factory or the infrastructure broke), interrupted,
        or pending (a part still running)."""
        statuses = {p.status for p in self.parts}
        if statuses & set(RUN_ERRORS):
            return "error"
        if "interrupted" in statuses or self.counts()["interrupted"]:
            return "interrupted"
        if ("failed" in statuses or self.counts()["failed"]
                or any(p.result in BAD_PUBLICATIONS for p in self.publications)
                or any(p.exit_code not in (None, 0) for p in self.parts)):
            return "failed"
        if "running" in statuses:
            return "pending"
        return "passed"


def load(paths: list[Path]) -> View:
    """Read every part under ``paths`` and merge them; InputError with every problem."""
    files, problems, notes = _find(paths)  # the files found are read all the same
    parts = []
    for path in files:
        try:
            parts.append(read_part(path))
        except InputError as err:
            problems.extend(err.problems)
    if problems:
        raise InputError(problems)
    return merge(parts, notes)


def find_parts(paths: list[Path]) -> list[Path]:
    """The summary.json files: each path given, or those found under a folder."""
    files, problems, _ = _find(paths)
    if problems:
        raise InputError(problems)
    return files


def _find(paths: list[Path]) -> tuple[list[Path], list[Problem], list[str]]:
    """The files, the problems (a path that does not exist) and the notes (a folder with
    no summary.json: a plan with no cells leaves one)."""
    found: dict[Path, None] = {}
    problems, notes = [], []
    for path in paths:
        if path.is_dir():
            inside = sorted(path.rglob(SUMMARY))
            if not inside:
                notes.append(f"no {SUMMARY} under {path}")
            found.update(dict.fromkeys(p.resolve() for p in inside))
        elif path.is_file():
            found[path.resolve()] = None
        else:
            problems.append(Problem(str(path), None, "no such file or folder; give the "
                                    f"{SUMMARY} of `python -m pipeline run`, or folders "
                                    "holding them"))
    return list(found), problems, notes


def read_part(path: Path) -> Part:
    where = str(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise InputError([Problem(where, None, "not UTF-8 text")]) from None
    except ValueError as err:
        raise InputError([Problem(where, getattr(err, "lineno", None),
                                  f"not JSON: {getattr(err, 'msg', err)}")]) from None
    except OSError as err:
        raise InputError([Problem(where, None, f"cannot be read: {err.strerror}")]) from None
    check = _Check(Problems(where))
    if not isinstance(data, dict):
        check.problems.add(None, f"expected a JSON object, got {_kind(data)}")
        check.problems.raise_if_any()
    run = check.mapping(data, "run", "run")
    part_url = check.text(run, "job_url", "run.job_url") or None
    jobs = tuple(_job(check, item, f"jobs[{n}]", where, part_url)
                 for n, item in enumerate(check.items(data, "jobs")))
    publications = tuple(_publication(check, item, f"publications[{n}]", where)
                         for n, item in enumerate(check.items(data, "publications")))
    finished = _finished(check, run.get("finished"), path)
    exit_code = run.get("exit_code")
    if exit_code is not None and (isinstance(exit_code, bool) or not isinstance(exit_code, int)):
        check.problems.add(None, f"run.exit_code: expected an integer, got {_kind(exit_code)}")
    check.problems.raise_if_any()
    return Part(where, finished, check.text(run, "status", "run.status") or None,
                exit_code, check.text(run, "reason", "run.reason"),
                check.text(run, "mode", "run.mode") or None, part_url,
                tuple(j for j in jobs if j), tuple(p for p in publications if p),
                check.text(run, "command", "run.command") or "run")


def merge(parts: list[Part], notes: list[str] | tuple[str, ...] = ()) -> View:
    """One view; a job or publication in two parts is taken from the later-finished one.

    A ``publish`` part's jobs are only what it found in staging: the cell's own part,
    with its stages, log and duration, is used whenever there is one (no note), and the
    publish part's row only for a cell that left none (it never ran, or uploaded nothing)."""
    ordered = sorted(enumerate(parts), key=lambda item: (item[1].command != "publish",
                                                         item[1].finished, item[0]))
    jobs: dict[str, Job] = {}
    publications: dict[str, Publication] = {}
    notes = list(notes)
    publish_sources = {p.path for p in parts if p.command == "publish"}
    for _, part in ordered:
        for key, item, table in ([(j.id, j, jobs) for j in part.jobs]
                                 + [(p.name, p, publications) for p in part.publications]):
            old = table.get(key)
            if old is not None and not (table is jobs and old.source in publish_sources):
                what = "job" if table is jobs else "publication"
                notes.append(f"{what} {key} is in {old.source} and {item.source}; "
                             f"{item.source} finished later and is used"
                             if old.source != item.source else
                             f"{what} {key} is twice in {item.source}; the later one is used")
            table[key] = item
    return View(tuple(p for _, p in ordered), tuple(jobs.values()),
                tuple(publications.values()), tuple(notes))


def _job(check: _Check, item, where: str, source: str, part_url: str | None) -> Job | None:
    if not check.is_mapping(item, where):
        return None
    job_id = check.text(item, "id", f"{where}.id", required=True)
    result = check.choice(item, "result", f"{where}.result", JOB_RESULTS)
    name, _, arch = job_id.rpartition("@") if "@" in job_id else (job_id, "", "")
    return Job(job_id, name, check.text(item, "arch", f"{where}.arch") or arch, result,
               check.text(item, "reason", f"{where}.reason"),
               check.number(item, "duration", f"{where}.duration"),
               check.text(item, "log", f"{where}.log") or None, part_url, source)


def _publication(check: _Check, item, where: str, source: str) -> Publication | None:
    if not check.is_mapping(item, where):
        return None
    refs = item.get("refs") or []
    if not isinstance(refs, list) or not all(isinstance(r, str) for r in refs):
        check.problems.add(None, f"{where}.refs: expected a list of strings")
        refs = []
    return Publication(check.text(item, "repository", f"{where}.repository", required=True),
                       check.text(item, "tag", f"{where}.tag", required=True),
                       check.choice(item, "result", f"{where}.result", PUBLICATION_RESULTS),
                       check.text(item, "reason", f"{where}.reason"), tuple(refs),
                       check.number(item, "duration", f"{where}.duration"), source)


def _finished(check: _Check, value, path: Path) -> float:
    if value is None:
        return path.stat().st_mtime
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=timezone.utc)
            return moment.timestamp()
    check.problems.add(None, f"run.finished: expected epoch seconds or an ISO 8601 time, "
                       f"got {value!r}")
    return 0.0


@dataclass
class _Check:
    """Type checks that add a problem (naming the key) instead of raising."""

    problems: Problems

    def is_mapping(self, item, where: str) -> bool:
        if isinstance(item, dict):
            return True
        self.problems.add(None, f"{where}: expected an object, got {_kind(item)}")
        return False

    def mapping(self, data: dict, key: str, where: str) -> dict:
        value = data.get(key)
        if value is None:
            return {}
        return value if self.is_mapping(value, where) else {}

    def items(self, data: dict, key: str) -> list:
        value = data.get(key)
        if value is None:
            return []
        if isinstance(value, list):
            return value
        self.problems.add(None, f"{key}: expected a list, got {_kind(value)}")
        return []

    def text(self, data: dict, key: str, where: str, *, required: bool = False) -> str:
        value = data.get(key)
        if value is None:
            if required:
                self.problems.add(None, f"{where}: missing")
            return ""
        if isinstance(value, str):
            return value
        self.problems.add(None, f"{where}: expected a string, got {_kind(value)}")
        return ""

    def choice(self, data: dict, key: str, where: str, choices: tuple[str, ...]) -> str:
        value = self.text(data, key, where, required=True)
        if value and value not in choices:
            self.problems.add(None, f"{where}: {value!r} is not one of {', '.join(choices)}")
        return value

    def number(self, data: dict, key: str, where: str) -> float | None:
        value = data.get(key)
        if value is None:
            return None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        self.problems.add(None, f"{where}: expected a number, got {_kind(value)}")
        return None


def _kind(value) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            type(None): "null"}.get(type(value), "a number")
