"""Non-projective dependency trees: matrix-tree theorem, exact sampling, and the batched
Chu-Liu/Edmonds decoder (``arborescence``).

Arc scores use the layout of ``head_selection``: ``scores[b, d, h]`` (dep, head), ROOT = 0, with
the finite ``NEG`` (see ``eisner``) on invalid arcs. With arc weights ``A[h, d] = exp(s(h -> d))``
the Laplacian ``M[h, d] = -A[h, d]`` (``h != d``), ``M[d, d] = sum_h A[h, d]`` over the words
gives the partition function as a determinant (Koo et al., EMNLP 2007; Smith and Smith,
EMNLP 2007; McDonald and Satta, IWPT 2007):

* several root words: ``M[d, d]`` also counts ``A[0, d]`` and ``Z = det M``;
* one root word: Koo et al.'s variant replaces the first word's row by the root weights
  ``A[0, d]`` (and ``M[d, d]`` leaves them out).

With ``X = M^-1`` the marginals are closed-form (Koo et al., sec. 3.3):
``mu(h -> d) = A[h, d] ([d != 1] X[d, d] - [h != 1] X[d, h])`` and ``mu(0 -> d) = A[0, d] X[d, 1]``
for one root word, ``A[h, d] (X[d, d] - X[d, h])`` and ``A[0, d] X[d, d]`` for several.

Numerics: each word's column shifted by its best incoming score (exact: the determinant scales
by ``exp(shift)``, the marginals not at all), padded words get an identity block. float32 scores
stay in float32 for sentences whose Laplacian is well conditioned (``_fast_closed_form``, a
condition-number check per sentence; only its LU factorization and inverse run in float64,
which MKL does faster than float32 at these sizes); the others, and every other dtype, are
computed in float64. When the scores are so peaked that the greedy heads form a cycle whose
breaking costs more than float64 resolves (score scale x1000), the Laplacian is singular in
floating point; such sentences are detected (a non-positive determinant, marginals outside
[0, 1] or rows not summing to one) and recomputed by eliminating words one at a time in log
space, the Grassmann-Taksar-Heyman order (Grassmann et al., 1985) in which every quantity is
a sum of positive terms, so nothing cancels; their marginals then come from autograd.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from torch import Tensor

from structkd.structures.arborescence import chu_liu_edmonds
from structkd.structures.base import autograd_marginals
from structkd.structures.eisner import NEG

_ROW_SUM_TOL = 1e-6
_FAST_ROW_SUM_TOL = 1e-4
_FAST_MAX_COND = 1e3
"""Largest condition number ``||M||_1 ||M^-1||_1`` the float32 route accepts. In random tests
(n = 10-60, scores x1-x50) the float32 marginals' error stayed below ``2e-8 cond``, 2e-5 here;
sentences above it take the float64 route."""
_POOL_MIN_SIZE = 16
"""Sentences this long or longer split the float64 LU work of a batch across torch's threads
(``_inverse_and_log_det``); below it a thread's start costs more than it saves."""
_FAST_MIN_LOG = -80.0
"""Arc weights below ``exp(-80)`` count as 0 in float32: they would be denormal numbers, slow
to compute with and, next to the best arc's weight of 1, below float32's resolution anyway."""


def _word_mask(lengths: Tensor, size: int) -> Tensor:
    """BoolTensor [B, N]: word ``d`` (1..N, shifted to 0..N-1) lies in the sentence."""
    return torch.arange(1, size, device=lengths.device)[None, :] <= lengths[:, None]


def _row_max(x: Tensor) -> Tensor:
    """``x.amax(-1)``, with the last dimension padded by -inf to a multiple of 16 first: torch's
    CPU max over short rows of other lengths takes 2.5-6 times as long (n = 30: 75 against 33
    microseconds for a [32, 30, 31] batch, padding included)."""
    extra = -x.shape[-1] % 16
    if extra and x.device.type == "cpu":
        x = torch.nn.functional.pad(x, (0, extra), value=-math.inf)
    return x.amax(-1)


