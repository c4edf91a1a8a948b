"""Line-level reading shared by the readers: encodings, byte-order marks, line numbers.

Writing goes through :func:`structkd.io.text_output` (atomic for regular files).
"""

from __future__ import annotations

import codecs
import os
from collections.abc import Generator
from typing import BinaryIO

from structkd.data.errors import DataError

PathLike = str | os.PathLike[str]

_UTF8_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
_CHUNK_BYTES = 1 << 16


def open_binary(path: PathLike) -> BinaryIO:
    """Opens ``path`` for reading bytes.

    Raises:
        DataError: if it cannot be opened (missing, a directory, no permission).
    """
    try:
        return open(path, "rb")
    except OSError as e:
        raise DataError(path, f"cannot open: {e.strerror or e}") from e


def detect_encoding(path: PathLike) -> str:
    """``"utf-8"`` if the whole file is valid UTF-8, else ``"latin-1"`` (which decodes any bytes).

    Reads the file once in 64 KiB chunks, so memory stays bounded for any file size. O(bytes).

    Raises:
        DataError: if the file cannot be opened.
    """
    decoder = codecs.getincrementaldecoder("utf-8")()
    with open_binary(path) as f:
        try:
            while chunk := f.read(_CHUNK_BYTES):
                decoder.decode(chunk)
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            return "latin-1"
    return "utf-8"


def resolve_encoding(path: PathLike, encoding: str | None) -> str:
    """``encoding`` checked to exist, or the detected one when None.

    Raises:
        DataError: for an unknown encoding name, or a file that cannot be opened.
    """
    if encoding is None:
        return detect_encoding(path)
    try:
        codecs.lookup(encoding)
    except LookupError as e:
        raise DataError(path, f"unknown encoding {encoding!r}") from e
    return encoding


def iter_lines(
    path: PathLike, encoding: str | None = None
) -> Generator[tuple[int, str], None, None]:
    """Yields ``(line_number, text)`` for each line, 1-based, without the line ending.

    Lines end at ``\\n`` only (a ``\\r`` before it is dropped, so CRLF files read like LF files);
    other characters that ``str.splitlines`` would treat as line breaks (``\\x1c``, ``\\u2028``)
    stay inside the line, because corpora contain them inside tokens. A UTF-8 byte-order mark at
    the start is dropped. Streams: one line in memory at a time.

    Args:
        path: the file.
        encoding: a codec whose newline is the byte ``\\n`` (ASCII-compatible); None = UTF-8,
            or Latin-1 when the file is not valid UTF-8 (see :func:`detect_encoding`).

    Raises:
        DataError: if the file cannot be opened, starts with a UTF-16 byte-order mark, or a line
            does not decode with an explicitly given ``encoding``.
    """
    encoding = resolve_encoding(path, encoding)
    strip_bom = codecs.lookup(encoding).name in ("utf-8", "utf-8-sig")
    with open_binary(path) as f:
        for number, raw in enumerate(f, start=1):
            if number == 1:
                if raw.startswith(_UTF16_BOMS):
                    raise DataError(path, "UTF-16 is not supported; re-encode the file as UTF-8", 1)
                if strip_bom and raw.startswith(_UTF8_BOM):
                    raw = raw[len(_UTF8_BOM) :]
            try:
                text = raw.decode(encoding)
            except UnicodeDecodeError as e:
                raise DataError(path, f"not valid {encoding}: {e.reason}", number) from e
            yield number, text.rstrip("\r\n")

