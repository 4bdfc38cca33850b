"""Files only their owner may read: logins, keys, tokens.

Written under a temporary name with mode 0600 from the start (never world-readable, not
even for a moment) and renamed into place, so a reader never sees half a file.
"""

from __future__ import annotations

import os
from pathlib import Path


def write_private(path: Path, content: str | bytes) -> None:
    """Write ``content`` to ``path``, readable and writable by its owner only."""
    partial = path.with_name(path.name + ".partial")
    partial.unlink(missing_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    with os.fdopen(os.open(partial, flags, 0o600), "wb" if isinstance(content, bytes) else "w"
                   ) as out:
        out.write(content)
    partial.replace(path)
