"""Structural KD and the baseline distillation losses it is compared with.

Every loss takes two structures (teacher, student) and returns [B] (``reduction="none"``), their
sum or their mean over sentences. Teachers are treated as constants: no gradient reaches them.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from structkd.kd.projections import project, tempered_projection
from structkd.kd.span_projection import spans_to_tags
from structkd.structures.base import Structure, sequence_mask
from structkd.structures.dependency import DependencyCRF
from structkd.structures.head_selection import HeadSelection
from structkd.structures.linear_chain import LinearChainCRF
from structkd.structures.semi_markov import SemiMarkovCRF
from structkd.structures.sibling import SiblingDependencyCRF
from structkd.structures.token_softmax import TokenSoftmax

_REDUCTIONS = ("none", "sum", "mean")
_MODES = ("global", "local")


def _reduce(per_sentence: Tensor, reduction: str) -> Tensor:
    if reduction == "none":
        return per_sentence
    if reduction == "sum":
        return per_sentence.sum()
    if reduction == "mean":
        return per_sentence.mean()
    raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def _check_temperature(temperature: float, mode: str = "global") -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if mode not in _MODES:
        raise ValueError(f"temperature_mode must be one of {_MODES}, got {mode!r}")


def structural_kd_loss(
    teacher: Structure,
    student: Structure,
    temperature: float = 1.0,
    temperature_mode: str = "global",
    reduction: str = "mean",
    tag_scheme: str = "BIOES",
) -> Tensor:
    """Structural KD: ``log Z_s - sum_u P_t(u) s_s(u)`` (Wang et al., ACL 2021, eq. 5).

    At T = 1 with exact teacher inference this equals, per sentence, the cross-entropy
    ``-sum_y P_t(y) log P_s(y)`` over the student's output space, computed in the cost of one
    student ``log Z`` plus one teacher marginal computation.

    Temperature: ``"global"`` tempers both distributions at the structure level (all potentials
    divided by T); ``"local"`` computes the teacher's marginals at T = 1 and re-normalizes each
    slot as ``softmax(log q / T)``, the student still tempered globally. Both scale the loss by
    T^2 so that gradients keep their magnitude (Hinton et al., 2015).

    Args:
        teacher: the teacher structure (a constant).
        student: the student structure; gradients flow into its potentials.
        temperature: T > 0.
        temperature_mode: "global" or "local".
        reduction: "none" ([B]), "sum" or "mean" (over sentences).
        tag_scheme: tag layout of a tagger student of a span teacher ("BIOES" or "BIO").

    Returns:
        The loss, [B] or a scalar.

    Raises:
        TypeError: for an unsupported (teacher, student) pair, naming the supported ones.
    """
    _check_temperature(temperature, temperature_mode)
    marginals = tempered_projection(teacher, student, temperature, temperature_mode, tag_scheme)
    return structural_kd_loss_from_marginals(marginals, student, temperature, reduction)


def structural_kd_loss_from_marginals(
    marginals: Any, student: Structure, temperature: float = 1.0, reduction: str = "mean"
) -> Tensor:
    """Structural KD from teacher marginals already projected on the student's parts.

    Args:
        marginals: the output of ``project`` (already tempered for T != 1), e.g. from a cache.
        student: the student structure (tempered here by ``temperature``).
        temperature: T > 0; the loss is multiplied by T^2.
        reduction: "none", "sum" or "mean".
    """
    _check_temperature(temperature)
    tempered = student if temperature == 1.0 else student.tempered(temperature)
    per_sentence = tempered.log_partition - tempered.expected_score(marginals)
    return _reduce(per_sentence * temperature**2, reduction)


# ---- baselines ------------------------------------------------------------------------------


LOCALLY_SCORED = (LinearChainCRF, TokenSoftmax, HeadSelection, DependencyCRF, SiblingDependencyCRF)
"""The structures with per-token scores (emissions, logits, per-word head scores): those Token
KD and sub-structure MSE can read."""


def has_local_scores(structure: Structure) -> bool:
    """Whether Token KD and sub-structure MSE can read ``structure``'s per-token scores."""
    return isinstance(structure, LOCALLY_SCORED)


def _local_logits(structure: Structure) -> tuple[Tensor, Tensor]:
    """Per-slot scores [B, N, K] and slot mask [B, N] of a structure with local parts."""
    if isinstance(structure, LinearChainCRF):
        return structure.emissions, sequence_mask(structure.lengths, structure.emissions.shape[1])
    if isinstance(structure, TokenSoftmax):
        return structure.logits, sequence_mask(structure.lengths, structure.logits.shape[1])
    if isinstance(structure, (HeadSelection, DependencyCRF, SiblingDependencyCRF)):
        scores = structure.arc_scores  # [B, N+1, N+1]
        n_nodes = scores.shape[-1]
        words = sequence_mask(structure.lengths + 1, n_nodes)
        words[:, 0] = False
        heads = sequence_mask(structure.lengths + 1, n_nodes)[:, None, :]  # [B, 1, N+1]
        eye = torch.eye(n_nodes, dtype=torch.bool, device=scores.device)
        valid = heads & ~eye
        return scores.masked_fill(~valid, float("-inf")).masked_fill(~words[..., None], 0.0), words
    raise TypeError(f"{type(structure).__name__} has no per-token scores")


