"""Graph-based dependency parsers: the biaffine first-order parser and its second-order variant.

Dozat & Manning (ICLR 2017): an encoder (BiLSTM over word and character features, or a
transformer) gives each word a vector, a learned vector stands for ROOT, and two MLPs per scorer
project them into dependent and head spaces; a biaffine product scores each arc ``h -> d`` and
another gives each arc a score per relation. The arc scores feed the output structure chosen by
``model.parser.kind``:

* ``head_selection``: ``HeadSelection`` (every word picks its head by a softmax, Dozat & Manning's
  own objective), decoded into a tree by maximum spanning tree;
* ``projective``: ``DependencyCRF`` over projective trees (Eisner), the paper's case 1b teacher;
* ``nonprojective``: ``DependencyCRF`` over all trees (matrix-tree theorem);
* ``sibling``: ``SiblingDependencyCRF``, adding triaffine adjacent-sibling scores (Wang & Tu,
  AACL 2020), with mean-field (``mfvi``, the paper's case 2b teacher) or exact inference.

Relations are predicted per arc, independently of the tree (Dozat & Manning), and trained on the
gold arcs. Loss: the tree's negative log-likelihood under the structure (for mean field, the
cross-entropy of the approximate head marginals, as Wang & Tu) plus the relations' cross-entropy.
A projective structure cannot represent a non-projective gold tree: such a sentence adds no arc
loss (its relations still train).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from structkd.config import ModelConfig
from structkd.models.checkpoint import register_loader
from structkd.models.depbase import DepBatch, DepModel, DepVocab, ParserOutput, Tree
from structkd.models.encoder import Encoder
from structkd.models.pretrained import PretrainedInputs
from structkd.models.seqlabel import SeqLabelParser
from structkd.nn.layers import MLP, Biaffine, Triaffine
from structkd.nn.transformer import resolve_transformer_path
from structkd.structures.base import Structure
from structkd.structures.dependency import DependencyCRF
from structkd.structures.head_selection import HeadSelection
from structkd.structures.sibling import SiblingDependencyCRF

GRAPH_KINDS = ("head_selection", "projective", "nonprojective", "sibling")


def _scorer(dim: int, size: int, dropout: float) -> nn.ModuleList:
    """The (dependent, head) MLP pair in front of a biaffine scorer."""
    return nn.ModuleList([MLP(dim, size, dropout), MLP(dim, size, dropout)])


class BiaffineParser(DepModel):
    """Biaffine arc and relation scorers over an encoder, with a selectable tree structure.

    Args:
        config: model config (``config.parser`` picks the structure and scorer sizes).
        vocab: words, characters and relations.
        transformer_dir: local transformer directory when the encoder uses one.
        pretrained_transformer: load the transformer's own weights.

    Raises:
        ValueError: for ``kind: seqlabel`` (that is ``SeqLabelParser``).
    """

    def __init__(
        self,
        config: ModelConfig,
        vocab: DepVocab,
        transformer_dir: str | None = None,
        pretrained_transformer: bool = True,
    ) -> None:
        super().__init__()
        parser = config.parser
        if parser.kind not in GRAPH_KINDS:
            raise ValueError(f"BiaffineParser builds {', '.join(GRAPH_KINDS)}, not {parser.kind}")
        self.config = config
        self.vocab = vocab
        self.encoder = Encoder(
            config.encoder, vocab.inputs, transformer_dir, pretrained_transformer
        )
        dim, dropout = self.encoder.dim, config.encoder.dropout
        self.root = nn.Parameter(torch.randn(dim) * 0.1)  # ROOT's vector, position 0
        self.arc_mlp = _scorer(dim, parser.arc_dim, dropout)
        self.arc = Biaffine(parser.arc_dim, 1)
        self.rel_mlp = _scorer(dim, parser.rel_dim, dropout) if vocab.rels else None
        self.rel = Biaffine(parser.rel_dim, len(vocab.rels)) if vocab.rels else None
        self.sib_mlp = None
        self.sib = None
        if parser.kind == "sibling":
            self.sib_mlp = nn.ModuleList([MLP(dim, parser.sib_dim, dropout) for _ in range(3)])
            self.sib = Triaffine(parser.sib_dim)

    def forward(self, batch: DepBatch) -> ParserOutput:
        """Arc structure over [B, N+1, N+1] (dep, head) scores and relation scores."""
        batch = batch.to(self.device)
        return self.from_features(self.encoder(batch), batch.lengths)

    def from_features(self, hidden: Tensor, lengths: Tensor) -> ParserOutput:
        """``forward``'s output from encoder features [B, N, H] and lengths [B]: ROOT, the
        scorers and the structure, without the encoder."""
        lengths = lengths.to(hidden.device)
        root = self.root.expand(hidden.shape[0], 1, -1)  # [B, 1, H]
        nodes = torch.cat([root, hidden], 1)  # [B, N+1, H]
        dep, head = (mlp(nodes) for mlp in self.arc_mlp)
        arc_scores = self.arc(dep, head)[..., 0]  # [B, N+1, N+1]
        rel_scores = None
        if self.rel is not None and self.rel_mlp is not None:
            rel_dep, rel_head = (mlp(nodes) for mlp in self.rel_mlp)
            rel_scores = self.rel(rel_dep, rel_head)  # [B, N+1, N+1, R]
        return ParserOutput(self._structure(arc_scores, nodes, lengths), rel_scores)

    def _structure(self, arc_scores: Tensor, nodes: Tensor, lengths: Tensor) -> Structure:
        parser = self.config.parser
        if parser.kind == "head_selection":
            return HeadSelection(arc_scores, lengths)
        if parser.kind in ("projective", "nonprojective"):
            return DependencyCRF(arc_scores, lengths, projective=parser.kind == "projective")
        assert self.sib is not None and self.sib_mlp is not None
        heads, mods, sibs = (mlp(nodes) for mlp in self.sib_mlp)
        sib_scores = self.sib(heads, mods, sibs)  # [B, N+1, N+1, N+1] (head, mod, sibling)
        return SiblingDependencyCRF(
            arc_scores, sib_scores, lengths, parser.inference, parser.mfvi_iters
        )

    def rel_probs(self, output: ParserOutput, temperature: float = 1.0) -> Tensor | None:
        """``P(rel | dep, head)`` [B, N+1, N+1, R] at a temperature, or None (unlabeled)."""
        if output.rel_scores is None:
            return None
        return torch.softmax(output.rel_scores / temperature, -1)

    def tree_nll(
        self, output: ParserOutput, heads: Tensor, rels: Tensor, projective: Tensor
    ) -> Tensor:
        """``-log P(tree)`` [B] of trees given as heads [B, N+1] and relation ids [B, N+1]
        (-1 = no relation loss); ``projective`` BoolTensor [B] says which trees a projective
        structure can score (the others add no arc loss)."""
        structure = output.structure
        positions = torch.arange(heads.shape[1], device=heads.device)
        words = (positions >= 1) & (positions[None, :] <= structure.lengths[:, None])  # [B, N+1]
        if isinstance(structure, SiblingDependencyCRF) and structure.inference == "mfvi":
            q = structure.marginals.gather(-1, heads[..., None])[..., 0]  # [B, N+1]
            arc = -(q.clamp_min(torch.finfo(q.dtype).tiny).log() * words).sum(-1)
        else:
            arc = -structure.log_prob(heads)  # [B]
            if self.config.parser.kind in ("projective", "sibling"):
                arc = arc.masked_fill(~projective, 0.0)
        if output.rel_scores is None:
            return arc
        index = heads[:, :, None, None].expand(-1, -1, 1, output.rel_scores.shape[-1])
        at_heads = output.rel_scores.gather(2, index)[:, :, 0]  # [B, N+1, R]
        log_probs = torch.log_softmax(at_heads, -1)
        picked = log_probs.gather(-1, rels.clamp(min=0)[..., None])[..., 0]  # [B, N+1]
        return arc - (picked * (words & (rels >= 0))).sum(-1)

    def nll(self, batch: DepBatch, output: ParserOutput | None = None) -> Tensor:
        """Gold tree and relation negative log-likelihood [B]; 0 for unlabeled sentences."""
        output = self(batch) if output is None else output
        batch = batch.to(self.device)
        assert batch.heads is not None and batch.rels is not None and batch.projective is not None
        nll = self.tree_nll(output, batch.heads, batch.rels, batch.projective)
        return nll.masked_fill(~batch.labeled, 0.0)

    def decode(self, output: ParserOutput) -> tuple[Tensor, Tensor | None]:
        """Best trees, heads LongTensor [B, N+1], and their relation ids [B, N+1] (or None).

        Head selection is decoded by the maximum spanning tree of its arc scores (each word's
        softmax only shifts its row, so this is the most probable tree).
        """
        structure = output.structure
        if isinstance(structure, HeadSelection):
            tree = DependencyCRF(structure.arc_scores, structure.lengths, projective=False)
            heads = tree.argmax
        else:
            heads = structure.argmax
        heads = heads.to(structure.lengths.device)  # [B, N+1]
        if output.rel_scores is None:
            return heads, None
        index = heads[:, :, None, None].expand(-1, -1, 1, output.rel_scores.shape[-1])
        return heads, output.rel_scores.gather(2, index)[:, :, 0].argmax(-1)  # [B, N+1]

    @torch.no_grad()
    def predict(self, batch: DepBatch) -> list[tuple[list[int], list[str] | None]]:
        output = self(batch)
        heads, rels = self.decode(output)
        result = []
        for b, n in enumerate(output.structure.lengths.tolist()):
            names = None if rels is None else self.rel_names(rels[b, 1 : n + 1].tolist())
            result.append((heads[b, 1 : n + 1].tolist(), names))
        return result


def build_dep_model(
    config: ModelConfig, words: Sequence[Sequence[str]], trees: Sequence[Tree]
) -> DepModel:
    """A freshly initialised parser of ``config.parser.kind`` with vocabularies from a corpus.

    Args:
        config: model config (pretrained word vectors, if named, are read here).
        words: every training sentence's words (labeled and unlabeled).
        trees: the labeled sentences' gold trees.

    Raises:
        FileNotFoundError: if the pretrained vectors or the transformer are missing.
    """
    enc = config.encoder
    pretrained = PretrainedInputs.read(enc)
    seqlabel = config.parser.kind == "seqlabel"
    vocab = DepVocab.build(
        words, trees, pretrained.min_word_count, pretrained.extra_words, labels=seqlabel
    )
    transformer_dir = None
    if enc.transformer is not None:
        transformer_dir = resolve_transformer_path(enc.transformer)
    model: DepModel
    if seqlabel:
        model = SeqLabelParser(config, vocab, transformer_dir)
    else:
        model = BiaffineParser(config, vocab, transformer_dir)
    pretrained.initialise(vocab.words, model.encoder.words, model.encoder.vectors)
    return model


def load_dep_model(
    config: ModelConfig, vocab: DepVocab, transformer_dir: str | None = None
) -> DepModel:
    """The untrained model of a checkpoint (its weights are loaded afterwards)."""
    if config.parser.kind == "seqlabel":
        return SeqLabelParser(config, vocab, transformer_dir, pretrained_transformer=False)
    return BiaffineParser(config, vocab, transformer_dir, pretrained_transformer=False)


@register_loader(DepModel.task)
def load_dep_checkpoint(
    config: ModelConfig, vocab: dict[str, Any], transformer_dir: str | None = None
) -> DepModel:
    """``load_dep_model`` from a checkpoint's ``DepVocab.to_dict()``."""
    return load_dep_model(config, DepVocab.from_dict(vocab), transformer_dir)
