"""Frozen pretrained word or subword vectors as a word representation.

A ``VectorTable`` is a table of vectors (float32, or uint8 codes with a per-row affine
de-quantization) and a segmenter saying which rows make up a word: one row for a word table
(GloVe: the word itself, else its lowercase form), several for a subword table (WordPiece or
SentencePiece pieces), whose vectors are mean-pooled. A word without rows is *missing* and gets
a learned unknown vector. ``PretrainedVectors`` is the module: frozen table, learned unknown
vector, optional trainable projection.

The table is never a parameter. Where the table comes from a named, installed source it is not
part of the module's ``state_dict`` either (a checkpoint names the source and records the table's
SHA-256, checked on load); a table read from a text file is a buffer and so is saved with the
model. Frozen tables are held outside ``nn.Module`` buffers when they are not saved, so that
DistributedDataParallel does not broadcast them on every step; ``_apply`` moves them with the
module.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

Segmenter = Callable[[str], Sequence[int]]
"""word -> the table rows whose mean is its vector (empty: the word is missing)."""


class VectorTable:
    """A frozen table of word or subword vectors and the map from words to its rows.

    Args:
        name: the source's name (a registered name such as ``glove-6b-50d``, or a file path).
        table: [V, D] float32 vectors, or [V, D] uint8 codes when ``scale`` is given.
        segment: word -> row ids (see ``Segmenter``).
        scale: [V] float32 de-quantization scale per row (row r is ``table[r] * scale[r] +
            offset[r]``), or None for a float table.
        offset: [V] float32 de-quantization offset per row.
        lowercased: the table knows lowercase forms only (casing must come from elsewhere).
        subword: rows are subword pieces, pooled per word.
        words: the words of a word table (row i = ``words[i]``), None for subword tables.
    """

    def __init__(
        self,
        name: str,
        table: Tensor,
        segment: Segmenter,
        scale: Tensor | None = None,
        offset: Tensor | None = None,
        lowercased: bool = False,
        subword: bool = False,
        words: Sequence[str] | None = None,
    ) -> None:
        if table.dim() != 2:
            raise ValueError(f"{name}: a vector table is [rows, dim], got {tuple(table.shape)}")
        if (scale is None) != (table.dtype != torch.uint8) or (scale is None) != (offset is None):
            raise ValueError(f"{name}: uint8 codes need a scale and an offset, float tables none")
        self.name = name
        self.table = table
        self.scale = scale
        self.offset = offset
        self.lowercased = lowercased
        self.subword = subword
        self.words = words
        self._segment = segment
        self._rows: dict[str, tuple[int, ...]] = {}
        self._fingerprint: str | None = None

    @property
    def num_rows(self) -> int:
        return int(self.table.shape[0])

    @property
    def dim(self) -> int:
        return int(self.table.shape[1])

    def tensors(self) -> dict[str, Tensor]:
        """The stored tensors (``table``, and ``scale``/``offset`` for quantized tables)."""
        out = {"table": self.table}
        if self.scale is not None and self.offset is not None:
            out.update(scale=self.scale, offset=self.offset)
        return out

    def rows(self, word: str) -> tuple[int, ...]:
        """The rows of ``word`` (memoised: segmenting is Python and runs once per word type)."""
        found = self._rows.get(word)
        if found is None:
            found = tuple(int(r) for r in self._segment(word))
            self._rows[word] = found
        return found

    def vector(self, word: str) -> Tensor | None:
        """The (pooled) vector [D] of ``word``, or None if it is missing."""
        rows = self.rows(word)
        if not rows:
            return None
        return lookup(self.tensors(), torch.tensor(rows)).mean(0)

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the table's bytes (and de-quantization), computed once; O(V D)."""
        if self._fingerprint is None:
            digest = hashlib.sha256()
            for key, tensor in sorted(self.tensors().items()):
                digest.update(key.encode())
                digest.update(tensor.contiguous().view(torch.uint8).numpy().tobytes())
            self._fingerprint = digest.hexdigest()
        return self._fingerprint


