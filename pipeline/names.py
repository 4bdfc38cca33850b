"""Names the factory gives things: label prefixes and file names made from job ids.

One file name function serves logs, SIFs and definition files, so that two jobs never share
a file.  It must be injective on job ids: ``a/b_c:d@amd64`` and ``a/b:c_d@amd64`` once both
became ``a_b_c_d_amd64``.  So ``_`` is doubled, and every other character that does not
belong in a file name (``/``, ``:``, ``@``, ...) becomes one ``_``::

    >>> file_name("sjtuhpc/hpc-base-container:ompi-4.1@arm64")
    'sjtuhpc_hpc-base-container_ompi-4.1_arm64'
    >>> file_name("a/b_c:d@amd64"), file_name("a/b:c_d@amd64")
    ('a_b__c_d_amd64', 'a_b_c__d_amd64')

A run of underscores then reads back: an even run is doubled ``_``, an odd one ends with the
``@`` (or starts with the ``:``), the last odd run being the ``@``, the one before it the ``:``.
One case is still ambiguous: a tag that starts with ``_`` runs into its ``:``, so a tag made
only of underscores would give an even run that reads like the inside of the arch
(``a:a@a__b`` and ``a/a/a:_@b`` both ``a_a_a____b``).  An unsafe character followed by
``_`` is therefore written ``_-``: nothing else puts a ``-`` after a single ``_`` (no
repository component, tag or arch starts with ``-``)::

    >>> file_name("a/a/a:_@b"), file_name("a:a@a__b")
    ('a_a_a_-___b', 'a_a_a____b')
"""

from __future__ import annotations

import re

OCI = "org.opencontainers.image"
FACTORY = "org.sjtuhpc.factory"
BUILD_ID = f"{FACTORY}.build-id"

# An unsafe character, and (looking ahead) the "_" that may follow it.
_UNSAFE = re.compile(r"[^A-Za-z0-9.-](?=(_?))")


def _replace(match: re.Match) -> str:
    if match.group() == "_":
        return "__"
    return "_-" if match.group(1) else "_"


def file_name(text: str) -> str:
    """A file name for ``text`` (a job id or a ``repository:tag``); see the module's text."""
    return _UNSAFE.sub(_replace, text)


def sif_name(job_id: str) -> str:
    return file_name(job_id) + ".sif"
