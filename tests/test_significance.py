"""Per-sentence counts and the paired approximate randomization test."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from structkd.data.conll import Sentence
from structkd.lab.significance import (
    corpus_score,
    exact_randomization,
    main,
    paired_randomization,
    read_counts,
    sentence_counts,
    write_counts,
)
from structkd.metrics.span_f1 import SpanF1

# Two sentences: A finds each sentence's one entity, B finds neither (it predicts one wrong).
A = np.array([[1, 1, 1], [1, 1, 1]])
B = np.array([[0, 1, 1], [0, 1, 1]])


def test_corpus_score_is_conlleval_f1_and_attachment() -> None:
    # 3 correct of 4 predicted and 6 gold: P 75, R 50, F1 60 = 2 * 3 / (4 + 6)
    assert corpus_score(np.array([3, 4, 6]), "f1") == pytest.approx(60.0)
    assert corpus_score(np.array([0, 0, 0]), "f1") == 0.0
    assert corpus_score(np.array([8, 6, 10]), "uas") == pytest.approx(80.0)
    assert corpus_score(np.array([8, 6, 10]), "las") == pytest.approx(60.0)
    with pytest.raises(ValueError, match="unknown metric"):
        corpus_score(np.array([1, 1, 1]), "bleu")


def test_hand_computed_exact_p_values() -> None:
    # F1(A) = 100, F1(B) = 0. Swapping one sentence gives 50 - 50 = 0, swapping both gives
    # -100: 2 of the 4 patterns reach |100|, p = 1/2.
    assert exact_randomization([A], [B]) == pytest.approx(0.5)
    # three sentences, A right on all, B on the first only
    a3 = np.array([[1, 1, 1], [1, 1, 1], [1, 1, 1]])
    b3 = np.array([[1, 1, 1], [0, 1, 1], [0, 1, 1]])
    # F1(A) = 100, F1(B) = 100/3, d = 66.7. Sentence 1 is the same for both (swaps do nothing):
    # of the 4 patterns of sentences 2 and 3, none and both-swapped reach |d| (d' = +-66.7), one
    # swapped gives d' = 0: p = 2/4 for all 8 patterns.
    assert exact_randomization([a3], [b3]) == pytest.approx(0.5)
    # two seeds of the first pair, 16 patterns: per seed the difference is 100, 0 or -100 with
    # probabilities 1/4, 1/2, 1/4; the mean reaches |100| only for (100, 100) and (-100, -100).
    assert exact_randomization([A, A], [B, B]) == pytest.approx(2 / 16)


def test_identical_systems_give_p_one() -> None:
    rng = np.random.default_rng(3)
    gold = rng.integers(0, 4, size=(50, 1))
    pred = rng.integers(0, 4, size=(50, 1))
    a = np.hstack([np.minimum(gold, pred), pred, gold])
    assert paired_randomization([a], [a.copy()], samples=500) == 1.0
    assert exact_randomization([a[:8]], [a[:8]]) == 1.0


def _systems(n: int, good: float, bad: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Counts of two taggers on n one-entity sentences, right with probability good / bad."""
    rng = np.random.default_rng(seed)
    a = (rng.random(n) < good).astype(int)
    b = (rng.random(n) < bad).astype(int)
    ones = np.ones(n, dtype=int)
    return np.stack([a, ones, ones], 1), np.stack([b, ones, ones], 1)


def test_a_clearly_better_system_gets_a_small_p_and_the_test_is_symmetric() -> None:
    a, b = _systems(400, 0.9, 0.6, seed=1)
    p = paired_randomization([a], [b], samples=2000, seed=5)
    assert p == pytest.approx(1 / 2001)  # no relabeling gets near a 30-point difference
    assert paired_randomization([b], [a], samples=2000, seed=5) == p
    # two systems of the same quality: a large p
    c, d = _systems(400, 0.7, 0.7, seed=2)
    assert paired_randomization([c], [d], samples=2000, seed=5) > 0.05


def test_approximation_matches_the_exact_test_and_is_deterministic() -> None:
    a, b = _systems(10, 0.8, 0.5, seed=4)
    exact = exact_randomization([a], [b])
    samples = 10_000
    p = paired_randomization([a], [b], samples=samples, seed=11)
    assert abs(p - exact) < 4 * math.sqrt(exact * (1 - exact) / samples) + 2 / samples
    assert paired_randomization([a], [b], samples=samples, seed=11) == p
    # the chunk size changes how draws are grouped, not which ones are drawn
    assert paired_randomization([a], [b], samples=samples, seed=11, chunk=10_000) == p
    assert paired_randomization([a], [b], samples=samples, seed=12) != p


