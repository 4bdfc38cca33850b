"""Build ids: content hashes that say whether an image must be rebuilt.

* the plan's ``build_id`` covers what is in the repository: the recipe files (git blob
  ids), the cell's variables, the arch and the build_ids of the jobs it builds FROM;
* the *effective* build_id folds in what is below the job and outside the repository: the
  OS base's upstream content for a base job, the needs' effective build_ids otherwise.  It
  is what images are labelled and published with.
"""

from __future__ import annotations

import hashlib
import json


def build_id(files: tuple, variables: dict, arch: str, need_ids: list) -> str:
    """sha256 of the inputs, as hex; equal inputs give equal ids on every machine."""
    payload = json.dumps([files, variables, arch, need_ids], sort_keys=True,
                         separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()


def effective_build_id(plan_build_id: str, below: list[str]) -> str:
    return hashlib.sha256("|".join([plan_build_id, *below]).encode()).hexdigest()
