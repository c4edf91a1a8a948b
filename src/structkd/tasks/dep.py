"""Dependency parsing: treebanks, graph-based and sequence-labeling parsers, UAS/LAS, and the
paper's cases 1b and 2b (Wang et al., ACL 2021, sections 3.1-3.2).

Distillation into a sequence-labeling student (``kind: seqlabel``): the teacher's arc marginals
times its relation probabilities give the marginal of each student label
``P(offset@rel of d) = P(head of d = d + offset) P(rel | d, head)``
(``arc_marginals_to_label_marginals``); the structural KD loss is the student's log Z minus its
expected score under those label marginals. A (head, relation) pair no student label expresses
loses its mass: the loss reports it as ``kd_lost_mass`` (per word) in the training log and
renormalizes each word's label marginals over the student's labels. Into a
``head_selection`` student the teacher's arc marginals go directly (``kd.project``); its relations
learn from gold trees only.

Methods: ``structural`` (global temperature tempers the teacher's potentials, local temperature
each word's label distribution); ``token`` (the teacher's *local* distributions, its per-word
head softmax times its relation softmax, ignoring the tree constraint; for a sequence-labeling
student the loss is their cross-entropy with the student's label softmax, which differs from the
token KL by the teacher's entropy only); ``top1`` (the teacher's best tree and relations as
pseudo-gold); ``topk`` / ``topwk`` (Kim & Rush, 2016: the teacher's ``k`` best trees, each with
its best relations, as pseudo-gold, weighted equally or by their teacher probabilities
renormalized over the list; k-best Eisner, for an MFVI teacher on its log marginals, as its
``argmax``); ``substructure`` (score matching: MSE between the student's scores of its parts and
the teacher's scores of the same parts, for a sequence-labeling student
``s_arc(d, h) + s_rel(d, h, rel)`` of each label, ``arc_scores_to_label_scores``; second-order
sibling scores have no student counterpart and are left out).
"""

from __future__ import annotations

import itertools
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

import torch
from torch import Tensor

from structkd import kd
from structkd.config import ConfigError, DistillConfig, ModelConfig
from structkd.data.conll import Sentence, iter_text
from structkd.data.resources import resolve_path
from structkd.depdata import (
    FORMATS,
    DepSentence,
    arc_marginals_to_label_marginals,
    arc_scores_to_label_scores,
    format_conllu,
    is_projective,
    iter_dep,
    punct_mask,
    read_dep,
)
from structkd.metrics.attachment import AttachmentScore
from structkd.models.base import Model
from structkd.models.depbase import DepModel, DepVocab, ParserOutput, Tree
from structkd.models.marginal_teacher import DepMarginalTeacher
from structkd.models.parser import BiaffineParser, build_dep_model, load_dep_model
from structkd.models.seqlabel import SeqLabelParser
from structkd.structures.dependency import DependencyCRF
from structkd.structures.head_selection import HeadSelection
from structkd.structures.sibling import SiblingDependencyCRF
from structkd.structures.token_softmax import TokenSoftmax
from structkd.tasks.base import Stats, Task, projected_marginals
from structkd.train.batching import bucket_batches
from structkd.train.cache import as_list

TREEBANK_SUFFIXES = (".conllu", ".conllx", ".conll", ".malttab")


def _dep(model: Model) -> DepModel:
    if not isinstance(model, DepModel):
        raise ConfigError(f"task dep needs a dependency model, got a {type(model).__name__}")
    return model


def _arc_scores(structure: Any) -> Tensor:
    """A graph-based structure's [B, N+1, N+1] (dep, head) arc scores."""
    assert isinstance(structure, (DependencyCRF, HeadSelection, SiblingDependencyCRF))
    return structure.arc_scores


def _tree(sentence: Any) -> Tree | None:
    return (sentence.heads, sentence.rels) if isinstance(sentence, DepSentence) else None


