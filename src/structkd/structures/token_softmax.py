"""Independent softmax per token (the MaxEnt tagger's output structure)."""

from __future__ import annotations

import torch
from torch import Tensor

from structkd.structures.base import Structure, check_finite, lengths_or_full, sequence_mask
from structkd.structures.linear_chain import LinearChainCRF


class TokenSoftmax(Structure):
    """A tagger that picks each token's tag independently: ``P(y) = prod_i softmax(logits_i)[y_i]``.

    Parts are (position, tag) pairs, so the marginals are the per-token softmax. Every
    operation is O(B N L) except ``topk``, which runs the k-best Viterbi of a chain with zero
    transitions.

    Args:
        logits: [B, N, L] per-token tag scores.
        lengths: LongTensor [B] of sentence lengths; None = all N. Padding may hold any value.

    Compact form of a structure: LongTensor [B, N] of tag ids (padding ignored).
    """

    def __init__(self, logits: Tensor, lengths: Tensor | None = None) -> None:
        if logits.dim() != 3:
            raise ValueError(f"logits must be [B, N, L], got {list(logits.shape)}")
        batch, max_len, _ = logits.shape
        self.lengths = lengths_or_full(lengths, batch, max_len, logits.device)
        self.mask = sequence_mask(self.lengths, max_len)  # [B, N]
        check_finite("logits", logits, self.mask[:, :, None])
        # Padding is replaced so that junk (even NaN) never reaches a reduction.
        self.logits = logits.masked_fill(~self.mask[:, :, None], 0.0)

    @property
    def log_potentials(self) -> Tensor:
        """[B, N, L] masked logits (0 on padding)."""
        return self.logits

    def _log_normalizers(self) -> Tensor:
        return torch.logsumexp(self.logits, dim=-1)  # [B, N]

    def _log_partition(self) -> Tensor:
        return (self._log_normalizers() * self.mask).sum(-1)

    def _part_marginals(self) -> Tensor:
        return torch.softmax(self.logits, dim=-1) * self.mask[:, :, None]

    def expected_score(self, part_marginals: Tensor) -> Tensor:
        """``sum_{i,l} mu[b,i,l] * logits[b,i,l]`` [B]; mu: [B, N, L]."""
        return (part_marginals * self.logits * self.mask[:, :, None]).sum((1, 2))

    def _argmax(self) -> Tensor:
        return self.logits.argmax(-1).masked_fill(~self.mask, 0)

    def score(self, y: Tensor) -> Tensor:
        """Sum of the chosen tags' logits [B]; y: LongTensor [B, N]."""
        picked = self.logits.gather(-1, y.clamp(0, self.logits.shape[-1] - 1)[:, :, None])
        return (picked.squeeze(-1) * self.mask).sum(-1)

    def sample(self, k: int) -> list[Tensor]:
        """``k`` samples, each LongTensor [B, N]."""
        probs = torch.softmax(self.logits.detach(), dim=-1)
        batch, max_len, n_tags = probs.shape
        draws = torch.multinomial(probs.reshape(-1, n_tags), k, replacement=True)  # [B*N, k]
        draws = draws.reshape(batch, max_len, k).masked_fill(~self.mask[:, :, None], 0)
        return [draws[:, :, i] for i in range(k)]

    def topk(self, k: int) -> list[Tensor]:
        """The ``k`` most probable tag sequences (see ``LinearChainCRF.topk``)."""
        n_tags = self.logits.shape[-1]
        zeros = self.logits.new_zeros(n_tags, n_tags)
        return LinearChainCRF(self.logits.detach(), zeros, self.lengths).topk(k)

    def tempered(self, temperature: float) -> TokenSoftmax:
        return TokenSoftmax(self.logits / temperature, self.lengths)
