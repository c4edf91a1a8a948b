"""LinearChainCRF edge cases (its conformance to brute force: tests/test_conformance.py)."""

from __future__ import annotations

import math

import pytest
import torch

from oracle import CASES, tag_sequences
from oracle.cases import chain_score, tag_pair_parts, tag_parts
from structkd.structures import linear_chain
from structkd.structures.linear_chain import LinearChainCRF

N_TAGS = 3
BATCHED = CASES["linear_chain_batched"].with_labels(N_TAGS)


def enumerate_tags(n: int) -> tuple[tuple[int, ...], ...]:
    return tag_sequences(n, N_TAGS)


def _random_crf(
    seed: int, dtype: torch.dtype = torch.float64, scale: float = 1.0
) -> LinearChainCRF:
    gen = torch.Generator().manual_seed(seed)
    pots = BATCHED.draw(gen, 4, 5)
    pots = {k: (v * scale).to(dtype) for k, v in pots.items()}
    return LinearChainCRF(**pots, lengths=torch.tensor([5, 3, 1, 0]))


def test_structure_count_matches_enumeration() -> None:
    """27 sequences of 3 words over 3 tags: probabilities of all of them sum to one."""
    crf = _random_crf(0)
    ys = enumerate_tags(3)
    assert len(ys) == 27
    tags = torch.zeros(27, 5, dtype=torch.long)
    tags[:, :3] = torch.tensor(ys)
    one = LinearChainCRF(
        crf.emissions[1:2].expand(27, 5, N_TAGS),
        crf.transitions[1],
        torch.full((27,), 3),
        crf.start,
        crf.end,
    )
    assert float(one.log_prob(tags).exp().sum()) == pytest.approx(1.0, abs=1e-12)


def test_large_potentials_float32_are_stable() -> None:
    crf = _random_crf(1, dtype=torch.float32, scale=1000.0)
    assert torch.isfinite(crf.log_partition).all()
    unary, pair = crf.part_marginals
    assert torch.isfinite(unary).all() and torch.isfinite(pair).all()
    sums = unary.sum(-1)  # [B, N]
    torch.testing.assert_close(sums, crf.mask.float(), atol=1e-2, rtol=0)
    torch.testing.assert_close(pair.sum((-1, -2)), crf.mask[:, 1:].float(), atol=1e-2, rtol=0)
    # Nearly deterministic: the marginals sit on the Viterbi path.
    best = crf.argmax
    on_path = unary.gather(-1, best[:, :, None]).squeeze(-1)  # [B, N]
    torch.testing.assert_close(on_path, crf.mask.float(), atol=1e-2, rtol=0)
    assert torch.isfinite(crf.entropy).all()


def test_underflowing_potentials_use_the_exact_log_space_pass() -> None:
    """Potentials x1000 defeat the rescaled recursion; the log-space fallback is still exact."""
    crf = _random_crf(11, scale=1000.0)
    refused = linear_chain._scaled_pass(
        crf.start + crf.emissions[:, 0],
        crf._batched_transitions,
        None,
        crf.emissions[:, 1:],
        crf.mask[:, 1:],
    )
    assert refused is None
    pots = {"emissions": crf.emissions, "transitions": crf.transitions}
    pots |= {"start": crf.start, "end": crf.end}
    for b, n in enumerate(crf.lengths.tolist()):
        ys = enumerate_tags(n)
        scores = torch.tensor([chain_score(pots, b, y) for y in ys], dtype=torch.float64)
        torch.testing.assert_close(crf.log_partition[b], torch.logsumexp(scores, 0))
        probs = torch.softmax(scores, 0)
        want = sum(p * tag_parts(y, 5, N_TAGS) for p, y in zip(probs, ys))
        torch.testing.assert_close(crf.marginals[b], want)
        want_pairs = sum(p * tag_pair_parts(y, 5, N_TAGS) for p, y in zip(probs, ys))
        torch.testing.assert_close(crf.pair_marginals[b], want_pairs)


def test_sums_near_the_underflow_limit_are_refused() -> None:
    """A step whose sum is a subnormal float32 number would lose digits: the pass must refuse.

    Word 0 puts tag 1 100 nats below tag 0, and 0 -> 1 costs 100: the scaled sum for tag 1 at
    word 1 is 2 e^-100, subnormal in float32. Word 1 then favours tag 1 so much that this sum
    decides log Z.
    """
    emissions = torch.tensor([[[0.0, -100.0], [0.0, 200.0]]], dtype=torch.float64)
    transitions = torch.tensor([[0.0, -100.0], [0.0, 0.0]], dtype=torch.float64)
    exact = LinearChainCRF(emissions, transitions)
    low = LinearChainCRF(emissions.float(), transitions.float())
    want = math.log(2.0) + 100.0 + math.log1p(math.exp(-100.0 - math.log(2.0)))
    assert float(exact.log_partition) == pytest.approx(want, abs=1e-12)
    assert float(low.log_partition) == pytest.approx(want, abs=1e-4)
    torch.testing.assert_close(low.marginals.double(), exact.marginals, atol=1e-6, rtol=0)


