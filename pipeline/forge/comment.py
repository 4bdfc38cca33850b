"""The report as Markdown: the sticky comment, ``out/report.md`` and the step summary.

It starts with the hidden marker (:data:`MARKER`) the reporters find their comment by, then
a headline (the overall result, job counts, the mode), a line saying which run and commit,
the parts whose run broke, a table with one row per tag (``repository:tag``: its arches,
result, reason, duration, links to the job logs), what would be published (pr mode: every
tag whose every arch passed) or what was (the publications), and the merge's notes.

Reasons come from build output, which a pull request controls: each cell is masked, cut
to its first line and escaped so that it stays one cell of one row and cannot add links,
HTML, emphasis or @mentions (``|``, backticks, ``<``, ``>``, ``&``, ``[``, ``]``, ``*``,
``_``, ``~``, ``\\`` and ``@``).  A part's ``job_url`` is linked only when it is on the
forge's own server (the fork reporter reads parts a fork's run wrote); otherwise the run's
page is linked.  The whole text is capped at :data:`MAX_CHARS` (GitHub takes 65536 in a
comment, 65535 in a check run's summary): rows are dropped from the end (passed ones come
last) with a "... N more rows, see the run" line.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from pipeline.forge.summary_parts import Job, View

MARKER = "<!-- sjtuhpc-factory-report -->"
MAX_CHARS = 65_000
DESCRIPTION_CHARS = 140  # GitHub's limit on a commit status's description
REASON_CHARS = 200
MINUTE, HOUR = 60, 3600
ICONS = {"passed": "✅", "failed": "❌", "error": "💥", "interrupted": "⏹️", "pending": "⏳",
         "skipped": "⏭️", "published": "✅", "already published": "☑️", "refused": "🚫"}
RANK = {"failed": 0, "interrupted": 1, "skipped": 2, "passed": 3}
Mask = Callable[[str], str]

_CELL = str.maketrans({"\\": "\\\\", "|": "\\|", "`": "\\`", "<": "&lt;", ">": "&gt;",
                       "&": "&amp;", "[": "\\[", "]": "\\]", "*": "\\*", "_": "\\_",
                       "~": "\\~", "@": "@\u200b", "\t": " ", "\r": " ", "\n": " "})
_URL = str.maketrans({" ": "%20", "(": "%28", ")": "%29", "<": "%3C", ">": "%3E",
                      "|": "%7C", "`": "%60", '"': "%22"})
_SAFE_NAME = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-/:@+")


@dataclass(frozen=True)
class Links:
    """Where the report's links go: the run's page, and the prefix a part's ``job_url``
    must have to be linked (None: any)."""

    run_url: str | None = None
    trusted_prefix: str | None = None
    sha: str | None = None

    def job_url(self, job: Job) -> str | None:
        url = job.job_url
        if url and (self.trusted_prefix is None or url.startswith(self.trusted_prefix + "/")):
            return url
        return self.run_url


def escape_cell(text: str, mask: Mask, limit: int = REASON_CHARS) -> str:
    """``text`` masked, its first non-blank line only, cut at ``limit``, escaped for a
    Markdown table cell."""
    line = next((part for part in mask(text).splitlines() if part.strip()), "").strip()
    if len(line) > limit:
        line = line[:limit - 1] + "…"
    return "".join(c if c.isprintable() else " " for c in line).translate(_CELL)


def code(text: str, mask: Mask) -> str:
    """A name as inline code when that is safe, else as escaped text."""
    text = mask(text)
    return f"`{text}`" if text and set(text) <= _SAFE_NAME else escape_cell(text, mask, 300)


def link(label: str, url: str) -> str:
    if not url.startswith(("https://", "http://")):
        return label
    return f"[{label}]({url.translate(_URL)})"


def counts_text(view: View) -> str:
    counts = view.counts()
    jobs = ", ".join(f"{counts[r]} {r}" for r in ("failed", "interrupted", "passed",
                                                   "skipped") if counts[r]) or "no jobs"
    published = Counter(p.result for p in view.publications)
    if published:
        jobs += "; publications: " + ", ".join(f"{n} {r}" for r, n in published.items())
    return jobs


def description(view: View) -> str:
    """The commit status's description: at most 140 characters."""
    modes = "/".join(view.modes)
    text = counts_text(view) + (f" ({modes})" if modes else "")
    return text if len(text) <= DESCRIPTION_CHARS else text[:DESCRIPTION_CHARS - 1] + "…"


def title(view: View) -> str:
    return f"factory: {view.state}: {counts_text(view)}"


def render(view: View, links: Links, mask: Mask, cap: int = MAX_CHARS) -> str:
    """The whole Markdown report, masked, at most ``cap`` characters."""
    head = [MARKER, f"## {ICONS.get(view.state, '')} factory: {counts_text(view)}", "",
            _about(view, links, mask), ""]
    for part in view.troubled_parts():
        head.append(f"> {ICONS.get(part.status, '⚠️')} {code(part.path, mask)}: "
                    f"{escape_cell(part.status or '', mask)}: "
                    f"{escape_cell(part.reason, mask, 300)}")
    if view.troubled_parts():
        head.append("")
    blocks = [head]
    table = _Block(["| image | arches | result | reason | duration | log |",
                    "|---|---|---|---|---|---|"], _rows(view, links, mask), "rows")
    blocks.append(table if table.lines else _Block(["No jobs ran."], [], "rows"))
    blocks.extend(_publishing(view, mask))
    blocks.append(_Block(["", "<details><summary>notes</summary>", ""] if view.notes else [],
                         [f"- {escape_cell(n, mask, 500)}" for n in view.notes], "notes",
                         ["", "</details>"] if view.notes else []))
    text = "\n".join(_fit(blocks, cap)).rstrip("\n") + "\n"
    text = mask(text)
    return text if len(text) <= cap else text[:cap - 2] + "…\n"


