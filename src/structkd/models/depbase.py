"""What every dependency model shares: vocabularies, padded batches with gold trees, the output
type and the base class.

Trees follow ``structkd.data.conllu``: a sentence of n words has heads ``1..n -> 0..n``
(0 = ROOT) and one relation per word. Tensors use the structures' arc layout: position 0 is
ROOT, words are 1..n, so gold heads are LongTensor [B, N+1] with index 0 and padding unused.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import Tensor

from structkd.data.deplabels import encode_relative
from structkd.data.trees import is_projective
from structkd.models.base import Model
from structkd.models.inputs import Batch, Vocabularies
from structkd.structures.base import Structure

Tree = tuple[Sequence[int], Sequence[str] | None]
"""Gold (or predicted) heads of n words, 1-based with 0 = ROOT, and their relations or None."""


@dataclass
class DepVocab:
    """Words, characters, relations and sequence labels of a parser, saved with it as JSON.

    Attributes:
        words: word list; 0 = padding, 1 = unknown.
        chars: character list; 0 = padding, 1 = unknown.
        rels: relation inventory (sorted); empty for an unlabeled parser.
        labels: relative-offset labels of a sequence-labeling parser (sorted; see
            ``structkd.structures.relative_labels``), empty for graph-based parsers.
    """

    words: list[str]
    chars: list[str]
    rels: list[str]
    labels: list[str]

    def __post_init__(self) -> None:
        # The encoder's inputs (word and char ids) are built exactly as a tagger's.
        self.inputs = Vocabularies(self.words, self.chars, [])
        self.rel_index = {r: i for i, r in enumerate(self.rels)}
        self.label_index = {label: i for i, label in enumerate(self.labels)}

    @classmethod
    def build(
        cls,
        words: Iterable[Sequence[str]],
        trees: Sequence[Tree],
        min_word_count: int = 1,
        extra_words: Iterable[str] = (),
        labels: bool = False,
    ) -> DepVocab:
        """Vocabularies of a training corpus.

        Args:
            words: every training sentence's words (labeled and unlabeled).
            trees: the gold trees of the labeled sentences.
            min_word_count: rarer training words are not kept.
            extra_words: words always kept (e.g. those with pretrained vectors).
            labels: also build the sequence-labeling label inventory.
        """
        inputs = Vocabularies.build(words, [], "BIOES", "BIO", min_word_count, extra_words)
        rels = sorted({r for _, tree_rels in trees if tree_rels is not None for r in tree_rels})
        vocab = cls(inputs.words, inputs.chars, rels, [])
        if labels:
            found = {label for tree in trees for label in vocab.encode(tree) if label is not None}
            vocab = cls(inputs.words, inputs.chars, rels, sorted(found))
        return vocab

    def encode(self, tree: Tree) -> list[str | None]:
        """The sequence labels of a tree (None per word when the relations a labeled inventory
        needs are missing)."""
        heads, rels = tree
        if self.rels and rels is None:
            return [None] * len(heads)
        return list(encode_relative(list(heads), list(rels) if self.rels and rels else None))

    def label_ids(self, tree: Tree) -> list[int]:
        """Label ids of a tree, -1 where the label is not in the inventory."""
        return [-1 if lab is None else self.label_index.get(lab, -1) for lab in self.encode(tree)]

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DepVocab:
        return cls(**data)


@dataclass
class DepBatch(Batch):
    """A ``Batch`` with gold trees (fields of unlabeled sentences hold padding values).

    Attributes:
        heads: LongTensor [B, N+1] gold heads of words 1..n (0 elsewhere).
        rels: LongTensor [B, N+1] gold relation ids (-1 where unknown, and at 0 and padding).
        labels: LongTensor [B, N] gold sequence-label ids (-1 where not in the inventory).
        projective: BoolTensor [B], whether the gold tree is projective.
    """

    heads: Tensor | None = None
    rels: Tensor | None = None
    labels: Tensor | None = None
    projective: Tensor | None = None

    def to(self, device: torch.device | str) -> DepBatch:
        """The same batch with every tensor on ``device``."""
        moved = super().to(device)
        assert isinstance(moved, DepBatch)
        return moved


@dataclass
class ParserOutput:
    """What a dependency model computes for a batch.

    Attributes:
        structure: the distribution over trees (arc structures) or label sequences (TokenSoftmax).
        rel_scores: [B, N+1, N+1, R] relation scores of each (dep, head) arc, or None.
    """

    structure: Structure
    rel_scores: Tensor | None = None


class DepModel(Model):
    """Base of the dependency models: collation of words and gold trees, batched prediction."""

    task = "dep"
    vocab: DepVocab

    def collate(
        self, words: Sequence[Sequence[str]], trees: Sequence[Tree | None] | None = None
    ) -> DepBatch:
        """Padded inputs of sentences, with their gold trees where given. O(B N^2) for the
        projectivity checks."""
        base = self.encoder.collate(self.vocab.inputs, [list(w) for w in words], None)
        given = list(trees) if trees is not None else [None] * len(words)
        batch = len(given)
        width = max(int(base.lengths.max()), 1) if batch else 1  # as the encoder inputs
        heads = torch.zeros(batch, width + 1, dtype=torch.long)
        rels = torch.full((batch, width + 1), -1, dtype=torch.long)
        labels = torch.full((batch, width), -1, dtype=torch.long)
        projective = torch.ones(batch, dtype=torch.bool)
        for b, tree in enumerate(given):
            if tree is None:
                continue
            tree_heads, tree_rels = tree
            n = len(tree_heads)
            heads[b, 1 : n + 1] = torch.tensor(list(tree_heads), dtype=torch.long)
            if tree_rels is not None:
                ids = [self.vocab.rel_index.get(r, -1) for r in tree_rels]
                rels[b, 1 : n + 1] = torch.tensor(ids, dtype=torch.long)
            if self.vocab.labels:
                labels[b, :n] = torch.tensor(self.vocab.label_ids(tree), dtype=torch.long)
            projective[b] = is_projective(list(tree_heads))
        inputs = {f.name: getattr(base, f.name) for f in fields(Batch)}
        inputs.update(tags=None, spans=None)
        inputs["labeled"] = torch.tensor([t is not None for t in given], dtype=torch.bool)
        return DepBatch(**inputs, heads=heads, rels=rels, labels=labels, projective=projective)

    def structure(self, batch: DepBatch) -> Structure:
        """The model's distribution over outputs (the structure of ``forward``)."""
        output: ParserOutput = self(batch)
        return output.structure

    @abstractmethod
    def predict(self, batch: DepBatch) -> list[tuple[list[int], list[str] | None]]:
        """A well-formed tree per sentence: heads (1-based, 0 = ROOT) and relations (or None)."""

    def rel_names(self, ids: Sequence[int]) -> list[str]:
        return [self.vocab.rels[i] for i in ids]
