"""SHA-256 digests of bytes and of files (streamed, so memory stays O(1) in the file size)."""

from __future__ import annotations

import hashlib
import os

_CHUNK_BYTES = 1 << 20


def sha256(data: bytes) -> str:
    """The hexadecimal SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The hexadecimal SHA-256 of a file, read in 1 MiB chunks (never whole).

    Raises:
        OSError: if the file cannot be read.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()
