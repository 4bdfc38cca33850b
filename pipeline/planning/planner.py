"""The plan a command works on: the catalogue read, expanded, decided and selected.

``plan_with_catalogue`` asks no registry (what ``plan`` prints in pr mode, and what tests
use).  ``planned_for`` adds what the target knows: outside pr mode the effective build_ids
are computed and jobs already published on the target become ``skip``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field, replace
from pathlib import Path

from pipeline.catalogue.model import Catalogue, Target
from pipeline.catalogue.validation import load_catalogue
from pipeline.errors import InputError, Problem
from pipeline.planning.already_published import (
    effective_build_ids,
    mark_published,
    tag_closure,
)
from pipeline.planning.changes import decide, load_baseline
from pipeline.planning.jobs import Job, build_plan
from pipeline.planning.recipe_files import WorkTree
from pipeline.planning.selection import parse_globs, select
from pipeline.settings import Settings
from pipeline.tools.credentials import Secrets
from pipeline.tools.registry.client import Registry
from pipeline.tools.registry.retries import RetryPolicy
from pipeline.tools.registry.staging import target_credentials
from pipeline.tools.upstream import Upstream


def make_plan(matrix: Path, mode: str, changed_from: str | None = None,
              globs: list[str] | None = None) -> list[Job]:
    """The plan as ``plan`` prints it, without asking any registry."""
    return plan_with_catalogue(matrix, mode, changed_from, globs).jobs


@dataclass(frozen=True)
class Planned:
    catalogue: Catalogue
    declared: list[Job]  # every decided job, selected or not: which arches each tag declares
    jobs: list[Job]  # the selection, in dependency order
    published_ids: dict = field(default_factory=dict)  # job id -> effective build_id
    # ids that --changed-from skipped as unchanged: outside pr mode they stay skipped only
    # when the target has them (see planned_for)
    unchanged: frozenset = frozenset()


def plan_with_catalogue(matrix: Path, mode: str, changed_from: str | None = None,
                        globs: list[str] | None = None) -> Planned:
    """The catalogue and its plan (decided and selected), for the commands that run it."""
    if mode == "nightly" and changed_from:
        raise InputError([Problem("--changed-from", None, "nightly considers every cell; "
                                  "leave --changed-from out or use --mode main")])
    folder = matrix.parent
    tree = WorkTree(folder)
    catalogue = load_catalogue(tree, matrix.name, display=str(matrix))
    jobs = build_plan(catalogue, tree)
    baseline = load_baseline(folder, matrix.name, changed_from) if changed_from else None
    jobs = decide(jobs, mode, baseline)
    unchanged = frozenset(j.id for j in jobs if j.action == "skip")  # decide skips no other
    return Planned(catalogue, jobs, select(jobs, globs) if globs else jobs,
                   unchanged=unchanged)


def target_of(catalogue: Catalogue, name: str | None, settings: Settings) -> Target:
    """The named target (default: the catalogue's); PIPELINE_REGISTRY moves ``local``."""
    name = name or catalogue.default_target
    if name not in catalogue.targets:
        raise InputError([Problem("--target", None, f"'{name}' is not a target of "
                                  f"{catalogue.file} ({', '.join(catalogue.targets)})")])
    target = catalogue.targets[name]
    return replace(target, registry=settings.registry) if name == "local" else target


def planned_for(args: argparse.Namespace, settings: Settings) -> tuple[Planned, Target]:
    """The plan and its target.  Outside ``pr`` mode the effective build_ids are computed
    (publishing compares them with the target's), and jobs already published on the
    target become ``skip``: a rerun of the same revision, or a nightly run with nothing
    changed upstream, builds nothing.  A job ``--changed-from`` found unchanged stays
    ``skip`` only when the target has its effective build_id; otherwise (an earlier publish
    failed, or never ran) it is built, so that main can publish it."""
    planned = plan_with_catalogue(Path(args.matrix), args.mode, args.changed_from,
                                  parse_globs(args.select) if args.select else None)
    target = target_of(planned.catalogue, args.target, settings)
    if args.mode == "pr":  # never publishes: the registry is not asked
        return planned, target
    upstream = Upstream(settings)
    # The closure holds every selected job, so these ids serve both publishing and skipping.
    ids, unknown = effective_build_ids(tag_closure(planned.declared, planned.jobs), upstream)
    jobs = planned.jobs
    if args.mode in ("main", "nightly"):
        secrets = Secrets.from_env()
        credentials = target_credentials(secrets.registry, target.registry, settings.lab_dir,
                                         settings.registry)
        registry = Registry(target.registry, credentials,
                            RetryPolicy(attempts=4, total_seconds=60))
        jobs = _mark(planned, registry, ids, unknown, target.name)
    return replace(planned, jobs=jobs, published_ids=ids), target


def _mark(planned: Planned, registry: Registry, ids: dict, unknown: dict,
          where: str) -> list[Job]:
    """``mark_published``, with the unchanged jobs asked too: unchanged since the revision
    says nothing about the target, where a failed publish may have left them missing."""
    jobs = planned.jobs
    reopened = {j.id for j in jobs if j.id in planned.unchanged and j.action == "skip"}
    marked = mark_published([replace(j, action="build") if j.id in reopened else j
                             for j in jobs], registry, ids, unknown)
    out = []
    for before, after in zip(jobs, marked, strict=True):
        if before.id not in reopened:
            out.append(after)
        elif after.action == "skip":  # published: the skip stands
            out.append(replace(after, reason=f"{before.reason}; {after.reason}"))
        else:
            note = after.reason[len(before.reason):].lstrip("; ")  # "cannot tell ...", if any
            out.append(replace(after, reason=f"{before.reason}, but " + (
                note or f"not published on {where} (a failed publish earlier?)")))
    return out