def test_mismatched_inputs_are_rejected() -> None:
    with pytest.raises(ValueError, match="same number"):
        paired_randomization([A], [B, B])
    with pytest.raises(ValueError, match="same shape"):
        paired_randomization([A], [B[:1]])


def test_sentence_counts_sum_to_the_corpus_f1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import structkd.tasks.ner as ner

    sentences = [
        Sentence(["John", "lives", "in", "New", "York"], ["S-PER", "O", "O", "B-LOC", "E-LOC"]),
        Sentence(["Hello"], ["O"]),
        Sentence(["Acme", "Corp", "sued"], ["B-ORG", "E-ORG", "O"]),
    ]
    predicted = [["S-PER", "O", "O", "S-LOC", "O"], ["S-MISC"], ["B-ORG", "E-ORG", "O"]]
    # a stand-in model: only the task's predict touches it
    monkeypatch.setattr(ner.NERTask, "predict", lambda self, model, words: predicted)
    record = sentence_counts("ner", object(), sentences)
    assert record["counts"] == [1, 2, 2, 0, 1, 0, 1, 1, 1]
    whole = SpanF1()
    for sentence, tags in zip(sentences, predicted):
        whole.update(sentence.tags, tags)
    assert record["score"] == pytest.approx(whole.compute()["f1"])
    assert record["metric"] == "f1" and record["sentences"] == 3
    write_counts(record, tmp_path / "c.json")
    again, array = read_counts(tmp_path / "c.json")
    assert again == record and array.shape == (3, 3)
    assert "\n" not in (tmp_path / "c.json").read_text().rstrip("\n")  # compact: one line


def test_module_main_writes_the_counts_of_a_trained_model(tmp_path: Path) -> None:
    from structkd.config import load_config
    from structkd.train.run import run

    fixtures = Path(__file__).parent / "fixtures" / "pipeline"
    config = load_config(
        Path(__file__).parents[1] / "configs/ner/teacher-crf.yaml",
        ["model.encoder.lstm_hidden=8", "model.encoder.word_dim=8", "model.encoder.char_filters=0"],
        {
            "data.train": [str(fixtures / "train.conll")],
            "data.dev": str(fixtures / "dev.conll"),
            "data.test": str(fixtures / "test.conll"),
            "train.max_epochs": 1,
            "train.progress": False,
            "out": str(tmp_path / "run"),
        },
    )
    metrics = run(config)
    assert (
        main([str(tmp_path / "run/model"), str(fixtures / "test.conll"), str(tmp_path / "c.json")])
        == 0
    )
    record = json.loads((tmp_path / "c.json").read_text())
    assert record["score"] == pytest.approx(metrics["test"]["f1"])


def test_dependency_counts_sum_to_the_attachment_scores(monkeypatch: pytest.MonkeyPatch) -> None:
    import structkd.tasks.dep as dep
    from structkd.data.conllu import DepSentence
    from structkd.data.punct import punct_mask
    from structkd.metrics.attachment import AttachmentScore

    sentences = [
        DepSentence(
            ["She", "runs", "."], ["PRON", "VERB", "PUNCT"], [2, 0, 2], ["nsubj", "root", "punct"]
        ),
        DepSentence(["Go", "!"], ["VERB", "PUNCT"], [0, 1], ["root", "punct"]),
    ]
    # first: word heads right, one relation wrong, the full stop's head wrong (scored only with
    # punctuation); second: heads right, the root's relation wrong
    predicted = [([2, 0, 1], ["obj", "root", "punct"]), ([0, 1], ["nsubj", "punct"])]
    monkeypatch.setattr(dep.DepTask, "predict", lambda self, model, words: predicted)
    expected = {False: [2, 1, 2, 1, 0, 1], True: [2, 1, 3, 2, 1, 2]}  # heads, labeled, words
    for include in (False, True):
        record = sentence_counts("dep", object(), sentences, include_punct=include)
        assert record["counts"] == expected[include]
        whole = AttachmentScore(labeled=True)
        for sentence, (heads, rels) in zip(sentences, predicted):
            whole.update(sentence.heads, heads, sentence.rels, rels, punct_mask(sentence, include))
        assert record["metric"] == "las" and record["score"] == pytest.approx(
            whole.compute()["las"]
        )
        counts = np.asarray(record["counts"]).reshape(-1, 3)
        assert corpus_score(counts.sum(0), "uas") == pytest.approx(whole.compute()["uas"])
