"""Stored forms: the smallest exact record of what Structural KD needs from a teacher, per pair.

Structural KD reads the teacher's marginals on the *student's* parts (``project``). For a
linear-chain student those are ``L + L^2`` numbers a token (306 floats, 1.2 KB, with 17 BIOES
tags), while a linear-chain teacher is fully described by ``L`` emission scores a token plus one
transition matrix, and an independent-token teacher's tag-pair marginals are products of its
``L`` unary marginals. A stored form keeps only those per-token tensors (``encode``) and rebuilds
the projected marginals of a batch from them (``decode``), so a cache of unlabeled text costs
``4 L`` bytes a token instead of ``4 (L + L^2)``.

=========================================== =============================== ====================
pair (teacher -> student)                   stored per token                decode per batch
=========================================== =============================== ====================
LinearChainCRF -> LinearChainCRF            teacher emissions [n, L]        forward-backward on
                                            (transitions, start, end: from  the rebuilt teacher
                                            the teacher, once)              CRF, O(B N L^2); the
                                                                            loss reads the tag
                                                                            pairs summed over
                                                                            positions
TokenSoftmax -> LinearChainCRF              projected unary [n, L]          pair = outer product
SemiMarkovCRF -> any tagger; any tree or    the projected marginals in      cast to float32
label student of a graph-based parser       float16 (half the bytes)
=========================================== =============================== ====================

The second is ``bitwise``: its decoded marginals are the projected ones bit for bit. The first is
exact up to float32 rounding (forward-backward on other batch-mates than the teacher's pass), and
the third rounds each marginal to float16 (a relative error of at most 2^-11, which moves a KD
loss by far less than 1e-3 of itself: ``tests/test_compact_cache.py``), so both are used only
when asked for (``distill.stored: compact``), keeping earlier runs reproducible. Every other pair
stores the projected marginals themselves in float32 (``stored_form`` returns None): a MaxEnt
student's unary marginals from a chain or token teacher are as small as the teacher's potentials.

Temperature is applied exactly as ``tempered_projection`` applies it without a stored form: the
``global`` mode tempers the rebuilt teacher's potentials (or, for token teachers, the stored unary
is the tempered teacher's), the ``local`` mode re-normalizes each slot of the decoded marginals.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from torch import Tensor, float16, float32

from structkd.kd.arc_labels import LabeledArcs
from structkd.kd.given import SpanMarginals
from structkd.kd.projections import local_temper, project, tempered_pair_sums, tempered_projection
from structkd.structures.base import Structure, as_list
from structkd.structures.dependency import DependencyCRF
from structkd.structures.head_selection import HeadSelection
from structkd.structures.linear_chain import LinearChainCRF
from structkd.structures.semi_markov import SemiMarkovCRF
from structkd.structures.sibling import SiblingDependencyCRF
from structkd.structures.token_softmax import TokenSoftmax


class StoredForm(ABC):
    """How one (teacher, student) pair is stored in a teacher cache and read back.

    Attributes:
        name: recorded in the cache's key (a cache of another form is stale).
        offsets: layout of the per-sentence tensors for ``train.cache.crop``/``pad_batch``
            (per tensor and non-batch dimension: ``size - N`` if it grows with N, else None).
        needs_student: ``encode`` reads the student's structure (else it may be None).
        bitwise: ``decode`` gives the projected marginals bit for bit whatever the batch; else
            up to float32 rounding (a dynamic program run on other batch-mates) or float16's.
        marginals: the rows are (rounded) projected marginals, checked as probabilities before
            they are cached; else potentials, checked as finite numbers.
    """

    name: str
    offsets: list[list[int | None]]
    needs_student: bool = False
    bitwise: bool = False
    marginals: bool = False

    @abstractmethod
    def constants(self, teacher: Structure) -> dict[str, Tensor]:
        """What the teacher shares across sentences (e.g. its transitions), read once."""

    @abstractmethod
    def encode(
        self,
        teacher: Structure,
        student: Structure | None,
        temperature: float,
        mode: str,
        scheme: str,
    ) -> list[Tensor]:
        """Batch-first tensors in the ``offsets`` layout, detached. ``student`` (the student's
        structure on the batch) is read only by forms whose ``needs_student`` is true."""

    @abstractmethod
    def decode(
        self,
        rows: list[Tensor],
        constants: dict[str, Tensor],
        student: Structure,
        temperature: float,
        mode: str,
        scheme: str,
    ) -> Any:
        """The projected, tempered marginals (``tempered_projection``'s output) of a batch.

        Args:
            rows: padded batch of ``encode``'s tensors (padding ignored).
            constants: ``constants(teacher)`` of the teacher of this batch.
            student: the student's structure on the batch (sizes and lengths are read).
        """

    def loss_targets(
        self,
        rows: list[Tensor],
        constants: dict[str, Tensor],
        student: Structure,
        temperature: float,
        mode: str,
        scheme: str,
    ) -> Any:
        """What Structural KD reads of a batch: ``decode``'s marginals, or a smaller record the
        student's ``expected_score`` takes in their place (the same loss up to float32
        rounding). Same arguments as ``decode``."""
        return self.decode(rows, constants, student, temperature, mode, scheme)

    def expand(
        self,
        row: list[Tensor],
        constants: dict[str, Tensor],
        temperature: float,
        mode: str,
        scheme: str,
    ) -> list[Tensor]:
        """One sentence's projected marginals from its stored row (for inspection; training
        decodes whole batches). Every stored form's student is a linear chain of the row's
        ``L`` tags."""
        length, n_tags = row[0].shape
        zeros = row[0].new_zeros
        student = LinearChainCRF(zeros(1, length, n_tags), zeros(n_tags, n_tags))
        batch = [t[None] for t in row]
        out = self.decode(batch, constants, student, temperature, mode, scheme)
        return [t[0] for t in (out if isinstance(out, tuple) else (out,))]


class ChainPotentials(StoredForm):
    """A linear-chain teacher stored as its emissions; its marginals recomputed per batch."""

    name = "chain-potentials"
    offsets = [[0, None]]  # emissions [n, L]

    def constants(self, teacher: Structure) -> dict[str, Tensor]:
        assert isinstance(teacher, LinearChainCRF)
        return {
            "transitions": teacher.transitions.detach(),
            "start": teacher.start.detach(),
            "end": teacher.end.detach(),
        }

    def encode(
        self,
        teacher: Structure,
        student: Structure | None,
        temperature: float,
        mode: str,
        scheme: str,
    ) -> list[Tensor]:
        assert isinstance(teacher, LinearChainCRF)
        return [teacher.emissions.detach()]

    def decode(
        self,
        rows: list[Tensor],
        constants: dict[str, Tensor],
        student: Structure,
        temperature: float,
        mode: str,
        scheme: str,
    ) -> Any:
        teacher = self._teacher(rows, constants, student)
        return tempered_projection(teacher, student, temperature, mode, scheme)

    @staticmethod
    def _teacher(rows: list[Tensor], constants: dict[str, Tensor], student: Structure) -> Any:
        """The teacher's CRF on a batch, rebuilt from its emissions and constants."""
        (emissions,) = rows
        return LinearChainCRF(
            emissions,
            constants["transitions"].to(emissions),
            student.lengths,
            constants["start"].to(emissions),
            constants["end"].to(emissions),
        )

    def loss_targets(
        self,
        rows: list[Tensor],
        constants: dict[str, Tensor],
        student: Structure,
        temperature: float,
        mode: str,
        scheme: str,
    ) -> Any:
        """``(unary [B, N, L], pair sums [B, L, L])`` for a CRF student at a global temperature
        (``tempered_pair_sums``: no [B, N-1, L, L] pair tensor, the bulk of a decode's cost);
        what ``decode`` gives otherwise (another student, or a local temperature, which
        re-normalizes each position's pairs)."""
        if not isinstance(student, LinearChainCRF) or (mode == "local" and temperature != 1.0):
            return self.decode(rows, constants, student, temperature, mode, scheme)
        return tempered_pair_sums(self._teacher(rows, constants, student), student, temperature)


