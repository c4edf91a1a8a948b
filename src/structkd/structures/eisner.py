"""Eisner's algorithm for first-order projective dependency trees, vectorized over spans.

Charts follow SuPar's layout ``chart[h, e, b]``: the span headed by word ``h`` whose far end is
``e`` (right-facing when ``h < e``, left-facing when ``h > e``), for sentence ``b``; position 0 is
ROOT. ``C`` holds complete spans (``C[i, i] = 0``) and ``I`` incomplete ones (an arc ``h -> e``
plus what lies between). For ``i < j``:

    I[i, j] = s(i -> j) + LSE_{i <= r < j} C[i, r] + C[j, r + 1]      (and I[j, i] with s(j -> i))
    C[i, j] = LSE_{i < r <= j} I[i, r] + C[r, j]
    C[j, i] = LSE_{i <= r < j} C[r, i] + I[j, r]

All spans of one width are computed at once through strided views ("stripes", Zhang et al.,
ACL 2020), so the Python loop runs over the N widths only: O(B N^3) work in N steps. Every
projective tree has exactly one derivation, so the same chart gives log Z (log-sum-exp), the best
tree (max), k-best trees (top-k of sums) and exact samples (top-down through the chart).

The marginals come from a hand-written outside pass in gradient space: the gradient of log Z with
respect to each chart cell is a span marginal in [0, 1], pushed from wide spans to narrow ones
with the softmax weights each reduction kept. Invalid arcs and padding are set to the finite
``NEG`` rather than ``-inf``, so no reduction ever sees only ``-inf`` (whose gradient is NaN).

References: Eisner, COLING 1996; Eisner, 2000 (Bilexical grammars); Zhang, Li and Zhang,
ACL 2020 (Efficient second-order TreeCRF), for the stripe vectorization.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import torch
from torch import Tensor

NEG = -1e30
"""Finite stand-in for log 0: exp(NEG - x) underflows to 0, NEG - NEG stays finite."""

Reduce = Callable[[Tensor], tuple[Tensor, Tensor | None]]
"""Reduces [n, w, B] over the split dim 1 to [n, B], with the weights the outside pass uses."""


def stripe(x: Tensor, n: int, w: int, offset: tuple[int, int] = (0, 0), dim: int = 1) -> Tensor:
    """Strided view [n, w, ...] of a contiguous chart ``x`` [L, L, ...].

    Element ``[i, k]`` is ``x[offset[0] + i, offset[1] + i + k]`` when ``dim == 1`` (a row
    segment that slides along the diagonal) and ``x[offset[0] + i + k, offset[1] + i]`` when
    ``dim == 0`` (a column segment). Within one stripe no two elements share memory, so in-place
    ``add_`` on it is safe.
    """
    size = x.shape[0]
    numel = x[0, 0].numel()
    stride = list(x.stride())
    stride[0] = (size + 1) * numel
    stride[1] = (1 if dim == 1 else size) * numel
    return x.as_strided(
        (n, w, *x.shape[2:]), stride, x.storage_offset() + (offset[0] * size + offset[1]) * numel
    )


def logsumexp_weights(x: Tensor) -> tuple[Tensor, Tensor]:
    """LSE over dim 1 of [n, w, B] and its softmax weights, sharing one exp."""
    top = x.amax(1, keepdim=True)  # [n, 1, B]
    exp = (x - top).exp()  # [n, w, B]
    total = exp.sum(1, keepdim=True)  # [n, 1, B], >= 1
    return (top + total.log()).squeeze(1), exp / total


def logsumexp_autograd(x: Tensor) -> tuple[Tensor, None]:
    """LSE over dim 1 for charts that autograd differentiates (no weights kept)."""
    return torch.logsumexp(x, 1), None


@dataclass
class EisnerChart:
    """Inside chart of a batch, kept for the outside pass, the decoders and the sampler.

    Attributes:
        complete: C [L, L, B]; incomplete: I [L, L, B] (see the module docstring).
        lengths: LongTensor [B] of word counts (``L - 1`` is the padded length).
        multiroot: whether several words may attach to ROOT.
        weights: per width ``w`` (index ``w - 1``), the weights of the three reductions
            (``I``, left ``C``, right ``C``), each [L - w, w, B]; empty when not kept.
    """

    complete: Tensor
    incomplete: Tensor
    lengths: Tensor
    multiroot: bool
    weights: list[tuple[Any, Any, Any]] = field(default_factory=list)

    @property
    def log_partition(self) -> Tensor:
        """Root span value ``C[0, n]`` [B]: log Z."""
        batch = torch.arange(self.lengths.numel(), device=self.lengths.device)
        return self.complete[0, self.lengths, batch]

    @cached_property
    def marginals(self) -> Tensor:
        """``outside()``, computed once."""
        return self.outside()

    def outside(self) -> Tensor:
        """Gradient of ``log_partition`` with respect to every arc score, [B, L(dep), L(head)].

        With log-sum-exp weights these are the arc marginals. O(B N^3), N steps, no autograd.
        """
        size, _, batch = self.complete.shape
        grad_c = torch.zeros_like(self.complete)  # [L, L, B]
        grad_i = torch.zeros_like(self.complete)  # [L, L, B]
        grad_c[0, self.lengths, torch.arange(batch, device=self.lengths.device)] = 1.0
        for w in range(size - 1, 0, -1):
            n = size - w
            w_span, w_left, w_right = self.weights[w - 1]
            # Complete spans of width w: their gradient is final (only wider spans use them).
            push = w_right * grad_c.diagonal(w).t()[:, None]  # [n, w, B]
            stripe(grad_i, n, w, (0, 1)).add_(push)
            stripe(grad_c, n, w, (1, w), 0).add_(push)
            push = w_left * grad_c.diagonal(-w).t()[:, None]  # [n, w, B]
            stripe(grad_c, n, w, (0, 0), 0).add_(push)
            stripe(grad_i, n, w, (w, 0)).add_(push)
            # Incomplete spans of width w are now final too (they feed complete spans of width
            # >= w only); both directions share the split sum.
            grad_span = (grad_i.diagonal(w) + grad_i.diagonal(-w)).t()  # [n, B]
            push = w_span * grad_span[:, None]  # [n, w, B]
            stripe(grad_c, n, w).add_(push)
            stripe(grad_c, n, w, (w, 1)).add_(push)
        return grad_i.permute(2, 1, 0)  # [B, dep, head]


def inside(scores: Tensor, lengths: Tensor, multiroot: bool, reduce: Reduce) -> EisnerChart:
    """Eisner's inside pass in the semiring that ``reduce`` defines.

    Single root (``multiroot=False``) uses SuPar's trick: the complete span ``C[0, w]`` is
    forced to ``NEG`` unless ``w`` is the sentence length, so ROOT takes exactly one child
    whose complete spans cover the whole sentence.

    Args:
        scores: [B, L, L] arc scores (dep, head) with ``NEG`` on every invalid arc (row 0, the
            diagonal, padding).
        lengths: LongTensor [B] word counts.
        multiroot: allow several words to attach to ROOT.
        reduce: ``logsumexp_weights`` or ``logsumexp_autograd``.

    Returns:
        The chart; differentiable by autograd when ``reduce`` is ``logsumexp_autograd``.
    """
    arcs = scores.permute(2, 1, 0)  # [L, L, B] (head, dep)
    size, _, batch = arcs.shape
    complete = arcs.new_full((size, size, batch), NEG)  # [L, L, B]
    incomplete = arcs.new_full((size, size, batch), NEG)  # [L, L, B]
    complete.diagonal().fill_(0.0)
    weights = []
    for w in range(1, size):
        n = size - w
        split = stripe(complete, n, w) + stripe(complete, n, w, (w, 1))  # [n, w, B]
        span, w_span = reduce(split)  # [n, B]
        incomplete.diagonal(-w).copy_(span.t() + arcs.diagonal(-w))
        incomplete.diagonal(w).copy_(span.t() + arcs.diagonal(w))
        left = stripe(complete, n, w, (0, 0), 0) + stripe(incomplete, n, w, (w, 0))  # [n, w, B]
        span, w_left = reduce(left)
        complete.diagonal(-w).copy_(span.t())
        right = stripe(incomplete, n, w, (0, 1)) + stripe(complete, n, w, (1, w), 0)
        span, w_right = reduce(right)
        complete.diagonal(w).copy_(span.t())
        if not multiroot:
            complete[0, w].masked_fill_(lengths != w, NEG)
        weights.append((w_span, w_left, w_right))
    kept = weights if weights and weights[0][0] is not None else []
    return EisnerChart(complete, incomplete, lengths, multiroot, kept)


Chooser = Callable[[Tensor, Tensor, Tensor, Tensor, Tensor], tuple[Tensor, Tensor, Tensor]]
"""(sentence, head, end, is_complete, rank) of pending spans -> (split, first rank, second rank)."""


def _walk(
    batch_of_row: Tensor, start: Tensor, start_rank: Tensor, size: int, choose: Chooser
) -> Tensor:
    """Expands derivations top-down, all pending spans of all rows at once.

    A row is one derivation of sentence ``batch_of_row[row]`` starting from ``C[0, start[row]]``
    at rank ``start_rank[row]`` (skipped when ``start`` is 0). ``choose`` picks every pending
    span's split point ``r`` and the ranks its two children take (k-best); the children follow
    the recurrences of the module docstring: a complete span ``(h, e)`` splits into ``I[h, r]``
    and ``C[r, e]``, an incomplete span ``h -> e`` over ``[lo, hi]`` into ``C[lo, r]`` and
    ``C[hi, r + 1]`` and records the arc. At most ``2N + 1`` rounds of O(rows N) work.

    Returns:
        LongTensor [rows, L] of heads.
    """
    device = start.device
    heads = torch.zeros(len(start), size, dtype=torch.long, device=device)
    (row,) = (start > 0).nonzero(as_tuple=True)
    head, end, rank = torch.zeros_like(row), start[row], start_rank[row]
    is_complete = torch.ones_like(row, dtype=torch.bool)
    while row.numel():
        split, first_rank, second_rank = choose(batch_of_row[row], head, end, is_complete, rank)
        arcs = ~is_complete
        heads[row[arcs], end[arcs]] = head[arcs]
        lo, hi = torch.minimum(head, end), torch.maximum(head, end)
        row = torch.cat([row, row])
        head = torch.cat([torch.where(is_complete, head, lo), torch.where(is_complete, split, hi)])
        end = torch.cat([split, torch.where(is_complete, end, split + 1)])
        rank = torch.cat([first_rank, second_rank])
        is_complete = torch.cat([arcs, torch.ones_like(arcs)])
        keep = ~is_complete | (head != end)  # complete one-word spans are leaves
        row, head, end, rank, is_complete = (t[keep] for t in (row, head, end, rank, is_complete))
    return heads


def sample(chart: EisnerChart, k: int) -> Tensor:
    """``k`` exact samples per sentence by top-down sampling through a log-sum-exp chart.

    Each pending span picks its split with probability ``exp(children - span)`` (Gumbel-max)
    and its children are expanded in turn (``_walk``). O(k B N^2) work, at most 2N + 1 rounds.

    Returns:
        LongTensor [k, B, L] of heads.
    """
    complete = chart.complete.permute(2, 0, 1)  # [B, L, L] (head, end)
    incomplete = chart.incomplete.permute(2, 0, 1)  # [B, L, L] (head, end)
    batch, size, _ = complete.shape
    r = torch.arange(size, device=complete.device)  # candidate split points

    def choose(
        b: Tensor, head: Tensor, end: Tensor, is_complete: Tensor, rank: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        lo, hi = torch.minimum(head, end)[:, None], torch.maximum(head, end)[:, None]
        # complete (head, end): I[head, r] + C[r, end], r beyond head up to end
        c_logits = incomplete[b, head] + complete[b, :, end]  # [M, L]
        c_valid = torch.where((head < end)[:, None], (r > lo) & (r <= hi), (r >= lo) & (r < hi))
        # incomplete head -> end: C[lo, r] + C[hi, r + 1], lo <= r < hi
        next_end = torch.cat([complete[b, hi[:, 0], 1:], complete.new_full((len(b), 1), NEG)], 1)
        i_logits = complete[b, lo[:, 0]] + next_end  # [M, L]
        logits = torch.where(is_complete[:, None], c_logits, i_logits)
        valid = torch.where(is_complete[:, None], c_valid, (r >= lo) & (r < hi))
        gumbel = -torch.empty_like(logits).exponential_().log()
        split = torch.where(valid, logits + gumbel, -torch.inf).argmax(-1)  # [M]
        return split, rank, rank

    rows = torch.arange(k * batch, device=complete.device) % batch  # draw-major
    return _walk(rows, chart.lengths[rows], torch.zeros_like(rows), size, choose).view(
        k, batch, size
    )


def best_trees(scores: Tensor, lengths: Tensor, multiroot: bool) -> Tensor:
    """The best projective tree of each sentence, by Eisner's max pass with backpointers.

    The recursion of ``inside`` under max. Instead of keeping every reduction's one-hot weights
    for an outside pass (O(B N^3) memory: 16.7 GB at 2,000 words), each chart cell keeps the
    offset of its best split, O(B N^2) memory, and ``_walk`` reads the tree off top-down. Ties go
    to the first split. O(B N^3) time in N steps.

    Args:
        scores: [B, L, L] arc scores (dep, head), ``NEG`` on invalid arcs.
        lengths: LongTensor [B] word counts.
        multiroot: allow several words to attach to ROOT.

    Returns:
        Heads LongTensor [B, L] (0 at index 0 and on padding).
    """
    arcs = scores.permute(2, 1, 0)  # [L, L, B] (head, dep)
    size, _, batch = arcs.shape
    complete = arcs.new_full((size, size, batch), NEG)  # [L, L, B]
    # C transposed, so that the column stripes of C are read as rows: at 2,000 words strided
    # column reads make the pass about twice as slow
    complete_t = arcs.new_full((size, size, batch), NEG)  # [L, L, B] (end, head)
    incomplete = arcs.new_full((size, size, batch), NEG)  # [L, L, B]
    complete.diagonal().fill_(0.0)
    complete_t.diagonal().fill_(0.0)
    back_c = torch.zeros(size, size, batch, dtype=torch.int32, device=scores.device)  # [L, L, B]
    back_i = torch.zeros(size, size, batch, dtype=torch.int32, device=scores.device)  # [L, L, B]
    # one buffer for every width's [n, w, B] sums: fresh multi-megabyte temporaries cost page
    # faults at every step
    buffer = arcs.new_empty(((size // 2 + 1) ** 2 * batch,))

    def best_split(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        total = torch.add(x, y, out=buffer[: x.numel()].view(x.shape))  # [n, w, B]
        return total.max(1)  # [n, B] each

    for w in range(1, size):
        n = size - w
        span, index = best_split(stripe(complete, n, w), stripe(complete, n, w, (w, 1)))
        incomplete.diagonal(-w).copy_(span.t() + arcs.diagonal(-w))
        incomplete.diagonal(w).copy_(span.t() + arcs.diagonal(w))
        back_i.diagonal(-w).copy_(index.t())
        back_i.diagonal(w).copy_(index.t())
        # left C[i + w, i] = max_k C[i + k, i] + I[i + w, i + k]
        span, index = best_split(stripe(complete_t, n, w), stripe(incomplete, n, w, (w, 0)))
        complete.diagonal(-w).copy_(span.t())
        complete_t.diagonal(w).copy_(span.t())
        back_c.diagonal(-w).copy_(index.t())
        # right C[i, i + w] = max_k I[i, i + 1 + k] + C[i + 1 + k, i + w]
        span, index = best_split(stripe(incomplete, n, w, (0, 1)), stripe(complete_t, n, w, (w, 1)))
        if not multiroot:
            span[0].masked_fill_(lengths != w, NEG)
        complete.diagonal(w).copy_(span.t())
        complete_t.diagonal(-w).copy_(span.t())
        back_c.diagonal(w).copy_(index.t())

    def choose(
        b: Tensor, head: Tensor, end: Tensor, is_complete: Tensor, rank: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        offset = torch.where(is_complete, back_c[head, end, b], back_i[head, end, b]).long()
        # right C[h, e] splits at h + 1 + offset, left C[h, e] at e + offset, I at lo + offset
        split = torch.minimum(head, end) + offset + (is_complete & (head < end)).long()
        return split, rank, rank

    rows = torch.arange(batch, device=scores.device)
    return _walk(rows, lengths, torch.zeros_like(rows), size, choose)


class LogPartition(torch.autograd.Function):
    """log Z [B] from a precomputed chart; its backward is the outside pass (the marginals)."""

    @staticmethod
    def forward(ctx: Any, scores: Tensor, chart: EisnerChart) -> Tensor:
        ctx.save_for_backward(scores)
        ctx.chart = chart
        return chart.log_partition.clone()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        (scores,) = ctx.saved_tensors
        # Through ArcMarginals so that a create_graph=True caller can differentiate again.
        return grad[:, None, None] * ArcMarginals.apply(scores, ctx.chart), None


class ArcMarginals(torch.autograd.Function):
    """Arc marginals [B, L, L] from a precomputed chart (outside pass).

    The backward (a Hessian-vector product of log Z) is needed only when the marginals
    themselves are differentiated, so it takes the simple road: autograd twice through an
    autograd-friendly inside pass.
    """

    @staticmethod
    def forward(ctx: Any, scores: Tensor, chart: EisnerChart) -> Tensor:
        ctx.save_for_backward(scores)
        ctx.chart = chart
        return chart.marginals.clone()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        (scores,) = ctx.saved_tensors
        chart = ctx.chart
        with torch.enable_grad():
            leaf = scores.detach().requires_grad_()
            log_z = inside(leaf, chart.lengths, chart.multiroot, logsumexp_autograd).log_partition
            (marginals,) = torch.autograd.grad(log_z.sum(), leaf, create_graph=True)
            (hvp,) = torch.autograd.grad(marginals, leaf, grad)
        return hvp, None


def kbest(scores: Tensor, lengths: Tensor, multiroot: bool, k: int) -> list[Tensor]:
    """The ``k`` best projective trees, best first (exact k-best Eisner).

    Each chart cell keeps its ``k`` best values and, for each, the split point and the ranks of
    the two children it came from (Huang and Chiang, IWPT 2005). Combining two cells only needs
    the rank pairs ``(a, b)`` with ``(a + 1)(b + 1) <= k``: any other pair is beaten by at least
    ``k`` pairs of lower ranks. Eisner derivations are in one-to-one correspondence with trees,
    so the ``k`` best root values are ``k`` distinct trees, read off top-down by ``_walk``.
    O(B N^3 k log k) time.

    Args:
        scores: [B, L, L] arc scores (dep, head), ``NEG`` on invalid arcs.
        lengths: LongTensor [B] word counts.
        multiroot: allow several words to attach to ROOT.
        k: number of trees.

    Returns:
        ``k`` LongTensors [B, L] of heads; a sentence with fewer than ``k`` trees repeats its last.
    """
    batch, size, _ = scores.shape
    device = scores.device
    pairs = [(a, b) for a in range(k) for b in range(k) if (a + 1) * (b + 1) <= k]
    rank_a = torch.tensor([a for a, _ in pairs], device=device)
    rank_b = torch.tensor([b for _, b in pairs], device=device)
    n_pairs = len(pairs)

    def combine(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        # x, y [n, w, B, k] -> k best sums over (split, rank pair) and their flat index [B, k, n]
        n = x.shape[0]
        cand = (x[..., rank_a] + y[..., rank_b]).permute(0, 2, 1, 3)  # [n, B, w, P]
        best, index = cand.reshape(n, batch, -1).topk(k, -1)  # [n, B, k]
        return best.permute(1, 2, 0), index.permute(1, 2, 0)

    arcs = scores.permute(2, 1, 0)[:, :, :, None]  # [L, L, B, 1] (head, dep)
    complete = scores.new_full((size, size, batch, k), NEG)  # [L, L, B, k]
    incomplete = scores.new_full((size, size, batch, k), NEG)  # [L, L, B, k]
    complete.diagonal()[:, 0].fill_(0.0)
    back_c = torch.zeros(size, size, batch, k, dtype=torch.long, device=device)
    back_i = torch.zeros(size, size, batch, k, dtype=torch.long, device=device)
    for w in range(1, size):
        n = size - w
        span, index = combine(stripe(complete, n, w), stripe(complete, n, w, (w, 1)))
        incomplete.diagonal(-w).copy_(span + arcs.diagonal(-w))
        incomplete.diagonal(w).copy_(span + arcs.diagonal(w))
        back_i.diagonal(-w).copy_(index)
        back_i.diagonal(w).copy_(index)
        span, index = combine(stripe(complete, n, w, (0, 0), 0), stripe(incomplete, n, w, (w, 0)))
        complete.diagonal(-w).copy_(span)
        back_c.diagonal(-w).copy_(index)
        span, index = combine(stripe(incomplete, n, w, (0, 1)), stripe(complete, n, w, (1, w), 0))
        complete.diagonal(w).copy_(span)
        back_c.diagonal(w).copy_(index)
        if not multiroot:
            complete[0, w].masked_fill_((lengths != w)[:, None], NEG)
    values = complete[0, lengths, torch.arange(batch, device=device)]  # [B, k]

    def choose(
        b: Tensor, head: Tensor, end: Tensor, is_complete: Tensor, rank: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        index = torch.where(is_complete, back_c[head, end, b, rank], back_i[head, end, b, rank])
        offset, pair = index // n_pairs, index % n_pairs
        first, second = rank_a[pair], rank_b[pair]
        lo = torch.minimum(head, end)
        right = is_complete & (head < end)
        left = is_complete & (head > end)
        # right C[h, e]: I[h, r] (rank a) + C[r, e] (rank b), r = h + 1 + offset;
        # left C[h, e]: C[r, e] (rank a) + I[h, r] (rank b), r = e + offset;
        # incomplete: C[lo, r] (rank a) + C[hi, r + 1] (rank b), r = lo + offset
        split = lo + offset + right.long()
        return split, torch.where(left, second, first), torch.where(left, first, second)

    rows = torch.arange(k * batch, device=device)  # rank-major: row = j * B + b
    ranks = rows // batch
    heads = _walk(rows % batch, lengths.repeat(k), ranks, size, choose)
    # a sentence with fewer than k trees: its surplus ranks (values of order NEG) repeat its last
    last = ((values > NEG / 2).sum(-1) - 1).clamp_min(0)  # [B]
    keep = torch.minimum(ranks.view(k, batch), last[None, :])  # [k, B]
    heads = heads.view(k, batch, size)
    return list(heads.gather(0, keep[:, :, None].expand(k, batch, size)).unbind(0))