def _weights(scores: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Arc weights shifted per word: (weights [B, N, L], shift [B, N], words [B, N]).

    ``weights[b, d - 1, h] = exp(s(h -> d) - shift[b, d - 1])`` with the word's best incoming
    score as shift, so every word's best arc weighs 1; invalid arcs underflow to 0 (in float32
    everything below ``exp(_FAST_MIN_LOG)``).
    """
    words = _word_mask(lengths, scores.shape[-1])  # [B, N]
    arcs = scores[:, 1:]  # [B, N, L] (dep word, head incl. ROOT)
    shift = _row_max(arcs.detach()).where(words, 0.0)  # [B, N]
    log_weights = arcs - shift[..., None]  # [B, N, L]
    if scores.dtype != torch.float32:
        return log_weights.exp(), shift, words
    # one elementwise pass (a comparison and masked_fill take several times longer)
    return torch.nn.functional.threshold(log_weights, _FAST_MIN_LOG, -math.inf).exp(), shift, words


def _laplacian(weights: Tensor, words: Tensor, multiroot: bool) -> Tensor:
    """Transposed Laplacian ``K = M^T`` [B, N, N] (rows are dependents), identity on padding."""
    root, word_arcs = weights[..., 0], weights[..., 1:]  # [B, N], [B, N, N] (dep, head)
    in_weight = word_arcs.sum(-1) + (root if multiroot else 0.0)  # [B, N]
    lap_t = torch.diag_embed(in_weight) - word_arcs  # [B, N, N]
    if not multiroot:  # Koo et al.: the first word's row of M (column of K) holds the root weights
        lap_t = torch.cat([root[..., None], lap_t[..., 1:]], -1)
    return lap_t + torch.diag_embed((~words).to(lap_t.dtype))


def _marginals_from_inverse(
    weights: Tensor, inv_rows: Tensor, dep: Tensor, multiroot: bool
) -> Tensor:
    """Closed-form arc marginals of some words (Koo et al., sec. 3.3), [B, M, L] (dep, head).

    Args:
        weights: [B, M, L] the words' arc weights (``_weights`` rows ``dep``).
        inv_rows: [B, M, N] the same rows of ``X = M^-1``.
        dep: LongTensor [M], the words' indices 0..N-1.
        multiroot: allow several words to attach to ROOT.
    """
    root, word_arcs = weights[..., 0], weights[..., 1:]  # [B, M], [B, M, N]
    diag_x = inv_rows.gather(-1, dep[None, :, None].expand(len(inv_rows), -1, 1)).squeeze(-1)
    if multiroot:
        mu_root = root * diag_x
        mu_words = word_arcs * (diag_x[..., None] - inv_rows)
    else:
        later = (torch.arange(inv_rows.shape[-1], device=dep.device) > 0).to(inv_rows.dtype)
        mu_root = root * inv_rows[..., :1].sum(-1)  # column 0 of X; [..., :1] allows N = 0
        mu_words = word_arcs * ((diag_x * (dep > 0))[..., None] - inv_rows * later)
    return torch.cat([mu_root[..., None], mu_words], -1)


def _valid(mu: Tensor) -> Tensor:
    """[...]: a word's marginals over heads [..., L] look like a distribution (NaN fails)."""
    return (
        (mu.amin(-1) >= -_ROW_SUM_TOL)
        & (mu.amax(-1) <= 1 + _ROW_SUM_TOL)
        & ((mu.sum(-1) - 1).abs() <= _ROW_SUM_TOL)
    )


