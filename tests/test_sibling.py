"""SiblingDependencyCRF beyond the conformance suite (tests/test_conformance.py): mean-field
inference, hard constraints, padding and chunked sampling against brute-force enumeration of
projective single-root trees."""

from __future__ import annotations

import math

import pytest
import torch

from oracle import CASES, Potentials, head_assignments, sibling_pairs
from oracle.cases import heads_to_batch, sibling_pair_parts
from structkd.structures.sibling import Inference, SiblingDependencyCRF

CASE = CASES["sibling_exact"]
projective_trees = CASE.enumerate  # every projective tree of n words with one child of ROOT


def random_batch(
    seed: int, batch: int = 3, max_len: int = 4, scale: float = 1.0
) -> tuple[Potentials, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, max_len + 1, (batch,), generator=gen)
    lengths[0] = max_len
    pots = {k: v * scale for k, v in CASE.draw(gen, batch, max_len).items()}
    return pots, lengths


def brute_log_partition(pots: Potentials, b: int, n: int) -> torch.Tensor:
    scores = torch.tensor(
        [CASE.score(pots, b, t) for t in projective_trees(n)], dtype=torch.float64
    )
    return torch.logsumexp(scores, 0)


def test_mean_field_marginals_are_normalized_distributions() -> None:
    pots, lengths = random_batch(0, batch=4, max_len=6, scale=2.0)
    q = SiblingDependencyCRF(**pots, lengths=lengths, inference="mfvi").marginals
    assert torch.isfinite(q).all() and (q >= 0).all()
    for b, n in enumerate(lengths.tolist()):
        torch.testing.assert_close(q[b, 1 : n + 1].sum(-1), torch.ones(n, dtype=q.dtype))
        assert float(q[b, n + 1 :].abs().sum() + q[b, :, n + 1 :].abs().sum() + q[b, 0].sum()) == 0
        assert float(q[b].diagonal().abs().sum()) == 0


def test_mean_field_without_siblings_is_the_local_softmax() -> None:
    pots, lengths = random_batch(1, max_len=5)
    zero_sib = torch.zeros_like(pots["sib_scores"])
    q = SiblingDependencyCRF(pots["arc_scores"], zero_sib, lengths, inference="mfvi").marginals
    for b, n in enumerate(lengths.tolist()):
        logits = pots["arc_scores"][b, 1 : n + 1, : n + 1].clone()
        logits[torch.arange(n), torch.arange(1, n + 1)] = float("-inf")  # no self-loops
        torch.testing.assert_close(q[b, 1 : n + 1, : n + 1], torch.softmax(logits, -1))


def test_mean_field_is_closer_to_exact_marginals_than_the_local_softmax() -> None:
    """With moderate sibling scores the sibling messages help on average (fixed seed)."""
    pots, lengths = random_batch(2, batch=100, max_len=5)
    arc, sib = pots["arc_scores"], pots["sib_scores"]
    exact = SiblingDependencyCRF(arc, sib, lengths).marginals
    mean_field = SiblingDependencyCRF(arc, sib, lengths, inference="mfvi").marginals
    local = SiblingDependencyCRF(arc, torch.zeros_like(sib), lengths, inference="mfvi").marginals
    mf_error = (mean_field - exact).abs().sum((1, 2))
    local_error = (local - exact).abs().sum((1, 2))
    assert float(mf_error.mean()) < 0.95 * float(local_error.mean())


def test_mean_field_sibling_marginals_are_expectations_under_q() -> None:
    """part_marginals[1] = E_q[sibling indicators] with independent heads, all assignments."""
    pots, lengths = random_batch(4, max_len=3)
    dist = SiblingDependencyCRF(**pots, lengths=lengths, inference="mfvi")
    q, sib_mu = dist.part_marginals
    for b, n in enumerate(lengths.tolist()):
        expected = torch.zeros_like(sib_mu[b])
        for heads in head_assignments(n):  # a self-loop has q = 0: leaving them out loses nothing
            prob = torch.prod(torch.stack([q[b, d, h] for d, h in enumerate(heads, 1)]))
            expected = expected + prob * sibling_pair_parts(heads, 3)
        expected[0] = 0  # ROOT has a single child under the model: no ROOT siblings
        torch.testing.assert_close(sib_mu[b], expected)


