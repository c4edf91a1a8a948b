"""What the trainer, checkpoints and distillation need of every model family."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar, TypeVar

import torch
from torch import Tensor, nn

from structkd.config import ModelConfig
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
