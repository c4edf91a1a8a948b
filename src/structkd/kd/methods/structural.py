"""Structural KD (Wang et al., ACL 2021, eq. 5): the cross-entropy between the teacher's and the
student's distributions over whole structures,
``log Z_student - sum_u P_teacher(u) score_student(u)`` over the student's parts u.

Its targets are the teacher's marginals of the student's parts (``KDPair.project``: a registered
projection of ``structkd.kd.projections``, tempered globally or locally), averaged over the
teachers with ``average`` binding; the trainer caches them, or a smaller form that rebuilds
them exactly (``structkd.kd.stored``). Cost per batch: one forward-backward pass of the student's
structure for ``log Z``.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from structkd.kd.methods.base import KDMethod, KDPair, Stats


class StructuralKD(KDMethod):
    """Structural KD from projected teacher marginals."""

    name = "structural"
    needs = "project"
    projects = True  # targets come from ``KDPair.project`` on words, not from a teacher output

    def targets(self, pair: KDPair, source: Any, words: list[list[str]], config: Any) -> Any:
        return pair.project(words, config.temperature, config.temperature_mode)

    def loss(self, pair: KDPair, targets: Any, output: Any, config: Any, stats: Stats) -> Tensor:
        return pair.structural_loss(targets, output, config.temperature, stats)