def predict_trees(
    model: DepModel, words: Sequence[Sequence[str]], batch_size: int = 64
) -> list[tuple[list[int], list[str] | None]]:
    """A well-formed tree per sentence, in input order (batches are built by length)."""
    out: list[tuple[list[int], list[str] | None]] = [([], None)] * len(words)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for ids in bucket_batches([len(w) for w in words], batch_size):
            for i, tree in zip(ids, model.predict(model.collate([words[i] for i in ids]))):
                out[i] = tree
    model.train(was_training)
    return out


def _input_format(path: Path, fmt: str) -> str:
    """``fmt``, or for ``auto``: the treebank format, or ``text`` for a file without tabs."""
    if fmt != "auto" or path.suffix.lower() in TREEBANK_SUFFIXES:
        return fmt
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if line.strip() and not line.startswith("#"):
                return "auto" if "\t" in line else "text"
    return "auto"


def iter_parse_input(path: str, fmt: str) -> Iterator[DepSentence]:
    """Streams the sentences of a file to parse: a treebank (its trees are replaced by the
    parser's) or plain text (one sentence per line, whitespace-separated words; ``auto``
    detects it as a file without tabs; ``raw``: words by the rule-based tokenizer).

    Raises:
        ConfigError: for a format the task does not read.
    """
    _check_format(fmt, ("text", "raw"))
    resolved = resolve_path(path)
    fmt = _input_format(resolved, fmt)
    if fmt in ("text", "raw"):
        return (
            DepSentence(s.tokens, ["_"] * len(s), [0] * len(s), line=s.line or 0)
            for s in iter_text(resolved, raw=fmt == "raw")
        )
    return iter_dep(resolved, fmt)


def attachment_scores(
    sentences: Sequence[DepSentence],
    predicted: Sequence[tuple[Sequence[int], Sequence[str] | None]],
    with_relations: bool,
    include_punct: bool = False,
) -> dict[str, Any]:
    """``DepTask.evaluate``'s scores (percent) of predicted trees against gold ones; LAS and
    LCM are None unless the parser (``with_relations``) and the data both have relations."""
    labeled = with_relations and all(s.rels is not None for s in sentences)
    metric = AttachmentScore(labeled)
    for sentence, (heads, rels) in zip(sentences, predicted):
        mask = punct_mask(sentence, include_punct)
        if labeled:
            metric.update(sentence.heads, heads, sentence.rels, rels, mask)
        else:
            metric.update(sentence.heads, heads, mask=mask)
    return {"las": None, "lcm": None, "per_relation": {}, **metric.compute()}


def _check_format(fmt: str, extra: tuple[str, ...] = ()) -> None:
    choices = (*DepTask.formats, *extra)
    if fmt not in choices:
        raise ConfigError(f"task dep reads formats {', '.join(choices)}, not {fmt!r}")


