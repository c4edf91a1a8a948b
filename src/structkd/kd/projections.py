"""Projections: a teacher's marginals expressed on the student's parts.

Structural KD (Wang et al., ACL 2021, eq. 5) needs, for every substructure ``u`` the student
scores, the teacher's marginal ``P_t(u | x)``. A projection maps a teacher structure to exactly
the tensor(s) the student's ``expected_score`` takes. One function per (teacher, student) pair
of types; registering a pair is the only thing a new structure needs to join KD.

Cases of the paper covered here:

* 1a  LinearChainCRF -> LinearChainCRF: the teacher's own unary and pair marginals.
* 1b  DependencyCRF / HeadSelection -> HeadSelection: the teacher's arc marginals.
* 2a  LinearChainCRF -> TokenSoftmax: the teacher's unary marginals (student is finer).
* 2b  SiblingDependencyCRF -> HeadSelection: the teacher's (exact or mean-field) arc marginals.
* 3   TokenSoftmax -> LinearChainCRF: tag pairs of an independent teacher are products of its
      per-token distributions (teacher is finer).
* 4   SemiMarkovCRF -> TokenSoftmax: tag marginals from span marginals, exact in O(N^2 R).
* SemiMarkovCRF -> LinearChainCRF (beyond the paper): also needs consecutive tag pairs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from structkd.kd.span_projection import span_tag_marginals, span_tag_pair_marginals
from structkd.structures.base import Structure
from structkd.structures.dependency import DependencyCRF
from structkd.structures.head_selection import HeadSelection
from structkd.structures.linear_chain import LinearChainCRF
from structkd.structures.semi_markov import SemiMarkovCRF
from structkd.structures.sibling import SiblingDependencyCRF
from structkd.structures.token_softmax import TokenSoftmax

Projection = Callable[[Any, Any, str], Any]
_PROJECTIONS: dict[tuple[type, type], Projection] = {}
_PARTIAL: set[tuple[type, type]] = set()


def register_projection(
    teacher: type, student: type, partial: bool = False
) -> Callable[[Projection], Projection]:
    """Decorator registering ``fn(teacher, student, tag_scheme) -> student part marginals``.

    Args:
        teacher: the teacher's structure type.
        student: the student's structure type.
        partial: the student's parts may not express all of the teacher's mass (a word's
            marginals then sum to less than 1, e.g. heads beyond a sequence-labeling parser's
            label inventory). Local tempering (``tempered_projection``) then keeps each slot's
            expressed mass instead of renormalizing it to 1.
    """

    def wrap(fn: Projection) -> Projection:
        _PROJECTIONS[(teacher, student)] = fn
        if partial:
            _PARTIAL.add((teacher, student))
        return fn

    return wrap


def supported_pairs() -> list[str]:
    """Names of the supported (teacher -> student) pairs."""
    return [f"{t.__name__} -> {s.__name__}" for t, s in _PROJECTIONS]


def _lookup(teacher: Structure, student: Structure) -> Projection:
    for (t_type, s_type), fn in _PROJECTIONS.items():
        if type(teacher) is t_type and type(student) is s_type:
            return fn
    raise TypeError(
        f"no structural KD from {type(teacher).__name__} to {type(student).__name__}; "
        f"supported pairs: {', '.join(supported_pairs())}"
    )


def _check_lengths(teacher: Structure, student: Structure) -> None:
    if not torch.equal(teacher.lengths, student.lengths):
        raise ValueError(
            f"teacher and student disagree on sentence lengths: "
            f"{teacher.lengths.tolist()} vs {student.lengths.tolist()}"
        )


def _check_labels(teacher_labels: int, student_labels: int, what: str) -> None:
    if teacher_labels != student_labels:
        raise ValueError(
            f"teacher and student {what} differ in size: {teacher_labels} vs {student_labels}"
        )


def project(teacher: Structure, student: Structure, tag_scheme: str = "BIOES") -> Any:
    """The teacher's marginals on the student's parts, detached from the teacher's graph.

    This is the tensor (or tuple of tensors) a trainer caches once per sentence and later passes
    to ``structural_kd_loss_from_marginals``; its layout is the student's ``part_marginals``.

    Args:
        teacher: any structure of a supported pair (see ``supported_pairs``).
        student: the student structure (only its type, sizes and lengths are read).
        tag_scheme: "BIOES" or "BIO", the tag layout of a tagger student of a span teacher.

    Returns:
        LinearChainCRF student: (unary [B,N,L], pair [B,N-1,L,L]); TokenSoftmax: [B,N,L];
        HeadSelection / DependencyCRF: arcs [B,N+1,N+1].

    Raises:
        TypeError: for an unsupported pair, naming the supported ones.
        ValueError: when lengths or label inventories differ.
    """
    fn = _lookup(teacher, student)
    _check_lengths(teacher, student)
    with torch.no_grad():
        return fn(teacher, student, tag_scheme)


@register_projection(LinearChainCRF, LinearChainCRF)
def _crf_to_crf(teacher: LinearChainCRF, student: LinearChainCRF, _: str) -> Any:
    _check_labels(teacher.emissions.shape[-1], student.emissions.shape[-1], "tag sets")
    unary, pair = teacher.part_marginals
    return unary.detach(), pair.detach()


@register_projection(LinearChainCRF, TokenSoftmax)
def _crf_to_token(teacher: LinearChainCRF, student: TokenSoftmax, _: str) -> Tensor:
    _check_labels(teacher.emissions.shape[-1], student.logits.shape[-1], "tag sets")
    return teacher.marginals.detach()


@register_projection(TokenSoftmax, TokenSoftmax)
def _token_to_token(teacher: TokenSoftmax, student: TokenSoftmax, _: str) -> Tensor:
    _check_labels(teacher.logits.shape[-1], student.logits.shape[-1], "tag sets")
    return teacher.marginals.detach()


@register_projection(TokenSoftmax, LinearChainCRF)
def _token_to_crf(teacher: TokenSoftmax, student: LinearChainCRF, _: str) -> Any:
    _check_labels(teacher.logits.shape[-1], student.emissions.shape[-1], "tag sets")
    unary = teacher.marginals.detach()  # [B, N, L], zero on padding
    # Independent tokens: P(y_i = a, y_{i+1} = c) = q_i(a) q_{i+1}(c); zero past the end
    # because the padded unary rows are zero.
    pair = unary[:, :-1, :, None] * unary[:, 1:, None, :]  # [B, N-1, L, L]
    return unary, pair


def _span_tags(teacher: SemiMarkovCRF, student_tags: int, scheme: str) -> Tensor:
    unary = span_tag_marginals(teacher, scheme).detach()
    _check_labels(unary.shape[-1], student_tags, f"tag sets ({scheme} tags of the span types)")
    return unary


@register_projection(SemiMarkovCRF, TokenSoftmax)
def _span_to_token(teacher: SemiMarkovCRF, student: TokenSoftmax, scheme: str) -> Tensor:
    return _span_tags(teacher, student.logits.shape[-1], scheme)


@register_projection(SemiMarkovCRF, LinearChainCRF)
def _span_to_crf(teacher: SemiMarkovCRF, student: LinearChainCRF, scheme: str) -> Any:
    unary = _span_tags(teacher, student.emissions.shape[-1], scheme)
    return unary, span_tag_pair_marginals(teacher, scheme).detach()


def _arcs(teacher: Any, student: Any) -> Tensor:
    _check_labels(teacher.arc_scores.shape[-1], student.arc_scores.shape[-1], "arc matrices")
    return teacher.marginals.detach()


for _teacher_type in (DependencyCRF, HeadSelection, SiblingDependencyCRF):
    register_projection(_teacher_type, HeadSelection)(lambda t, s, _: _arcs(t, s))


@register_projection(DependencyCRF, DependencyCRF)
def _tree_to_tree(teacher: DependencyCRF, student: DependencyCRF, _: str) -> Tensor:
    if (teacher.projective, teacher.multiroot) != (student.projective, student.multiroot):
        raise TypeError(
            "DependencyCRF -> DependencyCRF needs the same kind of tree on both sides "
            f"(teacher projective={teacher.projective}, multiroot={teacher.multiroot}; "
            f"student projective={student.projective}, multiroot={student.multiroot})"
        )
    return _arcs(teacher, student)


def local_temper(marginals: Any, temperature: float) -> Any:
    """Re-normalizes each slot of the marginals as ``softmax(log q / T)``.

    This is the *local* temperature of the paper's code: the teacher's marginals are computed at
    T = 1 and each slot (a token's tag distribution, a position's tag-pair distribution, a word's
    head distribution) is sharpened or flattened on its own. Impossible entries stay impossible
    and padding stays zero.

    Args:
        marginals: a tensor [B, N, K] (slot = last axis) or a (unary, pair) tuple, where the
            pair tensor [B, N-1, L, L] has its slot over the last two axes.
        temperature: T > 0.
    """
    if isinstance(marginals, tuple):
        unary, pair = marginals
        flat = _temper_last(pair.flatten(-2), temperature).view_as(pair)
        return _temper_last(unary, temperature), flat
    return _temper_last(marginals, temperature)


def _temper_last(q: Tensor, temperature: float) -> Tensor:
    alive = q > 0
    logits = torch.where(
        alive,
        q.clamp_min(torch.finfo(q.dtype).tiny).log() / temperature,
        torch.full_like(q, float("-inf")),
    )
    tempered = torch.softmax(logits, dim=-1)
    return torch.where(alive.any(-1, keepdim=True), tempered, torch.zeros_like(q))


def tempered_projection(
    teacher: Structure,
    student: Structure,
    temperature: float = 1.0,
    mode: str = "global",
    tag_scheme: str = "BIOES",
) -> Any:
    """Teacher marginals on the student's parts at temperature ``temperature`` (what Structural
    KD and the teacher cache use): ``global`` tempers the teacher's potentials, ``local`` each
    slot of its marginals (keeping the slot's mass for a ``partial`` projection). The one place
    where Structural KD's temperature meets the teacher."""
    if mode == "global" and temperature != 1.0:
        return project(teacher.tempered(temperature), student, tag_scheme)
    marginals = project(teacher, student, tag_scheme)
    if temperature == 1.0:
        return marginals
    tempered = local_temper(marginals, temperature)
    if (type(teacher), type(student)) in _PARTIAL:  # each slot keeps what the student expresses
        return tempered * marginals.sum(-1, keepdim=True)
    return tempered


def tempered_pair_sums(
    teacher: LinearChainCRF, student: LinearChainCRF, temperature: float = 1.0
) -> tuple[Tensor, Tensor]:
    """A CRF teacher's marginals for a CRF student in the form its loss reads, at a global
    ``temperature``: the student's transitions do not depend on the position, so the loss needs
    the tag-pair marginals only summed over positions (``LinearChainCRF.pair_marginal_sums``),
    never the [B, N-1, L, L] pair tensor. ``structural_kd_loss_from_marginals`` gives the same
    loss from these as from ``tempered_projection`` (up to float rounding).

    Args:
        teacher: the teacher's chain, [B, N, L] emissions.
        student: the student's chain (only its label count and lengths are read).
        temperature: divides the teacher's potentials (a local temperature re-normalizes each
            position's pairs, so it needs ``tempered_projection``).

    Returns:
        (unary [B, N, L], pair sums [B, L, L]), detached. O(B N L^2) time, O(B N L) memory;
        one recursion over the words for both directions (``LinearChainCRF.fuse_passes``).

    Raises:
        ValueError: when the two disagree on the tag set or the sentence lengths.
    """
    _check_labels(teacher.emissions.shape[-1], student.emissions.shape[-1], "tag sets")
    _check_lengths(teacher, student)
    if temperature != 1.0:
        teacher = teacher.tempered(temperature)
    with torch.no_grad():
        teacher.fuse_passes()  # both directions in one recursion: this runs per batch
        return teacher.marginals.detach(), teacher.pair_marginal_sums.detach()