def _paired_local_scores(
    teacher: Structure, student: Structure, what: str
) -> tuple[Tensor, Tensor, Tensor]:
    """Teacher and student per-slot scores [B, N, K] and their common slot mask [B, N].

    Raises:
        ValueError: when the two structures do not score the same slots.
    """
    t_scores, t_mask = _local_logits(teacher)
    s_scores, s_mask = _local_logits(student)
    if t_scores.shape != s_scores.shape:
        raise ValueError(
            f"{what} needs per-token scores of the same shape, got {list(t_scores.shape)} "
            f"and {list(s_scores.shape)}"
        )
    return t_scores, s_scores, t_mask & s_mask


def _token_kl(teacher_probs: Tensor, student_logp: Tensor, mask: Tensor) -> Tensor:
    """sum over slots of KL(teacher || student) [B]; zero-probability teacher entries skipped."""
    teacher_logp = teacher_probs.clamp_min(torch.finfo(teacher_probs.dtype).tiny).log()
    terms = torch.where(teacher_probs > 0, teacher_probs * (teacher_logp - student_logp), 0.0)
    return (terms.sum(-1) * mask).sum(-1)


def token_kd_loss(
    teacher: Structure, student: Structure, temperature: float = 1.0, reduction: str = "mean"
) -> Tensor:
    """Token-level KD (Hinton et al., 2015): per-token KL of ``softmax(local scores / T)``.

    Ignores structure entirely: for a CRF it distills the emission softmax, for a parser the
    per-word head softmax. Scaled by T^2.
    """
    _check_temperature(temperature)
    _paired_local_scores(teacher, student, "token KD")  # the shapes must agree
    return token_kd_loss_from_probs(
        token_kd_targets(teacher, temperature), student, temperature, reduction
    )


def token_kd_targets(teacher: Structure, temperature: float = 1.0) -> Tensor:
    """The teacher's ``softmax(local scores / T)`` [B, N, K] that Token KD fits (a constant, so a
    trainer may cache it per sentence); zero for impossible slots."""
    t_logits, _ = _local_logits(teacher)
    return torch.softmax(t_logits.detach() / temperature, -1).nan_to_num(0.0)


def token_kd_loss_from_probs(
    teacher_probs: Tensor, student: Structure, temperature: float = 1.0, reduction: str = "mean"
) -> Tensor:
    """Token KD from ``token_kd_targets`` [B, N, K] (e.g. read from a cache); scaled by T^2.

    Raises:
        ValueError: when the targets and the student's local scores differ in shape.
    """
    s_logits, mask = _local_logits(student)
    if teacher_probs.shape != s_logits.shape:
        raise ValueError(
            f"token KD needs per-token scores of the same shape, got {list(teacher_probs.shape)} "
            f"and {list(s_logits.shape)}"
        )
    s_logp = torch.log_softmax(s_logits / temperature, -1).nan_to_num(0.0)
    loss = _token_kl(teacher_probs.to(s_logp.dtype), s_logp, mask) * temperature**2
    return _reduce(loss, reduction)


def posterior_kd_loss(
    teacher: Structure, student: Structure, reduction: str = "mean", tag_scheme: str = "BIOES"
) -> Tensor:
    """Posterior KD (Wang et al., 2020): per-token KL between teacher and student marginals.

    Works for any supported pair whose student has per-token marginals (taggers and head
    selection); the teacher's marginals are first projected onto the student's tokens.
    """
    projected = project(teacher, student, tag_scheme)
    t_probs = projected[0] if isinstance(projected, tuple) else projected
    return posterior_kd_loss_from_marginals(t_probs, student, reduction)


def posterior_kd_loss_from_marginals(
    teacher_marginals: Tensor, student: Structure, reduction: str = "mean"
) -> Tensor:
    """Posterior KD from the teacher's per-token marginals already projected on the student's
    tokens ([B, N, L]; [B, N+1, N+1] for head selection), e.g. read from a cache."""
    s_probs = student.marginals
    t_probs = teacher_marginals.to(s_probs.dtype)
    s_logp = s_probs.clamp_min(torch.finfo(s_probs.dtype).tiny).log()
    mask = sequence_mask(student.lengths, t_probs.shape[1])
    if isinstance(student, HeadSelection):
        mask = sequence_mask(student.lengths + 1, t_probs.shape[1])
        mask[:, 0] = False
    return _reduce(_token_kl(t_probs, s_logp, mask), reduction)


def topk_kd_loss(
    teacher: Structure,
    student: Structure,
    k: int,
    weighted: bool = False,
    reduction: str = "mean",
    tag_scheme: str = "BIOES",
) -> Tensor:
    """Top-K KD: negative log-likelihood of the teacher's k-best structures under the student.

    Unweighted (Top-K; Kim & Rush, 2016, with k = 1 the teacher's best output as pseudo-gold),
    the k outputs count equally; weighted (Top-WK), by their teacher probabilities renormalized
    over the k-best list. A sentence with fewer than k structures uses the ones it has.

    Args:
        teacher: a structure with ``topk``.
        student: a student of a supported pair; span teachers are converted to ``tag_scheme``.
        k: list size.
        weighted: Top-WK instead of Top-K.
    """
    outputs, weights = kbest_targets(teacher, k, weighted, tag_scheme)
    _check_tagger(student, outputs)
    return _reduce(kbest_nll(student, outputs, weights), reduction)