def _label_kd_loss(
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


class DepTask(Task):
    """Dependency parsers scored by UAS/LAS (punctuation excluded unless asked); predictions
    written as CoNLL-U."""

    name = "dep"
    formats = ("auto", *FORMATS)
    max_words = 4_000  # a biaffine parser: ~3.5 GB (quadratic), see benchmarks/long_sentence.py
    kd_methods = ("structural", "token", "top1", "topk", "topwk", "substructure")
    log_metrics = ("uas", "las")
    report_metrics = ("uas", "las", "ucm", "lcm", "per_relation", "tokens", "sentences")
    score_metrics = ("uas", "las")

    def read_labeled(self, path: str, fmt: str) -> list[DepSentence]:
        _check_format(fmt)
        return read_dep(resolve_path(path), fmt)

    def read_unlabeled(self, path: str) -> list[Any]:
        resolved = resolve_path(path)
        if resolved.suffix.lower() in TREEBANK_SUFFIXES:
            return [Sentence(s.words) for s in iter_dep(resolved)]
        return list(iter_text(resolved))

    def words(self, sentence: Any) -> list[str]:
        return list(sentence.words if isinstance(sentence, DepSentence) else sentence.tokens)

    def is_labeled(self, sentence: Any) -> bool:
        return isinstance(sentence, DepSentence)

    def build_model(
        self, config: ModelConfig, sentences: Sequence[Any], teachers: Sequence[Model] = ()
    ) -> DepModel:
        trees = [t for t in map(_tree, sentences) if t is not None]
        if not trees:
            raise ConfigError(
                "no labeled training sentences: a parser's relation labels come from data.train"
            )
        parser = config.parser
        if parser.kind == "projective" or (parser.kind, parser.inference) == ("sibling", "exact"):
            skipped = sum(not is_projective(list(heads)) for heads, _ in trees)
            if skipped:
                warnings.warn(
                    f"{skipped} of {len(trees)} training trees are non-projective; the "
                    f"{parser.kind} structure cannot score them, so they add no arc loss",
                    stacklevel=2,
                )
        return build_dep_model(config, [self.words(s) for s in sentences], trees)

    def load_model(
        self, config: ModelConfig, vocab: dict[str, Any], transformer_dir: str | None
    ) -> DepModel:
        return load_dep_model(config, DepVocab.from_dict(vocab), transformer_dir)

    def collate(self, model: Model, sentences: Sequence[Any]) -> Any:
        return _dep(model).collate([self.words(s) for s in sentences], list(map(_tree, sentences)))

    def evaluate(
        self, model: Model, sentences: Sequence[Any], include_punct: bool = False
    ) -> dict[str, Any]:
        """UAS, LAS (None when the model or the data has no relations), complete matches and
        per-relation scores, all in percent, plus ``tokens_per_second``."""
        start = time.perf_counter()
        predicted = predict_trees(_dep(model), [s.words for s in sentences])
        seconds = time.perf_counter() - start
        rels = bool(_dep(model).vocab.rels)
        scores = attachment_scores(sentences, predicted, rels, include_punct)
        words = sum(len(s) for s in sentences)
        scores["tokens_per_second"] = words / max(seconds, 1e-9)
        return scores

    def selection_score(self, scores: dict[str, Any]) -> float:
        return float(scores["las"] if scores["las"] is not None else scores["uas"])

    def summary(self, split: str, scores: dict[str, Any]) -> str:
        las = "-" if scores["las"] is None else f"{scores['las']:.2f}"
        return (
            f"{split}: UAS {scores['uas']:.2f}  LAS {las}  "
            f"({scores['tokens_per_second']:.0f} tokens/s)"
        )

    def predict(
        self, model: Model, words: Sequence[Sequence[str]], batch_size: int = 64
    ) -> list[tuple[list[int], list[str] | None]]:
        """A well-formed tree (heads, relations) per sentence.

        Raises:
            ValueError: for a sentence longer than ``max_words``.
        """
        self.check_max_words(words)
        return predict_trees(_dep(model), words, batch_size)

    def predict_file(self, model: Model, path: str, fmt: str, out: TextIO) -> int:
        """Parses a treebank (its trees are replaced) or plain text (one sentence per line,
        whitespace-separated words) and writes CoNLL-U, 2048 sentences at a time."""
        sentences = self.within_max_words(iter_parse_input(path, fmt), path)
        count = 0
        while chunk := list(itertools.islice(sentences, 2048)):
            trees = predict_trees(_dep(model), [s.words for s in chunk])
            out.write("".join(format_conllu(s, h, r) for s, (h, r) in zip(chunk, trees)))
            out.flush()
            count += len(chunk)
        return count

    # ---- distillation -------------------------------------------------------------------------
    def check_teachers(self, teachers: Sequence[Model], student: Model) -> None:
        pupil = _dep(student)
        for i, teacher in enumerate(teachers):
            if isinstance(teacher, DepMarginalTeacher):  # head marginals of a file
                if isinstance(pupil, SeqLabelParser):
                    raise ConfigError(
                        f"teacher {i + 1}: an arcs marginal file teaches graph-based parsers, "
                        "not sequence-labeling ones (they need relation distributions)"
                    )
            elif not isinstance(teacher, BiaffineParser):
                raise ConfigError(
                    f"teacher {i + 1} is a {_dep(teacher).config.parser.kind} model; dependency "
                    "teachers are graph-based parsers"
                )
            if isinstance(pupil, SeqLabelParser):
                if pupil.vocab.rels and not teacher.vocab.rels:
                    raise ConfigError(
                        f"teacher {i + 1} predicts no relations; the student's labels need them"
                    )
                continue
            words = getattr(teacher, "probe_words", [["x", "x"]])  # a file knows its sentences
            source = teacher(teacher.collate(words)).structure
            try:
                kd.project(source, pupil.structure(pupil.collate(words)))
            except (TypeError, ValueError) as error:
                raise ConfigError(f"teacher {i + 1}: {error}") from None

    def cache_slot(self, student: Model) -> Any:
        vocab = _dep(student).vocab
        return [student.config.parser.kind, vocab.rels, vocab.labels]

    def student_parts(self, student: Model, words: list[list[str]]) -> list[Tensor]:
        return [_dep(student).structure(_dep(student).collate(words)).marginals]

    def _label_marginals(
        self,
        teacher: BiaffineParser,
        output: ParserOutput,
        arc_marginals: Tensor,
        student: SeqLabelParser,
        temperature: float,
    ) -> Tensor:
        """[B, N, K] student-label marginals from teacher arc marginals [B, N+1, N+1]."""
        rel_probs = teacher.rel_probs(output, temperature) if student.vocab.rels else None
        rels = teacher.vocab.rels if rel_probs is not None else None
        marginals, _ = arc_marginals_to_label_marginals(
            arc_marginals, rel_probs, student.vocab.labels, rels, output.structure.lengths
        )
        return marginals.detach()

    def project(
        self, teacher: Model, student: Model, words: list[list[str]], config: DistillConfig
    ) -> list[Tensor]:
        output = teacher(teacher.collate(words))
        if not isinstance(student, SeqLabelParser):
            target = _dep(student).structure(_dep(student).collate(words))
            return as_list(projected_marginals(output.structure, target, config))
        assert isinstance(teacher, BiaffineParser)
        temperature = config.temperature
        if config.temperature_mode == "local" or temperature == 1.0:
            raw = self._label_marginals(teacher, output, output.structure.marginals, student, 1.0)
            if temperature == 1.0:
                return [raw]
            # Each word's slot tempered; its total (what the labels can express) kept.
            return [kd.local_temper(raw, temperature) * raw.sum(-1, keepdim=True)]
        arcs = output.structure.tempered(temperature).marginals
        return [self._label_marginals(teacher, output, arcs, student, temperature)]

    def structural_loss(
        self, student: Model, output: Any, parts: Any, temperature: float, stats: Stats
    ) -> Tensor:
        structure = output.structure
        if isinstance(structure, TokenSoftmax):
            return _label_kd_loss(structure, parts, temperature, stats)
        return kd.structural_kd_loss_from_marginals(parts, structure, temperature, "none")

    def kd_loss(
        self,
        teacher: Model,
        student: Model,
        source: Any,
        output: Any,
        config: DistillConfig,
        stats: Stats,
    ) -> Tensor:
        assert isinstance(teacher, BiaffineParser)
        if config.method == "substructure":
            return self._substructure(teacher, _dep(student), source, output)
        if self.target_layout(student, config) is None:
            raise ConfigError(f"distill.method={config.method} has no uncached KD loss")
        targets = self.kd_targets(teacher, student, source, config)
        return self.targets_loss(teacher, student, targets, output, config, stats)

    def _substructure(
        self, teacher: BiaffineParser, student: DepModel, source: ParserOutput, output: ParserOutput
    ) -> Tensor:
        """MSE [B] between student and teacher scores of the student's parts (mean per sentence
        over the parts both score)."""
        arcs = _arc_scores(source.structure).detach()  # [B, N+1, N+1]
        if not isinstance(student, SeqLabelParser):
            return kd.substructure_mse_loss(
                HeadSelection(arcs, source.structure.lengths),
                HeadSelection(_arc_scores(output.structure), output.structure.lengths),
                reduction="none",
            )
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

    def target_layout(self, student: Model, config: DistillConfig) -> list[list[int | None]] | None:
        if config.method in ("top1", "topk", "topwk"):
            # heads [K, n+1], the teacher's best relation ids [K, n+1] (-1 without a relation
            # scorer) and the weights [K]
            return [[None, 1], [None, 1], [None]]
        if config.method == "token":  # label [n, K] or head [n+1, n+1] distributions
            return [[0, None]] if isinstance(student, SeqLabelParser) else [[1, 1]]
        return None  # sub-structure MSE: the teacher's head runs per batch

    @torch.no_grad()
    def kd_targets(
        self,
        teacher: Model,
        student: Model,
        source: Any,
        config: DistillConfig,
        words: list[list[str]] | None = None,
    ) -> list[Tensor]:
        """Token KD: the teacher's local head softmax (times its relation softmax for a
        sequence-labeling student). Top-1/Top-K/Top-WK: its ``k`` best trees with their best
        relations, weighted equally (``top1``/``topk``) or by the teacher's tree probabilities
        renormalized over the list (``topwk``); a sentence with fewer than ``k`` trees repeats
        its last one at weight 0."""
        assert isinstance(teacher, BiaffineParser)
        if config.method == "token":
            temperature = config.temperature
            if not isinstance(student, SeqLabelParser):
                return [kd.token_kd_targets(source.structure, temperature)]
            arcs = source.structure
            local = HeadSelection(arcs.arc_scores / temperature, arcs.lengths).marginals
            return [self._label_marginals(teacher, source, local, student, temperature)]
        k = 1 if config.method == "top1" else config.k
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
            if config.method == "topwk":  # log P(tree) + log P(its relations), up to log Z
                tree = self._tree_log_score(structure, heads, in_tree)
                scores.append(tree + (best * in_tree).sum(-1))
        t_scores = torch.stack(scores) if scores else None
        weights = kd.kbest_weights(kbest, len(kbest[0]), kbest[0].device, t_scores)
        stack = [torch.stack(kbest, 1), torch.stack(rels, 1)]  # [B, K, N+1] each
        return [*(t.masked_fill(~in_tree[:, None], 0) for t in stack), weights.t()]

    def targets_loss(
        self,
        teacher: Model,
        student: Model,
        targets: list[Tensor],
        output: Any,
        config: DistillConfig,
        stats: Stats,
    ) -> Tensor:
        """Token KD, or the weighted student NLL [B] of the k-best trees, from cached or fresh
        ``kd_targets``."""
        assert isinstance(teacher, BiaffineParser)
        if config.method == "token":
            if not isinstance(student, SeqLabelParser):
                return kd.token_kd_loss_from_probs(
                    targets[0], output.structure, config.temperature, "none"
                )
            return _label_kd_loss(output.structure, targets[0], config.temperature, stats)
        heads, rels, weights = targets  # [B, K, N+1] twice, [B, K]
        labeled = teacher.rel is not None
        nll = torch.stack(
            [
                self._tree_nll(
                    teacher,
                    _dep(student),
                    heads[:, k].long(),
                    rels[:, k].long() if labeled else None,
                    output,
                    stats,
                )
                for k in range(heads.shape[1])
            ]
        )  # [K, B]
        return (weights.t().to(nll.dtype) * nll).sum(0)

    @staticmethod
    def _tree_log_score(structure: Any, heads: Tensor, in_tree: Tensor) -> Tensor:
        """The teacher's unnormalized tree log-score [B] of heads [B, N+1] (``in_tree`` [B, N+1]
        marks the words): its tree score, or under mean-field inference
        ``sum_d log q(head of d)`` (the surrogate its k-best list ranks by)."""
        if isinstance(structure, SiblingDependencyCRF) and structure.inference == "mfvi":
            q = structure.marginals.gather(-1, heads[..., None])[..., 0]  # [B, N+1]
            return (q.clamp_min(torch.finfo(q.dtype).tiny).log() * in_tree).sum(-1)
        return structure.score(heads)

    def _tree_nll(
        self,
        teacher: BiaffineParser,
        student: DepModel,
        heads: Tensor,
        rels: Tensor | None,
        output: ParserOutput,
        stats: Stats,
    ) -> Tensor:
        """Student NLL [B] of trees given as heads [B, N+1] and teacher relation ids (or None);
        a pseudo-gold label outside a sequence-labeling student's inventory is skipped and
        counted in ``kd_lost_mass``."""
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
