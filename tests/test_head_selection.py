"""HeadSelection edge cases (its conformance to brute force: tests/test_conformance.py)."""

from __future__ import annotations

import torch

from structkd.structures.head_selection import HeadSelection


def test_argmax_may_be_a_cycle() -> None:
    """Words choose independently: two words preferring each other form a cycle."""
    scores = torch.full((1, 3, 3), -5.0)
    scores[0, 1, 2] = scores[0, 2, 1] = 5.0
    assert HeadSelection(scores).argmax[0, 1:].tolist() == [2, 1]


def test_topk_repeats_last_when_fewer_structures() -> None:
    """A one-word sentence has a single assignment (head = ROOT): every entry repeats it."""
    scores = torch.randn(2, 4, 4)
    kbest = HeadSelection(scores, torch.tensor([1, 3])).topk(4)
    assert all(y[0, 1] == 0 for y in kbest)
    assert len({tuple(y[1, 1:].tolist()) for y in kbest}) == 4


def test_empty_sentence() -> None:
    dist = HeadSelection(torch.randn(2, 3, 3), torch.tensor([0, 2]))
    assert dist.log_partition[0] == 0
    assert dist.marginals[0].abs().sum() == 0