def test_mean_field_gradients_flow() -> None:
    pots, lengths = random_batch(5, batch=1, max_len=3)
    weights = torch.randn(1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    names = list(pots)

    def fn(*tensors: torch.Tensor) -> torch.Tensor:
        dist = SiblingDependencyCRF(**dict(zip(names, tensors)), lengths=lengths, inference="mfvi")
        arc_mu, sib_mu = dist.part_marginals
        return (arc_mu * weights).sum() + sib_mu.sum()

    inputs = [pots[k].clone().requires_grad_() for k in names]
    fn(*inputs).backward()
    assert all(torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0 for x in inputs)
    assert torch.autograd.gradcheck(fn, [x.detach().requires_grad_() for x in inputs])


@pytest.mark.parametrize(
    "op",
    [
        lambda d: d.log_partition,
        lambda d: d.entropy,
        lambda d: d.kl(d),
        lambda d: d.cross_entropy(d),
        lambda d: d.sample(1),
        lambda d: d.log_prob(d.argmax),
    ],
)
def test_mean_field_refuses_exact_quantities(op) -> None:  # type: ignore[no-untyped-def]
    pots, lengths = random_batch(6)
    dist = SiblingDependencyCRF(**pots, lengths=lengths, inference="mfvi")
    with pytest.raises(NotImplementedError, match="intractable under mean-field"):
        op(dist)


def test_exact_marginals_are_differentiable() -> None:
    """Second derivatives of log Z (the gradient of the marginals) against finite differences."""
    pots, lengths = random_batch(7, batch=2, max_len=3)
    gen = torch.Generator().manual_seed(1)
    w_arc = torch.randn(2, 4, 4, dtype=torch.float64, generator=gen)
    w_sib = torch.randn(2, 4, 4, 4, dtype=torch.float64, generator=gen)

    def fn(arc: torch.Tensor, sib: torch.Tensor) -> torch.Tensor:
        arc_mu, sib_mu = SiblingDependencyCRF(arc, sib, lengths).part_marginals
        return (arc_mu * w_arc).sum() + (sib_mu * w_sib).sum()

    inputs = [pots[k].clone().requires_grad_() for k in ("arc_scores", "sib_scores")]
    assert torch.autograd.gradcheck(fn, inputs)


def test_log_partition_first_then_marginals_after_backward() -> None:
    """Marginals reuse log Z's graph, and still work once a backward pass has freed it."""
    pots, lengths = random_batch(8)
    ref = SiblingDependencyCRF(**pots, lengths=lengths)
    arc = pots["arc_scores"].clone().requires_grad_()
    first = SiblingDependencyCRF(arc, pots["sib_scores"], lengths)
    first.log_partition.sum().backward()
    torch.testing.assert_close(first.marginals, ref.marginals)
    torch.testing.assert_close(arc.grad, ref.marginals)
    second = SiblingDependencyCRF(arc, pots["sib_scores"], lengths)
    marginals = second.marginals  # log Z comes with it, differentiable
    torch.testing.assert_close(second.log_partition, ref.log_partition)
    assert second.log_partition.requires_grad and marginals.requires_grad
    (grad,) = torch.autograd.grad(second.log_partition.sum(), arc)
    torch.testing.assert_close(grad, ref.marginals)


@pytest.mark.parametrize("inference", ["exact", "mfvi"])
def test_large_scores_in_float32(inference: Inference) -> None:
    pots, lengths = random_batch(9, batch=4, max_len=8, scale=1000.0)
    dist = SiblingDependencyCRF(
        **{k: v.float() for k, v in pots.items()}, lengths=lengths, inference=inference
    )
    mu = dist.marginals
    assert torch.isfinite(mu).all()
    for b, n in enumerate(lengths.tolist()):
        torch.testing.assert_close(mu[b, 1 : n + 1].sum(-1), torch.ones(n), atol=1e-4, rtol=0)
    if inference == "exact":
        # the distribution is (nearly) a point mass on the argmax tree
        best = dist.score(dist.argmax)
        assert torch.isfinite(dist.log_partition).all()
        assert ((dist.log_partition - best).abs() <= 1e-4 * best.abs() + 5).all()
        assert torch.isfinite(dist.entropy).all()


def test_hard_constraints_with_minus_infinity() -> None:
    """-inf scores forbid parts: exact results over the remaining trees, no NaN anywhere."""
    pots, lengths = random_batch(10, batch=2, max_len=4)
    pots["arc_scores"][:, 1, 0] = float("-inf")  # word 1 cannot be the root
    pots["arc_scores"][:, 3, 2] = float("-inf")  # 2 -> 3 is forbidden
    pots["sib_scores"][:, 4, 3, 1] = float("-inf")  # 4 cannot have left modifiers 3 then 1
    arc = pots["arc_scores"].clone().requires_grad_()
    dist = SiblingDependencyCRF(arc, pots["sib_scores"], lengths)
    for b, n in enumerate(lengths.tolist()):
        trees = projective_trees(n)
        scores = torch.tensor([CASE.score(pots, b, t) for t in trees], dtype=torch.float64)
        probs = torch.softmax(scores, 0)
        torch.testing.assert_close(dist.log_partition[b], torch.logsumexp(scores, 0))
        expected = sum(p * CASE.indicator(t, 4) for p, t in zip(probs, trees))
        torch.testing.assert_close(dist.marginals[b], expected)
        assert math.isfinite(dist.entropy[b].item())
        kbest = dist.topk(30)
        feasible = int(torch.isfinite(scores).sum())
        got = [tuple(y[b, 1 : n + 1].tolist()) for y in kbest]
        assert len(set(got)) == feasible and got[feasible - 1 :] == [got[-1]] * (31 - feasible)
        assert all(math.isfinite(CASE.score(pots, b, t)) for t in got)
    dist.log_partition.sum().backward()
    assert torch.isfinite(arc.grad).all()
    for heads in dist.sample(50):
        assert torch.isfinite(dist.score(heads)).all()


def test_sampling_in_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """A small memory budget splits the draws into passes; each draw is still a tree."""
    from structkd.structures import sibling

    pots, lengths = random_batch(16)
    monkeypatch.setattr(sibling, "SAMPLE_BUDGET", 3 * 3 * 5**3)  # 3 draws per pass
    draws = SiblingDependencyCRF(**pots, lengths=lengths).sample(10)
    assert len(draws) == 10
    for y in draws:
        for b, n in enumerate(lengths.tolist()):
            assert tuple(y[b, 1 : n + 1].tolist()) in projective_trees(n)
            assert y[b, n + 1 :].eq(0).all() and y[b, 0] == 0


def test_empty_sentences_and_empty_batch_shapes() -> None:
    pots, _ = random_batch(11, batch=2, max_len=3)
    lengths = torch.tensor([0, 2])
    dist = SiblingDependencyCRF(**pots, lengths=lengths)
    assert float(dist.log_partition[0]) == 0.0
    torch.testing.assert_close(dist.log_partition[1], brute_log_partition(pots, 1, 2))
    assert float(dist.marginals[0].abs().sum()) == 0
    assert dist.argmax[0].tolist() == [0, 0, 0, 0]
    assert all(y[0].tolist() == [0, 0, 0, 0] for y in dist.topk(3) + dist.sample(3))
    nothing = SiblingDependencyCRF(torch.zeros(2, 1, 1), torch.zeros(2, 1, 1, 1))
    assert nothing.log_partition.tolist() == [0.0, 0.0]
    assert nothing.argmax.shape == (2, 1) and nothing.marginals.shape == (2, 1, 1)


def test_nan_in_padding_is_ignored() -> None:
    pots, lengths = random_batch(12, batch=3, max_len=4)
    lengths = torch.tensor([4, 2, 3])
    clean = SiblingDependencyCRF(**pots, lengths=lengths)
    dirty = {k: v.clone() for k, v in pots.items()}
    for b, n in enumerate(lengths.tolist()):
        dirty["arc_scores"][b, n + 1 :] = float("nan")
        dirty["arc_scores"][b, :, n + 1 :] = float("nan")
        dirty["arc_scores"][b, 0] = float("nan")  # row 0 is ignored as well
        dirty["sib_scores"][b, n + 1 :] = float("nan")
        dirty["sib_scores"][b, :, :, n + 1 :] = float("nan")
    for inference in ("exact", "mfvi"):
        got = SiblingDependencyCRF(**dirty, lengths=lengths, inference=inference)
        want = SiblingDependencyCRF(**pots, lengths=lengths, inference=inference)
        torch.testing.assert_close(got.part_marginals, want.part_marginals)
        assert torch.equal(got.argmax, want.argmax)
    dirty_dist = SiblingDependencyCRF(**dirty, lengths=lengths)
    torch.testing.assert_close(dirty_dist.entropy, clean.entropy)
    torch.testing.assert_close(dirty_dist.score(clean.argmax), clean.score(clean.argmax))


def test_score_of_a_multi_root_tree_counts_root_siblings() -> None:
    pots, _ = random_batch(13, batch=1, max_len=4)
    heads = (0, 0, 2, 0)  # ROOT has right modifiers 1, 2, 4
    dist = SiblingDependencyCRF(**pots)
    got = dist.score(heads_to_batch([heads], 4))
    assert sibling_pairs(heads)[:2] == [(0, 1, 2), (0, 2, 4)]
    assert float(got) == pytest.approx(CASE.score(pots, 0, heads))


def test_tempered_divides_all_scores() -> None:
    pots, lengths = random_batch(14)
    hot = SiblingDependencyCRF(**pots, lengths=lengths).tempered(2.0)
    half = SiblingDependencyCRF(**{k: v / 2 for k, v in pots.items()}, lengths=lengths)
    torch.testing.assert_close(hot.log_partition, half.log_partition)
    torch.testing.assert_close(hot.part_marginals, half.part_marginals)


def test_matches_supar_second_order_crf_beyond_brute_force() -> None:
    """SuPar's Dependency2oCRF (single root) as an independent oracle at n = 10."""
    supar = pytest.importorskip("supar.structs")
    pots, lengths = random_batch(15, batch=3, max_len=10)
    ours = SiblingDependencyCRF(**pots, lengths=lengths)
    # SuPar indexes siblings as [b, farther, head, closer]
    sib = pots["sib_scores"].permute(0, 3, 1, 2).contiguous()
    theirs = supar.Dependency2oCRF((pots["arc_scores"], sib), lengths)
    torch.testing.assert_close(ours.log_partition, theirs.log_partition)
    torch.testing.assert_close(ours.marginals, theirs.marginals.masked_fill(~ours.arc_mask, 0))
    assert torch.equal(ours.argmax, theirs.argmax)
