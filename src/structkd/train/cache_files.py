"""The files of a teacher cache: parts of per-sentence tensors, read row by row from disk.

A *part* is one safetensors file holding the rows of some sentences: per tensor kind ``c``, their
values concatenated flat (``c{c}.data``) and each row's shape (``c{c}.shapes`` [rows, ndim]),
plus the sentences' ids (``index`` [rows]). Nothing but the shapes and ids is kept in memory: a
row is read from the file with one positioned read per tensor when a batch asks for it
(``CachedRows``), so a cache of any size costs ``O(sentences)`` small integers of RAM, and the
operating system's page cache, not the process, holds the data.

The safetensors header (8 bytes of little-endian length, then JSON naming each tensor's dtype,
shape and byte range) is parsed here rather than through ``safe_open``: a memory map would leave
every page a training epoch touches in the process's resident set.
"""

from __future__ import annotations

import json
import struct
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import torch
from torch import Tensor

from structkd.models.checkpoint import tensors_to_bytes

Marginals = list[Tensor]  # one sentence's tensors, cropped to its length

DTYPES = {
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F64": torch.float64,
    "I64": torch.int64,
    "I32": torch.int32,
}
OPEN_FILES = 64
"""Part files kept open at once by a reader (least recently used ones are closed)."""


def serialize(rows: Sequence[Marginals], key: str, index: Sequence[int]) -> bytes:
    """A part's bytes: rows of the sentences ``index`` (in that order)."""
    tensors: dict[str, Tensor] = {"index": torch.tensor(list(index), dtype=torch.long)}
    for c in range(len(rows[0]) if rows else 0):
        tensors[f"c{c}.data"] = torch.cat([r[c].flatten() for r in rows])
        tensors[f"c{c}.shapes"] = torch.tensor([list(r[c].shape) for r in rows], dtype=torch.long)
    return tensors_to_bytes(tensors, {"key": key, "sentences": str(len(rows))})


def _read_exact(handle: BinaryIO, offset: int, size: int) -> bytearray:
    buffer = bytearray(size)
    handle.seek(offset)
    if handle.readinto(buffer) != size:  # type: ignore[attr-defined]
        raise ValueError(f"the file ends before byte {offset + size}")
    return buffer


def _header(handle: BinaryIO) -> tuple[int, dict[str, Any]]:
    """Where the tensor data begins, and the header's tensor entries."""
    (length,) = struct.unpack("<Q", _read_exact(handle, 0, 8))
    if length > 100_000_000:
        raise ValueError(f"a header of {length} bytes")
    header = json.loads(bytes(_read_exact(handle, 8, length)).decode("utf-8"))
    if not isinstance(header, dict):
        raise ValueError("its header is no mapping")
    header.pop("__metadata__", None)
    return 8 + length, header


def read_tensor(handle: BinaryIO, start: int, entry: Any, begin: int = 0, end: int = -1) -> Tensor:
    """Elements ``begin:end`` (-1: all) of a header entry's tensor, flat."""
    dtype = DTYPES.get(str(entry.get("dtype"))) if isinstance(entry, dict) else None
    if dtype is None:
        raise ValueError(f"a tensor of unknown type {entry!r}")
    first, last = entry["data_offsets"]
    width = torch.empty((), dtype=dtype).element_size()
    count = (last - first) // width
    end = count if end < 0 else end
    if not 0 <= begin <= end <= count:
        raise ValueError(f"elements {begin}:{end} of a tensor of {count}")
    buffer = _read_exact(handle, start + first + begin * width, (end - begin) * width)
    return _as_tensor(buffer, dtype)


def _as_tensor(buffer: bytearray, dtype: torch.dtype) -> Tensor:
    """The flat tensor a buffer holds (``frombuffer`` refuses an empty one)."""
    return torch.frombuffer(buffer, dtype=dtype) if buffer else torch.empty(0, dtype=dtype)


