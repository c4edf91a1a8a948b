"""The KD pair of a dependency student (graph-based, or sequence-labeling) and a graph-based
teacher (or a file of its arc marginals): the paper's cases 1b and 2b (Wang et al., ACL 2021,
sections 3.1-3.2).

Into a sequence-labeling student (``kind: seqlabel``) the teacher's arc marginals times its
relation probabilities give the marginal of each student label
``P(offset@rel of d) = P(head of d = d + offset) P(rel | d, head)``
(``kd.arc_labels``: the teacher as ``LabeledArcs``, projected and tempered like any teacher);
Structural KD is the student's log Z minus
its expected score under those label marginals. A (head, relation) pair no student label
expresses loses its mass: the loss reports it as ``kd_lost_mass`` (per word) and renormalizes
each word's label marginals over the student's labels. Into a graph-based student the teacher's
arc marginals go directly (``kd.project``); its relations learn from gold trees only.

Token KD takes the teacher's *local* distributions (its per-word head softmax, times its
relation softmax for a sequence-labeling student); Top-1/Top-K/Top-WK its ``k`` best trees with
their best relations (k-best Eisner; for an MFVI teacher on its log marginals); sub-structure
MSE the scores of the student's parts (``s_arc(d, h) + s_rel(d, h, rel)`` per label for a
sequence-labeling student; second-order sibling scores have no student counterpart).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from structkd import kd
from structkd.config import ConfigError
from structkd.data.trees import is_projective
from structkd.kd.arc_labels import LabeledArcs, arc_scores_to_label_scores
from structkd.kd.methods.base import Layout, Stats
from structkd.kd.projections import tempered_projection
from structkd.models.base import Model
from structkd.models.depbase import DepModel, ParserOutput
from structkd.models.marginal_teacher import DepMarginalTeacher
from structkd.models.pair import Pair
from structkd.models.parser import BiaffineParser
from structkd.models.seqlabel import SeqLabelParser
from structkd.structures.base import Structure, as_list
from structkd.structures.dependency import DependencyCRF
from structkd.structures.head_selection import HeadSelection
from structkd.structures.sibling import SiblingDependencyCRF
from structkd.structures.token_softmax import TokenSoftmax


def _arc_scores(structure: Any) -> Tensor:
    """A graph-based structure's [B, N+1, N+1] (dep, head) arc scores."""
    assert isinstance(structure, (DependencyCRF, HeadSelection, SiblingDependencyCRF))
    return structure.arc_scores


def label_kd_loss(
    structure: TokenSoftmax, marginals: Tensor, temperature: float, stats: Stats
) -> Tensor:
    """Structural KD [B] of a sequence-labeling student from its label marginals [B, N, K].

    Each word's marginals are first renormalized over the student's labels (the teacher
    conditioned on what the student can express): left unnormalized, the ``log Z`` term of a word
    with lost mass would push all its scores down without bound. The lost mass (1 per word minus
    its label marginals) is added to ``stats``.
    """
    mass = marginals.sum(-1, keepdim=True)  # [B, N, 1]
    words = float(structure.lengths.sum())
    stats["kd_lost_mass"] = stats.get("kd_lost_mass", 0.0) + max(words - float(mass.sum()), 0.0)
    stats["kd_words"] = stats.get("kd_words", 0.0) + words
    conditioned = torch.where(mass > 0, marginals / mass.clamp_min(1e-30), 0.0)
    return kd.structural_kd_loss_from_marginals(conditioned, structure, temperature, "none")