def test_expected_score_ignores_junk_in_given_marginals_padding() -> None:
    crf = _random_crf(12)
    unary, pair = crf.part_marginals
    junk_unary = unary.masked_fill(~crf.mask[:, :, None], float("nan"))
    junk_pair = pair.masked_fill(~crf.mask[:, 1:, None, None], -3.0)
    torch.testing.assert_close(
        crf.expected_score((junk_unary, junk_pair)), crf.expected_score((unary, pair))
    )


def test_score_and_argmax_ignore_padding_junk() -> None:
    crf = _random_crf(2)
    best = crf.argmax
    assert (best[~crf.mask] == 0).all()
    junk = best.clone()
    junk[~crf.mask] = torch.tensor([-3, 99, 5, 2, 1, 0, 4, 8, 11, 2, 6])[: int((~crf.mask).sum())]
    torch.testing.assert_close(crf.score(junk), crf.score(best))
    # Junk in the emissions' padding changes nothing either.
    noisy = crf.emissions.masked_fill(~crf.mask[:, :, None], 1e4)
    other = LinearChainCRF(noisy, crf.transitions, crf.lengths, crf.start, crf.end)
    assert torch.equal(other.argmax, best)
    torch.testing.assert_close(other.score(junk), crf.score(best))


def test_empty_and_single_word_sentences() -> None:
    crf = _random_crf(3)
    unary, pair = crf.part_marginals
    assert float(crf.log_partition[3]) == 0.0
    assert float(unary[3].abs().sum()) == 0.0 and float(pair[2:].abs().sum()) == 0.0
    assert float(crf.entropy[3]) == pytest.approx(0.0, abs=1e-12)
    # One word: log Z = logsumexp(start + emission + end), no transition involved.
    alone = crf.start + crf.emissions[2, 0] + crf.end
    torch.testing.assert_close(crf.log_partition[2], torch.logsumexp(alone, 0))
    torch.testing.assert_close(unary[2, 0], torch.softmax(alone, 0))


def test_pair_marginals_property_and_consistency() -> None:
    crf = _random_crf(4)
    unary, pair = crf.part_marginals
    assert crf.pair_marginals is pair
    assert pair.shape == (4, 4, N_TAGS, N_TAGS)
    # Summing a pair over the next tag gives the unary of the current word, and vice versa.
    inner = crf.mask[:, 1:, None]  # [B, N-1, 1]
    torch.testing.assert_close(pair.sum(-1), unary[:, :-1] * inner)
    torch.testing.assert_close(pair.sum(-2), unary[:, 1:] * inner)


def test_expected_score_takes_given_marginals_and_is_differentiable() -> None:
    """Structural KD: a teacher's marginals scored by the student's potentials."""
    teacher = _random_crf(5)
    gen = torch.Generator().manual_seed(6)
    pots = {k: v.clone().requires_grad_() for k, v in BATCHED.draw(gen, 4, 5).items()}
    student = LinearChainCRF(**pots, lengths=teacher.lengths)
    got = student.expected_score(teacher.part_marginals).detach()
    # By brute force: the teacher's expected value of the student's score.
    frozen = {k: v.detach() for k, v in pots.items()}
    for b, n in enumerate(teacher.lengths.tolist()):
        ys = enumerate_tags(n)
        tags = torch.zeros(4, 5, dtype=torch.long)
        want = 0.0
        for y in ys:
            tags[b, :n] = torch.tensor(y, dtype=torch.long)
            want += float(teacher.log_prob(tags)[b].exp()) * chain_score(frozen, b, y)
        assert float(got[b]) == pytest.approx(want, abs=1e-9)
    names = list(pots)

    def loss(*tensors: torch.Tensor) -> torch.Tensor:
        s = LinearChainCRF(**dict(zip(names, tensors)), lengths=teacher.lengths)
        return s.log_partition - s.expected_score(teacher.part_marginals)

    assert torch.autograd.gradcheck(loss, [pots[k] for k in names])


