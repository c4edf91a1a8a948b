"""Non-projective DependencyCRF (matrix-tree, Chu-Liu/Edmonds) beyond the conformance suite
(tests/test_conformance.py): extreme scores against brute force, long sentences."""

from __future__ import annotations

import pytest
import torch

from oracle import CASES
from structkd.structures.dependency import DependencyCRF
from structkd.structures.eisner import NEG
from structkd.structures.matrix_tree import log_partition_and_marginals


@pytest.mark.parametrize("multiroot", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("scale", [50.0, 1000.0])
def test_regression_matrix_tree_large_scores(
    multiroot: bool, dtype: torch.dtype, scale: float
) -> None:
    """torch-struct 0.5 and SuPar 1.1.4 exponentiate raw scores and return NaN here; at x1000
    the greedy heads form cycles that float64 cannot resolve in the determinant. Marginals stay
    finite, in [0, 1], rows sum to one and log Z is at least the best tree's score."""
    gen = torch.Generator().manual_seed(0)
    scores = (torch.randn(4, 31, 31, generator=gen, dtype=torch.float64) * scale).to(dtype)
    lengths = torch.tensor([30, 17, 2, 0])
    dist = DependencyCRF(scores, lengths, projective=False, multiroot=multiroot)
    mu = dist.marginals
    assert mu.dtype == dtype
    assert torch.isfinite(mu).all() and torch.isfinite(dist.log_partition).all()
    assert (mu >= -1e-3).all() and (mu <= 1 + 1e-3).all()
    words = (torch.arange(31)[None] <= lengths[:, None]) & (torch.arange(31)[None] > 0)
    torch.testing.assert_close(
        mu.sum(-1)[words], torch.ones(int(words.sum()), dtype=dtype), atol=1e-3, rtol=0
    )
    if not multiroot:
        root = mu[:, :, 0].sum(-1)
        torch.testing.assert_close(root[:3], torch.ones(3, dtype=dtype), atol=1e-3, rtol=0)
    best = dist.score(dist.argmax).double()
    assert (dist.log_partition.double() >= best - 1e-3 * scale).all()


def test_fallback_agrees_with_determinant_route() -> None:
    """The log-space elimination used for unresolvable sentences matches the determinant route
    (forced here through a batch that mixes a x1000 sentence with ordinary ones)."""
    gen = torch.Generator().manual_seed(3)
    scores = torch.randn(3, 7, 7, generator=gen, dtype=torch.float64)
    scores[2] *= 1000
    lengths = torch.tensor([6, 4, 6])
    for multiroot in (False, True):
        masked = DependencyCRF(scores, lengths, projective=False, multiroot=multiroot)._scores
        z, mu = log_partition_and_marginals(masked, lengths, multiroot)
        z_ref, mu_ref = log_partition_and_marginals(masked[:2], lengths[:2], multiroot)
        torch.testing.assert_close(z[:2], z_ref)
        torch.testing.assert_close(mu[:2], mu_ref)
        from structkd.structures import matrix_tree

        by_elim = matrix_tree._log_partition_by_elimination(masked[:2], lengths[:2], multiroot)
        torch.testing.assert_close(by_elim, z_ref)


def test_chu_liu_edmonds_single_root_on_long_sentences() -> None:
    """Longer than brute force reaches: the decoded tree is a single-root tree scoring at least
    as well as Eisner's best projective tree."""
    gen = torch.Generator().manual_seed(1)
    scores = torch.randn(4, 21, 21, generator=gen, dtype=torch.float64) * 3
    lengths = torch.tensor([20, 13, 7, 1])
    nonproj = DependencyCRF(scores, lengths, projective=False)
    proj = DependencyCRF(scores, lengths, projective=True)
    heads = nonproj.argmax
    for b, n in enumerate(lengths.tolist()):
        y = heads[b, 1 : n + 1].tolist()
        assert y.count(0) == 1
        for d in range(1, n + 1):  # acyclic: every word reaches ROOT within n steps
            node = d
            for _ in range(n):
                node = y[node - 1] if node else 0
            assert node == 0
    assert (nonproj.score(heads) >= proj.score(proj.argmax) - 1e-9).all()


def test_empty_sentence_and_frozen_scores() -> None:
    scores = torch.randn(2, 4, 4)
    with torch.no_grad():
        dist = DependencyCRF(scores, torch.tensor([0, 3]), projective=False)
        assert dist.log_partition[0] == 0 and dist.marginals[0].abs().sum() == 0
        assert torch.isfinite(dist.entropy).all()
    assert NEG < -1e29


@pytest.mark.parametrize("multiroot", [False, True])
def test_extreme_scores_match_brute_force(multiroot: bool) -> None:
    """At x1000 most of these sentences have a float64-singular Laplacian (greedy cycles); the
    log-space elimination still gives the exact log Z and marginals."""
    gen = torch.Generator().manual_seed(0)
    scores = torch.randn(12, 5, 5, generator=gen, dtype=torch.float64) * 1000
    dist = DependencyCRF(scores, projective=False, multiroot=multiroot)
    case = CASES["matrix_tree_multiroot" if multiroot else "matrix_tree"]
    ys = case.enumerate(4)
    for b in range(len(scores)):
        tree_scores = torch.tensor(
            [case.score({"arc_scores": scores}, b, y) for y in ys], dtype=torch.float64
        )
        probs = torch.softmax(tree_scores, 0)
        expected = sum(p * case.indicator(y, 4) for p, y in zip(probs, ys))
        torch.testing.assert_close(dist.marginals[b], expected, atol=1e-9, rtol=0)
        torch.testing.assert_close(dist.log_partition[b], torch.logsumexp(tree_scores, 0))


@pytest.mark.parametrize("multiroot", [False, True])
def test_samples_at_extreme_scores_follow_the_distribution(multiroot: bool) -> None:
    """At x1000 nearly all mass sits on the best tree; the sampler must draw it even for
    sentences whose determinant route is unusable (it once drew a tree e^-855 less likely)."""
    for seed in range(3):
        gen = torch.Generator().manual_seed(seed)
        scores = torch.randn(4, 21, 21, generator=gen, dtype=torch.float64) * 1000
        dist = DependencyCRF(scores, torch.tensor([20, 13, 5, 0]), False, multiroot)
        best = dist.argmax
        certain = (dist.score(best) - dist.log_partition).exp() > 0.999  # [B]
        assert bool(certain.any())
        for y in dist.sample(3):
            assert torch.equal(y[certain], best[certain])


def test_float32_fast_path_agrees_with_float64_and_hands_over_what_it_cannot_vouch_for() -> None:
    """float32 scores take the determinant route in float32 when the sentence's Laplacian is
    well conditioned; a batch mixing such sentences with x50 ones (which it must hand to the
    float64 routes) still matches float64 everywhere, and the gradient of log Z is finite."""
    from structkd.structures import matrix_tree

    gen = torch.Generator().manual_seed(7)
    scores = torch.randn(6, 31, 31, generator=gen, dtype=torch.float64)
    scores[3:] *= 50
    lengths = torch.tensor([30, 12, 1, 30, 20, 5])
    for multiroot in (False, True):
        masked = DependencyCRF(scores, lengths, projective=False, multiroot=multiroot)._scores
        z64, mu64 = log_partition_and_marginals(masked, lengths, multiroot)
        _, _, trusted = matrix_tree._fast_closed_form(masked.float(), lengths, multiroot)
        assert trusted[:3].all() and not trusted[3:].all()  # both routes run
        low = masked.float().requires_grad_()
        z32, mu32 = log_partition_and_marginals(low, lengths, multiroot)
        assert z32.dtype == mu32.dtype == torch.float32
        torch.testing.assert_close(mu32.double(), mu64, atol=1e-4, rtol=0)
        torch.testing.assert_close(z32.double(), z64, atol=1e-3, rtol=1e-6)
        z32.sum().backward()  # what training differentiates
        assert low.grad is not None and torch.isfinite(low.grad).all()


@pytest.mark.parametrize("threads", [1, 2])
def test_float32_route_gradients_match_float64_autograd(threads: int) -> None:
    """Training differentiates log Z and the marginals (KD losses weigh student scores by
    them); the float32 route's hand-written backward of its float64 inverse, with the batch
    split across torch's threads or not, gives the gradients float64 autograd through the
    whole determinant route gives, first and second order."""
    from structkd.structures import matrix_tree

    gen = torch.Generator().manual_seed(3)
    scores = torch.randn(5, 21, 21, generator=gen, dtype=torch.float64)
    lengths = torch.tensor([20, 20, 7, 1, 16])
    weight = torch.randn(5, 21, 21, generator=gen, dtype=torch.float64)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for multiroot in (False, True):
            masked = DependencyCRF(scores, lengths, projective=False, multiroot=multiroot)._scores
            grads = []
            for dtype in (torch.float32, torch.float64):
                leaf = masked.to(dtype).requires_grad_()
                z, mu = log_partition_and_marginals(leaf, lengths, multiroot)
                (grad,) = torch.autograd.grad(z.sum() + (mu * weight.to(dtype)).sum(), leaf)
                grads.append(grad.double())
            torch.testing.assert_close(grads[0], grads[1], atol=2e-4, rtol=1e-4)
            with torch.inference_mode():  # prediction: the pool's threads must follow the mode
                _, frozen = log_partition_and_marginals(masked.float(), lengths, multiroot)
            torch.testing.assert_close(frozen, mu.detach().float(), atol=1e-4, rtol=0)
        # two matrices at the pool's smallest size: split across 2 threads, one each
        size = matrix_tree._POOL_MIN_SIZE
        lap = torch.randn(2, size, size, generator=gen, dtype=torch.float64)
        lap = lap + size * torch.eye(size, dtype=torch.float64)
        lap.requires_grad_()
        assert torch.autograd.gradgradcheck(matrix_tree._InverseAndLogDet.apply, (lap,))
    finally:
        torch.set_num_threads(before)