class ParserPair(Pair):
    """A graph-based teacher's ``ParserOutput`` (structure and relation scores) on a dependency
    student's parts."""

    provides: tuple[str, ...] = ("project", "local", "kbest", "scores")

    def __init__(self, teacher: Model, student: Model) -> None:
        if not isinstance(student, DepModel):
            raise ConfigError(f"task dep needs a dependency model, got a {type(student).__name__}")
        super().__init__(teacher, student)
        self.parser = student
        self.labels = isinstance(student, SeqLabelParser)

    def check(self, index: int) -> None:
        teacher, pupil = self.teacher, self.parser
        if isinstance(teacher, DepMarginalTeacher):  # head marginals of a file
            if isinstance(pupil, SeqLabelParser):
                raise ConfigError(
                    f"teacher {index + 1}: an arcs marginal file teaches graph-based parsers, "
                    "not sequence-labeling ones (they need relation distributions)"
                )
        elif not isinstance(teacher, BiaffineParser):
            if not isinstance(teacher, DepModel):
                raise ConfigError(
                    f"task dep needs a dependency model, got a {type(teacher).__name__}"
                )
            raise ConfigError(
                f"teacher {index + 1} is a {teacher.config.parser.kind} model; dependency "
                "teachers are graph-based parsers"
            )
        if isinstance(pupil, SeqLabelParser):
            if pupil.vocab.rels and not teacher.vocab.rels:
                raise ConfigError(
                    f"teacher {index + 1} predicts no relations; the student's labels need them"
                )
            return
        words = getattr(teacher, "probe_words", [["x", "x"]])  # a file knows its sentences
        source = teacher(teacher.collate(words)).structure
        try:
            kd.project(source, pupil.structure(pupil.collate(words)))
        except (TypeError, ValueError) as error:
            raise ConfigError(f"teacher {index + 1}: {error}") from None

    @property
    def graph_teacher(self) -> BiaffineParser:
        assert isinstance(self.teacher, BiaffineParser)
        return self.teacher

    # ---- Structural KD ------------------------------------------------------------------------
    def slot(self) -> Any:
        vocab = self.parser.vocab
        return [self.student.config.parser.kind, vocab.rels, vocab.labels]

    def student_parts(self, words: list[list[str]]) -> list[Tensor]:
        return [self.parser.structure(self.parser.collate(words)).marginals]

    def labeled(self, output: ParserOutput, arcs: Structure | None = None) -> LabeledArcs:
        """The teacher's output as labeled arcs read in the student's labels (its own arc
        structure, or ``arcs``); relations only when the student's labels carry them."""
        student = self.parser
        assert isinstance(student, SeqLabelParser)
        teacher = self.graph_teacher
        rel_scores = output.rel_scores if student.vocab.rels else None
        rels = teacher.vocab.rels if rel_scores is not None else None
        return LabeledArcs(
            output.structure if arcs is None else arcs, rel_scores, rels, student.vocab.labels
        )

    def _label_slots(self, labeled: LabeledArcs) -> TokenSoftmax:
        """The student's label structure's shape (a projection reads no scores)."""
        lengths = labeled.lengths
        width = _arc_scores(labeled.arcs).shape[-1] - 1  # N of [B, N+1, N+1]
        shape = (len(lengths), width, len(labeled.label_vocab))
        return TokenSoftmax(torch.zeros(shape, device=lengths.device), lengths)

    def stored_structures(self, words: list[list[str]]) -> tuple[Any, Structure, str]:
        """The teacher's arcs and the student's tree, or, for a sequence-labeling student, the
        teacher's labeled arcs and the student's label slots."""
        teacher = self.teacher
        output = teacher(teacher.collate(words))
        if not self.labels:
            return output.structure, self.parser.structure(self.parser.collate(words)), ""
        assert isinstance(teacher, BiaffineParser)
        labeled = self.labeled(output)
        return labeled, self._label_slots(labeled), ""

    def project(self, words: list[list[str]], temperature: float, mode: str) -> list[Tensor]:
        source, target, _ = self.stored_structures(words)
        return as_list(tempered_projection(source, target, temperature, mode))

    def structural_loss(self, parts: Any, output: Any, temperature: float, stats: Stats) -> Tensor:
        structure = output.structure
        if isinstance(structure, TokenSoftmax):
            return label_kd_loss(structure, parts, temperature, stats)
        return kd.structural_kd_loss_from_marginals(parts, structure, temperature, "none")

    # ---- Token KD -----------------------------------------------------------------------------
    def local_layout(self) -> Layout:
        return [[0, None]] if self.labels else [[1, 1]]  # label [n, K] or head [n+1, n+1]

    @torch.no_grad()
    def local(self, source: Any, temperature: float) -> list[Tensor]:
        """The teacher's local head softmax (times its relation softmax for a sequence-labeling
        student)."""
        self.graph_teacher  # noqa: B018  (asserts a graph-based teacher)
        if not self.labels:
            return [kd.token_kd_targets(source.structure, temperature)]
        arcs = source.structure
        local = self.labeled(source, HeadSelection(arcs.arc_scores, arcs.lengths))
        return as_list(kd.project(local.tempered(temperature), self._label_slots(local)))

    def local_loss(
        self, targets: list[Tensor], output: Any, temperature: float, stats: Stats
    ) -> Tensor:
        if not self.labels:
            return kd.token_kd_loss_from_probs(targets[0], output.structure, temperature, "none")
        return label_kd_loss(output.structure, targets[0], temperature, stats)

    # ---- Top-1 / Top-K / Top-WK ---------------------------------------------------------------
    def kbest_layout(self) -> Layout:
        # heads [K, n+1], the teacher's best relation ids [K, n+1] (-1 without a relation
        # scorer) and the weights [K]
        return [[None, 1], [None, 1], [None]]

    @torch.no_grad()
    def kbest(self, source: Any, k: int, weighted: bool) -> list[Tensor]:
        """The teacher's ``k`` best trees with their best relations, weighted equally or by the
        teacher's tree probabilities renormalized over the list; a sentence with fewer than
        ``k`` trees repeats its last one at weight 0."""
        self.graph_teacher  # noqa: B018
        structure = source.structure
        kbest = [h.to(structure.lengths.device) for h in structure.topk(k)]  # k x [B, N+1]
        positions = torch.arange(kbest[0].shape[1], device=kbest[0].device)
        in_tree = (positions >= 1) & (positions[None, :] <= structure.lengths[:, None])
        rel_log = None
        if source.rel_scores is not None:
            rel_log = torch.log_softmax(source.rel_scores, -1)  # [B, N+1, N+1, R]
        rels, scores = [], []
        for heads in kbest:
            best = heads.new_zeros(heads.shape, dtype=torch.float)  # [B, N+1]
            ids = torch.full_like(heads, -1)
            if rel_log is not None:
                index = heads[:, :, None, None].expand(-1, -1, 1, rel_log.shape[-1])
                best, ids = rel_log.gather(2, index)[:, :, 0].max(-1)  # [B, N+1] each
            rels.append(ids)
            if weighted:  # log P(tree) + log P(its relations), up to log Z
                tree = _tree_log_score(structure, heads, in_tree)
                scores.append(tree + (best * in_tree).sum(-1))
        t_scores = torch.stack(scores) if scores else None
        weights = kd.kbest_weights(kbest, len(kbest[0]), kbest[0].device, t_scores)
        stack = [torch.stack(kbest, 1), torch.stack(rels, 1)]  # [B, K, N+1] each
        return [*(t.masked_fill(~in_tree[:, None], 0) for t in stack), weights.t()]

    def kbest_loss(self, targets: list[Tensor], output: Any, stats: Stats) -> Tensor:
        heads, rels, weights = targets  # [B, K, N+1] twice, [B, K]
        labeled = self.graph_teacher.rel is not None
        nll = torch.stack(
            [
                self._tree_nll(
                    heads[:, k].long(), rels[:, k].long() if labeled else None, output, stats
                )
                for k in range(heads.shape[1])
            ]
        )  # [K, B]
        return (weights.t().to(nll.dtype) * nll).sum(0)

    def _tree_nll(
        self, heads: Tensor, rels: Tensor | None, output: ParserOutput, stats: Stats
    ) -> Tensor:
        """Student NLL [B] of trees given as heads [B, N+1] and teacher relation ids (or None);
        a pseudo-gold label outside a sequence-labeling student's inventory is skipped and
        counted in ``kd_lost_mass``."""
        teacher, student = self.graph_teacher, self.parser
        lengths = output.structure.lengths.tolist()
        trees = [
            (
                heads[b, 1 : n + 1].tolist(),
                None if rels is None else teacher.rel_names(rels[b, 1 : n + 1].tolist()),
            )
            for b, n in enumerate(lengths)
        ]
        device = heads.device
        if isinstance(student, SeqLabelParser):
            assert isinstance(output.structure, TokenSoftmax)
            ids = torch.full(output.structure.mask.shape, -1, dtype=torch.long)
            missing = 0
            for b, tree in enumerate(trees):
                row = student.vocab.label_ids(tree)
                ids[b, : lengths[b]] = torch.tensor(row, dtype=torch.long)
                missing += row.count(-1)  # the pseudo-gold label is not in the inventory
            stats["kd_lost_mass"] = stats.get("kd_lost_mass", 0.0) + missing
            stats["kd_words"] = stats.get("kd_words", 0.0) + float(sum(lengths))
            return student.label_nll(output.structure, ids.to(device))
        assert isinstance(student, BiaffineParser)
        ids = torch.full_like(heads, -1)
        for b, (_, names) in enumerate(trees):
            if names is not None:
                row = [student.vocab.rel_index.get(r, -1) for r in names]
                ids[b, 1 : lengths[b] + 1] = torch.tensor(row, dtype=torch.long)
        projective = torch.tensor([is_projective(h) for h, _ in trees], device=device)
        return student.tree_nll(output, heads, ids, projective)

    # ---- sub-structure score matching ---------------------------------------------------------
    def scores_loss(self, source: Any, output: Any) -> Tensor:
        """MSE [B] between student and teacher scores of the student's parts (mean per sentence
        over the parts both score)."""
        teacher = self.graph_teacher
        arcs = _arc_scores(source.structure).detach()  # [B, N+1, N+1]
        if not self.labels:
            return kd.substructure_mse_loss(
                HeadSelection(arcs, source.structure.lengths),
                HeadSelection(_arc_scores(output.structure), output.structure.lengths),
                reduction="none",
            )
        student = self.parser
        assert isinstance(output.structure, TokenSoftmax)
        rel_scores = None
        if student.vocab.rels and source.rel_scores is not None:
            rel_scores = source.rel_scores.detach()
        target, valid = arc_scores_to_label_scores(
            arcs,
            rel_scores,
            student.vocab.labels,
            teacher.vocab.rels if rel_scores is not None else None,
            source.structure.lengths,
        )  # [B, N, K] each
        logits = output.structure.logits
        diff = torch.where(valid, logits - target.to(logits.dtype), 0.0)
        return diff.pow(2).sum((1, 2)) / valid.sum((1, 2)).clamp_min(1)


def _tree_log_score(structure: Any, heads: Tensor, in_tree: Tensor) -> Tensor:
    """The teacher's unnormalized tree log-score [B] of heads [B, N+1] (``in_tree`` [B, N+1]
    marks the words): its tree score, or under mean-field inference
    ``sum_d log q(head of d)`` (the surrogate its k-best list ranks by)."""
    if isinstance(structure, SiblingDependencyCRF) and structure.inference == "mfvi":
        q = structure.marginals.gather(-1, heads[..., None])[..., 0]  # [B, N+1]
        return (q.clamp_min(torch.finfo(q.dtype).tiny).log() * in_tree).sum(-1)
    return structure.score(heads)
