"""The KD pair of a tagger student (CRF, MaxEnt or span head) and a tagger teacher (or a file of
its marginals): the four NER cases of Wang et al. (ACL 2021), section 3."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from structkd import kd
from structkd.config import ConfigError
from structkd.kd.methods.base import Layout, Stats
from structkd.kd.projections import tempered_projection
from structkd.models.base import Model, evaluating
from structkd.models.pair import Pair
from structkd.models.tagger import Tagger
from structkd.structures.base import Structure, as_list


class TaggerPair(Pair):
    """A tagger teacher's structure (its ``forward``'s output) on a tagger student's parts."""

    provides: tuple[str, ...] = ("project", "local", "posterior", "kbest", "scores")

    def __init__(self, teacher: Model, student: Model) -> None:
        if not isinstance(student, Tagger):
            raise ConfigError(f"task ner needs a tagger, got a {type(student).__name__}")
        super().__init__(teacher, student)
        self.tagger = student
        self.scheme = student.vocab.tag_scheme

    def check(self, index: int) -> None:
        """Same entity types, and a structure that projects onto the student's (checked on a
        two-word probe, so the run fails before anything is written)."""
        teacher, pupil = self.teacher, self.tagger
        probe = getattr(teacher, "probe_words", [["a", "b"]])  # a file knows its sentences
        target = pupil.structure(pupil.collate(probe))
        if teacher.vocab.entity_types != pupil.vocab.entity_types:
            raise ConfigError(
                f"teacher {index + 1} knows entity types {teacher.vocab.entity_types}, the "
                f"student {pupil.vocab.entity_types}; distillation needs the same types"
            )
        structure = teacher(teacher.collate(probe))
        try:
            kd.project(structure, target, self.scheme)
        except (TypeError, ValueError) as error:
            raise ConfigError(f"teacher {index + 1}: {error}") from error
        self.teacher_kind = type(structure).__name__
        if not kd.has_local_scores(structure):  # e.g. a span teacher
            # no per-token scores: Token KD and score matching have nothing to match
            self.provides = tuple(p for p in self.provides if p not in ("local", "scores"))

    # ---- Structural KD ------------------------------------------------------------------------
    def slot(self) -> Any:
        vocab = self.tagger.vocab
        return [self.student.config.head.kind, vocab.tag_scheme, vocab.entity_types]

    def student_parts(self, words: list[list[str]]) -> list[Tensor]:
        tagger = self.tagger
        return as_list(tagger.structure(tagger.collate(words)).part_marginals)

    def teacher_structure(self, words: list[list[str]]) -> Structure:
        teacher = self.teacher
        structure: Structure = teacher(teacher.collate(words))  # a tagger's forward: its structure
        return structure

    def _target(self, words: list[list[str]]) -> Structure:
        """The student's structure on ``words`` as a projection needs it: its type, sizes and
        lengths, never its scores, so its head runs on zero features (in eval mode: no dropout
        draw) and its encoder not at all."""
        tagger = self.tagger
        lengths = torch.tensor([len(w) for w in words], device=tagger.device)
        width = max(int(lengths.max()), 1) if len(words) else 1  # as collate pads
        hidden = torch.zeros(len(words), width, tagger.encoder.dim, device=tagger.device)
        with evaluating(tagger):
            target: Structure = tagger.from_features(hidden, lengths)
        return target

    def stored_structures(self, words: list[list[str]]) -> tuple[Structure, Structure, str]:
        return self.teacher_structure(words), self._target(words), self.scheme

    def project(self, words: list[list[str]], temperature: float, mode: str) -> list[Tensor]:
        teacher_structure, target, scheme = self.stored_structures(words)
        return as_list(tempered_projection(teacher_structure, target, temperature, mode, scheme))

    def structural_loss(self, parts: Any, output: Any, temperature: float, stats: Stats) -> Tensor:
        return kd.structural_kd_loss_from_marginals(
            parts, output, temperature=temperature, reduction="none"
        )

    # ---- Token and Posterior KD ---------------------------------------------------------------
    def local_layout(self) -> Layout:
        return [[0, None]]  # per-token teacher distribution on the student's tags [n, L]

    def local(self, source: Any, temperature: float) -> list[Tensor]:
        return [kd.token_kd_targets(source, temperature)]

    def local_loss(
        self, targets: list[Tensor], output: Any, temperature: float, stats: Stats
    ) -> Tensor:
        return kd.token_kd_loss_from_probs(targets[0], output, temperature, "none")

    def posterior_layout(self) -> Layout:
        return [[0, None]]

    def posterior(self, source: Any, words: list[list[str]]) -> list[Tensor]:
        projected = kd.project(source, self._target(words), self.scheme)
        return [projected[0] if isinstance(projected, tuple) else projected]

    def posterior_loss(self, targets: list[Tensor], output: Any) -> Tensor:
        return kd.posterior_kd_loss_from_marginals(targets[0], output, "none")

    # ---- Top-1 / Top-K / Top-WK ---------------------------------------------------------------
    def kbest_layout(self) -> Layout:
        return [[None, 0], [None]]  # the K outputs as student tags [K, n], weights [K]

    def kbest(self, source: Any, k: int, weighted: bool) -> list[Tensor]:
        outputs, weights = kd.kbest_targets(source, k, weighted, self.scheme)
        return [outputs.transpose(0, 1), weights.t()]  # [B, K, N], [B, K]

    def kbest_loss(self, targets: list[Tensor], output: Any, stats: Stats) -> Tensor:
        outputs, weights = targets  # [B, K, N], [B, K]
        return kd.kbest_nll(output, outputs.transpose(0, 1).long(), weights.t())

    # ---- sub-structure score matching ---------------------------------------------------------
    def scores_loss(self, source: Any, output: Any) -> Tensor:
        return kd.substructure_mse_loss(source, output, reduction="none")
