"""Dependency parsing as sequence labeling, relative-offset encoding (Strzyz, Vilares &
Gomez-Rodriguez, NAACL 2019, "Viable Dependency Parsing as Sequence Labeling", encoding 2).

Each word gets one label that names its head by a signed offset and, optionally, its relation:

* ``"+2@obj"``: the head is 2 words to the right (``head = d + 2``), relation ``obj``;
* ``"-1@det"``: the head is the previous word;
* ``"ROOT@root"``: the head is the artificial root 0. The root gets its own symbol rather than
  the offset ``-d`` so that one label serves every position;
* without relations (an unlabeled parser or a file without DEPREL) the ``@rel`` part is absent:
  ``"+2"``, ``"ROOT"``.

The offset is never 0 (a word is not its own head) and the relation is everything after the first
``@``. A tagger's output need not be a tree; ``decode_labels`` (hard labels) and ``decode_scores``
(label distributions, through a maximum spanning tree) always return one.

For distillation, ``arc_marginals_to_label_marginals`` turns a graph-based teacher's arc (and
relation) marginals into the marginals of the student's labels, reporting the mass the student's
label inventory cannot express.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from structkd.depdata.trees import find_cycles
from structkd.structures.arborescence import chu_liu_edmonds

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


def encode_relative(heads: Sequence[int], rels: Sequence[str] | None = None) -> list[str]:
    """One label per word: ``format_label(head - d, rel)``, ``ROOT`` for head 0. O(n).

    Args:
        heads: n heads, 1-based, 0 = root.
        rels: n relations, or None for unlabeled labels.

    Raises:
        ValueError: on a head outside 0..n, a self-loop or a length mismatch.
    """
    n = len(heads)
    if rels is not None and len(rels) != n:
        raise ValueError(f"{n} heads but {len(rels)} relations")
    labels = []
    for d, head in enumerate(heads, start=1):
        if not 0 <= head <= n or head == d:
            raise ValueError(f"word {d} has head {head}, not in 0..{n} without itself")
        offset = None if head == 0 else head - d
        labels.append(format_label(offset, None if rels is None else rels[d - 1]))
    return labels


def _nearest_other(d: int, target: int, n: int) -> int | None:
    """The word in 1..n closest to ``target`` that is not ``d`` (None when n = 1)."""
    head = min(max(target, 1), n)
    if head != d:
        return head
    if n == 1:
        return None
    return d + 1 if d < n else d - 1


def decode_labels(
    labels: Sequence[str], confidences: Sequence[float] | None = None
) -> tuple[list[int], list[str] | None]:
    """A well-formed tree (heads in 0..n, exactly one root, no cycle) from hard labels.

    Repairs, in this order:

    1. an offset pointing outside the sentence attaches to the nearest word in range (not the
       word itself); a malformed label leaves the word unattached;
    2. the root word is the most confident ``ROOT`` word; without one, the most confident
       unattached word; without one, the most confident word of the first cycle;
    3. the other ``ROOT`` words and the unattached words attach to the root word;
    4. each remaining cycle is broken by attaching its least confident word to the root word
       (its path then ends at the root, and no new cycle can form).

    Ties and missing ``confidences`` go to the first word. A tree is returned unchanged. O(n).

    Args:
        labels: n labels (see the module docstring).
        confidences: n scores of the chosen labels (e.g. their log-probabilities), or None.

    Returns:
        n heads (1-based, 0 = root) and n relations (``"_"`` where a label had none), or None
        when no label carries a relation.
    """
    n = len(labels)
    conf = [0.0] * n if confidences is None else [float(c) for c in confidences]
    if len(conf) != n:
        raise ValueError(f"{n} labels but {len(conf)} confidences")
    heads: list[int | None] = []
    rels: list[str | None] = []
    for d, label in enumerate(labels, start=1):
        try:
            offset, rel = parse_label(label)
        except ValueError:
            offset, rel = 0, None  # 0 marks a malformed label here
        rels.append(rel)
        if offset is None:
            heads.append(0)
        else:
            heads.append(None if offset == 0 else _nearest_other(d, d + offset, n))
    if n == 0:
        return [], None

    def most(words: Sequence[int]) -> int:
        return max(words, key=lambda d: (conf[d - 1], -d))

    roots = [d for d in range(1, n + 1) if heads[d - 1] == 0]
    unattached = [d for d in range(1, n + 1) if heads[d - 1] is None]
    root = most(roots or unattached or find_cycles(heads)[0])
    heads = [root if (h == 0 or h is None) else h for h in heads]
    heads[root - 1] = 0
    for cycle in find_cycles(heads):
        weakest = min(cycle, key=lambda d: (conf[d - 1], d))
        heads[weakest - 1] = root
    tree = [int(h) for h in heads if h is not None]
    if all(rel is None for rel in rels):
        return tree, None
    return tree, [rel if rel is not None else "_" for rel in rels]


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
    offsets, is_root, usable, _ = _parsed_vocab(tuple(label_vocab))
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


@functools.lru_cache(maxsize=8)
def _parsed_vocab(
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
def _vocab_tensors(label_vocab: tuple[str, ...]) -> tuple[Tensor, Tensor, Tensor]:
    """``_parsed_vocab``'s offsets, is-ROOT and well-formed flags as CPU tensors [K]."""
    offsets, is_root, usable, _ = _parsed_vocab(label_vocab)
    return torch.tensor(offsets), torch.tensor(is_root), torch.tensor(usable)


