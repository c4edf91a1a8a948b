"""Vocabularies and padded input tensors for taggers.

Tensors are built from token lists by ``Vocabularies.collate``; nothing is stored on sentence
objects. Tag ids follow ``structkd.data.vocab.tag_vocab``, the layout the KD projections rely on:
index 0 is ``O`` and entity type r (types sorted) owns ``B=1+4r, I=2+4r, E=3+4r, S=4+4r`` in BIOES.
Spans are half-open ``(start, end, type)`` as in ``structkd.structures.tags``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import torch
from torch import Tensor

from structkd.data.vocab import tag_vocab
from structkd.nn.embeddings import MAX_WORD_CHARS
from structkd.structures.tags import Span, from_spans, to_spans

PAD, UNK = "<pad>", "<unk>"


@dataclass
class Batch:
    """Padded inputs of B sentences of at most N words (fields a model does not use are None).

    Attributes:
        tokens: the words, for decoding and output.
        lengths: LongTensor [B].
        words: LongTensor [B, N] word ids (0 = padding, 1 = unknown).
        chars: LongTensor [B, N, C] character ids (0 = padding), C <= ``MAX_WORD_CHARS``.
        subwords: LongTensor [B, S] transformer input ids.
        subword_lengths: LongTensor [B].
        first_subword: LongTensor [B, N] position of each word's first subword.
        vectors: LongTensor [B, N, P] rows of each word in a frozen pretrained table (see
            ``structkd.nn.vectors.PretrainedVectors.rows``).
        casing: LongTensor [B, N] casing classes (``structkd.nn.embeddings.casing_class``).
        tags: LongTensor [B, N] gold tag ids in the model's tag scheme (0 where unlabeled).
        spans: gold entity spans per sentence (empty where unlabeled).
        labeled: BoolTensor [B], whether the sentence has gold tags.
    """

    tokens: list[list[str]]
    lengths: Tensor
    labeled: Tensor
    words: Tensor | None = None
    chars: Tensor | None = None
    subwords: Tensor | None = None
    subword_lengths: Tensor | None = None
    first_subword: Tensor | None = None
    vectors: Tensor | None = None
    casing: Tensor | None = None
    tags: Tensor | None = None
    spans: list[list[Span]] | None = None

    def to(self, device: torch.device | str) -> Batch:
        """The same batch with every tensor on ``device``."""
        moved = {
            f.name: getattr(self, f.name).to(device)
            for f in fields(self)
            if isinstance(getattr(self, f.name), Tensor)
        }
        return replace(self, **moved)


def _pad(rows: Sequence[Sequence[int]], width: int) -> Tensor:
    out = torch.zeros(len(rows), width, dtype=torch.long)
    for b, row in enumerate(rows):
        out[b, : len(row)] = torch.tensor(row, dtype=torch.long)
    return out


@dataclass
class Vocabularies:
    """Everything needed to turn words and tags into ids, saved as JSON with a model.

    Attributes:
        words: word list; 0 = padding, 1 = unknown.
        chars: character list; 0 = padding, 1 = unknown.
        entity_types: sorted entity types.
        tag_scheme: the scheme the model's tags use (``BIOES`` or ``BIO``).
        output_scheme: the scheme of the training data, used for predictions.
    """

    words: list[str]
    chars: list[str]
    entity_types: list[str]
    tag_scheme: str = "BIOES"
    output_scheme: str = "BIO"

    def __post_init__(self) -> None:
        self.word_index = {w: i for i, w in enumerate(self.words)}
        self.char_index = {c: i for i, c in enumerate(self.chars)}
        self.tags = list(tag_vocab(self.entity_types, self.tag_scheme))
        self.tag_index = {t: i for i, t in enumerate(self.tags)}

    @classmethod
    def build(
        cls,
        tokens: Iterable[Sequence[str]],
        tags: Iterable[Sequence[str]],
        tag_scheme: str,
        output_scheme: str,
        min_word_count: int = 1,
        extra_words: Iterable[str] = (),
        entity_types: Iterable[str] | None = None,
    ) -> Vocabularies:
        """Vocabularies of a training corpus.

        Args:
            tokens: the training sentences' words.
            tags: their gold tags (any scheme).
            tag_scheme: the scheme the model predicts in.
            output_scheme: the scheme predictions are written in.
            min_word_count: rarer training words are not kept.
            extra_words: words always kept (e.g. those with pretrained vectors).
            entity_types: the entity types; None: those of ``tags``.
        """
        counts: Counter[str] = Counter()
        chars: Counter[str] = Counter()
        for sentence in tokens:
            counts.update(sentence)
            for word in sentence:
                chars.update(word)
        types = sorted(
            {t for sentence in tags for _, _, t in to_spans(sentence)}
            if entity_types is None
            else set(entity_types)
        )
        kept = [w for w, c in sorted(counts.items()) if c >= min_word_count]
        seen = set(kept)
        for word in extra_words:
            if word not in seen:
                seen.add(word)
                kept.append(word)
        return cls(
            words=[PAD, UNK, *kept],
            chars=[PAD, UNK, *sorted(chars)],
            entity_types=types,
            tag_scheme=tag_scheme,
            output_scheme=output_scheme,
        )

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Vocabularies:
        return cls(**data)

    def word_id(self, word: str) -> int:
        """Id of ``word``, else of its lowercase form, else the unknown word's."""
        index = self.word_index.get(word)
        return index if index is not None else self.word_index.get(word.lower(), 1)

    def collate(
        self,
        tokens: Sequence[Sequence[str]],
        tags: Sequence[Sequence[str] | None] | None = None,
        words: bool = True,
        chars: bool = True,
        subwords: Any = None,
    ) -> Batch:
        """Pads B sentences into a ``Batch``.

        Args:
            tokens: the sentences' words.
            tags: gold tags per sentence (any scheme), None for unlabeled ones.
            words: build word ids.
            chars: build character ids.
            subwords: a ``TransformerEmbedder`` (anything with ``featurize``) to build subword ids.
        """
        tags = tags if tags is not None else [None] * len(tokens)
        lengths = [len(s) for s in tokens]
        width = max(lengths, default=0) or 1  # zero-width tensors trip LSTMs and max-pools
        batch = Batch(
            tokens=[list(s) for s in tokens],
            lengths=torch.tensor(lengths, dtype=torch.long),
            labeled=torch.tensor([t is not None for t in tags], dtype=torch.bool),
        )
        if words:
            batch.words = _pad([[self.word_id(w) for w in s] for s in tokens], width)
        if chars:  # a word's first MAX_WORD_CHARS characters
            n_chars = max((len(w) for s in tokens for w in s), default=1) or 1
            n_chars = min(n_chars, MAX_WORD_CHARS)
            ids = torch.zeros(len(tokens), width, n_chars, dtype=torch.long)
            for b, sentence in enumerate(tokens):
                for i, word in enumerate(sentence):
                    row = [self.char_index.get(c, 1) for c in word[:MAX_WORD_CHARS]]
                    ids[b, i, : len(row)] = torch.tensor(row, dtype=torch.long)
            batch.chars = ids
        if subwords is not None:
            features = [subwords.featurize(s) for s in tokens]
            pieces = [f[0] for f in features]
            batch.subwords = _pad(pieces, max(len(p) for p in pieces))
            batch.subword_lengths = torch.tensor([len(p) for p in pieces], dtype=torch.long)
            batch.first_subword = _pad([f[1] for f in features], width)
        spans = [to_spans(t) if t is not None else [] for t in tags]
        batch.spans = [[s for s in sent if s[2] in self.entity_types] for sent in spans]
        batch.tags = _pad(
            [
                [self.tag_index.get(t, 0) for t in from_spans(s, n, self.tag_scheme)]
                for s, n in zip(batch.spans, lengths)
            ],
            width,
        )
        return batch
