"""The dependency task's baseline KD losses against brute force on tiny sentences: Top-K and
Top-WK (the teacher's k best projective trees, enumerated) and sub-structure score matching
(every student label's teacher score, read off by hand)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from dep_tiny import DEP_TINY
from oracle import trees
from structkd.config import DistillConfig, load_config
from structkd.data.conllu import read_dep
from structkd.kd.methods import get_method
from structkd.models.depbase import DepModel
from structkd.models.pairs import pair_of
from structkd.models.parser import BiaffineParser
from structkd.models.seqlabel import SeqLabelParser
from structkd.structures.relative_labels import parse_label
from structkd.structures.sibling import SiblingDependencyCRF
from structkd.tasks import get_task

ROOT = Path(__file__).parent.parent
CONFIGS = ROOT / "configs" / "dep"
EWT = Path(__file__).parent / "fixtures" / "dep" / "en_ewt-dev-slice.conllu"
WORDS = [["The", "cat", "sat", "down"], ["It", "rained"], ["Go"]]


def _models(teacher_config: str, student_kind: str = "seqlabel") -> tuple[DepModel, DepModel]:
    task = get_task("dep")
    sentences = read_dep(EWT)
    torch.manual_seed(0)
    teacher = task.build_model(load_config(CONFIGS / teacher_config, DEP_TINY).model, sentences)
    student_sets = [*DEP_TINY, f"model.parser.kind={student_kind}"]
    student = task.build_model(load_config(CONFIGS / "case1b.yaml", student_sets).model, sentences)
    for model in (teacher, student):
        assert isinstance(model, DepModel)
        model.eval()
        with torch.no_grad():  # biaffine scorers start at zero: every tree would tie
            for parameter in model.parameters():
                parameter.normal_(0.0, 0.5)
    return teacher, student  # type: ignore[return-value]


def _loss(teacher: DepModel, student: DepModel, method: str, k: int = 5) -> torch.Tensor:
    with torch.no_grad():
        source = teacher(teacher.collate(WORDS))
        output = student(student.collate(WORDS))
        config = DistillConfig(method=method, k=k)
        kd_method, pair = get_method(method), pair_of(teacher, student)
        targets = kd_method.targets(pair, source, WORDS, config)
        return kd_method.loss(pair, targets, output, config, {})


def _tree_log_score(source, b: int, heads: tuple[int, ...]) -> float:  # type: ignore[no-untyped-def]
    structure = source.structure
    if isinstance(structure, SiblingDependencyCRF):  # MFVI: the log-marginal surrogate
        q = structure.marginals
        return sum(math.log(float(q[b, d, h])) for d, h in enumerate(heads, 1))
    return sum(float(structure.arc_scores[b, d, h]) for d, h in enumerate(heads, 1))


@pytest.mark.parametrize("teacher_config", ["teacher-biaffine-crf.yaml", "teacher-sibling.yaml"])
@pytest.mark.parametrize(("method", "k"), [("topk", 5), ("topwk", 5), ("topwk", 2), ("top1", 1)])
def test_topk_matches_brute_force(teacher_config: str, method: str, k: int) -> None:
    """The teacher's k best projective trees (each with its best relation per arc) as
    pseudo-gold: the mean student NLL (Top-K) or the mean weighted by the teacher's tree
    probabilities renormalized over the list (Top-WK)."""
    teacher, student = _models(teacher_config)
    assert isinstance(teacher, BiaffineParser) and isinstance(student, SeqLabelParser)
    got = _loss(teacher, student, method, k)
    with torch.no_grad():
        source = teacher(teacher.collate(WORDS))
        output = student(student.collate(WORDS))
    assert source.rel_scores is not None
    rel_logp = torch.log_softmax(source.rel_scores, -1)
    label_logp = torch.log_softmax(output.structure.logits, -1)
    expecteds = []
    for b, words in enumerate(WORDS):
        n = len(words)
        ranked = sorted(
            trees(n, projective=True, multiroot=False),
            key=lambda y: -_tree_log_score(source, b, y),
        )[:k]
        nlls, scores = [], []
        for heads in ranked:
            rel_ids = [int(rel_logp[b, d, h].argmax()) for d, h in enumerate(heads, 1)]
            rels = teacher.rel_names(rel_ids)
            ids = student.vocab.label_ids((list(heads), rels))
            nlls.append(-sum(float(label_logp[b, i, j]) for i, j in enumerate(ids) if j >= 0))
            best_rel = sum(
                float(rel_logp[b, d, h, r]) for (d, h), r in zip(enumerate(heads, 1), rel_ids)
            )
            scores.append(_tree_log_score(source, b, heads) + best_rel)
        if method == "topwk":
            weights = torch.softmax(torch.tensor(scores, dtype=torch.float64), 0).tolist()
        else:
            weights = [1 / len(ranked)] * len(ranked)
        expected = sum(w * x for w, x in zip(weights, nlls))
        assert float(got[b]) == pytest.approx(expected, rel=1e-4, abs=1e-4), (b, len(ranked))
        expecteds.append(expected)
    assert max(expecteds) > 0  # some pseudo-gold labels are in the student's inventory


def test_topk_of_a_one_word_sentence_uses_its_only_tree() -> None:
    """Fewer trees than k: the repeats padding the k-best list count for nothing."""
    teacher, student = _models("teacher-biaffine-crf.yaml")
    top1, topk, topwk = (_loss(teacher, student, m) for m in ("top1", "topk", "topwk"))
    assert float(topk[2]) == pytest.approx(float(top1[2]))
    assert float(topwk[2]) == pytest.approx(float(top1[2]))
    assert float(topk[0]) != pytest.approx(float(top1[0]))


@pytest.mark.parametrize("teacher_config", ["teacher-biaffine-crf.yaml", "teacher-sibling.yaml"])
def test_substructure_mse_matches_label_by_label(teacher_config: str) -> None:
    """Each student label (offset, rel) of word d is matched to the teacher's score of the parts
    it names, s_arc(d, d + offset) + s_rel(d, d + offset, rel); labels pointing outside the
    sentence are left out; mean over the scored labels of each sentence."""
    teacher, student = _models(teacher_config)
    assert isinstance(teacher, BiaffineParser) and isinstance(student, SeqLabelParser)
    got = _loss(teacher, student, "substructure")
    with torch.no_grad():
        source = teacher(teacher.collate(WORDS))
        output = student(student.collate(WORDS))
    assert source.rel_scores is not None
    arcs, rel_scores = source.structure.arc_scores, source.rel_scores
    for b, words in enumerate(WORDS):
        n, total, count = len(words), 0.0, 0
        for d in range(1, n + 1):
            for j, label in enumerate(student.vocab.labels):
                offset, rel = parse_label(label)
                h = 0 if offset is None else d + offset
                if not 0 <= h <= n or (offset is not None and h == 0):
                    continue
                r = teacher.vocab.rels.index(rel)
                target = float(arcs[b, d, h]) + float(rel_scores[b, d, h, r])
                total += (float(output.structure.logits[b, d - 1, j]) - target) ** 2
                count += 1
        assert count > 0
        assert float(got[b]) == pytest.approx(total / count, rel=1e-5)


def test_substructure_mse_of_a_head_selection_student_is_arc_mse() -> None:
    teacher, student = _models("teacher-biaffine-crf.yaml", "head_selection")
    got = _loss(teacher, student, "substructure")
    with torch.no_grad():
        t = teacher(teacher.collate(WORDS)).structure.arc_scores
        s = student(student.collate(WORDS)).structure.arc_scores
    for b, words in enumerate(WORDS):
        n = len(words)
        diffs = [
            (float(s[b, d, h]) - float(t[b, d, h])) ** 2
            for d in range(1, n + 1)
            for h in range(n + 1)
            if h != d
        ]
        assert float(got[b]) == pytest.approx(sum(diffs) / len(diffs), rel=1e-5)
