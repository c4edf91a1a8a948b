"""The Python API for trained models: ``structkd.load(path).predict(texts)``.

``load`` opens a model directory (``structkd train``/``distill``; the PyTorch model, on the
device asked for) or an export directory (``structkd export``; ONNX Runtime or TorchScript).
``predict`` takes raw strings, tokenized by ``structkd.data.tokenize.tokenize`` (rule-based,
splits punctuation: ``"Monday."`` -> ``Monday``, ``.``), or pre-tokenized sentences (lists of
words), batches them by length and returns, per sentence, its tokens with character offsets
and either its entities (NER) or its heads and relations (parsing)::

    import structkd as sk

    tagger = sk.load("runs/student/model")
    for sentence in tagger.predict(["EU rejects German call .", "See you Monday."]):
        for entity in sentence.entities:
            print(entity.label, entity.text, entity.start, entity.end)
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import torch

from structkd.data.tokenize import Token, join_tokens, tokenize
from structkd.export.bundle import is_export_dir
from structkd.export.runtime import ExportedModel
from structkd.models.base import Model
from structkd.models.checkpoint import load_model
from structkd.structures.tags import to_spans
from structkd.tasks import get_task

CHUNK = 2048  # sentences a file is read and written by


@dataclass(frozen=True)
class Entity:
    """A predicted entity: ``text[start:end]`` of its sentence, tokens ``first..last - 1``."""

    label: str
    text: str
    start: int
    end: int
    first_token: int
    last_token: int


@dataclass
class TaggedSentence:
    """One sentence tagged by an NER model.

    Attributes:
        text: the input (pre-tokenized input: its words joined by single spaces).
        tokens: the tokens with character offsets into ``text``.
        tags: one tag per token, in the scheme of the model's training data.
        entities: the entities the tags hold.
    """

    text: str
    tokens: list[Token]
    tags: list[str]
    entities: list[Entity] = field(default_factory=list)


@dataclass
class ParsedSentence:
    """One sentence parsed by a dependency model.

    Attributes:
        text: the input (pre-tokenized input: its words joined by single spaces).
        tokens: the tokens with character offsets into ``text``.
        heads: each token's head, 1-based, 0 = ROOT.
        relations: each token's relation, or None for an unlabeled parser.
    """

    text: str
    tokens: list[Token]
    heads: list[int]
    relations: list[str] | None


def _sentence_inputs(
    inputs: Sequence[str | Sequence[str]], tokenized: bool | None
) -> list[tuple[str, list[Token]]]:
    out = []
    for i, item in enumerate(inputs):
        raw = isinstance(item, str) if tokenized is None else not tokenized
        if raw:
            if not isinstance(item, str):
                raise TypeError(f"input {i} is not a string (tokenized=False)")
            out.append((item, tokenize(item)))
        else:
            words = [item] if isinstance(item, str) else list(item)
            if not all(isinstance(w, str) and w and not w.isspace() for w in words):
                raise TypeError(f"input {i}: pre-tokenized words must be non-blank strings")
            out.append(join_tokens(words))
    return out


class Predictor:
    """A loaded model or export, for prediction (see the module docstring; ``load`` makes one).

    Attributes:
        task: ``ner`` or ``dep``.
        model: the PyTorch model (model directories), else None.
        exported: the export (export directories), else None.
    """

    def __init__(self, model: Model | None = None, exported: ExportedModel | None = None):
        if (model is None) == (exported is None):
            raise ValueError("a Predictor wraps a model or an export")
        self.model = model
        self.exported = exported
        task = model.task if model is not None else exported.task  # type: ignore[union-attr]
        self.task: str = task

    def predict_words(self, words: Sequence[Sequence[str]], batch_size: int = 32) -> list[Any]:
        """The raw outputs for tokenized sentences, in input order: tag lists (NER) or
        ``(heads, relations)`` pairs (parsing), exactly what the model's ``predict`` gives.

        Raises:
            ValueError: for a sentence longer than the task's ``max_words``.
        """
        if self.exported is not None:
            get_task(self.task).check_max_words(words)
            return self.exported.predict(words, batch_size)
        assert self.model is not None
        return get_task(self.task).predict(self.model, words, batch_size)

    def predict(
        self,
        inputs: Sequence[str | Sequence[str]],
        batch_size: int = 32,
        tokenized: bool | None = None,
    ) -> list[TaggedSentence] | list[ParsedSentence]:
        """Predictions for sentences given as strings or as lists of words.

        Args:
            inputs: raw strings (tokenized by ``tokenize``) or pre-tokenized word lists.
            batch_size: sentences per batch (batches are built by length).
            tokenized: None decides per input (a string is raw text, a list is words); True
                reads a string as a single word.

        Returns:
            A ``TaggedSentence`` (NER) or ``ParsedSentence`` (parsing) per input.

        Raises:
            TypeError: for inputs that are neither strings nor lists of non-blank strings.
            ValueError: for a sentence longer than the task's ``max_words``.
        """
        sentences = _sentence_inputs(inputs, tokenized)
        words = [[t.text for t in tokens] for _, tokens in sentences]
        outputs = self.predict_words(words, batch_size)
        if self.task == "dep":
            return [
                ParsedSentence(text, tokens, list(heads), rels)
                for (text, tokens), (heads, rels) in zip(sentences, outputs)
            ]
        result = []
        for (text, tokens), tags in zip(sentences, outputs):
            entities = [
                Entity(
                    label,
                    text[tokens[first].start : tokens[last - 1].end],
                    tokens[first].start,
                    tokens[last - 1].end,
                    first,
                    last,
                )
                for first, last, label in to_spans(tags)
            ]
            result.append(TaggedSentence(text, tokens, list(tags), entities))
        return result

    def evaluate(self, path: str, fmt: str = "auto", include_punct: bool = False) -> dict[str, Any]:
        """The scores ``structkd evaluate`` prints (span F1, or UAS/LAS) on a labeled corpus,
        with ``tokens_per_second``, for a model or an export alike.

        Raises:
            DataError: if the corpus is malformed or has no gold outputs.
        """
        task = get_task(self.task)
        sentences = task.read_labeled(path, fmt)
        if self.model is not None:
            return task.evaluate(self.model, sentences, include_punct)
        start = time.perf_counter()
        predicted = self.predict_words([task.words(s) for s in sentences])
        seconds = time.perf_counter() - start
        scores = task.score(sentences, predicted, include_punct)
        tokens = sum(len(task.words(s)) for s in sentences)
        return {**scores, "tokens_per_second": tokens / max(seconds, 1e-9)}

    def predict_file(self, path: str, fmt: str, out: TextIO) -> int:
        """Predicts every sentence of a file, streamed, and writes CoNLL (NER) or CoNLL-U
        (parsing), as ``structkd predict``; returns the sentence count."""
        if self.model is not None:
            return get_task(self.task).predict_file(self.model, path, fmt, out)
        task = get_task(self.task)
        sentences = task.within_max_words(task.read_inputs(path, fmt), path)
        count = 0
        while chunk := list(itertools.islice(sentences, CHUNK)):
            predicted = self.predict_words([task.words(s) for s in chunk])
            count += task.write_predictions(chunk, predicted, out)
            out.flush()
        return count


def load(
    path: str | Path, device: torch.device | str = "cpu", threads: int | None = None
) -> Predictor:
    """A ``Predictor`` of a model directory or an export directory.

    Args:
        path: the directory.
        device: where a model (or a TorchScript export) runs.
        threads: ONNX Runtime intra-op threads (None = its default).

    Raises:
        CheckpointError: for a directory that is neither (or a broken model).
        DataError: for a broken export.
    """
    if is_export_dir(path):
        return Predictor(exported=ExportedModel(path, threads, device))
    return Predictor(model=load_model(path, device))