def test_pair_marginals_gradcheck() -> None:
    gen = torch.Generator().manual_seed(7)
    pots = BATCHED.draw(gen, 3, 4)
    names = list(pots)
    lengths = torch.tensor([4, 2, 1])

    def fn(*tensors: torch.Tensor) -> torch.Tensor:
        return LinearChainCRF(**dict(zip(names, tensors)), lengths=lengths).pair_marginals

    inputs = [pots[k].clone().requires_grad_() for k in names]
    assert torch.autograd.gradcheck(fn, inputs)


def test_hard_constraints() -> None:
    """A forbidden transition (-inf) gets no mass anywhere, and nothing turns NaN."""
    crf = _random_crf(8)
    trans = crf.transitions.clone()
    trans[:, 0, 1] = -torch.inf
    constrained = LinearChainCRF(crf.emissions, trans, crf.lengths, crf.start, crf.end)
    assert torch.isfinite(constrained.log_partition).all()
    assert float(constrained.pair_marginals[:, :, 0, 1].abs().sum()) == 0.0
    assert torch.isfinite(constrained.entropy).all()
    for y in [constrained.argmax, *constrained.topk(4), *constrained.sample(50)]:
        assert torch.isfinite(constrained.score(y)).all()


def test_topk_repeats_worst_when_too_few() -> None:
    crf = _random_crf(9)
    kbest = crf.topk(5)
    # Sentence 2 has one word, so 3 sequences: entries 3 and 4 repeat the third.
    firsts = [int(y[2, 0]) for y in kbest]
    assert sorted(firsts[:3]) == [0, 1, 2] and firsts[3] == firsts[4] == firsts[2]
    scores = torch.stack([crf.score(y) for y in kbest])  # [k, B]
    assert (scores[:-1] >= scores[1:] - 1e-12).all()
    assert all(torch.equal(y[3], torch.zeros(5, dtype=torch.long)) for y in kbest)
    with pytest.raises(ValueError):
        crf.topk(0)


def test_tempered_divides_every_potential() -> None:
    crf = _random_crf(10)
    hot = crf.tempered(2.0)
    best = crf.argmax
    torch.testing.assert_close(hot.score(best), crf.score(best) / 2)


def test_bad_shapes_raise() -> None:
    emissions = torch.zeros(2, 3, N_TAGS)
    with pytest.raises(ValueError, match="transitions"):
        LinearChainCRF(emissions, torch.zeros(N_TAGS, N_TAGS + 1))
    with pytest.raises(ValueError, match="start"):
        LinearChainCRF(emissions, torch.zeros(N_TAGS, N_TAGS), start=torch.zeros(2))
    with pytest.raises(ValueError, match="NaN"):
        LinearChainCRF(emissions, torch.full((N_TAGS, N_TAGS), float("nan")))


def _no_pair_tensor(monkeypatch: pytest.MonkeyPatch) -> None:
    """Makes any use of the [B, N-1, L, L] pair tensor fail, so a test sees the fast route."""

    def refuse(self: LinearChainCRF) -> torch.Tensor:
        raise AssertionError("the pair tensor was built")

    monkeypatch.setattr(LinearChainCRF, "pair_marginals", property(refuse))


