"""The sequence tagger: encoder -> head -> structure. Teachers and students are both taggers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from structkd.config import ModelConfig
from structkd.models.base import Model
from structkd.models.checkpoint import register_loader
from structkd.models.encoder import Encoder
from structkd.models.heads import CRFHead, MaxEntHead, SpanHead
from structkd.models.inputs import Batch, Vocabularies
from structkd.models.pretrained import PretrainedInputs
from structkd.nn.transformer import resolve_transformer_path
from structkd.structures.base import Structure
from structkd.structures.tags import detect_scheme, from_spans, to_spans


class Tagger(Model):
    """A named-entity tagger whose output is a ``Structure`` (a distribution over outputs).

    ``structure(batch)`` is all distillation needs; ``loss`` and ``predict`` are the supervised
    objective and the decoder. The head decides the structure: ``crf`` -> LinearChainCRF,
    ``maxent`` -> TokenSoftmax, ``span`` -> SemiMarkovCRF.

    Args:
        config: model config.
        vocab: vocabularies (``build_tagger`` makes them from a corpus).
        transformer_dir: local transformer directory when the config uses one.
        pretrained_transformer: load the transformer's own weights.
    """

    task = "ner"

    def __init__(
        self,
        config: ModelConfig,
        vocab: Vocabularies,
        transformer_dir: str | None = None,
        pretrained_transformer: bool = True,
    ) -> None:
        super().__init__()
        self.config = config
        self.vocab = vocab
        self.encoder = Encoder(config.encoder, vocab, transformer_dir, pretrained_transformer)
        self.head: MaxEntHead | SpanHead
        if config.head.kind == "crf":
            self.head = CRFHead(self.encoder.dim, vocab)
        elif config.head.kind == "maxent":
            self.head = MaxEntHead(self.encoder.dim, vocab)
        else:
            self.head = SpanHead(
                self.encoder.dim, vocab, config.head.span_dim, config.encoder.dropout
            )

    def collate(
        self, tokens: Sequence[Sequence[str]], tags: Sequence[Sequence[str] | None] | None = None
    ) -> Batch:
        """Padded inputs of sentences (words, and gold tags in any scheme where known)."""
        return self.encoder.collate(
            self.vocab,
            [list(t) for t in tokens],
            None if tags is None else [None if t is None else list(t) for t in tags],
        )

    def structure(self, batch: Batch) -> Structure:
        """The model's distribution over outputs for each sentence of the batch."""
        batch = batch.to(self.device)
        return self.from_features(self.encoder(batch), batch.lengths)

    def from_features(self, hidden: Tensor, lengths: Tensor) -> Structure:
        """The structure from encoder features [B, N, H] and lengths [B]: the head only."""
        return self.head(hidden, lengths.to(hidden.device))

    def forward(self, batch: Batch) -> Structure:
        """Same as ``structure`` (so that DistributedDataParallel can wrap a tagger)."""
        return self.structure(batch)

    def nll(self, batch: Batch, structure: Structure | None = None) -> Tensor:
        """Gold negative log-likelihood ``-log P(gold)`` [B]; 0 for unlabeled sentences.

        Args:
            batch: the inputs.
            structure: ``structure(batch)`` if already computed.
        """
        structure = self.structure(batch) if structure is None else structure
        nll = -structure.log_prob(self.head.gold(batch.to(self.device)))  # [B]
        return nll.masked_fill(~batch.labeled.to(nll.device), 0.0)

    def loss(self, batch: Batch) -> Tensor:
        """Mean gold NLL over the batch's labeled sentences (a scalar)."""
        labeled = batch.labeled.sum().clamp(min=1)
        return self.nll(batch).sum() / labeled.to(self.device)

    @torch.no_grad()
    def predict(self, batch: Batch) -> list[list[str]]:
        """Best tags per sentence, in the scheme of the training data."""
        tags = self.head.decode(self.structure(batch))
        scheme = self.vocab.output_scheme
        if scheme == self.vocab.tag_scheme:
            return tags
        return [from_spans(to_spans(t), len(t), scheme) for t in tags]


def build_tagger(
    config: ModelConfig,
    tokens: Sequence[Sequence[str]],
    tags: Sequence[Sequence[str]],
    entity_types: Sequence[str] | None = None,
    output_scheme: str | None = None,
) -> Tagger:
    """A freshly initialised tagger with vocabularies built from a training corpus.

    Args:
        config: model config (pretrained word vectors, if named, are read here).
        tokens: training sentences' words.
        tags: their gold tags (any scheme; it becomes the prediction scheme).
        entity_types: the entity types, when they do not come from ``tags`` (a student
            trained on unlabeled text takes its teacher's).
        output_scheme: the scheme predictions are written in; None: that of ``tags``.

    Raises:
        FileNotFoundError: if the pretrained vectors or the transformer are missing.
        ConfigError: if the pretrained vectors do not fit the config.
    """
    enc = config.encoder
    pretrained = PretrainedInputs.read(enc)
    vocab = Vocabularies.build(
        tokens,
        tags,
        tag_scheme=config.head.tag_scheme,
        output_scheme=output_scheme or detect_scheme(tags),
        min_word_count=pretrained.min_word_count,
        extra_words=pretrained.extra_words,
        entity_types=entity_types,
    )
    transformer_dir = None
    if enc.transformer is not None:
        transformer_dir = resolve_transformer_path(enc.transformer)
    model = Tagger(config, vocab, transformer_dir)
    pretrained.initialise(vocab.words, model.encoder.words, model.encoder.vectors)
    return model


@register_loader(Tagger.task)
def load_tagger(
    config: ModelConfig, vocab: dict[str, Any], transformer_dir: str | None = None
) -> Tagger:
    """The untrained tagger of a checkpoint (its weights are loaded afterwards).

    Args:
        config: the checkpoint's model config.
        vocab: its ``Vocabularies.to_dict()``.
        transformer_dir: its transformer files, when the encoder has a transformer.
    """
    vocabularies = Vocabularies.from_dict(vocab)
    return Tagger(config, vocabularies, transformer_dir, pretrained_transformer=False)
