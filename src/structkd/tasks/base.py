"""The task interface: what the trainer and the CLI ask of a task: its corpora, its models,
its scores.

The training loop, the checkpoints, the teacher cache and the command line are shared by every
task; what differs (how a corpus is read, how a model is built and scored, how predictions are
written) is one ``Task`` subclass per task, registered by name with ``register_task`` where it is
defined: ``get_task`` and the command line's format choices ask the registry, never a list of
task names. Distillation is not a task's business: the KD methods are objects in
``structkd.kd.methods`` and ask a pair of models (``structkd.models.pairs``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, ClassVar, TextIO, TypeVar

from structkd.config import ConfigError, ModelConfig
from structkd.data.errors import DataError
from structkd.models.base import Model, predict_sentences


class Task(ABC):
    """One task: its corpora, model family, metrics and distillation.

    Attributes:
        name: the ``task`` value of a run config (the name it is registered under).
        formats: the ``data.format`` values its readers of labeled data take.
        input_formats: the ``--format`` values ``predict_file`` reads (``formats`` and any
            unlabeled-text formats).
        log_metrics: dev metrics written to the training log each epoch (as ``dev_NAME``).
        report_metrics: metrics written to ``metrics.json`` per split.
        score_metrics: the metrics of ``metrics.json`` a results table shows per split; the last
            is the score that ranks runs (``structkd report``). ``metrics.json`` names no task:
            the one whose ``score_metrics`` it reports is its task (see ``task_reporting``).
        metric_labels: how a table heads each of ``score_metrics`` (``f1`` -> ``F1``).
        max_words: the longest sentence ``predict`` and ``predict_file`` accept (prediction
            memory grows linearly with it for taggers, quadratically for parsers); a longer
            one is refused with an error naming it, never tried until memory runs out.
    """

    name: ClassVar[str]
    max_words: ClassVar[int]
    formats: ClassVar[tuple[str, ...]]
    input_formats: ClassVar[tuple[str, ...]]
    log_metrics: ClassVar[tuple[str, ...]]
    report_metrics: ClassVar[tuple[str, ...]]
    score_metrics: ClassVar[tuple[str, ...]]
    metric_labels: ClassVar[Mapping[str, str]]

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

    def check_format(self, fmt: str, formats: Sequence[str] | None = None) -> None:
        """Refuses a format outside ``formats`` (default: the task's ``formats``).

        Raises:
            ConfigError: naming the formats the task reads.
        """
        choices = self.formats if formats is None else formats
        if fmt not in choices:
            raise ConfigError(f"task {self.name} reads formats {', '.join(choices)}, not {fmt!r}")

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

    def predict(
        self, model: Model, words: Sequence[Sequence[str]], batch_size: int = 64
    ) -> list[Any]:
        """The model's outputs for these sentences, in input order (``predict_sentences``:
        length-bucketed batches, eval mode, no gradients): tag lists for a tagger, (heads,
        relations) for a parser; what ``evaluate`` scores and the speed benchmark times.

        Raises:
            ValueError: for a sentence longer than ``max_words``.
        """
        self.check_max_words(words)
        return predict_sentences(model, words, batch_size)

    @abstractmethod
    def predict_file(self, model: Model, path: str, fmt: str, out: TextIO) -> int:
        """Predicts every sentence of a file, streamed, and writes them; returns the count."""

    @abstractmethod
    def read_inputs(self, path: str, fmt: str) -> Iterator[Any]:
        """The sentences of a prediction input, streamed (``input_formats``; gold outputs, where
        the file has them, are ignored).

        Raises:
            ConfigError: for a format the task does not read.
        """

    @abstractmethod
    def write_predictions(
        self, sentences: Sequence[Any], predicted: Sequence[Any], out: TextIO
    ) -> int:
        """Writes the sentences with their predicted outputs (``predict``'s) in the task's
        output format; returns how many were written."""

    @abstractmethod
    def score(
        self, sentences: Sequence[Any], predicted: Sequence[Any], include_punct: bool = False
    ) -> dict[str, Any]:
        """``evaluate``'s scores (percent, without the speed) of predicted outputs against the
        sentences' gold ones."""

    @abstractmethod
    def sentence_counts(
        self, sentences: Sequence[Any], predicted: Sequence[Any], include_punct: bool = False
    ) -> tuple[str, list[tuple[int, int, int]]]:
        """The metric the task's score is (``f1``, ``las`` or ``uas``) and, per sentence, the
        three counts it is computed from (for paired significance tests,
        ``structkd.lab.significance``)."""


T = TypeVar("T", bound=type[Task])

_TASKS: dict[str, type[Task]] = {}


def register_task(cls: T) -> T:
    """Class decorator: registers a ``Task`` subclass under its ``name``.

    Raises:
        ValueError: if another task has the name.
    """
    if cls.name in _TASKS and _TASKS[cls.name] is not cls:
        raise ValueError(f"task {cls.name!r} is registered twice")
    _TASKS[cls.name] = cls
    return cls


def task_names() -> tuple[str, ...]:
    """The registered task names, sorted."""
    return tuple(sorted(_TASKS))


def get_task(name: str) -> Task:
    """A fresh instance of the task registered as ``name``.

    Raises:
        ConfigError: for a name no task is registered under, worded as the config's own type
            errors (``task: expected one of 'dep' | 'ner', got 'pos'``).
    """
    cls = _TASKS.get(name) if isinstance(name, str) else None
    if cls is None:
        names = " | ".join(repr(n) for n in task_names())
        raise ConfigError(f"task: expected one of {names}, got {name!r}")
    return cls()


def all_formats() -> tuple[str, ...]:
    """Every format some registered task reads or predicts from, sorted (``--format``'s
    choices)."""
    return tuple(sorted({f for cls in _TASKS.values() for f in cls.input_formats}))


def task_reporting(scores: Mapping[str, Any]) -> Task | None:
    """The registered task whose ``score_metrics`` are all among ``scores`` (one split of a
    ``metrics.json``), None when there is none: how a results file tells its task.
    """
    for name in task_names():
        task = get_task(name)
        if all(metric in scores for metric in task.score_metrics):
            return task
    return None


def _too_long(words: int, max_words: int) -> str:
    return (
        f"a sentence of {words:,} words; this model predicts at most {max_words:,} words per "
        "sentence: split it"
    )
