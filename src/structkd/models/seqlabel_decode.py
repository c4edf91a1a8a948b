"""Trees from a sequence-labeling parser's label distributions (Strzyz et al., NAACL 2019,
relative-head labels, ``structkd.structures.relative_labels``): the arc scores the label
distributions imply, then the best single-root tree (Chu-Liu/Edmonds) under them, so that the
output is always a tree.

``label_arc_scores`` and ``decode_scores`` decode one sentence in numpy (what exported parsers
use); ``batch_label_arc_scores`` and ``decode_batch`` do the same for a padded batch in torch,
running Chu-Liu/Edmonds only for the sentences whose greedy heads are not already a tree.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from structkd.structures.arborescence import chu_liu_edmonds
from structkd.structures.relative_labels import label_heads, label_layout, word_mask


def _numpy(values: Any) -> np.ndarray:
    if isinstance(values, Tensor):
        values = values.detach().cpu().double().numpy()
    return np.array(values, dtype=np.float64)


def label_arc_scores(log_probs: Any, label_vocab: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Arc scores implied by per-word label distributions.

    ``arc[d, h] = log sum_{k: label k puts d's head at h} exp(log_probs[d - 1, k])``: the log
    probability that word d's head is h. Labels that are malformed or point outside the sentence
    carry no arc; an arc no label reaches scores ``-inf``. O(n K).

    Args:
        log_probs: [n, K] label log-probabilities (any log scores; -inf = impossible), numpy,
            torch or nested lists.
        label_vocab: K labels.

    Returns:
        ``arc`` [n+1, n+1] in (dep, head) layout (row 0 is ``-inf``), and ``best`` [n+1, n+1]
        int, the most probable label index behind each arc (-1 where none).
    """
    scores = _numpy(log_probs)  # [n, K]
    if scores.ndim != 2 or scores.shape[1] != len(label_vocab):
        raise ValueError(f"log_probs must be [n, {len(label_vocab)}], got {list(scores.shape)}")
    if np.isnan(scores).any() or np.isposinf(scores).any():
        raise ValueError("log_probs hold NaN or +inf")
    n, _ = scores.shape
    offsets, is_root, usable, _ = label_layout(tuple(label_vocab))
    words = np.arange(1, n + 1)[:, None]  # [n, 1]
    head = np.where(is_root[None, :], 0, words + offsets[None, :])  # [n, K]
    valid = usable[None, :] & (((head >= 1) & (head <= n)) | is_root[None, :])  # [n, K]
    valid &= np.isfinite(scores)
    # Shift by each word's best usable score so that exp cannot overflow.
    shift = np.where(valid, scores, -np.inf).max(axis=1, initial=-np.inf)  # [n]
    shift = np.where(np.isfinite(shift), shift, 0.0)
    dep_index, label_index = np.nonzero(valid)
    cell = dep_index * (n + 1) + head[dep_index, label_index]
    mass = np.zeros(n * (n + 1))
    np.add.at(mass, cell, np.exp(scores[dep_index, label_index] - shift[dep_index]))
    arc = np.full((n + 1, n + 1), -np.inf)
    with np.errstate(divide="ignore"):
        arc[1:] = np.log(mass.reshape(n, n + 1)) + shift[:, None]  # [n, n+1]
    # Per arc, the label listed first after sorting by (arc, descending score) is its best.
    order = np.lexsort((-scores[dep_index, label_index], cell))
    first = np.ones(len(order), dtype=bool)
    first[1:] = cell[order][1:] != cell[order][:-1]
    chosen = order[first]
    best = np.full((n + 1, n + 1), -1, dtype=np.int64)
    best[dep_index[chosen] + 1, head[dep_index[chosen], label_index[chosen]]] = label_index[chosen]
    return arc, best