def _word_mask(log_probs: Tensor, lengths: Tensor | None) -> tuple[Tensor, Tensor]:
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


def _label_heads(
    label_vocab: Sequence[str], lengths: Tensor, in_sentence: Tensor
) -> tuple[Tensor, Tensor]:
    """Each (word, label)'s head [N, K] (0 for ROOT; unclamped) and whether the label is usable
    there [B, N, K]: well formed, an in-sentence word, a head in 0..n (0 only for ROOT)."""
    device = in_sentence.device
    offsets, is_root, usable = (t.to(device) for t in _vocab_tensors(tuple(label_vocab)))
    words = torch.arange(1, in_sentence.shape[1] + 1, device=device)[:, None]  # [N, 1]
    head = torch.where(is_root, torch.zeros_like(words), words + offsets)  # [N, K]
    valid = (usable & (is_root | (head >= 1)))[None] & (head <= lengths[:, None, None])
    return head, valid & in_sentence[..., None]


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
    lengths, in_sentence = _word_mask(log_probs, lengths)  # [B], [B, N]
    batch, size, num_labels = log_probs.shape
    if num_labels != len(label_vocab):
        raise ValueError(f"log_probs must be [B, N, {len(label_vocab)}], got {num_labels} labels")
    device = log_probs.device
    scores = log_probs.detach().double()  # [B, N, K]
    real = scores.masked_fill(~in_sentence[..., None], 0.0)  # padding junk may be NaN
    if bool((torch.isnan(real) | torch.isposinf(real)).any()):
        raise ValueError("log_probs hold NaN or +inf")
    head, valid = _label_heads(label_vocab, lengths, in_sentence)  # [N, K], [B, N, K]
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
    lengths, in_sentence = _word_mask(log_probs, lengths)  # [B], [B, N]
    heads, is_tree = _greedy_heads(arc, in_sentence)  # [B, N], [B]
    heads, arc_cpu = heads.cpu(), arc.cpu()
    sizes = lengths.tolist()
    for b in torch.nonzero(~is_tree.cpu()).flatten().tolist():
        n = sizes[b]
        tree = chu_liu_edmonds(arc_cpu[b, : n + 1, : n + 1].numpy())
        heads[b, :n] = torch.tensor(tree, dtype=torch.long)
    label_rels = _parsed_vocab(tuple(label_vocab))[3]
    if all(rel is None for rel in label_rels):
        return [(row[:n], None) for row, n in zip(heads.tolist(), sizes)]
    chosen = best[:, 1:].gather(2, heads.to(best.device)[..., None])[..., 0]  # [B, N]
    # Index -1 (no label reaches the arc) picks the trailing "_".
    names = [rel if rel is not None else "_" for rel in label_rels] + ["_"]
    return [
        (row[:n], [names[k] for k in ids[:n]])
        for row, ids, n in zip(heads.tolist(), chosen.cpu().tolist(), sizes)
    ]


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
    label_rels = _parsed_vocab(tuple(label_vocab))[3]
    if all(rel is None for rel in label_rels):
        return heads, None
    rels = []
    for d, head in enumerate(heads, start=1):
        k = int(best[d, head])
        rel = label_rels[k] if k >= 0 else None
        rels.append(rel if rel is not None else "_")
    return heads, rels


