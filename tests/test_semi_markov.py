"""SemiMarkovCRF beyond the conformance suite (tests/test_conformance.py): the alpha and beta
tables against enumeration of sub-ranges, hard constraints, large scores and bad inputs."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest
import torch
from hypothesis import given, settings

from oracle import CASES, SEEDS, count_span_sets, span_sets
from structkd.structures.semi_markov import SemiMarkovCRF

CASE = CASES["semi_markov"]
N_TYPES = CASE.labels


def _logsumexp(values: Sequence[float]) -> float:
    return float(torch.logsumexp(torch.tensor(values, dtype=torch.float64), 0))


def _range_log_weight(scores: torch.Tensor, first: int, stop: int) -> float:
    """log of the summed weight of all span sets on tokens first..stop-1 (scores: [N, N, R])."""
    sets = [y for y in span_sets(stop, N_TYPES) if all(i >= first for i, _, _ in y)]
    return _logsumexp([float(sum(scores[i, j, r] for i, j, r in y)) for y in sets])


@settings(max_examples=10, deadline=None)
@given(seed=SEEDS)
def test_alpha_and_beta_are_prefix_and_suffix_sums(seed: int) -> None:
    """The tables the span -> tag projection relies on, against enumeration of sub-ranges."""
    gen = torch.Generator().manual_seed(seed)
    scores = CASE.draw(gen, 3, 4)["span_scores"]
    lengths = torch.tensor([4, 2, 3])
    dist = SemiMarkovCRF(scores, lengths)
    for b, n in enumerate(lengths.tolist()):
        for j in range(n + 1):
            assert math.isclose(float(dist.log_alpha[b, j]), _range_log_weight(scores[b], 0, j))
            expected_beta = _range_log_weight(scores[b], j, n)
            assert math.isclose(float(dist.log_beta[b, j]), expected_beta, abs_tol=1e-12)
        assert (dist.log_beta[b, n + 1 :] == 0).all()


def test_count_matches_closed_form_for_three_types() -> None:
    assert [len(span_sets(n, 3)) for n in range(5)] == [
        count_span_sets(n, 3) for n in range(5)
    ]
    assert count_span_sets(2, 2) == 11  # {}, 2 singles at each of 2 tokens, 4 pairs, 2 wide spans


def test_lower_triangle_is_ignored() -> None:
    gen = torch.Generator().manual_seed(3)
    scores = CASE.draw(gen, 2, 4)["span_scores"]
    lower = torch.ones(4, 4, dtype=torch.bool).tril(-1)[None, :, :, None]
    noisy = scores.masked_fill(lower, 1e6)
    ref, got = SemiMarkovCRF(scores), SemiMarkovCRF(noisy)
    torch.testing.assert_close(got.log_partition, ref.log_partition)
    torch.testing.assert_close(got.marginals, ref.marginals)
    assert got.argmax == ref.argmax
    assert (got.marginals.masked_select(lower.expand_as(scores)) == 0).all()


def test_topk_repeats_the_worst_structure_when_short() -> None:
    scores = torch.tensor([[[[1.0, -2.0]]]], dtype=torch.float64)  # one token, 3 span sets
    best = SemiMarkovCRF(scores).topk(5)
    assert [y[0] for y in best] == [[(0, 0, 0)], [], [(0, 0, 1)], [(0, 0, 1)], [(0, 0, 1)]]


def test_empty_sentence_and_argmax_shape() -> None:
    gen = torch.Generator().manual_seed(4)
    scores = CASE.draw(gen, 2, 3)["span_scores"]
    dist = SemiMarkovCRF(scores, torch.tensor([0, 3]))
    assert float(dist.log_partition[0]) == 0.0
    assert (dist.marginals[0] == 0).all()
    assert dist.argmax[0] == [] and dist.topk(2)[1][0] == []
    assert all(y[0] == [] for y in dist.sample(3))
    for spans in dist.argmax[1:]:
        assert spans == sorted(spans) and all(isinstance(v, int) for s in spans for v in s)


def test_minus_inf_forbids_a_type() -> None:
    """-inf span scores are hard constraints: the type disappears and gradients stay finite."""
    gen = torch.Generator().manual_seed(5)
    scores = CASE.draw(gen, 2, 4)["span_scores"]
    lengths = torch.tensor([4, 3])
    forbidden = scores.clone()
    forbidden[..., 1] = -math.inf
    forbidden.requires_grad_()
    dist = SemiMarkovCRF(forbidden, lengths)
    only_first = SemiMarkovCRF(scores[..., :1], lengths)
    torch.testing.assert_close(dist.log_partition, only_first.log_partition)
    torch.testing.assert_close(dist.marginals[..., :1], only_first.marginals)
    assert (dist.marginals[..., 1] == 0).all()
    assert all(r == 0 for y in dist.topk(3) + dist.sample(20) for s in y for _, _, r in s)
    (dist.log_partition.sum() + dist.marginals.sum()).backward()
    assert forbidden.grad is not None and torch.isfinite(forbidden.grad).all()


def test_large_scores_float32_stay_finite() -> None:
    gen = torch.Generator().manual_seed(6)
    scores = CASE.draw(gen, 2, 4)["span_scores"] * 1000
    lengths = torch.tensor([4, 2])
    low, high = SemiMarkovCRF(scores.float(), lengths), SemiMarkovCRF(scores, lengths)
    assert torch.isfinite(low.marginals).all()
    torch.testing.assert_close(low.marginals.double(), high.marginals, atol=1e-3, rtol=0)
    torch.testing.assert_close(low.log_partition.double(), high.log_partition, rtol=1e-5, atol=0)


def test_tempered_divides_every_score() -> None:
    gen = torch.Generator().manual_seed(7)
    scores = CASE.draw(gen, 2, 3)["span_scores"]
    lengths = torch.tensor([3, 2])
    hot = SemiMarkovCRF(scores, lengths).tempered(2.0)
    half = {"span_scores": scores / 2}
    for b, n in enumerate(lengths.tolist()):
        want = _logsumexp([CASE.score(half, b, y) for y in CASE.enumerate(n)])
        assert math.isclose(float(hot.log_partition[b]), want, rel_tol=1e-9)


def test_score_rejects_invalid_span_sets() -> None:
    dist = SemiMarkovCRF(torch.zeros(1, 3, 3, N_TYPES), torch.tensor([2]))
    for bad in (
        [(0, 2, 0)],
        [(1, 0, 0)],
        [(0, 0, 2)],
        [(0, 1, 0), (1, 1, 1)],
        [(1, 1, 0), (0, 0, 0)],
    ):
        with pytest.raises(ValueError):
            dist.score([bad])
    with pytest.raises(ValueError):
        dist.score([[], []])
    with pytest.raises(ValueError):
        SemiMarkovCRF(torch.zeros(1, 3, 2, N_TYPES))
