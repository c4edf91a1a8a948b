"""Plain-Python checks and decoding for dependency trees given as head lists.

A sentence of n words is a list ``heads`` of length n: ``heads[d - 1]`` is the 1-based head of
word d, 0 is the artificial root. Arc score matrices use the project's ``(dep, head)`` layout of
shape [n+1, n+1]: ``scores[d, h]`` scores the arc h -> d, row 0 (the root as a dependent) is
ignored. These functions serve data checking and decoding, not training: numpy and lists in,
lists out.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


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


def _argmax_arborescence(scores: np.ndarray) -> np.ndarray:
    """Chu-Liu/Edmonds on a finite [m, m] (dep, head) matrix, root 0 -> head array [m].

    Greedy best heads; if they form cycles, contract every cycle at once into one node (the
    cycles are disjoint), score an arc entering a cycle at c by the cycle arc it replaces
    (``s(c, u) - s(c, head(c))``), recurse on the smaller graph, and expand: each contracted
    node's chosen incoming arc goes to the member it enters, the other members keep their cycle
    heads. Each level is O(m^2) in numpy with a Python loop over its cycles only, at most m
    levels: O(m^3).
    """
    m = scores.shape[0]
    scores = scores.copy()
    np.fill_diagonal(scores, -np.inf)
    scores[0, :] = -np.inf  # the root takes no head
    heads = scores.argmax(axis=1)  # [m]
    heads[0] = -1
    cycles = [np.array(c) for c in find_cycles(heads[1:].tolist())]
    if not cycles:
        return heads
    in_cycle = np.zeros(m, dtype=bool)
    for cycle in cycles:
        in_cycle[cycle] = True
    outside = np.flatnonzero(~in_cycle)  # [O], holds the root 0
    count = len(outside)
    # Entering a cycle at c replaces the cycle arc into c.
    kept = np.where(in_cycle, scores[np.arange(m), np.maximum(heads, 0)], 0.0)  # [m]
    adjusted = scores - kept[:, None]  # [m, m]
    sub = np.full((count + len(cycles),) * 2, -np.inf)
    sub[:count, :count] = scores[np.ix_(outside, outside)]
    into = [adjusted[np.ix_(c, outside)] for c in cycles]  # [C_j, O] each
    out_of = [scores[np.ix_(outside, c)] for c in cycles]  # [O, C_j] each
    for j, cycle in enumerate(cycles):
        sub[count + j, :count] = into[j].max(axis=0)
        sub[:count, count + j] = out_of[j].max(axis=1)
        for i, other in enumerate(cycles):
            if i != j:
                sub[count + j, count + i] = adjusted[np.ix_(cycle, other)].max()
    sub_heads = _argmax_arborescence(sub)  # [O + C]
    result = heads.copy()
    plain = sub_heads[1:count] < count  # outside words whose head is an outside word
    result[outside[1:][plain]] = outside[sub_heads[1:count][plain]]
    for j, cycle in enumerate(cycles):
        # Outside words headed by the cycle: their best member.
        from_here = np.flatnonzero(sub_heads[1:count] == count + j) + 1  # indices into outside
        result[outside[from_here]] = cycle[out_of[j][from_here].argmax(axis=1)]
        # The cycle's entry: the member and the outside word (or other cycle) it comes from.
        head = int(sub_heads[count + j])
        if head < count:
            c = int(into[j][:, head].argmax())
            result[cycle[c]] = outside[head]
        else:
            block = adjusted[np.ix_(cycle, cycles[head - count])]
            row, col = np.unravel_index(int(block.argmax()), block.shape)
            result[cycle[row]] = cycles[head - count][col]
    return result


def _greedy_tree(scores: np.ndarray, single_root: bool) -> list[int] | None:
    """Each word's best head, when these already form a tree (else None). O(n^2).

    The sum of every word's best incoming arc bounds the score of any tree from above, so when
    the greedy choice is itself a (single-root, if asked) tree with allowed arcs, it is the best
    tree; a well-trained model's scores usually are such, which skips the contraction steps.
    """
    n = scores.shape[0] - 1
    candidates = scores[1:].copy()  # [n, n+1]
    candidates[np.arange(n), np.arange(1, n + 1)] = -np.inf  # no self-loops
    heads = candidates.argmax(axis=1)  # [n]
    if not np.isfinite(candidates[np.arange(n), heads]).all():
        return None
    if single_root and int((heads == 0).sum()) != 1:
        return None
    state = np.zeros(n + 1, dtype=np.int8)  # 0 unseen, 1 on the current path, 2 reaches root
    state[0] = 2
    for start in range(1, n + 1):
        path, node = [], start
        while state[node] == 0:
            state[node] = 1
            path.append(node)
            node = int(heads[node - 1])
        if state[node] == 1:  # came back to the current path: a cycle
            return None
        state[path] = 2
    return [int(h) for h in heads]


def chu_liu_edmonds(arc_scores: np.ndarray, single_root: bool = True) -> list[int]:
    """Highest-scoring dependency tree (maximum spanning arborescence), Chu & Liu (1965),
    Edmonds (1967).

    ``-inf`` marks forbidden arcs; they are used only when no tree avoids them. For a single
    root, the best tree without that constraint is found first: with one root child it is also
    the best single-root tree. Otherwise every root arc is penalized by more than the score
    range of any tree (Gabow & Tarjan, 1984; see Zmigrod et al., EMNLP 2020): the best tree with
    one root arc then beats every tree with more, and among single-root trees the ranking is
    unchanged, so the result is the exact best single-root tree. O(n^3) time, O(n^2) memory.

    Args:
        arc_scores: [n+1, n+1] (dep, head) scores; row 0 and the diagonal are ignored.
        single_root: allow exactly one word attached to the root.

    Returns:
        n heads, ``heads[d - 1]`` for word d.

    Raises:
        ValueError: on a wrong shape or NaN/+inf scores.
    """
    scores = np.array(arc_scores, dtype=np.float64)  # [n+1, n+1]
    if scores.ndim != 2 or scores.shape[0] != scores.shape[1] or scores.shape[0] == 0:
        raise ValueError(f"arc_scores must be [n+1, n+1], got {list(scores.shape)}")
    n = scores.shape[0] - 1
    scores[0, :] = 0.0
    np.fill_diagonal(scores, 0.0)
    if np.isnan(scores).any() or np.isposinf(scores).any():
        raise ValueError("arc_scores hold NaN or +inf")
    if n <= 1:
        return [0] * n
    greedy = _greedy_tree(scores, single_root)
    if greedy is not None:
        return greedy
    finite = np.isfinite(scores)
    if finite.all():
        low, high = float(scores.min()), float(scores.max())
    else:
        low = float(scores[finite].min()) if finite.any() else 0.0
        high = float(scores[finite].max()) if finite.any() else 0.0
        # Below this, one forbidden arc costs more than any all-allowed tree could gain.
        forbidden = n * low - (n - 1) * high - 1.0
        scores[~finite] = forbidden
        low = forbidden
    scores[0, :] = 0.0
    heads = _argmax_arborescence(scores)
    if single_root and int((heads[1:] == 0).sum()) != 1:
        # The best tree has several root children: penalize every root arc instead.
        scores[1:, 0] -= n * (high - low) + 1.0
        heads = _argmax_arborescence(scores)
    return [int(h) for h in heads[1:]]
