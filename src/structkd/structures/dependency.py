"""First-order dependency trees: a CRF over projective or non-projective trees."""

from __future__ import annotations

from functools import cached_property

import torch
from torch import Tensor

from structkd.structures import eisner, matrix_tree
from structkd.structures.base import Structure
from structkd.structures.eisner import NEG, EisnerChart
from structkd.structures.head_selection import arc_weight, check_arc_scores, score_heads


class DependencyCRF(Structure):
    """Tree CRF: ``P(y) = exp(sum_{(h -> d) in y} s(h -> d)) / Z`` over dependency trees.

    Parts are arcs, so the marginals are arc marginals in the layout of the scores.

    * ``projective=True``: Eisner's inside algorithm, vectorized over the spans of each width, and
      a hand-written outside pass for the marginals (see ``eisner``). O(B N^3) time, N Python
      steps. argmax by Eisner in the max semiring, exact k-best Eisner, exact sampling top-down
      through the chart.
    * ``projective=False``: matrix-tree theorem (Koo et al., EMNLP 2007; Smith and Smith,
      EMNLP 2007) with closed-form marginals, in float32 for well-conditioned float32
      sentences and in float64 otherwise (see ``matrix_tree``), O(B N^3).
      argmax by Chu-Liu/Edmonds, exact sampling by the chain rule over words. No k-best.

    ``multiroot=False`` (the default) allows exactly one word to attach to ROOT, as in most
    treebanks; ``multiroot=True`` allows several.

    Args:
        arc_scores: [B, N+1, N+1], ``arc_scores[b, d, h]`` the score of word ``d`` (1..n) taking
            head ``h`` (0 = ROOT, ``h != d``). Row 0, the diagonal and padding are ignored (no NaN
            inside a sentence's block ``[0..n] x [0..n]``); ``-inf`` forbids an arc.
        lengths: LongTensor [B] word counts ``n``; None = all N. An empty sentence has log Z = 0.
        projective: restrict to projective trees.
        multiroot: allow several words to attach to ROOT.

    Compact form of a tree: heads LongTensor [B, N+1] (index 0 and padding ignored).
    """

    def __init__(
        self,
        arc_scores: Tensor,
        lengths: Tensor | None = None,
        projective: bool = True,
        multiroot: bool = False,
    ) -> None:
        self.lengths, finite = check_arc_scores(arc_scores, lengths)
        # [B, L, L], 1 on valid arcs
        self._arc_weight = arc_weight(self.lengths, arc_scores.shape[-1], arc_scores.dtype)
        # finite scores are masked by a product, which on the CPU takes a fifth of where()'s
        # time; where() keeps -inf (forbidden arcs) and anything in the padding out of the sum
        if finite:
            self.arc_scores = arc_scores * self._arc_weight  # [B, L, L]
        else:
            self.arc_scores = torch.where(self.arc_mask, arc_scores, 0.0)
        self._finite = finite
        self.projective = projective
        self.multiroot = multiroot

    @cached_property
    def arc_mask(self) -> Tensor:
        """BoolTensor [B, L, L]: the valid arcs (``head_selection.arc_mask``)."""
        return self._arc_weight > 0

    @cached_property
    def _scores(self) -> Tensor:
        """[B, L, L] scores for inference: ``NEG`` on invalid and forbidden (-inf) arcs."""
        if self._finite:  # 0 + NEG off the mask, x + 0 on it: exact
            return self.arc_scores + self._arc_weight.mul(-NEG).add_(NEG)
        return torch.where(self.arc_mask, self.arc_scores, NEG).clamp_min(NEG)

    @cached_property
    def _chart(self) -> EisnerChart:
        with torch.no_grad():
            return eisner.inside(
                self._scores.detach(), self.lengths, self.multiroot, eisner.logsumexp_weights
            )

    @cached_property
    def _matrix_tree(self) -> tuple[Tensor, Tensor]:
        return matrix_tree.log_partition_and_marginals(self._scores, self.lengths, self.multiroot)

    def _log_partition(self) -> Tensor:
        if self.projective:
            return eisner.LogPartition.apply(self._scores, self._chart)
        return self._matrix_tree[0]

    def _part_marginals(self) -> Tensor:
        if self.projective:
            marginals = eisner.ArcMarginals.apply(self._scores, self._chart)
        else:
            marginals = self._matrix_tree[1]
        return marginals * self._arc_weight  # the routes' marginals are finite

    def expected_score(self, part_marginals: Tensor) -> Tensor:
        """``sum_{d,h} mu[b,d,h] * arc_scores[b,d,h]`` over valid arcs [B]; mu [B, L, L]."""
        return (part_marginals * self.arc_scores * self._arc_weight).sum((1, 2))

    def _argmax(self) -> Tensor:
        scores = self._scores.detach()
        if not self.projective:
            return matrix_tree.maximum_spanning_tree(scores, self.lengths, self.multiroot)
        with torch.no_grad():
            return eisner.best_trees(scores, self.lengths, self.multiroot)

    def score(self, y: Tensor) -> Tensor:
        """Sum of the tree's arc scores [B]; y: heads LongTensor [B, L]."""
        return score_heads(self.arc_scores, y, self.lengths)

    def sample(self, k: int) -> list[Tensor]:
        """``k`` exact samples, each heads LongTensor [B, L]."""
        if self.projective:
            draws = eisner.sample(self._chart, k)
        else:
            draws = matrix_tree.sample(self._scores.detach(), self.lengths, self.multiroot, k)
        return list(draws.unbind(0))

    def topk(self, k: int) -> list[Tensor]:
        """The ``k`` best projective trees, best first (k-best Eisner), each LongTensor [B, L].

        Raises:
            NotImplementedError: for non-projective trees.
        """
        if not self.projective:
            raise NotImplementedError("k-best non-projective trees are not tractable here")
        return eisner.kbest(self._scores.detach(), self.lengths, self.multiroot, k)

    def tempered(self, temperature: float) -> DependencyCRF:
        return DependencyCRF(
            self.arc_scores / temperature, self.lengths, self.projective, self.multiroot
        )
