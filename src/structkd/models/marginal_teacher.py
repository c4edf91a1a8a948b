"""A marginal file as a teacher: ``structkd distill --teacher-marginals FILE``.

The teacher is whatever wrote the file (``structkd annotate``, a spaCy pipeline, an LLM
annotator, an ensemble): structkd never sees it, only its marginals per training sentence
(``structkd.models.marginal_file``). As a teacher of a student (``as_teacher_of``) the file's
labels are put on the student's:

* ``tags``: per-token distributions over any labels, mapped by entity type exactly as a
  Hugging Face teacher's (``structkd.kd.label_map``); the teacher is the ``TokenSoftmax`` of
  their logarithms, so every NER method applies;
* ``tag_pairs``: a chain teacher's tag and tag-pair marginals; its labels must be tags of the
  student's (same scheme), reordered by name. Structural and posterior KD;
* ``spans``: labeled-span marginals; their types reordered to the student's. Structural and
  posterior KD into a MaxEnt student (case 4);
* ``arcs``: head marginals, for head-selection and tree-CRF parsing students. Structural KD.

A sentence is found by its tokens; sentences with the same tokens share the first one's
marginals.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

import torch
from torch import Tensor

from structkd.config import ConfigError, ModelConfig
from structkd.kd.given import ArcMarginals, ChainMarginals, SpanMarginals
from structkd.kd.label_map import LabelMapError, TagMap
from structkd.models.base import Model
from structkd.models.depbase import ParserOutput
from structkd.models.inputs import Vocabularies
from structkd.models.marginal_file import MarginalFile
from structkd.structures.base import Structure
from structkd.structures.token_softmax import TokenSoftmax

METHODS: dict[str, tuple[str, ...]] = {
    "tags": ("structural", "token", "posterior", "topk", "topwk", "top1"),
    "tag_pairs": ("structural", "posterior"),
    "spans": ("structural", "posterior"),
    "arcs": ("structural",),
}
"""The KD methods each layout serves (the others need the teacher's potentials)."""


@dataclass
class LookupBatch:
    """Sentences of a marginal file: their words, lengths [B] and rows in the file."""

    tokens: list[list[str]]
    lengths: Tensor
    rows: list[int]

    def to(self, device: torch.device | str) -> LookupBatch:
        moved = {
            f.name: getattr(self, f.name).to(device)
            for f in fields(self)
            if isinstance(getattr(self, f.name), Tensor)
        }
        return replace(self, **moved)


def _pad(rows: list[Tensor], sizes: list[int | None], width: int) -> Tensor:
    """Stacks rows, padding the dimensions marked by an offset (size = width + offset)."""
    shape = [s if o is None else max(width + o, 0) for s, o in zip(rows[0].shape, sizes)]
    out = rows[0].new_zeros(len(rows), *shape)
    for b, row in enumerate(rows):
        index: tuple[int | slice, ...] = (b, *(slice(0, s) for s in row.shape))
        out[index] = row
    return out


class _FileTeacher(Model):
    """Shared by the NER and parsing file teachers (see the module docstring).

    Args:
        marginals: the file, read and checked.
        select: per part, the label indices the student's labels take (None: as stored).
        tag_map: the mapping of a ``tags`` file onto the student's tags.
        vocab: the student's vocabularies once bound.
    """

    def __init__(
        self,
        marginals: MarginalFile,
        select: Tensor | None = None,
        tag_map: TagMap | None = None,
        vocab: Any = None,
    ) -> None:
        super().__init__()
        self.marginals = marginals
        self.layout = marginals.layout
        self.select = select
        self.tag_map = tag_map
        self.vocab = vocab
        self.config = ModelConfig()
        self.name = marginals.path
        self.index: dict[tuple[str, ...], int] = {}
        for i, words in enumerate(marginals.tokens):
            self.index.setdefault(tuple(words), i)
        self.anchor = torch.nn.Parameter(torch.zeros(()), requires_grad=False)  # its device

    @property
    def probe_words(self) -> list[list[str]]:
        """A sentence of the file (what a task probes a teacher with)."""
        return [self.marginals.tokens[0]] if self.marginals.tokens else []

    def collate(self, words: Any, /) -> LookupBatch:
        sentences = [list(s) for s in words]
        rows = []
        for sentence in sentences:
            row = self.index.get(tuple(sentence))
            if row is None:
                words = " ".join(sentence)
                raise ConfigError(f"{self.name}: no marginals for the sentence {words}")
            rows.append(row)
        lengths = torch.tensor([len(s) for s in sentences], dtype=torch.long)
        return LookupBatch(sentences, lengths, rows)

    def _stack(self, batch: LookupBatch, part: str, sizes: list[int | None]) -> Tensor:
        rows = [self.marginals.rows[i][part] for i in batch.rows]
        width = int(batch.lengths.max()) if len(rows) else 1
        return _pad(rows, sizes, max(width, 1)).to(self.anchor.device)

    def features(self, batch: Any) -> Tensor:
        if self.layout != "tags":
            raise ConfigError(f"{self.name}: a {self.layout} marginal file has no per-token scores")
        probs = self._stack(batch, "tags", [0, None])  # [B, N, L]
        if self.tag_map is not None:
            probs = self.tag_map.apply(probs, batch.lengths)
        return probs.clamp_min(torch.finfo(probs.dtype).tiny).log()

    def from_features(self, hidden: Tensor, lengths: Tensor) -> TokenSoftmax:
        return TokenSoftmax(hidden, lengths.to(hidden.device))

    def structure(self, batch: LookupBatch) -> Structure:
        """The file's marginals of the batch, on the student's labels once bound."""
        lengths = batch.lengths.to(self.anchor.device)
        if self.layout == "tags":
            return self.from_features(self.features(batch), lengths)
        if self.layout == "tag_pairs":
            unary = self._stack(batch, "tags", [0, None])  # [B, N, L]
            pair = self._stack(batch, "pairs", [-1, None, None])  # [B, N-1, L, L]
            if self.select is not None:
                unary = unary[..., self.select]
                pair = pair[..., self.select, :][..., self.select]
            return ChainMarginals(unary, pair, lengths)
        if self.layout == "spans":
            spans = self._stack(batch, "spans", [0, 0, None])  # [B, N, N, R]
            if self.select is not None:
                spans = spans[..., self.select]
            return SpanMarginals(spans, lengths)
        arcs = self._stack(batch, "arcs", [0, 1])  # [B, N, N+1]
        return ArcMarginals(torch.cat([arcs[:, :1] * 0, arcs], 1), lengths)  # [B, N+1, N+1]

    def nll(self, batch: Any, output: Any = None) -> Tensor:
        raise ConfigError(f"{self.name}: a marginal file is not trained")


class NERMarginalTeacher(_FileTeacher):
    """A ``tags``, ``tag_pairs`` or ``spans`` file teaching a tagger."""

    task = "ner"

    def forward(self, batch: LookupBatch) -> Structure:
        return self.structure(batch)

    def as_teacher_of(self, student: Model) -> NERMarginalTeacher:
        vocab = getattr(student, "vocab", None)
        if not isinstance(vocab, Vocabularies):
            raise ConfigError(f"{self.name}: a {self.layout} marginal file teaches taggers only")
        labels = self.marginals.labels
        if self.layout == "tags":
            try:
                tag_map = TagMap(labels, vocab.tags, vocab.tag_scheme, self.name)
            except LabelMapError as error:
                raise ConfigError(str(error)) from error
            return NERMarginalTeacher(self.marginals, None, tag_map, vocab)
        wanted = vocab.tags if self.layout == "tag_pairs" else vocab.entity_types
        unknown = [x for x in labels if x not in wanted]
        if unknown:
            what = f"{vocab.tag_scheme} tags" if self.layout == "tag_pairs" else "entity types"
            raise ConfigError(
                f"{self.name}: labels {', '.join(unknown)} are not among the student's {what} "
                f"({', '.join(wanted)})"
            )
        # Student labels the file lacks read a zero column (index len(labels)).
        position = {x: i for i, x in enumerate(labels)}
        select = torch.tensor([position.get(x, len(labels)) for x in wanted], dtype=torch.long)
        padded = [
            {k: _zero_column(v, k) for k, v in row.items()}
            for row in self.marginals.rows
        ]
        marginals = replace(self.marginals, rows=padded)
        return NERMarginalTeacher(marginals, select, None, vocab)


def _zero_column(tensor: Tensor, part: str) -> Tensor:
    """The tensor with one more, all-zero, label (the last entry of every label axis)."""
    axes = 2 if part == "pairs" else 1
    for axis in range(tensor.dim() - axes, tensor.dim()):
        shape = list(tensor.shape)
        shape[axis] = 1
        tensor = torch.cat([tensor, tensor.new_zeros(shape)], axis)
    return tensor


class DepMarginalTeacher(_FileTeacher):
    """An ``arcs`` file teaching a graph-based parser (head selection or a tree CRF)."""

    task = "dep"

    def forward(self, batch: LookupBatch) -> ParserOutput:
        return ParserOutput(self.structure(batch))


def marginal_teacher(marginals: MarginalFile) -> _FileTeacher:
    """The teacher of a (checked) marginal file."""
    if marginals.layout == "arcs":
        return DepMarginalTeacher(marginals)
    return NERMarginalTeacher(marginals)
