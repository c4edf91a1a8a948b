"""The bottom layer: safe file writes and digests, on the standard library alone.

Everything in structkd that writes a file that must never be seen half-written, or names a file
or a byte string by its SHA-256, goes through here. It imports nothing else of structkd, so every
other layer may import it.
"""

from structkd.io.files import (
    atomic_write_bytes,
    atomic_write_json,
    clean_stale_temporaries,
    named_error,
    temporary_directory,
    text_output,
)
from structkd.io.hashing import file_sha256, sha256

__all__ = [
    "atomic_write_bytes",
    "atomic_write_json",
    "clean_stale_temporaries",
    "file_sha256",
    "named_error",
    "sha256",
    "temporary_directory",
    "text_output",
]
