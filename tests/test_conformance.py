"""Every structure of the registry (oracle/cases.py) against brute-force enumeration.

Each check runs once per ``Case``; adding a structure to ``CASES`` adds it here. The checks run
in float64 on tiny random inputs drawn by hypothesis (seeds for a torch generator), except where
a check is about another dtype.
"""

from __future__ import annotations

import collections
import functools
import math
from collections.abc import Sequence
from typing import Any

import pytest
import torch
from hypothesis import given, settings

from oracle import CASES, SEEDS, Case, Potentials

NAMES = list(CASES)
SAMPLE_TOLERANCE = 0.06  # sampled frequencies of 2,000 draws against the marginals


def _setup(case: Case, seed: int, batch: int = 3) -> tuple[Potentials, torch.Tensor, Any]:
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(case.min_len, case.max_len + 1, (batch,), generator=gen)
    lengths[0] = case.max_len  # the padded length is always reached
    pots = case.draw(gen, batch, case.max_len)
    return pots, lengths, case.make(**pots, lengths=lengths)


def _brute(case: Case, pots: Potentials, b: int, n: int) -> tuple[Sequence[Any], torch.Tensor]:
    """Every output of sentence b (length n) and its hand-written score."""
    ys = case.enumerate(n)
    # The same hand-written score on numpy views: element reads cost ~0.1 us instead of ~5 us.
    arrays = {k: v.detach().numpy() for k, v in pots.items()}
    scores = torch.tensor([case.score(arrays, b, y) for y in ys], dtype=torch.float64)
    return ys, scores


@functools.cache
def _indicators(name: str, n: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """[T, ...] the part indicators of every output of an n-word sentence (padded to the case's
    max_len), and those of the second parts (or None): expectations become one contraction."""
    case = CASES[name]
    ys = case.enumerate(n)
    parts = torch.stack([case.indicator(y, case.max_len) for y in ys])
    if case.pair_parts is None:
        return parts, None
    return parts, torch.stack([case.pair_indicator(y, case.max_len) for y in ys])


def _expected(probs: torch.Tensor, parts: torch.Tensor) -> torch.Tensor:
    """sum_y p(y) * parts[y]: probs [T], parts [T, ...] -> [...]."""
    return torch.tensordot(probs, parts, dims=1)


def _close(actual: torch.Tensor, expected: torch.Tensor, tol: float) -> None:
    torch.testing.assert_close(actual.double(), expected.double(), rtol=tol, atol=tol)


def _exact_only(case: Case) -> None:
    if not case.exact:
        pytest.skip("approximate inference")


@pytest.mark.parametrize("name", NAMES)
def test_count(name: str) -> None:
    case = CASES[name]
    for n, expected in case.count.items():
        assert len(case.enumerate(n)) == expected


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=15, deadline=None)
@given(seed=SEEDS)
def test_log_partition_and_score(name: str, seed: int) -> None:
    case = CASES[name]
    _exact_only(case)
    tol = case.tolerance[torch.float64]
    pots, lengths, dist = _setup(case, seed)
    for b, n in enumerate(lengths.tolist()):
        ys, scores = _brute(case, pots, b, n)
        _close(dist.log_partition[b], torch.logsumexp(scores, 0), tol)
    # score() of the compact form agrees with the hand-written score
    ys0 = [case.enumerate(n)[-1] for n in lengths.tolist()]
    got = dist.score(case.to_batch(ys0, case.max_len))
    want = torch.tensor([case.score(pots, b, y) for b, y in enumerate(ys0)])
    _close(got, want, tol)


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=15, deadline=None)
@given(seed=SEEDS)
def test_marginals(name: str, seed: int) -> None:
    case = CASES[name]
    _exact_only(case)
    tol = case.tolerance[torch.float64]
    pots, lengths, dist = _setup(case, seed)
    for b, n in enumerate(lengths.tolist()):
        _, scores = _brute(case, pots, b, n)
        probs = torch.softmax(scores, 0)
        parts, pair_parts = _indicators(name, n)
        _close(dist.marginals[b], _expected(probs, parts), tol)
        if pair_parts is not None:
            _close(dist.part_marginals[1][b], _expected(probs, pair_parts), tol)


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=15, deadline=None)
@given(seed=SEEDS)
def test_argmax_and_topk(name: str, seed: int) -> None:
    case = CASES[name]
    if not case.exact:
        _check_surrogate_argmax_and_topk(case, seed)
        return
    tol = case.tolerance[torch.float64]
    pots, lengths, dist = _setup(case, seed)
    best = dist.argmax
    for b, n in enumerate(lengths.tolist()):
        ys, scores = _brute(case, pots, b, n)
        got = case.score(pots, b, case.from_batch(best, b, n))
        assert math.isclose(got, float(scores.max()), rel_tol=tol, abs_tol=tol)
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
        got = torch.tensor([case.score(pots, b, case.from_batch(y, b, n)) for y in kbest])
        _close(got, scores.sort(descending=True).values[:k], tol)
        distinct = {repr(case.from_batch(y, b, n)) for y in kbest}
        assert len(distinct) == k


