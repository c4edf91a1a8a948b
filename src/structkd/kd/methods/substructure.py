"""Sub-structure score matching (Lin et al., 2022): MSE between the student's scores of its parts
and the teacher's scores of the same parts (and the transition matrices of two CRFs).

Its target is the teacher's output on each batch: the teacher's encoder features are cached,
its head runs per batch (scores are not probabilities, and are as large as the output itself).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from structkd.kd.methods.base import KDMethod, KDPair, Stats


class SubstructureKD(KDMethod):
    """Score matching against the teacher's output on the batch (not cached per sentence)."""

    name = "substructure"
    needs = "scores"

    def targets(self, pair: KDPair, source: Any, words: list[list[str]], config: Any) -> Any:
        return source

    def loss(self, pair: KDPair, targets: Any, output: Any, config: Any, stats: Stats) -> Tensor:
        return pair.scores_loss(targets, output)
