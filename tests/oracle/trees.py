"""Every dependency tree, head selection and sibling factor of a tiny sentence, by brute force.

A per-sentence structure is a tuple ``heads`` of length n: ``heads[d - 1]`` is the head of word
``d`` (0 = ROOT). The batched (compact) form of the structures is a LongTensor [B, N+1] with index
0 unused; the per-sentence form is what the oracle enumerates.

Trees are filtered out of all n^n head assignments, so n <= 6 is the practical limit.
"""

from __future__ import annotations

import functools
import itertools

import numpy as np

Heads = tuple[int, ...]


@functools.cache
def head_assignments(n: int) -> tuple[Heads, ...]:
    """Every choice of a head in 0..n other than itself for each of n words: n^n of them, in
    lexicographic order."""
    choices = [[h for h in range(n + 1) if h != d] for d in range(1, n + 1)]
    return tuple(itertools.product(*choices))


def reaches_root(heads: Heads, d: int) -> bool:
    """Whether following heads from word d ends at 0 (no cycle, no head out of range)."""
    seen = set()
    while d != 0:
        if d in seen or not 0 <= heads[d - 1] <= len(heads):
            return False
        seen.add(d)
        d = heads[d - 1]
    return True


def is_tree(heads: Heads) -> bool:
    """Every word reaches ROOT without a cycle (any number of ROOT children)."""
    return all(reaches_root(heads, d) for d in range(1, len(heads) + 1))


def is_projective(heads: Heads) -> bool:
    """No two arcs cross, ROOT at position 0 and its arcs included."""
    spans = [(min(d, h), max(d, h)) for d, h in enumerate(heads, start=1)]
    return not any(a < c < b < e for a, b in spans for c, e in spans)


def is_projective_by_descendants(heads: Heads) -> bool:
    """The other textbook definition, for a tree: every word strictly between a head and its
    dependent descends from that head (ROOT dominates every word)."""

    def descends(word: int, ancestor: int) -> bool:
        while word != 0:
            word = heads[word - 1]
            if word == ancestor:
                return True
        return ancestor == 0

    return all(
        descends(between, h)
        for d, h in enumerate(heads, start=1)
        for between in range(min(h, d) + 1, max(h, d))
    )


@functools.cache
def trees(n: int, projective: bool, multiroot: bool) -> tuple[Heads, ...]:
    """Every dependency tree of n words of the given kind, in lexicographic order.

    ``multiroot=False`` keeps the trees with exactly one child of ROOT (the empty sentence has
    one tree, the empty one).
    """
    return tuple(
        y
        for y in head_assignments(n)
        if is_tree(y)
        and (multiroot or y.count(0) == 1 or n == 0)
        and (not projective or is_projective(y))
    )


@functools.cache
def tree_array(n: int, single_root: bool) -> np.ndarray:
    """[T, n] int64: every (non-projective) tree of n words as rows of heads; read only."""
    out = np.array(trees(n, projective=False, multiroot=not single_root), dtype=np.int64)
    out = out.reshape(-1, n)
    out.flags.writeable = False
    return out


def best_tree_score(scores: np.ndarray, single_root: bool) -> float:
    """The best tree's score under arc scores [n+1, n+1] ([dependent, head]; row 0 unused)."""
    n = scores.shape[0] - 1
    table = tree_array(n, single_root)  # [T, n]
    return float(scores[np.arange(1, n + 1)[None, :], table].sum(1).max())


def sibling_pairs(heads: Heads) -> list[tuple[int, int, int]]:
    """(h, m, s) for adjacent same-side modifiers m, s of h, m the closer one to h."""
    pairs = []
    for h in range(len(heads) + 1):
        right = sorted(d for d, g in enumerate(heads, 1) if g == h and d > h)
        left = sorted((d for d, g in enumerate(heads, 1) if g == h and d < h), reverse=True)
        for side in (right, left):
            pairs += [(h, m, s) for m, s in zip(side, side[1:])]
    return pairs
