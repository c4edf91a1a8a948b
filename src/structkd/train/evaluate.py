"""Batched prediction and span-F1 evaluation of a tagger."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TextIO

import torch

from structkd.data.conll import Sentence, write_conll
from structkd.metrics.span_f1 import SpanF1
from structkd.models.tagger import Tagger
from structkd.train.batching import bucket_batches


def predict_tags(
    model: Tagger, tokens: Sequence[Sequence[str]], batch_size: int = 64
) -> list[list[str]]:
    """Predicted tags for each sentence, in input order (batches are built by length)."""
    out: list[list[str]] = [[] for _ in tokens]
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for ids in bucket_batches([len(t) for t in tokens], batch_size):
            for i, tags in zip(ids, model.predict(model.collate([tokens[i] for i in ids]))):
                out[i] = tags
    model.train(was_training)
    return out


def evaluate(model: Tagger, sentences: Sequence[Sentence], batch_size: int = 64) -> dict[str, Any]:
    """Span F1 against gold tags, plus prediction speed.

    Returns:
        ``{"f1", "precision", "recall", "per_type"}`` (percent, from ``SpanF1``) and
        ``"tokens_per_second"``.
    """
    start = time.perf_counter()
    predicted = predict_tags(model, [s.tokens for s in sentences], batch_size)
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
        tags = predict_tags(model, [s.tokens for s in chunk], batch_size)
        count += write_conll(chunk, tags, out)
        out.flush()
    return count
