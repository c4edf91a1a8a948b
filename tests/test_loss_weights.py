"""The training loss's weights: lambda on labeled sentences, ``distill.unlabeled_weight`` on
unlabeled ones (structkd.train.loop.batch_loss)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import torch

from structkd.config import ConfigError, DistillConfig, RunConfig, check_ranges
from structkd.train import loop

NLL = torch.tensor([2.0, 0.0, 3.0])  # a model gives an unlabeled sentence NLL 0
KD = torch.tensor([1.0, 4.0, 7.0])
LABELED = torch.tensor([True, False, True])


def _loss(lam: float, distill: DistillConfig | None) -> float:
    model: Any = SimpleNamespace(nll=lambda batch, output: NLL)
    distiller: Any = (
        None if distill is None else SimpleNamespace(config=distill, losses=lambda o, b, i: KD)
    )
    batch = SimpleNamespace(labeled=LABELED)
    return float(loop.batch_loss(model, lambda b: None, batch, [0, 1, 2], distiller, lam))


def test_labeled_sentences_mix_kd_and_gold_by_lambda_unlabeled_ones_learn_kd_alone() -> None:
    # (0.25 * 1 + 0.75 * 2) + 4 + (0.25 * 7 + 0.75 * 3), over 3 sentences
    assert _loss(0.25, DistillConfig()) == pytest.approx((1.75 + 4.0 + 4.0) / 3)


@pytest.mark.parametrize("weight", [0.0, 0.3, 2.0])
def test_unlabeled_weight_scales_only_the_unlabeled_sentences(weight: float) -> None:
    assert _loss(0.25, DistillConfig(unlabeled_weight=weight)) == pytest.approx(
        (1.75 + weight * 4.0 + 4.0) / 3
    )


def test_without_a_teacher_the_loss_is_the_mean_gold_nll_of_labeled_sentences() -> None:
    assert _loss(0.0, None) == pytest.approx((2.0 + 3.0) / 2)


def test_a_negative_unlabeled_weight_is_refused() -> None:
    config = RunConfig(distill=DistillConfig(unlabeled_weight=-0.5))
    with pytest.raises(ConfigError, match="distill.unlabeled_weight"):
        check_ranges(config)
