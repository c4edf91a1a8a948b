"""The exportable graph of a trained student: its encoder and scorer as one traceable module.

``ExportGraph(model)`` reuses the model's own embedding, char CNN, linear, MLP and biaffine
modules; only the BiLSTM is rebuilt, because packed sequences do not trace. A bidirectional
LSTM over packed sentences equals a forward LSTM over the padded batch (padding comes after
the words, so it never reaches them) and a forward LSTM over each sentence reversed within its
own length, reversed back: ``ReversibleBiLSTM`` computes exactly that with two ``gather`` calls,
which both ``torch.onnx.export`` and ``torch.jit.trace`` capture with dynamic batch and sentence
sizes, and keeps plain ``nn.LSTM`` layers that dynamic int8 quantization recognises.

What the graph returns, by decoder (``decoder`` attribute):

* ``argmax`` (MaxEnt tagger decoding by argmax): the best tag id per word [B, N], in the graph;
* ``viterbi`` (CRF tagger, and MaxEnt tagger with constrained decoding, the default): emissions
  (a MaxEnt tagger's logits) [B, N, L]; Viterbi runs in numpy (``export.decode``) on the
  transitions written beside the graph (a MaxEnt tagger's: 0 / -inf, its tag scheme's rules);
* ``seqlabel`` (sequence-labeling parser): label log-probabilities [B, N, K];
* ``spans`` (span tagger, Yu et al., ACL 2020): span scores [B, N, N, R]; the semi-Markov
  Viterbi runs in numpy;
* ``mst`` (head-selection or non-projective parser): arc scores [B, N+1, N+1] and, when it has
  relations, each arc's best relation id [B, N+1, N+1] (argmax over relations in the graph);
* ``eisner`` (projective parser): the same outputs, decoded by Eisner's algorithm in numpy.

Frozen pretrained word-vector tables (GloVe, word-vector files) are part of the graph
(``ExportVectors``): the table is a constant of the graph, looked up by the row ids the runtime
computes from the word list written beside it.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from structkd.config import ConfigError
from structkd.models.base import Model
from structkd.models.encoder import Encoder
from structkd.models.heads import CRFHead, MaxEntHead, SpanHead
from structkd.models.parser import BiaffineParser
from structkd.models.seqlabel import SeqLabelParser
from structkd.models.tagger import Tagger
from structkd.nn.vectors import PretrainedVectors, lookup


class ExportError(ConfigError):
    """A model that cannot be exported (its kind is not supported)."""


def _direction(lstm: nn.LSTM, layer: int, suffix: str) -> nn.LSTM:
    """A one-layer, one-direction LSTM holding ``lstm``'s weights of a layer and direction."""
    single = nn.LSTM(
        lstm.input_size if layer == 0 else 2 * lstm.hidden_size,
        lstm.hidden_size,
        batch_first=True,
    )
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(single, f"{name}_l0").copy_(getattr(lstm, f"{name}_l{layer}{suffix}"))
    return single


def reverse_within(x: Tensor, lengths: Tensor) -> Tensor:
    """Each sentence of x [B, N, D] reversed within its length (padding stays in place)."""
    positions = torch.arange(x.shape[1], device=x.device)[None, :]  # [1, N]
    inside = positions < lengths[:, None]  # [B, N]
    index = torch.where(inside, lengths[:, None] - 1 - positions, positions)  # [B, N]
    return x.gather(1, index[:, :, None].expand(-1, -1, x.shape[2]))


class ReversibleBiLSTM(nn.Module):
    """``structkd.nn.layers.BiLSTM`` (eval mode) without packing: same outputs, traceable.

    Cost O(N (D + H) H) per sentence and layer, as the packed LSTM.

    Args:
        lstm: the trained bidirectional ``nn.LSTM`` (batch first).
    """

    def __init__(self, lstm: nn.LSTM) -> None:
        super().__init__()
        layers = range(lstm.num_layers)
        self.forwards = nn.ModuleList([_direction(lstm, i, "") for i in layers])
        self.backwards = nn.ModuleList([_direction(lstm, i, "_reverse") for i in layers])

    def forward(self, inputs: Tensor, lengths: Tensor) -> Tensor:
        """[B, N, D] inputs of lengths [B] -> [B, N, 2H], zeros on padding."""
        hidden = inputs
        for forward_lstm, backward_lstm in zip(self.forwards, self.backwards):
            ahead, _ = forward_lstm(hidden)  # [B, N, H]
            behind, _ = backward_lstm(reverse_within(hidden, lengths))  # [B, N, H]
            hidden = torch.cat([ahead, reverse_within(behind, lengths)], -1)  # [B, N, 2H]
        inside = torch.arange(inputs.shape[1], device=inputs.device)[None, :] < lengths[:, None]
        return hidden * inside[:, :, None].to(hidden.dtype)


