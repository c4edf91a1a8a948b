"""Posterior KD (Wang et al., 2020): per-token KL between the teacher's marginals projected on
the student's tokens and the student's marginals. Targets: [n, L] per sentence."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from structkd.kd.methods.base import KDMethod, KDPair, Layout, Stats


class PosteriorKD(KDMethod):
    """Posterior KD from the teacher's per-token marginals."""

    name = "posterior"
    needs = "posterior"

    def layout(self, pair: KDPair) -> Layout | None:
        return pair.posterior_layout()

    def targets(self, pair: KDPair, source: Any, words: list[list[str]], config: Any) -> Any:
        return pair.posterior(source, words)

    def loss(self, pair: KDPair, targets: Any, output: Any, config: Any, stats: Stats) -> Tensor:
        return pair.posterior_loss(targets, output)
