"""Distillation objective: per-sentence KD losses from one or several teachers.

Training loss (Wang et al., ACL 2021, section 4): ``lambda * KD + (1 - lambda) * NLL(gold)`` for
labeled sentences, ``KD`` alone for unlabeled ones, with lambda annealed from 1 to 0 over training
(teacher annealing, Clark et al., ACL 2019) or fixed. With several teachers each sentence learns
from the teacher bound to its corpus, or from the average of all teachers' projected marginals.

Structural KD reads the (tempered, projected) teacher marginals from the on-disk cache, computed
once; the baselines run the teacher on each batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from structkd import kd
from structkd.config import ConfigError, DistillConfig
from structkd.models.inputs import Batch
from structkd.models.tagger import Tagger
from structkd.structures.base import Structure
from structkd.train.batching import bucket_batches
from structkd.train.cache import (
    Marginals,
    as_list,
    cached_marginals,
    crop,
    data_hash,
    evaluating,
    pad_batch,
    position_offsets,
)


def check_teachers(teachers: Sequence[Tagger], student: Tagger) -> None:
    """Raises ConfigError unless every teacher can be distilled into the student.

    The teacher must tag the student's entity types, and its structure must project onto the
    student's (checked on a two-word probe, so the run fails before anything is written).
    """
    with torch.no_grad(), evaluating(student):
        probe = [["a", "b"]]
        target = student.structure(student.collate(probe))
        for i, teacher in enumerate(teachers):
            if teacher.vocab.entity_types != student.vocab.entity_types:
                raise ConfigError(
                    f"teacher {i + 1} knows entity types {teacher.vocab.entity_types}, the "
                    f"student {student.vocab.entity_types}; distillation needs the same types"
                )
            try:
                kd.project(
                    teacher.structure(teacher.collate(probe)), target, student.vocab.tag_scheme
                )
            except (TypeError, ValueError) as error:
                raise ConfigError(f"teacher {i + 1}: {error}") from error


def projected_marginals(
    teacher: Structure, student: Structure, config: DistillConfig, tag_scheme: str
) -> Any:
    """Teacher marginals on the student's parts, tempered as ``kd.structural_kd_loss`` does."""
    temperature = config.temperature
    if config.temperature_mode == "global" and temperature != 1.0:
        return kd.project(teacher.tempered(temperature), student, tag_scheme)
    marginals = kd.project(teacher, student, tag_scheme)
    return kd.local_temper(marginals, temperature) if temperature != 1.0 else marginals


class Distiller:
    """Computes ``KD`` [B] for student batches.

    Args:
        teachers: teacher taggers (eval mode; never trained here).
        config: method, temperature, lambda schedule, binding.
        tokens: every training sentence (labeled then unlabeled), indexed like the batches.
        corpus: the corpus id of each sentence (selects its teacher with ``corpus`` binding).
        student: the student, to learn its part layout.
        cache_dir: where projected marginals are cached (structural KD).
        teacher_ids: an identifier per teacher checkpoint (its weights hash) for the cache key.
    """

    def __init__(
        self,
        teachers: Sequence[Tagger],
        config: DistillConfig,
        tokens: Sequence[Sequence[str]],
        corpus: Sequence[int],
        student: Tagger,
        cache_dir: Path,
        teacher_ids: Sequence[str],
        batch_size: int = 64,
    ) -> None:
        check_teachers(teachers, student)
        if config.teacher_binding == "average" and config.method != "structural":
            raise ConfigError("teacher_binding=average needs distill.method=structural")
        self.teachers = [t.eval() for t in teachers]
        self.config = config
        self.tokens = tokens
        self.corpus = corpus
        self.scheme = student.vocab.tag_scheme
        self.marginals: list[Marginals] | None = None
        self.offsets = position_offsets(student)
        if config.method == "structural":
            slot = {
                "data": data_hash(tokens, corpus),
                "student": [student.config.head.kind, self.scheme, student.vocab.entity_types],
            }
            key = {
                "teachers": list(teacher_ids),
                "binding": config.teacher_binding,
                "temperature": config.temperature,
                "temperature_mode": config.temperature_mode,
            }
            self.marginals = cached_marginals(
                cache_dir,
                slot,
                key,
                lambda shard, shards: self._compute_marginals(student, batch_size, shard, shards),
                len(tokens),
            )

    def weight(self, step: int, total_steps: int) -> float:
        """The KD weight lambda at optimizer step ``step`` of ``total_steps``."""
        if not self.config.anneal:
            return self.config.lam
        return max(0.0, 1.0 - step / max(total_steps, 1))

    @torch.no_grad()
    def _compute_marginals(
        self, student: Tagger, batch_size: int, shard: int = 0, shards: int = 1
    ) -> dict[int, Marginals]:
        """Projected teacher marginals of the sentences in batches ``shard::shards``."""
        rows: dict[int, Marginals] = {}
        groups = self.corpus if self.config.teacher_binding == "corpus" else None
        batches = bucket_batches([len(t) for t in self.tokens], batch_size, groups=groups)
        for ids in batches[shard::shards]:
            tokens = [list(self.tokens[i]) for i in ids]
            with evaluating(student):
                target = student.structure(student.collate(tokens))
            chosen = (
                [self.teachers[self.corpus[ids[0]]]]
                if self.config.teacher_binding == "corpus"
                else self.teachers
            )
            parts = [
                as_list(
                    projected_marginals(
                        t.structure(t.collate(tokens)), target, self.config, self.scheme
                    )
                )
                for t in chosen
            ]
            mean = [torch.stack(group).mean(0) for group in zip(*parts)]
            for b, i in enumerate(ids):
                rows[i] = crop(mean, b, len(tokens[b]), self.offsets)
        return rows

    def losses(self, student: Structure, batch: Batch, indices: Sequence[int]) -> Tensor:
        """Per-sentence KD losses [B] of a student structure on training sentences ``indices``.

        Batches must not mix corpora when teachers are bound to corpora (``bucket_batches``
        with ``groups``).
        """
        cfg = self.config
        if self.marginals is not None:
            like = torch.zeros((), device=student.lengths.device)
            rows = [self.marginals[i] for i in indices]
            marginals = pad_batch(rows, int(batch.lengths.max()), self.offsets, like)
            return kd.structural_kd_loss_from_marginals(
                marginals, student, temperature=cfg.temperature, reduction="none"
            )
        teacher = self.teachers[self.corpus[indices[0]]]
        with torch.no_grad():
            target = teacher.structure(teacher.collate(batch.tokens))
        if cfg.method == "token":
            return kd.token_kd_loss(target, student, cfg.temperature, reduction="none")
        if cfg.method == "posterior":
            return kd.posterior_kd_loss(target, student, reduction="none", tag_scheme=self.scheme)
        if cfg.method in ("topk", "topwk"):
            return kd.topk_kd_loss(
                target, student, cfg.k, cfg.method == "topwk", "none", tag_scheme=self.scheme
            )
        if cfg.method == "substructure":
            return kd.substructure_mse_loss(target, student, reduction="none")
        raise ConfigError(f"distill.method={cfg.method} has no KD loss")
