"""Top-1, Top-K and Top-WK (Kim & Rush, 2016): the student's negative log-likelihood of the
teacher's ``k`` best outputs as pseudo-gold, weighted equally (Top-K; k = 1: the teacher's best
output) or by the teacher's probabilities renormalized over the list (Top-WK).

Targets per sentence: the outputs (tag ids [K, n], or heads and relation ids [K, n+1]) and their
weights [K]; a sentence with fewer than K outputs repeats its last at weight 0. Cost: the
teacher's k-best decoder once per sentence (cached), K student NLLs per batch.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from structkd.kd.methods.base import KDMethod, KDPair, Layout, Stats


class KBestKD(KDMethod):
    """Pseudo-gold from the teacher's k-best list (``k`` from the config unless fixed)."""

    needs = "kbest"
    distributions = 1  # only the weights are a distribution; the outputs are ids

    def __init__(self, name: str, weighted: bool, k: int | None = None) -> None:
        self.name = name  # type: ignore[misc]  # three registered variants of one method
        self.weighted = weighted
        self.k = k

    def layout(self, pair: KDPair) -> Layout | None:
        return pair.kbest_layout()

    def targets(self, pair: KDPair, source: Any, words: list[list[str]], config: Any) -> Any:
        return pair.kbest(source, self.k or config.k, self.weighted)

    def loss(self, pair: KDPair, targets: Any, output: Any, config: Any, stats: Stats) -> Tensor:
        return pair.kbest_loss(targets, output, stats)


TOP1 = KBestKD("top1", weighted=False, k=1)
TOPK = KBestKD("topk", weighted=False)
TOPWK = KBestKD("topwk", weighted=True)
