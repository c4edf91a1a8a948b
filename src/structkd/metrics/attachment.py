"""Unlabeled and labeled attachment scores (UAS, LAS) for dependency parsing.

UAS is the share of scored tokens whose predicted head is right; LAS, whose head and relation are
both right. Scored tokens are those the caller's ``mask`` keeps: parsing papers (Chen & Manning
2014; Dozat & Manning 2017; SuPar) exclude punctuation, which ``structkd.data.punct`` decides
(one module for every punctuation rule: treebank tags, UPOS, or the words' characters).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any


def _ints(values: Iterable[Any]) -> list[int]:
    # Accepts lists, numpy arrays and 1-D tensors alike.
    return [int(v) for v in values]


class AttachmentScore:
    """A mergeable accumulator of attachment counts: update per sentence, merge across workers.

    Heads use the CoNLL-U convention (0 = root, words 1..n), though only equality matters.

    Args:
        labeled: whether relations are given (and LAS computed); every update must then pass them.
    """

    def __init__(self, labeled: bool = True) -> None:
        self.labeled = labeled
        self.tokens = 0
        self.correct_heads = 0
        self.correct_labeled = 0
        self.sentences = 0
        self.complete_heads = 0
        self.complete_labeled = 0
        self.rel_tokens: Counter[str] = Counter()
        self.rel_correct_heads: Counter[str] = Counter()
        self.rel_correct_labeled: Counter[str] = Counter()

    def update(
        self,
        gold_heads: Iterable[Any],
        pred_heads: Iterable[Any],
        gold_rels: Sequence[str] | None = None,
        pred_rels: Sequence[str] | None = None,
        mask: Iterable[Any] | None = None,
    ) -> None:
        """Adds one sentence. O(N).

        Args:
            gold_heads, pred_heads: head index per word (ints, or a 1-D integer tensor).
            gold_rels, pred_rels: relation per word; required iff ``labeled``.
            mask: True for words to score (``structkd.data.punct``); None = all words.

        Raises:
            ValueError: for lengths that differ, or relations given or missing against
                ``labeled``.
        """
        gold, pred = _ints(gold_heads), _ints(pred_heads)
        keep = [True] * len(gold) if mask is None else [bool(m) for m in mask]
        if not len(gold) == len(pred) == len(keep):
            raise ValueError(
                f"lengths differ: {len(gold)} gold heads, {len(pred)} predicted, {len(keep)} mask"
            )
        if self.labeled != (gold_rels is not None and pred_rels is not None):
            raise ValueError(
                "a labeled metric needs gold_rels and pred_rels"
                if self.labeled
                else "an unlabeled metric takes no relations"
            )
        g_rels = list(gold_rels) if gold_rels is not None else [""] * len(gold)
        p_rels = list(pred_rels) if pred_rels is not None else [""] * len(gold)
        if not len(g_rels) == len(p_rels) == len(gold):
            raise ValueError(
                f"{len(g_rels)} gold and {len(p_rels)} predicted relations for {len(gold)} words"
            )
        all_heads = all_labeled = True
        for g, p, g_rel, p_rel, k in zip(gold, pred, g_rels, p_rels, keep):
            if not k:
                continue
            head_ok = g == p
            labeled_ok = head_ok and g_rel == p_rel
            self.tokens += 1
            self.correct_heads += head_ok
            self.correct_labeled += labeled_ok
            all_heads &= head_ok
            all_labeled &= labeled_ok
            if self.labeled:
                self.rel_tokens[g_rel] += 1
                self.rel_correct_heads[g_rel] += head_ok
                self.rel_correct_labeled[g_rel] += labeled_ok
        self.sentences += 1
        self.complete_heads += all_heads
        self.complete_labeled += all_labeled

    def merge(self, other: AttachmentScore) -> AttachmentScore:
        """Adds ``other``'s counts to this metric; returns self.

        Raises:
            ValueError: if one metric is labeled and the other is not.
        """
        if other.labeled != self.labeled:
            raise ValueError("cannot merge a labeled and an unlabeled attachment score")
        self.tokens += other.tokens
        self.correct_heads += other.correct_heads
        self.correct_labeled += other.correct_labeled
        self.sentences += other.sentences
        self.complete_heads += other.complete_heads
        self.complete_labeled += other.complete_labeled
        self.rel_tokens.update(other.rel_tokens)
        self.rel_correct_heads.update(other.rel_correct_heads)
        self.rel_correct_labeled.update(other.rel_correct_labeled)
        return self

    def compute(self) -> dict[str, Any]:
        """The scores so far, in percent (0.0 when nothing was scored).

        Returns:
            ``"uas"``, ``"ucm"`` (sentences whose scored heads are all right), ``"tokens"`` and
            ``"sentences"`` (counts); when labeled also ``"las"``, ``"lcm"`` and
            ``"per_relation"``: for each gold relation, sorted, ``{"las", "uas", "count"}``.
        """
        result: dict[str, Any] = {
            "uas": _percent(self.correct_heads, self.tokens),
            "ucm": _percent(self.complete_heads, self.sentences),
            "tokens": self.tokens,
            "sentences": self.sentences,
        }
        if self.labeled:
            result["las"] = _percent(self.correct_labeled, self.tokens)
            result["lcm"] = _percent(self.complete_labeled, self.sentences)
            result["per_relation"] = {
                rel: {
                    "las": _percent(self.rel_correct_labeled[rel], count),
                    "uas": _percent(self.rel_correct_heads[rel], count),
                    "count": count,
                }
                for rel, count in sorted(self.rel_tokens.items())
            }
        return result


def _percent(part: int, whole: int) -> float:
    return 100.0 * part / whole if whole else 0.0