def arc_marginals_to_label_marginals(
    arc_marginals: Tensor,
    rel_probs: Tensor | None,
    label_vocab: Sequence[str],
    rel_vocab: Sequence[str] | None = None,
    lengths: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """A graph-based teacher's marginals projected onto a sequence-labeling student's labels.

    ``P(label of d = (offset, rel)) = P(head of d = d + offset) * P(rel | d, head)``, with
    ``d + offset`` read as 0 for ``ROOT``. A (head, rel) pair no student label expresses (an
    offset or a relation outside the inventory) keeps its mass out of the label marginals, and
    that mass is returned per sentence: for each word, label marginals + lost mass = the word's
    teacher mass (1 for normalized marginals). Differentiable. O(B N K + B N^2 R).

    Args:
        arc_marginals: [B, N+1, N+1] or [N+1, N+1] (dep, head) arc marginals; row 0 unused.
        rel_probs: [B, N+1, N+1, R] (or unbatched) ``P(rel | dep, head)``, or None when the
            labels carry no relation.
        label_vocab: K distinct labels, all with a relation (given ``rel_probs``) or none.
        rel_vocab: R relation names indexing ``rel_probs``' last dimension.
        lengths: LongTensor [B] of sentence lengths (None = N); padding is ignored.

    Returns:
        ``label_marginals`` [B, N, K] (or [N, K]), 0 on padding words, and ``lost_mass`` [B]
        (or a scalar).

    Raises:
        ValueError: on malformed or duplicate labels, labels with and without relations mixed,
            relations without ``rel_probs``/``rel_vocab`` or ``rel_probs`` with unlabeled labels,
            or wrong shapes.
    """
    unbatched = arc_marginals.dim() == 2
    arcs = arc_marginals[None] if unbatched else arc_marginals  # [B, N+1, N+1]
    rels = None if rel_probs is None else (rel_probs[None] if unbatched else rel_probs)
    if arcs.dim() != 3 or arcs.shape[1] != arcs.shape[2] or arcs.shape[1] == 0:
        raise ValueError(f"arc_marginals must be [B, N+1, N+1], got {list(arc_marginals.shape)}")
    batch, size = arcs.shape[0], arcs.shape[1]
    n = size - 1
    parsed = [parse_label(label) for label in label_vocab]
    if len(set(parsed)) != len(parsed):
        raise ValueError("label_vocab holds the same label twice")
    labeled = [rel is not None for _, rel in parsed]
    if any(labeled) and not all(labeled):
        raise ValueError("label_vocab mixes labels with and without a relation")
    use_rels = bool(parsed) and all(labeled)
    if use_rels != (rels is not None):
        raise ValueError("rel_probs must be given exactly when the labels carry relations")
    device = arcs.device
    lengths_ = torch.full((batch,), n, device=device) if lengths is None else lengths.to(device)
    positions = torch.arange(size, device=device)
    in_sentence = positions[None, :] <= lengths_[:, None]  # [B, N+1]
    pair_ok = in_sentence[:, 1:, None] & in_sentence[:, None, :]  # [B, N, N+1] dep, head
    # Padding may hold junk (even NaN): replace it before anything multiplies or sums it.
    arcs = torch.where(pair_ok, arcs[:, 1:, :], torch.zeros((), dtype=arcs.dtype, device=device))
    offsets = torch.tensor([0 if o is None else o for o, _ in parsed], device=device)  # [K]
    is_root = torch.tensor([o is None for o, _ in parsed], dtype=torch.bool, device=device)
    words = torch.arange(1, n + 1, device=device)[:, None]  # [N, 1]
    head = torch.where(is_root[None, :], torch.zeros_like(words), words + offsets)  # [N, K]
    # A non-ROOT offset landing on position 0 is no label's meaning: only ROOT reaches the root.
    keep = is_root[None, :] | ((head >= 1) & (head <= n))  # [N, K]
    head = head.clamp(0, n)
    marginals = arcs.gather(2, head.expand(batch, n, -1))  # [B, N, K]
    if rels is not None:
        if rel_vocab is None or rels.shape != (batch, size, size, len(rel_vocab)):
            raise ValueError("rel_probs must be [B, N+1, N+1, R] with R = len(rel_vocab)")
        rel_ids = {rel: r for r, rel in enumerate(rel_vocab)}
        rel_index = torch.tensor([rel_ids.get(str(rel), -1) for _, rel in parsed], device=device)
        keep &= (rel_index >= 0)[None, :]
        rels = torch.where(
            pair_ok[..., None], rels[:, 1:], torch.zeros((), dtype=rels.dtype, device=device)
        )
        num_rels = rels.shape[-1]
        cell = head * num_rels + rel_index.clamp(min=0)[None, :]  # [N, K]
        flat = rels.reshape(batch, n, size * num_rels)  # [B, N, (N+1) R]
        marginals = marginals * flat.gather(2, cell.expand(batch, n, -1))
        joint = arcs[..., None] * rels  # [B, N, N+1, R]
    else:
        joint = arcs[..., None]  # [B, N, N+1, 1]
        cell = head
    marginals = torch.where(keep, marginals, torch.zeros((), dtype=arcs.dtype, device=device))
    covered = torch.zeros(n, joint.shape[2] * joint.shape[3], dtype=torch.bool, device=device)
    dep_index = words.expand_as(cell) - 1  # [N, K]
    covered[dep_index[keep], cell[keep]] = True
    uncovered = joint.reshape(batch, n, -1).masked_fill(covered[None], 0.0)  # [B, N, (N+1) R]
    lost = uncovered.sum((1, 2))  # [B]
    if unbatched:
        return marginals[0], lost[0]
    return marginals, lost


def arc_scores_to_label_scores(
    arc_scores: Tensor,
    rel_scores: Tensor | None,
    label_vocab: Sequence[str],
    rel_vocab: Sequence[str] | None = None,
    lengths: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """A graph-based teacher's local scores of a sequence-labeling student's labels.

    The score of label ``(offset, rel)`` of word ``d`` is the teacher's score of the parts it
    names: ``s_arc(d, h) + s_rel(d, h, rel)`` with ``h = d + offset`` (0 for ``ROOT``). The
    additive counterpart of ``arc_marginals_to_label_marginals``, used by sub-structure score
    matching. O(B N K).

    Args:
        arc_scores: [B, N+1, N+1] (dep, head) arc scores; row 0 unused.
        rel_scores: [B, N+1, N+1, R] relation scores, or None when the labels carry no relation.
        label_vocab: K labels, all with a relation (given ``rel_scores``) or none.
        rel_vocab: R relation names indexing ``rel_scores``' last dimension.
        lengths: LongTensor [B] of sentence lengths (None = N).

    Returns:
        ``scores`` [B, N, K] (0 where not valid) and ``valid`` BoolTensor [B, N, K]: an
        in-sentence word, a well-formed label whose head lies in the sentence and whose
        relation the teacher knows, and a finite teacher score.

    Raises:
        ValueError: on wrong shapes, or relations given for unlabeled labels (or vice versa).
    """
    if arc_scores.dim() != 3 or arc_scores.shape[1] != arc_scores.shape[2]:
        raise ValueError(f"arc_scores must be [B, N+1, N+1], got {list(arc_scores.shape)}")
    batch, size = arc_scores.shape[:2]
    n, device = size - 1, arc_scores.device
    lengths_, in_sentence = _word_mask(arc_scores[:, 1:, :0], lengths)  # [B], [B, N]
    head, valid = _label_heads(label_vocab, lengths_, in_sentence)  # [N, K], [B, N, K]
    head = head.clamp(0, n).expand(batch, n, -1)  # [B, N, K]
    scores = arc_scores[:, 1:].gather(2, head)  # [B, N, K]
    _, _, usable, rels = _parsed_vocab(tuple(label_vocab))
    labeled = [rel is not None for rel, ok in zip(rels, usable) if ok]
    if (rel_scores is not None) != (bool(labeled) and all(labeled)):
        raise ValueError("rel_scores must be given exactly when the labels carry relations")
    if rel_scores is not None:
        if rel_vocab is None or rel_scores.shape != (batch, size, size, len(rel_vocab)):
            raise ValueError("rel_scores must be [B, N+1, N+1, R] with R = len(rel_vocab)")
        ids = {rel: r for r, rel in enumerate(rel_vocab)}
        rel_index = torch.tensor([ids.get(str(rel), -1) for rel in rels], device=device)  # [K]
        valid &= (rel_index >= 0)[None, None, :]
        cell = head * len(rel_vocab) + rel_index.clamp(min=0)  # [B, N, K]
        flat = rel_scores[:, 1:].reshape(batch, n, size * len(rel_vocab))
        scores = scores + flat.gather(2, cell)
    valid &= torch.isfinite(scores)
    return torch.where(valid, scores, torch.zeros((), dtype=scores.dtype, device=device)), valid