class ExportVectors(nn.Module):
    """``PretrainedVectors.forward`` with its frozen table as a buffer, so that the table is
    written into the graph (an ONNX initializer, a TorchScript constant) and the export needs
    nothing of the package or file it came from.

    Args:
        vectors: the encoder's frozen vectors, of a word table (one row per word).

    Raises:
        ExportError: for subword tables (their segmenter is not part of an export).
    """

    def __init__(self, vectors: PretrainedVectors) -> None:
        super().__init__()
        source = vectors.source
        if source.subword or source.words is None:
            raise ExportError(
                f"cannot export frozen subword vectors ({source.name!r}): their segmenter "
                "(WordPiece or SentencePiece) is not part of an export; word tables (GloVe, "
                "word-vector files) can be exported"
            )
        for key, tensor in vectors.frozen_tensors().items():
            self.register_buffer(key, tensor.detach())
        self.table_keys = list(source.tensors())
        self.unknown = vectors.unknown
        self.projection = vectors.projection

    def forward(self, rows: Tensor) -> Tensor:
        """Row ids [B, N, P] (as ``PretrainedVectors.rows``) -> word vectors [B, N, dim]."""
        tensors = {key: self.get_buffer(key) for key in self.table_keys}
        size = tensors["table"].shape[0]
        vectors = lookup(tensors, rows.clamp(0, size - 1))  # [B, N, P, D]
        vectors = torch.where((rows == size)[..., None], self.unknown, vectors)
        used = (rows >= 0)[..., None]  # [B, N, P, 1]
        pooled = (vectors * used).sum(-2) / used.sum(-2).clamp(min=1)  # [B, N, D]
        return pooled if self.projection is None else self.projection(pooled)


class ExportEncoder(nn.Module):
    """``Encoder.forward`` in eval mode over explicit id tensors instead of a ``Batch``.

    Raises:
        ExportError: for transformer encoders (their subword tokenizer is not part of a graph)
            and frozen subword vector tables.
    """

    def __init__(self, encoder: Encoder) -> None:
        super().__init__()
        if encoder.transformer is not None:
            raise ExportError(
                "export supports word embeddings, frozen word-vector tables, casing, char CNN "
                "and BiLSTM encoders, not transformer encoders"
            )
        self.words = encoder.words
        self.vectors = ExportVectors(encoder.vectors) if encoder.vectors is not None else None
        self.casing = encoder.casing
        self.chars = encoder.chars
        self.lstm = ReversibleBiLSTM(encoder.lstm.lstm) if encoder.lstm is not None else None

    @property
    def inputs(self) -> list[str]:
        """The graph's input names, in call order."""
        parts = {
            "words": self.words,
            "vectors": self.vectors,
            "casing": self.casing,
            "chars": self.chars,
        }
        return [*(name for name, part in parts.items() if part is not None), "lengths"]

    def forward(
        self,
        words: Tensor | None,
        vectors: Tensor | None,
        casing: Tensor | None,
        chars: Tensor | None,
        lengths: Tensor,
    ) -> Tensor:
        """Word ids [B, N], vector rows [B, N, P], casing classes [B, N], char ids [B, N, C],
        lengths [B] -> features [B, N, H] (inputs the encoder does not read are None)."""
        parts = []
        if self.words is not None:
            assert words is not None
            parts.append(self.words.table(words))  # [B, N, Dw]
        if self.vectors is not None:
            assert vectors is not None
            parts.append(self.vectors(vectors))  # [B, N, Dw]
        if self.casing is not None:
            assert casing is not None
            parts.append(self.casing(casing))  # [B, N, Dc]
        if self.chars is not None:
            assert chars is not None
            parts.append(self.chars(chars))  # [B, N, F]
        hidden = torch.cat(parts, -1)
        return hidden if self.lstm is None else self.lstm(hidden, lengths)


