"""The encoder of a tagger: word embeddings or frozen pretrained vectors, casing, char CNN and/or
transformer, then a BiLSTM."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from structkd.config import EncoderConfig
from structkd.models.inputs import Batch, Vocabularies
from structkd.models.pretrained import frozen_vectors
from structkd.nn.embeddings import CasingEmbedding, CharCNN, WordEmbedding, casing_ids
from structkd.nn.layers import BiLSTM
from structkd.nn.transformer import TransformerEmbedder


class Encoder(nn.Module):
    """Contextual word vectors [B, N, H] from a ``Batch``.

    The word representation is the concatenation of whichever of word embeddings (or frozen
    pretrained vectors, ``structkd.models.pretrained``), casing features, char CNN features and
    transformer vectors the config switches on (Lample et al., NAACL 2016; Ma & Hovy, ACL 2016);
    an optional BiLSTM contextualises it.

    Args:
        config: sizes and switches.
        vocab: word and character vocabularies.
        transformer_dir: local transformer directory (when ``config.transformer`` is set).
        pretrained_transformer: load the transformer's own weights (false when a structkd
            checkpoint provides them).

    Raises:
        ValueError: if the config switches every word representation off.
    """

    def __init__(
        self,
        config: EncoderConfig,
        vocab: Vocabularies,
        transformer_dir: str | None = None,
        pretrained_transformer: bool = True,
    ) -> None:
        super().__init__()
        frozen = bool(config.pretrained_vectors) and config.freeze_vectors and config.word_dim > 0
        self.vectors = frozen_vectors(config, vocab) if frozen else None
        self.words = (
            WordEmbedding(len(vocab.words), config.word_dim)
            if config.word_dim and not frozen
            else None
        )
        self.casing = CasingEmbedding(config.casing_dim) if config.casing_dim else None
        self.chars = (
            CharCNN(len(vocab.chars), config.char_dim, config.char_filters)
            if config.char_filters
            else None
        )
        self.transformer = None
        if transformer_dir is not None:
            self.transformer = TransformerEmbedder(
                transformer_dir, pretrained=pretrained_transformer, fine_tune=config.fine_tune
            )
        parts = (self.words, self.vectors, self.casing, self.chars, self.transformer)
        dim = sum(m.dim for m in parts if m is not None)
        if dim == 0:
            raise ValueError("the encoder needs word_dim, char_filters or a transformer")
        self.dropout = nn.Dropout(config.dropout)
        self.lstm = (
            BiLSTM(dim, config.lstm_hidden, config.lstm_layers, config.dropout)
            if config.lstm_hidden
            else None
        )
        self.dim = self.lstm.dim if self.lstm is not None else dim

    def collate(
        self, vocab: Vocabularies, tokens: list[list[str]], tags: list[list[str] | None] | None
    ) -> Batch:
        """Builds exactly the inputs this encoder reads."""
        batch = vocab.collate(
            tokens,
            tags,
            words=self.words is not None,
            chars=self.chars is not None,
            subwords=self.transformer,
        )
        width = max((len(s) for s in tokens), default=0) or 1  # as vocab.collate pads
        if self.vectors is not None:
            batch.vectors = self.vectors.rows(tokens, width)
        if self.casing is not None:
            batch.casing = casing_ids(tokens, width)
        return batch

    def forward(self, batch: Batch) -> Tensor:
        """Encodes a batch into [B, N, H]."""
        parts = []
        if self.words is not None:
            assert batch.words is not None
            parts.append(self.words(batch.words))  # [B, N, Dw]
        if self.vectors is not None:
            assert batch.vectors is not None
            parts.append(self.vectors(batch.vectors))  # [B, N, Dw]
        if self.casing is not None:
            assert batch.casing is not None
            parts.append(self.casing(batch.casing))  # [B, N, Dc]
        if self.chars is not None:
            assert batch.chars is not None
            parts.append(self.chars(batch.chars))  # [B, N, F]
        if self.transformer is not None:
            assert batch.subwords is not None and batch.subword_lengths is not None
            assert batch.first_subword is not None
            parts.append(
                self.transformer(batch.subwords, batch.subword_lengths, batch.first_subword)
            )  # [B, N, Ht]
        hidden = self.dropout(torch.cat(parts, -1))  # [B, N, D]
        if self.lstm is not None:
            hidden = self.lstm(hidden, batch.lengths)  # [B, N, 2H]
        return hidden
