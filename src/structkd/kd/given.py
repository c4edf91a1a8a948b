"""Teachers known only by their marginals (a marginal file), and their projections.

A marginal file (``structkd.models.marginal_teacher``, docs/marginal-files.md) holds what
Structural KD reads of a teacher, its marginals on some parts, without the potentials that made
them. These classes carry such marginals through the same projections as real structures, so a
file teacher distils exactly as the teacher that wrote it:

* ``ChainMarginals``: tag marginals [B, N, L] and adjacent tag-pair marginals [B, N-1, L, L] of
  a chain teacher (a CRF): onto a CRF student its unary and pair parts (case 1a), onto a MaxEnt
  student its unary parts (case 2a);
* ``SpanMarginals``: labeled-span marginals [B, N, N, R]: onto a MaxEnt student the exact BIOES or
  BIO tag marginals (case 4). A CRF student's tag pairs across two adjacent spans are not
  determined by span marginals alone, so that pair is refused;
* ``ArcMarginals``: head marginals [B, N+1, N+1] (``[b, d, h]``: word d takes head h) onto
  head-selection and tree-CRF students (cases 1b, 2b).

Per-token tag distributions need no class: they are a ``TokenSoftmax`` of their logarithms.
None of these has potentials: only ``part_marginals`` (and ``lengths``) is defined.
"""

from __future__ import annotations

from typing import Any, NoReturn

import torch
from torch import Tensor

from structkd.kd.projections import register_projection
from structkd.structures.base import Structure
from structkd.structures.dependency import DependencyCRF
from structkd.structures.head_selection import HeadSelection
from structkd.structures.linear_chain import LinearChainCRF
from structkd.structures.token_softmax import TokenSoftmax


class ProjectOnly(Structure):
    """A teacher to project, never a distribution to score or decode: a subclass defines only
    ``_part_marginals`` (and ``lengths``, perhaps ``tempered``); the rest refuses with a
    TypeError saying ``refusal``."""

    refusal = "is a teacher to project only"

    def _refuse(self) -> NoReturn:
        raise TypeError(f"{type(self).__name__} {self.refusal}")

    def _log_partition(self) -> Tensor:
        self._refuse()

    def expected_score(self, part_marginals: Any) -> Tensor:
        self._refuse()

    def _argmax(self) -> Any:
        self._refuse()

    def score(self, y: Any) -> Tensor:
        self._refuse()


class _Given(ProjectOnly):
    """Fixed marginals: a teacher to project, never a distribution to score or decode."""

    refusal = "holds marginals only (a marginal-file teacher)"

    def __init__(self, parts: Any, lengths: Tensor) -> None:
        self.parts = parts
        self.lengths = lengths

    def _part_marginals(self) -> Any:
        return self.parts

    def tempered(self, temperature: float) -> _Given:
        raise TypeError(
            "a marginal file holds marginals at T = 1: use distill.temperature_mode=local"
        )


class ChainMarginals(_Given):
    """Tag marginals ``unary`` [B, N, L] and ``pair`` [B, N-1, L, L] (zero past each end)."""

    def __init__(self, unary: Tensor, pair: Tensor, lengths: Tensor) -> None:
        super().__init__((unary, pair), lengths)


class SpanMarginals(_Given):
    """Labeled-span marginals [B, N, N, R]: ``[b, s, e, r]`` = P(span s..e, inclusive, of type
    r), zero unless ``s <= e < length``."""


class ArcMarginals(_Given):
    """Head marginals [B, N+1, N+1]: ``[b, d, h]`` = P(word d takes head h); row 0 is zero."""


def _same_size(given: int, student: int, what: str) -> None:
    if given != student:
        raise ValueError(
            f"the file's {what} and the student's differ in size: {given} vs {student}"
        )


@register_projection(ChainMarginals, LinearChainCRF)
def _chain_to_crf(teacher: ChainMarginals, student: LinearChainCRF, _: str) -> Any:
    unary, pair = teacher.parts
    _same_size(unary.shape[-1], student.emissions.shape[-1], "tag sets")
    return unary, pair


@register_projection(ChainMarginals, TokenSoftmax)
def _chain_to_token(teacher: ChainMarginals, student: TokenSoftmax, _: str) -> Tensor:
    _same_size(teacher.parts[0].shape[-1], student.logits.shape[-1], "tag sets")
    return teacher.parts[0]


def span_marginals_to_tags(mu: Tensor, scheme: str = "BIOES") -> Tensor:
    """Exact tag marginals [B, N, T] from labeled-span marginals mu [B, N, N, R].

    Token i's tag is fixed by the span covering it (Wang et al., ACL 2021, case 4): S-r from
    spans (i, i), B-r from (i, e > i), E-r from (s < i, i), I-r from (s < i < e); in BIO, B-r =
    a span starts at i, I-r = it covers i otherwise; O = 1 - P(a span covers i). Tag ids as in
    ``structkd.data.vocab.tag_vocab`` (types in ``mu``'s order). O(B N^2 R).
    """
    diag = torch.diagonal(mu, dim1=1, dim2=2).transpose(1, 2)  # [B, N, R]: spans (i, i)
    starts = mu.sum(2)  # [B, N, R]: spans (i, e >= i)
    ends = mu.sum(1)  # [B, N, R]: spans (s <= i, i)
    # covers[s', e'] = sum over s <= s', e >= e' of mu[s, e]; on the diagonal, spans over i.
    covers = mu.flip(2).cumsum(2).flip(2).cumsum(1)
    cover = torch.diagonal(covers, dim1=1, dim2=2).transpose(1, 2)  # [B, N, R]
    inside = cover - starts - ends + diag  # s < i < e
    if scheme == "BIO":
        per_type = torch.stack([starts, cover - starts], -1)  # [B, N, R, 2]
    else:
        per_type = torch.stack([starts - diag, inside, ends - diag, diag], -1)  # [B, N, R, 4]
    outside = 1.0 - cover.sum(-1, keepdim=True)  # [B, N, 1]
    return torch.cat([outside, per_type.flatten(2)], -1)


def _span_tags(teacher: SpanMarginals, student_tags: int, scheme: str) -> Tensor:
    mu = teacher.parts
    tags = span_marginals_to_tags(mu, scheme)
    mask = torch.arange(mu.shape[1], device=mu.device)[None, :] < teacher.lengths[:, None]
    _same_size(tags.shape[-1], student_tags, f"tag sets ({scheme} tags of the span types)")
    return tags * mask[..., None]


@register_projection(SpanMarginals, TokenSoftmax)
def _spans_to_token(teacher: SpanMarginals, student: TokenSoftmax, scheme: str) -> Tensor:
    return _span_tags(teacher, student.logits.shape[-1], scheme)


@register_projection(SpanMarginals, LinearChainCRF)
def _spans_to_crf(teacher: SpanMarginals, student: LinearChainCRF, _: str) -> NoReturn:
    raise ValueError(
        "span marginals give a CRF student its tag marginals but not its tag-pair marginals "
        "(two adjacent spans are not independent); distil a MaxEnt student from them, or "
        "write the span teacher's tag and tag-pair marginals (layout tag_pairs)"
    )


def _given_arcs(teacher: ArcMarginals, student: Any) -> Tensor:
    _same_size(teacher.parts.shape[-1], student.arc_scores.shape[-1], "arc matrices")
    return teacher.parts


for _student_type in (HeadSelection, DependencyCRF):
    register_projection(ArcMarginals, _student_type)(lambda t, s, _: _given_arcs(t, s))
