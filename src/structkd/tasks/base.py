"""The task interface: everything the trainer, distiller and CLI ask of a model family.

The training loop, the checkpoints, the teacher-marginal cache and the command line are shared by
every task; what differs (how a corpus is read, how a model is built and scored, what a teacher's
marginals look like on the student's parts) is one ``Task`` subclass per task.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, ClassVar, TextIO

from torch import Tensor

from structkd.config import ConfigError, DistillConfig, ModelConfig
from structkd.data.errors import DataError
from structkd.kd.projections import tempered_projection
from structkd.models.base import Model
from structkd.structures.base import Structure

Stats = dict[str, float]
"""Running sums a KD loss may add to (e.g. teacher mass the student cannot express)."""


def projected_marginals(
    teacher: Structure, student: Structure, config: DistillConfig, tag_scheme: str = "BIOES"
) -> Any:
    """Teacher marginals on the student's parts, tempered as ``kd.structural_kd_loss`` does:
    ``global`` tempers the teacher's potentials, ``local`` each slot of its marginals."""
    return tempered_projection(
        teacher, student, config.temperature, config.temperature_mode, tag_scheme
    )


class Task(ABC):
    """One task: its corpora, model family, metrics and distillation.

    Attributes:
        name: the ``task`` value of a run config.
        formats: the ``data.format`` values its readers take.
        kd_methods: the ``distill.method`` values it implements.
        log_metrics: dev metrics written to the training log each epoch (as ``dev_NAME``).
        report_metrics: metrics written to ``metrics.json`` per split.
        score_metrics: the metrics of ``metrics.json`` a results table shows per split; the last
            is the score that ranks runs (``structkd report``). ``metrics.json`` names no task:
            the one whose ``score_metrics`` it reports is its task (see ``task_reporting``).
        max_words: the longest sentence ``predict`` and ``predict_file`` accept (prediction
            memory grows linearly with it for taggers, quadratically for parsers); a longer
            one is refused with an error naming it, never tried until memory runs out.
    """

    name: ClassVar[str]
    max_words: ClassVar[int]
    formats: ClassVar[tuple[str, ...]]
    kd_methods: ClassVar[tuple[str, ...]]
    log_metrics: ClassVar[tuple[str, ...]]
    report_metrics: ClassVar[tuple[str, ...]]
    score_metrics: ClassVar[tuple[str, ...]]

    # ---- data ---------------------------------------------------------------------------------
    def within_max_words(self, sentences: Iterable[Any], path: str) -> Iterator[Any]:
        """The sentences of a prediction input as they stream by, each checked against
        ``max_words``.

        Raises:
            DataError: for a longer sentence, naming the file and the sentence's first line.
        """
        for sentence in sentences:
            n = len(self.words(sentence))
            if n > self.max_words:
                raise DataError(
                    path, _too_long(n, self.max_words), getattr(sentence, "line", 0) or None
                )
            yield sentence

    def check_max_words(self, words: Sequence[Sequence[str]]) -> None:
        """``within_max_words`` for sentences given as word lists.

        Raises:
            ValueError: naming the first longer sentence by its index.
        """
        for i, sentence in enumerate(words):
            if len(sentence) > self.max_words:
                raise ValueError(f"input {i}: {_too_long(len(sentence), self.max_words)}")

    @abstractmethod
    def read_labeled(self, path: str, fmt: str) -> list[Any]:
        """Sentences with gold outputs (``resource:NAME`` names a bundled file).

        Raises:
            DataError: if the file is malformed or has no gold outputs.
        """

    @abstractmethod
    def read_unlabeled(self, path: str) -> list[Any]:
        """Sentences without gold outputs (used for distillation only)."""

    def iter_unlabeled(self, path: str) -> Iterator[Any]:
        """``read_unlabeled``'s sentences one by one (a task whose reader streams yields them as
        the file is read, so that a multi-GB corpus is never held as text)."""
        return iter(self.read_unlabeled(path))

    @abstractmethod
    def words(self, sentence: Any) -> list[str]:
        """The sentence's words."""

    @abstractmethod
    def is_labeled(self, sentence: Any) -> bool:
        """Whether the sentence has gold outputs."""

    # ---- models -------------------------------------------------------------------------------
    @abstractmethod
    def build_model(
        self, config: ModelConfig, sentences: Sequence[Any], teachers: Sequence[Model] = ()
    ) -> Model:
        """A freshly initialised model with vocabularies from the training sentences (labeled
        and unlabeled).

        Args:
            config: the model's config.
            sentences: the training sentences.
            teachers: the run's teachers; a task that can take its label set from them does so
                when no training sentence is labeled (distillation on unlabeled text alone).

        Raises:
            ConfigError: no sentence is labeled and the label set cannot come from ``teachers``.
        """

    @abstractmethod
    def load_model(
        self, config: ModelConfig, vocab: dict[str, Any], transformer_dir: str | None
    ) -> Model:
        """The model of a checkpoint, before its weights are loaded."""

    @abstractmethod
    def collate(self, model: Model, sentences: Sequence[Any]) -> Any:
        """The model's batch of sentences, gold outputs included where known."""

    # ---- evaluation ---------------------------------------------------------------------------
    @abstractmethod
    def evaluate(
        self, model: Model, sentences: Sequence[Any], include_punct: bool = False
    ) -> dict[str, Any]:
        """Scores against the gold outputs (percent) and ``tokens_per_second``."""

    @abstractmethod
    def selection_score(self, scores: dict[str, Any]) -> float:
        """The dev number that selects the best epoch (higher is better)."""

    @abstractmethod
    def summary(self, split: str, scores: dict[str, Any]) -> str:
        """One line for the command line."""

    @abstractmethod
    def predict(
        self, model: Model, words: Sequence[Sequence[str]], batch_size: int = 64
    ) -> list[Any]:
        """The model's outputs for these sentences, in input order (length-bucketed batches,
        eval mode, no gradients): what ``evaluate`` scores and the speed benchmark times."""

    @abstractmethod
    def predict_file(self, model: Model, path: str, fmt: str, out: TextIO) -> int:
        """Predicts every sentence of a file, streamed, and writes them; returns the count."""

    # ---- distillation -------------------------------------------------------------------------
    @abstractmethod
    def check_teachers(self, teachers: Sequence[Model], student: Model) -> None:
        """Raises ConfigError unless every teacher can distil into the student (called under
        ``torch.no_grad`` with the student in eval mode)."""

    @abstractmethod
    def cache_slot(self, student: Model) -> Any:
        """JSON data naming the student's part layout (part of the marginal cache's name)."""

    @abstractmethod
    def student_parts(self, student: Model, words: list[list[str]]) -> list[Tensor]:
        """Tensors in the layout ``project`` returns, for these sentences (shapes are read)."""

    @abstractmethod
    def project(
        self, teacher: Model, student: Model, words: list[list[str]], config: DistillConfig
    ) -> list[Tensor]:
        """The teacher's marginals on the student's parts, tempered by ``config`` as
        ``projected_marginals`` does, batched over ``words`` and detached: what the cache holds
        and ``structural_loss`` reads."""

    def teacher_structure(self, teacher: Model, words: list[list[str]]) -> Structure:
        """The teacher's structure on ``words`` (what ``stored_structures`` returns first)."""
        raise ConfigError(f"task {self.name} stores projected marginals only")

    def stored_structures(
        self, teacher: Model, student: Model, words: list[list[str]]
    ) -> tuple[Structure, Structure, str] | None:
        """The teacher's and the student's structures on ``words`` and the student's tag scheme,
        when ``project`` is ``projected_marginals`` of exactly these (so that a stored form,
        ``structkd.kd.stored``, may stand in for the projected marginals); None otherwise (the
        cache then holds the projected marginals)."""
        return None

    @abstractmethod
    def structural_loss(
        self, student: Model, output: Any, parts: Any, temperature: float, stats: Stats
    ) -> Tensor:
        """Structural KD [B] from projected marginals (a tensor, or a tuple of tensors)."""

    def target_layout(self, student: Model, config: DistillConfig) -> list[list[int | None]] | None:
        """Layout of one sentence's ``kd_targets`` rows for ``crop``/``pad_batch`` (per tensor
        and non-batch dimension, ``size - N`` if it grows with N, else None), or None when the
        method's targets are not cached (the teacher's head then runs per batch)."""
        return None

    def kd_targets(
        self,
        teacher: Model,
        student: Model,
        source: Any,
        config: DistillConfig,
        words: list[list[str]] | None = None,
    ) -> list[Tensor]:
        """What ``config.method`` distils from the teacher's output ``source`` on a batch of
        ``words``, batch-first, in the layout ``target_layout`` names (numbers as floats are
        fine: the cache stores float32). A constant of the frozen teacher, so ``Distiller``
        computes it once per sentence and caches it."""
        raise ConfigError(f"task {self.name} caches no targets for {config.method}")

    def targets_loss(
        self,
        teacher: Model,
        student: Model,
        targets: list[Tensor],
        output: Any,
        config: DistillConfig,
        stats: Stats,
    ) -> Tensor:
        """The KD loss [B] of the student's ``output`` from batched ``kd_targets``."""
        raise ConfigError(f"task {self.name} caches no targets for {config.method}")

    @abstractmethod
    def kd_loss(
        self,
        teacher: Model,
        student: Model,
        source: Any,
        output: Any,
        config: DistillConfig,
        stats: Stats,
    ) -> Tensor:
        """A baseline KD [B] (any method but ``structural``).

        Args:
            teacher: the teacher (its vocabularies and decoders).
            student: the student.
            source: the teacher's output on the batch, as its ``forward`` returns it (built
                without gradients, by ``Distiller.teacher_output``).
            output: the student's output on the batch.
            config: method, temperature, k.
            stats: running sums the loss may add to.
        """


def _too_long(words: int, max_words: int) -> str:
    return (
        f"a sentence of {words:,} words; this model predicts at most {max_words:,} words per "
        "sentence: split it"
    )
