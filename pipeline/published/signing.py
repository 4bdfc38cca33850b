"""The key a cluster verifies the factory's SIFs with, shipped in the catalogue (``signing``).

``PIPELINE_SIGNING_PUBLIC_KEY`` names a file holding the ASCII-armoured OpenPGP public key
that belongs to ``PIPELINE_SIGNING_KEY`` (``apptainer key export KEYFILE`` writes one).
The catalogue carries the key and its fingerprint, so ``apptainer verify`` can check a
mirrored SIF with nothing but the catalogue.  Unset: ``signing`` is null.

The fingerprint is computed here from the key's first packet (RFC 4880, 12.2: a version 4
key's fingerprint is the SHA-1 of 0x99, the packet body's two-byte length and the body),
which is what ``apptainer key list`` and ``gpg --fingerprint`` print.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from pathlib import Path

from pipeline.errors import InputError, Problem

VARIABLE = "PIPELINE_SIGNING_PUBLIC_KEY"
PUBLIC_KEY_TAG = 6
BEGIN = "-----BEGIN PGP PUBLIC KEY BLOCK-----"


def signing_of(env: dict | None = None) -> dict | None:
    """``{"public_key", "fingerprint"}`` from ``PIPELINE_SIGNING_PUBLIC_KEY``, or None when
    it is unset; InputError (naming the variable) when the file is not such a key."""
    env = os.environ if env is None else env
    given = env.get(VARIABLE)
    if not given:
        return None
    path = Path(given)
    try:
        text = path.read_text(encoding="ascii")
        fingerprint = fingerprint_of(text)
    except (OSError, UnicodeDecodeError, ValueError) as err:
        reason = err.strerror if isinstance(err, OSError) else str(err)
        raise InputError([Problem(VARIABLE, None, (
            f"'{path}' is not an ASCII-armoured OpenPGP public key ({reason}); export it "
            "with `apptainer key export PUBLIC.asc`, or unset the variable"))]) from None
    return {"public_key": text.strip() + "\n", "fingerprint": fingerprint}


def fingerprint_of(armoured: str) -> str:
    """The version 4 fingerprint (40 upper-case hex digits) of an armoured public key."""
    data = _dearmour(armoured)
    tag, body = _first_packet(data)
    if tag != PUBLIC_KEY_TAG:
        raise ValueError(f"its first packet is of type {tag}, not a public key (type 6)")
    if not body or body[0] != 4:  # noqa: PLR2004 - the key format's version
        raise ValueError(f"a version {body[0] if body else '?'} key; only version 4 keys "
                         "(what apptainer key newpair makes) are known")
    return hashlib.sha1(b"\x99" + len(body).to_bytes(2, "big") + body).hexdigest().upper()


def _dearmour(text: str) -> bytes:
    lines = [line.strip() for line in text.strip().splitlines()]
    if BEGIN not in lines:
        raise ValueError(f"no '{BEGIN}' line")
    lines = lines[lines.index(BEGIN) + 1:]
    body = lines[lines.index("") + 1:] if "" in lines else lines  # after the headers
    payload = [line for line in body if line and not line.startswith(("=", "-----"))]
    try:
        return base64.b64decode("".join(payload), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("its armour is not base64") from None


def _first_packet(data: bytes) -> tuple[int, bytes]:
    """(tag, body) of the first OpenPGP packet (old or new header format)."""
    if not data or not data[0] & 0x80:
        raise ValueError("it does not start with an OpenPGP packet")
    if data[0] & 0x40:  # new format: tag in the low six bits, then a length
        tag, first = data[0] & 0x3F, data[1]
        if first < 192:  # noqa: PLR2004 - RFC 4880, 4.2.2
            start, length = 2, first
        elif first < 224:  # noqa: PLR2004
            start, length = 3, ((first - 192) << 8) + data[2] + 192
        elif first == 255:  # noqa: PLR2004
            start, length = 6, int.from_bytes(data[2:6], "big")
        else:
            raise ValueError("a partial-length first packet")
    else:  # old format: tag in bits 5-2, length type in bits 1-0
        tag, kind = (data[0] >> 2) & 0x0F, data[0] & 0x03
        size = {0: 1, 1: 2, 2: 4}.get(kind)
        if size is None:
            raise ValueError("an indeterminate-length first packet")
        start, length = 1 + size, int.from_bytes(data[1:1 + size], "big")
    body = data[start:start + length]
    if len(body) != length:
        raise ValueError("its first packet is cut short")
    return tag, body
