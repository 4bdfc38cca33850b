"""Names the factory gives things: label prefixes and file names made from job ids.

One file name function serves logs, SIFs and definition files, so that two jobs never share
a file.  It must be injective on job ids: ``a/b_c:d@amd64`` and ``a/b:c_d@amd64`` once both
became ``a_b_c_d_amd64``.  So ``_`` is doubled, and every other character that does not
belong in a file name (``/``, ``:``, ``@``, ...) becomes one ``_``::

    >>> file_name("sjtuhpc/hpc-base-container:ompi-4.1@arm64")
    'sjtuhpc_hpc-base-container_ompi-4.1_arm64'
    >>> file_name("a/b_c:d@amd64"), file_name("a/b:c_d@amd64")
    ('a_b__c_d_amd64', 'a_b_c__d_amd64')
"""

from __future__ import annotations

import re

OCI = "org.opencontainers.image"
FACTORY = "org.sjtuhpc.factory"
BUILD_ID = f"{FACTORY}.build-id"

_UNSAFE = re.compile(r"[^A-Za-z0-9.-]")


def file_name(text: str) -> str:
    """A file name for ``text`` (a job id or a ``repository:tag``); see the module's text."""
    return _UNSAFE.sub(lambda m: "__" if m.group() == "_" else "_", text)


def sif_name(job_id: str) -> str:
    return file_name(job_id) + ".sif"
