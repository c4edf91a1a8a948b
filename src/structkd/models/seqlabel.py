"""Dependency parsing as sequence labeling: the student of the paper's cases 1b and 2b.

Strzyz, Vilares & Gomez-Rodriguez (NAACL 2019): each word is tagged with its head's relative
offset and its relation (``"+2@obj"``, ``"ROOT@root"``; see
``structkd.structures.relative_labels``) by an encoder and a softmax per word, a
``TokenSoftmax`` whose parts are exactly (word, label) pairs. The tags need not form a tree, so
decoding takes the maximum spanning tree of the arc scores the label distributions imply
(``structkd.models.seqlabel_decode``: ``decode_scores``, batched as ``decode_batch``): the
output is always a well-formed tree.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from structkd.config import ModelConfig
from structkd.models.depbase import DepBatch, DepModel, DepVocab, ParserOutput
from structkd.models.encoder import Encoder
from structkd.models.seqlabel_decode import decode_batch
from structkd.structures.token_softmax import TokenSoftmax


class SeqLabelParser(DepModel):
    """An encoder and a linear layer to the K relative-offset labels, decoded into trees.

    Args:
        config: model config (``config.parser.kind == "seqlabel"``).
        vocab: words, characters, relations and the K labels.
        transformer_dir: local transformer directory when the encoder uses one.
        pretrained_transformer: load the transformer's own weights.
    """

    def __init__(
        self,
        config: ModelConfig,
        vocab: DepVocab,
        transformer_dir: str | None = None,
        pretrained_transformer: bool = True,
    ) -> None:
        super().__init__()
        if not vocab.labels:
            raise ValueError("a sequence-labeling parser needs a label inventory")
        self.config = config
        self.vocab = vocab
        self.encoder = Encoder(
            config.encoder, vocab.inputs, transformer_dir, pretrained_transformer
        )
        self.scorer = nn.Linear(self.encoder.dim, len(vocab.labels))

    def forward(self, batch: DepBatch) -> ParserOutput:
        """TokenSoftmax over label scores [B, N, K]."""
        batch = batch.to(self.device)
        return self.from_features(self.encoder(batch), batch.lengths)

    def from_features(self, hidden: Tensor, lengths: Tensor) -> ParserOutput:
        """``forward``'s output from encoder features [B, N, H] and lengths [B]."""
        return ParserOutput(TokenSoftmax(self.scorer(hidden), lengths.to(hidden.device)))

    @staticmethod
    def label_nll(structure: TokenSoftmax, labels: Tensor) -> Tensor:
        """``-sum_i log P(label_i)`` [B] for label ids [B, N]; words with id -1 are skipped."""
        log_probs = torch.log_softmax(structure.logits, -1)  # [B, N, K]
        picked = log_probs.gather(-1, labels.clamp(min=0)[..., None])[..., 0]  # [B, N]
        return -(picked * ((labels >= 0) & structure.mask)).sum(-1)

    def nll(self, batch: DepBatch, output: ParserOutput | None = None) -> Tensor:
        """Gold label negative log-likelihood [B] (labels outside the inventory are skipped)."""
        output = self(batch) if output is None else output
        batch = batch.to(self.device)
        assert batch.labels is not None and isinstance(output.structure, TokenSoftmax)
        nll = self.label_nll(output.structure, batch.labels)
        return nll.masked_fill(~batch.labeled, 0.0)

    @torch.no_grad()
    def predict(self, batch: DepBatch) -> list[tuple[list[int], list[str] | None]]:
        structure = self(batch).structure
        assert isinstance(structure, TokenSoftmax)
        log_probs = torch.log_softmax(structure.logits, -1)  # [B, N, K]
        return decode_batch(log_probs, self.vocab.labels, structure.lengths)
