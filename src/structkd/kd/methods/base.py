"""What a knowledge-distillation method is, and what it asks of a (teacher, student) pair.

A KD method (one file each in this package, registered by name) says what a frozen teacher
gives each training sentence (``targets``: batch-first tensors, cached per sentence by the
trainer when ``layout`` names their shape) and how the student's output is scored against them
(``loss``). Whether the targets come from the cache or were just computed from the teacher's
output on the batch, the loss is the same call: there is one path.

A method never looks at model classes: it asks a ``KDPair``, which the student's model family
builds for each teacher (``structkd.models.pairs.pair_of``). The pair knows how the teacher's
output looks on the student's parts (projections, label inventories, relation scores); the
method knows what to distil. Adding a method is one file here plus its test; a pair offers the
primitives (``local``, ``posterior``, ``kbest``, ``scores``, ``project``) the methods share.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar, Protocol

from torch import Tensor

from structkd.structures.base import Structure

Stats = dict[str, float]
"""Running sums a KD loss may add to (e.g. ``kd_lost_mass``, teacher mass per word the student's
parts cannot express, with ``kd_words``)."""

Layout = list[list[int | None]]
"""Per tensor of one sentence's targets and per non-batch dimension: ``size - n`` when the size
grows with the sentence's length n, else None (what ``crop``/``pad_batch`` need to store rows)."""


class KDPair(Protocol):
    """A teacher bound to a student, as the KD methods see it (one per teacher).

    Attributes:
        provides: the primitives this pair implements (``project``, ``local``, ``posterior``,
            ``kbest``, ``scores``): a method whose ``needs`` is among them can distil it.
        scheme: the student's tag scheme (span teachers are read in it).
    """

    provides: tuple[str, ...]
    scheme: str

    def teacher_output(self, words: list[list[str]]) -> Any:
        """The teacher's output on a batch of sentences (its ``forward``; no gradients)."""
        ...

    # ---- Structural KD (projected marginals of the student's parts) ---------------------------
    def slot(self) -> Any:
        """JSON data naming the student's part layout (part of the cache's name)."""
        ...

    def student_parts(self, words: list[list[str]]) -> list[Tensor]:
        """Tensors in the layout ``project`` returns, for these sentences (shapes are read)."""
        ...

    def project(self, words: list[list[str]], temperature: float, mode: str) -> list[Tensor]:
        """The teacher's marginals on the student's parts, tempered (``global``: its potentials;
        ``local``: each factor's slot), detached: what Structural KD caches."""
        ...

    def teacher_structure(self, words: list[list[str]]) -> Structure:
        """The teacher's structure on ``words`` (what ``stored_structures`` returns first)."""
        ...

    def stored_structures(self, words: list[list[str]]) -> tuple[Structure, Structure, str] | None:
        """The teacher's and the student's structures and the tag scheme when ``project`` is
        exactly ``kd.projections.tempered_projection`` of them (so a stored form,
        ``structkd.kd.stored``, may stand in for the projected marginals); else None."""
        ...

    def structural_loss(self, parts: Any, output: Any, temperature: float, stats: Stats) -> Tensor:
        """Structural KD [B] of the student's ``output`` from projected marginals ``parts``."""
        ...

    # ---- per-token and per-output targets -----------------------------------------------------
    def local_layout(self) -> Layout:
        """Layout of ``local``'s targets of one sentence."""
        ...

    def local(self, source: Any, temperature: float) -> list[Tensor]:
        """The teacher's local distributions (``softmax(local scores / T)``, ignoring its
        structure) on the student's per-token parts, from its output ``source``."""
        ...

    def local_loss(
        self, targets: list[Tensor], output: Any, temperature: float, stats: Stats
    ) -> Tensor:
        """Per-token cross-entropy [B] of the student's local distributions against ``local``'s
        targets (scaled by T^2)."""
        ...

    def posterior_layout(self) -> Layout:
        """Layout of ``posterior``'s targets of one sentence."""
        ...

    def posterior(self, source: Any, words: list[list[str]]) -> list[Tensor]:
        """The teacher's per-token marginals on the student's tokens."""
        ...

    def posterior_loss(self, targets: list[Tensor], output: Any) -> Tensor:
        """Per-token KL [B] between ``posterior``'s targets and the student's marginals."""
        ...

    def kbest_layout(self) -> Layout:
        """Layout of ``kbest``'s targets of one sentence."""
        ...

    def kbest(self, source: Any, k: int, weighted: bool) -> list[Tensor]:
        """The teacher's ``k`` best outputs, batch-first, and their weights [B, K] (equal, or
        its probabilities renormalized over the list), the weights last."""
        ...

    def kbest_loss(self, targets: list[Tensor], output: Any, stats: Stats) -> Tensor:
        """The weighted student NLL [B] of ``kbest``'s outputs."""
        ...

    def scores_loss(self, source: Any, output: Any) -> Tensor:
        """MSE [B] between the student's and the teacher's scores of the student's parts."""
        ...


class KDMethod(ABC):
    """A distillation method: what the teacher gives a sentence, and the student's loss on it.

    Attributes:
        name: the ``distill.method`` value.
        needs: the ``KDPair`` primitive the method is built on (``KDPair.provides``).
        distributions: how many of the targets' tensors, counted from the end, are
            probability distributions (checked before anything is cached, so that a diverged
            teacher is caught); None: all of them.
        projects: the targets are the teacher's marginals projected on the student's parts
            (``KDPair.project``, from the words: the trainer averages them over teachers with
            ``average`` binding and may cache a stored form); else they come from the teacher's
            output on a batch.
    """

    name: ClassVar[str]
    needs: ClassVar[str]
    distributions: ClassVar[int | None] = None
    projects: ClassVar[bool] = False

    def layout(self, pair: KDPair) -> Layout | None:
        """The layout of one sentence's targets when they are cached per sentence; None when the
        targets are the teacher's output on each batch (the teacher's head then runs on its
        cached encoder features)."""
        return None

    @abstractmethod
    def targets(self, pair: KDPair, source: Any, words: list[list[str]], config: Any) -> Any:
        """What the teacher's output ``source`` on a batch of ``words`` gives the student:
        batch-first tensors in ``layout``'s layout (or, without a layout, whatever ``loss``
        reads). ``config`` is the run's ``DistillConfig``."""

    @abstractmethod
    def loss(self, pair: KDPair, targets: Any, output: Any, config: Any, stats: Stats) -> Tensor:
        """The KD loss [B] of the student's ``output`` from batched ``targets``."""

    def check_rows(self, row: Sequence[Tensor]) -> Sequence[Tensor]:
        """The tensors of a cached row that must be probabilities."""
        return row if self.distributions is None else row[len(row) - self.distributions :]
