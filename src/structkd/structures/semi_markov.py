"""Semi-Markov CRF over labeled spans: flat named-entity recognition as a set of spans.

A structure of a sentence of n tokens is a set of non-overlapping labeled spans ``(i, j, r)``
(tokens i..j inclusive, entity type r); tokens no span covers are outside (O) and score 0, so
``score(y) = sum_{(i, j, r) in y} span_scores[i, j, r]``. Equivalently, the sentence is cut into
units, each unit being one O token or one labeled span, which gives the semi-Markov dynamic program
of Sarawagi & Cohen (NeurIPS 2004) with a zero-order (label-independent) transition. This is the
span-based NER teacher of Structural KD (Wang et al., ACL 2021, Sec. 3.4, case 4).
"""

from __future__ import annotations

from functools import cached_property
from math import inf

import torch
from torch import Tensor

from structkd.structures.base import Structure, check_finite, lengths_or_full, sequence_mask

Spans = list[tuple[int, int, int]]


def _log_prefix_sums(span_scores: Tensor) -> Tensor:
    """Semi-Markov forward pass in log space, O(N^2 R).

    ``alpha[j]`` is the log of the summed weight of every span set on tokens ``0..j-1``:
    ``alpha[0] = 0`` and
    ``alpha[j+1] = logaddexp(alpha[j], logsumexp_{i<=j, r} alpha[i] + s[i, j, r])``
    (token j is O, or a span ends at j). Only entries with ``i <= j`` are read, so no masking by
    ``-inf`` is needed and double backward stays finite.

    Args:
        span_scores: [B, N, N, R] with padding already zeroed.

    Returns:
        [B, N + 1] log prefix weights; entries past a sentence's end are not meaningful.
    """
    batch = span_scores.shape[0]
    alpha = [span_scores.new_zeros(batch)]
    for j in range(span_scores.shape[1]):
        prev = torch.stack(alpha, 1)  # [B, j+1]
        ending = prev[:, :, None] + span_scores[:, : j + 1, j, :]  # [B, j+1, R]
        alpha.append(torch.logaddexp(alpha[j], ending.flatten(1).logsumexp(-1)))
    return torch.stack(alpha, 1)  # [B, N+1]


