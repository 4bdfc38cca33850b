"""The Apptainer definition file of a job: ``Bootstrap: docker-daemon`` from the built image.

Example (shortened)::

    Bootstrap: docker-daemon
    From: 127.0.0.1:5000/factory-staging/sjtuhpc/hpc-base-container:3f9c...-amd64

    %labels
        org.sjtuhpc.factory.id sjtuhpc/hpc-base-container:ompi-4.1@amd64
        org.sjtuhpc.factory.build-id 3f9c...
        org.sjtuhpc.factory.image-digest sha256:...
        org.sjtuhpc.factory.var.gcc 12
    %test
        set -eu
        export GCC='12' MPI_FAMILY='openmpi' ...
        <the recipe's test.sh>

Values in it come from matrix.yaml, git and the registry.  The catalogue refuses control
characters, and this module does not rely on it: Apptainer starts a section at any line
whose first word starts with ``%`` (indented or not; ``parser/deffile.go``), and a
``%setup`` section runs as root on the host that converts.  So every interpolated value
goes through ``one_line`` (control characters and line breaks become visible escapes, and
a value that begins a line cannot begin it with ``%``), shell values are also quoted with
``shlex.quote``, names are checked, a test.sh line that would start a section is refused,
and the finished file must have exactly the sections written here (``UnsafeDefinition``
otherwise).
"""

from __future__ import annotations

import re
import shlex

from pipeline.catalogue.text import escape_controls, section_lines
from pipeline.names import BUILD_ID, FACTORY, sif_name
from pipeline.planning.jobs import Job

_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_LABEL_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")
_STAGE = re.compile(r"(?mi)^bootstrap:")  # how Apptainer splits a file into build stages


class UnsafeDefinition(ValueError):
    """A name, value or test script would change the structure of the definition file."""


def one_line(value: object, *, starts_line: bool = False) -> str:
    """``value`` as text that stays on its line of a definition file.

    Control characters and line breaks become visible escapes (``\\n``, ``\\x1b``,
    ``\\u2028``).  When the value begins its line (``starts_line``), a ``%`` as its first
    non-blank character is written ``\\%``: Apptainer would read the line as a section.

    >>> one_line("x\\n%post\\n touch /pwned")
    'x\\\\n%post\\\\n touch /pwned'
    >>> one_line("  %setup", starts_line=True)
    '  \\\\%setup'
    """
    text = escape_controls(str(value))
    rest = text.lstrip()
    if starts_line and rest.startswith("%"):
        text = text[: len(text) - len(rest)] + "\\" + rest
    return text


def sif_labels(job: Job, build_id: str, image_digest: str, revision: str) -> dict:
    """The SIF's labels, as written in the definition file (and so as they read back)."""
    labels = {
        f"{FACTORY}.id": job.id,
        BUILD_ID: build_id,
        f"{FACTORY}.image-digest": image_digest,
        "org.opencontainers.image.revision": revision,
    }
    labels.update({f"{FACTORY}.var.{k}": v for k, v in job.variables.items()})
    return {key: one_line(value) for key, value in labels.items()}


def test_body(script: str) -> str:
    """The recipe's test script without its shebang."""
    lines = script.splitlines()
    if lines and lines[0].startswith("#!"):
        lines = lines[1:]
    return "\n".join(lines)


def definition(job: Job, image_ref: str, labels: dict, description: str,
               test_script: str | None) -> str:
    """The whole definition file; %test only when the recipe has a test script.

    UnsafeDefinition when a label key or variable name is not a plain name, or a line of
    ``test_script`` would start a section."""
    v = job.variables
    has_mpi = v.get("mpi_family", "none") not in ("none", "")
    sif = sif_name(job.id)
    out = ["Bootstrap: docker-daemon", f"From: {one_line(image_ref)}", "", "%labels"]
    out += [f"    {_label_key(key)} {one_line(value)}" for key, value in labels.items()]
    title = f"{job.id.rsplit('@', 1)[0]} for {job.arch}, built by the HPC container image factory."
    cell = ", ".join(f"{k}={val}" for k, val in v.items() if "_" not in k)
    out += ["", "%help",
            f"    {one_line(title, starts_line=True)}",
            f"    {one_line(description, starts_line=True)}" if description else "    ",
            f"    {one_line(cell, starts_line=True)}",
            "",
            f"    Run a command:   apptainer exec {sif} COMMAND",
            f"    A shell:         apptainer run {sif}"]
    if has_mpi:
        host_mpi = one_line(f"{v.get('mpi_family')} {v.get('mpi_version', '')}")
        out += [f"    MPI inside:      apptainer exec {sif} mpirun -np 4 PROGRAM",
                f"    MPI from host:   mpirun -np 4 apptainer exec {sif} PROGRAM (host {host_mpi})"]
    out += [f"    Its tests:       apptainer test {sif}",
            "", "%environment",
            f"    export FACTORY_IMAGE={shlex.quote(one_line(job.id))}",
            f"    export FACTORY_BUILD_ID={shlex.quote(one_line(labels[BUILD_ID]))}",
            "", "%runscript",
            '    if [ "$#" -eq 0 ]; then exec /bin/sh; fi',
            '    exec "$@"']
    sections = ["%labels", "%help", "%environment", "%runscript"]
    if test_script is not None:
        for number, word in section_lines(test_script):
            raise UnsafeDefinition(f"test.sh line {number}: '{word}' would start a section of "
                                   "the definition file; rewrite the line so that its first "
                                   "word does not start with '%'")
        exports = " ".join(f"{_variable(k)}={shlex.quote(one_line(val))}" for k, val in v.items())
        # /bin/sh runs %test without -e: without `set -eu` a failing line is ignored.
        out += ["", "%test", "    set -eu", f"    export {exports}"]
        out += [f"    {line}" if line else "" for line in test_body(test_script).splitlines()]
        sections.append("%test")
    text = "\n".join(out) + "\n"
    _check_structure(text, sections)
    return text


def section_headers(text: str) -> list[str]:
    """The section headers Apptainer finds in ``text``, in order (see ``section_lines``)."""
    return [word for _, word in section_lines(text)]


def _check_structure(text: str, sections: list[str]) -> None:
    found = section_headers(text)
    stages = len(_STAGE.findall(text))
    if found != sections or stages != 1:
        raise UnsafeDefinition(f"the definition file would have the sections {found} and "
                               f"{stages} build stage(s), not {sections} and 1")


def label_key(key: str) -> str:
    """``key`` when it is a plain label name; UnsafeDefinition otherwise."""
    return _label_key(key)


def _label_key(key: str) -> str:
    if not _LABEL_KEY.match(key):
        raise UnsafeDefinition(f"label name '{escape_controls(key)}' is not letters, digits, "
                               "'.', '_' and '-'")
    return key


def _variable(name: str) -> str:
    upper = name.upper()
    if not _VARIABLE.match(upper):
        raise UnsafeDefinition(f"variable '{escape_controls(name)}' is not a shell variable "
                               "name ([A-Za-z_][A-Za-z0-9_]*)")
    return upper
