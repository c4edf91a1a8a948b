"""Projective DependencyCRF (Eisner) edge cases (its conformance to brute-force enumeration of
projective trees: tests/test_conformance.py)."""

from __future__ import annotations

import pytest
import torch

from structkd.structures.dependency import DependencyCRF


def test_regression_torch_struct_frozen_potentials() -> None:
    """torch-struct 0.5 writes in place into its chart and crashes for frozen potentials or
    under no_grad; here both give the same numbers as potentials that require grad."""
    scores = torch.randn(3, 8, 8)
    lengths = torch.tensor([7, 4, 1])
    live = DependencyCRF(scores.clone().requires_grad_(), lengths)
    ref_z, ref_mu = live.log_partition.detach(), live.marginals.detach()
    frozen = DependencyCRF(scores, lengths)
    torch.testing.assert_close(frozen.log_partition, ref_z)
    torch.testing.assert_close(frozen.marginals, ref_mu)
    with torch.no_grad():
        inside = DependencyCRF(scores.clone().requires_grad_(), lengths)
        torch.testing.assert_close(inside.marginals, ref_mu)
        assert torch.isfinite(inside.entropy).all()
        assert len(inside.sample(2)) == 2 and len(inside.topk(2)) == 2


def test_log_partition_gradient_is_marginals_and_twice_differentiable() -> None:
    scores = torch.randn(2, 6, 6, dtype=torch.float64, requires_grad=True)
    dist = DependencyCRF(scores, torch.tensor([5, 3]), multiroot=True)
    (grad,) = torch.autograd.grad(dist.log_partition.sum(), scores, create_graph=True)
    torch.testing.assert_close(grad, dist.marginals)
    (hess_row,) = torch.autograd.grad(grad[0, 2, 1], scores, retain_graph=True)
    (ref,) = torch.autograd.grad(dist.marginals[0, 2, 1], scores)
    torch.testing.assert_close(hess_row, ref)


def test_empty_sentence_and_minus_inf_arcs() -> None:
    scores = torch.randn(2, 4, 4)
    scores[1, 2, 0] = -torch.inf  # word 2 may not attach to ROOT
    dist = DependencyCRF(scores, torch.tensor([0, 3]))
    assert dist.log_partition[0] == 0 and dist.marginals[0].abs().sum() == 0
    assert torch.isfinite(dist.log_partition).all()
    assert dist.marginals[1, 2, 0] == 0
    assert dist.argmax[1, 2] != 0


@pytest.mark.parametrize("multiroot", [False, True])
def test_long_sentences_stay_normalized(multiroot: bool) -> None:
    """Each word has exactly one head: marginal rows sum to 1 at length 60, in float32."""
    scores = torch.randn(2, 61, 61) * 5
    lengths = torch.tensor([60, 23])
    dist = DependencyCRF(scores, lengths, multiroot=multiroot)
    rows = dist.marginals.sum(-1)
    words = torch.arange(61)[None] <= lengths[:, None]
    words[:, 0] = False
    torch.testing.assert_close(rows[words], torch.ones(int(words.sum())), atol=1e-4, rtol=0)
    root_children = dist.marginals[:, :, 0].sum(-1)
    if not multiroot:
        torch.testing.assert_close(root_children, torch.ones(2), atol=1e-4, rtol=0)
    best = dist.argmax
    assert torch.allclose(dist.score(best), dist.score(dist.topk(1)[0]))


def test_topk_repeats_last_tree_when_fewer_trees() -> None:
    """One word has a single tree and two words have two (single root): the surplus entries
    repeat the last tree; a longer sentence gets k distinct trees, best first."""
    scores = torch.randn(3, 6, 6)
    dist = DependencyCRF(scores, torch.tensor([1, 2, 5]))
    kbest = dist.topk(4)
    assert all(y[0, 1].item() == 0 for y in kbest)
    assert len({tuple(y[1, 1:3].tolist()) for y in kbest}) == 2
    assert torch.equal(kbest[1][1], kbest[3][1])
    assert len({tuple(y[2].tolist()) for y in kbest}) == 4
    values = torch.stack([dist.score(y)[2] for y in kbest])
    assert (values[:-1] >= values[1:]).all()
    assert torch.equal(kbest[0], dist.argmax)
