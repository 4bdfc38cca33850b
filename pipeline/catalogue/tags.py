"""Docker tags: the default scheme, tag templates, and what a registry accepts.

The default scheme is the one downstream clusters already pull: one component per axis
other than ``os`` and ``arch``, in the order the axes are written in matrix.yaml, each
``name-major.minor``; components equal to their default are left out; a non-default OS is
a suffix.  With the shipped axes::

    gcc 8, cuda 10.2, Open MPI 4.0 on the default OS   ->  gcc-8.cuda-10.2.ompi-4.0
    default gcc, Open MPI 4.1 on debian13               ->  ompi-4.1-debian13
    everything default on debian13                      ->  debian13

The arch is never part of a Docker tag: one multi-arch list is published per tag.
"""

from __future__ import annotations

import re
import string

# OCI distribution spec: the tag grammar (repository names are checked by the schema).
TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}\Z")
MAX_TAG = 128

SPECIAL_FIELDS = {
    "name": "the image's name",
    "default": "the default scheme, e.g. gcc-8.ompi-4.1-debian13",
    "components": "the default scheme without the OS suffix",
    "os_suffix": "'-<os>' for a non-default OS, else ''",
}


def version_key(text: str) -> tuple | None:
    """``"11.8"`` -> ``(11, 8)``; None when ``text`` is not a dotted version."""
    parts = text.split(".")
    if not all(p.isdigit() for p in parts):
        return None
    return tuple(int(p) for p in parts)


def template_fields(axes: dict, extras: set) -> set:
    """Every field a tag template may use, given the catalogue's axes and an image's extras."""
    fields = set(SPECIAL_FIELDS) | set(extras)
    for name, axis in axes.items():
        if name == "arch":
            continue
        fields.add(name)
        for value in axis.values.values():
            fields.update(f"{name}_{attr}" for attr in value.attrs)
    return fields


def check_template(template: str, allowed: set) -> list[str]:
    """Problems with ``template`` itself (syntax, unknown fields), as sentences."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as err:
        return [f"{err}; write {{{{ or }}}} for a literal brace"]
    problems = []
    for _, field, spec, conversion in parsed:
        if field is None:
            continue
        if field == "arch" or field.startswith("arch_"):
            problems.append(f"{{{field}}} puts the arch in the Docker tag, but each tag is one "
                            "multi-arch list; remove it (SIF names carry the arch)")
        elif field not in allowed:
            problems.append(f"unknown field {{{field}}}; use one of "
                            f"{', '.join(sorted(allowed))}")
        if spec or conversion:
            problems.append(f"{{{field}}} must be a plain field, without ':' or '!'")
    return problems


def render(template: str, fields: dict) -> str:
    """Fill ``template``; KeyError names a field the cell does not have."""
    return template.format_map(fields)


def check_tag(tag: str) -> str | None:
    """Why a registry would refuse ``tag``, or None when it is fine."""
    if len(tag) > MAX_TAG:
        return f"tag '{tag[:40]}...' is {len(tag)} characters; registries accept at most {MAX_TAG}"
    if not TAG_RE.match(tag):
        return (f"tag '{tag}' has characters a registry refuses; a tag is letters, digits, "
                "'_', '.' and '-', not starting with '.' or '-'")
    return None


def default_components(values: dict, axes: dict, defaults: dict) -> list[str]:
    """Tag components of a cell: one per non-os, non-arch axis whose value is not default."""
    out = []
    for name, axis in axes.items():
        if name in ("os", "arch"):
            continue
        key = values[name]
        if key != defaults.get(name) and axis.values[key].tag:
            out.append(axis.values[key].tag)
    return out


def tag_fields(image_name: str, values: dict, variables: dict, axes: dict, defaults: dict) -> dict:
    """The fields a template is filled with for one cell."""
    os_axis = axes["os"]
    os_tag = os_axis.values[values["os"]].tag
    os_suffix = "" if values["os"] == os_axis.default else f"-{os_tag}"
    components = ".".join(default_components(values, axes, defaults))
    default = components + os_suffix if components else os_tag
    return {**variables, "name": image_name, "default": default, "components": components,
            "os_suffix": os_suffix}