class SemiMarkovCRF(Structure):
    """Distribution over sets of non-overlapping labeled spans (flat NER).

    ``P(y) = exp(sum_{(i, j, r) in y} span_scores[i, j, r]) / Z``. The scores are relative to
    "no entity": an O token scores 0. Parts are labeled spans, so ``marginals[b, i, j, r]`` is the
    probability that span (i, j, r) belongs to the set.

    Complexity: ``log_partition``, ``marginals`` and ``argmax`` cost O(B N^2 R) (a Python loop over
    the N end positions, vectorized over the batch); ``topk(k)`` costs O(B N^2 R k log k) and
    ``sample(k)`` O(B k N^2 R).

    Args:
        span_scores: [B, N, N, R]; ``span_scores[b, i, j, r]`` scores tokens i..j (0-based,
            inclusive) as an entity of type r. Entries with ``i > j`` are ignored and so is
            padding (positions >= length), which may hold anything. A NaN anywhere in a
            sentence's n x n block raises ValueError: the ignored lower triangle of a real
            sentence comes from the same scorer, so a NaN there still signals a broken model.
        lengths: LongTensor [B] of sentence lengths; None = all N.

    Compact form of a structure: a list with one entry per sentence, each a list of
    ``(start, end, type)`` tuples of Python ints sorted by start.
    """

    def __init__(self, span_scores: Tensor, lengths: Tensor | None = None) -> None:
        if span_scores.dim() != 4 or span_scores.shape[1] != span_scores.shape[2]:
            raise ValueError(f"span_scores must be [B, N, N, R], got {list(span_scores.shape)}")
        batch, max_len, _, _ = span_scores.shape
        self.lengths = lengths_or_full(lengths, batch, max_len, span_scores.device)
        tokens = sequence_mask(self.lengths, max_len)  # [B, N]
        block = tokens[:, :, None] & tokens[:, None, :]  # [B, N, N]
        check_finite("span_scores", span_scores, block[..., None])
        upper = torch.ones(max_len, max_len, dtype=torch.bool, device=span_scores.device).triu()
        self.span_mask = block & upper  # [B, N, N]: i <= j < n
        # Junk (even NaN) is replaced before any reduction, so it cannot leak into gradients.
        self.span_scores = span_scores.masked_fill(~self.span_mask[..., None], 0.0)

    @property
    def n_types(self) -> int:
        """Number of entity types R."""
        return self.span_scores.shape[-1]

    # ---- dynamic program --------------------------------------------------------------------
    @cached_property
    def log_alpha(self) -> Tensor:
        """[B, N + 1] log summed weight of the span sets on the prefix ``0..j-1`` (alpha[0] = 0).

        Entries with ``j > length`` continue the recursion over zeroed padding and carry no meaning.
        """
        return _log_prefix_sums(self.span_scores)

    @cached_property
    def log_beta(self) -> Tensor:
        """[B, N + 1] log summed weight of all span sets on the suffix ``j..n-1`` (``beta[n] = 0``).

        Entries with ``j > length`` are 0. Computed as the forward pass of each sentence read
        backwards, which needs no ``-inf`` masking even in a padded batch.
        """
        batch, max_len = self.span_scores.shape[:2]
        pos = torch.arange(max_len, device=self.lengths.device)
        # Involution reversing tokens 0..n-1 of each sentence; padding maps to itself.
        rev = torch.where(pos < self.lengths[:, None], self.lengths[:, None] - 1 - pos, pos)
        rows = torch.arange(batch, device=pos.device)[:, None, None]
        # Reversed span (p, q) is the original span (rev[q], rev[p]).
        flipped = self.span_scores[rows, rev[:, :, None], rev[:, None, :]]  # [B, N, N, R]
        alpha_rev = _log_prefix_sums(flipped.transpose(1, 2))  # [B, N+1]
        ends = torch.arange(max_len + 1, device=pos.device)
        # beta[j] = alpha_rev[n - j]; past the end the index clamps to alpha_rev[0] = 0.
        return alpha_rev.gather(1, (self.lengths[:, None] - ends).clamp(min=0))

    def _log_partition(self) -> Tensor:
        return self.log_alpha.gather(1, self.lengths[:, None]).squeeze(1)

    def _part_marginals(self) -> Tensor:
        """[B, N, N, R] ``P((i, j, r) in y) = exp(alpha[i] + s[i, j, r] + beta[j + 1] - log Z)``."""
        log_mu = (
            self.log_alpha[:, :-1, None, None]  # [B, N, 1, 1]
            + self.span_scores  # [B, N, N, R]
            + self.log_beta[:, None, 1:, None]  # [B, 1, N, 1]
            - self.log_partition[:, None, None, None]
        )
        return torch.where(self.span_mask[..., None], log_mu.exp(), torch.zeros_like(log_mu))

    def expected_score(self, part_marginals: Tensor) -> Tensor:
        """``sum_{i<=j<n, r} mu[b, i, j, r] * span_scores[b, i, j, r]`` [B]; mu: [B, N, N, R]."""
        mu = torch.where(self.span_mask[..., None], part_marginals, 0.0)
        return (mu * self.span_scores).sum((1, 2, 3))

    def score(self, y: list[Spans]) -> Tensor:
        """Sum of the chosen spans' scores [B]; y: per sentence, sorted (start, end, type) tuples.

        Raises:
            ValueError: if a span lies outside its sentence, has an unknown type, or overlaps
                (or precedes) the span before it.
        """
        if len(y) != len(self.lengths):
            raise ValueError(f"expected {len(self.lengths)} span lists, got {len(y)}")
        index: list[tuple[int, int, int, int]] = []
        for b, (spans, n) in enumerate(zip(y, self.lengths.tolist())):
            prev_end = -1
            for start, end, label in spans:
                if not (prev_end < start <= end < n and 0 <= label < self.n_types):
                    raise ValueError(
                        f"sentence {b}: span {(start, end, label)} is outside [0, {n}), has an "
                        f"unknown type, or is not after the previous span (sorted, disjoint)"
                    )
                index.append((b, start, end, label))
                prev_end = end
        out = self.span_scores.new_zeros(len(y))
        if not index:
            return out
        b_idx, s_idx, e_idx, r_idx = torch.tensor(index, device=out.device).unbind(1)
        return out.index_add(0, b_idx, self.span_scores[b_idx, s_idx, e_idx, r_idx])

    def tempered(self, temperature: float) -> SemiMarkovCRF:
        return SemiMarkovCRF(self.span_scores / temperature, self.lengths)

    # ---- decoding and sampling ---------------------------------------------------------------
    def _argmax(self) -> list[Spans]:
        return self.topk(1)[0]

    def topk(self, k: int) -> list[list[Spans]]:
        """The ``k`` highest-scoring span sets, best first (k-best semi-Markov Viterbi).

        ``delta[j]`` keeps the k best scores of span sets on the prefix ``0..j-1``; each step
        merges the k candidates "token j is O" with the ``(j+1) R k`` candidates "span (i, j, r)
        after the rank-m prefix of length i". Distinct (unit, predecessor rank) choices are distinct
        span sets, so the list holds no duplicates. Span sets with a ``-inf`` score count as
        absent; a sentence with fewer than ``k`` span sets repeats its worst one.

        Returns:
            A list of k compact structures (see the class docstring).
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        scores = self.span_scores.detach()
        batch, max_len, _, n_types = scores.shape
        # Only the empty prefix exists at position 0; the other k-1 ranks are placeholders.
        delta = [torch.cat([scores.new_zeros(batch, 1), scores.new_full((batch, k - 1), -inf)], 1)]
        pointers = []
        for j in range(max_len):
            prev = torch.stack(delta, 1)  # [B, j+1, k]
            spans = prev[:, :, None, :] + scores[:, : j + 1, j, :, None]  # [B, j+1, R, k]
            candidates = torch.cat([delta[j], spans.flatten(1)], 1)  # [B, k + (j+1) R k]
            best, arg = candidates.topk(k, dim=1)  # [B, k]
            delta.append(best)
            pointers.append(arg)
        rows = torch.arange(batch, device=scores.device)
        final = torch.stack(delta, 1)[rows, self.lengths]  # [B, k]
        n_found = torch.isfinite(final).sum(1).tolist()
        # One host transfer for all backpointers: [N][B][k].
        pointer_list = torch.stack(pointers).tolist() if pointers else []
        out: list[list[Spans]] = [[] for _ in range(k)]
        for b, n in enumerate(self.lengths.tolist()):
            for rank in range(k):
                out[rank].append(
                    self._backtrack(pointer_list, b, n, min(rank, n_found[b] - 1), k, n_types)
                )
        return out

    @staticmethod
    def _backtrack(
        pointers: list[list[list[int]]], b: int, n: int, rank: int, k: int, n_types: int
    ) -> Spans:
        """Follows k-best backpointers (layout of ``topk``'s candidates) from (n, rank) to 0."""
        spans: Spans = []
        j = n
        while j > 0:
            option = pointers[j - 1][b][rank]
            if option < k:  # token j-1 is O; the prefix keeps its rank `option`
                j, rank = j - 1, option
                continue
            start, rest = divmod(option - k, n_types * k)
            label, rank = divmod(rest, k)
            spans.append((start, j - 1, label))
            j = start
        spans.reverse()
        return spans

    def sample(self, k: int) -> list[list[Spans]]:
        """``k`` exact samples by backward sampling, each a compact structure.

        From the sentence end, the unit ending at token j (O, or span (i, j, r)) is drawn with
        probability ``exp(alpha[j] - alpha[j+1])`` (O) or
        ``exp(alpha[i] + s[i, j, r] - alpha[j+1])`` (span), then sampling continues before it.
        All k samples of all sentences move together.
        """
        scores = self.span_scores.detach()
        batch, max_len, _, n_types = scores.shape
        alpha = self.log_alpha.detach()
        # Row j lists the units ending at token j: index 0 = O, 1 + i R + r = span (i, j, r).
        span_logits = (alpha[:, :-1, None, None] + scores).masked_fill(
            ~self.span_mask[..., None], -inf
        )  # [B, N(i), N(j), R]
        logits = torch.cat(
            [alpha[:, :-1, None], span_logits.transpose(1, 2).reshape(batch, max_len, -1)], 2
        )  # [B, N, 1 + N R]
        pos = self.lengths[:, None].expand(batch, k)  # [B, k] tokens not yet assigned
        ends, choices = [], []
        for _ in range(max_len):
            active = pos > 0  # [B, k]
            if not bool(active.any()):
                break
            end = (pos - 1).clamp(min=0)  # [B, k]
            rows = logits.gather(1, end[..., None].expand(-1, -1, logits.shape[-1]))  # [B, k, W]
            # Gumbel-max draw: much cheaper than torch.multinomial over many short rows.
            uniform = torch.rand_like(rows).clamp_(min=torch.finfo(rows.dtype).tiny)
            choice = (rows - (-uniform.log()).log()).argmax(-1)  # [B, k]
            choice = choice.masked_fill(~active, -1)
            ends.append(end)
            choices.append(choice)
            first = torch.where(
                choice > 0, torch.div(choice - 1, n_types, rounding_mode="floor"), end
            )
            pos = torch.where(active, first, pos)
        end_list = torch.stack(ends, 0).tolist() if ends else []  # [S][B][k]
        choice_list = torch.stack(choices, 0).tolist() if choices else []
        out: list[list[Spans]] = [[] for _ in range(k)]
        for s in range(k):
            for b in range(batch):
                units = [(c[b][s] - 1, e[b][s]) for e, c in zip(end_list, choice_list)]
                spans = [(u // n_types, end, u % n_types) for u, end in reversed(units) if u >= 0]
                out[s].append(spans)
        return out
