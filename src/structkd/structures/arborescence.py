"""Maximum spanning arborescence (Chu-Liu/Edmonds), iterative, O(n^2) time and memory, numpy only.

The project's one decoder of non-projective trees: ``DependencyCRF(..., projective=False).argmax``,
the sequence-labeling parser's tree decoder and the exported parsers' numpy decoder all call
``chu_liu_edmonds``. Scores use the ``(dep, head)`` layout: ``scores[d, h]`` scores the arc
``h -> d``, node 0 is the root.

The contraction follows Tarjan (1977) as corrected by Camerini, Fratta and Maffioli (1979), in
the dense form: grow a path of best incoming arcs from an unfinished node; when the path closes a
cycle, contract the cycle into one node whose incoming scores are ``max_c s(c, u) - s(cycle arc
into c)`` and whose outgoing scores are ``max_c s(v, c)``; when the path reaches a finished node
(one whose arcs lead to the root), every node on it is finished. The contracted node reuses the
slot of one cycle member, so the score matrix stays [n+1, n+1]; two index matrices of the same
size remember which original arc each entry stands for, and a contraction forest (at most 2n
nodes) records the nesting for the expansion. Each contraction touches its members' rows and
columns only, and each node is contracted at most once, so time and memory are O(n^2), with a
Python loop over the O(n) arc choices and contractions: no recursion, whatever the nesting depth.
"""

from __future__ import annotations

import numpy as np


def max_arborescence(scores: np.ndarray) -> np.ndarray:
    """Best arborescence rooted at node 0 of a complete graph with finite scores.

    Args:
        scores: [m, m] finite (dep, head) scores; row 0 and the diagonal are ignored.

    Returns:
        int64 heads [m], ``heads[0] = -1``. Ties go to the lower slot (``argmax``). O(m^2).
    """
    m = scores.shape[0]
    heads = np.full(m, -1, dtype=np.int64)
    if m <= 1:
        return heads
    work = np.array(scores, dtype=np.float64)  # [m, m] slot x slot, current (adjusted) scores
    np.fill_diagonal(work, -np.inf)
    work[0, :] = -np.inf  # the root takes no head
    arange = np.arange(m)
    dep_of = np.repeat(arange[:, None].astype(np.int32), m, 1)  # [m, m] original dependent
    head_of = np.repeat(arange[None, :].astype(np.int32), m, 0)  # [m, m] original head
    node_at = arange.copy()  # slot -> contraction-forest node (leaves 0..m-1)
    parent = np.full(2 * m, -1, dtype=np.int64)
    children: dict[int, list[int]] = {}
    in_dep = np.full(2 * m, -1, dtype=np.int64)  # chosen incoming arc of each forest node
    in_head = np.full(2 * m, -1, dtype=np.int64)
    in_score = np.zeros(m)  # [m] adjusted score of each slot's chosen arc
    finished = np.zeros(m, dtype=bool)  # reaches the root, or merged into another slot
    finished[0] = True
    merged = np.zeros(m, dtype=bool)  # the slot's node was contracted into another slot
    position = np.full(m, -1, dtype=np.int64)  # index on the current path, -1 when off it
    next_node = m
    for start in range(1, m):
        if finished[start]:
            continue
        path = [start]
        position[start] = 0
        while True:
            v = path[-1]
            u = int(work[v].argmax())
            node = node_at[v]
            in_dep[node], in_head[node], in_score[v] = dep_of[v, u], head_of[v, u], work[v, u]
            if finished[u]:
                finished[path] = True
                position[path] = -1
                break
            if position[u] < 0:
                position[u] = len(path)
                path.append(u)
                continue
            cycle = np.array(path[position[u] :])  # [k] slots, closed by the arc u -> v
            del path[position[u] :]
            _contract(work, dep_of, head_of, cycle, in_score[cycle])
            keep = int(cycle[0])
            position[cycle] = -1
            finished[cycle[1:]] = True
            merged[cycle[1:]] = True
            parent[node_at[cycle]] = next_node
            children[next_node] = node_at[cycle].tolist()
            node_at[keep] = next_node
            next_node += 1
            position[keep] = len(path)
            path.append(keep)
    # expansion: a chosen arc entering forest node x breaks every cycle on the way from its
    # dependent up to x; the other members of those cycles keep their own (cycle) arcs
    stack = [int(node_at[s]) for s in range(1, m) if not merged[s]]
    while stack:
        x = stack.pop()
        d = int(in_dep[x])
        heads[d] = in_head[x]
        y = d
        while y != x:
            p = int(parent[y])
            stack.extend(c for c in children[p] if c != y)
            y = p
    return heads


def _contract(
    work: np.ndarray, dep_of: np.ndarray, head_of: np.ndarray, cycle: np.ndarray, kept: np.ndarray
) -> None:
    """Merge the cycle's slots into slot ``cycle[0]``, in place. O(k m) for k slots.

    Args:
        work: [m, m] current scores (dep slot, head slot).
        dep_of: [m, m] original dependent of each entry's arc.
        head_of: [m, m] original head of each entry's arc.
        cycle: [k] the cycle's slots.
        kept: [k] adjusted score of each member's cycle arc.
    """
    m = work.shape[0]
    cols = np.arange(m)
    into = work[cycle] - kept[:, None]  # [k, m] entering member c replaces its cycle arc
    enter = into.argmax(0)  # [m]
    row = into[enter, cols]
    row_dep, row_head = dep_of[cycle[enter], cols], head_of[cycle[enter], cols]
    out_of = work[:, cycle]  # [m, k]
    leave = out_of.argmax(1)  # [m]
    col = out_of[cols, leave]
    col_dep, col_head = dep_of[cols, cycle[leave]], head_of[cols, cycle[leave]]
    keep = cycle[0]
    work[keep], dep_of[keep], head_of[keep] = row, row_dep, row_head
    work[:, keep], dep_of[:, keep], head_of[:, keep] = col, col_dep, col_head
    work[cycle[1:], :] = -np.inf
    work[:, cycle[1:]] = -np.inf
    work[keep, cycle] = -np.inf  # arcs inside the cycle (and the self-loop) vanish


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
    unchanged, so the result is the exact best single-root tree. O(n^2) time and memory
    (``max_arborescence``, at most twice).

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
    heads = max_arborescence(scores)
    if single_root and int((heads[1:] == 0).sum()) != 1:
        # The best tree has several root children: penalize every root arc instead.
        scores[1:, 0] -= n * (high - low) + 1.0
        heads = max_arborescence(scores)
    return [int(h) for h in heads[1:]]
