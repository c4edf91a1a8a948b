"""Head selection: every word picks its head independently (Zhang, Cheng and Lapata, EACL 2017).

Also home of the arc layout shared by the dependency structures: ``arc_scores[b, d, h]`` is the
score of word ``d`` (1..n) taking head ``h`` (0 = ROOT, ``h != d``); row 0 and the diagonal are
never used, and for a sentence of ``n`` words the valid block is ``[0..n] x [0..n]``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from structkd.structures.base import Structure, check_finite, lengths_or_full


def arc_mask(lengths: Tensor, size: int) -> Tensor:
    """BoolTensor [B, L, L], true where ``d`` in 1..n, ``h`` in 0..n and ``h != d``."""
    pos = torch.arange(size, device=lengths.device)
    dep = (pos[None, :] >= 1) & (pos[None, :] <= lengths[:, None])  # [B, L]
    head = pos[None, :] <= lengths[:, None]  # [B, L]
    return dep[:, :, None] & head[:, None, :] & (pos[:, None] != pos[None, :])


def arc_weight(lengths: Tensor, size: int, dtype: torch.dtype) -> Tensor:
    """``arc_mask`` as 0/1 numbers of ``dtype`` [B, L, L], built in that dtype (converting the
    boolean mask takes longer than building this on the CPU)."""
    pos = torch.arange(size, device=lengths.device)
    head = (pos[None, :] <= lengths[:, None]).to(dtype)  # [B, L]
    dep = head * (pos[None, :] >= 1)  # [B, L]
    off_diagonal = (pos[:, None] != pos[None, :]).to(dtype)  # [L, L]
    return dep[:, :, None] * head[:, None, :] * off_diagonal


def block_mask(lengths: Tensor, size: int) -> Tensor:
    """BoolTensor [B, L, L], true on a sentence's block ``[0..n] x [0..n]`` (checked for NaN)."""
    inside = torch.arange(size, device=lengths.device)[None, :] <= lengths[:, None]  # [B, L]
    return inside[:, :, None] & inside[:, None, :]


def check_arc_scores(arc_scores: Tensor, lengths: Tensor | None) -> tuple[Tensor, bool]:
    """Validates [B, L, L] arc scores; returns (lengths LongTensor [B], whether every entry of
    ``arc_scores`` is finite, padding included)."""
    if arc_scores.dim() != 3 or arc_scores.shape[1] != arc_scores.shape[2]:
        raise ValueError(f"arc_scores must be [B, N+1, N+1], got {list(arc_scores.shape)}")
    batch, size, _ = arc_scores.shape
    lengths = lengths_or_full(lengths, batch, size - 1, arc_scores.device)
    # the sum is NaN whenever an element is (and sometimes from inf - inf): a cheap first test,
    # the masked check only when it fires; a finite sum means finite entries
    total = float(arc_scores.detach().sum())
    if math.isnan(total):
        check_finite("arc_scores", arc_scores, block_mask(lengths, size))
    return lengths, math.isfinite(total)


def score_heads(arc_scores: Tensor, heads: Tensor, lengths: Tensor) -> Tensor:
    """``sum_{d=1..n} arc_scores[b, d, heads[b, d]]`` [B]; heads LongTensor [B, L]."""
    size = arc_scores.shape[-1]
    picked = arc_scores.gather(-1, heads.clamp(0, size - 1)[:, :, None]).squeeze(-1)  # [B, L]
    pos = torch.arange(size, device=lengths.device)
    words = (pos[None, :] >= 1) & (pos[None, :] <= lengths[:, None])  # [B, L]
    return (picked * words).sum(-1)


