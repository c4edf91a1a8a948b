"""Shared conformance suite: every structure against brute-force enumeration.

A structure's test file describes it with a ``Case`` (how to draw random potentials, enumerate
every structure of a sentence, score one by hand and turn it into part indicators) and subclasses
``ConformanceSuite``; pytest then runs every check below on it. All checks run in float64 on tiny
random inputs drawn by hypothesis.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

Potentials = dict[str, torch.Tensor]


@dataclass
class Case:
    """How the suite talks to one structure.

    Attributes:
        make: builds the structure from potentials (keyword names as in ``draw``) and lengths.
        draw: draws random float64 potentials for a batch: (generator, batch, max_len) -> dict.
        enumerate: every structure of a sentence of length n, in per-sentence form.
        brute_score: hand-written score of one per-sentence structure of sentence b.
        indicator: part indicators of a per-sentence structure, shaped like ``marginals[b]``
            for a sentence padded to max_len.
        to_batch: per-sentence structures (one per sentence) -> the compact batched form.
        from_batch: compact batched form, sentence index b, length n -> per-sentence form.
        max_len: the largest sentence the suite draws (keep enumeration small).
        min_len: the smallest sentence length drawn.
        count: known number of structures for a length, checked against ``enumerate``.
        pair_indicator: for structures with extra part marginals (e.g. tag pairs), indicators
            shaped like ``part_marginals[1][b]``.
        crop: sentence b's potentials, batch 1, cut to its own length n (no padding at all).
        has_topk / has_sample / exact: which optional operations the structure supports.
    """

    make: Callable[..., Any]
    draw: Callable[[torch.Generator, int, int], Potentials]
    enumerate: Callable[[int], Sequence[Any]]
    brute_score: Callable[[Potentials, int, Any], float]
    indicator: Callable[[Any, int], torch.Tensor]
    to_batch: Callable[[Sequence[Any], int], Any]
    from_batch: Callable[[Any, int, int], Any]
    crop: Callable[[Potentials, int, int], Potentials]
    max_len: int = 4
    min_len: int = 1
    count: dict[int, int] = field(default_factory=dict)
    pair_indicator: Callable[[Any, int], torch.Tensor] | None = None
    has_topk: bool = True
    has_sample: bool = True
    exact: bool = True


SEEDS = st.integers(min_value=0, max_value=2**31 - 1)
# Every subclass runs the same @given methods; hypothesis flags that unless told it is intended.
SHARED_TESTS = [HealthCheck.differing_executors]


def _setup(case: Case, seed: int, batch: int = 3) -> tuple[Potentials, torch.Tensor, Any]:
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(case.min_len, case.max_len + 1, (batch,), generator=gen)
    lengths[0] = case.max_len  # the padded length is always reached
    pots = case.draw(gen, batch, case.max_len)
    return pots, lengths, case.make(**pots, lengths=lengths)


def _brute(case: Case, pots: Potentials, b: int, n: int) -> tuple[list[Any], torch.Tensor]:
    ys = list(case.enumerate(n))
    scores = torch.tensor([case.brute_score(pots, b, y) for y in ys], dtype=torch.float64)
    return ys, scores


def _close(actual: torch.Tensor, expected: torch.Tensor, tol: float = 1e-6) -> None:
    torch.testing.assert_close(actual.double(), expected.double(), rtol=tol, atol=tol)


class ConformanceSuite:
    """Subclass as ``class TestX(ConformanceSuite): case = Case(...)``."""

    case: Case

    def test_count(self) -> None:
        for n, expected in self.case.count.items():
            assert len(self.case.enumerate(n)) == expected

    @settings(max_examples=15, deadline=None, suppress_health_check=SHARED_TESTS)
    @given(seed=SEEDS)
    def test_log_partition_and_score(self, seed: int) -> None:
        case = self.case
        if not case.exact:
            pytest.skip("approximate inference")
        pots, lengths, dist = _setup(case, seed)
        for b, n in enumerate(lengths.tolist()):
            ys, scores = _brute(case, pots, b, n)
            _close(dist.log_partition[b], torch.logsumexp(scores, 0))
        # score() of the compact form agrees with the hand-written score
        ys0 = [case.enumerate(n)[-1] for n in lengths.tolist()]
        got = dist.score(case.to_batch(ys0, case.max_len))
        want = torch.tensor([case.brute_score(pots, b, y) for b, y in enumerate(ys0)])
        _close(got, want)

    @settings(max_examples=15, deadline=None, suppress_health_check=SHARED_TESTS)
    @given(seed=SEEDS)
    def test_marginals(self, seed: int) -> None:
        case = self.case
        if not case.exact:
            pytest.skip("approximate inference")
        pots, lengths, dist = _setup(case, seed)
        for b, n in enumerate(lengths.tolist()):
            ys, scores = _brute(case, pots, b, n)
            probs = torch.softmax(scores, 0)
            expected = sum(p * case.indicator(y, case.max_len) for p, y in zip(probs, ys))
            _close(dist.marginals[b], expected)
            if case.pair_indicator is not None:
                expected_pairs = sum(
                    p * case.pair_indicator(y, case.max_len) for p, y in zip(probs, ys)
                )
                _close(dist.part_marginals[1][b], expected_pairs)

    @settings(max_examples=15, deadline=None, suppress_health_check=SHARED_TESTS)
    @given(seed=SEEDS)
    def test_argmax_and_topk(self, seed: int) -> None:
        case = self.case
        pots, lengths, dist = _setup(case, seed)
        best = dist.argmax
        for b, n in enumerate(lengths.tolist()):
            ys, scores = _brute(case, pots, b, n)
            got = case.brute_score(pots, b, case.from_batch(best, b, n))
            assert math.isclose(got, float(scores.max()), rel_tol=1e-6, abs_tol=1e-6)
        if not case.has_topk:
            with pytest.raises(NotImplementedError):
                dist.topk(2)
            return
        k = min(len(case.enumerate(n)) for n in lengths.tolist())
        k = min(k, 5)
        kbest = dist.topk(k)
        assert len(kbest) == k
        for b, n in enumerate(lengths.tolist()):
            _, scores = _brute(case, pots, b, n)
            got = torch.tensor([case.brute_score(pots, b, case.from_batch(y, b, n)) for y in kbest])
            _close(got, scores.sort(descending=True).values[:k])
            distinct = {repr(case.from_batch(y, b, n)) for y in kbest}
            assert len(distinct) == k

    @settings(max_examples=10, deadline=None, suppress_health_check=SHARED_TESTS)
    @given(seed=SEEDS)
    def test_log_prob_sums_to_one(self, seed: int) -> None:
        case = self.case
        if not case.exact:
            pytest.skip("approximate inference")
        pots, lengths, dist = _setup(case, seed)
        n_max = max(len(case.enumerate(n)) for n in lengths.tolist())
        total = torch.zeros(len(lengths), dtype=torch.float64)
        for i in range(n_max):
            ys = [case.enumerate(n)[min(i, len(case.enumerate(n)) - 1)] for n in lengths.tolist()]
            valid = torch.tensor([i < len(case.enumerate(n)) for n in lengths.tolist()])
            total += valid * dist.log_prob(case.to_batch(ys, case.max_len)).exp()
        _close(total, torch.ones_like(total))

    @settings(max_examples=10, deadline=None, suppress_health_check=SHARED_TESTS)
    @given(seed=SEEDS)
    def test_entropy_cross_entropy_kl(self, seed: int) -> None:
        case = self.case
        if not case.exact:
            pytest.skip("approximate inference")
        pots, lengths, p = _setup(case, seed)
        gen = torch.Generator().manual_seed(seed + 1)
        pots_q = case.draw(gen, len(lengths), case.max_len)
        q = case.make(**pots_q, lengths=lengths)
        for b, n in enumerate(lengths.tolist()):
            _, sp = _brute(case, pots, b, n)
            _, sq = _brute(case, pots_q, b, n)
            lp, lq = torch.log_softmax(sp, 0), torch.log_softmax(sq, 0)
            _close(p.entropy[b], -(lp.exp() * lp).sum())
            _close(p.cross_entropy(q)[b], -(lp.exp() * lq).sum())
            _close(p.kl(q)[b], (lp.exp() * (lp - lq)).sum())

    def test_sample_frequencies(self) -> None:
        case = self.case
        pots, lengths, dist = _setup(case, 1234)
        if not case.has_sample:
            with pytest.raises(NotImplementedError):
                dist.sample(2)
            return
        draws = dist.sample(2000)
        assert len(draws) == 2000
        for b, n in enumerate(lengths.tolist()):
            freq = sum(case.indicator(case.from_batch(y, b, n), case.max_len) for y in draws)
            _close(freq / 2000, dist.marginals[b].detach(), tol=0.06)

    @settings(max_examples=10, deadline=None, suppress_health_check=SHARED_TESTS)
    @given(seed=SEEDS)
    def test_padding_invariance(self, seed: int) -> None:
        """Results for a sentence do not depend on the batch it sits in or the padding's values."""
        case = self.case
        pots, lengths, dist = _setup(case, seed)
        gen = torch.Generator().manual_seed(seed + 7)
        junk = case.draw(gen, 1, case.max_len + 2)
        for b, n in enumerate(lengths.tolist()):
            own = case.crop(pots, b, n)
            alone = case.make(**own, lengths=torch.tensor([n]))
            wide_pots = {k: _embed(v, junk[k]) for k, v in own.items()}
            wide = case.make(**wide_pots, lengths=torch.tensor([n]))
            if case.exact:
                _close(wide.log_partition, alone.log_partition)
                _close(wide.entropy, alone.entropy)
            got = wide.marginals[0]
            ref = alone.marginals[0]
            _close(got[tuple(slice(0, s) for s in ref.shape)], ref)
            assert float(got.abs().sum()) == pytest.approx(float(ref.abs().sum()), abs=1e-6)

    def test_gradcheck(self) -> None:
        case = self.case
        pots, lengths, _ = _setup(case, 99, batch=2)
        names = list(pots)

        def fn(*tensors: torch.Tensor) -> torch.Tensor:
            dist = case.make(**dict(zip(names, tensors)), lengths=lengths)
            # A fixed random weighting: a plain sum of marginals is often constant (e.g. n arcs).
            weights = torch.randn(dist.marginals.shape, generator=torch.Generator().manual_seed(0),
                                  dtype=dist.marginals.dtype)
            out = (dist.marginals * weights).sum()
            if case.exact:
                out = out + dist.log_partition.sum()
            return out

        inputs = [pots[k].clone().requires_grad_() for k in names]
        assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-5)

    def test_no_grad_and_frozen(self) -> None:
        """A frozen teacher: potentials without grad, or under no_grad, still give marginals."""
        case = self.case
        pots, lengths, _ = _setup(case, 5)
        ref = case.make(**pots, lengths=lengths).marginals
        with torch.no_grad():
            inside = case.make(**pots, lengths=lengths)
            _close(inside.marginals, ref)
            if case.exact:
                assert torch.isfinite(inside.entropy).all()
        assert not ref.requires_grad
        grad_pots = {k: v.clone().requires_grad_() for k, v in pots.items()}
        with torch.no_grad():
            _close(case.make(**grad_pots, lengths=lengths).marginals, ref)

    def test_float32_and_nan_check(self) -> None:
        case = self.case
        pots, lengths, dist = _setup(case, 11)
        low = case.make(**{k: v.float() for k, v in pots.items()}, lengths=lengths)
        assert low.marginals.dtype == torch.float32
        _close(low.marginals, dist.marginals, tol=1e-4)
        bad = {k: v.clone() for k, v in pots.items()}
        first = next(iter(bad))
        bad[first].view(-1)[bad[first].numel() // 2] = float("nan")
        with pytest.raises(ValueError, match="NaN"):
            case.make(**bad, lengths=None).marginals  # noqa: B018


def _embed(v: torch.Tensor, junk: torch.Tensor) -> torch.Tensor:
    """Writes v into the leading corner of a larger tensor of junk values."""
    out = junk.clone()
    out[tuple(slice(0, s) for s in v.shape)] = v
    return out
