"""Numerical contract of every structure at extreme scales and degenerate shapes.

The structure test files already pin some of this (see ``COVERED_ELSEWHERE``); this file adds the
cases they miss, uniformly across structures:

* scores x1000 in float32 and float64, and x1e5 and x1e8 in float32: log Z finite; marginals
  finite and in [0, 1]; each word's marginals sum to one (one tag, one head), or, for the span
  CRF, each token is covered by at most one span (coverage <= 1); a zero-length sentence has
  log Z = 0 and no mass; a one-token sentence has its one obvious answer;
* a batch of one (no padding at all) behaves the same way;
* NaN in any unmasked potential raises ValueError naming that argument.

It runs on every Case of the registry (tests/oracle/cases.py), so a new structure is covered here
once it is a Case there.
"""

from __future__ import annotations

import pytest
import torch

from oracle import CASES, Case
from structkd.structures.base import Structure
from structkd.structures.dependency import DependencyCRF
from structkd.structures.linear_chain import LinearChainCRF

# One intra-op thread: on a loaded 2-core machine OpenMP oversubscription makes Eisner's 300 small
# steps 30x slower (5 s instead of 0.2 s), which says nothing about the code under test.
pytestmark = pytest.mark.usefixtures("one_thread")

N_LABELS = 4
SCALE = 1000.0
# Every Case of the registry, over N_LABELS tags or span types (arc structures have none).
SPECS: dict[str, Case] = {
    name: case if case.kind == "arcs" else case.with_labels(N_LABELS)
    for name, case in CASES.items()
}

# (structure, dtype) pairs whose x1000 behaviour an existing test already pins down.
_MATRIX_TREE = "test_dependency_nonprojective::test_regression_matrix_tree_large_scores"
COVERED_ELSEWHERE = {
    ("matrix_tree", torch.float32): _MATRIX_TREE,
    ("matrix_tree", torch.float64): _MATRIX_TREE,
    ("matrix_tree_multiroot", torch.float32): _MATRIX_TREE,
    ("matrix_tree_multiroot", torch.float64): _MATRIX_TREE,
    ("linear_chain_batched", torch.float32): (
        "test_linear_chain::test_large_potentials_float32_are_stable"
    ),
}
SCALE_CASES = [
    (name, dtype)
    for name in SPECS
    for dtype in (torch.float32, torch.float64)
    if (name, dtype) not in COVERED_ELSEWHERE
]


def _word_totals(spec: Case, dist: Structure) -> torch.Tensor:
    """Per token (tags, spans) or per word position 0..N (arcs): [B, N] total marginal mass.

    Tags and arcs: the sum over labels / heads (1 on words, 0 on padding and ROOT). Spans: how
    often a token is covered, ``sum_{i <= t <= j, r} mu[i, j, r]`` (at most 1).
    """
    mu = dist.marginals
    if spec.kind == "spans":
        n = mu.shape[1]
        pos = torch.arange(n)
        # [N(i), N(j), N(t)]: span (i, j) covers token t
        covers = (pos[:, None, None] <= pos[None, None, :]) & (pos[None, :, None] >= pos)
        return torch.einsum("bijr,ijt->bt", mu, covers.to(mu.dtype))
    return mu.sum(-1)


def _word_mask(spec: Case, lengths: torch.Tensor, size: int) -> torch.Tensor:
    pos = torch.arange(size)[None, :]
    if spec.kind == "arcs":
        return (pos >= 1) & (pos <= lengths[:, None])  # [B, N+1]: words, not ROOT
    return pos < lengths[:, None]  # [B, N]


def _log_z(spec: Case, dist: Structure) -> torch.Tensor:
    """log Z [B], or zeros of the right shape and dtype where it is not available."""
    if spec.exact:
        return dist.log_partition
    with pytest.raises(NotImplementedError):
        dist.log_partition  # noqa: B018
    return dist.marginals.new_zeros(len(dist.lengths))


