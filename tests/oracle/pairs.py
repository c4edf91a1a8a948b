"""The (teacher, student) pairs of the KD brute-force tests, each side a ``Case`` of the registry.

For a pair the oracle enumerates the teacher's whole output space on tiny sentences and maps each
output to the student's form (a span set becomes a tag sequence in the pair's scheme), so a KD
loss can be checked against sums over outputs. A structure joins the KD tests as one more line in
``PAIRS``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from oracle.cases import CASES, N_TYPES, Case, Potentials
from structkd.kd import spans_to_tags

N_TAGS = 1 + 4 * N_TYPES  # BIOES over the span types
MAX_LEN = 3
LENGTHS = torch.tensor([MAX_LEN, 2])
# A peakier per-token teacher than unit-variance logits give.
SCALE = {"token_softmax": 1.5}


def side(name: str, labels: int | None = None) -> Case:
    """Case ``name`` sized for the KD tests: N_TAGS tags, N_TYPES span types unless told."""
    case = CASES[name]
    if case.kind == "arcs":
        return case
    return case.with_labels(labels or {"tags": N_TAGS, "spans": N_TYPES}[case.kind])


def draw(case: Case, gen: torch.Generator) -> Potentials:
    """Potentials for the batch of LENGTHS."""
    scale = SCALE.get(case.name, 1.0)
    return {k: v * scale for k, v in case.draw(gen, len(LENGTHS), MAX_LEN).items()}


def alone(case: Case, pots: Potentials, b: int, n: int) -> Any:
    """Sentence b of the batch as a structure of its own (length n, no padding)."""
    return case.make(**case.crop(pots, b, n), lengths=torch.tensor([n]))


@dataclass(frozen=True)
class Pair:
    """A teacher and a student structure.

    Attributes:
        teacher / student: their Cases (label counts as the KD tests draw them).
        scheme: how a span teacher's outputs become the tag student's (None: same form).
        tag_scheme: the tag scheme the loss is told about.
    """

    teacher: Case
    student: Case
    scheme: str | None = None
    tag_scheme: str = "BIOES"

    def draw(self, seed: int) -> tuple[Potentials, Potentials]:
        """Teacher and student potentials, in this order from one generator."""
        gen = torch.Generator().manual_seed(seed)
        return draw(self.teacher, gen), draw(self.student, gen)

    def build(self, seed: int) -> tuple[Any, Any, Potentials, Potentials]:
        tp, sp = self.draw(seed)
        teacher = self.teacher.make(**tp, lengths=LENGTHS)
        return teacher, self.student.make(**sp, lengths=LENGTHS), tp, sp

    def outputs(self, n: int) -> Iterator[tuple[Any, Any]]:
        """Every teacher output of an n-word sentence and the student output it maps to, both
        in the compact batched form of a batch of one."""
        for y in self.teacher.enumerate(n):
            y_s = y
            if self.scheme is not None:
                y_s = tuple(spans_to_tags(list(y), n, N_TYPES, self.scheme))
            yield self.teacher.to_batch([y], n), self.student.to_batch([y_s], n)


PAIRS: dict[str, Pair] = {
    "1a crf->crf": Pair(side("linear_chain_start_end"), side("linear_chain_start_end")),
    "2a crf->token": Pair(side("linear_chain_start_end"), side("token_softmax")),
    "3 token->crf": Pair(side("token_softmax"), side("linear_chain_start_end")),
    "token->token": Pair(side("token_softmax"), side("token_softmax")),
    "4 span->token": Pair(side("semi_markov"), side("token_softmax"), "BIOES"),
    "4 span->token BIO": Pair(
        side("semi_markov"), side("token_softmax", 1 + 2 * N_TYPES), "BIO", "BIO"
    ),
    "span->crf": Pair(side("semi_markov"), side("linear_chain_start_end"), "BIOES"),
    "1b proj->headsel": Pair(side("eisner"), side("head_selection")),
    "1b nonproj->headsel": Pair(side("matrix_tree"), side("head_selection")),
    "headsel->headsel": Pair(side("head_selection"), side("head_selection")),
    "2b sibling->headsel": Pair(side("sibling_exact"), side("head_selection")),
    "proj->proj": Pair(side("eisner"), side("eisner")),
    "nonproj->nonproj": Pair(side("matrix_tree"), side("matrix_tree")),
}