def decode_scores(log_probs: Any, label_vocab: Sequence[str]) -> tuple[list[int], list[str] | None]:
    """The best single-root tree under the label distributions: Chu-Liu/Edmonds on the arc
    scores of ``label_arc_scores``; each word's relation is that of its most probable label
    for the chosen head. O(n K + n^2).

    Args:
        log_probs: [n, K] label log-probabilities, numpy, torch or nested lists.
        label_vocab: K labels (see the module docstring).

    Returns:
        n heads (1-based, 0 = root) and n relations (``"_"`` where the chosen arc has no labeled
        label, e.g. no label reaches it), or None when no label carries a relation.
    """
    arc, best = label_arc_scores(log_probs, label_vocab)
    heads = chu_liu_edmonds(arc)
    label_rels = label_layout(tuple(label_vocab))[3]
    if all(rel is None for rel in label_rels):
        return heads, None
    rels = []
    for d, head in enumerate(heads, start=1):
        k = int(best[d, head])
        rel = label_rels[k] if k >= 0 else None
        rels.append(rel if rel is not None else "_")
    return heads, rels


def batch_label_arc_scores(
    log_probs: Tensor, label_vocab: Sequence[str], lengths: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """``label_arc_scores`` for a padded batch, in vectorized torch (float64, on the inputs'
    device): the same math, word shift, ignored labels and tie rule, one scatter per output.

    Labels that are malformed, point outside their sentence or score ``-inf`` carry no arc;
    padding words and padding heads get no arc (``-inf``, label -1) whatever they hold. Each
    arc's best label is its highest-scoring one, the lowest index on ties. O(B N K) time and
    memory.

    Args:
        log_probs: [B, N, K] label log-probabilities (any log scores; -inf = impossible).
        label_vocab: K labels.
        lengths: LongTensor [B] of sentence lengths (None = N).

    Returns:
        ``arc`` [B, N+1, N+1] float64 in (dep, head) layout (row 0 and padding ``-inf``) and
        ``best`` [B, N+1, N+1] long, the best label index behind each arc (-1 where none).

    Raises:
        ValueError: on wrong shapes or lengths, or NaN/+inf scores of in-sentence words.
    """
    lengths, in_sentence = word_mask(log_probs, lengths)  # [B], [B, N]
    batch, size, num_labels = log_probs.shape
    if num_labels != len(label_vocab):
        raise ValueError(f"log_probs must be [B, N, {len(label_vocab)}], got {num_labels} labels")
    device = log_probs.device
    scores = log_probs.detach().double()  # [B, N, K]
    real = scores.masked_fill(~in_sentence[..., None], 0.0)  # padding junk may be NaN
    if bool((torch.isnan(real) | torch.isposinf(real)).any()):
        raise ValueError("log_probs hold NaN or +inf")
    head, valid = label_heads(label_vocab, lengths, in_sentence)  # [N, K], [B, N, K]
    valid &= real != -math.inf  # NaN/+inf ruled out above
    masked = real.masked_fill(~valid, -math.inf)  # [B, N, K]
    # Shift by each word's best usable score so that exp cannot overflow.
    shift = masked.amax(-1)  # [B, N]
    shift = torch.where(torch.isfinite(shift), shift, torch.zeros_like(shift))
    # Column N+1 is a sink for the ignored labels, dropped below.
    cell = torch.where(valid, head, size + 1)  # [B, N, K]
    mass = masked.new_zeros(batch, size, size + 2).scatter_add_(
        2, cell, torch.exp(masked - shift[..., None])
    )  # [B, N, N+2]
    arc = masked.new_full((batch, size + 1, size + 1), -math.inf)
    arc[:, 1:] = torch.log(mass[..., : size + 1]) + shift[..., None]  # [B, N, N+1]
    top = masked.new_full((batch, size, size + 2), -math.inf).scatter_reduce_(
        2, cell, masked, "amax"
    )  # [B, N, N+2]
    label_ids = torch.arange(num_labels, device=device).expand_as(cell)  # [B, N, K]
    at_top = valid & (masked == top.gather(2, cell))
    first = torch.full_like(top, num_labels, dtype=torch.long).scatter_reduce_(
        2, cell, label_ids.masked_fill(~at_top, num_labels), "amin"
    )  # [B, N, N+2]
    best = torch.full((batch, size + 1, size + 1), -1, dtype=torch.long, device=device)
    best[:, 1:] = first[..., : size + 1].masked_fill(first[..., : size + 1] == num_labels, -1)
    return arc, best


def _greedy_heads(arc: Tensor, in_sentence: Tensor) -> tuple[Tensor, Tensor]:
    """Each word's best head [B, N] (first on ties) and whether they form a single-root tree
    of allowed arcs [B], the batched ``arborescence._greedy_tree``. O(B N^2).

    Acyclicity by pointer doubling: after ``ceil(log2(N + 1))`` squarings a word's ancestor
    ``2^s >= n`` steps up is the root exactly when its head chain reaches the root.
    """
    size = arc.shape[1] - 1
    candidates = arc[:, 1:].clone()  # [B, N, N+1]
    candidates.diagonal(offset=1, dim1=1, dim2=2).fill_(-math.inf)  # no self-loops
    heads = candidates.argmax(-1)  # [B, N]
    allowed = torch.isfinite(candidates.gather(2, heads[..., None])[..., 0]) | ~in_sentence
    one_root = ((heads == 0) & in_sentence).sum(-1) == 1  # [B]
    up = torch.cat([torch.zeros_like(heads[:, :1]), heads.masked_fill(~in_sentence, 0)], 1)
    for _ in range(size.bit_length()):
        up = up.gather(1, up)  # [B, N+1]
    return heads, allowed.all(-1) & one_root & (up == 0).all(-1)


def decode_batch(
    log_probs: Tensor, label_vocab: Sequence[str], lengths: Tensor | None = None
) -> list[tuple[list[int], list[str] | None]]:
    """``decode_scores`` for every sentence of a padded batch, with the same trees and
    relations: batched arc scores, batched greedy heads, and Chu-Liu/Edmonds (numpy) only for
    the sentences whose greedy heads are not a single-root tree. O(B N K + B N^2) in torch plus
    O(n^2) per such sentence.

    Args:
        log_probs: [B, N, K] label log-probabilities; padding may hold anything.
        label_vocab: K labels (see the module docstring).
        lengths: LongTensor [B] of sentence lengths (None = N).

    Returns:
        Per sentence, n heads (1-based, 0 = root) and n relations (``"_"`` where the chosen arc
        has no labeled label), or None when no label carries a relation.
    """
    arc, best = batch_label_arc_scores(log_probs, label_vocab, lengths)
    lengths, in_sentence = word_mask(log_probs, lengths)  # [B], [B, N]
    heads, is_tree = _greedy_heads(arc, in_sentence)  # [B, N], [B]
    heads, arc_cpu = heads.cpu(), arc.cpu()
    sizes = lengths.tolist()
    for b in torch.nonzero(~is_tree.cpu()).flatten().tolist():
        n = sizes[b]
        tree = chu_liu_edmonds(arc_cpu[b, : n + 1, : n + 1].numpy())
        heads[b, :n] = torch.tensor(tree, dtype=torch.long)
    label_rels = label_layout(tuple(label_vocab))[3]
    if all(rel is None for rel in label_rels):
        return [(row[:n], None) for row, n in zip(heads.tolist(), sizes)]
    chosen = best[:, 1:].gather(2, heads.to(best.device)[..., None])[..., 0]  # [B, N]
    # Index -1 (no label reaches the arc) picks the trailing "_".
    names = [rel if rel is not None else "_" for rel in label_rels] + ["_"]
    return [
        (row[:n], [names[k] for k in ids[:n]])
        for row, ids, n in zip(heads.tolist(), chosen.cpu().tolist(), sizes)
    ]
