"""Relative-offset sequence labeling: encoding, repairing decoders and the KD label mapping."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from oracle import best_tree_score, tree_array
from structkd.data.conllu import read_conllu, read_malttab
from structkd.data.deplabels import decode_labels, encode_relative
from structkd.data.trees import is_projective, is_tree
from structkd.kd.arc_labels import arc_marginals_to_label_marginals
from structkd.models.seqlabel_decode import decode_scores, label_arc_scores
from structkd.structures.relative_labels import format_label, parse_label

from shared_data import shared_file

FIXTURES = Path(__file__).parent / "fixtures" / "dep"
EWT_DEV = "dep/en_ewt/en_ewt-ud-dev.conllu"  # under shared/data, when present


def test_encoding_scheme() -> None:
    assert encode_relative([2, 0, 2], ["nsubj", "root", "punct"]) == [
        "+1@nsubj", "ROOT@root", "-1@punct"]
    assert encode_relative([3, 3, 0, 3]) == ["+2", "+1", "ROOT", "-1"]
    assert parse_label("-12@obl:tmod") == (-12, "obl:tmod")
    assert parse_label("+3@a@b") == (3, "a@b")
    assert parse_label("ROOT") == (None, None)
    assert format_label(None, "root") == "ROOT@root" and format_label(-2) == "-2"
    for bad in ["", "0", "+0@x", "+1@", "up@x", "ROOT1", "+ 1", "root", "+١"]:
        with pytest.raises(ValueError):
            parse_label(bad)
    for heads in ([1], [0, 3], [-1]):
        with pytest.raises(ValueError):
            encode_relative(heads)


def gold_sentences(labeled: bool = True) -> list[tuple[list[int], list[str] | None]]:
    """The EWT slice (with relations) or the WSJ slice (without)."""
    if labeled:
        sentences = read_conllu(FIXTURES / "en_ewt-dev-slice.conllu")
    else:
        sentences = read_malttab(FIXTURES / "wsj-slice.malttab")
    return [(s.heads, s.rels) for s in sentences]


@pytest.mark.parametrize("labeled", [True, False])
def test_decoders_return_every_gold_tree(labeled: bool) -> None:
    gold = gold_sentences(labeled)
    assert len(gold) == (33 if labeled else 20)
    assert not labeled or sum(not is_projective(heads) for heads, _ in gold) == 3
    vocab = sorted({label for heads, rels in gold for label in encode_relative(heads, rels)})
    for heads, rels in gold:
        labels = encode_relative(heads, rels)
        assert decode_labels(labels) == (heads, rels)
        one_hot = np.full((len(heads), len(vocab)), -30.0)
        one_hot[np.arange(len(heads)), [vocab.index(label) for label in labels]] = 0.0
        assert decode_scores(one_hot, vocab) == (heads, rels)


def test_encode_decode_is_exact_on_full_ewt_dev() -> None:
    for sentence in read_conllu(shared_file(EWT_DEV)):
        labels = encode_relative(sentence.heads, sentence.rels)
        assert decode_labels(labels) == (sentence.heads, sentence.rels)


def test_decode_labels_repairs() -> None:
    # An offset past the end attaches to the nearest word.
    assert decode_labels(["+5", "ROOT"]) == ([2, 0], None)
    # Several roots: the most confident stays, the others attach to it.
    assert decode_labels(["ROOT@a", "ROOT@b", "-1@c"], [0.1, 0.9, 0.5]) == (
        [2, 0, 2], ["a", "b", "c"])
    assert decode_labels(["ROOT", "ROOT"])[0] == [0, 1]
    # No root: the first (most confident) word of the first cycle becomes the root.
    assert decode_labels(["+1", "-1", "-1"])[0] == [0, 1, 2]
    assert decode_labels(["+1", "-1", "-1"], [0.0, 1.0, 0.0])[0] == [2, 0, 2]
    # A malformed label leaves its word unattached; it becomes the root when no ROOT is given.
    assert decode_labels(["junk", "ROOT@root", "+7@x"]) == ([2, 0, 2], ["_", "root", "x"])
    assert decode_labels(["junk", "-1"])[0] == [0, 1]
    # A cycle away from the root: its least confident word attaches to the root word.
    assert decode_labels(["ROOT", "+1", "-1"], [0.0, 0.5, 0.2])[0] == [0, 3, 1]
    assert decode_labels(["+1"]) == ([0], None)
    assert decode_labels([]) == ([], None)
    with pytest.raises(ValueError, match="confidences"):
        decode_labels(["ROOT"], [0.0, 1.0])


label_text = st.one_of(
    st.builds(format_label, st.one_of(st.none(), st.integers(-9, 9).filter(bool)),
              st.one_of(st.none(), st.sampled_from(["nsubj", "obj"]))),
    st.sampled_from(["junk", "+0", "", "@"]),
)


@settings(max_examples=300, deadline=None)
@given(labels=st.lists(label_text, max_size=12), data=st.data())
def test_decode_labels_always_returns_a_tree(labels: list[str], data: st.DataObject) -> None:
    confidences = data.draw(st.one_of(
        st.none(), st.lists(st.floats(-5, 5), min_size=len(labels), max_size=len(labels))))
    heads, rels = decode_labels(labels, confidences)
    assert len(heads) == len(labels) and is_tree(heads)
    assert rels is None or len(rels) == len(labels)


@settings(max_examples=200, deadline=None)
@given(heads=st.integers(1, 9).flatmap(lambda n: st.lists(
    st.integers(0, n), min_size=n, max_size=n)))
def test_decode_labels_keeps_trees_unchanged(heads: list[int]) -> None:
    if is_tree(heads):
        assert decode_labels(encode_relative(heads)) == (heads, None)


VOCAB = ["ROOT@root", "+1@a", "+1@b", "-1@c", "-3@d", "+2@a", "junk"]


def test_label_arc_scores_by_hand() -> None:
    lp = np.log(np.array([
        [0.1, 0.2, 0.3, 0.15, 0.05, 0.15, 0.05],  # word 1: -1, -3 point before the sentence
        [0.4, 0.1, 0.1, 0.2, 0.1, 0.05, 0.05],  # word 2 of 2: +1, +2 point past the end
    ]))
    arc, best = label_arc_scores(lp, VOCAB)
    expected = np.full((3, 3), -np.inf)
    expected[1, 0], expected[1, 2] = math.log(0.1), math.log(0.2 + 0.3)
    expected[2, 0], expected[2, 1] = math.log(0.4), math.log(0.2)
    np.testing.assert_allclose(arc, expected)
    assert best.tolist() == [[-1, -1, -1], [0, -1, 2], [0, 3, -1]]
    # [dep, head] scores are what CLE maximizes: word 2 -> root, word 1 -> word 2.
    assert decode_scores(lp, VOCAB) == ([2, 0], ["b", "root"])
    assert decode_scores(torch.tensor(lp), VOCAB) == ([2, 0], ["b", "root"])
    # Only ROOT labels: one word must take an arc no label reaches, and its relation is "_".
    assert decode_scores(lp[:, :1], VOCAB[:1]) == ([2, 0], ["_", "root"])
    with pytest.raises(ValueError, match="NaN"):
        label_arc_scores(np.full((2, 7), np.nan), VOCAB)


@settings(max_examples=150, deadline=None)
@given(n=st.integers(1, 6), seed=st.integers(0, 2**32 - 1), scale=st.sampled_from([0.1, 3.0]))
def test_decode_scores_is_the_best_tree(n: int, seed: int, scale: float) -> None:
    rng = np.random.default_rng(seed)
    vocab = ["ROOT@root", "ROOT@x"] + [format_label(o, r) for o in (-3, -2, -1, 1, 2, 3)
                                       for r in ("a", "b")]
    keep = rng.random(len(vocab)) < 0.6
    vocab = [label for label, k in zip(vocab, keep) if k]
    if not vocab:
        vocab = ["+1@a"]
    logits = rng.normal(size=(n, len(vocab))) * scale
    logits[rng.random(size=logits.shape) < 0.2] = -np.inf
    heads, rels = decode_scores(logits, vocab)
    assert is_tree(heads) and rels is not None and len(rels) == n
    arc, _ = label_arc_scores(logits, vocab)
    best = best_tree_score(arc, single_root=True)
    if np.isfinite(best):
        assert float(arc[np.arange(1, n + 1), heads].sum()) == pytest.approx(best, abs=1e-9)


def by_definition(arcs: torch.Tensor, rels: torch.Tensor | None, vocab: list[str],
                  rel_vocab: list[str], length: int) -> tuple[torch.Tensor, float]:
    """One sentence, word by word: the label marginals and the mass no label takes."""
    out = torch.zeros(arcs.shape[0] - 1, len(vocab), dtype=torch.float64)
    lost = 0.0
    parsed = [parse_label(label) for label in vocab]
    for d in range(1, length + 1):
        for h in range(length + 1):
            offset = None if h == 0 else h - d
            if offset == 0:
                continue
            for r in range(len(rel_vocab) if rels is not None else 1):
                rel = rel_vocab[r] if rels is not None else None
                mass = float(arcs[d, h]) * (float(rels[d, h, r]) if rels is not None else 1.0)
                if (offset, rel) in parsed:
                    out[d - 1, parsed.index((offset, rel))] = mass
                else:
                    lost += mass
    return out, lost


@pytest.mark.parametrize("labeled", [True, False])
def test_label_marginals_match_the_definition_and_conserve_mass(labeled: bool) -> None:
    gen = torch.Generator().manual_seed(3)
    batch, n = 3, 6
    lengths = torch.tensor([6, 3, 1])
    rel_vocab = ["root", "nsubj", "obj"]
    offsets = [None, -4, -2, -1, 1, 2, 5]
    vocab = [format_label(o, r if labeled else None) for o in offsets
             for r in (rel_vocab[:2] + ["unseen"] if labeled else [None])]
    scores = torch.randn(batch, n + 1, n + 1, generator=gen, dtype=torch.float64)
    scores = scores.masked_fill(torch.eye(n + 1, dtype=torch.bool), -math.inf)
    valid = torch.arange(n + 1)[None, :] <= lengths[:, None]  # [B, N+1]
    arcs = torch.softmax(scores.masked_fill(~valid[:, None, :], -math.inf), -1)
    arcs = arcs.masked_fill(~valid[:, :, None] | ~valid[:, None, :], math.nan)  # junk padding
    rels = torch.softmax(torch.randn(batch, n + 1, n + 1, 3, generator=gen,
                                     dtype=torch.float64), -1) if labeled else None
    if rels is not None:
        rels = rels.masked_fill(~valid[:, :, None, None] | ~valid[:, None, :, None], math.nan)
    marginals, lost = arc_marginals_to_label_marginals(
        arcs, rels, vocab, rel_vocab if labeled else None, lengths)
    assert marginals.shape == (batch, n, len(vocab)) and lost.shape == (batch,)
    for b in range(batch):
        expected, expected_lost = by_definition(
            arcs[b], None if rels is None else rels[b], vocab, rel_vocab, int(lengths[b]))
        torch.testing.assert_close(marginals[b], expected)
        assert float(lost[b]) == pytest.approx(expected_lost, abs=1e-12)
        assert float(marginals[b].sum() + lost[b]) == pytest.approx(float(lengths[b]))
    assert float(lost[0]) > 0.01  # offsets +-3, -5... (and relation obj) are outside
    single, single_lost = arc_marginals_to_label_marginals(
        arcs[0], None if rels is None else rels[0], vocab, rel_vocab if labeled else None)
    torch.testing.assert_close(single, marginals[0])
    torch.testing.assert_close(single_lost, lost[0])


def test_label_marginals_by_hand_and_gradients() -> None:
    arcs = torch.tensor([[0.0, 0.0, 0.0], [0.6, 0.0, 0.4], [0.3, 0.7, 0.0]],
                        requires_grad=True)  # [dep, head]
    marginals, lost = arc_marginals_to_label_marginals(arcs, None, ["ROOT", "+1", "-1"])
    torch.testing.assert_close(marginals, torch.tensor([[0.6, 0.4, 0.0], [0.3, 0.0, 0.7]]))
    assert float(lost.detach()) == 0.0
    marginals, lost = arc_marginals_to_label_marginals(arcs, None, ["ROOT", "+1"])
    assert float(lost.detach()) == pytest.approx(0.7)
    (marginals.sum() * 2).backward()
    assert arcs.grad is not None
    torch.testing.assert_close(arcs.grad, torch.tensor([[0.0, 0, 0], [2, 0, 2], [2, 0, 0]]))
    rels = torch.zeros(3, 3, 2)
    rels[1, 0] = torch.tensor([0.9, 0.1])
    rels[1, 2] = torch.tensor([0.25, 0.75])
    rels[2, 0] = torch.tensor([1.0, 0.0])
    rels[2, 1] = torch.tensor([0.5, 0.5])
    vocab = ["ROOT@root", "+1@nsubj", "-1@nsubj", "ROOT@nsubj"]
    marginals, lost = arc_marginals_to_label_marginals(arcs, rels, vocab, ["root", "nsubj"])
    torch.testing.assert_close(marginals, torch.tensor(
        [[0.54, 0.3, 0.0, 0.06], [0.3, 0.0, 0.35, 0.0]]))
    assert float(lost.detach()) == pytest.approx(0.4 * 0.25 + 0.7 * 0.5)


def test_label_marginals_of_a_gold_tree_are_its_labels() -> None:
    heads, rels = gold_sentences()[19]
    assert not is_projective(heads)
    n = len(heads)
    labels = encode_relative(heads, rels)
    vocab = sorted(set(labels))
    rel_vocab = sorted(set(rels or []))
    arcs = torch.zeros(n + 1, n + 1, dtype=torch.float64)
    rel_probs = torch.zeros(n + 1, n + 1, len(rel_vocab), dtype=torch.float64)
    for d, (h, r) in enumerate(zip(heads, rels or []), start=1):
        arcs[d, h] = 1.0
        rel_probs[d, h, rel_vocab.index(r)] = 1.0
    marginals, lost = arc_marginals_to_label_marginals(arcs, rel_probs, vocab, rel_vocab)
    assert float(lost) == 0.0
    assert [vocab[k] for k in marginals.argmax(-1).tolist()] == labels
    assert float(marginals.sum()) == n


def test_label_marginal_errors() -> None:
    arcs = torch.rand(3, 3)
    rels = torch.rand(3, 3, 2)
    cases = [
        (["ROOT", "ROOT"], None, None),
        (["ROOT", "+1@a"], rels, ["a", "b"]),
        (["ROOT@a"], None, None),
        (["ROOT"], rels, ["a", "b"]),
        (["ROOT@a"], rels, ["a"]),
        (["bad label"], None, None),
    ]
    for vocab, rel_probs, rel_vocab in cases:
        with pytest.raises(ValueError):
            arc_marginals_to_label_marginals(arcs, rel_probs, vocab, rel_vocab)
    with pytest.raises(ValueError, match="N\\+1"):
        arc_marginals_to_label_marginals(torch.rand(2, 3), None, ["ROOT"])


def test_small_trees_round_trip_through_both_decoders() -> None:
    for n in range(1, 5):
        for heads in tree_array(n, True).tolist():
            labels = encode_relative(heads)
            assert decode_labels(labels) == (heads, None)
            vocab = sorted(set(labels))
            scores = np.array([[0.0 if v == label else -9.0 for v in vocab] for label in labels])
            assert decode_scores(scores, vocab) == (heads, None)
