"""``structkd annotate MODEL_DIR TEXT --out FILE``: a teacher's marginals as a marginal file.

The teacher (a structkd model or a Hugging Face token classifier, ``load_teacher``) runs once
over the sentences of TEXT, in the batches a distillation of the same sentences with the same
batch size runs it in, and its marginals are written in its own part layout
(``structkd.models.marginal_file``):

============================================ ========= ==============================
teacher structure                            layout    labels
============================================ ========= ==============================
TokenSoftmax (MaxEnt tagger, token classifier) tags      its tags (its own labels)
LinearChainCRF (CRF tagger)                  tag_pairs its tags
SemiMarkovCRF (span tagger)                  spans     its entity types
HeadSelection, DependencyCRF, SiblingDependencyCRF (parsers) arcs  (none)
============================================ ========= ==============================

Distilling from the file then gives the student what distilling from the teacher would.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from structkd.config import ConfigError
from structkd.data.batching import bucket_batches
from structkd.models.base import Model, evaluating
from structkd.models.hf_teacher import HFTagger, load_teacher
from structkd.models.marginal_file import write_marginals
from structkd.structures.base import Structure
from structkd.structures.dependency import DependencyCRF
from structkd.structures.head_selection import HeadSelection
from structkd.structures.linear_chain import LinearChainCRF
from structkd.structures.semi_markov import SemiMarkovCRF
from structkd.structures.sibling import SiblingDependencyCRF
from structkd.structures.token_softmax import TokenSoftmax
from structkd.tasks import get_task

Rows = Callable[[Structure, int, int], dict[str, Tensor]]
"""``(structure, b, n) -> {part: tensor}``: sentence b's (of length n) marginals."""


def _tags(structure: Structure, b: int, n: int) -> dict[str, Tensor]:
    return {"tags": structure.marginals[b, :n]}


def _tag_pairs(structure: Structure, b: int, n: int) -> dict[str, Tensor]:
    unary, pair = structure.part_marginals
    return {"tags": unary[b, :n], "pairs": pair[b, : max(n - 1, 0)]}


def _spans(structure: Structure, b: int, n: int) -> dict[str, Tensor]:
    return {"spans": structure.marginals[b, :n, :n]}


def _arcs(structure: Structure, b: int, n: int) -> dict[str, Tensor]:
    return {"arcs": structure.marginals[b, 1 : n + 1, : n + 1]}  # [n, n+1]: dependents' heads


LAYOUT_OF: dict[type, tuple[str, Rows]] = {
    TokenSoftmax: ("tags", _tags),
    LinearChainCRF: ("tag_pairs", _tag_pairs),
    SemiMarkovCRF: ("spans", _spans),
    HeadSelection: ("arcs", _arcs),
    DependencyCRF: ("arcs", _arcs),
    SiblingDependencyCRF: ("arcs", _arcs),
}
"""The layout a teacher's structure is written in, and how a sentence's tensors are cut."""


def _labels(teacher: Model, layout: str) -> list[str]:
    if isinstance(teacher, HFTagger):
        return list(teacher.own_labels)
    if layout == "arcs":
        return []
    vocab = teacher.vocab
    return list(vocab.entity_types if layout == "spans" else vocab.tags)


@torch.no_grad()
def teacher_marginals(
    teacher: Model, words: list[list[str]], batch_size: int = 32
) -> tuple[str, list[str], list[dict[str, Tensor]]]:
    """A teacher's layout, labels and per-sentence marginals (float32, CPU) on ``words``.

    A Hugging Face teacher's rows are its word distributions themselves (not a softmax of their
    logarithms), so that a file distils exactly as the teacher does.

    Raises:
        ConfigError: for a teacher whose structure has no marginal layout.
    """
    rows: dict[int, dict[str, Tensor]] = {}
    layout = ""
    for ids in bucket_batches([len(w) for w in words], batch_size):
        batch = teacher.collate([words[i] for i in ids]).to(teacher.device)
        output: Any = teacher(batch)
        structure = output if isinstance(output, Structure) else output.structure
        entry = LAYOUT_OF.get(type(structure))
        if entry is None or (layout == "tags" and teacher.task != "ner"):
            raise ConfigError(
                f"a {type(structure).__name__} teacher has no marginal-file layout "
                f"(annotate writes {', '.join(t.__name__ for t in LAYOUT_OF)})"
            )
        layout, cut = entry
        if teacher.task != "ner" and layout == "tags":
            raise ConfigError("annotate writes the arcs of graph-based parsers only")
        probs = teacher.word_distributions(batch) if isinstance(teacher, HFTagger) else None
        for b, i in enumerate(ids):
            n = len(words[i])
            part = {"tags": probs[b, :n]} if probs is not None else cut(structure, b, n)
            rows[i] = {k: v.detach().float().cpu().contiguous() for k, v in part.items()}
    return layout, _labels(teacher, layout), [rows[i] for i in range(len(words))]


def annotate(
    model_dir: str,
    text: str,
    out: str,
    batch_size: int = 32,
    device: torch.device | str = "cpu",
    subword_pooling: str = "first",
) -> Path:
    """Writes the marginal file of the teacher in ``model_dir`` on the sentences of ``text``
    (any format the teacher's task reads; gold labels are ignored); returns the index path.

    Raises:
        CheckpointError, DataError, ConfigError: user errors, before anything is written.
    """
    teacher, _ = load_teacher(model_dir, device, subword_pooling)
    task = get_task(teacher.task)
    words = [task.words(s) for s in task.read_unlabeled(text)]
    if not words:
        raise ConfigError(f"{text}: no sentences to annotate")
    with evaluating(teacher):
        layout, labels, rows = teacher_marginals(teacher, words, batch_size)
    return write_marginals(out, layout, labels, words, rows, teacher=Path(model_dir).name)
