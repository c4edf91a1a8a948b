"""Span F1: hand-computed cases and seqeval (conlleval semantics) on real corpora."""

from __future__ import annotations

import random
import warnings

import pytest
from seqeval.metrics import classification_report, f1_score, precision_score, recall_score

from structkd.data.conll import read_conll
from structkd.metrics.span_f1 import SpanF1, prf
from structkd.structures.tags import convert

from shared_data import shared_file


def scores(gold: list[list[str]], pred: list[list[str]]) -> dict[str, object]:
    metric = SpanF1()
    for g, p in zip(gold, pred):
        metric.update(g, p)
    return metric.compute()


class TestHandComputed:
    def test_one_right_one_wrong_type(self) -> None:
        result = scores([["B-PER", "I-PER", "O", "B-LOC"]], [["B-PER", "I-PER", "O", "B-ORG"]])
        assert (result["f1"], result["precision"], result["recall"]) == (50.0, 50.0, 50.0)
        assert (result["correct"], result["predicted"], result["gold"]) == (1, 2, 2)
        per_type = result["per_type"]
        assert isinstance(per_type, dict) and sorted(per_type) == ["LOC", "ORG", "PER"]
        assert per_type["PER"]["f1"] == 100.0
        assert per_type["LOC"] == {
            "f1": 0.0,
            "precision": 0.0,
            "recall": 0.0,
            "correct": 0,
            "predicted": 0,
            "gold": 1,
        }
        assert per_type["ORG"]["predicted"] == 1 and per_type["ORG"]["gold"] == 0

    def test_precision_recall_differ(self) -> None:
        # gold: 3 entities; predicted: 2, of which 1 right -> P 50, R 33.3, F 40
        result = scores([["B-PER", "O", "B-LOC", "B-LOC"]], [["B-PER", "O", "B-LOC", "I-LOC"]])
        assert result["precision"] == pytest.approx(50.0)
        assert result["recall"] == pytest.approx(100 / 3)
        assert result["f1"] == pytest.approx(40.0)

    def test_ill_formed_i_starts(self) -> None:
        gold = [["B-PER", "I-PER", "O"]]
        # an I- at the start is an entity of its own (conlleval), so this one is right...
        assert scores(gold, [["I-PER", "I-PER", "O"]])["f1"] == 100.0
        # ...and this one has the wrong start: (1, 2) instead of (0, 2)
        assert scores(gold, [["O", "I-PER", "O"]])["correct"] == 0
        # an I- of another type splits the entity
        assert scores(gold, [["B-PER", "I-LOC", "O"]])["predicted"] == 2

    def test_iob1_and_bio_agree_on_the_same_entities(self) -> None:
        iob1 = [["I-PER", "I-PER", "B-PER", "O", "I-LOC"]]
        bio = [["B-PER", "I-PER", "B-PER", "O", "B-LOC"]]
        assert scores(iob1, bio)["f1"] == 100.0
        # B- in IOB1 splits adjacent entities: one 3-token entity is not two entities
        assert scores([["I-PER", "I-PER", "I-PER"]], [["I-PER", "I-PER", "B-PER"]])["f1"] == 0.0

    def test_bioes(self) -> None:
        gold = [["B-PER", "E-PER", "S-LOC", "O"]]
        assert scores(gold, [["B-PER", "I-PER", "B-LOC", "O"]])["f1"] == 100.0
        assert scores(gold, [["S-PER", "S-PER", "S-LOC", "O"]])["correct"] == 1

    def test_empty(self) -> None:
        assert SpanF1().compute() == {
            "f1": 0.0,
            "precision": 0.0,
            "recall": 0.0,
            "correct": 0,
            "predicted": 0,
            "gold": 0,
            "per_type": {},
        }
        # no entities predicted: precision 0 by convention (conlleval)
        assert scores([["B-PER"]], [["O"]])["precision"] == 0.0
        assert prf(0, 0, 0) == {"f1": 0.0, "precision": 0.0, "recall": 0.0}

    def test_spans_interface_and_errors(self) -> None:
        metric = SpanF1()
        metric.update_spans([(0, 2, "PER"), (3, 4, "LOC")], [(3, 4, "LOC")])
        assert (metric.compute()["precision"], metric.compute()["recall"]) == (100.0, 50.0)
        with pytest.raises(ValueError, match="twice"):
            metric.update_spans([(0, 1, "PER"), (0, 1, "PER")], [])
        with pytest.raises(ValueError, match="2 gold tags but 1 predicted"):
            metric.update(["O", "O"], ["O"])
        with pytest.raises(ValueError, match="'S-PER' is not a BIO tag"):
            SpanF1("BIO").update(["S-PER"], ["O"])
        with pytest.raises(ValueError, match="malformed tag 'I-'"):
            metric.update(["I-"], ["O"])

    def test_merge_and_reset(self) -> None:
        gold = [["B-PER", "O"], ["B-LOC", "I-LOC"], ["O", "B-ORG"]]
        pred = [["B-PER", "O"], ["B-LOC", "O"], ["B-ORG", "O"]]
        first, second = SpanF1(), SpanF1()
        for g, p in zip(gold[:1], pred[:1]):
            first.update(g, p)
        for g, p in zip(gold[1:], pred[1:]):
            second.update(g, p)
        assert first.merge(second).compute() == scores(gold, pred)
        first.reset()
        assert first.compute() == SpanF1().compute()


