"""The numpy decoders of exported students: what turns a graph's scores into tags and trees.

The exported graph computes everything that is a fixed tensor program (encoder, scores, and the
per-word argmax of a MaxEnt tagger or of relation scores); the dynamic programs whose control
flow depends on the data run here, on the graph's outputs, for both ONNX Runtime and
TorchScript: Viterbi's backtrace and Chu-Liu/Edmonds' cycle contraction would need ``Loop`` and
``If`` subgraphs in ONNX, which ONNX Runtime neither fuses nor quantizes, and which a TorchScript
trace cannot record. Each decoder repeats the PyTorch model's own decoding step for step (same
operations in the same dtype, same tie rule), so an exported model predicts what the model
does.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from structkd.depdata.seqlabel import decode_scores
from structkd.structures.eisner import NEG
from structkd.structures.matrix_tree import best_tree


def viterbi(
    emissions: np.ndarray,
    lengths: np.ndarray,
    transitions: np.ndarray,
    start: np.ndarray,
    end: np.ndarray,
) -> np.ndarray:
    """Best tag sequence of a linear-chain CRF (Viterbi, 1967), batched; ``LinearChainCRF.argmax``.

    Args:
        emissions: [B, N, L] float32 scores.
        lengths: [B] word counts.
        transitions: [L, L] ``transitions[from, to]``.
        start: [L] first-tag scores.
        end: [L] last-tag scores.

    Returns:
        int64 [B, N] tag ids (0 on padding). O(B N L^2).
    """
    batch, size, n_tags = emissions.shape
    tags = np.zeros((batch, size), dtype=np.int64)
    if size == 0:
        return tags
    rows = np.arange(batch)
    delta = start[None, :] + emissions[:, 0]  # [B, L]
    pointers = np.zeros((batch, size, n_tags), dtype=np.int64)
    for i in range(1, size):
        edges = transitions[None, :, :] + emissions[:, i, None, :]  # [B, L_prev, L]
        candidates = delta[:, :, None] + edges  # [B, L_prev, L]
        pointers[:, i] = candidates.argmax(1)
        best = candidates.max(1)  # [B, L]
        delta = np.where((i < lengths)[:, None], best, delta)
    tag = (delta + end[None, :]).argmax(-1)  # [B]
    for i in range(size - 1, -1, -1):
        inside = i < lengths
        tags[:, i] = np.where(inside, tag, 0)
        if i > 0:
            tag = np.where(inside, pointers[rows, i, tag], tag)
    return tags


def mst_heads(arc_scores: np.ndarray, lengths: np.ndarray) -> list[list[int]]:
    """Best single-root non-projective trees (Chu-Liu/Edmonds) of arc scores, as
    ``DependencyCRF(..., projective=False).argmax``: row 0, the diagonal and padding masked to
    ``NEG`` in the scores' dtype, then float64.

    Args:
        arc_scores: [B, N+1, N+1] (dep, head) float32 scores.
        lengths: [B] word counts.

    Returns:
        Per sentence, n heads (1-based, 0 = ROOT). O(n^2) per sentence.
    """
    out: list[list[int]] = []
    neg = arc_scores.dtype.type(NEG)
    for b, n in enumerate(lengths.tolist()):
        if n == 0:
            out.append([])
            continue
        sent = arc_scores[b, : n + 1, : n + 1].copy()
        sent[0, :] = neg
        np.fill_diagonal(sent, neg)
        sent = np.maximum(sent, neg).astype(np.float64)
        out.append(best_tree(sent, multiroot=False)[1:].tolist())
    return out


def seqlabel_trees(
    log_probs: np.ndarray, lengths: np.ndarray, labels: Sequence[str]
) -> list[tuple[list[int], list[str] | None]]:
    """Trees of a sequence-labeling parser from label log-probabilities [B, N, K]
    (``depdata.seqlabel.decode_scores`` per sentence, the tree ``decode_batch`` returns)."""
    return [
        decode_scores(log_probs[b, :n], labels) if n else ([], None)
        for b, n in enumerate(lengths.tolist())
    ]
