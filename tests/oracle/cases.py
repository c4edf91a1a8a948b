"""The registry of structures the shared suites run on: one ``Case`` per structure (or per
configuration of one that takes another code path).

A Case says how to draw random potentials of a tiny size, which brute-force enumerator of this
package is its output space, how to score and indicate one output by hand, and its tolerances.
tests/test_conformance.py checks every Case against enumeration, tests/test_numerics.py checks
every Case at extreme scales, and the KD pairs (oracle/pairs.py) name their teacher and student
by Case. Adding a structure means adding one Case to ``CASES``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import torch
from hypothesis import strategies as st

from oracle.spans import SpanSet, count_span_sets, span_sets
from oracle.tags import Tags, tag_sequences
from oracle.trees import Heads, head_assignments, sibling_pairs, trees
from structkd.structures.dependency import DependencyCRF
from structkd.structures.head_selection import HeadSelection
from structkd.structures.linear_chain import LinearChainCRF
from structkd.structures.semi_markov import SemiMarkovCRF
from structkd.structures.sibling import SiblingDependencyCRF
from structkd.structures.token_softmax import TokenSoftmax

Potentials = dict[str, torch.Tensor]
Kind = Literal["tags", "arcs", "spans"]

SEEDS = st.integers(min_value=0, max_value=2**31 - 1)
"""Generator seeds for hypothesis: every random draw of the suites comes from one."""


@dataclass(frozen=True)
class Case:
    """How the shared suites talk to one structure.

    Attributes:
        name: registry key and test id.
        make: builds the structure from potentials (keyword names as drawn) and ``lengths``.
        kind: "tags" (a label per token), "arcs" (a head per word) or "spans" (span sets): how
            its marginals normalise.
        potentials: (generator, batch, max_len, labels) -> random float64 potentials by name.
        space: (n, labels) -> every output of an n-word sentence in per-sentence form: the oracle.
        score: (potentials, b, output) -> the output's score in sentence b, written out by hand
            (element by element, so that it reads torch tensors and numpy arrays alike).
        parts: (output, max_len, labels) -> its part indicators, shaped like ``marginals[b]``.
        to_batch: (per-sentence outputs, one per sentence; max_len) -> the compact batched form.
        from_batch: (compact batched form, sentence b, length n) -> per-sentence form.
        crop: (potentials, b, n) -> sentence b's potentials, batch 1, cut to its own length n.
        nan_at: per potential, an index that sentence 0 of a draw of 2 sentences of 5 words with
            4 labels reads: NaN there must raise.
        pair_parts: like ``parts`` for the second part marginals (``part_marginals[1][b]``).
        labels: tags or span types of the tiny draws (arc structures ignore it).
        max_len / min_len: the sentence lengths the conformance suite draws (keep enumeration
            small).
        count: known number of outputs per length at ``labels``, checked against ``space``.
        tolerance: per dtype, the absolute and relative tolerance against the float64 oracle
            (float32: against the same structure in float64).
        scaled_tolerance: the normalisation tolerance at x1000 and beyond.
        has_topk / has_sample / exact: which optional operations the structure supports;
            ``exact=False`` (mean-field) has marginals but no log Z.
    """

    name: str
    make: Callable[..., Any]
    kind: Kind
    potentials: Callable[[torch.Generator, int, int, int], Potentials]
    space: Callable[[int, int], Sequence[Any]]
    score: Callable[[Potentials, int, Any], float]
    parts: Callable[[Any, int, int], torch.Tensor]
    to_batch: Callable[[Sequence[Any], int], Any]
    from_batch: Callable[[Any, int, int], Any]
    crop: Callable[[Potentials, int, int], Potentials]
    nan_at: Mapping[str, tuple[int, ...]]
    pair_parts: Callable[[Any, int, int], torch.Tensor] | None = None
    labels: int = 3
    max_len: int = 4
    min_len: int = 1
    count: Mapping[int, int] = field(default_factory=dict)
    tolerance: Mapping[torch.dtype, float] = field(
        default_factory=lambda: {torch.float64: 1e-6, torch.float32: 1e-4}
    )
    scaled_tolerance: float = 1e-3
    has_topk: bool = True
    has_sample: bool = True
    exact: bool = True

    def draw(self, gen: torch.Generator, batch: int, max_len: int) -> Potentials:
        return self.potentials(gen, batch, max_len, self.labels)

    def enumerate(self, n: int) -> Sequence[Any]:
        return self.space(n, self.labels)

    def indicator(self, y: Any, max_len: int) -> torch.Tensor:
        return self.parts(y, max_len, self.labels)

    def pair_indicator(self, y: Any, max_len: int) -> torch.Tensor:
        assert self.pair_parts is not None, f"{self.name} has one kind of part"
        return self.pair_parts(y, max_len, self.labels)

    def with_labels(self, labels: int) -> Case:
        """The same structure over another number of tags or span types."""
        return replace(self, labels=labels, count={})


def _randn(gen: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=gen, dtype=torch.float64)


# ---- tags: TokenSoftmax and LinearChainCRF ----------------------------------------------------


def token_logits(gen: torch.Generator, batch: int, max_len: int, labels: int) -> Potentials:
    return {"logits": _randn(gen, batch, max_len, labels)}


def chain_shared(gen: torch.Generator, batch: int, max_len: int, labels: int) -> Potentials:
    """One transition matrix for the batch, no start or end scores."""
    return {
        "emissions": _randn(gen, batch, max_len, labels),
        "transitions": _randn(gen, labels, labels),
    }


def chain_start_end(gen: torch.Generator, batch: int, max_len: int, labels: int) -> Potentials:
    """One transition matrix for the batch, with start and end scores (the tagger's CRF)."""
    return chain_shared(gen, batch, max_len, labels) | {
        "start": _randn(gen, labels),
        "end": _randn(gen, labels),
    }


def chain_batched(gen: torch.Generator, batch: int, max_len: int, labels: int) -> Potentials:
    """A transition matrix per sentence, with start and end scores."""
    return {
        "emissions": _randn(gen, batch, max_len, labels),
        "transitions": _randn(gen, batch, labels, labels),
        "start": _randn(gen, labels),
        "end": _randn(gen, labels),
    }


def token_score(pots: Potentials, b: int, y: Tags) -> float:
    return float(sum(pots["logits"][b, i, t] for i, t in enumerate(y)))


def chain_score(pots: Potentials, b: int, y: Tags) -> float:
    """The score written out term by term, straight from the definition."""
    if not y:
        return 0.0
    trans = pots["transitions"]
    trans = trans[b] if trans.ndim == 3 else trans
    total = sum(float(pots["emissions"][b, i, t]) for i, t in enumerate(y))
    total += sum(float(trans[a, c]) for a, c in zip(y[:-1], y[1:]))
    if "start" in pots:
        total += float(pots["start"][y[0]]) + float(pots["end"][y[-1]])
    return total


def tag_parts(y: Tags, max_len: int, labels: int) -> torch.Tensor:
    out = torch.zeros(max_len, labels, dtype=torch.float64)  # [N, T]
    for i, t in enumerate(y):
        out[i, t] = 1
    return out


def tag_pair_parts(y: Tags, max_len: int, labels: int) -> torch.Tensor:
    out = torch.zeros(max(max_len - 1, 0), labels, labels, dtype=torch.float64)  # [N-1, T, T]
    for i, (a, c) in enumerate(zip(y[:-1], y[1:])):
        out[i, a, c] = 1
    return out


def tags_to_batch(ys: Sequence[Tags], max_len: int, pad: int = 0) -> torch.Tensor:
    out = torch.full((len(ys), max_len), pad, dtype=torch.long)
    for b, y in enumerate(ys):
        out[b, : len(y)] = torch.tensor(y, dtype=torch.long)
    return out


def tags_from_batch(y: torch.Tensor, b: int, n: int) -> Tags:
    return tuple(y[b, :n].tolist())


def token_crop(pots: Potentials, b: int, n: int) -> Potentials:
    return {"logits": pots["logits"][b : b + 1, :n]}


def chain_crop(pots: Potentials, b: int, n: int) -> Potentials:
    trans = pots["transitions"]
    own = {
        "emissions": pots["emissions"][b : b + 1, :n],
        "transitions": trans[b : b + 1] if trans.dim() == 3 else trans,
    }
    return own | {k: pots[k] for k in ("start", "end") if k in pots}


def _tag_case(name: str, make: Callable[..., Any], **kw: Any) -> Case:
    return Case(
        name=name,
        make=make,
        kind="tags",
        space=tag_sequences,
        from_batch=tags_from_batch,
        parts=tag_parts,
        **kw,
    )


_CHAIN = {
    "make": LinearChainCRF,
    "score": chain_score,
    "pair_parts": tag_pair_parts,
    # Padding holds junk outside the tag range: score() must ignore it.
    "to_batch": functools.partial(tags_to_batch, pad=7),
    "crop": chain_crop,
    "count": {0: 1, 1: 3, 3: 27},
}
_CHAIN_NAN = {"emissions": (0, 1, 0), "transitions": (1, 2)}
_START_END_NAN = {"start": (0,), "end": (3,)}


# ---- arcs: HeadSelection, DependencyCRF (Eisner, matrix-tree), SiblingDependencyCRF -----------


def arcs(gen: torch.Generator, batch: int, max_len: int, labels: int) -> Potentials:
    size = max_len + 1
    return {"arc_scores": _randn(gen, batch, size, size)}


def siblings(gen: torch.Generator, batch: int, max_len: int, labels: int) -> Potentials:
    size = max_len + 1
    return {
        "arc_scores": _randn(gen, batch, size, size),
        "sib_scores": _randn(gen, batch, size, size, size),
    }


def arc_score(pots: Potentials, b: int, heads: Heads) -> float:
    return float(sum(pots["arc_scores"][b, d, h] for d, h in enumerate(heads, start=1)))


def sibling_score(pots: Potentials, b: int, heads: Heads) -> float:
    arc = sum(float(pots["arc_scores"][b, d, h]) for d, h in enumerate(heads, 1))
    sib = sum(float(pots["sib_scores"][b, h, m, s]) for h, m, s in sibling_pairs(heads))
    return arc + sib


def arc_parts(heads: Heads, max_len: int, labels: int = 0) -> torch.Tensor:
    out = torch.zeros(max_len + 1, max_len + 1, dtype=torch.float64)  # [N+1, N+1]
    for d, h in enumerate(heads, start=1):
        out[d, h] = 1
    return out


def sibling_pair_parts(heads: Heads, max_len: int, labels: int = 0) -> torch.Tensor:
    size = max_len + 1
    out = torch.zeros(size, size, size, dtype=torch.float64)  # [N+1, N+1, N+1]
    for h, m, s in sibling_pairs(heads):
        out[h, m, s] = 1
    return out


def heads_to_batch(ys: Sequence[Heads], max_len: int) -> torch.Tensor:
    out = torch.zeros(len(ys), max_len + 1, dtype=torch.long)
    for b, y in enumerate(ys):
        out[b, 1 : len(y) + 1] = torch.tensor(y, dtype=torch.long)
    return out


def heads_from_batch(y: torch.Tensor, b: int, n: int) -> Heads:
    return tuple(y[b, 1 : n + 1].tolist())


def arc_crop(pots: Potentials, b: int, n: int) -> Potentials:
    return {"arc_scores": pots["arc_scores"][b : b + 1, : n + 1, : n + 1]}


def sibling_crop(pots: Potentials, b: int, n: int) -> Potentials:
    return arc_crop(pots, b, n) | {
        "sib_scores": pots["sib_scores"][b : b + 1, : n + 1, : n + 1, : n + 1]
    }


def _arc_case(name: str, make: Callable[..., Any], space: Callable[[int], Sequence[Heads]],
              **kw: Any) -> Case:
    return Case(
        name=name,
        make=make,
        kind="arcs",
        potentials=kw.pop("potentials", arcs),
        space=lambda n, labels: space(n),
        score=kw.pop("score", arc_score),
        parts=arc_parts,
        to_batch=heads_to_batch,
        from_batch=heads_from_batch,
        crop=kw.pop("crop", arc_crop),
        nan_at=kw.pop("nan_at", {"arc_scores": (0, 2, 1)}),
        **kw,
    )


def _tree_space(projective: bool, multiroot: bool) -> Callable[[int], Sequence[Heads]]:
    return functools.partial(trees, projective=projective, multiroot=multiroot)


_SIBLING = {
    "potentials": siblings,
    "score": sibling_score,
    "crop": sibling_crop,
    "pair_parts": sibling_pair_parts,
    "nan_at": {"arc_scores": (0, 2, 1), "sib_scores": (0, 1, 2, 3)},
    "count": {1: 1, 2: 2, 3: 7, 4: 30},
}


# ---- spans: SemiMarkovCRF ----------------------------------------------------------------------


def spans(gen: torch.Generator, batch: int, max_len: int, labels: int) -> Potentials:
    return {"span_scores": _randn(gen, batch, max_len, max_len, labels)}


def span_score(pots: Potentials, b: int, y: SpanSet) -> float:
    return float(sum(pots["span_scores"][b, i, j, r] for i, j, r in y))


def span_parts(y: SpanSet, max_len: int, labels: int) -> torch.Tensor:
    out = torch.zeros(max_len, max_len, labels, dtype=torch.float64)  # [N, N, R]
    for i, j, r in y:
        out[i, j, r] = 1
    return out


def span_crop(pots: Potentials, b: int, n: int) -> Potentials:
    return {"span_scores": pots["span_scores"][b : b + 1, :n, :n]}


N_TYPES = 2  # span types of the semi-Markov case


# ---- the registry ------------------------------------------------------------------------------

_ALL = [
    _tag_case(
        "token_softmax",
        TokenSoftmax,
        potentials=token_logits,
        score=token_score,
        to_batch=tags_to_batch,
        crop=token_crop,
        nan_at={"logits": (0, 1, 0)},
        count={3: 27},
    ),
    _tag_case("linear_chain", potentials=chain_shared, nan_at=_CHAIN_NAN, **_CHAIN),
    _tag_case(
        "linear_chain_start_end",
        potentials=chain_start_end,
        nan_at=_CHAIN_NAN | _START_END_NAN,
        **_CHAIN,
    ),
    # Per-sentence transitions with start/end scores; draws empty sentences too.
    _tag_case(
        "linear_chain_batched",
        potentials=chain_batched,
        nan_at={"emissions": (0, 1, 0), "transitions": (0, 1, 2)} | _START_END_NAN,
        min_len=0,
        **_CHAIN,
    ),
    _arc_case("head_selection", HeadSelection, head_assignments, count={1: 1, 3: 27, 4: 256}),
    _arc_case(
        "eisner",
        functools.partial(DependencyCRF, projective=True, multiroot=False),
        _tree_space(projective=True, multiroot=False),
        max_len=5,
        count={1: 1, 2: 2, 3: 7, 4: 30, 5: 143},
    ),
    _arc_case(
        "eisner_multiroot",
        functools.partial(DependencyCRF, projective=True, multiroot=True),
        _tree_space(projective=True, multiroot=True),
        count={2: 3, 3: 12, 4: 55},
    ),
    _arc_case(
        "matrix_tree",
        functools.partial(DependencyCRF, projective=False, multiroot=False),
        _tree_space(projective=False, multiroot=False),
        count={1: 1, 2: 2, 3: 9, 4: 64},
        has_topk=False,
    ),
    _arc_case(
        "matrix_tree_multiroot",
        functools.partial(DependencyCRF, projective=False, multiroot=True),
        _tree_space(projective=False, multiroot=True),
        count={2: 3, 3: 16, 4: 125},
        has_topk=False,
    ),
    _arc_case(
        "sibling_exact",
        SiblingDependencyCRF,
        _tree_space(projective=True, multiroot=False),
        **_SIBLING,
    ),
    # Approximate inference: marginals and decoding only (the suites skip what needs log Z).
    _arc_case(
        "sibling_mfvi",
        functools.partial(SiblingDependencyCRF, inference="mfvi"),
        _tree_space(projective=True, multiroot=False),
        exact=False,
        has_sample=False,
        **_SIBLING,
    ),
    Case(
        name="semi_markov",
        make=SemiMarkovCRF,
        kind="spans",
        potentials=spans,
        space=span_sets,
        score=span_score,
        parts=span_parts,
        to_batch=lambda ys, max_len: [list(y) for y in ys],
        from_batch=lambda y, b, n: tuple(tuple(span) for span in y[b]),
        crop=span_crop,
        nan_at={"span_scores": (0, 1, 2, 0)},
        labels=N_TYPES,
        count={n: count_span_sets(n, N_TYPES) for n in range(5)},
    ),
]
CASES: dict[str, Case] = {case.name: case for case in _ALL}
assert len(CASES) == len(_ALL), "case names must be unique"
