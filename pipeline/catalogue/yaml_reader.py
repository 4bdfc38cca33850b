"""Read a YAML document and remember the line of every key and value.

Errors about ``matrix.yaml`` must name the line to fix, so the document is built from
PyYAML's node tree instead of ``yaml.safe_load``.  Two deliberate differences from plain
YAML loading:

* numbers are kept as the text written (``gcc: 11.10`` stays ``"11.10"``, ``cuda: 12.0``
  stays ``"12.0"``): versions are not floats;
* a key given twice in one mapping is an error instead of silently keeping the last one.

Example::

    >>> doc = parse_yaml("a:\\n  b: 1.10\\n", "m.yaml")
    >>> doc.data, doc.line(("a", "b"))
    ({'a': {'b': '1.10'}}, 2)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from pipeline.errors import Problems

Path = tuple  # a path into the document: keys and list indexes

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_TAG = "tag:yaml.org,2002:"


@dataclass(frozen=True)
class Document:
    """Plain data (dicts, lists, strings, bools, None) plus the line of every path."""

    file: str
    data: Any
    lines: dict

    def line(self, path: Path) -> int | None:
        """The line of ``path``, or of its nearest ancestor that has one."""
        path = tuple(path)
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get(())


def parse_yaml(text: str, file: str) -> Document:
    """Parse ``text``; raise InputError naming ``file`` and the line on any YAML problem."""
    problems = Problems(file)
    try:
        root = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = mark.line + 1 if mark else None
        what = err.problem or str(err)
        problems.add(line, f"YAML syntax error: {what}; fix the indentation or quoting there")
        problems.raise_if_any()
    except yaml.YAMLError as err:  # e.g. a reader error on a control character
        problems.add(None, f"cannot read YAML: {err}")
        problems.raise_if_any()
    lines: dict = {}
    data = _convert(root, (), lines, problems) if root is not None else None
    problems.raise_if_any()
    return Document(file, data, lines)


def _convert(node: yaml.Node, path: Path, lines: dict, problems: Problems) -> Any:
    line = node.start_mark.line + 1
    lines.setdefault(path, line)
    if isinstance(node, yaml.MappingNode):
        out: dict = {}
        for key_node, value_node in node.value:
            key_line = key_node.start_mark.line + 1
            if key_node.tag == _TAG + "merge":
                problems.add(key_line,
                             "YAML merge keys ('<<') are not supported; write the keys out")
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                problems.add(key_line, "a mapping key must be a plain value, not a list or mapping")
                continue
            key = key_node.value
            if key in out:
                problems.add(key_line, f"key '{key}' is given twice here; keep one")
                continue
            lines[(*path, key)] = key_line
            out[key] = _convert(value_node, (*path, key), lines, problems)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_convert(item, (*path, i), lines, problems) for i, item in enumerate(node.value)]
    return _scalar(node)


def _scalar(node: yaml.ScalarNode) -> Any:
    if node.tag == _TAG + "null":
        return None
    if node.tag == _TAG + "bool":
        return yaml.constructor.SafeConstructor().construct_yaml_bool(node)
    return node.value  # str, and numbers as written