def lookup(tensors: dict[str, Tensor], ids: Tensor) -> Tensor:
    """Float vectors [..., D] of row ids [...] (all valid rows), de-quantizing uint8 codes."""
    rows = tensors["table"][ids]  # [..., D]
    if "scale" not in tensors:
        return rows
    return rows.float() * tensors["scale"][ids, None] + tensors["offset"][ids, None]


class PretrainedVectors(nn.Module):
    """Word vectors [B, N, dim] from a frozen ``VectorTable``: rows pooled per word, a learned
    vector for missing words, an optional trainable linear projection.

    Cost per batch O(B N P D) for at most P rows per word (P = 1 for word tables).

    Args:
        source: the table.
        dim: output size; a projection D -> dim is added when it differs from the table's D.
        project: add the projection even when ``dim`` equals D.
        saved: keep the table in ``state_dict`` (for tables that cannot be named, such as a text
            file); otherwise only the table's fingerprint is saved and checked on load.
    """

    def __init__(self, source: VectorTable, dim: int, project: bool, saved: bool) -> None:
        super().__init__()
        self.source = source
        self.saved = saved
        self._frozen: dict[str, Tensor] = {}
        for key, tensor in source.tensors().items():
            if saved:
                self.register_buffer(key, tensor.clone())
            else:
                self._frozen[key] = tensor
        sample = lookup(source.tensors(), torch.arange(min(source.num_rows, 10_000)))
        bound = float(sample.std()) if sample.numel() > 1 else 1.0  # the table's own scale
        self.unknown = nn.Parameter(torch.empty(source.dim).uniform_(-bound, bound))
        if not saved:
            digest = bytes.fromhex(source.fingerprint)
            self.register_buffer("fingerprint", torch.tensor(list(digest), dtype=torch.uint8))
        self.projection = nn.Linear(source.dim, dim) if project or dim != source.dim else None
        self.dim = dim

    def frozen_tensors(self) -> dict[str, Tensor]:
        """The frozen table tensors (``VectorTable.tensors``), wherever they are held."""
        if self.saved:
            return {key: getattr(self, key) for key in self.source.tensors()}
        return self._frozen

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> Any:
        """Moves the unsaved frozen tensors with the module (``to``, ``cuda``, ``float``...)."""
        result = super()._apply(fn, recurse)
        self._frozen = {key: fn(tensor) for key, tensor in self._frozen.items()}
        return result

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        """Refuses weights trained on another table than the one installed now."""
        saved = state_dict.get(prefix + "fingerprint")
        if not self.saved and saved is not None and saved.shape == (32,):
            if bytes(saved.tolist()).hex() != self.source.fingerprint:
                error_msgs.append(
                    f"the pretrained vectors {self.source.name!r} installed here differ from "
                    "those the model was trained with (another package version?)"
                )
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def rows(self, tokens: Sequence[Sequence[str]], width: int) -> Tensor:
        """LongTensor [B, width, P] of each word's rows: ids < V are rows, V marks a missing
        word (its learned vector), -1 is padding."""
        found = [[self.source.rows(w) or (self.source.num_rows,) for w in s] for s in tokens]
        pieces = max((len(r) for s in found for r in s), default=1)
        ids = torch.full((len(tokens), width, pieces), -1, dtype=torch.long)
        for b, sentence in enumerate(found):
            for i, rows in enumerate(sentence):
                ids[b, i, : len(rows)] = torch.tensor(rows, dtype=torch.long)
        return ids

    def forward(self, rows: Tensor) -> Tensor:
        """Word vectors [B, N, dim] from ``rows(...)`` [B, N, P]; zeros at padding."""
        size = self.source.num_rows
        tensors = self.frozen_tensors()
        vectors = lookup(tensors, rows.clamp(0, size - 1))  # [B, N, P, D]
        vectors = torch.where((rows == size)[..., None], self.unknown, vectors)
        used = (rows >= 0)[..., None]  # [B, N, P, 1]
        pooled = (vectors * used).sum(-2) / used.sum(-2).clamp(min=1)  # [B, N, D]
        if self.projection is not None:
            pooled = self.projection(pooled)  # [B, N, dim]
        return pooled
