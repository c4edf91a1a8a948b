"""Plain-Python checks of dependency trees given as head lists.

A sentence of n words is a list ``heads`` of length n: ``heads[d - 1]`` is the 1-based head of
word d, 0 is the artificial root. These functions serve data checking, not training: lists in,
booleans and lists out. Decoding (Chu-Liu/Edmonds) lives in ``structures.arborescence``.
"""

from __future__ import annotations

from collections.abc import Sequence


def find_cycles(heads: Sequence[int | None]) -> list[list[int]]:
    """Every cycle of the head graph, each as its words in the order of the head links.

    Each word has at most one outgoing link (to its head), so the cycles are disjoint and one
    coloring pass finds them all. A head of 0, None or outside 1..n ends a path.

    Args:
        heads: n heads, ``heads[d - 1]`` for word d.

    Returns:
        The cycles, ordered by their first word; a cycle starts at its smallest word. O(n).
    """
    n = len(heads)
    state = [0] * (n + 1)  # 0 unseen, 1 on the current path, 2 done
    cycles: list[list[int]] = []
    for start in range(1, n + 1):
        path: list[int] = []
        d = start
        while 1 <= d <= n and state[d] == 0:
            state[d] = 1
            path.append(d)
            h = heads[d - 1]
            d = h if h is not None else 0
        if 1 <= d <= n and state[d] == 1:
            cycle = path[path.index(d) :]
            first = cycle.index(min(cycle))
            cycles.append(cycle[first:] + cycle[:first])
        for word in path:
            state[word] = 2
    return sorted(cycles)


def is_tree(heads: Sequence[int], single_root: bool = True) -> bool:
    """Whether ``heads`` is a dependency tree: heads in 0..n, no cycle, at least one root.

    Args:
        heads: n heads, ``heads[d - 1]`` for word d.
        single_root: also require exactly one word attached to the root.
    """
    n = len(heads)
    if any(not 0 <= h <= n for h in heads):
        return False
    roots = sum(h == 0 for h in heads)
    if roots == 0 or (single_root and roots > 1):
        return n == 0
    return not find_cycles(heads)


def is_projective(heads: Sequence[int]) -> bool:
    """Whether no two arcs cross, the root arc ``0 -> r`` included.

    With the root at position 0 this equals the usual definition (every word between a head and
    its dependent descends from that head). O(n^2).

    Args:
        heads: n heads, ``heads[d - 1]`` for word d, a tree.
    """
    spans = [(min(h, d), max(h, d)) for d, h in enumerate(heads, start=1)]
    for i, (left, right) in enumerate(spans):
        for other_left, other_right in spans[i + 1 :]:
            if left < other_left < right < other_right or other_left < left < other_right < right:
                return False
    return True