class HeadSelection(Structure):
    """Each word picks its head by its own softmax: ``P(y) = prod_d softmax_h(s[d, h])[y_d]``.

    The output is a head per word, not necessarily a tree (cycles are allowed); parts are arcs, so
    the arc marginals are the per-word softmax over heads ``0..n`` except the word itself. Every
    operation is O(B N^2) except ``topk`` (O(B N^2 k log k)).

    Args:
        arc_scores: [B, N+1, N+1] scores, ``arc_scores[b, d, h]`` for word ``d`` taking head
            ``h`` (0 = ROOT). Row 0, the diagonal and padding are ignored (may hold anything
            but NaN inside a sentence's block).
        lengths: LongTensor [B] word counts ``n``; None = all N.

    Compact form of a structure: heads LongTensor [B, N+1] (index 0 and padding ignored).
    """

    def __init__(self, arc_scores: Tensor, lengths: Tensor | None = None) -> None:
        self.lengths, _ = check_arc_scores(arc_scores, lengths)
        self.arc_mask = arc_mask(self.lengths, arc_scores.shape[-1])
        self.arc_scores = arc_scores.masked_fill(~self.arc_mask, 0.0)  # [B, L, L]
        # rows without any valid head (ROOT row, padding) become all-zero, never all -inf
        self.word_mask = self.arc_mask.any(-1)  # [B, L]
        self._logits = arc_scores.masked_fill(~self.arc_mask, -torch.inf).masked_fill(
            ~self.word_mask[:, :, None], 0.0
        )  # [B, L, L]

    def _log_partition(self) -> Tensor:
        return (torch.logsumexp(self._logits, -1) * self.word_mask).sum(-1)

    def _part_marginals(self) -> Tensor:
        return torch.softmax(self._logits, -1) * self.arc_mask

    def expected_score(self, part_marginals: Tensor) -> Tensor:
        """``sum_{d,h} mu[b,d,h] * arc_scores[b,d,h]`` over valid arcs [B]; mu [B, L, L]."""
        return (part_marginals * self.arc_scores * self.arc_mask).sum((1, 2))

    def _argmax(self) -> Tensor:
        return self._logits.argmax(-1).masked_fill(~self.word_mask, 0)

    def score(self, y: Tensor) -> Tensor:
        """Sum of the chosen arcs' scores [B]; y: heads LongTensor [B, L]."""
        return score_heads(self.arc_scores, y, self.lengths)

    def sample(self, k: int) -> list[Tensor]:
        """``k`` samples, each heads LongTensor [B, L]."""
        probs = torch.softmax(self._logits.detach(), -1).masked_fill(~self.word_mask[..., None], 1)
        batch, size, _ = probs.shape
        draws = torch.multinomial(probs.reshape(-1, size), k, replacement=True)  # [B*L, k]
        draws = draws.view(batch, size, k).masked_fill(~self.word_mask[..., None], 0)
        return [draws[:, :, i] for i in range(k)]

    def topk(self, k: int) -> list[Tensor]:
        """The ``k`` most probable head assignments, best first, each LongTensor [B, L].

        Words are merged left to right into a beam of the ``k`` best partial assignments; a word
        only needs its own ``k`` best heads, so the beam is exact. A sentence with fewer than
        ``k`` assignments repeats its last one.
        """
        logits = self._logits.detach()
        batch, size, _ = logits.shape
        width = min(k, size)
        cand, cand_head = logits.topk(width, -1)  # [B, L, width], sorted
        # words without a choice (ROOT row, padding) keep one candidate, head 0, score 0
        single = torch.full_like(cand, -torch.inf)
        single[..., 0] = 0.0
        cand = torch.where(self.word_mask[..., None], cand, single)
        cand_head = cand_head.masked_fill(~self.word_mask[..., None], 0)
        beam = logits.new_zeros(batch, 1)  # [B, beam]
        pointers = []
        for d in range(size):
            total = (beam[:, :, None] + cand[:, d, None, :]).reshape(batch, -1)  # [B, beam*w]
            beam, flat = total.topk(min(k, total.shape[1]), -1)
            pointers.append((flat // width, flat % width))
        # backtrack every final beam entry; surplus (-inf) entries repeat the last finite one
        last = (torch.isfinite(beam).sum(-1) - 1).clamp(0, beam.shape[1] - 1)  # [B]
        entry = torch.minimum(torch.arange(k, device=logits.device)[None, :], last[:, None])
        heads = torch.zeros(batch, size, k, dtype=torch.long, device=logits.device)
        rows = torch.arange(batch, device=logits.device)[:, None]
        for d in range(size - 1, -1, -1):
            prev, choice = pointers[d]
            heads[:, d] = cand_head[rows, d, choice.gather(1, entry)]
            entry = prev.gather(1, entry)
        return [heads[:, :, i] for i in range(k)]

    def tempered(self, temperature: float) -> HeadSelection:
        return HeadSelection(self.arc_scores / temperature, self.lengths)
