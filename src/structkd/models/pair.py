"""A teacher bound to a student for distillation (``structkd.kd.methods.KDPair``): the base the
model families' pairs share (``structkd.models.pairs.pair_of`` picks one).

The pair is where model knowledge meets the KD methods: which structure a model's output
holds, how the teacher's output looks on the student's parts (label inventories, relation
scores), how a pseudo-gold output becomes a student NLL. The methods themselves
(``structkd.kd.methods``) see only this interface.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, NoReturn

from torch import Tensor

from structkd.config import ConfigError
from structkd.kd.methods.base import Layout, Stats
from structkd.models.base import Model
from structkd.structures.base import Structure


class Pair(ABC):
    """What every pair shares: the two models, the primitives it provides, and the
    ``structkd.kd.methods.KDPair`` primitives (those a family lacks refuse with a ConfigError).

    Args:
        teacher: the teacher, already bound to the student (``Model.as_teacher_of``).
        student: the student.
    """

    provides: tuple[str, ...] = ()
    scheme = "BIOES"

    def __init__(self, teacher: Model, student: Model) -> None:
        self.teacher = teacher
        self.student = student
        self.teacher_kind = type(teacher).__name__  # what messages call the teacher

    @abstractmethod
    def check(self, index: int) -> None:
        """Raises ConfigError unless the teacher can teach the student (``index``: its number
        in messages). Called under ``torch.no_grad`` with the student in eval mode."""

    def teacher_output(self, words: list[list[str]]) -> Any:
        teacher = self.teacher
        return teacher(teacher.collate(words).to(teacher.device))

    def unsupported(self, what: str) -> NoReturn:
        raise ConfigError(f"{what} is not available for a {type(self.student).__name__} student")

    # ---- Structural KD ------------------------------------------------------------------------
    @abstractmethod
    def slot(self) -> Any: ...

    @abstractmethod
    def student_parts(self, words: list[list[str]]) -> list[Tensor]: ...

    @abstractmethod
    def project(self, words: list[list[str]], temperature: float, mode: str) -> list[Tensor]: ...

    @abstractmethod
    def structural_loss(
        self, parts: Any, output: Any, temperature: float, stats: Stats
    ) -> Tensor: ...

    def teacher_structure(self, words: list[list[str]]) -> Structure:
        self.unsupported("a stored form of the teacher's structure")

    def stored_structures(self, words: list[list[str]]) -> tuple[Structure, Structure, str] | None:
        return None  # the cache holds the projected marginals

    # ---- the other methods' primitives --------------------------------------------------------
    def local_layout(self) -> Layout:
        self.unsupported("Token KD")

    def local(self, source: Any, temperature: float) -> list[Tensor]:
        self.unsupported("Token KD")

    def local_loss(
        self, targets: list[Tensor], output: Any, temperature: float, stats: Stats
    ) -> Tensor:
        self.unsupported("Token KD")

    def posterior_layout(self) -> Layout:
        self.unsupported("Posterior KD")

    def posterior(self, source: Any, words: list[list[str]]) -> list[Tensor]:
        self.unsupported("Posterior KD")

    def posterior_loss(self, targets: list[Tensor], output: Any) -> Tensor:
        self.unsupported("Posterior KD")

    def kbest_layout(self) -> Layout:
        self.unsupported("Top-K KD")

    def kbest(self, source: Any, k: int, weighted: bool) -> list[Tensor]:
        self.unsupported("Top-K KD")

    def kbest_loss(self, targets: list[Tensor], output: Any, stats: Stats) -> Tensor:
        self.unsupported("Top-K KD")

    def scores_loss(self, source: Any, output: Any) -> Tensor:
        self.unsupported("sub-structure MSE")
