"""Tree checks and Chu-Liu/Edmonds against brute-force enumeration of all head assignments."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from oracle import best_tree_score, is_projective_by_descendants, reaches_root, tree_array
from structkd.data.trees import find_cycles, is_projective, is_tree
from structkd.structures.arborescence import chu_liu_edmonds


def test_find_cycles() -> None:
    assert find_cycles([2, 0, 2]) == []
    assert find_cycles([2, 1, 4, 5, 3]) == [[1, 2], [3, 4, 5]]
    assert find_cycles([3, 3, 1, None, 9]) == [[1, 3]]
    assert find_cycles([1]) == [[1]]


def test_is_tree_matches_reachability() -> None:
    for n in range(1, 5):
        for heads in itertools.product(range(n + 2), repeat=n):
            reach = all(reaches_root(heads, d) for d in range(1, n + 1))
            assert is_tree(heads, single_root=False) == reach
            assert is_tree(heads) == (reach and heads.count(0) == 1)
    assert is_tree([])


def test_is_projective_matches_the_descendant_definition() -> None:
    counts = []
    for n in range(1, 6):
        trees = tree_array(n, False)
        flags = [is_projective(list(t)) for t in trees]
        assert flags == [is_projective_by_descendants(tuple(t)) for t in trees]
        counts.append(sum(flags))
    # Projective trees with the root at position 0 (several root children allowed) are counted
    # by the ternary numbers C(3n, n) / (2n + 1), OEIS A001764.
    assert counts == [1, 3, 12, 55, 273]
    assert not is_projective([3, 4, 0, 3])
    assert not is_projective([3, 0, 2, 1])  # crosses the root arc


@pytest.mark.parametrize("single_root", [True, False])
def test_chu_liu_edmonds_finds_the_best_tree(single_root: bool) -> None:
    rng = np.random.default_rng(0)
    for trial in range(150):
        n = 1 + trial % 6
        scores = rng.normal(size=(n + 1, n + 1)) * (10.0 if trial % 3 == 0 else 1.0)
        scores[0, :] = rng.normal(size=n + 1) * 1e6  # row 0 and the diagonal are ignored
        np.fill_diagonal(scores, 1e9)
        heads = chu_liu_edmonds(scores, single_root=single_root)
        assert is_tree(heads, single_root=single_root)
        got = float(scores[np.arange(1, n + 1), heads].sum())
        assert got == pytest.approx(best_tree_score(scores, single_root), abs=1e-9)


@pytest.mark.parametrize("single_root", [True, False])
def test_chu_liu_edmonds_contracts_several_cycles_at_once(single_root: bool) -> None:
    """Planted disjoint 2- and 3-cycles: the greedy heads hold several cycles, all contracted on
    the same level (and nested ones on the next); the result is still the best tree."""
    rng = np.random.default_rng(2)
    for trial in range(40):
        n = 5 + trial % 2
        scores = rng.normal(size=(n + 1, n + 1))
        words = rng.permutation(np.arange(1, n + 1))
        for cycle in (words[:2], words[2:4]) if trial % 2 else (words[:3], words[3:5]):
            for d, h in zip(cycle, np.roll(cycle, 1)):
                scores[d, h] += 4.0
        heads = chu_liu_edmonds(scores, single_root=single_root)
        assert is_tree(heads, single_root=single_root)
        got = float(scores[np.arange(1, n + 1), heads].sum())
        assert got == pytest.approx(best_tree_score(scores, single_root), abs=1e-9)


def test_chu_liu_edmonds_avoids_forbidden_arcs_when_it_can() -> None:
    rng = np.random.default_rng(1)
    for trial in range(100):
        n = 2 + trial % 5
        scores = rng.normal(size=(n + 1, n + 1))
        forbidden = rng.random(size=(n + 1, n + 1)) < 0.5
        scores[forbidden] = -np.inf
        heads = chu_liu_edmonds(scores)
        assert is_tree(heads)
        best = best_tree_score(scores, True)
        got = float(scores[np.arange(1, n + 1), heads].sum())
        if np.isfinite(best):
            assert got == pytest.approx(best, abs=1e-9)
    assert is_tree(chu_liu_edmonds(np.full((5, 5), -np.inf)))


def test_chu_liu_edmonds_prefers_one_root_over_a_better_forest() -> None:
    scores = np.full((4, 4), -5.0)  # [dep, head]
    scores[1:, 0] = 10.0  # every word would rather attach to the root
    scores[2, 1] = scores[3, 1] = 0.0
    assert chu_liu_edmonds(scores, single_root=False) == [0, 0, 0]
    assert chu_liu_edmonds(scores) == [0, 1, 1]


def test_chu_liu_edmonds_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="NaN"):
        chu_liu_edmonds(np.array([[0.0, 0.0], [np.nan, 0.0]]))
    with pytest.raises(ValueError, match="n\\+1"):
        chu_liu_edmonds(np.zeros((2, 3)))
    assert chu_liu_edmonds(np.zeros((1, 1))) == []


@pytest.mark.parametrize("single_root", [True, False])
def test_chu_liu_edmonds_is_exact_on_peaked_scores(single_root: bool) -> None:
    """Scores of a confident model (a tree plus noise): the greedy heads often form a tree and
    are returned without contraction; the result must still be the best tree."""
    from structkd.structures.arborescence import _greedy_tree

    rng = np.random.default_rng(1)
    shortcuts = 0
    for trial in range(120):
        n = 2 + trial % 5
        gold = tree_array(n, single_root)[rng.integers(len(tree_array(n, single_root)))]
        scores = rng.normal(size=(n + 1, n + 1))
        scores[np.arange(1, n + 1), gold] += 3.0 if trial % 2 else 0.5
        greedy = _greedy_tree(scores.copy(), single_root)
        heads = chu_liu_edmonds(scores, single_root=single_root)
        if greedy is not None:
            shortcuts += 1
            assert heads == greedy
        assert is_tree(heads, single_root=single_root)
        got = float(scores[np.arange(1, n + 1), heads].sum())
        assert got == pytest.approx(best_tree_score(scores, single_root), abs=1e-9)
    assert 20 < shortcuts < 120  # both paths were exercised


def test_greedy_heads_with_a_cycle_or_two_roots_are_not_a_tree() -> None:
    from structkd.structures.arborescence import _greedy_tree

    cyclic = np.zeros((4, 4))
    cyclic[1, 2] = cyclic[2, 1] = 5.0  # words 1 and 2 pick each other
    cyclic[3, 0] = 5.0
    assert _greedy_tree(cyclic, single_root=True) is None
    two_roots = np.zeros((3, 3))
    two_roots[1, 0] = two_roots[2, 0] = 5.0
    assert _greedy_tree(two_roots, single_root=True) is None
    assert _greedy_tree(two_roots, single_root=False) == [0, 0]