@pytest.mark.parametrize("shared", [False, True])
def test_pair_marginal_sums_match_brute_force(
    shared: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``sum_i P(y_i = a, y_{i+1} = c)`` by enumerating every tag sequence (lengths 0, 1, 3,
    5), taken without the pair tensor, per-sentence or shared transitions."""
    gen = torch.Generator().manual_seed(21)
    pots = BATCHED.draw(gen, 4, 5)
    if shared:
        pots["transitions"] = pots["transitions"][0]
    lengths = torch.tensor([5, 3, 1, 0])
    crf = LinearChainCRF(**pots, lengths=lengths)
    _no_pair_tensor(monkeypatch)
    got = crf.pair_marginal_sums  # [B, L, L]
    assert got.shape == (4, N_TAGS, N_TAGS)
    for b, n in enumerate(lengths.tolist()):
        want = torch.zeros(N_TAGS, N_TAGS, dtype=torch.float64)
        scores = [chain_score(pots, b, y) for y in enumerate_tags(n)]
        log_z = torch.logsumexp(torch.tensor(scores, dtype=torch.float64), 0)
        for y, s in zip(enumerate_tags(n), scores):
            want += math.exp(s - float(log_z)) * tag_pair_parts(y, n, N_TAGS).sum(0)
        torch.testing.assert_close(got[b], want, atol=1e-10, rtol=0)


@pytest.mark.parametrize("scale", [1.0, 1e3, 1e5, 1e8])
def test_pair_marginal_sums_equal_the_summed_pair_tensor_at_any_scale(scale: float) -> None:
    """In float32 at scores up to x1e8, and with forbidden (-inf) transitions: finite, each
    sentence's sums total ``n - 1``, and equal to summing ``pair_marginals`` (the route the
    fast one falls back to where a step's normalizer would underflow)."""
    crf = _random_crf(22, dtype=torch.float32, scale=scale)
    trans = crf.transitions.clone()
    trans[:, 0, 1] = -torch.inf
    crf = LinearChainCRF(crf.emissions, trans, crf.lengths, crf.start, crf.end)
    got = crf.pair_marginal_sums
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, crf.pair_marginals.sum(1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        got.sum((1, 2)), (crf.lengths - 1).clamp(min=0).float(), atol=1e-5, rtol=0
    )
    assert float(got[:, 0, 1].abs().sum()) == 0.0


def test_expected_score_takes_pairs_summed_over_positions() -> None:
    """The student's expected score, and its gradient, from ``(unary, pair sums)`` equal those
    from the full marginals."""
    teacher = _random_crf(23)
    gen = torch.Generator().manual_seed(24)
    pots = {k: v.clone().requires_grad_() for k, v in BATCHED.draw(gen, 4, 5).items()}
    student = LinearChainCRF(**pots, lengths=teacher.lengths)
    full = student.expected_score(teacher.part_marginals)
    summed = student.expected_score((teacher.marginals, teacher.pair_marginal_sums))
    torch.testing.assert_close(summed, full, atol=1e-12, rtol=0)
    grads_full = torch.autograd.grad(full.sum(), list(pots.values()), retain_graph=True)
    grads_summed = torch.autograd.grad(summed.sum(), list(pots.values()))
    for a, b in zip(grads_summed, grads_full):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


def test_fused_passes_match_brute_force() -> None:
    """One recursion for both directions (``fuse_passes``): unary marginals, tag-pair sums and
    log Z by enumerating every tag sequence (lengths 0, 1, 3, 5), shared transitions."""
    gen = torch.Generator().manual_seed(25)
    pots = BATCHED.draw(gen, 4, 5)
    pots["transitions"] = pots["transitions"][0]
    check_fused(pots, torch.tensor([5, 3, 1, 0]))
    # no empty sentence: steps where every forward state is real but not every backward one
    check_fused(pots, torch.tensor([5, 4, 5, 2]))


def check_fused(pots: dict[str, torch.Tensor], lengths: torch.Tensor) -> None:
    crf = LinearChainCRF(**pots, lengths=lengths).fuse_passes()
    assert "_forward" in crf.__dict__ and "_betas" in crf.__dict__  # computed together
    for b, n in enumerate(lengths.tolist()):
        scores = [chain_score(pots, b, y) for y in enumerate_tags(n)]
        log_z = torch.logsumexp(torch.tensor(scores, dtype=torch.float64), 0)
        unary = torch.zeros(5, N_TAGS, dtype=torch.float64)
        pairs = torch.zeros(N_TAGS, N_TAGS, dtype=torch.float64)
        for y, s in zip(enumerate_tags(n), scores):
            p = math.exp(s - float(log_z))
            unary += p * tag_parts(y, 5, N_TAGS)
            pairs += p * tag_pair_parts(y, n, N_TAGS).sum(0)
        assert float(crf.log_partition[b]) == pytest.approx(float(log_z) if n else 0.0, abs=1e-10)
        torch.testing.assert_close(crf.marginals[b], unary, atol=1e-10, rtol=0)
        torch.testing.assert_close(crf.pair_marginal_sums[b], pairs, atol=1e-10, rtol=0)


@pytest.mark.parametrize("scale", [1.0, 1e3, 1e8])
def test_fused_passes_equal_the_separate_passes_or_leave_them(scale: float) -> None:
    """In float32 with a forbidden transition: the same marginals, sums and log Z as the two
    separate passes; at scores where a rescaled step underflows (x1e3, x1e8) the fused pass
    steps aside and the separate passes (with their log-space fallback) run."""
    crf = _random_crf(26, dtype=torch.float32, scale=scale)
    trans = crf.transitions[0].clone()
    trans[0, 1] = -torch.inf
    args = (crf.emissions, trans, crf.lengths, crf.start, crf.end)
    separate, fused = LinearChainCRF(*args), LinearChainCRF(*args).fuse_passes()
    assert ("_forward" in fused.__dict__) == (scale == 1.0)
    for name in ("marginals", "pair_marginal_sums", "log_partition"):
        torch.testing.assert_close(getattr(fused, name), getattr(separate, name))
    per_sentence = LinearChainCRF(crf.emissions, crf.transitions, crf.lengths).fuse_passes()
    assert "_forward" not in per_sentence.__dict__  # [B, L, L] transitions: not fused
