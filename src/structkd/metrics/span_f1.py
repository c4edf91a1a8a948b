"""Entity-level precision, recall and F1 exactly as ``conlleval`` computes them.

An entity counts as correct only if the prediction has an entity with the same first token, last
token and type. Scores are micro-averaged over entities (each entity weighs the same, whatever its
type) and given in percent, like ``conlleval``. Entities come from
:func:`structkd.structures.tags.to_spans`, which applies conlleval's boundary rules to ill-formed
tags.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from structkd.structures.tags import Span, check_scheme, to_spans


def prf(correct: int, predicted: int, gold: int) -> dict[str, float]:
    """Precision, recall and F1 in percent, each 0.0 when its denominator is 0 (as conlleval)."""
    precision = 100.0 * correct / predicted if predicted else 0.0
    recall = 100.0 * correct / gold if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"f1": f1, "precision": precision, "recall": recall}


class SpanF1:
    """A mergeable accumulator of entity counts: update per sentence, merge across workers.

    Example::

        metric = SpanF1()
        for gold, pred in zip(gold_tags, predicted_tags):
            metric.update(gold, pred)
        metric.compute()["f1"]

    Args:
        scheme: if given, tags outside this scheme (``E-``/``S-`` in BIO) raise ValueError;
            decoding is the same for every scheme.

    Attributes:
        correct, predicted, gold: Counter of entities per type (matched, predicted, in gold).
    """

    def __init__(self, scheme: str | None = None) -> None:
        self.scheme = None if scheme is None else check_scheme(scheme)
        self.correct: Counter[str] = Counter()
        self.predicted: Counter[str] = Counter()
        self.gold: Counter[str] = Counter()

    def update(self, gold_tags: Sequence[str], pred_tags: Sequence[str]) -> None:
        """Adds one sentence given as tags. O(N).

        Raises:
            ValueError: for sequences of different lengths or a malformed tag.
        """
        if len(gold_tags) != len(pred_tags):
            raise ValueError(f"{len(gold_tags)} gold tags but {len(pred_tags)} predicted tags")
        self.update_spans(to_spans(gold_tags, self.scheme), to_spans(pred_tags, self.scheme))

    def update_spans(self, gold_spans: Iterable[Span], pred_spans: Iterable[Span]) -> None:
        """Adds one sentence given as ``(start, end, type)`` spans (any order, any end convention
        as long as both sides use the same).

        Raises:
            ValueError: if a side lists the same span twice.
        """
        gold = _span_set(gold_spans, "gold")
        predicted = _span_set(pred_spans, "predicted")
        self.gold.update(t for _, _, t in gold)
        self.predicted.update(t for _, _, t in predicted)
        self.correct.update(t for _, _, t in gold & predicted)

    def merge(self, other: SpanF1) -> SpanF1:
        """Adds ``other``'s counts to this metric (e.g. from another process); returns self."""
        self.correct.update(other.correct)
        self.predicted.update(other.predicted)
        self.gold.update(other.gold)
        return self

    def reset(self) -> None:
        """Forgets all counts."""
        self.correct.clear()
        self.predicted.clear()
        self.gold.clear()

    def compute(self) -> dict[str, Any]:
        """The scores so far.

        Returns:
            ``{"f1", "precision", "recall"}`` micro-averaged in percent, ``{"correct",
            "predicted", "gold"}`` entity counts, and ``"per_type"``: for each type seen in gold
            or predictions, sorted, the same six keys.
        """
        types = sorted(set(self.gold) | set(self.predicted))
        per_type = {
            t: self._scores(self.correct[t], self.predicted[t], self.gold[t]) for t in types
        }
        total = self._scores(
            sum(self.correct.values()), sum(self.predicted.values()), sum(self.gold.values())
        )
        return {**total, "per_type": per_type}

    @staticmethod
    def _scores(correct: int, predicted: int, gold: int) -> dict[str, Any]:
        return {
            **prf(correct, predicted, gold),
            "correct": correct,
            "predicted": predicted,
            "gold": gold,
        }


def _span_set(spans: Iterable[Span], side: str) -> set[Span]:
    listed = list(spans)
    unique = set(listed)
    if len(unique) != len(listed):
        raise ValueError(f"{side} spans list an entity twice: {sorted(listed)}")
    return unique
