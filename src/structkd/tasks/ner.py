"""Named-entity recognition: CoNLL/WikiAnn/text corpora, taggers, span F1, the four NER cases."""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from typing import Any, TextIO

import torch
from torch import Tensor

from structkd import kd
from structkd.config import ConfigError, DistillConfig, ModelConfig
from structkd.data.conll import FORMATS, Sentence, iter_sentences, read_ner
from structkd.data.errors import DataError
from structkd.data.resources import resolve_path
from structkd.models.base import Model
from structkd.models.inputs import Vocabularies
from structkd.models.tagger import Tagger, build_tagger
from structkd.structures.base import Structure
from structkd.tasks.base import Stats, Task, projected_marginals
from structkd.train.cache import as_list, evaluating
from structkd.train.evaluate import evaluate, predict_stream, predict_tags


def _tagger(model: Model) -> Tagger:
    if not isinstance(model, Tagger):
        raise ConfigError(f"task ner needs a tagger, got a {type(model).__name__}")
    return model


class NERTask(Task):
    """Taggers (CRF, MaxEnt, span) scored by span F1; predictions written as CoNLL."""

    name = "ner"
    formats = FORMATS
    max_words = 100_000  # ~0.5 GB and a minute on one core with a char CNN + BiLSTM-CRF
    kd_methods = ("structural", "token", "posterior", "topk", "topwk", "top1", "substructure")
    log_metrics = ("f1", "precision", "recall")
    report_metrics = ("f1", "precision", "recall", "per_type")
    score_metrics = ("f1",)

    def _check_format(self, fmt: str) -> None:
        if fmt not in self.formats:
            raise ConfigError(f"task ner reads formats {', '.join(self.formats)}, not {fmt!r}")

    def read_labeled(self, path: str, fmt: str) -> list[Sentence]:
        self._check_format(fmt)
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

    def load_model(
        self, config: ModelConfig, vocab: dict[str, Any], transformer_dir: str | None
    ) -> Tagger:
        vocabularies = Vocabularies.from_dict(vocab)
        return Tagger(config, vocabularies, transformer_dir, pretrained_transformer=False)

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

    def predict(
        self, model: Model, words: Sequence[Sequence[str]], batch_size: int = 64
    ) -> list[list[str]]:
        """A tag sequence per sentence.

        Raises:
            ValueError: for a sentence longer than ``max_words``.
        """
        self.check_max_words(words)
        return predict_tags(_tagger(model), words, batch_size)

    def predict_file(self, model: Model, path: str, fmt: str, out: TextIO) -> int:
        self._check_format(fmt)
        sentences = self.within_max_words(iter_sentences(resolve_path(path), fmt), path)
        return predict_stream(_tagger(model), sentences, out)

    def check_teachers(self, teachers: Sequence[Model], student: Model) -> None:
        """Same entity types, and a structure that projects onto the student's (checked on a
        two-word probe, so the run fails before anything is written)."""
        pupil = _tagger(student)
        for i, teacher in enumerate(teachers):
            probe = getattr(teacher, "probe_words", [["a", "b"]])  # a file knows its sentences
            target = pupil.structure(pupil.collate(probe))
            if teacher.vocab.entity_types != pupil.vocab.entity_types:
                raise ConfigError(
                    f"teacher {i + 1} knows entity types {teacher.vocab.entity_types}, the "
                    f"student {pupil.vocab.entity_types}; distillation needs the same types"
                )
            try:
                kd.project(teacher(teacher.collate(probe)), target, pupil.vocab.tag_scheme)
            except (TypeError, ValueError) as error:
                raise ConfigError(f"teacher {i + 1}: {error}") from error

    def cache_slot(self, student: Model) -> Any:
        vocab = _tagger(student).vocab
        return [student.config.head.kind, vocab.tag_scheme, vocab.entity_types]

    def student_parts(self, student: Model, words: list[list[str]]) -> list[Tensor]:
        tagger = _tagger(student)
        return as_list(tagger.structure(tagger.collate(words)).part_marginals)

    def stored_structures(
        self, teacher: Model, student: Model, words: list[list[str]]
    ) -> tuple[Structure, Structure, str]:
        tagger = _tagger(student)
        # A projection reads the student's structure type, sizes and lengths, never its scores:
        # its head on zero features gives them without running its encoder.
        lengths = torch.tensor([len(w) for w in words], device=tagger.device)
        width = max(int(lengths.max()), 1) if len(words) else 1  # as collate pads
        hidden = torch.zeros(len(words), width, tagger.encoder.dim, device=tagger.device)
        target = tagger.from_features(hidden, lengths)
        return self.teacher_structure(teacher, words), target, tagger.vocab.tag_scheme

    def teacher_structure(self, teacher: Model, words: list[list[str]]) -> Structure:
        structure: Structure = teacher(teacher.collate(words))  # a tagger's forward: its structure
        return structure

    def project(
        self, teacher: Model, student: Model, words: list[list[str]], config: DistillConfig
    ) -> list[Tensor]:
        teacher_structure, target, scheme = self.stored_structures(teacher, student, words)
        return as_list(projected_marginals(teacher_structure, target, config, scheme))

    def structural_loss(
        self, student: Model, output: Any, parts: Any, temperature: float, stats: Stats
    ) -> Tensor:
        return kd.structural_kd_loss_from_marginals(
            parts, output, temperature=temperature, reduction="none"
        )

    def target_layout(self, student: Model, config: DistillConfig) -> list[list[int | None]] | None:
        if config.method in ("topk", "topwk", "top1"):
            return [[None, 0], [None]]  # the K outputs as student tags [K, n], weights [K]
        if config.method in ("token", "posterior"):
            return [[0, None]]  # per-token teacher distribution on the student's tags [n, L]
        return None  # sub-structure MSE: the teacher's head runs per batch

    def kd_targets(
        self,
        teacher: Model,
        student: Model,
        source: Any,
        config: DistillConfig,
        words: list[list[str]] | None = None,
    ) -> list[Tensor]:
        if config.method == "token":
            return [kd.token_kd_targets(source, config.temperature)]
        scheme = _tagger(student).vocab.tag_scheme
        if config.method == "posterior":
            if words is None:
                raise ValueError("posterior KD targets need the batch's words")
            tagger = _tagger(student)
            with evaluating(tagger):
                target = tagger.structure(tagger.collate(words))
            projected = kd.project(source, target, scheme)
            return [projected[0] if isinstance(projected, tuple) else projected]
        k = 1 if config.method == "top1" else config.k
        outputs, weights = kd.kbest_targets(source, k, config.method == "topwk", scheme)
        return [outputs.transpose(0, 1), weights.t()]  # [B, K, N], [B, K]

    def targets_loss(
        self,
        teacher: Model,
        student: Model,
        targets: list[Tensor],
        output: Any,
        config: DistillConfig,
        stats: Stats,
    ) -> Tensor:
        if config.method == "token":
            return kd.token_kd_loss_from_probs(targets[0], output, config.temperature, "none")
        if config.method == "posterior":
            return kd.posterior_kd_loss_from_marginals(targets[0], output, "none")
        outputs, weights = targets  # [B, K, N], [B, K]
        return kd.kbest_nll(output, outputs.transpose(0, 1).long(), weights.t())

    def kd_loss(
        self,
        teacher: Model,
        student: Model,
        source: Any,
        output: Any,
        config: DistillConfig,
        stats: Stats,
    ) -> Tensor:
        scheme = _tagger(student).vocab.tag_scheme
        if config.method == "token":
            return kd.token_kd_loss(source, output, config.temperature, reduction="none")
        if config.method == "posterior":
            return kd.posterior_kd_loss(source, output, reduction="none", tag_scheme=scheme)
        if config.method in ("topk", "topwk", "top1"):
            targets = self.kd_targets(teacher, student, source, config)
            return self.targets_loss(teacher, student, targets, output, config, stats)
        if config.method == "substructure":
            return kd.substructure_mse_loss(source, output, reduction="none")
        raise ConfigError(f"distill.method={config.method} has no uncached KD loss")
