"""The batched seqlabel decoder against the per-sentence numpy one (its oracle)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from structkd.data.trees import is_tree
from structkd.models.seqlabel_decode import (
    _greedy_heads,
    batch_label_arc_scores,
    decode_batch,
    decode_scores,
    label_arc_scores,
)
from structkd.structures.relative_labels import format_label

OFFSETS = (-9, -3, -2, -1, 1, 2, 3, 9)  # +-9 point outside every test sentence


def random_vocab(rng: np.random.Generator, labeled: bool) -> list[str]:
    rels: tuple[str | None, ...] = ("a", "b") if labeled else (None,)
    vocab = [format_label(None, r) for r in rels] + [
        format_label(o, r) for o in OFFSETS for r in rels
    ]
    vocab = [label for label in vocab if rng.random() < 0.7] or [format_label(1, rels[0])]
    junk = ["junk", "+0@a", "-x", "ROOT@"]
    return [*vocab, *junk[: int(rng.integers(0, 3))]]


def random_batch(
    rng: np.random.Generator, vocab: list[str], ties: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, N, K] log-probs with -inf entries, junk (NaN, +inf, huge) in padding, and lengths."""
    batch, size = int(rng.integers(1, 5)), int(rng.integers(0, 8))
    lengths = torch.tensor(rng.integers(0, size + 1, size=batch))
    if ties:  # few distinct values: equal label scores and equal arc sums
        scores = rng.integers(-2, 1, size=(batch, size, len(vocab))).astype(np.float64)
    else:
        scores = rng.normal(size=(batch, size, len(vocab))) * rng.choice([0.1, 3.0, 40.0])
    scores[rng.random(scores.shape) < 0.25] = -np.inf
    padding = np.arange(size)[None, :] >= lengths.numpy()[:, None]  # [B, N]
    junk = rng.choice([np.nan, np.inf, -np.inf, 1e300, 0.0], size=scores.shape)
    scores = np.where(padding[..., None], junk, scores)
    dtype = torch.float32 if rng.random() < 0.5 else torch.float64
    return torch.tensor(scores, dtype=dtype), lengths


@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), labeled=st.booleans(), ties=st.booleans())
def test_batch_equals_per_sentence(seed: int, labeled: bool, ties: bool) -> None:
    rng = np.random.default_rng(seed)
    vocab = random_vocab(rng, labeled)
    log_probs, lengths = random_batch(rng, vocab, ties)
    arc, best = batch_label_arc_scores(log_probs, vocab, lengths)
    size = log_probs.shape[1]
    assert arc.shape == best.shape == (len(lengths), size + 1, size + 1)
    assert arc.dtype == torch.float64
    trees = decode_batch(log_probs, vocab, lengths)
    for b, n in enumerate(lengths.tolist()):
        expected_arc, expected_best = label_arc_scores(log_probs[b, :n], vocab)
        torch.testing.assert_close(arc[b, : n + 1, : n + 1], torch.from_numpy(expected_arc))
        assert best[b, : n + 1, : n + 1].tolist() == expected_best.tolist()
        assert (arc[b, n + 1 :] == -math.inf).all() and (arc[b, :, n + 1 :] == -math.inf).all()
        assert (best[b, n + 1 :] == -1).all() and (best[b, :, n + 1 :] == -1).all()
        assert trees[b] == decode_scores(log_probs[b, :n], vocab)
        assert is_tree(trees[b][0]) and len(trees[b][0]) == n
        assert (trees[b][1] is None) == (not labeled)


def test_by_hand_ties_and_labels_outside_the_sentence() -> None:
    vocab = ["ROOT@root", "+1@a", "+1@b", "-1@c", "+5@d", "junk"]
    log_probs = torch.tensor([[
        [-1.0, -2.0, -2.0, -9.0, 5.0, 7.0],  # +5 and junk carry no arc, +1@a and +1@b tie
        [-0.5, -3.0, -3.0, -1.0, -1.0, 0.0],  # word 2 of 2: +1 points past the end
    ]]).log_softmax(-1)
    arc, best = batch_label_arc_scores(log_probs, vocab)
    lp = log_probs[0].double()
    assert best[0].tolist() == [[-1, -1, -1], [0, -1, 1], [0, 3, -1]]  # tie -> lowest index
    assert arc[0, 1, 2].item() == pytest.approx(math.log(2 * math.exp(lp[0, 1].item())))
    assert decode_batch(log_probs, vocab) == [([2, 0], ["a", "root"])]
    unlabeled = ["ROOT", "+1", "+2", "-1", "+5", "junk"]
    assert decode_batch(log_probs, unlabeled) == [decode_scores(log_probs[0], unlabeled)]
    assert decode_batch(log_probs, unlabeled)[0][1] is None


def test_greedy_heads_flags_trees_only() -> None:
    def arc_of(heads: list[int]) -> torch.Tensor:
        arc = torch.full((len(heads) + 1, len(heads) + 1), -1.0, dtype=torch.float64)
        arc[torch.arange(1, len(heads) + 1), torch.tensor(heads)] = 0.0
        return arc
    cases = {(2, 0, 2): True, (2, 3, 1): False, (0, 0, 2): False, (2, 1, 0): False}
    arcs = torch.stack([arc_of(list(heads)) for heads in cases])
    heads, ok = _greedy_heads(arcs, torch.ones(len(cases), 3, dtype=torch.bool))
    assert heads.tolist() == [list(h) for h in cases] and ok.tolist() == list(cases.values())
    # A forbidden best arc is no tree, and padding words are ignored.
    arcs[0, 1, 2] = -math.inf
    heads, ok = _greedy_heads(arcs[:1], torch.tensor([[True, True, True]]))
    assert not ok[0]
    short = arc_of([0, 0, 0])
    short[1, 0] = 0.5
    assert _greedy_heads(short[None], torch.tensor([[True, False, False]]))[1].tolist() == [True]


def test_errors() -> None:
    vocab = ["ROOT", "+1", "-1"]
    bad = torch.zeros(2, 3, 3)
    bad[1, 2, 0] = math.nan
    assert len(decode_batch(bad, vocab, torch.tensor([3, 2]))) == 2  # NaN in padding is fine
    with pytest.raises(ValueError, match="NaN"):
        decode_batch(bad, vocab)
    with pytest.raises(ValueError, match="lengths"):
        decode_batch(bad, vocab, torch.tensor([4, 1]))
    with pytest.raises(ValueError, match="log_probs"):
        batch_label_arc_scores(bad, vocab[:2])
    with pytest.raises(ValueError, match="log_probs"):
        batch_label_arc_scores(bad[0], vocab)
