"""The iterative Chu-Liu/Edmonds (structures.arborescence) against brute-force enumeration, and on
sentences far longer than any recursion could nest."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from oracle import best_tree_score, reaches_root
from structkd.data.trees import is_tree
from structkd.structures import DependencyCRF
from structkd.structures.arborescence import chu_liu_edmonds, max_arborescence


def tree_score(scores: np.ndarray, heads: list[int]) -> float:
    return float(scores[np.arange(1, len(heads) + 1), heads].sum())


def test_max_arborescence_is_the_best_of_all_trees() -> None:
    """Unconstrained (several root words), with real-valued and with heavily tied integer scores."""
    rng = np.random.default_rng(3)
    for trial in range(600):
        n = 1 + trial % 6
        scores = rng.normal(size=(n + 1, n + 1)) * (5.0 if trial % 5 == 0 else 1.0)
        if trial % 3 == 0:
            scores = np.round(scores)  # ties: any best tree will do, the score must be the best
        heads = max_arborescence(scores)
        assert heads[0] == -1
        words = heads[1:].tolist()
        assert all(reaches_root(tuple(words), d) for d in range(1, n + 1))
        assert tree_score(scores, words) == pytest.approx(best_tree_score(scores, False), abs=1e-9)


@pytest.mark.parametrize("single_root", [True, False])
def test_chu_liu_edmonds_with_the_parsers_root_constraint(single_root: bool) -> None:
    rng = np.random.default_rng(4)
    for trial in range(300):
        n = 1 + trial % 6
        scores = rng.normal(size=(n + 1, n + 1))
        scores[1:, 0] += 2.0 if trial % 2 else 0.0  # root arcs attractive: many-root optima
        heads = chu_liu_edmonds(scores, single_root=single_root)
        assert is_tree(heads, single_root=single_root)
        best = best_tree_score(scores, single_root)
        assert tree_score(scores, heads) == pytest.approx(best, abs=1e-9)


def nested_cycles(n: int, rng: np.random.Generator) -> tuple[np.ndarray, list[int]]:
    """Scores whose contractions nest n - 1 deep, and their unique best tree.

    Word k's best head is k - 1 and word 1's is 2, so {1, 2} is a cycle; the contracted block
    {1..k} is best entered from k + 1 (the arc k + 1 -> 1), whose best head k lies in the block:
    each contraction makes the next cycle. The best tree is the chain 0 -> 1 -> 2 -> ... -> n
    (score -10; entering anywhere else costs at least 0.5 more). Words are relabeled at random.
    """
    scores = np.full((n + 1, n + 1), -100.0)  # [dep, head] in chain order
    scores[1:, 0] = -10.0
    scores[np.arange(2, n + 1), np.arange(1, n)] = 0.0
    scores[1, 2] = -0.5
    scores[1, 3:] = -1.0
    scores += rng.uniform(0, 1e-3, size=scores.shape) * (scores < -50)  # no ties among the rest
    order = np.concatenate([[0], 1 + rng.permutation(n)])  # chain position -> word id
    relabeled = np.empty_like(scores)
    relabeled[np.ix_(order, order)] = scores
    heads = [0] * n
    for k in range(1, n + 1):
        heads[order[k] - 1] = int(order[k - 1])
    return relabeled, heads


def test_deeply_nested_contractions_match_brute_force_then_run_at_2000_words() -> None:
    rng = np.random.default_rng(5)
    for n in range(3, 7):
        scores, expected = nested_cycles(n, rng)
        assert best_tree_score(scores, True) == pytest.approx(-10.0, abs=1e-2)
        assert chu_liu_edmonds(scores) == expected
    scores, expected = nested_cycles(2000, rng)
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(200)  # nothing may recurse with the sentence length
    try:
        assert chu_liu_edmonds(scores) == expected
    finally:
        sys.setrecursionlimit(limit)


def test_a_2000_word_sentence_through_the_non_projective_parser() -> None:
    """DependencyCRF's argmax on random scores of a 2,000-word sentence: a single-root tree at
    least as good as the greedy heads repaired into a chain (a crude, valid lower bound)."""
    gen = torch.Generator().manual_seed(6)
    n = 2000
    scores = torch.randn(1, n + 1, n + 1, generator=gen, dtype=torch.float64)
    heads = DependencyCRF(scores, torch.tensor([n]), projective=False).argmax[0, 1:].tolist()
    assert is_tree(heads)
    table = scores[0].numpy()
    chain = [0] + list(range(1, n))
    assert tree_score(table, heads) >= tree_score(table, chain)
