"""Expansion of one image into cells: its axes' product, exclude, include, defaults, constraints.

Include and exclude behave like GitHub Actions' ``strategy.matrix``:

* ``exclude`` removes every combination that has all of an entry's values;
* ``include`` adds an entry's other keys to every remaining combination whose values it
  matches on the axes the image spans (it never overwrites those); an entry that matches
  none becomes a combination of its own.  A new combination that names no ``arch`` is made
  for every arch the image spans, since an image is built per arch.

Axes an image does not span take their default (the OS's own default first, e.g. its
system GCC).  Constraints, which state facts such as "Debian 12 offers GCC 11 and 12",
then remove the combinations that cannot exist.  Every removal is counted per rule so that
an image left with no cells can be explained.

Example (axes os=[debian12], gcc=[11, 12], arch=[amd64] and a constraint allowing only
gcc 12 on debian12) gives one cell: ``{os: debian12, gcc: "12", arch: amd64, ...}``.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field

from pipeline.catalogue.model import Catalogue, Constraint, Image
from pipeline.catalogue.tags import version_key


@dataclass(frozen=True)
class Cell:
    """One combination of axis values (every axis has one) plus an image's extra variables."""

    values: dict  # axis -> value key, in catalogue axis order
    extras: dict  # include-added variables that are not axes, e.g. {"version": "2022"}


@dataclass
class Expansion:
    cells: list
    combinations: int = 0  # from the product of the spanned axes
    removed: Counter = field(default_factory=Counter)  # rule description -> count
    missing_defaults: set = field(default_factory=set)  # axes with no value and no default

    def explain(self) -> str:
        """Why nothing is left, e.g. "4 combinations; 2 removed by exclude (line 40), ..."."""
        parts = [f"its axes give {self.combinations} combination(s)"]
        parts += [f"{n} removed by {rule}" for rule, n in self.removed.items()]
        return "; ".join(parts)


def expand(image: Image, catalogue: Catalogue) -> Expansion:
    spanned = image.axes
    names = list(spanned)
    combos = [dict(zip(names, chosen, strict=True))
              for chosen in itertools.product(*spanned.values())]
    result = Expansion(cells=[], combinations=len(combos))

    kept = []
    for combo in combos:
        rule = next((r for r in image.exclude if _matches(combo, r.values)), None)
        if rule is None:
            kept.append(combo)
        else:
            result.removed[f"exclude (line {rule.line})"] += 1

    added: list[dict] = [{} for _ in kept]
    extra_combos: list[dict] = []
    for entry in image.include:
        on_spanned = {k: v for k, v in entry.values.items() if k in spanned}
        rest = {k: v for k, v in entry.values.items() if k not in spanned}
        hits = [i for i, combo in enumerate(kept) if _matches(combo, on_spanned)]
        for i in hits:
            added[i].update(rest)
        if not hits:
            arches = [entry.values["arch"]] if "arch" in entry.values else list(
                spanned.get("arch", [None]))
            for arch in arches:
                new = dict(entry.values)
                if arch is not None:
                    new["arch"] = arch
                extra_combos.append(new)

    candidates = [{**combo, **extra}
                  for combo, extra in zip(kept, added, strict=True)] + extra_combos
    for raw in candidates:
        cell = _complete(raw, catalogue, result)
        if cell is None:
            continue
        broken = next((c for c in catalogue.constraints if _violates(cell.values, c)), None)
        if broken is None:
            result.cells.append(cell)
        else:
            result.removed[broken.describe()] += 1
    return result


def _complete(raw: dict, catalogue: Catalogue, result: Expansion) -> Cell | None:
    os_key = raw.get("os", catalogue.axes["os"].default)
    values = {}
    for axis in catalogue.axes:
        value = raw.get(axis)
        if value is None:
            value = catalogue.effective_default(axis, os_key)
        if value is None:
            result.missing_defaults.add(axis)
            return None
        values[axis] = value
    extras = {k: v for k, v in raw.items() if k not in catalogue.axes}
    return Cell(values, extras)


def _matches(combo: dict, entry: dict) -> bool:
    return all(combo.get(k) == v for k, v in entry.items())


def _violates(values: dict, constraint: Constraint) -> bool:
    if not all(values[axis] in allowed for axis, allowed in constraint.when.items()):
        return False
    for axis, allowed in constraint.allow.items():
        value = values[axis]
        if isinstance(allowed, tuple):
            if value not in allowed:
                return True
            continue
        have = version_key(value)
        # Compared at the bound's precision: "max: 8" admits 8.5.
        low = version_key(allowed["min"]) if "min" in allowed else None
        high = version_key(allowed["max"]) if "max" in allowed else None
        if (low and have[:len(low)] < low) or (high and have[:len(high)] > high):
            return True
    return False