class IndependentUnary(StoredForm):
    """An independent-token teacher stored as its unary marginals; tag pairs are products."""

    name = "independent-unary"
    offsets = [[0, None]]  # projected unary [n, L], before any local temperature
    needs_student = True
    bitwise = True  # elementwise products and per-slot softmaxes only

    def constants(self, teacher: Structure) -> dict[str, Tensor]:
        return {}

    def encode(
        self,
        teacher: Structure,
        student: Structure | None,
        temperature: float,
        mode: str,
        scheme: str,
    ) -> list[Tensor]:
        assert student is not None
        source = teacher.tempered(temperature) if mode == "global" else teacher
        unary, _ = project(source, student, scheme)
        return [unary]

    def decode(
        self,
        rows: list[Tensor],
        constants: dict[str, Tensor],
        student: Structure,
        temperature: float,
        mode: str,
        scheme: str,
    ) -> Any:
        (unary,) = rows  # zero past each sentence (padding), as projected
        # The same product as the TokenSoftmax -> LinearChainCRF projection.
        pair = unary[:, :-1, :, None] * unary[:, 1:, None, :]  # [B, N-1, L, L]
        marginals = (unary, pair)
        if mode == "local" and temperature != 1.0:
            return local_temper(marginals, temperature)
        return marginals


