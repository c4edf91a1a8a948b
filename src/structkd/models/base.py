"""What the trainer, checkpoints and distillation need of every model family."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar, TypeVar

import torch
from torch import Tensor, nn

from structkd.config import ModelConfig
from structkd.data.batching import bucket_batches
from structkd.models.encoder import Encoder

M = TypeVar("M", bound=nn.Module)


@contextmanager
def evaluating(model: M) -> Iterator[M]:
    """``model`` in eval mode for the block (no dropout, so no draw from the global RNG)."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


class Model(nn.Module, ABC):
    """Base class of the models a run trains: encoder -> head -> structure.

    ``forward(batch)`` returns the model's output (a ``Structure``, or a structure with extras
    such as relation scores); the task (``structkd.tasks``) reads it. A checkpoint stores
    ``config``, ``vocab.to_dict()`` and ``task``, which names the task that rebuilds the model.

    Attributes:
        task: the task this model family serves (``"ner"``, ``"dep"``).
        config: the model config.
        vocab: the vocabularies (anything with ``to_dict``).
        encoder: the word encoder (its transformer, if any, is saved beside the weights).
    """

    task: ClassVar[str]
    config: ModelConfig
    vocab: Any
    encoder: Encoder

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @abstractmethod
    def collate(self, words: Sequence[Sequence[str]], /) -> Any:
        """Padded inputs of sentences given as words (no gold outputs)."""

    def features(self, batch: Any) -> Tensor:
        """What ``from_features`` takes [B, N, H]: the encoder's output (cached by distillation)."""
        return self.encoder(batch)

    def as_teacher_of(self, student: Model) -> Model:
        """This model as a teacher of ``student``: itself, unless its outputs must first be
        expressed on the student's labels (a foreign teacher, ``structkd.models.hf_teacher``).

        Raises:
            ConfigError: if it cannot teach the student.
        """
        return self

    def predict(self, batch: Any) -> list[Any]:
        """The decoded output of each sentence of ``batch`` (a tag list, a tree, ...).

        Raises:
            TypeError: for a model that only teaches (a Hugging Face tagger, a marginal file).
        """
        raise TypeError(f"a {type(self).__name__} teaches only; it does not predict")

    @abstractmethod
    def from_features(self, hidden: Tensor, lengths: Tensor) -> Any:
        """The model's output (what ``forward`` returns) from encoder features: the head only.

        ``forward(batch)`` is ``from_features(encoder(batch), batch.lengths)``; distillation
        caches a teacher's encoder features once and rebuilds its output per batch with this.

        Args:
            hidden: encoder features [B, N, H] (padding arbitrary).
            lengths: LongTensor [B].
        """

    @abstractmethod
    def nll(self, batch: Any, output: Any = None) -> Tensor:
        """Gold negative log-likelihood [B] (0 for unlabeled sentences).

        Args:
            batch: collated inputs with gold outputs where known.
            output: ``forward(batch)`` if already computed.
        """


def predict_sentences(
    model: Model, words: Sequence[Sequence[str]], batch_size: int = 64
) -> list[Any]:
    """``model.predict``'s output for each sentence, in input order: what every task predicts,
    evaluates and writes, and what the speed benchmark times.

    Sentences are batched by length (``bucket_batches``), run in eval mode without gradients;
    the model's training mode is restored afterwards.

    Args:
        model: any model that predicts (a tagger: tag lists; a parser: (heads, relations)).
        words: the sentences' words.
        batch_size: sentences per batch.
    """
    out: list[Any] = [None] * len(words)
    with evaluating(model), torch.no_grad():
        for ids in bucket_batches([len(w) for w in words], batch_size):
            for i, output in zip(ids, model.predict(model.collate([words[i] for i in ids]))):
                out[i] = output
    return out
