"""``junit.xml``: the run as JUnit XML, for CI systems that show test reports.

One ``testsuite`` "jobs" with one ``testcase`` per job (``classname`` the repository:tag,
``name`` the job id, ``time`` its duration): ``failure`` for a failed job, ``error`` for an
interrupted one, ``skipped`` for a skipped one, each with the reason; the stages' results
and durations as ``properties``; the log's path in ``system-out``.  A second testsuite
"tests" has one testcase per job and test (classname the job id, name the test), a third
"publications" one per published tag.  Every text goes through ``mask``.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

Mask = Callable[[str], str]
# Characters XML 1.0 cannot hold, even escaped.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _text(mask: Mask, value) -> str:
    return _NOT_XML.sub("?", mask(str(value)))


def _first(text: str) -> str:
    return text.splitlines()[0] if text else ""


def _case(parent: ET.Element, mask: Mask, name: str, seconds: float, details: dict) -> None:
    """One testcase; ``details``: classname, result, reason, properties, out."""
    result, reason = details["result"], details.get("reason", "")
    properties, out = details.get("properties", {}), details.get("out", "")
    case = ET.SubElement(parent, "testcase", classname=_text(mask, details["classname"]),
                         name=_text(mask, name), time=f"{seconds:.1f}")
    if properties:
        props = ET.SubElement(case, "properties")
        for key, value in properties.items():
            ET.SubElement(props, "property", name=_text(mask, key), value=_text(mask, value))
    element = {"failed": "failure", "interrupted": "error", "skipped": "skipped",
               "refused": "skipped"}.get(result)
    if element:
        node = ET.SubElement(case, element, message=_text(mask, _first(reason)), type=result)
        if element != "skipped":
            node.text = _text(mask, reason)
    if out:
        ET.SubElement(case, "system-out").text = _text(mask, out)


def _stage_properties(stages: dict) -> dict:
    found = {}
    for stage, details in stages.items():
        if not isinstance(details, dict):
            continue
        for key in ("result", "duration"):
            if key in details:
                found[f"stage.{stage}.{key}"] = details[key]
    return found


def _suite(root: ET.Element, name: str, cases: list) -> ET.Element:
    counts = {k: sum(1 for c in cases if c == k) for k in ("failed", "interrupted", "skipped")}
    return ET.SubElement(root, "testsuite", name=name, tests=str(len(cases)),
                         failures=str(counts["failed"]), errors=str(counts["interrupted"]),
                         skipped=str(counts["skipped"]))


def _tests_suite(root: ET.Element, outcomes: list, mask: Mask) -> None:
    """The suite "tests": one testcase per job and test (``%test``, the MPI smoke test,
    ...), so a forge's test view lists each test of each image."""
    cases = [(o, t) for o in outcomes
             for t in ((o.stages.get("test") or {}).get("tests") or [])]
    suite = _suite(root, "tests", [t.get("result", "") for _, t in cases])
    for outcome, test in cases:
        _case(suite, mask, str(test.get("name", "")), float(test.get("duration") or 0),
              {"classname": outcome.job.id, "result": test.get("result", ""),
               "reason": test.get("reason", ""), "out": f"log: {outcome.log}"})


def write_junit(outcomes: list, path: Path, publications: list | None, *, mask: Mask,
                run: dict | None = None) -> None:
    run = run or {}
    root = ET.Element("testsuites", name="pipeline run")
    jobs = _suite(root, "jobs", [o.result for o in outcomes])
    total = 0.0
    if run:
        props = ET.SubElement(jobs, "properties")
        for key in ("id", "status", "exit_code", "reason"):
            if run.get(key) not in (None, ""):
                ET.SubElement(props, "property", name=f"run.{key}", value=_text(mask, run[key]))
    for o in outcomes:
        total += o.duration
        _case(jobs, mask, o.job.id, o.duration,
              {"classname": o.job.id.rsplit("@", 1)[0], "result": o.result, "reason": o.reason,
               "properties": _stage_properties(o.stages), "out": f"log: {o.log}"})
    jobs.set("time", f"{total:.1f}")
    _tests_suite(root, outcomes, mask)
    pubs = publications or []
    results = [{"failed": "failed", "refused": "skipped", "interrupted": "interrupted"}.get(
        p.get("result", ""), "passed") for p in pubs]
    suite = _suite(root, "publications", results)
    for p, result in zip(pubs, results, strict=True):
        where = "\n".join(p.get("refs", []))
        _case(suite, mask, f"{p.get('repository')}:{p.get('tag')}",
              float(p.get("duration") or 0),
              {"classname": p.get("repository", ""), "result": result,
               "reason": p.get("reason", ""),
               "properties": {"result": p.get("result", "")},
               "out": f"log: {p.get('log', '')}" + (f"\n{where}" if where else "")})
    ET.indent(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    ET.ElementTree(root).write(partial, encoding="utf-8", xml_declaration=True)
    partial.replace(path)