def _about(view: View, links: Links, mask: Mask) -> str:
    bits = []
    if view.modes:
        bits.append("mode " + ", ".join(code(m, mask) for m in view.modes))
    if links.sha:
        bits.append(f"commit {code(links.sha[:12], mask)}")
    if links.run_url:
        bits.append(link("the run", links.run_url))
    bits.append(f"{len(view.parts)} part{'s' if len(view.parts) != 1 else ''}")
    return " · ".join(bits)


def _rows(view: View, links: Links, mask: Mask) -> list[str]:
    groups: dict[str, list[Job]] = {}
    for job in view.jobs:
        groups.setdefault(job.name, []).append(job)
    rows = []
    for name, jobs in groups.items():
        result = _tag_result(jobs)
        shown = [j for j in jobs if j.result == result] or jobs
        arches = ", ".join(j.arch for j in jobs)
        result_text = f"{ICONS.get(result, '')} {result}"
        if len(shown) < len(jobs):
            result_text += f" ({', '.join(j.arch for j in shown)})"
        first = next((j for j in shown if j.reason.strip()), None)
        reason = ""
        if first is not None:
            reason = escape_cell(first.reason, mask)
            if len(jobs) > 1:
                reason = f"{escape_cell(first.arch, mask)}: {reason}"
        durations = [j.duration for j in jobs if j.duration is not None]
        rows.append((RANK.get(result, 0), name, "| " + " | ".join((
            code(name, mask), escape_cell(arches, mask), result_text, reason,
            _duration(max(durations)) if durations else "", _logs(jobs, links, mask))) + " |"))
    return [row for _, _, row in sorted(rows, key=lambda r: (r[0], r[1]))]


def _tag_result(jobs: list[Job]) -> str:
    results = {j.result for j in jobs}
    for result in ("failed", "interrupted"):
        if result in results:
            return result
    return "skipped" if results == {"skipped"} else "passed" if "passed" in results else (
        next(iter(results)) if results else "skipped")


def _logs(jobs: list[Job], links: Links, mask: Mask) -> str:
    urls = [links.job_url(j) for j in jobs]
    if all(urls) and len(set(urls)) == 1:
        return link("log", mask(urls[0]))
    if any(urls):
        return " · ".join(link(escape_cell(j.arch, mask), mask(u)) if u else
                          escape_cell(j.arch, mask) for j, u in zip(jobs, urls, strict=True))
    return " ".join(code(j.log, mask) for j in jobs if j.log)


def _publishing(view: View, mask: Mask) -> list[_Block]:
    """pr: what would be published; main and nightly: what was."""
    blocks = []
    if "pr" in view.modes:
        groups: dict[str, list[Job]] = {}
        for job in view.jobs:
            groups.setdefault(job.name, []).append(job)
        ready = [f"- would publish {code(name, mask)} "
                 f"({escape_cell(', '.join(j.arch for j in jobs), mask)})"
                 for name, jobs in groups.items() if all(j.result == "passed" for j in jobs)]
        blocks.append(_Block(["", "### Would publish", "",
                              "pr mode publishes nothing; on main these tags would be "
                              "published:" if ready else
                              "pr mode publishes nothing; no tag passed on every arch.",
                              *([""] if ready else [])], ready, "tags"))
    if view.publications:
        lines = []
        for p in view.publications:
            detail = ", ".join(code(r, mask) for r in p.refs) if p.result in (
                "published", "already published") else escape_cell(p.reason, mask, 300)
            lines.append(f"- {ICONS.get(p.result, '')} {p.result} {code(p.name, mask)}"
                         + (f": {detail}" if detail else ""))
        blocks.append(_Block(["", "### Publications", ""], lines, "publications"))
    elif set(view.modes) & {"main", "nightly"}:
        blocks.append(_Block(["", "### Publications", "", "Nothing was published."], [], ""))
    return blocks


@dataclass
class _Block:
    """Lines that stay (``head``, ``tail``) around lines that may be cut (``lines``)."""

    head: list[str]
    lines: list[str]
    what: str
    tail: list[str] = field(default_factory=list)
    kept: int = -1

    def render(self) -> list[str]:
        kept = len(self.lines) if self.kept < 0 else self.kept
        more = len(self.lines) - kept
        cut = [f"... {more} more {self.what}, see the run"] if more else []
        return [*self.head, *self.lines[:kept], *cut, *self.tail]


def _fit(blocks: list, cap: int) -> list[str]:
    """The blocks' lines, cutting the last lines of the notes, then of the publishing
    list, then of the table until the text fits in ``cap`` (a margin kept for the
    "... more" lines)."""
    budget = cap - 200
    size = sum(len(line) + 1 for block in blocks
               for line in (block if isinstance(block, list) else block.render()))
    for block in reversed([b for b in blocks if isinstance(b, _Block)]):
        block.kept = len(block.lines)
        while size > budget and block.kept > 0:
            block.kept -= 1
            size -= len(block.lines[block.kept]) + 1
    lines: list[str] = []
    for block in blocks:
        lines.extend(block if isinstance(block, list) else block.render())
    return lines


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < MINUTE:
        return f"{seconds} s"
    if seconds < HOUR:
        return f"{seconds // MINUTE} min {seconds % MINUTE} s"
    return f"{seconds // HOUR} h {seconds % HOUR // MINUTE} min"

