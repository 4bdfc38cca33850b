"""Build ids: content hashes that say whether an image must be rebuilt.

* the plan's ``build_id`` covers what is in the repository: the recipe files (git blob
  ids), the cell's variables, the arch and the build_ids of the jobs it builds FROM.  It is
  computed offline;
* the *effective* build_id folds in what is below the job and outside the repository: the
  OS base's upstream content for a base job, the needs' effective build_ids otherwise, and
  the content of the image's ``upstream:`` files (dnf ``repomd.xml``, NVIDIA's CUDA
  repository, a Debian ``InRelease``).  It is what images are labelled and published with.
  ``effective_build_id`` is the one place it is computed: the plan (``already_published``,
  "is it published?") and the build stage both call it, so they cannot disagree.
"""

from __future__ import annotations

import hashlib
import json


def build_id(files: tuple, variables: dict, arch: str, need_ids: list) -> str:
    """sha256 of the inputs, as hex; equal inputs give equal ids on every machine."""
    payload = json.dumps([files, variables, arch, need_ids], sort_keys=True,
                         separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()


def effective_build_id(job, below: list[str], upstream_ids: list[str] | tuple = ()) -> str:
    """The effective build_id of ``job`` (a planned Job).

    ``below``: the OS content for a job without needs (``Upstream.identity``), else the
    effective build_ids of its needs, in order.  ``upstream_ids``: the identities of the
    job's ``upstream:`` files (``upstream_identities``).  A job without upstream files has
    the id it had before images could name them.
    """
    return hashlib.sha256("|".join([job.build_id, *below, *upstream_ids]).encode()).hexdigest()


def upstream_urls(job) -> tuple:
    """The URLs of the job's ``upstream:`` files, rendered for its cell at plan time
    (``Job.upstream``, from ``Image.upstream_urls``); none for a job without them."""
    return tuple(getattr(job, "upstream", ()))


def upstream_identities(job, upstream) -> list[str]:
    """What the job's ``upstream:`` files are now (``upstream``: a ``tools.upstream.Upstream``,
    which reads each URL once per run); UpstreamUnknown when one cannot be read."""
    return [upstream.file_identity(url) for url in upstream_urls(job)]
