"""Second-order (adjacent sibling) projective dependency CRF with a single root.

A tree over words ``1..n`` (0 is ROOT) is scored by its arcs and by each pair of *adjacent*
modifiers on the same side of a head (McDonald & Pereira, EACL 2006):

    score(y) = sum_d arc[d, y_d] + sum_h sum_k sib[h, m_k, m_{k+1}],

where ``m_1, m_2, ...`` are the modifiers of ``h`` on one side, ordered from the closest to the
farthest, so the first modifier on each side has no sibling term. Exactly one word attaches to
ROOT, hence ROOT never has sibling terms.

Exact inference is the second-order Eisner algorithm (McDonald & Pereira 2006; Koo & Collins,
ACL 2010), O(n^3) time, over five charts of spans ``[i, j]`` of positions 0..n (0 = ROOT):

* ``CR[i, j]`` / ``CL[i, j]``: complete span headed by ``i`` / ``j``;
* ``IR[i, j]`` / ``IL[i, j]``: incomplete span with the arc ``i -> j`` / ``j -> i``;
* ``S[i, j]``: ``i`` and ``j`` are adjacent siblings of a head outside the span.

    S[i, j]  = (+)_{i <= u < j} CR[i, u] (x) CL[u+1, j]
    IR[i, j] = arc(i -> j) (x) ( CL[i+1, j]
                                 (+) (+)_{i < r < j} IR[i, r] (x) S[r, j] (x) sib(i; r, j) )
    IL[i, j] = arc(j -> i) (x) ( CR[i, j-1]
                                 (+) (+)_{i < r < j} IL[r, j] (x) S[i, r] (x) sib(j; r, i) )
    CR[i, j] = (+)_{i < r <= j} IR[i, r] (x) CR[r, j]
    CL[i, j] = (+)_{i <= r < j} CL[i, r] (x) IL[r, j]
    Z        = CR[0, n]

ROOT depends on nothing and its sibling scores are -inf, so ``IR[0, r]`` only takes its first
modifier and ``Z = (+)_r arc(0 -> r) (x) CL[1, r] (x) CR[r, n]``: exactly one root child.
The same recursion runs in the log semiring (``log Z``; marginals are its gradient) and in the
k-best max semiring (``argmax``/``topk``, trees read off the gradient of each of the k scores,
as in torch-struct). Charts are built by concatenation, never written in place, so autograd
(and double backward, for differentiable marginals) works in any grad state. The results agree
with SuPar's ``Dependency2oCRF(multiroot=False)`` given its sibling layout
``sib_scores.permute(0, 3, 1, 2)``.

``inference="mfvi"`` instead approximates the arc marginals by mean-field variational inference
over the head of each word (Wang & Tu, AACL 2020, "Second-Order Neural Dependency Parsing with
Message Passing and End-to-End Training"), ``mfvi_iters`` updates of

    q_d(h) = softmax_h( arc[d, h] + sum_s q_s(h) sib(h; d, s) ),

where, as in that paper and in SuPar's ``DependencyMFVI``, *any* two modifiers of ``h`` interact,
not only adjacent ones; here only same-side pairs do, through the one entry ``sib[h, closer,
farther]`` the exact model reads for them, and ROOT has no sibling messages. O(n^3) per update.
With zero sibling scores q is the local softmax over heads. The sibling part marginals are then
the mean-field expectations ``q_m(h) q_s(h) prod_{k between} (1 - q_k(h))``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from typing import Literal

import torch
from torch import Tensor

from structkd.structures import eisner
from structkd.structures.base import Structure, autograd_marginals, check_finite, lengths_or_full
from structkd.structures.eisner import NEG

Inference = Literal["exact", "mfvi"]
SiblingParts = tuple[Tensor, Tensor]
SAMPLE_BUDGET = 2**25  # elements of replicated sibling scores per sampling pass


def _inside_masks(lengths: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """``inside`` [B, N+1], true at ROOT and words ``1..n``; ``word`` [B, N+1], at words only."""
    idx = torch.arange(size, device=lengths.device)
    inside = idx[None, :] <= lengths[:, None]  # [B, N+1]
    return inside, inside & (idx > 0)


def _order_mask(size: int, device: torch.device) -> Tensor:
    """[N+1, N+1, N+1] true at (h, m, s) with ``h < m < s`` or ``s < m < h``."""
    idx = torch.arange(size, device=device)
    h, m, s = idx[:, None, None], idx[None, :, None], idx[None, None, :]
    return ((h < m) & (m < s)) | ((s < m) & (m < h))


def _check_nan(name: str, scores: Tensor, mask: Callable[[], Tensor]) -> None:
    """check_finite, building the (large) mask only when there is a NaN at all."""
    if bool(torch.isnan(scores.detach()).any()):
        check_finite(name, scores, mask())


def _adjacent_siblings(attach: Tensor) -> Tensor:
    """Expected adjacent-sibling indicators under independent heads.

    ``E[h has adjacent same-side modifiers m, s] = p(m <- h) p(s <- h) prod_k (1 - p(k <- h))``
    over the words ``k`` strictly between ``m`` and ``s``. For one-hot ``attach`` this is the
    exact indicator of the tree's sibling parts. O(B N^3).

    Args:
        attach: [B, N+1, N+1] probabilities ``p(d <- h)`` at ``[b, d, h]`` (0 off the sentence).

    Returns:
        [B, N+1, N+1, N+1] at ``[b, h, m, s]``, zero unless ``h < m < s`` or ``s < m < h``.
    """
    by_head = attach.transpose(1, 2)  # [B, H, M]
    batch, size = by_head.shape[:2]
    idx = torch.arange(size, device=attach.device)
    h, m, s = idx[:, None, None], idx[None, :, None], idx[None, None, :]
    free = 1 - by_head  # [B, H, K]: word k does not attach to h
    ones = free.new_ones(batch, size, 1)
    # cumprod over s, one factor per word entering the gap as s moves away from m
    before = torch.cat([ones, free[..., :-1]], -1)[:, :, None, :]  # [B, H, 1, S]: free[s-1]
    after = torch.cat([free[..., 1:], ones], -1)[:, :, None, :]  # [B, H, 1, S]: free[s+1]
    right = torch.where(s > m + 1, before, 1.0).cumprod(-1)  # [B, H, M, S]
    left = torch.where(s < m - 1, after, 1.0).flip(-1).cumprod(-1).flip(-1)  # [B, H, M, S]
    gap = torch.where(h < m, right, left)  # [B, H, M, S]
    pairs = by_head[:, :, :, None] * by_head[:, :, None, :]  # [B, H, M, S]
    return pairs * gap * _order_mask(size, attach.device)


def _times(a: Tensor, b: Tensor) -> Tensor:
    """Semiring product of candidate lists: [..., k] x [..., k'] -> [..., k * k']."""
    if a.shape[-1] == 1 or b.shape[-1] == 1:
        return a + b
    return (a[..., :, None] + b[..., None, :]).flatten(-2)


def _plus(x: Tensor, k: int, log: bool) -> Tensor:
    """Semiring sum of the candidates on the last dim: logsumexp, or the k largest."""
    if log:
        return torch.logsumexp(x, -1, keepdim=True)
    return x.topk(k, -1).values


def _finite(scores: Tensor) -> Tensor:
    """-inf (a hard constraint) as a huge finite score, exp() of which is still exactly 0.

    Keeps logsumexp's gradient NaN-free on impossible chart items; the divisor leaves room for
    the O(n) such scores one tree may sum.
    """
    return scores.clamp(min=torch.finfo(scores.dtype).min / 1e6)


def _chart_scores(
    arc: Tensor, sib: Tensor, lengths: Tensor, log: bool
) -> tuple[list[Tensor], list[Tensor]]:
    """The scores the chart reads, gathered once and split into one chunk per span width.

    One gather plus one split keeps the backward to two ops (per-width slicing of the score
    tensors would allocate a full-size gradient per width), and masking after the gather
    touches only the O(N^3 / 3) sibling scores a tree can use.

    Returns:
        ``arcs``: 2N chunks [B, N+1-w] for w = 1..N: ``arc(i -> i+w)``, then ``arc(i+w -> i)``.
        ``sibs``: 2N chunks [B, (N+1-w)(w-1)] (flattened [spans i, inner v]): ``sib(i; i+v, i+w)``
        for w = 1..N, then ``sib(i+w; i+v, i)``.
    """
    size = arc.shape[1]
    # parts ROOT cannot have: finite in the log semiring (see _finite), -inf for max
    never = torch.finfo(arc.dtype).min / 1e6 if log else float("-inf")
    idx = torch.arange(size, device=arc.device)
    # spans [i, i+w] ordered by width, then start; ``v`` indexes the inner sibling i+v
    w, i = ((idx[:, None] >= 1) & (idx[:, None] + idx[None, :] < size)).nonzero(as_tuple=True)
    head, dep, end = torch.cat([i, i + w]), torch.cat([i + w, i]), torch.cat([i + w, i + w])
    arcs = arc.flatten(1).index_select(1, dep * size + head)  # [B, T]
    arcs = _finite(arcs) if log else arcs
    # padding may hold anything (even NaN): replace it before any reduction
    arcs = arcs.masked_fill(end > lengths[:, None], 0.0).masked_fill(dep == 0, never)
    w, i, v = (
        (idx[:, None, None] > idx[None, None, :])
        & (idx[None, None, :] >= 1)
        & (idx[:, None, None] + idx[None, :, None] < size)
    ).nonzero(as_tuple=True)
    head, far, end = torch.cat([i, i + w]), torch.cat([i + w, i]), torch.cat([i + w, i + w])
    sibs = sib.flatten(1).index_select(1, (head * size + torch.cat([i + v, i + v])) * size + far)
    sibs = _finite(sibs) if log else sibs
    sibs = sibs.masked_fill(end > lengths[:, None], 0.0).masked_fill(head == 0, never)
    n_spans = [size - x for x in range(1, size)]
    n_sibs = [(size - x) * (x - 1) for x in range(1, size)]
    return list(arcs.split(n_spans * 2, 1)), list(sibs.split(n_sibs * 2, 1))


def _inside(arc: Tensor, sib: Tensor, lengths: Tensor, k: int, log: bool) -> Tensor:
    """Second-order Eisner over ROOT and the words; the tree is the complete span ``CR[0, n]``.

    ROOT (position 0) never depends on a word and its only modifier has no sibling, which makes
    the tree single-rooted: ``CR[0, n] = (+)_r arc(0 -> r) (x) CL[1, r] (x) CR[r, n]``.

    Python loops run over span widths only; each step handles all spans of a width and all
    sentences at once. Each chart is one tensor [B, spans, widths, k] that grows by a width and
    drops the spans that can no longer grow per step (start-aligned: widths ascending;
    end-aligned: widths descending), so every reduction reads it without reordering.
    O(B N^3 k^2) time, O(B N^2 k) chart memory.

    Args:
        arc: [B, N+1, N+1] arc scores ``[b, d, h]``; padding may hold anything.
        sib: [B, N+1, N+1, N+1] sibling scores ``[b, h, m, s]``; padding may hold anything.
        lengths: LongTensor [B].
        k: candidates kept per chart item (1 for the log semiring).
        log: log semiring (``log Z``) if true, else the k-best max semiring.

    Returns:
        [B, k]: ``log Z``, or the k best tree scores (``-inf`` where a sentence has fewer).
    """
    batch, size = arc.shape[:2]
    arcs, sibs = _chart_scores(arc, sib, lengths, log)
    # the running charts: width-0 complete spans, no incomplete or sibling items yet
    unit = arc.new_full((k,), float("-inf")).index_fill(0, lengths.new_zeros(1), 0.0)
    cr_s = cr_e = cl_s = cl_e = unit.expand(batch, size, 1, k)  # [B, N+1, 1, k]
    ir_s = il_e = s_s = s_e = cr_s[:, :, :0]  # [B, N+1, 0, k]
    for w in range(1, size):
        n = size - w
        cr_s, cl_s, ir_s, s_s = cr_s[:, :n], cl_s[:, :n], ir_s[:, :n], s_s[:, :n]  # starts < n
        cr_e, cl_e, il_e, s_e = cr_e[:, 1:], cl_e[:, 1:], il_e[:, 1:], s_e[:, 1:]  # ends >= w
        sib_right = sibs[w - 1].view(batch, n, w - 1, 1)
        sib_left = sibs[size - 2 + w].view(batch, n, w - 1, 1)
        # IR[i, j]: first right modifier CL[i+1, j], or IR[i, r] S[r, j] sib(i, r, j)
        more = (_times(ir_s, s_e) + sib_right).flatten(-2)  # [B, n, (w-1) k^2]
        ir = _plus(torch.cat([cl_e[:, :, 0], more], -1), k, log) + arcs[w - 1][..., None]
        # IL[i, j]: first left modifier CR[i, j-1], or IL[r, j] S[i, r] sib(j, r, i)
        more = (_times(il_e, s_s) + sib_left).flatten(-2)  # [B, n, (w-1) k^2]
        il = _plus(torch.cat([cr_s[:, :, -1], more], -1), k, log) + arcs[size - 2 + w][..., None]
        ir_s = torch.cat([ir_s, ir[:, :, None]], 2)  # [B, n, w, k]
        il_e = torch.cat([il[:, :, None], il_e], 2)  # [B, n, w, k]
        # S[i, j] = CR[i, u] CL[u+1, j]
        span = _plus(_times(cr_s, cl_e).flatten(-2), k, log)[:, :, None]  # [B, n, 1, k]
        s_s, s_e = torch.cat([s_s, span], 2), torch.cat([span, s_e], 2)  # [B, n, w, k]
        # CR[i, j] = IR[i, r] CR[r, j];  CL[i, j] = CL[i, r] IL[r, j]
        cr = _plus(_times(ir_s, cr_e).flatten(-2), k, log)[:, :, None]  # [B, n, 1, k]
        cl = _plus(_times(cl_s, il_e).flatten(-2), k, log)[:, :, None]  # [B, n, 1, k]
        cr_s, cr_e = torch.cat([cr_s, cr], 2), torch.cat([cr, cr_e], 2)  # [B, n, w+1, k]
        cl_s, cl_e = torch.cat([cl_s, cl], 2), torch.cat([cl, cl_e], 2)  # [B, n, w+1, k]
    # CR[0, n] sits at start 0, width n
    return cr_s[:, 0].gather(1, lengths[:, None, None].expand(batch, 1, k))[:, 0]  # [B, k]


class SiblingDependencyCRF(Structure):
    """Projective single-root dependency CRF with arc and adjacent-sibling scores.

    See the module docstring for the model and the algorithms. ``inference="exact"`` gives every
    quantity of the base API exactly, O(n^3) (``topk(k)`` O(n^3 k^2 log k), ``sample(k)``
    O(n^4 k)). ``inference="mfvi"`` gives approximate arc marginals by mean field in
    O(mfvi_iters n^3) and decodes them with first-order Eisner; ``log_partition``, ``entropy``,
    ``cross_entropy``, ``kl``, ``topk`` and ``sample`` are then intractable and raise.

    Args:
        arc_scores: [B, N+1, N+1]; ``[b, d, h]`` scores word ``d`` (1..n) taking head ``h``
            (0 = ROOT, ``h != d``). Row 0, the diagonal and padding are ignored.
        sib_scores: [B, N+1, N+1, N+1]; ``[b, h, m, s]`` scores ``m`` and ``s`` as adjacent
            modifiers of ``h`` on the same side, ``s`` the farther one. Other orders, ROOT's
            entries and padding are ignored.
        lengths: LongTensor [B] of sentence lengths (words, ROOT excluded); None = all N.
        inference: ``"exact"`` (second-order Eisner) or ``"mfvi"`` (mean field).
        mfvi_iters: number of mean-field updates.

    Compact form of a tree: LongTensor [B, N+1] of heads (index 0 and padding are 0 on output
    and ignored on input). Part marginals: ``(arc [B, N+1, N+1], sib [B, N+1, N+1, N+1])``.
    """

    def __init__(
        self,
        arc_scores: Tensor,
        sib_scores: Tensor,
        lengths: Tensor | None = None,
        inference: Inference = "exact",
        mfvi_iters: int = 3,
    ) -> None:
        if arc_scores.dim() != 3 or arc_scores.shape[1] != arc_scores.shape[2]:
            raise ValueError(f"arc_scores must be [B, N+1, N+1], got {list(arc_scores.shape)}")
        batch, size = arc_scores.shape[:2]
        if sib_scores.shape != (batch, size, size, size):
            raise ValueError(
                f"sib_scores must be [{batch}, {size}, {size}, {size}], "
                f"got {list(sib_scores.shape)}"
            )
        if inference not in ("exact", "mfvi"):
            raise ValueError(f"inference must be 'exact' or 'mfvi', got {inference!r}")
        if mfvi_iters < 1:
            raise ValueError(f"mfvi_iters must be >= 1, got {mfvi_iters}")
        self.lengths = lengths_or_full(lengths, batch, size - 1, arc_scores.device)
        self.inference: Inference = inference
        self.mfvi_iters = mfvi_iters
        inside, self.word_mask = _inside_masks(self.lengths, size)  # [B, N+1]
        idx = torch.arange(size, device=arc_scores.device)
        # [B, N+1, N+1]: (d, h) with d a word, h ROOT or a word, h != d
        self.arc_mask = self.word_mask[:, :, None] & inside[:, None, :] & (idx[:, None] != idx)
        # NaN anywhere inside the sentence (even on an unused entry) signals an upstream bug
        _check_nan("arc_scores", arc_scores, lambda: self.word_mask[:, :, None] & inside[:, None])
        _check_nan(
            "sib_scores",
            sib_scores,
            lambda: (
                inside[:, :, None, None]
                & self.word_mask[:, None, :, None]
                & self.word_mask[:, None, None]
            ),
        )
        self.arc_scores = arc_scores.masked_fill(~self.arc_mask, 0.0)  # [B, N+1, N+1]
        # raw: the exact chart masks the third of it that it reads (see _chart_scores)
        self._sib_input = sib_scores  # [B, N+1, N+1, N+1]

    @cached_property
    def sib_mask(self) -> Tensor:
        """[B, N+1, N+1, N+1] true at the sibling parts (h, m, s) a sentence can use."""
        size = self.arc_scores.shape[1]
        word = self.word_mask
        inside = word.index_fill(1, _zero(word), True)
        order = _order_mask(size, word.device)
        return order & inside[:, :, None, None] & word[:, None, :, None] & word[:, None, None, :]

    @cached_property
    def sib_scores(self) -> Tensor:
        """[B, N+1, N+1, N+1] sibling scores, 0 off the usable parts."""
        return self._sib_input.masked_fill(~self.sib_mask, 0.0)

    # ---- exact inference --------------------------------------------------------------------
    def _require_exact(self, what: str) -> None:
        if self.inference != "exact":
            raise NotImplementedError(
                f"exact {what} is intractable under mean-field inference; use inference='exact'"
            )

    def _log_z(self, arc_scores: Tensor, sib_scores: Tensor) -> Tensor:
        return _inside(arc_scores, sib_scores, self.lengths, 1, log=True)[:, 0]

    def _log_partition(self) -> Tensor:
        self._require_exact("log_partition")
        return self._log_z(self.arc_scores, self._sib_input)

    def _part_marginals(self) -> SiblingParts:
        if self.inference == "mfvi":
            arc = self._mean_field()
            sib = _adjacent_siblings(arc).masked_fill(~self.sib_mask, 0.0)
            return arc, sib.index_fill(1, _zero(arc), 0.0)  # no ROOT siblings
        potentials = [self.arc_scores, self._sib_input]
        if self.arc_scores.shape[1] == 1:  # no words: log Z = 0 does not depend on anything
            return torch.zeros_like(self.arc_scores), torch.zeros_like(self._sib_input)
        log_z = self.__dict__.get("log_partition")
        if log_z is not None and log_z.requires_grad and torch.is_grad_enabled():
            try:  # reuse the forward pass of log Z, as its graph is still there
                arc, sib = torch.autograd.grad(
                    log_z.sum(), potentials, create_graph=True, retain_graph=True
                )
                return arc, sib
            except RuntimeError:  # a backward pass has freed that graph: recompute below
                pass
        found: list[Tensor] = []

        def log_z_fn(arc_scores: Tensor, sib_scores: Tensor) -> Tensor:
            found.append(self._log_z(arc_scores, sib_scores))
            return found[-1]

        arc, sib = autograd_marginals(log_z_fn, potentials)
        if log_z is None:  # log Z comes free with the marginals
            differentiable = torch.is_grad_enabled() and any(p.requires_grad for p in potentials)
            self.__dict__["log_partition"] = found[0] if differentiable else found[0].detach()
        return arc, sib

    def expected_score(self, part_marginals: SiblingParts) -> Tensor:
        """``<arc_mu, arc_scores> + <sib_mu, sib_scores>`` [B] over the sentence's parts.

        Args:
            part_marginals: (arc [B, N+1, N+1], sib [B, N+1, N+1, N+1]) in this layout.
        """
        arc_mu, sib_mu = part_marginals
        # ROOT siblings cannot occur (single root); -inf scores of parts with mu = 0 add 0
        sib_mask = self.sib_mask.index_fill(1, _zero(sib_mu), False)
        arc = (arc_mu * _finite(self.arc_scores)).masked_fill(~self.arc_mask, 0.0)
        sib = (sib_mu * _finite(self.sib_scores)).masked_fill(~sib_mask, 0.0)
        return arc.sum((1, 2)) + sib.sum((1, 2, 3))

    def _decode(self, arc_scores: Tensor, sib_scores: Tensor, k: int) -> list[Tensor]:
        """The k best trees as heads [B, N+1], read off the gradients of the k best scores."""
        with torch.enable_grad():
            arc = arc_scores.detach().requires_grad_()
            best = _inside(arc, sib_scores.detach(), self.lengths, k, log=False)  # [B, k]
            if not best.requires_grad:  # no words in the whole batch
                return [self.word_mask.long()] * k
            trees: list[Tensor] = []
            for slot in range(k):
                (grad,) = torch.autograd.grad(best[:, slot].sum(), arc, retain_graph=slot < k - 1)
                heads = grad.argmax(-1).masked_fill(~self.word_mask, 0)  # [B, N+1]
                if trees:  # a sentence with fewer than k trees repeats its last one
                    heads = torch.where(best[:, slot, None].isfinite(), heads, trees[-1])
                trees.append(heads)
        return trees

    def _argmax(self) -> Tensor:
        if self.inference == "mfvi":  # first-order Eisner on log q: no sibling scores
            log_q = self.marginals.detach().log().masked_fill(~self.arc_mask, 0.0)
            return self._decode(log_q, log_q.new_zeros(self._sib_input.shape), 1)[0]
        return self._decode(self.arc_scores, self._sib_input, 1)[0]

    def topk(self, k: int) -> list[Tensor]:
        """The ``k`` best trees, best first, each heads [B, N+1]. O(B N^3 k^2 log k).

        Under mean-field inference, as for ``argmax``, the trees are the ``k`` best of the
        first-order surrogate ``sum_d log q(head of d)`` (k-best Eisner on the MFVI marginals), so
        that the first of them is ``argmax``.
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if self.inference == "mfvi":  # first-order k-best Eisner: O(B N^3 k log k)
            log_q = self.marginals.detach().log().masked_fill(~self.arc_mask, NEG)
            return eisner.kbest(log_q.clamp_min(NEG), self.lengths, False, k)
        return self._decode(self.arc_scores, self._sib_input, k)

    def sample(self, k: int) -> list[Tensor]:
        """``k`` exact samples, each heads [B, N+1].

        Draws the head of word 1, 2, ... in turn from its marginal given the heads drawn so far,
        conditioning by setting the other heads' arc scores to -inf: n marginal computations on
        a batch of B k' sentences, O(B k n^4) in all, with k' <= k bounded so that the
        replicated sibling scores stay near ``SAMPLE_BUDGET`` elements.
        """
        self._require_exact("sample")
        batch, size = self.arc_scores.shape[:2]
        chunk = max(1, SAMPLE_BUDGET // (batch * size**3 or 1))
        draws: list[Tensor] = []
        for start in range(0, k, chunk):
            draws += self._sample_chunk(min(chunk, k - start))
        return draws

    def _sample_chunk(self, k: int) -> list[Tensor]:
        batch, size = self.arc_scores.shape[:2]
        arc = self.arc_scores.detach().repeat(k, 1, 1)  # [k*B, N+1, N+1]
        sib = self.sib_scores.detach().repeat(k, 1, 1, 1)  # [k*B, N+1, N+1, N+1]
        lengths = self.lengths.repeat(k)  # [k*B]
        idx = torch.arange(size, device=arc.device)
        heads = []
        for d in range(1, size):
            probs = SiblingDependencyCRF(arc, sib, lengths).marginals[:, d].clamp(min=0)
            active = lengths >= d  # [k*B]
            probs = torch.where(active[:, None], probs, (idx == 0).to(probs))  # [k*B, N+1]
            head = torch.multinomial(probs, 1)[:, 0].masked_fill(~active, 0)  # [k*B]
            heads.append(head)
            row = arc[:, d].masked_fill(idx != head[:, None], float("-inf"))  # [k*B, N+1]
            arc = torch.cat([arc[:, :d], row[:, None], arc[:, d + 1 :]], 1)
        out = torch.stack([torch.zeros_like(lengths), *heads], 1)  # [k*B, N+1]
        return list(out.view(k, batch, size).unbind(0))

    # ---- mean field ----------------------------------------------------------------------
    def _mean_field(self) -> Tensor:
        """Mean-field head distributions q [B, N+1, N+1] (rows of words sum to 1)."""
        row = self.word_mask[:, :, None]  # [B, N+1, 1]
        # rows without any head (ROOT, padding) get uniform logits and are zeroed afterwards
        unary = self.arc_scores.masked_fill(~self.arc_mask & row, float("-inf"))  # [B, D, H]
        sib = _finite(self.sib_scores).index_fill(1, _zero(unary), 0.0)  # no ROOT siblings
        pair = sib + sib.transpose(2, 3)  # [B, H, D, S]: only the closer-first order is nonzero
        q = torch.softmax(unary, -1) * row  # [B, D, H]
        for _ in range(self.mfvi_iters):
            message = torch.einsum("bhds,bsh->bdh", pair, q)  # [B, D, H]
            q = torch.softmax(unary + message, -1) * row
        return q

    # ---- scoring and the rest ----------------------------------------------------------------
    def score(self, heads: Tensor) -> Tensor:
        """Score [B] of trees given as heads [B, N+1] (index 0 and padding ignored).

        ROOT's sibling terms count too, so a tree with several root children is scored by the
        same rules (it has probability 0 under this single-root model).
        """
        size = self.arc_scores.shape[1]
        heads = heads.to(self.arc_scores.device).long().masked_fill(~self.word_mask, 0)
        arc = self.arc_scores.gather(-1, heads.clamp(0, size - 1)[:, :, None])[:, :, 0]  # [B, D]
        idx = torch.arange(size, device=heads.device)
        one_hot = (heads[:, :, None] == idx) & self.word_mask[:, :, None]  # [B, D, H]
        pairs = _adjacent_siblings(one_hot.to(self.arc_scores.dtype)) > 0  # [B, H, M, S]
        sib = torch.where(pairs, self._sib_input, 0.0)
        return arc.masked_fill(~self.word_mask, 0.0).sum(-1) + sib.sum((1, 2, 3))

    def cross_entropy(self, other: SiblingDependencyCRF) -> Tensor:
        self._require_exact("cross_entropy")
        other._require_exact("cross_entropy")
        return super().cross_entropy(other)

    def kl(self, other: SiblingDependencyCRF) -> Tensor:
        self._require_exact("kl")
        other._require_exact("kl")
        return super().kl(other)

    def tempered(self, temperature: float) -> SiblingDependencyCRF:
        return SiblingDependencyCRF(
            self.arc_scores / temperature,
            self._sib_input / temperature,
            self.lengths,
            self.inference,
            self.mfvi_iters,
        )


def _zero(like: Tensor) -> Tensor:
    """LongTensor [1] holding index 0 (ROOT), on ``like``'s device."""
    return torch.zeros(1, dtype=torch.long, device=like.device)