def corrupt(corpus: list[list[str]], seed: int) -> list[list[str]]:
    """Deterministic prediction errors of the kinds taggers make, ill-formed ones included."""
    rng = random.Random(seed)
    types = ["PER", "LOC", "ORG", "MISC"]
    out = []
    for tags in corpus:
        pred = list(tags)
        for i, tag in enumerate(tags):
            r = rng.random()
            if r < 0.04:
                pred[i] = "O"  # dropped
            elif r < 0.08 and tag != "O":
                pred[i] = f"{tag[0]}-{rng.choice(types)}"  # wrong type
            elif r < 0.11:
                pred[i] = f"I-{rng.choice(types)}"  # possibly an ill-formed I- start
            elif r < 0.13 and tag != "O":
                pred[i] = ("I-" if tag[0] == "B" else "B-") + tag[2:]  # boundary shift
        out.append(pred)
    return out


@pytest.mark.parametrize(
    "relative, scheme",
    [
        ("ner/conll2003-en/dev.txt", "BIO"),
        ("ner/conll2002-nl/test.txt", "BIO"),
        ("ner/conll2003-en/dev.txt", "BIOES"),
    ],
)
def test_matches_seqeval_on_real_corpora(relative: str, scheme: str) -> None:
    gold = [s.tags or [] for s in read_conll(shared_file(relative))]
    pred = corrupt(gold, seed=13)
    if scheme == "BIOES":
        gold = [convert(t, "BIO", "BIOES") for t in gold]
        pred = [convert(t, "BIO", "BIOES") for t in pred]
    result = scores(gold, pred)
    assert 50 < result["f1"] < 95  # the corruption is neither trivial nor total
    assert result["f1"] == pytest.approx(100 * f1_score(gold, pred), abs=1e-9)
    assert result["precision"] == pytest.approx(100 * precision_score(gold, pred), abs=1e-9)
    assert result["recall"] == pytest.approx(100 * recall_score(gold, pred), abs=1e-9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = classification_report(gold, pred, output_dict=True)
    per_type = result["per_type"]
    assert isinstance(per_type, dict)
    for type_, expected in report.items():
        if type_.endswith(" avg"):
            continue
        assert per_type[type_]["f1"] == pytest.approx(100 * expected["f1-score"], abs=1e-9)
        assert per_type[type_]["precision"] == pytest.approx(100 * expected["precision"], abs=1e-9)
        assert per_type[type_]["gold"] == expected["support"]
