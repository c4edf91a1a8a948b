"""Relative-head labels: a dependency tree read as one label per word (Strzyz, Vilares &
Gomez-Rodriguez, NAACL 2019, "Viable Dependency Parsing as Sequence Labeling", encoding 2).

Each word gets one label that names its head by a signed offset and, optionally, its relation:

* ``"+2@obj"``: the head is 2 words to the right (``head = d + 2``), relation ``obj``;
* ``"-1@det"``: the head is the previous word;
* ``"ROOT@root"``: the head is the artificial root 0. The root gets its own symbol rather than
  the offset ``-d`` so that one label serves every position;
* without relations (an unlabeled parser or a file without DEPREL) the ``@rel`` part is absent:
  ``"+2"``, ``"ROOT"``.

The offset is never 0 (a word is not its own head) and the relation is everything after the first
``@``. A label inventory of K labels is what a sequence-labeling parser's ``TokenSoftmax`` has as
parts; this module gives its grammar (``format_label``, ``parse_label``) and its layout as arrays
(``label_layout``: per label its offset, whether it is ROOT, whether it is well formed, its
relation; ``label_heads``: the head each label names at each word), which the tree decoders
(``structkd.models.seqlabel_decode``) and the arc -> label projections
(``structkd.kd.arc_labels``) read. It sits with the structures because the projections, in
``kd``, may import nothing above them. The gold-tree codec is ``structkd.data.deplabels``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

ROOT_LABEL = "ROOT"
REL_SEPARATOR = "@"


def format_label(offset: int | None, rel: str | None = None) -> str:
    """The label of head offset ``offset`` (None = the root) and relation ``rel``.

    Raises:
        ValueError: on offset 0 or an empty relation.
    """
    if offset == 0:
        raise ValueError("offset 0 would make a word its own head")
    if rel is not None and not rel:
        raise ValueError("empty relation")
    head = ROOT_LABEL if offset is None else f"{offset:+d}"
    return head if rel is None else f"{head}{REL_SEPARATOR}{rel}"


def parse_label(label: str) -> tuple[int | None, str | None]:
    """(offset, relation) of a label; offset None = the root, relation None = unlabeled.

    Raises:
        ValueError: when ``label`` is not of the form ``(ROOT|+k|-k)[@rel]`` with k >= 1.
    """
    head, sep, rel = label.partition(REL_SEPARATOR)
    if sep and not rel:
        raise ValueError(f"label {label!r} has an empty relation")
    if head == ROOT_LABEL:
        offset = None
    else:
        digits = head[1:] if head[:1] in ("+", "-") else head
        if not (digits.isascii() and digits.isdigit()) or int(digits) == 0:
            raise ValueError(f"label {label!r} is not ROOT or a nonzero signed offset")
        offset = int(head)
    return offset, rel if sep else None


@functools.lru_cache(maxsize=8)
def label_layout(
    label_vocab: tuple[str, ...],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[str | None, ...]]:
    """Per label: offset (0 for ROOT), is-ROOT, well-formed, relation (None if unlabeled or
    malformed). Parsed once per vocabulary, not once per sentence. Read-only arrays [K]."""
    offsets = np.zeros(len(label_vocab), dtype=np.int64)
    is_root = np.zeros(len(label_vocab), dtype=bool)
    usable = np.zeros(len(label_vocab), dtype=bool)
    rels: list[str | None] = []
    for k, label in enumerate(label_vocab):
        try:
            offset, rel = parse_label(label)
        except ValueError:
            rels.append(None)
            continue
        usable[k] = True
        is_root[k] = offset is None
        offsets[k] = 0 if offset is None else offset
        rels.append(rel)
    for array in (offsets, is_root, usable):
        array.flags.writeable = False
    return offsets, is_root, usable, tuple(rels)


@functools.lru_cache(maxsize=8)
def label_layout_tensors(label_vocab: tuple[str, ...]) -> tuple[Tensor, Tensor, Tensor]:
    """``label_layout``'s offsets, is-ROOT and well-formed flags as CPU tensors [K]."""
    offsets, is_root, usable, _ = label_layout(label_vocab)
    return torch.tensor(offsets), torch.tensor(is_root), torch.tensor(usable)


def word_mask(log_probs: Tensor, lengths: Tensor | None) -> tuple[Tensor, Tensor]:
    """Checked lengths [B] and the in-sentence word mask [B, N] of a [B, N, K] batch."""
    if log_probs.dim() != 3:
        raise ValueError(f"log_probs must be [B, N, K], got {list(log_probs.shape)}")
    batch, size, _ = log_probs.shape
    device = log_probs.device
    if lengths is None:
        lengths = torch.full((batch,), size, dtype=torch.long, device=device)
    lengths = lengths.to(device=device, dtype=torch.long)
    if lengths.shape != (batch,) or bool(((lengths < 0) | (lengths > size)).any()):
        raise ValueError(f"lengths must be [{batch}] values in 0..{size}")
    words = torch.arange(1, size + 1, device=device)  # [N]
    return lengths, words[None, :] <= lengths[:, None]  # [B, N]


def label_heads(
    label_vocab: Sequence[str], lengths: Tensor, in_sentence: Tensor
) -> tuple[Tensor, Tensor]:
    """Each (word, label)'s head [N, K] (0 for ROOT; unclamped) and whether the label is usable
    there [B, N, K]: well formed, an in-sentence word, a head in 0..n (0 only for ROOT)."""
    device = in_sentence.device
    offsets, is_root, usable = (t.to(device) for t in label_layout_tensors(tuple(label_vocab)))
    words = torch.arange(1, in_sentence.shape[1] + 1, device=device)[:, None]  # [N, 1]
    head = torch.where(is_root, torch.zeros_like(words), words + offsets)  # [N, K]
    valid = (usable & (is_root | (head >= 1)))[None] & (head <= lengths[:, None, None])
    return head, valid & in_sentence[..., None]