def _check_normalised(spec: Case, dist: Structure, dtype: torch.dtype) -> None:
    tol = spec.scaled_tolerance
    log_z, mu = _log_z(spec, dist), dist.marginals
    assert log_z.dtype == mu.dtype == dtype
    assert torch.isfinite(log_z).all(), log_z
    assert torch.isfinite(mu).all()
    assert (mu >= -tol).all() and (mu <= 1 + tol).all(), (float(mu.min()), float(mu.max()))
    totals = _word_totals(spec, dist)  # [B, N]
    words = _word_mask(spec, dist.lengths, totals.shape[1])
    assert (totals[~words].abs() <= tol).all()  # no mass on padding (or ROOT's row)
    if spec.kind == "spans":
        assert (totals[words] <= 1 + tol).all(), totals
    else:
        ones = torch.ones(int(words.sum()), dtype=dtype)
        torch.testing.assert_close(totals[words], ones, atol=tol, rtol=0)


@pytest.mark.parametrize(("name", "dtype"), SCALE_CASES)
def test_scaled_x1000_stays_finite_and_normalised(name: str, dtype: torch.dtype) -> None:
    _check_scaled(name, dtype, SCALE)


@pytest.mark.parametrize("scale", [1e5, 1e8])
@pytest.mark.parametrize("name", list(SPECS))
def test_scaled_x1e5_and_x1e8_float32_stay_normalised(name: str, scale: float) -> None:
    """Far beyond any trained model's scores (a diverged teacher reaches them), in float32: the
    same contract as at x1000. The chain's marginals used to sum to 1.13-1.28 at x1e5 and inf at
    x1e8 (exp of accumulated rounding error); they are now normalised per position."""
    _check_scaled(name, torch.float32, scale)


def test_chain_pair_marginals_are_normalised_at_x1e8() -> None:
    """The chain's pair marginals too: each real step sums to one, padding to zero."""
    spec = SPECS["linear_chain_start_end"]
    tol = spec.scaled_tolerance
    gen = torch.Generator().manual_seed(5)
    pots = {k: (v * 1e8).float() for k, v in spec.draw(gen, 3, 7).items()}
    crf = LinearChainCRF(**pots, lengths=torch.tensor([7, 3, 1]))
    unary, pair = crf.part_marginals
    assert torch.isfinite(pair).all() and (pair >= 0).all() and (pair <= 1 + tol).all()
    steps = crf.mask[:, 1:].float()  # [B, N-1]
    torch.testing.assert_close(pair.sum((-1, -2)), steps, atol=tol, rtol=0)
    # Pair and unary marginals agree: summing a step's pairs over the next tag gives the unary.
    torch.testing.assert_close(pair.sum(-1), unary[:, :-1] * steps[:, :, None], atol=tol, rtol=0)


def _check_scaled(name: str, dtype: torch.dtype, scale: float) -> None:
    spec = SPECS[name]
    gen = torch.Generator().manual_seed(0)
    max_len = 10
    lengths = torch.tensor([max_len, 6, 1, 0])
    pots = {k: (v * scale).to(dtype) for k, v in spec.draw(gen, 4, max_len).items()}
    dist = spec.make(**pots, lengths=lengths)
    _check_normalised(spec, dist, dtype)
    # Zero-length sentence: log Z = log 1 and no mass anywhere.
    assert float(_log_z(spec, dist)[3]) == 0.0
    assert float(dist.marginals[3].abs().sum()) == 0.0
    # One-token sentence: one word has one head (ROOT); one token's labels sum to one.
    if spec.kind == "arcs":
        assert float(dist.marginals[2, 1, 0]) == pytest.approx(1.0, abs=spec.scaled_tolerance)
    # Batch of one, full length (no padding at all), same numbers as inside the batch.
    alone = spec.make(**spec.crop(pots, 0, max_len), lengths=None)
    _check_normalised(spec, alone, dtype)
    tol = spec.scaled_tolerance
    torch.testing.assert_close(alone.marginals[0], dist.marginals[0], atol=tol, rtol=0)


