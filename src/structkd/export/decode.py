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

from structkd.models.seqlabel_decode import decode_scores
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
    (``models.seqlabel_decode.decode_scores`` per sentence, the tree ``decode_batch`` returns)."""
    return [
        decode_scores(log_probs[b, :n], labels) if n else ([], None)
        for b, n in enumerate(lengths.tolist())
    ]


def _masked_arcs(arc_scores: np.ndarray, n: int) -> np.ndarray:
    """One sentence's [n+1, n+1] block as ``DependencyCRF._scores``: row 0 and the diagonal
    ``NEG`` in the scores' dtype (float32 for an export)."""
    neg = arc_scores.dtype.type(NEG)
    sent = arc_scores[: n + 1, : n + 1].copy()
    sent[0, :] = neg
    np.fill_diagonal(sent, neg)
    return np.maximum(sent, neg)


def eisner_heads(arc_scores: np.ndarray, lengths: np.ndarray) -> list[list[int]]:
    """Best single-root projective trees (Eisner, COLING 1996), as
    ``DependencyCRF(..., projective=True).argmax``: the max pass of ``structures.eisner`` with
    backpointers, in the scores' dtype, ties to the first split; numpy only.

    Charts ``C[h, e]`` (complete) and ``I[h, e]`` (arc ``h -> e`` and what lies between) for
    ``0 <= h, e <= n`` (0 = ROOT); for each width ``w`` every span ``(i, i + w)`` at once:

        I[i, j] = I[j, i] - s(j -> i) + s(i -> j) = max_{i <= r < j} C[i, r] + C[j, r + 1] + s
        C[j, i] = max_{i <= r < j} C[r, i] + I[j, r]
        C[i, j] = max_{i < r <= j} I[i, r] + C[r, j]

    and ROOT's complete span ``C[0, w]`` only for ``w = n`` (exactly one word under ROOT).

    Args:
        arc_scores: [B, N+1, N+1] (dep, head) scores.
        lengths: [B] word counts.

    Returns:
        Per sentence, n heads (1-based, 0 = ROOT). O(n^3) time, O(n^2) memory, n numpy steps.
    """
    out: list[list[int]] = []
    for b, n in enumerate(lengths.tolist()):
        if n == 0:
            out.append([])
            continue
        arcs = _masked_arcs(arc_scores[b], n).T  # [n+1, n+1] (head, dep)
        size = n + 1
        neg = arcs.dtype.type(NEG)
        complete = np.full((size, size), neg, dtype=arcs.dtype)
        incomplete = np.full((size, size), neg, dtype=arcs.dtype)
        np.fill_diagonal(complete, 0)
        back_c = np.zeros((size, size), dtype=np.int64)  # the split offset of each cell
        back_i = np.zeros((size, size), dtype=np.int64)
        for w in range(1, size):
            i = np.arange(size - w)[:, None]  # [n_w, 1] span starts
            k = np.arange(w)[None, :]  # [1, w] split offsets
            j = i + w
            split = complete[i, i + k] + complete[j, i + k + 1]  # [n_w, w]
            best, arg = split.max(1), split.argmax(1)
            incomplete[j[:, 0], i[:, 0]] = best + arcs[j[:, 0], i[:, 0]]
            incomplete[i[:, 0], j[:, 0]] = best + arcs[i[:, 0], j[:, 0]]
            back_i[j[:, 0], i[:, 0]] = back_i[i[:, 0], j[:, 0]] = arg
            left = complete[i + k, i] + incomplete[j, i + k]  # [n_w, w]
            complete[j[:, 0], i[:, 0]] = left.max(1)
            back_c[j[:, 0], i[:, 0]] = left.argmax(1)
            right = incomplete[i, i + 1 + k] + complete[i + 1 + k, j]  # [n_w, w]
            best = right.max(1)
            if w != n:
                best[0] = neg
            complete[i[:, 0], j[:, 0]] = best
            back_c[i[:, 0], j[:, 0]] = right.argmax(1)
        heads = [0] * size
        stack = [(0, n, True)]  # (head, end, complete)
        while stack:
            head, end, is_complete = stack.pop()
            lo, hi = min(head, end), max(head, end)
            if is_complete:
                if head == end:
                    continue
                if head < end:  # I[h, r] + C[r, e]
                    r = head + 1 + int(back_c[head, end])
                else:  # C[r, e] + I[h, r]
                    r = end + int(back_c[head, end])
                stack += [(head, r, False), (r, end, True)]
            else:
                heads[end] = head
                r = lo + int(back_i[head, end])
                stack += [(lo, r, True), (hi, r + 1, True)]
        out.append(heads[1:])
    return out


def best_spans(span_scores: np.ndarray, lengths: np.ndarray) -> list[list[tuple[int, int, int]]]:
    """Best sets of non-overlapping labeled spans (semi-Markov Viterbi, Sarawagi & Cohen,
    NeurIPS 2004), as ``SemiMarkovCRF.argmax``: in the scores' dtype, the unit "token j is O"
    before the spans ending at j, then spans by start and type; numpy only.

    ``delta[j + 1] = max(delta[j], max_{i <= j, r} delta[i] + s[i, j, r])``, batched.

    Args:
        span_scores: [B, N, N, R]; ``[b, i, j, r]`` scores tokens i..j (inclusive) as type r.
        lengths: [B] word counts.

    Returns:
        Per sentence, its spans ``(start, last, type)`` (last inclusive) sorted by start.
        O(B N^2 R).
    """
    batch, size, _, n_types = span_scores.shape
    delta = np.zeros((batch, size + 1), dtype=span_scores.dtype)
    pointers = np.zeros((batch, size), dtype=np.int64)  # 0: O, else 1 + start * R + type
    for j in range(size):
        spans = delta[:, : j + 1, None] + span_scores[:, : j + 1, j, :]  # [B, j+1, R]
        candidates = np.concatenate([delta[:, j, None], spans.reshape(batch, -1)], 1)
        pointers[:, j] = candidates.argmax(1)
        delta[:, j + 1] = candidates.max(1)
    out = []
    for b, n in enumerate(lengths.tolist()):
        found: list[tuple[int, int, int]] = []
        j = n
        while j > 0:
            option = int(pointers[b, j - 1])
            if option == 0:
                j -= 1
                continue
            start, label = divmod(option - 1, n_types)
            found.append((start, j - 1, label))
            j = start
        out.append(found[::-1])
    return out
