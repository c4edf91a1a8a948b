"""Dependency parsing: treebanks, graph-based and sequence-labeling parsers, UAS/LAS, and the
paper's cases 1b and 2b (Wang et al., ACL 2021, sections 3.1-3.2).

Distillation between parsers (the paper's cases 1b and 2b, every KD method) lives in
``structkd.models.parser_pair``, the pair of a graph-based teacher and a dependency student that
the methods of ``structkd.kd.methods`` ask.
"""

from __future__ import annotations

import itertools
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

from structkd.config import ConfigError, ModelConfig
from structkd.data.conll import Sentence, iter_text
from structkd.data.conllu import FORMATS, DepSentence, format_conllu, iter_dep, read_dep
from structkd.data.punct import punct_mask
from structkd.data.resources import resolve_path
from structkd.data.trees import is_projective
from structkd.metrics.attachment import AttachmentScore
from structkd.models.base import Model

# evaluate's and predict_file's name for it (tests/test_dep_pipeline.py swaps in fixed trees)
from structkd.models.base import predict_sentences as predict_trees
from structkd.models.depbase import DepModel, Tree
from structkd.models.parser import build_dep_model
from structkd.tasks.base import Task, register_task

TREEBANK_SUFFIXES = (".conllu", ".conllx", ".conll", ".malttab")


def _dep(model: Model) -> DepModel:
    if not isinstance(model, DepModel):
        raise ConfigError(f"task dep needs a dependency model, got a {type(model).__name__}")
    return model


def _tree(sentence: Any) -> Tree | None:
    return (sentence.heads, sentence.rels) if isinstance(sentence, DepSentence) else None


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
    DepTask().check_format(fmt, DepTask.input_formats)
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
        _attach(metric, sentence, heads, rels, include_punct)
    return {"las": None, "lcm": None, "per_relation": {}, **metric.compute()}


def _attach(
    metric: AttachmentScore,
    sentence: DepSentence,
    heads: Sequence[int],
    rels: Sequence[str] | None,
    include_punct: bool,
) -> None:
    """Adds one predicted tree to ``metric`` (relations too when it scores them), punctuation
    excluded unless ``include_punct``."""
    mask = punct_mask(sentence, include_punct)
    if metric.labeled:
        metric.update(sentence.heads, heads, sentence.rels, rels, mask)
    else:
        metric.update(sentence.heads, heads, mask=mask)


@register_task
class DepTask(Task):
    """Dependency parsers scored by UAS/LAS (punctuation excluded unless asked); predictions
    written as CoNLL-U."""

    name = "dep"
    formats = ("auto", *FORMATS)
    input_formats = (*formats, "text", "raw")  # and plain text to parse
    max_words = 4_000  # a biaffine parser: ~3.5 GB (quadratic), see benchmarks/long_sentence.py
    log_metrics = ("uas", "las")
    report_metrics = ("uas", "las", "ucm", "lcm", "per_relation", "tokens", "sentences")
    score_metrics = ("uas", "las")
    metric_labels = {"uas": "UAS", "las": "LAS"}

    def read_labeled(self, path: str, fmt: str) -> list[DepSentence]:
        self.check_format(fmt)
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

    def predict_file(self, model: Model, path: str, fmt: str, out: TextIO) -> int:
        """Parses a treebank (its trees are replaced) or plain text (one sentence per line,
        whitespace-separated words) and writes CoNLL-U, 2048 sentences at a time."""
        sentences = self.within_max_words(self.read_inputs(path, fmt), path)
        count = 0
        while chunk := list(itertools.islice(sentences, 2048)):
            trees = predict_trees(_dep(model), [s.words for s in chunk])
            count += self.write_predictions(chunk, trees, out)
            out.flush()
        return count

    def read_inputs(self, path: str, fmt: str) -> Iterator[DepSentence]:
        return iter_parse_input(path, fmt)

    def write_predictions(
        self, sentences: Sequence[Any], predicted: Sequence[Any], out: TextIO
    ) -> int:
        out.write("".join(format_conllu(s, h, r) for s, (h, r) in zip(sentences, predicted)))
        return len(sentences)

    def score(
        self, sentences: Sequence[Any], predicted: Sequence[Any], include_punct: bool = False
    ) -> dict[str, Any]:
        """As ``evaluate``: LAS where the predictions carry relations."""
        with_relations = bool(predicted) and all(rels is not None for _, rels in predicted)
        return attachment_scores(sentences, predicted, with_relations, include_punct)

    def sentence_counts(
        self, sentences: Sequence[Any], predicted: Sequence[Any], include_punct: bool = False
    ) -> tuple[str, list[tuple[int, int, int]]]:
        """(correct heads, correct labeled heads, scored words) per sentence; the metric is LAS
        when predictions and gold trees both have relations, else UAS."""
        labeled = all(rels is not None for _, rels in predicted) and all(
            s.rels is not None for s in sentences
        )
        rows = []
        for sentence, (heads, rels) in zip(sentences, predicted):
            attach = AttachmentScore(labeled)
            _attach(attach, sentence, heads, rels, include_punct)
            rows.append(
                (attach.correct_heads, attach.correct_labeled if labeled else 0, attach.tokens)
            )
        return ("las" if labeled else "uas"), rows
