"""Attachment scores against hand-computed values."""

from __future__ import annotations

import pytest
import torch

from structkd.data.punct import is_punctuation, non_punct_mask
from structkd.metrics.attachment import AttachmentScore

WORDS = ["She", "reads", "books", "."]
GOLD_HEADS = [2, 0, 2, 2]
GOLD_RELS = ["nsubj", "root", "obj", "punct"]
# token 3 gets the wrong head, token 1 the wrong relation, the period is wrong too but masked
PRED_HEADS = [2, 0, 1, 3]
PRED_RELS = ["obj", "root", "obj", "punct"]


def test_is_punctuation() -> None:
    assert non_punct_mask(["Hello", ",", "world", "!?", "C++", "--", "«", ""]) == [
        True,
        False,
        True,
        False,
        True,
        False,
        False,
        True,
    ]
    assert is_punctuation("...") and not is_punctuation("a.")
    assert non_punct_mask(["$", "."], upos=["SYM", "PUNCT"]) == [True, False]
    with pytest.raises(ValueError, match="1 POS tags for 2 words"):
        non_punct_mask(["a", "b"], upos=["X"])


def test_hand_computed_with_punctuation_masked() -> None:
    metric = AttachmentScore()
    metric.update(GOLD_HEADS, PRED_HEADS, GOLD_RELS, PRED_RELS, mask=non_punct_mask(WORDS))
    result = metric.compute()
    assert result["tokens"] == 3 and result["sentences"] == 1
    assert result["uas"] == pytest.approx(200 / 3)
    assert result["las"] == pytest.approx(100 / 3)
    assert result["ucm"] == 0.0 and result["lcm"] == 0.0
    assert result["per_relation"] == {
        "nsubj": {"las": 0.0, "uas": 100.0, "count": 1},
        "obj": {"las": 0.0, "uas": 0.0, "count": 1},
        "root": {"las": 100.0, "uas": 100.0, "count": 1},
    }


def test_without_mask_punctuation_counts() -> None:
    metric = AttachmentScore()
    metric.update(GOLD_HEADS, PRED_HEADS, GOLD_RELS, PRED_RELS)
    assert metric.compute()["uas"] == 50.0
    assert metric.compute()["per_relation"]["punct"] == {"las": 0.0, "uas": 0.0, "count": 1}


def test_complete_match_and_merge() -> None:
    perfect = AttachmentScore()
    perfect.update(torch.tensor([2, 0]), torch.tensor([2, 0]), ["nsubj", "root"], ["nsubj", "root"])
    # right heads but one wrong relation: counts for UCM, not for LCM
    half = AttachmentScore()
    half.update([0, 1], [0, 1], ["root", "obj"], ["root", "iobj"])
    merged = perfect.merge(half).compute()
    assert (merged["ucm"], merged["lcm"]) == (100.0, 50.0)
    assert (merged["uas"], merged["las"]) == (100.0, 75.0)
    assert merged["tokens"] == 4 and merged["sentences"] == 2
    together = AttachmentScore()
    together.update([2, 0], [2, 0], ["nsubj", "root"], ["nsubj", "root"])
    together.update([0, 1], [0, 1], ["root", "obj"], ["root", "iobj"])
    assert together.compute() == merged


def test_unlabeled() -> None:
    metric = AttachmentScore(labeled=False)
    metric.update([2, 0, 2], [2, 0, 1], mask=[True, True, False])
    assert metric.compute() == {"uas": 100.0, "ucm": 100.0, "tokens": 2, "sentences": 1}
    with pytest.raises(ValueError, match="takes no relations"):
        metric.update([0], [0], ["root"], ["root"])
    with pytest.raises(ValueError, match="cannot merge"):
        metric.merge(AttachmentScore())


def test_errors_and_empty() -> None:
    metric = AttachmentScore()
    assert metric.compute()["uas"] == 0.0 and metric.compute()["per_relation"] == {}
    with pytest.raises(ValueError, match="needs gold_rels and pred_rels"):
        metric.update([0], [0])
    with pytest.raises(ValueError, match="lengths differ"):
        metric.update([0, 1], [0], ["root", "x"], ["root"])
    with pytest.raises(ValueError, match="lengths differ"):
        metric.update([0], [0], ["root"], ["root"], mask=[True, False])
    with pytest.raises(ValueError, match="relations for"):
        metric.update([0], [0], ["root"], ["root", "x"])
    assert metric.compute()["tokens"] == 0
