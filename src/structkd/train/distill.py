"""Distillation objective: per-sentence KD losses from one or several teachers.

Training loss (Wang et al., ACL 2021, section 4): ``lambda * KD + (1 - lambda) * NLL(gold)`` for
labeled sentences, ``KD`` alone for unlabeled ones, with lambda annealed from 1 to 0 over training
(teacher annealing, Clark et al., ACL 2019) or fixed. With several teachers each sentence learns
from the teacher bound to its corpus, or from the average of all teachers' projected marginals.

Teachers are frozen and in eval mode (no dropout), so what they give a sentence never changes and
is computed once (``distill.cache_teacher``). Structural KD reads the (tempered, projected)
teacher marginals from an on-disk cache; Token KD, Posterior KD (NER) and Top-1/Top-K/Top-WK read
each sentence's targets (the teacher's per-token distributions; its k-best outputs and weights)
from another (``Task.kd_targets``), so neither the teacher nor its decoder runs during training.
Sub-structure MSE (and any method a task does not cache) needs the teacher's scores on each batch;
its expensive part, the encoder, is cached as features and only its head runs per batch, giving
the output the whole teacher would.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from structkd.config import ConfigError, DistillConfig
from structkd.kd.stored import StoredForm, stored_form
from structkd.models.base import Model
from structkd.structures.base import Structure
from structkd.tasks import get_task
from structkd.train.batching import bucket_batches
from structkd.train.cache import (
    CachedRows,
    Compute,
    Marginals,
    as_list,
    cached_marginals,
    crop,
    data_hash,
    evaluating,
    pad_batch,
    position_offsets,
)

TARGET_TOLERANCE = 1e-3
"""How far a teacher's cached probabilities may stray from [0, 1] (and a distribution's mass
above 1) through rounding before the teacher counts as broken."""

FEATURE_OFFSETS: list[list[int | None]] = [[0, None]]
"""Layout of a cached sentence's encoder features [n, H] (``crop``/``pad_batch``): one row per
word (a transformer encoder pools each word's first subword), H fixed."""


class TeacherError(ConfigError):
    """A teacher whose outputs are no probabilities (e.g. a teacher that diverged in training)."""


def _not_probabilities(tensors: Sequence[Tensor], distributions: bool) -> str | None:
    """What is wrong with ``tensors`` as probabilities, or None: NaN or infinite values, values
    outside [0, 1], or (``distributions``) a last-dim slice whose mass exceeds 1 (each by more
    than ``TARGET_TOLERANCE``)."""
    for tensor in tensors:
        if not tensor.is_floating_point() or tensor.numel() == 0:
            continue
        if not bool(torch.isfinite(tensor).all()):
            return "NaN or infinite values"
        low, high = float(tensor.min()), float(tensor.max())
        if low < -TARGET_TOLERANCE or high > 1 + TARGET_TOLERANCE:
            return f"values from {low:.4g} to {high:.4g}, outside [0, 1]"
        if distributions and tensor.dim() > 0:
            mass = float(tensor.sum(-1).max())
            if mass > 1 + TARGET_TOLERANCE:
                return f"a distribution of total mass {mass:.4g} > 1"
    return None


def check_teachers(teachers: Sequence[Model], student: Model) -> list[Model]:
    """The teachers as teachers of ``student`` (``Model.as_teacher_of``: a foreign teacher's
    labels mapped onto the student's); raises ConfigError unless every teacher serves the
    student's task and can teach it (the task probes the pair, in eval mode so that no dropout
    draws from the RNG)."""
    for i, teacher in enumerate(teachers):
        if teacher.task != student.task:
            raise ConfigError(
                f"teacher {i + 1} is a {teacher.task} model, the student a {student.task} model"
            )
    bound = [t.as_teacher_of(student) for t in teachers]
    with torch.no_grad(), evaluating(student):
        get_task(student.task).check_teachers(bound, student)
    return bound


class Distiller:
    """Computes ``KD`` [B] for student batches.

    What a teacher's marginals look like on the student's parts, and the loss of each method, come
    from the student's task (``structkd.tasks``); this class binds teachers to sentences, caches
    marginals (structural KD) or teacher encoder features (the other methods, unless
    ``config.cache_teacher`` is false) and schedules lambda.

    The feature cache keeps, per teacher, float32 [n, H] per sentence of the corpus it is bound
    to: 4 n H bytes, about 140 MB for 6,000 sentences of 15 words with H = 384, in memory and on
    disk. Each teacher has its own file, named by its sentences and keyed by its weights.

    Args:
        teachers: teacher models (eval mode; never trained here).
        config: method, temperature, lambda schedule, binding.
        tokens: every training sentence (labeled then unlabeled), indexed like the batches.
        corpus: the corpus id of each sentence (selects its teacher with ``corpus`` binding).
        student: the student (its part layout, vocabularies and task).
        cache_dir: where projected marginals (structural KD) or teacher encoder features are
            cached.
        teacher_ids: an identifier per teacher checkpoint (its weights hash) for the cache key.
        batch_size: sentences per batch when filling a cache.
        teacher_names: how messages name each teacher (its directory); None = its number.

    Raises:
        TeacherError: when a teacher's cached marginals or targets of a sentence are not
            probabilities (NaN or infinite, outside [0, 1], or a token's distribution of mass
            above 1, by more than ``TARGET_TOLERANCE``), naming the teacher and the sentence.
            Structural KD's projected marginals may hold less than a word's full mass (parts
            the student cannot express), so only their values are checked.
    """

    def __init__(
        self,
        teachers: Sequence[Model],
        config: DistillConfig,
        tokens: Sequence[Sequence[str]],
        corpus: Sequence[int],
        student: Model,
        cache_dir: Path,
        teacher_ids: Sequence[str],
        batch_size: int = 64,
        teacher_names: Sequence[str] | None = None,
    ) -> None:
        teachers = check_teachers(teachers, student)
        self.teacher_names = list(teacher_names or [str(i + 1) for i in range(len(teachers))])
        self.task = get_task(student.task)
        if config.method not in self.task.kd_methods:
            raise ConfigError(
                f"distill.method={config.method} is not available for task {self.task.name}; "
                f"choose one of {', '.join(self.task.kd_methods)}"
            )
        if config.teacher_binding == "average" and config.method != "structural":
            raise ConfigError("teacher_binding=average needs distill.method=structural")
        self.teachers = [t.eval() for t in teachers]
        self.config = config
        self.tokens = tokens
        self.corpus = corpus
        self.student = student
        self.stats: dict[str, float] = {}
        # Structural KD: per sentence, the projected marginals (``marginals``, rebuilt from the
        # cache's ``stored`` rows when the pair has a stored form).
        self.marginals: Sequence[Marginals] | None = None
        self.stored: CachedRows | None = None
        self.form: StoredForm | None = None
        self.constants: list[dict[str, Tensor]] = []  # per teacher: what its form shares
        self.scheme = "BIOES"
        self.targets: Sequence[Marginals] | None = None  # per sentence: kd_targets rows
        self.layout = self.task.target_layout(student, config)
        self.features: list[Sequence[Marginals]] | None = None  # per teacher, sentence: [[n, H]]
        self.feature_rows: list[int] = []  # sentence -> its row in its teacher's features
        with evaluating(student):  # probes draw nothing from the RNG (resumed runs match)
            self.offsets = position_offsets(lambda w: self.task.student_parts(student, w))
        if config.method == "structural":
            self._choose_form()
            slot = {"data": data_hash(tokens, corpus), "student": self.task.cache_slot(student)}
            key = {
                "teachers": list(teacher_ids),
                "binding": config.teacher_binding,
                "temperature": config.temperature,
                "temperature_mode": config.temperature_mode,
                "stored": self.form.name if self.form is not None else "marginals",
            }
            self.stored = cached_marginals(
                cache_dir, slot, key, self._compute_marginals(), self._batches(batch_size)
            )
            self.marginals = self.stored
            if self.form is not None:
                self.marginals = _Projected(self)
        elif config.cache_teacher and self.layout is not None:
            slot = {
                "data": data_hash(tokens, corpus),
                "student": self.task.cache_slot(student),
                "method": config.method,
            }
            key = {
                "teachers": list(teacher_ids),
                "k": config.k,
                "temperature": config.temperature,
            }
            self.targets = cached_marginals(
                cache_dir, slot, key, self._compute_targets(), self._batches(batch_size), "targets"
            )
        elif config.cache_teacher:
            self.features = self._cached_features(cache_dir, teacher_ids, batch_size)

    def weight(self, step: int, total_steps: int) -> float:
        """The KD weight lambda at optimizer step ``step`` of ``total_steps``."""
        if not self.config.anneal:
            return self.config.lam
        return max(0.0, 1.0 - step / max(total_steps, 1))

    def epoch_stats(self) -> dict[str, float]:
        """What the task's losses reported since the last call (e.g. ``kd_lost_mass``: teacher
        mass per word the student's parts cannot express), then starts afresh."""
        stats, self.stats = self.stats, {}
        words = stats.pop("kd_words", 0.0)
        return {k: v / words for k, v in stats.items()} if words else stats

    def _choose_form(self) -> None:
        """Picks the stored form of the (teacher, student) pair (``structkd.kd.stored``), probing
        each teacher on two words: one form for every teacher, each batch decoded with its own
        teacher's constants, so not with several teachers averaged (their marginals then)."""
        if self.config.teacher_binding == "average" and len(self.teachers) > 1:
            return
        forms: list[StoredForm] = []
        constants = []
        with torch.no_grad(), evaluating(self.student):
            for teacher in self.teachers:
                probe = getattr(teacher, "probe_words", [["a", "b"]])  # a file knows its words
                pair = self.task.stored_structures(teacher, self.student, probe)
                form = stored_form(pair[0], pair[1]) if pair is not None else None
                if pair is None or form is None:
                    return
                if self.config.stored == "exact" and not form.bitwise:
                    return
                forms.append(form)
                constants.append(form.constants(pair[0]))
                self.scheme = pair[2]
        if len({f.name for f in forms}) == 1:
            self.form, self.constants = forms[0], constants

    def _batches(self, batch_size: int) -> list[list[int]]:
        """The batches the teachers run in: length-bucketed, each of one corpus when teachers are
        bound to corpora."""
        groups = self.corpus if self.config.teacher_binding == "corpus" else None
        return bucket_batches([len(t) for t in self.tokens], batch_size, groups=groups)

    def _per_sentence(
        self,
        offsets: list[list[int | None]],
        compute: Callable[[list[Model], list[list[str]]], list[Tensor]],
        check: Callable[[Marginals], str | None],
    ) -> Compute:
        """The cache's compute: ``compute(teachers, words)`` (batch-first tensors in the
        ``offsets`` layout) over some batches, cut into one row per sentence. A batch holds one
        corpus and goes to the teacher bound to it, or to every teacher with ``average``
        binding; the student is in eval mode throughout. Each row is checked (``Distiller``'s
        Raises) before anything is cached."""
        by_corpus = self.config.teacher_binding == "corpus"

        @torch.no_grad()
        def rows_of(batches: list[list[int]]) -> dict[int, Marginals]:
            rows: dict[int, Marginals] = {}
            for ids in batches:
                words = [list(self.tokens[i]) for i in ids]
                chosen = [self.teachers[self.corpus[ids[0]]]] if by_corpus else self.teachers
                with evaluating(self.student):
                    tensors = compute(list(chosen), words)
                # The whole batch first (padding holds zeros): rows are checked one by one, to
                # name the sentence, only when something is wrong.
                suspect = check([t.detach() for t in tensors]) is not None
                for b, i in enumerate(ids):
                    rows[i] = crop(tensors, b, len(words[b]), offsets)
                    problem = check(rows[i]) if suspect else None
                    if problem is not None:
                        self._broken_teacher(i, problem)
            return rows

        return rows_of

    def _broken_teacher(self, sentence: int, problem: str) -> None:
        by_corpus = self.config.teacher_binding == "corpus"
        names = self.teacher_names
        who = f"teacher {names[self.corpus[sentence]]}" if by_corpus else f"teachers {names}"
        preview = " ".join(self.tokens[sentence][:8])
        raise TeacherError(
            f"{who}: its outputs on training sentence {sentence + 1} ({preview!r}) are not "
            f"probabilities ({problem}); the teacher has probably diverged (see its "
            "train_log.jsonl): retrain it, e.g. with a lower train.lr"
        )

    def _compute_marginals(self) -> Compute:
        """Projected teacher marginals (averaged over the chosen teachers), or the pair's stored
        form, of the sentences of some batches."""
        form, config = self.form, self.config
        if form is not None:

            def encoded(teachers: list[Model], words: list[list[str]]) -> list[Tensor]:
                (teacher,) = teachers
                temperature, mode = config.temperature, config.temperature_mode
                if not form.needs_student:  # the student's network need not run
                    source = self.task.teacher_structure(teacher, words)
                    return form.encode(source, None, temperature, mode, self.scheme)
                pair = self.task.stored_structures(teacher, self.student, words)
                assert pair is not None
                return form.encode(pair[0], pair[1], temperature, mode, pair[2])

            # Potentials are no probabilities; finite ones give valid marginals when decoded.
            def finite(row: Marginals) -> str | None:
                bad = any(not bool(torch.isfinite(t).all()) for t in row)
                return "NaN or infinite values" if bad else None

            return self._per_sentence(form.offsets, encoded, finite)

        def mean(teachers: list[Model], words: list[list[str]]) -> list[Tensor]:
            parts = [self.task.project(t, self.student, words, config) for t in teachers]
            return [torch.stack(group).mean(0) for group in zip(*parts)]

        def check(row: Marginals) -> str | None:
            return _not_probabilities(row, distributions=False)

        return self._per_sentence(self.offsets, mean, check)

    def _compute_targets(self) -> Compute:
        """The task's targets of the sentences of some batches, each from the teacher bound to
        its corpus (the whole teacher runs once per sentence)."""
        assert self.layout is not None

        def targets(teachers: list[Model], words: list[list[str]]) -> list[Tensor]:
            (teacher,) = teachers  # k-best and token targets are distilled by corpus binding
            source = teacher(teacher.collate(words).to(teacher.device))
            return self.task.kd_targets(teacher, self.student, source, self.config, words)

        # A k-best target holds tag or head ids besides its weights [K]: only the weights (the
        # last tensor) are a distribution.
        kbest = self.config.method in ("topk", "topwk", "top1")

        def check(row: Marginals) -> str | None:
            return _not_probabilities(row[-1:] if kbest else row, distributions=True)

        return self._per_sentence(self.layout, targets, check)

    def _cached_features(
        self, cache_dir: Path, teacher_ids: Sequence[str], batch_size: int
    ) -> list[Sequence[Marginals]]:
        """Each teacher's encoder features of the sentences bound to it (its corpus), one cache
        per teacher (sharded across ranks under ``torchrun`` as the marginals are)."""
        members: list[list[int]] = [[] for _ in self.teachers]
        for i, c in enumerate(self.corpus):
            self.feature_rows.append(len(members[c]))
            members[c].append(i)
        features: list[Sequence[Marginals]] = []
        for t, ids in enumerate(members):
            words = [list(self.tokens[i]) for i in ids]
            if not words:
                features.append([])
                continue
            slot = {"data": data_hash(words, [t] * len(words)), "features": "encoder"}
            compute = self._feature_computer(self.teachers[t], words)
            batches = bucket_batches([len(w) for w in words], batch_size)
            key = {"teacher": teacher_ids[t]}
            features.append(cached_marginals(cache_dir, slot, key, compute, batches, "features"))
        return features

    @staticmethod
    def _feature_computer(teacher: Model, words: list[list[str]]) -> Compute:
        """``batches -> {i: [features [n_i, H]]}``."""

        @torch.no_grad()
        def compute(batches: list[list[int]]) -> dict[int, Marginals]:
            rows: dict[int, Marginals] = {}
            for ids in batches:
                batch = teacher.collate([words[i] for i in ids]).to(teacher.device)
                hidden = teacher.features(batch)  # [B, N, H]
                for b, i in enumerate(ids):
                    rows[i] = crop([hidden], b, len(words[i]), FEATURE_OFFSETS)
            return rows

        return compute

    def teacher_output(self, batch: Any, indices: Sequence[int]) -> Any:
        """What the teacher bound to training sentences ``indices`` outputs on them (its
        ``forward``'s output, without gradients): its head run on the cached encoder features,
        or the whole teacher when there is no feature cache."""
        t = self.corpus[indices[0]]
        teacher = self.teachers[t]
        with torch.no_grad():
            if self.features is None:
                return teacher(teacher.collate(batch.tokens))
            rows = [self.features[t][self.feature_rows[i]] for i in indices]
            lengths = batch.lengths.to(teacher.device)  # [B]
            width = max(int(lengths.max()), 1)  # as collate pads
            like = torch.zeros((), device=teacher.device)
            hidden = pad_batch(rows, width, FEATURE_OFFSETS, like)  # [B, N, H]
            return teacher.from_features(hidden, lengths)

    def losses(self, output: Any, batch: Any, indices: Sequence[int]) -> Tensor:
        """Per-sentence KD losses [B] of the student's output on training sentences ``indices``.

        Batches must not mix corpora when teachers are bound to corpora (``bucket_batches``
        with ``groups``).
        """
        if self.stored is not None:
            return self.task.structural_loss(
                self.student, output, self._batch_marginals(output, batch, indices),
                self.config.temperature, self.stats,
            )
        teacher = self.teachers[self.corpus[indices[0]]]
        if self.targets is not None:
            assert self.layout is not None
            like = torch.zeros((), device=self.student.device)
            rows = [self.targets[i] for i in indices]
            targets = pad_batch(rows, int(batch.lengths.max()), self.layout, like)
            return self.task.targets_loss(
                teacher, self.student, as_list(targets), output, self.config, self.stats
            )
        source = self.teacher_output(batch, indices)
        return self.task.kd_loss(teacher, self.student, source, output, self.config, self.stats)

    def _batch_marginals(self, output: Any, batch: Any, indices: Sequence[int]) -> Any:
        """The projected marginals of a batch, read from the cache (and decoded from the pair's
        stored form, with the constants of the batch's teacher)."""
        assert self.stored is not None
        like = torch.zeros((), device=self.student.device)
        rows = self.stored.rows(indices)
        width = int(batch.lengths.max())
        if self.form is None:
            return pad_batch(rows, width, self.offsets, like)
        padded = as_list(pad_batch(rows, width, self.form.offsets, like))
        structure = output if isinstance(output, Structure) else output.structure
        constants = {k: v.to(like.device) for k, v in self._constants_of(indices[0]).items()}
        config = self.config
        return self.form.decode(
            padded, constants, structure, config.temperature, config.temperature_mode, self.scheme
        )

    def _constants_of(self, sentence: int) -> dict[str, Tensor]:
        """The stored form's constants of the teacher that taught ``sentence``."""
        by_corpus = self.config.teacher_binding == "corpus"
        return self.constants[self.corpus[sentence] if by_corpus else 0]


class _Projected(Sequence[Marginals]):
    """Each sentence's projected marginals (as ``Distiller.marginals`` holds them without a
    stored form), rebuilt from the stored form on access."""

    def __init__(self, distiller: Distiller) -> None:
        assert distiller.stored is not None and distiller.form is not None
        self.distiller = distiller

    def __len__(self) -> int:
        return len(self.distiller.stored or [])

    def __getitem__(self, i: int) -> Marginals:  # type: ignore[override]
        d = self.distiller
        assert d.stored is not None and d.form is not None
        config = d.config
        return d.form.expand(
            d.stored[i], d._constants_of(i), config.temperature, config.temperature_mode, d.scheme
        )