@pytest.mark.parametrize("name", list(SPECS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_one_token_and_empty_sentences_alone(name: str, dtype: torch.dtype) -> None:
    """Batches made only of degenerate sentences (no longer sentence sets the padded size)."""
    spec = SPECS[name]
    gen = torch.Generator().manual_seed(1)
    one = spec.make(**{k: v.to(dtype) for k, v in spec.draw(gen, 1, 1).items()})
    _check_normalised(spec, one, dtype)
    empty = spec.make(**{k: v.to(dtype) for k, v in spec.draw(gen, 2, 0).items()})
    assert _log_z(spec, empty).tolist() == [0.0, 0.0]
    assert float(empty.marginals.abs().sum()) == 0.0


NAN_CASES = [(name, arg) for name, spec in SPECS.items() for arg in spec.nan_at]


@pytest.mark.parametrize(("name", "arg"), NAN_CASES)
def test_nan_in_a_potential_is_named(name: str, arg: str) -> None:
    spec = SPECS[name]
    pots = spec.draw(torch.Generator().manual_seed(2), 2, 5)
    pots[arg] = pots[arg].clone()
    pots[arg][spec.nan_at[arg]] = float("nan")
    with pytest.raises(ValueError, match=rf"^{arg} contains NaN"):
        spec.make(**pots, lengths=torch.tensor([5, 3])).marginals  # noqa: B018


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("projective", [True, False])
def test_a_300_word_sentence(dtype: torch.dtype, projective: bool) -> None:
    """Eisner (O(N^3) charts) and the matrix-tree on one 300-word sentence: log Z, marginals
    and the gradient of log Z all finite, and every word has one head. Peak memory of the same
    computation: benchmarks/memory.py (docs/reliability.md)."""
    gen = torch.Generator().manual_seed(3)
    scores = (torch.randn(1, 301, 301, generator=gen, dtype=torch.float64) * 5).to(dtype)
    scores.requires_grad_()
    dist = DependencyCRF(scores, projective=projective)
    spec = SPECS["eisner" if projective else "matrix_tree"]
    _check_normalised(spec, dist, dtype)
    (grad,) = torch.autograd.grad(dist.log_partition.sum(), scores)
    torch.testing.assert_close(grad, dist.marginals.detach(), atol=spec.scaled_tolerance, rtol=0)


def test_single_root_matrix_tree_fallback_on_a_long_peaked_sentence() -> None:
    """x1000 scores on 150 words send the single-root matrix-tree to its log-space fallback, which
    must stay O(N^3) (one tilted elimination; one elimination per root word needed > 2 GB at 100
    words): finite, normalised, and log Z at least the best tree's score."""
    gen = torch.Generator().manual_seed(4)
    scores = torch.randn(1, 151, 151, generator=gen, dtype=torch.float64) * 1000
    dist = DependencyCRF(scores, projective=False)
    _check_normalised(SPECS["matrix_tree"], dist, torch.float64)
    best = dist.score(dist.argmax)
    assert float(dist.log_partition[0]) >= float(best[0]) - 1e-6


def test_long_float32_chain_marginals_sum_to_one_and_match_float64() -> None:
    """A 300-word CRF in float32: the forward and backward passes drift apart along the
    sentence, so marginals normalised by log Z summed to 0.9989 per word at 227 words (and a
    marginal file, which allows 1e-4, refused its own teacher's rows). Each position is normalised
    by its own sum now: rows sum to 1 and agree with float64 within that tolerance, pairs agree
    with the words' marginals, and padding stays exactly 0."""
    gen = torch.Generator().manual_seed(5)
    emissions = torch.randn(2, 300, 9, generator=gen, dtype=torch.float64) * 2
    transitions = torch.randn(9, 9, generator=gen, dtype=torch.float64)
    lengths = torch.tensor([300, 120])
    exact = LinearChainCRF(emissions, transitions, lengths)
    single = LinearChainCRF(emissions.float(), transitions.float(), lengths)
    unary, pairs = single.marginals, single.pair_marginals  # [2, 300, 9], [2, 299, 9, 9]
    for b, n in enumerate(lengths.tolist()):
        torch.testing.assert_close(unary[b, :n].sum(-1), torch.ones(n), atol=1e-4, rtol=0)
        torch.testing.assert_close(pairs[b, : n - 1].sum(-1), unary[b, : n - 1], atol=1e-4, rtol=0)
        torch.testing.assert_close(pairs[b, : n - 1].sum(-2), unary[b, 1:n], atol=1e-4, rtol=0)
        assert bool((unary[b, n:] == 0).all()) and bool((pairs[b, n - 1 :] == 0).all())
    torch.testing.assert_close(unary.double(), exact.marginals, atol=1e-4, rtol=0)
    torch.testing.assert_close(pairs.double(), exact.pair_marginals, atol=1e-4, rtol=0)
    # still the gradient of log Z where the potentials require it
    free = emissions.float().requires_grad_()
    chain = LinearChainCRF(free, transitions.float(), lengths)
    (grad,) = torch.autograd.grad(chain.log_partition.sum(), free)
    torch.testing.assert_close(grad, chain.marginals.detach(), atol=2e-3, rtol=0)
