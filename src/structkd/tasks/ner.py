"""Named-entity recognition: CoNLL/WikiAnn/text corpora, taggers, span F1, the four NER cases."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TextIO

from structkd.config import ConfigError, ModelConfig
from structkd.data.conll import FORMATS, Sentence, iter_sentences, read_ner, write_conll
from structkd.data.errors import DataError
from structkd.data.resources import resolve_path
from structkd.metrics.span_f1 import SpanF1
from structkd.models.base import Model, predict_sentences
from structkd.models.tagger import Tagger, build_tagger
from structkd.tasks.base import Task, register_task


def evaluate(model: Tagger, sentences: Sequence[Sentence], batch_size: int = 64) -> dict[str, Any]:
    """Span F1 against gold tags, plus prediction speed.

    Returns:
        ``{"f1", "precision", "recall", "per_type"}`` (percent, from ``SpanF1``) and
        ``"tokens_per_second"``.
    """
    start = time.perf_counter()
    predicted = predict_sentences(model, [s.tokens for s in sentences], batch_size)
    seconds = time.perf_counter() - start
    tokens = sum(len(s) for s in sentences)
    return {**span_scores(sentences, predicted), "tokens_per_second": tokens / max(seconds, 1e-9)}


def span_scores(
    sentences: Sequence[Sentence], predicted: Sequence[Sequence[str]]
) -> dict[str, Any]:
    """``{"f1", "precision", "recall", "per_type"}`` (percent) of predicted tags against the
    sentences' gold tags."""
    metric = SpanF1()
    for sentence, tags in zip(sentences, predicted):
        assert sentence.tags is not None
        metric.update(sentence.tags, tags)
    scores = metric.compute()
    return {key: scores[key] for key in ("f1", "precision", "recall", "per_type")}


def _chunks(sentences: Iterable[Sentence], size: int) -> Iterator[list[Sentence]]:
    chunk: list[Sentence] = []
    for sentence in sentences:
        chunk.append(sentence)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def predict_stream(
    model: Tagger,
    sentences: Iterable[Sentence],
    out: TextIO,
    batch_size: int = 64,
    chunk_size: int = 2048,
) -> int:
    """Tags a stream of sentences chunk by chunk and writes CoNLL lines as it goes.

    Memory is O(chunk_size) sentences whatever the input size.

    Returns:
        The number of sentences written.
    """
    count = 0
    for chunk in _chunks(sentences, chunk_size):
        tags = predict_sentences(model, [s.tokens for s in chunk], batch_size)
        count += write_conll(chunk, tags, out)
        out.flush()
    return count


def _tagger(model: Model) -> Tagger:
    if not isinstance(model, Tagger):
        raise ConfigError(f"task ner needs a tagger, got a {type(model).__name__}")
    return model


@register_task
class NERTask(Task):
    """Taggers (CRF, MaxEnt, span) scored by span F1; predictions written as CoNLL."""

    name = "ner"
    formats = FORMATS
    input_formats = FORMATS
    max_words = 100_000  # ~0.5 GB and a minute on one core with a char CNN + BiLSTM-CRF
    log_metrics = ("f1", "precision", "recall")
    report_metrics = ("f1", "precision", "recall", "per_type")
    score_metrics = ("f1",)
    metric_labels = {"f1": "F1"}

    def read_labeled(self, path: str, fmt: str) -> list[Sentence]:
        self.check_format(fmt)
        sentences = read_ner(resolve_path(path), fmt)
        if any(s.tags is None for s in sentences):
            raise DataError(path, "has no tag column; a labeled corpus is needed here")
        return sentences

    def read_unlabeled(self, path: str) -> list[Sentence]:
        return list(self.iter_unlabeled(path))

    def iter_unlabeled(self, path: str) -> Iterator[Sentence]:
        # Interned words: a corpus of millions of sentences repeats few distinct strings.
        for s in iter_sentences(resolve_path(path), "auto"):
            yield Sentence([sys.intern(t) for t in s.tokens])

    def words(self, sentence: Sentence) -> list[str]:
        return sentence.tokens

    def is_labeled(self, sentence: Sentence) -> bool:
        return sentence.tags is not None

    def build_model(
        self, config: ModelConfig, sentences: Sequence[Sentence], teachers: Sequence[Model] = ()
    ) -> Tagger:
        """A tagger whose entity types are those of the labeled sentences, or, when none is
        labeled (a student distilled on unlabeled text alone, e.g. zero-shot cross-lingual),
        those of the first teacher (``check_teachers`` then holds every teacher to them)."""
        tags = [s.tags for s in sentences if s.tags is not None]
        tokens = [s.tokens for s in sentences]
        if tags:
            return build_tagger(config, tokens, tags)
        if not teachers:
            raise ConfigError(
                "no labeled training sentences: the entity types come from data.train, or from "
                "a teacher when distilling"
            )
        vocab = teachers[0].vocab
        return build_tagger(
            config, tokens, [], entity_types=vocab.entity_types, output_scheme=vocab.output_scheme
        )

    def collate(self, model: Model, sentences: Sequence[Sentence]) -> Any:
        return _tagger(model).collate([s.tokens for s in sentences], [s.tags for s in sentences])

    def evaluate(
        self, model: Model, sentences: Sequence[Sentence], include_punct: bool = False
    ) -> dict[str, Any]:
        return evaluate(_tagger(model), sentences)

    def selection_score(self, scores: dict[str, Any]) -> float:
        return float(scores["f1"])

    def summary(self, split: str, scores: dict[str, Any]) -> str:
        return (
            f"{split}: F1 {scores['f1']:.2f}  P {scores['precision']:.2f}  "
            f"R {scores['recall']:.2f}  ({scores['tokens_per_second']:.0f} tokens/s)"
        )

    def predict_file(self, model: Model, path: str, fmt: str, out: TextIO) -> int:
        sentences = self.within_max_words(self.read_inputs(path, fmt), path)
        return predict_stream(_tagger(model), sentences, out)

    def read_inputs(self, path: str, fmt: str) -> Iterator[Sentence]:
        self.check_format(fmt)
        return iter_sentences(resolve_path(path), fmt)

    def write_predictions(
        self, sentences: Sequence[Any], predicted: Sequence[Any], out: TextIO
    ) -> int:
        return write_conll(sentences, predicted, out)

    def score(
        self, sentences: Sequence[Any], predicted: Sequence[Any], include_punct: bool = False
    ) -> dict[str, Any]:
        return span_scores(sentences, predicted)

    def sentence_counts(
        self, sentences: Sequence[Any], predicted: Sequence[Any], include_punct: bool = False
    ) -> tuple[str, list[tuple[int, int, int]]]:
        """Span F1's (correct, predicted, gold) entity counts per sentence."""
        rows = []
        for sentence, tags in zip(sentences, predicted):
            one = SpanF1()
            one.update(sentence.tags, tags)
            rows.append(
                (sum(one.correct.values()), sum(one.predicted.values()), sum(one.gold.values()))
            )
        return "f1", rows