def _check_surrogate_argmax_and_topk(case: Case, seed: int) -> None:
    """Approximate inference decodes the best outputs under the approximate log marginals: argmax
    is the best of all outputs, topk the k best of them, best first, the first one argmax."""
    pots, lengths, dist = _setup(case, seed)
    log_q = dist.marginals.log()

    def surrogate(b: int, y: Any) -> float:
        return float(log_q[b][case.indicator(y, case.max_len).bool()].sum())

    for b, n in enumerate(lengths.tolist()):
        outputs = case.enumerate(n)
        got = case.from_batch(dist.argmax, b, n)
        assert got in outputs
        assert surrogate(b, got) == pytest.approx(max(surrogate(b, y) for y in outputs))
    kbest = dist.topk(4)
    assert torch.equal(kbest[0], dist.argmax)
    for b, n in enumerate(lengths.tolist()):
        outputs = case.enumerate(n)
        ranked = sorted((surrogate(b, y) for y in outputs), reverse=True)
        got = [case.from_batch(y, b, n) for y in kbest]
        distinct = list(dict.fromkeys(got))  # short sentences repeat their last output
        assert len(distinct) == min(4, len(ranked))
        assert all(y in outputs for y in distinct)
        values = [surrogate(b, y) for y in distinct]
        assert values == pytest.approx(ranked[: len(distinct)])


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=10, deadline=None)
@given(seed=SEEDS)
def test_log_prob_sums_to_one(name: str, seed: int) -> None:
    case = CASES[name]
    _exact_only(case)
    pots, lengths, dist = _setup(case, seed)
    n_max = max(len(case.enumerate(n)) for n in lengths.tolist())
    total = torch.zeros(len(lengths), dtype=torch.float64)
    for i in range(n_max):
        ys = [case.enumerate(n)[min(i, len(case.enumerate(n)) - 1)] for n in lengths.tolist()]
        valid = torch.tensor([i < len(case.enumerate(n)) for n in lengths.tolist()])
        total += valid * dist.log_prob(case.to_batch(ys, case.max_len)).exp()
    _close(total, torch.ones_like(total), case.tolerance[torch.float64])


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=10, deadline=None)
@given(seed=SEEDS)
def test_entropy_cross_entropy_kl(name: str, seed: int) -> None:
    case = CASES[name]
    _exact_only(case)
    tol = case.tolerance[torch.float64]
    pots, lengths, p = _setup(case, seed)
    gen = torch.Generator().manual_seed(seed + 1)
    pots_q = case.draw(gen, len(lengths), case.max_len)
    q = case.make(**pots_q, lengths=lengths)
    for b, n in enumerate(lengths.tolist()):
        _, sp = _brute(case, pots, b, n)
        _, sq = _brute(case, pots_q, b, n)
        lp, lq = torch.log_softmax(sp, 0), torch.log_softmax(sq, 0)
        _close(p.entropy[b], -(lp.exp() * lp).sum(), tol)
        _close(p.cross_entropy(q)[b], -(lp.exp() * lq).sum(), tol)
        _close(p.kl(q)[b], (lp.exp() * (lp - lq)).sum(), tol)


@pytest.mark.parametrize("name", NAMES)
def test_sample_frequencies(name: str) -> None:
    case = CASES[name]
    pots, lengths, dist = _setup(case, 1234)
    if not case.has_sample:
        with pytest.raises(NotImplementedError):
            dist.sample(2)
        return
    draws = dist.sample(2000)
    assert len(draws) == 2000
    for b, n in enumerate(lengths.tolist()):
        counts = collections.Counter(case.from_batch(y, b, n) for y in draws)
        freq = sum(c * case.indicator(y, case.max_len) for y, c in counts.items())
        _close(freq / 2000, dist.marginals[b].detach(), SAMPLE_TOLERANCE)


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=10, deadline=None)
@given(seed=SEEDS)
def test_padding_invariance(name: str, seed: int) -> None:
    """Results for a sentence do not depend on the batch it sits in or the padding's values."""
    case = CASES[name]
    tol = case.tolerance[torch.float64]
    pots, lengths, dist = _setup(case, seed)
    gen = torch.Generator().manual_seed(seed + 7)
    junk = case.draw(gen, 1, case.max_len + 2)
    for b, n in enumerate(lengths.tolist()):
        own = case.crop(pots, b, n)
        alone = case.make(**own, lengths=torch.tensor([n]))
        wide_pots = {k: _embed(v, junk[k]) for k, v in own.items()}
        wide = case.make(**wide_pots, lengths=torch.tensor([n]))
        if case.exact:
            _close(wide.log_partition, alone.log_partition, tol)
            _close(wide.entropy, alone.entropy, tol)
        got = wide.marginals[0]
        ref = alone.marginals[0]
        _close(got[tuple(slice(0, s) for s in ref.shape)], ref, tol)
        assert float(got.abs().sum()) == pytest.approx(float(ref.abs().sum()), abs=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_gradcheck(name: str) -> None:
    case = CASES[name]
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


@pytest.mark.parametrize("name", NAMES)
def test_no_grad_and_frozen(name: str) -> None:
    """A frozen teacher: potentials without grad, or under no_grad, still give marginals."""
    case = CASES[name]
    tol = case.tolerance[torch.float64]
    pots, lengths, _ = _setup(case, 5)
    ref = case.make(**pots, lengths=lengths).marginals
    with torch.no_grad():
        inside = case.make(**pots, lengths=lengths)
        _close(inside.marginals, ref, tol)
        if case.exact:
            assert torch.isfinite(inside.entropy).all()
    assert not ref.requires_grad
    grad_pots = {k: v.clone().requires_grad_() for k, v in pots.items()}
    with torch.no_grad():
        _close(case.make(**grad_pots, lengths=lengths).marginals, ref, tol)


@pytest.mark.parametrize("name", NAMES)
def test_float32_and_nan_check(name: str) -> None:
    case = CASES[name]
    pots, lengths, dist = _setup(case, 11)
    low = case.make(**{k: v.float() for k, v in pots.items()}, lengths=lengths)
    assert low.marginals.dtype == torch.float32
    _close(low.marginals, dist.marginals, case.tolerance[torch.float32])
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
