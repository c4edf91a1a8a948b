"""A parser teacher's labeled arcs as a structure (``kd.LabeledArcs``) projected onto a
sequence-labeling student's relative-head labels, against brute force: every word's (head,
relation) pairs enumerated with their probabilities, at T = 1 and tempered globally and locally."""

from __future__ import annotations

import itertools

import pytest
import torch

from structkd.kd import LabeledArcs, project
from structkd.kd.projections import tempered_projection
from structkd.structures.head_selection import HeadSelection
from structkd.structures.relative_labels import format_label
from structkd.structures.token_softmax import TokenSoftmax

pytestmark = pytest.mark.usefixtures("one_thread")

RELS = ["nsubj", "obj", "root"]
# A partial inventory: offsets +-1, +-2 and ROOT, not every relation at every offset.
LABELS = [
    format_label(None, "root"),
    format_label(-1, "nsubj"),
    format_label(-1, "obj"),
    format_label(1, "nsubj"),
    format_label(2, "obj"),
    format_label(-2, "nsubj"),
]
OFFSETS = {
    label: (None if label.startswith("ROOT") else int(label.split("@")[0])) for label in LABELS
}


def _draw(seed: int, lengths: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    n = max(lengths)
    arcs = torch.randn(len(lengths), n + 1, n + 1, generator=g, dtype=torch.float64) * 2
    rels = torch.randn(len(lengths), n + 1, n + 1, len(RELS), generator=g, dtype=torch.float64)
    return arcs, rels, torch.tensor(lengths)


def _brute(arcs: torch.Tensor, rels: torch.Tensor, lengths: torch.Tensor, t: float) -> torch.Tensor:
    """Label marginals [B, N, K]: per word, sum over every (head, relation) of
    softmax(arc / T)[head] * softmax(rel / T)[relation] for the labels naming that pair."""
    out = torch.zeros(arcs.shape[0], arcs.shape[1] - 1, len(LABELS), dtype=torch.float64)
    for b, n in enumerate(lengths.tolist()):
        for d in range(1, n + 1):
            heads = [h for h in range(n + 1) if h != d]
            head_p = torch.softmax(arcs[b, d, heads] / t, -1)
            for (i, h), r in itertools.product(enumerate(heads), range(len(RELS))):
                p = head_p[i] * torch.softmax(rels[b, d, h] / t, -1)[r]
                for k, label in enumerate(LABELS):
                    offset = OFFSETS[label]
                    names = (h == 0) if offset is None else (h != 0 and h == d + offset)
                    if names and label.endswith("@" + RELS[r]):
                        out[b, d - 1, k] += p
    return out


def _teacher(arcs: torch.Tensor, rels: torch.Tensor, lengths: torch.Tensor) -> LabeledArcs:
    return LabeledArcs(HeadSelection(arcs, lengths), rels, RELS, LABELS)


def _slots(lengths: torch.Tensor, n: int) -> TokenSoftmax:
    return TokenSoftmax(torch.zeros(len(lengths), n, len(LABELS), dtype=torch.float64), lengths)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("t", [1.0, 2.0, 0.5])
def test_labeled_arcs_project_and_temper_globally_as_brute_force(seed: int, t: float) -> None:
    arcs, rels, lengths = _draw(seed, [4, 2, 5])
    teacher, slots = _teacher(arcs, rels, lengths), _slots(lengths, arcs.shape[1] - 1)
    expected = _brute(arcs, rels, lengths, t)
    got = tempered_projection(teacher, slots, t, "global")
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    if t == 1.0:
        torch.testing.assert_close(project(teacher, slots), expected, rtol=1e-10, atol=1e-12)
    # a partial inventory: some mass is lost, never more than a word's 1
    mass = got.sum(-1)
    assert bool((mass <= 1 + 1e-12).all()) and bool((mass[0, :4] < 1 - 1e-6).any())


@pytest.mark.parametrize("t", [2.0, 0.5])
def test_local_tempering_keeps_each_words_expressed_mass(t: float) -> None:
    """Local T: each word's label distribution is tempered on its own and keeps the mass the
    labels express (a partial projection), instead of being renormalized to 1."""
    arcs, rels, lengths = _draw(7, [5, 3])
    teacher, slots = _teacher(arcs, rels, lengths), _slots(lengths, arcs.shape[1] - 1)
    raw = _brute(arcs, rels, lengths, 1.0)
    mass = raw.sum(-1, keepdim=True)
    powered = torch.where(raw > 0, raw.clamp_min(1e-300) ** (1 / t), 0.0)
    expected = torch.where(mass > 0, powered / powered.sum(-1, keepdim=True) * mass, 0.0)
    got = tempered_projection(teacher, slots, t, "local")
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(got.sum(-1), raw.sum(-1), rtol=1e-9, atol=1e-12)


def test_a_student_of_another_inventory_size_is_refused() -> None:
    arcs, rels, lengths = _draw(1, [3])
    wrong = TokenSoftmax(torch.zeros(1, 3, len(LABELS) + 1, dtype=torch.float64), lengths)
    with pytest.raises(ValueError, match="the student scores 7 labels, the teacher reads 6"):
        project(_teacher(arcs, rels, lengths), wrong)
