"""Distillation objective: per-sentence KD losses from one or several teachers.

Training loss (Wang et al., ACL 2021, section 4): ``lambda * KD + (1 - lambda) * NLL(gold)`` for
labeled sentences, ``KD`` alone for unlabeled ones, with lambda annealed from 1 to 0 over training
(teacher annealing, Clark et al., ACL 2019) or fixed. With several teachers each sentence learns
from the teacher bound to its corpus, or from the average of all teachers' projected marginals.

The KD loss is the run's method (``structkd.kd.methods``, by ``distill.method``) asked about a
pair of models (``structkd.models.pairs``): ``targets`` of what the teacher gives a batch, then
``loss`` of the student's output against them. Teachers are frozen and in eval mode (no
dropout), so a sentence's targets never change and are computed once: Structural KD's projected
marginals (or a smaller form that rebuilds them, ``structkd.kd.stored``) and the per-sentence
targets of the methods with a ``layout`` (Token, Posterior, Top-1/Top-K/Top-WK) are cached on
disk, so neither the teacher nor its decoder runs during training. A method whose target is the
teacher's output on each batch (sub-structure MSE) gets it from the teacher's head run on its
cached encoder features, which gives the output the whole teacher would. With
``distill.cache_teacher`` false the same targets are computed from the whole teacher on each
batch: one path, cached or not.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from structkd.config import ConfigError, DistillConfig
from structkd.data.batching import bucket_batches
from structkd.kd.methods import KDMethod, get_method, methods_for
from structkd.kd.stored import StoredForm, stored_form
from structkd.models.base import Model, evaluating
from structkd.models.pair import Pair
from structkd.models.pairs import pair_of
from structkd.structures.base import Structure, as_list
from structkd.train.cache import (
    CachedRows,
    Compute,
    Marginals,
    cached_marginals,
    crop,
    data_hash,
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


def check_teachers(teachers: Sequence[Model], student: Model) -> list[Pair]:
    """The teachers bound to ``student`` as KD pairs (``structkd.models.pairs``; each teacher
    ``Model.as_teacher_of`` the student: a foreign teacher's labels mapped onto the student's);
    raises ConfigError unless every teacher serves the student's task and can teach it (each
    pair probes itself, in eval mode so that no dropout draws from the RNG)."""
    for i, teacher in enumerate(teachers):
        if teacher.task != student.task:
            raise ConfigError(
                f"teacher {i + 1} is a {teacher.task} model, the student a {student.task} model"
            )
    pairs = [pair_of(t.as_teacher_of(student), student) for t in teachers]
    with torch.no_grad(), evaluating(student):
        for i, pair in enumerate(pairs):
            pair.check(i)
    return pairs


class Distiller:
    """Computes ``KD`` [B] for student batches.

    What the teacher gives a sentence and the loss on it come from the method
    (``structkd.kd.methods``) and the pair of models it asks (``structkd.models.pairs``); this
    class binds teachers to sentences, caches the method's targets (structural KD's projected
    marginals, the per-sentence targets of methods with a layout) or the teachers' encoder
    features (methods that read the teacher's output per batch), unless ``config.cache_teacher``
    is false, and schedules lambda.

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
        self.pairs = check_teachers(teachers, student)
        self.teacher_names = list(teacher_names or [str(i + 1) for i in range(len(teachers))])
        supported = methods_for(self.pairs[0])
        if config.method not in supported:
            raise ConfigError(
                f"distill.method={config.method} is not available for task {student.task} "
                f"with a {self.pairs[0].teacher_kind} teacher; choose one of "
                f"{', '.join(supported)}"
            )
        self.method: KDMethod = get_method(config.method)
        if config.teacher_binding == "average" and not self.method.projects:
            raise ConfigError("teacher_binding=average needs distill.method=structural")
        self.teachers = [p.teacher.eval() for p in self.pairs]
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
        self.targets: Sequence[Marginals] | None = None  # per sentence: the method's targets
        self.layout = None if self.method.projects else self.method.layout(self.pairs[0])
        self.features: list[Sequence[Marginals]] | None = None  # per teacher, sentence: [[n, H]]
        self.feature_rows: list[int] = []  # sentence -> its row in its teacher's features
        with evaluating(student):  # probes draw nothing from the RNG (resumed runs match)
            self.offsets = position_offsets(self.pairs[0].student_parts)
        if self.method.projects:
            self._choose_form()
            slot = {"data": data_hash(tokens, corpus), "student": self.pairs[0].slot()}
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
                "student": self.pairs[0].slot(),
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
            for bound in self.pairs:
                probe = getattr(bound.teacher, "probe_words", [["a", "b"]])  # a file knows words
                pair = bound.stored_structures(probe)
                form = stored_form(pair[0], pair[1], self.offsets) if pair is not None else None
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
        compute: Callable[[list[Pair], list[list[str]]], list[Tensor]],
        check: Callable[[Marginals], str | None],
    ) -> Compute:
        """The cache's compute: ``compute(pairs, words)`` (batch-first tensors in the
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
                chosen = [self.pairs[self.corpus[ids[0]]]] if by_corpus else self.pairs
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

            def encoded(pairs: list[Pair], words: list[list[str]]) -> list[Tensor]:
                (bound,) = pairs
                temperature, mode = config.temperature, config.temperature_mode
                if not form.needs_student:  # the student's network need not run
                    source = bound.teacher_structure(words)
                    return form.encode(source, None, temperature, mode, self.scheme)
                pair = bound.stored_structures(words)
                assert pair is not None
                return form.encode(pair[0], pair[1], temperature, mode, pair[2])

            # Potentials are no probabilities; finite ones give valid marginals when decoded.
            def finite(row: Marginals) -> str | None:
                bad = any(not bool(torch.isfinite(t).all()) for t in row)
                return "NaN or infinite values" if bad else None

            if form.marginals:
                return self._per_sentence(
                    form.offsets, encoded, lambda row: _not_probabilities(row, distributions=False)
                )
            return self._per_sentence(form.offsets, encoded, finite)

        def mean(pairs: list[Pair], words: list[list[str]]) -> list[Tensor]:
            parts = [self.method.targets(p, None, words, config) for p in pairs]
            return [torch.stack(group).mean(0) for group in zip(*parts)]

        def check(row: Marginals) -> str | None:
            return _not_probabilities(row, distributions=False)

        return self._per_sentence(self.offsets, mean, check)

    def _compute_targets(self) -> Compute:
        """The task's targets of the sentences of some batches, each from the teacher bound to
        its corpus (the whole teacher runs once per sentence)."""
        assert self.layout is not None

        def targets(pairs: list[Pair], words: list[list[str]]) -> list[Tensor]:
            (pair,) = pairs  # k-best and token targets are distilled by corpus binding
            source = pair.teacher_output(words)
            return list(self.method.targets(pair, source, words, self.config))

        # A k-best target holds tag or head ids besides its weights [K]: only the weights (the
        # last tensor) are a distribution.
        def check(row: Marginals) -> str | None:
            return _not_probabilities(self.method.check_rows(row), distributions=True)

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
        pair = self.pairs[self.corpus[indices[0]]]
        targets: Any
        if self.stored is not None:  # the teacher's projected marginals, from the cache
            targets = self._batch_marginals(output, batch, indices)
        elif self.targets is not None:  # the method's targets, from the cache
            assert self.layout is not None
            like = torch.zeros((), device=self.student.device)
            rows = [self.targets[i] for i in indices]
            targets = as_list(pad_batch(rows, int(batch.lengths.max()), self.layout, like))
        else:  # the same targets from the teacher's output on this batch
            source = self.teacher_output(batch, indices)
            words = [list(w) for w in batch.tokens]
            targets = self.method.targets(pair, source, words, self.config)
        return self.method.loss(pair, targets, output, self.config, self.stats)

    def _batch_marginals(self, output: Any, batch: Any, indices: Sequence[int]) -> Any:
        """The projected marginals of a batch read from the cache, or, with a stored form, what
        the loss reads of them (``StoredForm.loss_targets``, with the constants of the batch's
        teacher)."""
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
        return self.form.loss_targets(
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
