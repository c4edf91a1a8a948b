"""Pretrained word vectors in a model: which vocabulary they need and how they are loaded.

``model.encoder.pretrained_vectors`` names a word-vector text file or a registered source
(``structkd.nn.vector_sources``). With ``freeze_vectors`` (the default) the encoder reads a
frozen ``PretrainedVectors`` module:

* a named source is opened from its package (once per process) and its whole table is the
  vocabulary; a checkpoint stores the source's name (in the model config) and the table's
  SHA-256, not the table, so loading needs the same package installed;
* a text file's words become the model's word vocabulary and its table is a buffer saved with
  the model (a path is no name a checkpoint can rely on).

With ``freeze_vectors: false`` the vectors initialise the trainable word embeddings of the
training vocabulary (plus every word of a word table), which a checkpoint stores as usual.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from structkd.config import ConfigError, EncoderConfig
from structkd.models.inputs import Vocabularies
from structkd.nn.embeddings import WordEmbedding
from structkd.nn.vector_sources import is_named, open_vectors, read_text_table
from structkd.nn.vectors import PretrainedVectors, VectorTable

ONLY_TABLE_WORDS = 2**62
"""A minimum count no training word reaches: the vocabulary is then the table's words only."""


def frozen_vectors(config: EncoderConfig, vocab: Vocabularies) -> PretrainedVectors:
    """The encoder's frozen vector module for ``config.pretrained_vectors``.

    For a text file the table is zeros here: ``PretrainedInputs.initialise`` fills it in a new
    model, and a checkpoint's weights fill it on load.
    """
    name = config.pretrained_vectors
    assert name is not None
    if is_named(name):
        return PretrainedVectors(
            open_vectors(name), config.word_dim, config.project_vectors, saved=False
        )

    def segment(word: str) -> tuple[int, ...]:
        row = vocab.word_id(word)
        return (row,) if row > 1 else ()  # 0 padding, 1 unknown: the learned vector

    table = torch.zeros(len(vocab.words), config.word_dim)
    source = VectorTable(name, table, segment, words=vocab.words)
    return PretrainedVectors(source, config.word_dim, config.project_vectors, saved=True)


@dataclass
class PretrainedInputs:
    """What building a model needs of its pretrained vectors.

    Attributes:
        config: the encoder config.
        extra_words: words the vocabulary must hold besides the training words.
        min_word_count: the vocabulary's minimum training count.
        table: the vectors read (None without pretrained vectors).
    """

    config: EncoderConfig
    extra_words: Sequence[str]
    min_word_count: int
    table: VectorTable | None

    @classmethod
    def read(cls, config: EncoderConfig) -> PretrainedInputs:
        """Reads (or opens) the config's pretrained vectors.

        Raises:
            ConfigError: if the config cannot use them (no word_dim, sizes that disagree).
            FileNotFoundError: if the file or the source's package is missing.
        """
        name = config.pretrained_vectors
        if name is None:
            return cls(config, (), config.min_word_count, None)
        where = "model.encoder"
        if config.word_dim <= 0:
            raise ConfigError(f"{where}.pretrained_vectors needs {where}.word_dim > 0")
        table = open_vectors(name) if is_named(name) else read_text_table(name)
        fixed = not is_named(name) or not config.freeze_vectors  # table rows = vocabulary rows
        if fixed and table.dim != config.word_dim:
            raise ConfigError(
                f"{where}.word_dim={config.word_dim} but {name} holds {table.dim}-d vectors "
                f"(set {where}.word_dim: {table.dim})"
            )
        blind = not (config.casing_dim or config.char_filters or config.transformer)
        if config.freeze_vectors and table.lowercased and blind:
            warnings.warn(
                f"{name} is lowercased and frozen, and the encoder has no casing feature or char "
                f"CNN: the model cannot see capitalisation (set {where}.casing_dim, e.g. 8)",
                stacklevel=2,
            )
        if config.freeze_vectors and is_named(name):
            return cls(config, (), ONLY_TABLE_WORDS, table)  # no word ids: the table has its own
        if config.freeze_vectors:
            return cls(config, table.words or (), ONLY_TABLE_WORDS, table)
        return cls(config, table.words or (), config.min_word_count, table)

    def initialise(
        self,
        vocabulary: Sequence[str],
        words: WordEmbedding | None,
        vectors: PretrainedVectors | None,
    ) -> None:
        """Copies the vectors into a new model: its trainable word embeddings (fine-tuning) or
        its frozen text-file table. O(V D) for a vocabulary of V words.

        Args:
            vocabulary: the model's word vocabulary (row i = word i).
            words: the encoder's word embeddings, if it has them.
            vectors: the encoder's frozen vectors, if it has them.
        """
        if self.table is None or (words is None and (vectors is None or not vectors.saved)):
            return  # nothing to copy: a named frozen table is read in place
        found = {}
        for row, word in enumerate(vocabulary):
            vector = self.table.vector(word) if row > 1 else None  # not padding, unknown
            if vector is not None:
                found[word] = vector
        if words is not None:
            words.load_pretrained(vocabulary, found)
        if vectors is not None and vectors.saved:
            table = vectors.get_buffer("table")
            with torch.no_grad():
                for row, word in enumerate(vocabulary):
                    if word in found:
                        table[row] = found[word]