class Part:
    """One part file: its rows' shapes and positions in memory, the values on disk.

    Raises (on construction):
        ValueError, OSError: when the file is unreadable or its shapes do not fill its data
            exactly (a truncated or damaged file).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        with path.open("rb") as handle:
            self.start, self.header = _header(handle)
            self.index = read_tensor(handle, self.start, self.header["index"]).clone()
            self.shapes: list[list[list[int]]] = []
            # per kind: dtype, bytes per value and where its data begins; and its rows' element
            # offsets [rows + 1] (numpy: reading one is ~10x cheaper than indexing a tensor)
            self._kinds: list[tuple[torch.dtype, int, int]] = []
            self._offsets: list[Any] = []
            rows = self.index.numel()
            c = 0
            while f"c{c}.data" in self.header:
                data = self.header[f"c{c}.data"]
                flat = read_tensor(handle, self.start, self.header[f"c{c}.shapes"])
                ndim = flat.numel() // rows if rows else 0
                if rows and (ndim == 0 or flat.numel() != rows * ndim):
                    raise ValueError(f"{flat.numel()} shape values for {rows} rows")
                shapes = flat.view(rows, ndim) if rows else flat.view(0, 0)
                if bool((shapes < 0).any()):
                    raise ValueError("a negative shape")
                sizes = shapes.prod(1) if rows else torch.zeros(0, dtype=torch.long)
                offsets = torch.cat([torch.zeros(1, dtype=torch.long), sizes.cumsum(0)])
                width = DTYPES[data["dtype"]].itemsize if data.get("dtype") in DTYPES else 0
                stored = (data["data_offsets"][1] - data["data_offsets"][0]) // max(width, 1)
                if width == 0 or int(offsets[-1]) != stored:
                    raise ValueError(f"rows of {int(offsets[-1])} values, data of {stored}")
                self.shapes.append(shapes.tolist())
                dtype = DTYPES[data["dtype"]]
                self._kinds.append((dtype, width, self.start + data["data_offsets"][0]))
                self._offsets.append(offsets.numpy())
                c += 1
            self.kinds = c

    def row(self, handle: BinaryIO, r: int) -> Marginals:
        """Row ``r``'s tensors, read from ``handle`` (this part's file, opened)."""
        out = []
        for c in range(self.kinds):
            dtype, width, base = self._kinds[c]
            begin, end = int(self._offsets[c][r]), int(self._offsets[c][r + 1])
            buffer = _read_exact(handle, base + begin * width, (end - begin) * width)
            flat = _as_tensor(buffer, dtype)
            out.append(flat.view(self.shapes[c][r]))
        return out


class CachedRows(Sequence[Marginals]):
    """The cached rows of every sentence, read from the part files when asked for.

    Args:
        parts: the cache's parts.
        part_of: IntTensor [S]: each sentence's part.
        row_of: IntTensor [S]: each sentence's row in its part.
    """

    def __init__(self, parts: list[Part], part_of: Tensor, row_of: Tensor) -> None:
        self.parts = parts
        self.part_of = part_of
        self.row_of = row_of
        self._open: OrderedDict[int, BinaryIO] = OrderedDict()

    def __len__(self) -> int:
        return int(self.part_of.numel())

    def _handle(self, p: int) -> BinaryIO:
        handle = self._open.pop(p, None)
        if handle is None:
            if len(self._open) >= OPEN_FILES:
                _, oldest = self._open.popitem(last=False)
                oldest.close()
            handle = self.parts[p].path.open("rb")
        self._open[p] = handle
        return handle

    def __getitem__(self, i: int) -> Marginals:  # type: ignore[override]
        if not -len(self) <= i < len(self):
            raise IndexError(f"sentence {i} of {len(self)}")
        p, r = int(self.part_of[i]), int(self.row_of[i])
        return self.parts[p].row(self._handle(p), r)

    def __iter__(self) -> Iterator[Marginals]:
        return (self[i] for i in range(len(self)))

    def rows(self, indices: Sequence[int]) -> list[Marginals]:
        """The rows of sentences ``indices`` (a batch), in that order."""
        return [self[i] for i in indices]

    def close(self) -> None:
        """Closes the open part files (reading again reopens them)."""
        while self._open:
            self._open.popitem()[1].close()

    def __del__(self) -> None:
        self.close()
