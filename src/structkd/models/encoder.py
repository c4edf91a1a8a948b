"""The encoder of a tagger: word embeddings, char CNN and/or transformer, then a BiLSTM."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from structkd.config import EncoderConfig
from structkd.models.inputs import Batch, Vocabularies
from structkd.nn.embeddings import CharCNN, WordEmbedding
from structkd.nn.layers import BiLSTM


class Encoder(nn.Module):
    """Contextual word vectors [B, N, H] from a ``Batch``.

    The word representation is the concatenation of whichever of word embeddings, char CNN
    features and transformer vectors the config switches on (Lample et al., NAACL 2016; Ma & Hovy,
    ACL 2016); an optional BiLSTM contextualises it.

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
        self.words = WordEmbedding(len(vocab.words), config.word_dim) if config.word_dim else None
        self.chars = (
            CharCNN(len(vocab.chars), config.char_dim, config.char_filters)
            if config.char_filters
            else None
        )
        self.transformer = None
        if transformer_dir is not None:
            from structkd.nn.transformer import TransformerEmbedder

            self.transformer = TransformerEmbedder(
                transformer_dir, pretrained=pretrained_transformer, fine_tune=config.fine_tune
            )
        dim = sum(m.dim for m in (self.words, self.chars, self.transformer) if m is not None)
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
        return vocab.collate(
            tokens,
            tags,
            words=self.words is not None,
            chars=self.chars is not None,
            subwords=self.transformer,
        )

    def forward(self, batch: Batch) -> Tensor:
        """Encodes a batch into [B, N, H]."""
        parts = []
        if self.words is not None:
            assert batch.words is not None
            parts.append(self.words(batch.words))  # [B, N, Dw]
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
