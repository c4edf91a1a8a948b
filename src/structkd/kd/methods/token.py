"""Token KD (Hinton et al., 2015): per-token KL between ``softmax(local scores / T)`` of teacher
and student, ignoring structure (a CRF's emissions, a parser's per-word head softmax, times its
relation softmax for a sequence-labeling student). Scaled by T^2. Targets: [n, K] per sentence.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from structkd.kd.methods.base import KDMethod, KDPair, Layout, Stats


class TokenKD(KDMethod):
    """Token KD from the teacher's local distributions."""

    name = "token"
    needs = "local"

    def layout(self, pair: KDPair) -> Layout | None:
        return pair.local_layout()

    def targets(self, pair: KDPair, source: Any, words: list[list[str]], config: Any) -> Any:
        return pair.local(source, config.temperature)

    def loss(self, pair: KDPair, targets: Any, output: Any, config: Any, stats: Stats) -> Tensor:
        return pair.local_loss(targets, output, config.temperature, stats)