def decoder_of(model: Model) -> str:
    """The decoder an exported ``model`` needs (see the module docstring).

    Raises:
        ExportError: for span taggers, projective and second-order parsers.
    """
    if isinstance(model, Tagger):
        if isinstance(model.head, CRFHead):
            return "viterbi"
        if isinstance(model.head, MaxEntHead):  # constrained: Viterbi over the scheme's rules
            constrained = model.head.decoding == "constrained"
            return (
                "viterbi"
                if constrained and model.vocab.tag_scheme in ("BIOES", "BIO")
                else "argmax"
            )
        if isinstance(model.head, SpanHead):
            return "spans"
    elif isinstance(model, SeqLabelParser):
        return "seqlabel"
    elif isinstance(model, BiaffineParser):
        if model.config.parser.kind in ("head_selection", "nonprojective"):
            return "mst"
        if model.config.parser.kind == "projective":
            return "eisner"
    kind = model.config.parser.kind if model.task == "dep" else model.config.head.kind
    raise ExportError(
        f"cannot export a {model.task} model of kind {kind!r}: export supports crf, maxent "
        "and span taggers, and seqlabel, head_selection, projective and nonprojective parsers"
    )


class ExportGraph(nn.Module):
    """A trained model's encoder and scorer, taking id tensors (see the module docstring).

    Holds only the modules the graph runs (not the packed LSTM), so a traced or quantized copy
    carries each weight once.

    Args:
        model: a trained tagger or parser (see ``decoder_of`` for the kinds).

    Raises:
        ExportError: for models that cannot be exported.
    """

    def __init__(self, model: Model) -> None:
        super().__init__()
        self.decoder = decoder_of(model)
        self.encoder = ExportEncoder(model.encoder)
        self.scorer: nn.Module | None = None
        self.root: nn.Parameter | None = None
        self.arc_mlp: nn.ModuleList | None = None
        self.rel_mlp: nn.ModuleList | None = None
        self.arc: nn.Module | None = None
        self.rel: nn.Module | None = None
        self.span_mlps: nn.ModuleList | None = None
        if isinstance(model, Tagger) and isinstance(model.head, SpanHead):
            self.span_mlps = nn.ModuleList([model.head.start_mlp, model.head.end_mlp])
            self.scorer = model.head.biaffine
        elif isinstance(model, Tagger):
            assert isinstance(model.head, MaxEntHead)
            self.scorer = model.head.emissions
        elif isinstance(model, SeqLabelParser):
            self.scorer = model.scorer
        else:
            assert isinstance(model, BiaffineParser)
            self.root = model.root
            self.arc_mlp, self.arc = model.arc_mlp, model.arc
            self.rel_mlp, self.rel = model.rel_mlp, model.rel
        self.eval()

    @property
    def inputs(self) -> list[str]:
        return self.encoder.inputs

    @property
    def outputs(self) -> list[str]:
        """The graph's output names."""
        return {
            "argmax": ["tags"],
            "viterbi": ["emissions"],
            "seqlabel": ["label_log_probs"],
            "spans": ["span_scores"],
            "mst": ["arc_scores", "rels"] if self.rel is not None else ["arc_scores"],
            "eisner": ["arc_scores", "rels"] if self.rel is not None else ["arc_scores"],
        }[self.decoder]

    def forward(self, *inputs: Tensor) -> tuple[Tensor, ...]:
        """The inputs named by ``inputs`` -> the outputs named by ``outputs``."""
        named = dict(zip(self.inputs, inputs))
        lengths = named["lengths"]
        words, vectors, casing, chars = (
            named.get(name) for name in ("words", "vectors", "casing", "chars")
        )
        hidden = self.encoder(words, vectors, casing, chars, lengths)  # [B, N, H]
        if self.span_mlps is not None and self.scorer is not None:
            start, end = (mlp(hidden) for mlp in self.span_mlps)
            return (self.scorer(start, end),)  # [B, N, N, R]
        if self.scorer is not None:
            scores = self.scorer(hidden)  # [B, N, L] tags or [B, N, K] labels
            if self.decoder == "argmax":
                return (scores.argmax(-1),)
            return (torch.log_softmax(scores, -1),) if self.decoder == "seqlabel" else (scores,)
        assert self.root is not None and self.arc_mlp is not None and self.arc is not None
        root = self.root.expand(hidden.shape[0], 1, -1)  # [B, 1, H]
        nodes = torch.cat([root, hidden], 1)  # [B, N+1, H]
        dep, head = (mlp(nodes) for mlp in self.arc_mlp)
        arc_scores = self.arc(dep, head)[..., 0]  # [B, N+1, N+1]
        if self.rel is None or self.rel_mlp is None:
            return (arc_scores,)
        rel_dep, rel_head = (mlp(nodes) for mlp in self.rel_mlp)
        return arc_scores, self.rel(rel_dep, rel_head).argmax(-1)  # [B, N+1, N+1]
