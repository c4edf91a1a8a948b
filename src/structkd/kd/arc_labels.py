"""Projections of a graph-based dependency teacher onto a sequence-labeling student's labels
(relative-head labels, ``structkd.structures.relative_labels``): its arc (and relation)
marginals onto the marginals of the student's labels, for structural KD and token KD, and its
arc (and relation) scores onto the scores of the same labels, for sub-structure score matching.

``LabeledArcs`` is the teacher's side as a structure: its arcs (any graph-based structure) with
its relation scores, read in the student's label inventory. Its projection onto the student's
``TokenSoftmax`` is registered like every other pair (a ``partial`` one: heads and relations no
label expresses lose their mass), so ``kd.projections.tempered_projection`` tempers it globally
(``LabeledArcs.tempered``: the arcs' potentials and the relation scores) or locally, as it does
every teacher.

Pure tensor functions of the teacher's tensors and the student's label inventory.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from structkd.kd.given import ProjectOnly
from structkd.kd.projections import register_projection
from structkd.structures.base import Structure
from structkd.structures.relative_labels import label_heads, label_layout, parse_label, word_mask
from structkd.structures.token_softmax import TokenSoftmax


def arc_marginals_to_label_marginals(
    arc_marginals: Tensor,
    rel_probs: Tensor | None,
    label_vocab: Sequence[str],
    rel_vocab: Sequence[str] | None = None,
    lengths: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """A graph-based teacher's marginals projected onto a sequence-labeling student's labels.

    ``P(label of d = (offset, rel)) = P(head of d = d + offset) * P(rel | d, head)``, with
    ``d + offset`` read as 0 for ``ROOT``. A (head, rel) pair no student label expresses (an
    offset or a relation outside the inventory) keeps its mass out of the label marginals, and
    that mass is returned per sentence: for each word, label marginals + lost mass = the word's
    teacher mass (1 for normalized marginals). Differentiable. O(B N K + B N^2 R).

    Args:
        arc_marginals: [B, N+1, N+1] or [N+1, N+1] (dep, head) arc marginals; row 0 unused.
        rel_probs: [B, N+1, N+1, R] (or unbatched) ``P(rel | dep, head)``, or None when the
            labels carry no relation.
        label_vocab: K distinct labels, all with a relation (given ``rel_probs``) or none.
        rel_vocab: R relation names indexing ``rel_probs``' last dimension.
        lengths: LongTensor [B] of sentence lengths (None = N); padding is ignored.

    Returns:
        ``label_marginals`` [B, N, K] (or [N, K]), 0 on padding words, and ``lost_mass`` [B]
        (or a scalar).

    Raises:
        ValueError: on malformed or duplicate labels, labels with and without relations mixed,
            relations without ``rel_probs``/``rel_vocab`` or ``rel_probs`` with unlabeled labels,
            or wrong shapes.
    """
    unbatched = arc_marginals.dim() == 2
    arcs = arc_marginals[None] if unbatched else arc_marginals  # [B, N+1, N+1]
    rels = None if rel_probs is None else (rel_probs[None] if unbatched else rel_probs)
    if arcs.dim() != 3 or arcs.shape[1] != arcs.shape[2] or arcs.shape[1] == 0:
        raise ValueError(f"arc_marginals must be [B, N+1, N+1], got {list(arc_marginals.shape)}")
    batch, size = arcs.shape[0], arcs.shape[1]
    n = size - 1
    parsed = [parse_label(label) for label in label_vocab]
    if len(set(parsed)) != len(parsed):
        raise ValueError("label_vocab holds the same label twice")
    labeled = [rel is not None for _, rel in parsed]
    if any(labeled) and not all(labeled):
        raise ValueError("label_vocab mixes labels with and without a relation")
    use_rels = bool(parsed) and all(labeled)
    if use_rels != (rels is not None):
        raise ValueError("rel_probs must be given exactly when the labels carry relations")
    device = arcs.device
    lengths_ = torch.full((batch,), n, device=device) if lengths is None else lengths.to(device)
    positions = torch.arange(size, device=device)
    in_sentence = positions[None, :] <= lengths_[:, None]  # [B, N+1]
    pair_ok = in_sentence[:, 1:, None] & in_sentence[:, None, :]  # [B, N, N+1] dep, head
    # Padding may hold junk (even NaN): replace it before anything multiplies or sums it.
    arcs = torch.where(pair_ok, arcs[:, 1:, :], torch.zeros((), dtype=arcs.dtype, device=device))
    offsets = torch.tensor([0 if o is None else o for o, _ in parsed], device=device)  # [K]
    is_root = torch.tensor([o is None for o, _ in parsed], dtype=torch.bool, device=device)
    words = torch.arange(1, n + 1, device=device)[:, None]  # [N, 1]
    head = torch.where(is_root[None, :], torch.zeros_like(words), words + offsets)  # [N, K]
    # A non-ROOT offset landing on position 0 is no label's meaning: only ROOT reaches the root.
    keep = is_root[None, :] | ((head >= 1) & (head <= n))  # [N, K]
    head = head.clamp(0, n)
    marginals = arcs.gather(2, head.expand(batch, n, -1))  # [B, N, K]
    if rels is not None:
        if rel_vocab is None or rels.shape != (batch, size, size, len(rel_vocab)):
            raise ValueError("rel_probs must be [B, N+1, N+1, R] with R = len(rel_vocab)")
        rel_ids = {rel: r for r, rel in enumerate(rel_vocab)}
        rel_index = torch.tensor([rel_ids.get(str(rel), -1) for _, rel in parsed], device=device)
        keep &= (rel_index >= 0)[None, :]
        rels = torch.where(
            pair_ok[..., None], rels[:, 1:], torch.zeros((), dtype=rels.dtype, device=device)
        )
        num_rels = rels.shape[-1]
        cell = head * num_rels + rel_index.clamp(min=0)[None, :]  # [N, K]
        flat = rels.reshape(batch, n, size * num_rels)  # [B, N, (N+1) R]
        marginals = marginals * flat.gather(2, cell.expand(batch, n, -1))
        joint = arcs[..., None] * rels  # [B, N, N+1, R]
    else:
        joint = arcs[..., None]  # [B, N, N+1, 1]
        cell = head
    marginals = torch.where(keep, marginals, torch.zeros((), dtype=arcs.dtype, device=device))
    covered = torch.zeros(n, joint.shape[2] * joint.shape[3], dtype=torch.bool, device=device)
    dep_index = words.expand_as(cell) - 1  # [N, K]
    covered[dep_index[keep], cell[keep]] = True
    uncovered = joint.reshape(batch, n, -1).masked_fill(covered[None], 0.0)  # [B, N, (N+1) R]
    lost = uncovered.sum((1, 2))  # [B]
    if unbatched:
        return marginals[0], lost[0]
    return marginals, lost


def arc_scores_to_label_scores(
    arc_scores: Tensor,
    rel_scores: Tensor | None,
    label_vocab: Sequence[str],
    rel_vocab: Sequence[str] | None = None,
    lengths: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """A graph-based teacher's local scores of a sequence-labeling student's labels.

    The score of label ``(offset, rel)`` of word ``d`` is the teacher's score of the parts it
    names: ``s_arc(d, h) + s_rel(d, h, rel)`` with ``h = d + offset`` (0 for ``ROOT``). The
    additive counterpart of ``arc_marginals_to_label_marginals``, used by sub-structure score
    matching. O(B N K).

    Args:
        arc_scores: [B, N+1, N+1] (dep, head) arc scores; row 0 unused.
        rel_scores: [B, N+1, N+1, R] relation scores, or None when the labels carry no relation.
        label_vocab: K labels, all with a relation (given ``rel_scores``) or none.
        rel_vocab: R relation names indexing ``rel_scores``' last dimension.
        lengths: LongTensor [B] of sentence lengths (None = N).

    Returns:
        ``scores`` [B, N, K] (0 where not valid) and ``valid`` BoolTensor [B, N, K]: an
        in-sentence word, a well-formed label whose head lies in the sentence and whose
        relation the teacher knows, and a finite teacher score.

    Raises:
        ValueError: on wrong shapes, or relations given for unlabeled labels (or vice versa).
    """
    if arc_scores.dim() != 3 or arc_scores.shape[1] != arc_scores.shape[2]:
        raise ValueError(f"arc_scores must be [B, N+1, N+1], got {list(arc_scores.shape)}")
    batch, size = arc_scores.shape[:2]
    n, device = size - 1, arc_scores.device
    lengths_, in_sentence = word_mask(arc_scores[:, 1:, :0], lengths)  # [B], [B, N]
    head, valid = label_heads(label_vocab, lengths_, in_sentence)  # [N, K], [B, N, K]
    head = head.clamp(0, n).expand(batch, n, -1)  # [B, N, K]
    scores = arc_scores[:, 1:].gather(2, head)  # [B, N, K]
    _, _, usable, rels = label_layout(tuple(label_vocab))
    labeled = [rel is not None for rel, ok in zip(rels, usable) if ok]
    if (rel_scores is not None) != (bool(labeled) and all(labeled)):
        raise ValueError("rel_scores must be given exactly when the labels carry relations")
    if rel_scores is not None:
        if rel_vocab is None or rel_scores.shape != (batch, size, size, len(rel_vocab)):
            raise ValueError("rel_scores must be [B, N+1, N+1, R] with R = len(rel_vocab)")
        ids = {rel: r for r, rel in enumerate(rel_vocab)}
        rel_index = torch.tensor([ids.get(str(rel), -1) for rel in rels], device=device)  # [K]
        valid &= (rel_index >= 0)[None, None, :]
        cell = head * len(rel_vocab) + rel_index.clamp(min=0)  # [B, N, K]
        flat = rel_scores[:, 1:].reshape(batch, n, size * len(rel_vocab))
        scores = scores + flat.gather(2, cell)
    valid &= torch.isfinite(scores)
    return torch.where(valid, scores, torch.zeros((), dtype=scores.dtype, device=device)), valid


class LabeledArcs(ProjectOnly):
    """A graph-based teacher's labeled arcs, read in a sequence-labeling student's labels.

    ``P(head of d = h)`` comes from ``arcs`` (a ``DependencyCRF``, ``HeadSelection`` or
    ``SiblingDependencyCRF``: its marginals), ``P(rel | d, h) = softmax(rel_scores / T)``.
    Only its part marginals, through the registered projection onto a ``TokenSoftmax`` of
    ``len(label_vocab)`` labels, and ``tempered`` are defined: it is a teacher to project.

    Args:
        arcs: the teacher's arc structure, lengths [B].
        rel_scores: [B, N+1, N+1, R] relation scores, or None (labels without relations).
        rel_vocab: the R relation names (None without ``rel_scores``).
        label_vocab: the student's K labels (``offset@rel`` or ``offset``).
        temperature: T of the relation softmax (the arcs carry their own).
    """

    refusal = "is a teacher to project onto relative-head labels"

    def __init__(
        self,
        arcs: Structure,
        rel_scores: Tensor | None,
        rel_vocab: Sequence[str] | None,
        label_vocab: Sequence[str],
        temperature: float = 1.0,
    ) -> None:
        self.arcs = arcs
        self.rel_scores = rel_scores
        self.rel_vocab = rel_vocab
        self.label_vocab = tuple(label_vocab)
        self.temperature = temperature
        self.lengths = arcs.lengths

    def _part_marginals(self) -> Any:
        """Label marginals [B, N, K] (``arc_marginals_to_label_marginals``), detached."""
        rel_probs = None
        if self.rel_scores is not None:
            rel_probs = torch.softmax(self.rel_scores / self.temperature, -1)
        marginals, _ = arc_marginals_to_label_marginals(
            self.arcs.marginals, rel_probs, self.label_vocab, self.rel_vocab, self.lengths
        )
        return marginals.detach()

    def tempered(self, temperature: float) -> LabeledArcs:
        """The arcs tempered (their potentials over ``temperature``) and the relation softmax
        at ``temperature`` too: the product of the two tempered distributions, as structkd has
        always tempered a parser teacher for a sequence-labeling student. (The tempered joint
        distribution of labeled trees would differ: each arc's relation normalizer, raised to
        1/T, would reweigh the arcs.)"""
        return LabeledArcs(
            self.arcs.tempered(temperature),
            self.rel_scores,
            self.rel_vocab,
            self.label_vocab,
            self.temperature * temperature,
        )


@register_projection(LabeledArcs, TokenSoftmax, partial=True)
def _labeled_arcs_to_labels(teacher: LabeledArcs, student: TokenSoftmax, _: str) -> Tensor:
    labels = int(student.logits.shape[-1])
    if labels != len(teacher.label_vocab):
        raise ValueError(
            f"the student scores {labels} labels, the teacher reads {len(teacher.label_vocab)}"
        )
    marginals: Tensor = teacher.part_marginals
    return marginals
