"""Output heads: encoder vectors -> a structure, plus gold and decoded structures in tag form.

Every head has the same three methods, so a tagger composes any encoder with any head:

* ``forward(hidden [B, N, H], lengths [B]) -> Structure``
* ``gold(batch)``: the batch's gold structures in the structure's compact form
* ``decode(structure) -> list[list[str]]``: best structures as tags in the model's tag scheme
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from structkd.models.inputs import Batch, Vocabularies
from structkd.nn.layers import MLP, Biaffine
from structkd.structures.linear_chain import LinearChainCRF
from structkd.structures.semi_markov import SemiMarkovCRF
from structkd.structures.tags import allowed_transitions, from_spans
from structkd.structures.token_softmax import TokenSoftmax


def _tag_strings(vocab: Vocabularies, ids: Tensor, lengths: Tensor) -> list[list[str]]:
    rows = ids.tolist()
    return [[vocab.tags[t] for t in row[:n]] for row, n in zip(rows, lengths.tolist())]


DECODINGS: tuple[str, ...] = ("constrained", "argmax")
"""How a MaxEnt tagger decodes (``MaxEntHead.decoding``; ``--decode`` of evaluate and predict)."""


def constraint_scores(vocab: Vocabularies, like: Tensor) -> tuple[Tensor, Tensor, Tensor] | None:
    """The tag scheme's well-formedness as CRF potentials: ``(start [L], transitions [L, L],
    end [L])``, 0 where allowed and -inf where not (``structures.tags.allowed_transitions``), in
    ``like``'s dtype and device; None for a scheme without constraints (IOB1)."""
    if vocab.tag_scheme not in ("BIOES", "BIO"):
        return None
    allowed = allowed_transitions(vocab.tags, vocab.tag_scheme)
    zero = like.new_zeros(())
    return tuple(  # type: ignore[return-value]
        torch.where(torch.tensor(a, device=like.device), zero, -torch.inf) for a in allowed
    )


class MaxEntHead(nn.Module):
    """Independent tag softmax per word (the MaxEnt tagger): ``logits = W h``.

    Decoding (``decoding``): ``constrained`` (the default) is the best *well-formed* tag
    sequence under the token marginals, ``argmax_y sum_i log p_i(y_i)`` over the sequences the
    tag scheme allows (BIOES: ``S-X`` or ``B-X I-X* E-X``; BIO: ``I-X`` only after ``B-X`` or
    ``I-X``), found by Viterbi with 0 / -inf transitions: O(N L^2), a small fraction of the
    encoder's time. ``argmax`` takes each word's best tag alone, which may spell no entity
    (``O E-PER``); span F1 then reads such sequences with conlleval's repair rules.

    Args:
        input_dim: encoder size H.
        vocab: gives the tag inventory (L tags).
    """

    def __init__(self, input_dim: int, vocab: Vocabularies) -> None:
        super().__init__()
        self.vocab = vocab
        self.emissions = nn.Linear(input_dim, len(vocab.tags))
        self.decoding = "constrained"

    def forward(self, hidden: Tensor, lengths: Tensor) -> TokenSoftmax:
        """TokenSoftmax over logits [B, N, L]."""
        return TokenSoftmax(self.emissions(hidden), lengths)

    def gold(self, batch: Batch) -> Tensor:
        """Gold tag ids [B, N]."""
        assert batch.tags is not None
        return batch.tags

    def decode(self, structure: Any) -> list[list[str]]:
        """Best tags per sentence (see the class docstring for ``decoding``); a CRF's argmax
        is already a Viterbi path over its own transitions."""
        constraints = None
        if isinstance(structure, TokenSoftmax) and self.decoding == "constrained":
            constraints = constraint_scores(self.vocab, structure.logits)
        if constraints is None:
            return _tag_strings(self.vocab, structure.argmax, structure.lengths)
        # The per-word log-normaliser is the same for every sequence, so the logits give the
        # same best path as the log-probabilities (and as the exported decoder, which reads them).
        start, transitions, end = constraints
        chain = LinearChainCRF(structure.logits, transitions, structure.lengths, start, end)
        return _tag_strings(self.vocab, chain.argmax, structure.lengths)


class CRFHead(MaxEntHead):
    """Linear-chain CRF head (Lample et al., NAACL 2016): emissions ``W h``, learned transitions.

    Transitions are not hard-constrained: KD projects teachers (e.g. a MaxEnt tagger) whose
    marginals can put mass on ill-formed tag pairs, which a -inf transition would make infinite.
    """

    def __init__(self, input_dim: int, vocab: Vocabularies) -> None:
        super().__init__(input_dim, vocab)
        n_tags = len(vocab.tags)
        self.transitions = nn.Parameter(torch.zeros(n_tags, n_tags))
        self.start = nn.Parameter(torch.zeros(n_tags))
        self.end = nn.Parameter(torch.zeros(n_tags))

    def forward(self, hidden: Tensor, lengths: Tensor) -> LinearChainCRF:  # type: ignore[override]
        """LinearChainCRF over emissions [B, N, L] and transitions [L, L]."""
        return LinearChainCRF(
            self.emissions(hidden), self.transitions, lengths, self.start, self.end
        )


class SpanHead(nn.Module):
    """NER as parsing (Yu et al., ACL 2020): biaffine span scores -> semi-Markov CRF.

    ``s[i, j, r] = biaffine(MLP_start(h_i), MLP_end(h_j))``; the structure is the distribution over
    flat (non-overlapping) span sets, so ``decode`` returns the best flat span set exactly instead
    of Yu et al.'s greedy filtering.

    Args:
        input_dim: encoder size H.
        vocab: gives the entity types (R).
        span_dim: size of the start/end projections.
        dropout: dropout on the projections.
    """

    def __init__(
        self, input_dim: int, vocab: Vocabularies, span_dim: int = 150, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.vocab = vocab
        self.start_mlp = MLP(input_dim, span_dim, dropout)
        self.end_mlp = MLP(input_dim, span_dim, dropout)
        self.biaffine = Biaffine(span_dim, max(len(vocab.entity_types), 1))
        self.type_index = {t: r for r, t in enumerate(vocab.entity_types)}

    def forward(self, hidden: Tensor, lengths: Tensor) -> SemiMarkovCRF:
        """SemiMarkovCRF over span scores [B, N, N, R]."""
        scores = self.biaffine(self.start_mlp(hidden), self.end_mlp(hidden))  # [B, N, N, R]
        return SemiMarkovCRF(scores, lengths)

    def gold(self, batch: Batch) -> list[list[tuple[int, int, int]]]:
        """Gold spans as (start, last, type id) with the last token inclusive."""
        assert batch.spans is not None
        return [[(s, e - 1, self.type_index[t]) for s, e, t in spans] for spans in batch.spans]

    def decode(self, structure: Any) -> list[list[str]]:
        types = self.vocab.entity_types
        return [
            from_spans([(i, j + 1, types[r]) for i, j, r in spans], n, self.vocab.tag_scheme)
            for spans, n in zip(structure.argmax, structure.lengths.tolist())
        ]