@torch.no_grad()
def kbest_targets(
    teacher: Structure, k: int, weighted: bool = False, tag_scheme: str = "BIOES"
) -> tuple[Tensor, Tensor]:
    """The teacher's k-best outputs (tag sequences, or heads for a parser) and their weights.

    What ``topk_kd_loss`` distils, separated so that a trainer can cache it once per sentence
    (the teacher is frozen): O(k) times the teacher's decoder. A span teacher's segmentations
    become ``tag_scheme`` tags of its span labels (the student must know the same types).

    Returns:
        outputs: LongTensor [K, B, N] (tag ids; [K, B, N+1] heads for dependency structures),
            anything past a sentence's end.
        weights: [K, B] (``kbest_weights``): zero for repeats of a short list.
    """
    kbest = teacher.topk(k)
    outputs = torch.stack([_as_tags(teacher, y, tag_scheme) for y in kbest])
    t_scores = torch.stack([teacher.score(y) for y in kbest]) if weighted else None
    return outputs, kbest_weights(kbest, teacher.lengths.shape[0], teacher.lengths.device, t_scores)


def kbest_nll(student: Structure, outputs: Tensor, weights: Tensor) -> Tensor:
    """Weighted student NLL [B] of outputs [K, B, ...] with weights [K, B] (``kbest_targets``
    or a cache of them); positions past a sentence's end are ignored."""
    nll = torch.stack([-student.log_prob(y) for y in outputs])  # [K, B]
    return (weights.to(nll.dtype) * nll).sum(0)


def _as_tags(teacher: Structure, y: Any, scheme: str) -> Tensor:
    if not isinstance(teacher, SemiMarkovCRF):
        return y
    n_types = int(teacher.span_scores.shape[-1])
    max_len = int(teacher.span_scores.shape[1])
    tags = torch.zeros(len(y), max_len, dtype=torch.long, device=teacher.lengths.device)
    for b, spans in enumerate(y):
        n = int(teacher.lengths[b])
        tags[b, :n] = torch.tensor(spans_to_tags(spans, n, n_types, scheme), dtype=torch.long)
    return tags


def _check_tagger(student: Structure, outputs: Tensor) -> None:
    """Raises ValueError if a tagger student lacks some of the teacher's tag ids."""
    if isinstance(student, LinearChainCRF):
        n_tags = int(student.emissions.shape[-1])
    elif isinstance(student, TokenSoftmax):
        n_tags = int(student.logits.shape[-1])
    else:
        return
    if outputs.numel() and int(outputs.max()) >= n_tags:
        raise ValueError(f"the teacher's outputs use tag ids the student's {n_tags} tags lack")


def kbest_weights(
    kbest: list[Any], batch: int, device: torch.device, scores: Tensor | None = None
) -> Tensor:
    """Weights [K, B] of a ``topk`` list for Top-K / Top-WK (Kim & Rush, 2016).

    A sentence with fewer than K structures repeats its last one; repeats weigh 0. The others
    weigh equally (``scores`` None) or by the softmax of their teacher scores [K, B] over the
    list (the teacher's probabilities renormalized over it).
    """
    rows = [torch.ones(batch, dtype=torch.bool, device=device)]
    for prev, cur in zip(kbest[:-1], kbest[1:]):
        if isinstance(cur, Tensor):
            rows.append((cur != prev).any(-1))
        else:
            rows.append(torch.tensor([c != p for c, p in zip(cur, prev)], device=device))
    valid = torch.stack(rows)  # [K, B]
    if scores is not None:
        return torch.softmax(scores.masked_fill(~valid, float("-inf")), dim=0)
    return valid.double() / valid.sum(0, keepdim=True)  # callers cast to their dtype


def substructure_mse_loss(
    teacher: Structure, student: Structure, reduction: str = "mean"
) -> Tensor:
    """Sub-structure score matching (Lin et al., 2022): MSE between local scores.

    Both structures must score the same parts: emissions/logits of the same tag set, arc scores
    of the same size, and the transition matrix when both are linear-chain CRFs. Mean over the
    valid parts of each sentence.
    """
    t_scores, s_scores, mask = _paired_local_scores(teacher, student, "sub-structure MSE")
    finite = torch.isfinite(t_scores) & mask[..., None]
    diff = torch.where(finite, s_scores - t_scores.detach(), 0.0)
    per_sentence = diff.pow(2).sum((1, 2)) / finite.sum((1, 2)).clamp_min(1)
    if isinstance(teacher, LinearChainCRF) and isinstance(student, LinearChainCRF):
        per_sentence = per_sentence + (
            (student.transitions - teacher.transitions.detach()).pow(2).flatten(-2).mean(-1)
        )
    return _reduce(per_sentence, reduction)