class HalfMarginals(StoredForm):
    """Any pair's projected marginals, stored in float16 and read back in float32: for the
    pairs whose student parts are large (tag pairs of a span teacher's CRF student, a tree
    student's n + 1 heads a word), at half the bytes. Built with the student's part layout."""

    name = "half-marginals"
    needs_student = True
    marginals = True

    def __init__(self, offsets: list[list[int | None]]) -> None:
        self.offsets = offsets

    def constants(self, teacher: Structure) -> dict[str, Tensor]:
        return {}

    def encode(
        self,
        teacher: Structure,
        student: Structure | None,
        temperature: float,
        mode: str,
        scheme: str,
    ) -> list[Tensor]:
        assert student is not None
        projected = as_list(tempered_projection(teacher, student, temperature, mode, scheme))
        return [t.detach().to(float16) for t in projected]

    def decode(
        self,
        rows: list[Tensor],
        constants: dict[str, Tensor],
        student: Structure,
        temperature: float,
        mode: str,
        scheme: str,
    ) -> Any:
        out = [t.to(float32) for t in rows]
        return out[0] if len(out) == 1 else tuple(out)

    def expand(
        self,
        row: list[Tensor],
        constants: dict[str, Tensor],
        temperature: float,
        mode: str,
        scheme: str,
    ) -> list[Tensor]:
        return [t.to(float32) for t in row]


def _half_stored(teacher: Any, student: Structure) -> bool:
    """Pairs whose projected marginals go to float16 with ``distill.stored: compact``: a span
    teacher's (any tagger student), a tree student's, and a parser's labeled arcs for a
    sequence-labeling student."""
    return isinstance(teacher, (SemiMarkovCRF, SpanMarginals, LabeledArcs)) or isinstance(
        student, (DependencyCRF, HeadSelection, SiblingDependencyCRF)
    )


def stored_form(
    teacher: Structure, student: Structure, offsets: list[list[int | None]] | None = None
) -> StoredForm | None:
    """The stored form of a (teacher, student) pair, or None to store projected marginals.

    A linear-chain teacher qualifies only with one transition matrix for all sentences (per
    sentence ones would cost ``L^2`` a sentence, and no teacher of this library has them).
    ``offsets`` (the layout of the student's parts, ``train.cache.position_offsets``) admits
    :class:`HalfMarginals` for the pairs it serves.
    """
    if offsets is not None and _half_stored(teacher, student):
        return HalfMarginals(offsets)
    if not isinstance(student, LinearChainCRF):
        return None
    if type(teacher) is LinearChainCRF and teacher.transitions.dim() == 2:
        return ChainPotentials()
    if type(teacher) is TokenSoftmax:
        return IndependentUnary()
    return None