def _invert(
    weights: Tensor, words: Tensor, multiroot: bool
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``X = M^-1`` [B, N, N], ``log |det M|`` [B], the words' marginals [B, N, L] and whether to
    trust them [B].

    Untrusted: a non-positive determinant, or marginals that are not distributions.
    """
    size = weights.shape[1]
    lu, pivots, _ = torch.linalg.lu_factor_ex(_laplacian(weights, words, multiroot))
    eye = torch.eye(size, dtype=lu.dtype, device=lu.device)
    inv = torch.linalg.lu_solve(lu, pivots, eye).mT  # [B, N, N] (singular: caught below)
    diag_u = lu.diagonal(dim1=-2, dim2=-1)  # [B, N]
    swaps = pivots != torch.arange(1, size + 1, device=pivots.device, dtype=pivots.dtype)
    negative = ((diag_u < 0).sum(-1) + swaps.sum(-1)) % 2 == 1  # [B], sign of det M
    log_det = diag_u.abs().log().sum(-1)  # [B]
    dep = torch.arange(size, device=weights.device)
    inner = _marginals_from_inverse(weights, inv, dep, multiroot)  # [B, N, L]
    rows_ok = _valid(inner.detach()) | ~words  # [B, N]
    trusted = ~negative & torch.isfinite(log_det.detach()) & rows_ok.all(-1)
    return inv, log_det, inner, trusted


def _closed_form(scores: Tensor, lengths: Tensor, multiroot: bool) -> tuple[Tensor, Tensor, Tensor]:
    """Determinant and inverse route in float64: (log Z [B], marginals [B, L, L], trusted [B])."""
    batch, size, _ = scores.shape
    weights, shift, words = _weights(scores, lengths)
    _, log_det, inner, trusted = _invert(weights, words, multiroot)
    marginals = torch.cat([inner.new_zeros(batch, 1, size), inner], 1)  # [B, L, L]
    return log_det + (shift * words).sum(-1), marginals, trusted


def _fast_closed_form(
    scores: Tensor, lengths: Tensor, multiroot: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """The determinant route for float32 scores and well-conditioned sentences: (log Z [B],
    marginals [B, L, L], trusted [B]).

    The same formulas as ``_closed_form`` in fewer, larger operations (the batches this serves
    are small, so the count of operations weighs as much as their size). Weights, Laplacian and
    marginals are float32; only the LU factorization and the inverse run in float64, where
    MKL's batched solve takes about half the time of float32's at n = 30-60 (one thread) and
    the inverse adds no rounding of its own to the float32 Laplacian's (``_InverseAndLogDet``:
    the batch split across torch's threads, a backward of two matrix products). Trusted: a 1-norm
    condition number ``||M||_1 ||M^-1||_1`` at most ``_FAST_MAX_COND`` (finite, so the
    determinant is finite and, as a Laplacian's determinant, positive; and the marginals are
    accurate), and every word's marginals summing to one within ``_FAST_ROW_SUM_TOL`` with
    none below ``-_FAST_ROW_SUM_TOL``.
    """
    size = scores.shape[-1] - 1
    weights, shift, words = _weights(scores, lengths)  # [B, N, L]
    lap_t = _laplacian(weights, words, multiroot)  # [B, N, N]
    inv_t, log_det = _InverseAndLogDet.apply(lap_t)  # K^-1 column-major, log |det K|
    inv = inv_t.mT  # [B, N, N] = X, row-major
    diag_x = inv.diagonal(dim1=-2, dim2=-1)  # [B, N]
    if multiroot:
        to_root, minus = diag_x, inv
    else:  # Koo et al.: word 1's column of X holds the root terms, and it has no X[d, d] term
        later = torch.ones(size, dtype=inv.dtype, device=inv.device)
        later[:1] = 0.0
        to_root, minus = inv[..., 0], inv * later
        diag_x = diag_x * later
    inner = weights * torch.cat([to_root[..., None], diag_x[..., None] - minus], -1)  # [B, N, L]
    check = inner.detach()
    row_error = (check.sum(-1) - words.to(check.dtype)).abs().amax(-1)  # [B], padding sums to 0
    norm = lap_t.detach().abs().sum(-1).amax(-1) * inv.detach().abs().sum(-2).amax(-1)  # [B]
    # NaN or inf anywhere (a singular matrix) fails the comparisons
    trusted = (
        (row_error <= _FAST_ROW_SUM_TOL)
        & (check.amin((-1, -2)) >= -_FAST_ROW_SUM_TOL)
        & (norm <= _FAST_MAX_COND)
    )
    marginals = torch.nn.functional.pad(inner, (0, 0, 1, 0))  # [B, L, L], ROOT's row empty
    return log_det + (shift * words).sum(-1), marginals, trusted


_POOLS: dict[tuple[int, int], ThreadPoolExecutor] = {}


def _pool(workers: int) -> ThreadPoolExecutor:
    """A thread pool of ``workers`` threads for this process (a forked child makes its own)."""
    key = (os.getpid(), workers)
    if key not in _POOLS:
        _POOLS[key] = ThreadPoolExecutor(workers, thread_name_prefix="structkd-lu")
    return _POOLS[key]


def _inverse64(lap: Tensor) -> tuple[Tensor, Tensor]:
    """``K^-1`` [B, N, N] (column-major per matrix) and ``log |det K|`` [B] by an LU
    factorization in float64, returned in ``lap``'s dtype; no autograd.

    torch runs the LAPACK calls of a CPU batch one matrix after another on one thread, so with
    ``torch.get_num_threads() > 1`` the batch is split into that many slices, factorized and
    solved at once on a thread pool (torch releases the GIL inside its operators). O(B N^3).
    """
    batch, size = lap.shape[0], lap.shape[-1]
    inv = torch.empty_strided(
        lap.shape, (size * size, 1, size), dtype=torch.float64, device=lap.device
    )
    log_det = torch.empty(batch, dtype=torch.float64, device=lap.device)
    eye = torch.eye(size, dtype=torch.float64, device=lap.device)
    inference = torch.is_inference_mode_enabled()  # thread-local: the pool's threads follow suit

    def solve(lo: int, hi: int) -> None:
        with torch.inference_mode(inference):
            lu, pivots, _ = torch.linalg.lu_factor_ex(lap[lo:hi].double())
            # the right-hand side column-major, as LAPACK takes it (no copy inside)
            rhs = eye.expand(hi - lo, size, size).contiguous().mT
            torch.linalg.lu_solve(lu, pivots, rhs, out=inv[lo:hi])
            log_det[lo:hi] = lu.diagonal(dim1=-2, dim2=-1).abs().log().sum(-1)

    workers = min(torch.get_num_threads(), batch)
    if workers < 2 or size < _POOL_MIN_SIZE or lap.device.type != "cpu":
        solve(0, batch)
    else:
        bounds = [batch * w // workers for w in range(workers + 1)]
        list(_pool(workers).map(solve, bounds[:-1], bounds[1:]))
    return inv.to(lap.dtype), log_det.to(lap.dtype)


class _InverseAndLogDet(torch.autograd.Function):
    """``(K^-1, log |det K|)`` of a batch ``K`` [B, N, N] by ``_inverse64``, differentiable.

    Backward by the matrix identities ``d K^-1 = -K^-1 dK K^-1`` and
    ``d log |det K| = tr(K^-1 dK)``: ``grad K = K^-T (g_det I - G K^-T)``, two batched
    products in ``K``'s dtype instead of autograd through LAPACK's factorization. Saving the
    output keeps the backward itself differentiable.
    """

    @staticmethod
    def forward(ctx: Any, lap: Tensor) -> tuple[Tensor, Tensor]:
        inv, log_det = _inverse64(lap.detach())
        ctx.save_for_backward(inv)
        return inv, log_det

    @staticmethod
    def backward(ctx: Any, grad_inv: Tensor | None, grad_log_det: Tensor | None) -> Tensor:
        (inv,) = ctx.saved_tensors
        inv_t = inv.mT
        grad = torch.zeros_like(inv_t)
        if grad_log_det is not None:
            grad = grad + inv_t * grad_log_det[:, None, None]
        if grad_inv is not None:
            grad = grad - inv_t @ grad_inv @ inv_t
        return grad


def _eliminate(log_arcs: Tensor, log_root: Tensor) -> Tensor:
    """log det of the several-roots Laplacian by log-space GTH elimination, [B].

    Eliminating word ``k`` multiplies Z by its in-weight ``p_k`` and reroutes every path
    ``h -> k -> d`` into an arc ``h -> d`` of weight ``A[h, k] A[k, d] / p_k`` (and ``0 -> k -> d``
    into a root arc): the Schur complement of a Laplacian is again one. O(B N^3), N steps.

    Args:
        log_arcs: [B, N, N] (dep, head) word-to-word log weights, ``NEG`` where absent.
        log_root: [B, N] ROOT-to-word log weights.
    """
    size = log_arcs.shape[-1]
    eye = torch.eye(size, dtype=torch.bool, device=log_arcs.device)
    log_arcs = log_arcs.masked_fill(eye, NEG)
    log_z = log_root.new_zeros(log_root.shape[0])
    for k in range(size):
        into_k = torch.cat([log_root[:, k, None], log_arcs[:, k]], -1)  # [B, N+1]
        pivot = torch.logsumexp(into_k, -1)  # [B]
        log_z = log_z + pivot
        out_of_k = log_arcs[:, :, k] - pivot[:, None]  # [B, N] arcs k -> d, scaled
        log_root = torch.logaddexp(log_root, out_of_k + log_root[:, k, None])
        log_arcs = torch.logaddexp(log_arcs, out_of_k[:, :, None] + log_arcs[:, k, None, :])
        gone = eye[k][:, None] | eye[k][None, :] | eye  # word k leaves; no self-loops
        log_arcs = log_arcs.masked_fill(gone, NEG)
    return log_z


def _log_partition_by_elimination(scores: Tensor, lengths: Tensor, multiroot: bool) -> Tensor:
    """log Z [B] by ``_eliminate``.

    Single root: with every ROOT arc of a real word scaled by ``t``, the several-roots partition
    function is a polynomial ``sum_k c_k t^k`` in the number k of root words, and the single-root
    one is ``c_1``. One elimination with ``log t`` far below the scores' range gives
    ``log c_1 + log t`` up to a relative error ``c_2 t / c_1 < e^-60``, in O(B N^3) time and
    memory (a separate elimination per root word would need O(N^4)).
    """
    size = scores.shape[-1]
    words = _word_mask(lengths, size)  # [B, N]
    log_arcs = scores[:, 1:, 1:]  # [B, N, N]
    # padded words: a root weight of 1 and no arcs, i.e. an identity block
    log_root = torch.where(words, scores[:, 1:, 0], 0.0)  # [B, N]
    if multiroot:
        return _eliminate(log_arcs, log_root)
    # c_{k+1} / c_k <= (trees per root choice) * e^(score range) <= e^(n log(n+1) + range)
    valid = scores.detach() > NEG / 2
    spread = torch.where(valid, scores.detach(), 0.0).abs().amax() * 2
    log_t = -(float(spread) + (size - 1) * math.log(size) + 60.0)
    log_z = _eliminate(log_arcs, torch.where(words, log_root + log_t, log_root)) - log_t
    return torch.where(lengths > 0, log_z, 0.0)


def log_partition_and_marginals(
    scores: Tensor, lengths: Tensor, multiroot: bool
) -> tuple[Tensor, Tensor]:
    """log Z [B] and arc marginals [B, L, L] (dep, head) of non-projective trees.

    Differentiable (marginals included) through autograd; results in the dtype of ``scores``.
    float32 scores first take the determinant route in float32 (``_fast_closed_form``); the
    sentences it does not trust, and all other dtypes, take it in float64 (``_closed_form``),
    and the sentences float64 cannot resolve a log-space elimination. O(B N^3) time and
    memory, the elimination in N Python steps.

    Args:
        scores: [B, L, L] arc scores (dep, head), ``NEG`` on invalid arcs.
        lengths: LongTensor [B] word counts.
        multiroot: allow several words to attach to ROOT.
    """
    if scores.dtype == torch.float32 and scores.shape[-1] > 1:
        return _checked(scores, lengths, multiroot, _fast_closed_form, _float64)
    log_z, marginals = _checked(scores.double(), lengths, multiroot, _closed_form, _eliminated)
    return log_z.to(scores.dtype), marginals.to(scores.dtype)


Route = Callable[[Tensor, Tensor, bool], tuple[Tensor, Tensor, Tensor]]
Fallback = Callable[[Tensor, Tensor, bool], tuple[Tensor, Tensor]]


def _checked(
    scores: Tensor, lengths: Tensor, multiroot: bool, route: Route, fallback: Fallback
) -> tuple[Tensor, Tensor]:
    """``route`` (log Z, marginals, trusted), and ``fallback`` for the sentences it does not
    trust."""
    log_z, marginals, trusted = route(scores, lengths, multiroot)
    if bool(trusted.all()):
        return log_z, marginals
    good = trusted.nonzero().squeeze(-1)
    bad = (~trusted).nonzero().squeeze(-1)
    # the route is recomputed on the trusted sentences alone, so that NaN in the untrusted
    # ones cannot leak into gradients through the batched inverse
    good_z, good_mu, _ = route(scores[good], lengths[good], multiroot)
    bad_z, bad_mu = fallback(scores[bad], lengths[bad], multiroot)
    order = torch.argsort(torch.cat([good, bad]))
    return torch.cat([good_z, bad_z])[order], torch.cat([good_mu, bad_mu])[order]


def _float64(scores: Tensor, lengths: Tensor, multiroot: bool) -> tuple[Tensor, Tensor]:
    """The float64 routes for float32 sentences, back in float32."""
    log_z, marginals = _checked(scores.double(), lengths, multiroot, _closed_form, _eliminated)
    return log_z.float(), marginals.float()


def _eliminated(scores: Tensor, lengths: Tensor, multiroot: bool) -> tuple[Tensor, Tensor]:
    """log Z [B] by log-space elimination, marginals [B, L, L] from autograd (float64)."""

    def log_partition(some_scores: Tensor) -> Tensor:
        return _log_partition_by_elimination(some_scores, lengths, multiroot)

    (marginals,) = autograd_marginals(log_partition, [scores])
    return log_partition(scores), marginals


def maximum_spanning_tree(scores: Tensor, lengths: Tensor, multiroot: bool) -> Tensor:
    """Best non-projective tree of each sentence by Chu-Liu/Edmonds; heads LongTensor [B, L].

    Runs per sentence on the CPU in numpy (``best_tree``), O(n^2) time and memory each.
    """
    batch, size, _ = scores.shape
    table = scores.detach().double().cpu().numpy()
    heads = np.zeros((batch, size), dtype=np.int64)
    for b, n in enumerate(lengths.tolist()):
        if n > 0:
            heads[b, : n + 1] = best_tree(table[b, : n + 1, : n + 1], multiroot)
    return torch.from_numpy(heads).to(scores.device)


def best_tree(scores: np.ndarray, multiroot: bool) -> np.ndarray:
    """``maximum_spanning_tree`` of one sentence in numpy (what exported parsers decode with).

    Args:
        scores: [n+1, n+1] (dep, head) float64, ``NEG`` on row 0, the diagonal and forbidden
            arcs (n >= 1).
        multiroot: allow several root words.

    Returns:
        heads [n+1] (``heads[0] = 0``), by ``arborescence.chu_liu_edmonds``. O(n^2).
    """
    allowed = np.where(scores > NEG / 2, scores, -np.inf)
    return np.array([0, *chu_liu_edmonds(allowed, single_root=not multiroot)], dtype=np.int64)


def sample(scores: Tensor, lengths: Tensor, multiroot: bool, k: int) -> Tensor:
    """``k`` exact samples per sentence, heads LongTensor [k, B, L].

    Words draw their heads one after the other from the arc marginals of the trees that agree
    with the heads drawn so far (chain rule). Fixing word ``d``'s head changes one column of the
    Laplacian, so ``M^-1`` follows by a Sherman-Morrison update, O(N^2); its denominator is the
    drawn arc's probability, and where that is small the inverse is recomputed. Sentences whose
    inverse is not trusted (see ``_invert``) take the exact log-space route at every word.
    O(k B N^3) in N Python steps (O(k B N^4) for untrusted sentences).

    Args:
        scores: [B, L, L] arc scores (dep, head), ``NEG`` on invalid arcs.
        lengths: LongTensor [B] word counts.
        multiroot: allow several words to attach to ROOT.
        k: number of samples.
    """
    batch, size, _ = scores.shape
    work = scores.detach().double().repeat(k, 1, 1)  # [R, L, L], draw-major rows
    lens = lengths.repeat(k)  # [R]
    weights, _, words = _weights(work, lens)  # [R, N, L]
    inv, _, _, trusted = _invert(weights, words, multiroot)  # [R, N, N]
    heads = torch.zeros(k * batch, size, dtype=torch.long, device=scores.device)
    pos = torch.arange(size, device=scores.device)
    for d in range(1, size):
        i = d - 1
        active = lens >= d  # [R]
        dep = torch.tensor([i], device=scores.device)
        probs = _marginals_from_inverse(weights[:, i, None], inv[:, i, None], dep, multiroot)
        probs = probs[:, 0]  # [R, L]
        (redo,) = (active & ~(trusted & _valid(probs))).nonzero(as_tuple=True)
        if len(redo):
            exact = log_partition_and_marginals(work[redo], lens[redo], multiroot)[1]
            probs[redo] = exact[:, d].double()
        probs = torch.where(active[:, None], probs.clamp_min(0), (pos == 0).double())
        choice = torch.multinomial(probs, 1).squeeze(-1)  # [R]
        heads[:, d] = choice.masked_fill(~active, 0)
        drop = active[:, None] & (pos[None, :] != choice[:, None])  # [R, L]
        work[:, d] = work[:, d].masked_fill(drop, NEG)
        # M is linear in word i's weights: column i changes by the dropped weights' part
        removed = torch.where(drop, -weights[:, i], 0.0)  # [R, L]
        weights[:, i] += removed
        change = -removed[:, 1:]  # [R, N] off-diagonal entries of column i of M
        change[:, i] = removed[:, 1:].sum(-1) + (removed[:, 0] if multiroot else 0.0)
        if not multiroot:  # the first word's row of M holds the root weights
            change[:, 0] = removed[:, 0]
        moved = torch.einsum("rnm,rm->rn", inv, change)  # [R, N] = X c
        ratio = 1 + moved[:, i]  # = P(drawn head) in exact arithmetic
        inv = inv - moved[:, :, None] * inv[:, None, i] / ratio[:, None, None]
        (stale,) = (active & trusted & (ratio < 1e-3)).nonzero(as_tuple=True)
        if len(stale):
            inv[stale], _, _, trusted[stale] = _invert(weights[stale], words[stale], multiroot)
    return heads.view(k, batch, size)
