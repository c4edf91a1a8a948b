"""The relative-head label codec of gold and predicted trees: ``encode_relative`` (a tree ->
one label per word) and ``decode_labels`` (hard labels -> a well-formed tree, repairing what is
not one). The label grammar is ``structkd.structures.relative_labels``; decoding label
*distributions* through a maximum spanning tree is ``structkd.models.seqlabel_decode``.
"""

from __future__ import annotations

from collections.abc import Sequence

from structkd.data.trees import find_cycles
from structkd.structures.relative_labels import format_label, parse_label


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
