"""Check matrix.yaml against its JSON Schema and turn schema errors into plain sentences.

The schema (``matrix.schema.json``, shipped with the package) is strict: unknown keys are
errors.  It is published so that editors (yaml-language-server) and ``check-jsonschema``
check the catalogue as it is typed; this module gives the same verdict with file and line.

Before the schema, every key and string value is checked for control characters
(``pipeline.catalogue.text``): catalogue text is written into definition files and build
arguments, where a line break could start a section of its own.  A value with one is bad
input, whatever key it is under.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from importlib import resources

import jsonschema

from pipeline.catalogue.text import escape_controls, first_control
from pipeline.catalogue.yaml_reader import Document
from pipeline.errors import Problems

_TYPE_NAMES = {
    "object": "a mapping",
    "array": "a list",
    "string": "text",
    "boolean": "true or false",
    "null": "nothing",
}


@lru_cache(maxsize=None)
def packaged_validator(package: str, name: str) -> jsonschema.protocols.Validator:
    """A validator for the JSON Schema ``name`` shipped in ``package`` (checked itself
    first): matrix.schema.json here, the published catalogue's in ``pipeline.published``."""
    schema = json.loads(resources.files(package).joinpath(name).read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def _validator() -> jsonschema.protocols.Validator:
    return packaged_validator("pipeline.catalogue", "matrix.schema.json")


def check_schema(doc: Document) -> None:
    """Raise InputError listing every place where ``doc`` breaks the schema."""
    problems = Problems(doc.file)
    # First, and on its own: the schema's messages quote values, which must be printable.
    _check_text(doc.data, (), doc, problems)
    problems.raise_if_any()
    if not isinstance(doc.data, dict):
        problems.add(doc.line(()), "matrix.yaml must be a mapping with repositories, targets, "
                     "axes and images; see the README's matrix.yaml reference")
        problems.raise_if_any()
    errors = sorted(_validator().iter_errors(doc.data), key=lambda e: list(map(str, e.path)))
    seen: set[tuple[int | None, str]] = set()
    for error in errors:
        for line, message in _describe(error, doc):
            if (line, message) not in seen:
                seen.add((line, message))
                problems.add(line, message)
    problems.items.sort(key=lambda p: p.line or 0)
    problems.raise_if_any()


def _check_text(value: object, path: tuple, doc: Document, problems: Problems) -> None:
    """Every key and string value anywhere in ``value`` is one line of printable text."""
    if isinstance(value, dict):
        for key, item in value.items():
            found = first_control(key)
            if found:
                problems.add(doc.line((*path, key)),
                             f"{where(path)}: control character {found[1]} in the key "
                             f"'{escape_controls(key)}'; catalogue keys are single lines of text")
                continue
            _check_text(item, (*path, key), doc, problems)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_text(item, (*path, index), doc, problems)
    elif isinstance(value, str):
        found = first_control(value)
        if found:
            problems.add(doc.line(path), f"{where(path)}: control character {found[1]} in the "
                         "value; catalogue values are single lines of text")


def where(path: tuple) -> str:
    """``('images', 2, 'axes')`` -> ``images[2].axes``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "the top level"


def _describe(error: jsonschema.ValidationError,  # noqa: PLR0911 - one answer per kind of error
              doc: Document) -> list[tuple[int | None, str]]:
    path = tuple(error.absolute_path)
    line = doc.line(path)
    at = where(path)
    schema = error.schema if isinstance(error.schema, dict) else {}
    hint = schema.get("x-hint")
    kind = error.validator
    if kind == "additionalProperties" and isinstance(error.instance, dict):
        allowed = sorted(schema.get("properties", {}))
        unknown = [k for k in error.instance if k not in allowed]
        choice = f"; allowed keys: {', '.join(allowed)}" if allowed else ""
        return [(doc.line((*path, k)), f"unknown key '{k}' in {at}{choice}") for k in unknown]
    if kind == "required":
        missing = re.findall(r"'([^']+)' is a required property", error.message)
        return [(line, f"{at} is missing the required key '{m}'") for m in missing]
    if "propertyNames" in error.schema_path:
        return [(doc.line((*path, error.instance)),
                 f"'{error.instance}' in {at} is not a valid name: {hint or error.message}")]
    if kind == "pattern":
        return [(line, f"{at}: '{error.instance}' is not valid here: {hint or error.message}")]
    if kind == "type":
        want = error.validator_value
        wanted = want if isinstance(want, list) else [want]
        want = " or ".join(_TYPE_NAMES.get(w, w) for w in wanted)
        return [(line, f"{at} must be {want}, not {_describe_value(error.instance)}")]
    if kind == "enum":
        options = ", ".join(map(str, error.validator_value))
        return [(line, f"{at}: '{error.instance}' is not one of {options}")]
    if kind in ("anyOf", "oneOf"):
        # A branch of the right type that failed deeper says more than the hint does.
        deeper = [c for c in error.context or [] if c.validator != "type" or c.relative_path]
        if deeper:
            return [found for c in deeper for found in _describe(c, doc)]
        return [(line, f"{at}: {hint or 'this value has the wrong form'}")]
    if kind in ("minItems", "minProperties"):
        return [(line, f"{at} must not be empty")]
    if kind == "uniqueItems":
        return [(line, f"{at} lists a value twice; keep one")]
    if kind == "minLength":
        return [(line, f"{at} must not be empty")]
    return [(line, f"{at}: {error.message}")]


def _describe_value(value: object) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, bool):
        return f"{str(value).lower()} (quote it if you mean text)"
    if value is None:
        return "empty"
    return f"'{value}'"
