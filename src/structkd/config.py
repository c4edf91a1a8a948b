"""Typed run configuration: dataclasses read from YAML, with ``key=value`` overrides.

Every key is checked: an unknown key or a value of the wrong type raises ``ConfigError`` naming the
dotted key (``model.encoder.lstm_hidden: expected int, got 'abc'``), so a typo never silently
falls back to a default.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path, PurePosixPath
from typing import Any, Literal, TypeVar, Union

import yaml

from structkd.kd.methods import method_names

T = TypeVar("T")

HeadKind = Literal["crf", "maxent", "span"]
ParserKind = Literal["head_selection", "projective", "nonprojective", "sibling", "seqlabel"]

def kd_method_names() -> tuple[str, ...]:
    """The ``distill.method`` values: ``none`` and the registered KD methods
    (``structkd.kd.methods``)."""
    return (*method_names(), "none")


class ConfigError(ValueError):
    """A configuration key that is unknown, missing or of the wrong type."""


@dataclass
class EncoderConfig:
    """Word representations and the contextual encoder (0 switches a part off).

    Attributes:
        word_dim: word embedding size (0 = none); with frozen pretrained vectors, the size the
            encoder sees them at.
        pretrained_vectors: pretrained word vectors: a word-vector text file, or a named source
            shipped in an optional package (``glove-6b-50d``, ``minilm-wordpiece``,
            ``use-multilingual``; see ``structkd.nn.vector_sources``).
        freeze_vectors: keep the pretrained vectors frozen: the whole table is the vocabulary
            (words unseen in training keep their vector; missing words share a learned vector)
            and a named table is not copied into checkpoints. False fine-tunes them as the
            initial word embeddings of the training vocabulary (plus a word table's words).
        project_vectors: a trainable linear projection on top of frozen vectors even when
            ``word_dim`` equals their size (one is always added when it differs).
        casing_dim: size of a learned casing-class feature (0 = none): gives back the casing a
            lowercased table loses (Reimers & Gurevych, 2017).
        min_word_count: training words seen fewer times map to the unknown word.
        char_dim: character embedding size of the char CNN.
        char_filters: char CNN output size (0 = no char CNN).
        transformer: a local Hugging Face model directory (or ``all-MiniLM-L6-v2``).
        fine_tune: train the transformer's weights too.
        lstm_hidden: BiLSTM size per direction (0 = no BiLSTM).
        lstm_layers: stacked BiLSTM layers.
        dropout: dropout on embeddings and encoder outputs.
    """

    word_dim: int = 100
    pretrained_vectors: str | None = None
    freeze_vectors: bool = True
    project_vectors: bool = False
    casing_dim: int = 0
    min_word_count: int = 1
    char_dim: int = 30
    char_filters: int = 50
    transformer: str | None = None
    fine_tune: bool = True
    lstm_hidden: int = 200
    lstm_layers: int = 1
    dropout: float = 0.5


@dataclass
class HeadConfig:
    """The output layer and its structure.

    Attributes:
        kind: ``crf`` (LinearChainCRF), ``maxent`` (TokenSoftmax) or ``span`` (biaffine span
            scores -> SemiMarkovCRF).
        tag_scheme: tag scheme the crf/maxent heads predict in.
        span_dim: size of the span head's start/end projections.
    """

    kind: HeadKind = "crf"
    tag_scheme: Literal["BIOES", "BIO"] = "BIOES"
    span_dim: int = 150


@dataclass
class ParserConfig:
    """The dependency parser's scorers and output structure (read when ``task: dep``).

    Attributes:
        kind: ``head_selection`` (HeadSelection, decoded by MST), ``projective`` (DependencyCRF,
            Eisner), ``nonprojective`` (DependencyCRF, matrix-tree), ``sibling``
            (SiblingDependencyCRF, second order) or ``seqlabel`` (a tagger over relative-offset
            labels, TokenSoftmax, decoded into a tree by MST).
        inference: ``mfvi`` (mean field, Wang & Tu 2020) or ``exact`` (second-order Eisner); sibling
            only.
        mfvi_iters: mean-field updates.
        arc_dim: size of the arc MLPs before the biaffine arc scorer.
        rel_dim: size of the relation MLPs before the biaffine relation scorer.
        sib_dim: size of the sibling MLPs before the triaffine sibling scorer.
    """

    kind: ParserKind = "projective"
    inference: Literal["mfvi", "exact"] = "mfvi"
    mfvi_iters: int = 3
    arc_dim: int = 500
    rel_dim: int = 100
    sib_dim: int = 100


@dataclass
class ModelConfig:
    """A model: the encoder, then the NER ``head`` (task ner) or the ``parser`` (task dep)."""

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    parser: ParserConfig = field(default_factory=ParserConfig)


@dataclass
class DataConfig:
    """Corpora. ``resource:NAME`` names a file bundled with structkd.

    Attributes:
        train: labeled training corpora (one per teacher when distilling with several).
        dev: development corpus (model selection, early stopping).
        test: test corpus, evaluated with the best model at the end.
        unlabeled: raw-text corpora used for distillation only; each a path or a glob (its
            files, sorted, are one corpus), read streaming.
        unlabeled_dedup: drop unlabeled sentences whose words repeat an earlier unlabeled one's.
        unlabeled_min_words: drop unlabeled sentences of fewer words (0: keep all).
        unlabeled_max_words: drop unlabeled sentences of more words (0: keep all).
        format: reader format (``auto`` detects it).
        include_punct: count punctuation in attachment scores (task dep; excluded by default).
    """

    train: list[str] = field(default_factory=list)
    dev: str | None = None
    test: str | None = None
    unlabeled: list[str] = field(default_factory=list)
    unlabeled_dedup: bool = False
    unlabeled_min_words: int = 0
    unlabeled_max_words: int = 0
    format: str = "auto"
    include_punct: bool = False


@dataclass
class TrainConfig:
    """Optimisation.

    Attributes:
        seed: seeds initialisation, shuffling and dropout.
        max_epochs: the most passes over the training data.
        batch_size: sentences per step.
        optimizer: ``adam`` or ``adamw``.
        lr: learning rate.
        head_lr: learning rate of every parameter outside the model's encoder (CRF transitions,
            emission, span and arc scorers); None = ``lr``. A transformer fine-tuned at
            ``lr`` = 5e-5 leaves a freshly initialised CRF's transitions near zero (a CRF that
            decodes like a MaxEnt tagger); ``head_lr`` = 1e-3 lets them train.
        weight_decay: L2 (adam) or decoupled (adamw) weight decay.
        clip: gradient-norm clipping threshold (0 = off).
        patience: stop after this many epochs without a better dev score (F1 for NER, LAS for
            parsing; 0 = never).
        progress: show progress bars (only on a terminal).
        device: torch device, e.g. ``cpu`` or ``cuda``.
    """

    seed: int = 1
    max_epochs: int = 20
    batch_size: int = 32
    optimizer: Literal["adam", "adamw"] = "adam"
    lr: float = 1e-3
    head_lr: float | None = None
    weight_decay: float = 0.0
    clip: float = 5.0
    patience: int = 5
    progress: bool = True
    device: str = "cpu"


@dataclass
class DistillConfig:
    """Knowledge distillation (used by ``structkd distill``).

    Attributes:
        method: KD loss, a method registered in ``structkd.kd.methods`` (or ``none``):
            ``structural`` is Wang et al. (ACL 2021), the others are baselines.
        anneal: teacher annealing, lambda going from 1 to 0 over training (Clark et al., 2019).
        lam: the fixed KD weight lambda when ``anneal`` is false.
        unlabeled_weight: the weight of an unlabeled sentence's KD loss against a labeled
            sentence's loss (1: equal; lambda and its annealing act on labeled sentences only).
        temperature: softens the teacher and the student.
        temperature_mode: ``global`` (whole structure) or ``local`` (per factor).
        k: the k of topk/topwk (``top1`` is topk with k = 1).
        teacher_binding: ``corpus`` (teacher i distils corpus i) or ``average`` (average of the
            teachers' projected marginals).
        cache_dir: where teacher marginals are cached (default: OUT/cache).
        cache_teacher: compute what the teacher gives each training sentence once and cache it
            in ``cache_dir``: the targets of a method that has a per-sentence layout (Token,
            Posterior, Top-1/Top-K/Top-WK: the teacher's distributions or k-best lists), or,
            for a method whose target is the teacher's output on each batch (sub-structure
            MSE), the teacher's encoder features (float32, N x H per sentence: about 140 MB for
            6,000 sentences of 15 words with H = 384), its head then running per batch. The
            losses are the same either way (the teacher is in eval mode). False runs the whole
            teacher on every batch. Structural KD always caches (the projected marginals, or a
            smaller form).
        stored: what structural KD's cache keeps (docs/cache.md). ``exact``: the projected
            marginals, or a smaller form that rebuilds them bit for bit (a MaxEnt teacher's
            unary marginals for a CRF student). ``compact``: also forms that rebuild them up to
            float32 rounding: a CRF teacher's emissions for a CRF student (4 L bytes a token
            instead of 4 (L + L^2): 68 instead of 1,224 with 17 tags), its marginals recomputed
            per batch by forward-backward. For corpora of millions of sentences.
        teachers: teacher model directories (``--teacher`` on the command line replaces them):
            structkd models, or Hugging Face token classifiers (``save_pretrained``
            directories with their tokenizer; see docs/teachers.md).
        subword_pooling: a Hugging Face teacher's word distribution: its ``first`` subword's
            softmax, or the ``mean`` of its subwords' softmaxes.
        teacher_marginals: a marginal file (docs/marginal-files.md) to distil from instead of
            ``teachers`` (``--teacher-marginals`` on the command line).
    """

    method: str = "structural"
    anneal: bool = True
    lam: float = 0.5
    unlabeled_weight: float = 1.0
    temperature: float = 1.0
    temperature_mode: Literal["global", "local"] = "global"
    k: int = 5
    teacher_binding: Literal["corpus", "average"] = "corpus"
    cache_dir: str | None = None
    cache_teacher: bool = True
    stored: Literal["exact", "compact"] = "exact"
    teachers: list[str] = field(default_factory=list)
    subword_pooling: Literal["first", "mean"] = "first"
    teacher_marginals: str | None = None

    def __post_init__(self) -> None:
        if self.method not in kd_method_names():
            choices = " | ".join(repr(m) for m in kd_method_names())
            raise ConfigError(f"distill.method: expected one of {choices}, got {self.method!r}")


@dataclass
class RunConfig:
    """A whole run; ``task`` picks the model family, data readers and metrics.

    ``task`` names a registered task (``structkd.tasks``, a layer above this one):
    ``structkd.tasks.get_task`` checks it, with the wording of the type errors here, when a
    run starts (``structkd.train.run.run``), before anything is read or written.
    """

    task: str = "ner"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    out: str = "runs/default"


@dataclass(frozen=True)
class Range:
    """The allowed values of a numeric key: ``low <= value <= high`` (``<`` where open).

    A float must also be finite: NaN and infinity are never a meaningful size, rate or seed.
    """

    low: int | float | None = None
    high: int | float | None = None
    low_open: bool = False
    high_open: bool = False

    def admits(self, value: float) -> bool:
        if isinstance(value, float) and not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def describe(self, value: float) -> str:
        """The range in words for ``value``'s type, e.g. ``an integer >= 1``."""
        def text(bound: float) -> str:
            return f"{bound:g}" if isinstance(bound, float) else str(bound)

        bounds = []
        if self.low is not None:
            bounds.append(f"{'>' if self.low_open else '>='} {text(self.low)}")
        if self.high is not None:
            bounds.append(f"{'<' if self.high_open else '<='} {text(self.high)}")
        kind = "a finite number" if isinstance(value, float) else "an integer"
        return " ".join([kind, " and ".join(bounds)]).strip()


_SIZE, _COUNT, _POSITIVE = Range(0), Range(1), Range(0, low_open=True)
# Adam moves each weight by about lr per step: far beyond 1e6 its step overflows float32. A rate
# of 0 freezes its parameters (lr = 0 with a head_lr trains the head alone).
_RATE = Range(0, 1e6)
# Checked after the types, before anything is read or written; a key absent here takes any value
# of its type. train.seed feeds torch.manual_seed, random.seed and per-epoch shuffling seeds.
RANGES: dict[str, Range] = {
    "model.encoder.word_dim": _SIZE,
    "model.encoder.casing_dim": _SIZE,
    "model.encoder.min_word_count": _SIZE,
    "model.encoder.char_dim": _COUNT,
    "model.encoder.char_filters": _SIZE,
    "model.encoder.lstm_hidden": _SIZE,
    "model.encoder.lstm_layers": _COUNT,
    "model.encoder.dropout": Range(0, 1, high_open=True),
    "model.head.span_dim": _COUNT,
    "model.parser.mfvi_iters": _COUNT,
    "model.parser.arc_dim": _COUNT,
    "model.parser.rel_dim": _COUNT,
    "model.parser.sib_dim": _COUNT,
    "train.seed": Range(0, 2**32 - 1),
    "train.max_epochs": _COUNT,
    "train.batch_size": _COUNT,
    "train.lr": _RATE,
    "train.head_lr": _RATE,
    "train.weight_decay": Range(0),
    "train.clip": Range(0),
    "train.patience": _SIZE,
    "distill.lam": Range(0, 1),
    "distill.unlabeled_weight": Range(0),
    "distill.temperature": _POSITIVE,
    "data.unlabeled_min_words": _SIZE,
    "data.unlabeled_max_words": _SIZE,
    "distill.k": _COUNT,
}


def check_ranges(config: RunConfig) -> None:
    """Checks every key of ``RANGES`` and the bundled-resource names of ``data``.

    Raises:
        ConfigError: naming the first key out of range and its allowed range.
    """
    for key, allowed in RANGES.items():
        value: Any = config
        for part in key.split("."):
            value = getattr(value, part)
        if value is not None and not allowed.admits(value):
            allowed_text = allowed.describe(value)
            raise ConfigError(f"{key}: {value!r} is out of range (allowed: {allowed_text})")
    data = config.data
    paths: list[tuple[str, str | None]] = [("data.train", p) for p in data.train]
    paths += [("data.unlabeled", p) for p in data.unlabeled]
    paths += [("data.dev", data.dev), ("data.test", data.test)]
    for key, path in paths:
        if path is not None and path.startswith("resource:"):
            name = PurePosixPath(path[len("resource:") :])
            if not name.parts or name.is_absolute() or ".." in name.parts:
                raise ConfigError(
                    f"{key}: {path!r}: a resource name must be a relative path inside the package"
                )


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp)).replace("NoneType", "null")


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        for option in (o for o in options if o is not type(None)):
            try:
                return _convert(option, value, where)
            except ConfigError:
                continue
        raise ConfigError(
            f"{where}: expected {' or '.join(map(_type_name, options))}, got {value!r}"
        )
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{where}: expected one of {_type_name(tp)}, got {value!r}")
        return value
    if origin is list:
        (item,) = typing.get_args(tp)
        items = value if isinstance(value, list) else [value]
        return [_convert(item, v, f"{where}[{i}]") for i, v in enumerate(items)]
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)  # type: ignore[arg-type]
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if tp in (int, float, str, bool) and type(value) is tp:
        return value
    raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")


def from_dict(cls: type[T], data: Any, where: str = "") -> T:
    """Builds dataclass ``cls`` from a (YAML) mapping, checking keys and types.

    Raises:
        ConfigError: on an unknown key or a value of the wrong type.
    """
    label = where or "config"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{label}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for key in data:
        if key not in known:
            prefix = f"{where}." if where else ""
            known_list = ", ".join(sorted(known))
            raise ConfigError(f"unknown key {prefix}{key} (known: {known_list})")
    kwargs = {
        k: _convert(hints[k], v, f"{where}.{k}" if where else str(k)) for k, v in data.items()
    }
    return cls(**kwargs)


def to_dict(config: Any) -> dict[str, Any]:
    """The config as plain JSON/YAML data."""
    return dataclasses.asdict(config)


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Applies ``a.b.c=value`` (value parsed as YAML) to nested mapping ``data`` in place.

    Raises:
        ConfigError: if the assignment has no ``=``, crosses a non-mapping or its value is not
            YAML.
    """
    key, sep, raw = assignment.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects key=value, got {assignment!r}")
    parts = key.strip().split(".")
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {key}: {part} is not a section")
        node = child
    try:
        node[parts[-1]] = _load_yaml(raw) if raw.strip() else None
    except yaml.YAMLError as error:
        raise ConfigError(f"--set {key.strip()}: {_yaml_problem(error)[1]}") from error


class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last one)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor` may be overridden
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                line = first_line.get(key)
            except TypeError:  # an unhashable key: construct_mapping reports it
                continue
            if line is not None:
                problem = f"duplicate key {key!r} (first on line {line})"
                raise yaml.constructor.ConstructorError(None, None, problem, key_node.start_mark)
            first_line[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


def _load_yaml(text: str) -> Any:
    """``yaml.safe_load(text)``, refusing duplicate keys (what ``safe_load`` does, by hand)."""
    loader = _UniqueKeyLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def _yaml_problem(error: yaml.YAMLError) -> tuple[int | None, str]:
    """(1-based line or None, one-line description) of a YAML error (its str spans lines)."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error)
    return (mark.line + 1 if mark is not None else None), " ".join(str(problem).split())


def read_yaml(path: str | Path) -> Any:
    """The YAML document in ``path`` (a run config, an experiment file).

    Raises:
        ConfigError: ``FILE:LINE: ...`` for text that is not UTF-8, not YAML, or that gives one
            key twice in a mapping (PyYAML would silently keep the last value).
        FileNotFoundError: if ``path`` does not exist.
    """
    try:
        return _load_yaml(Path(path).read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        line_no = error.object[: error.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{line_no}: not UTF-8 text") from error
    except yaml.YAMLError as error:
        line, problem = _yaml_problem(error)
        where = f"{path}:{line}" if line is not None else f"{path}"
        raise ConfigError(f"{where}: not valid YAML: {problem}") from error


def packaged_configs() -> list[str]:
    """Names of the run configs shipped inside the package, e.g. ``ner/teacher-crf``."""
    root = files("structkd").joinpath("configs")
    return sorted(
        f"{group.name}/{entry.name[: -len('.yaml')]}"
        for group in root.iterdir()
        if group.is_dir()
        for entry in group.iterdir()
        if entry.name.endswith(".yaml")
    )


def resolve_config(name: str | Path) -> Path:
    """The YAML file a config argument names: an existing file, else a packaged config.

    A packaged name is ``GROUP/NAME`` with or without ``.yaml`` (``ner/teacher-crf``,
    ``dep/case1b.yaml``): the configs of ``configs/ner`` and ``configs/dep`` ship inside the
    package, so ``structkd train ner/teacher-crf`` works from any directory and from a wheel.
    A file of that name in the current directory wins.

    Raises:
        FileNotFoundError: for neither (the message lists the packaged names).
    """
    if Path(name).is_file():
        return Path(name)
    text = str(name).removesuffix(".yaml")
    if text in packaged_configs():
        return Path(str(files("structkd") / "configs" / f"{text}.yaml"))
    raise FileNotFoundError(
        f"no such config file: {name} (nor a packaged config: {', '.join(packaged_configs())})"
    )


def load_config(
    path: str | Path | None,
    overrides: list[str] | None = None,
    values: dict[str, Any] | None = None,
) -> RunConfig:
    """Reads a YAML run config and applies ``key=value`` overrides.

    Args:
        path: YAML file or packaged config name (:func:`resolve_config`; None = defaults).
        overrides: ``dotted.key=value`` strings, applied in order.
        values: dotted keys to already-typed values (``{"train.seed": 3}``), applied last;
            None values are skipped.

    Raises:
        ConfigError: on unknown keys, duplicate keys, wrong types, values out of range (see
            ``RANGES``), text that is not UTF-8 or not YAML.
        FileNotFoundError: if ``path`` is neither a file nor a packaged config.
    """
    data: Any = {}
    if path is not None:
        path = resolve_config(path)
        data = read_yaml(path) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
    for assignment in overrides or []:
        apply_override(data, assignment)
    for key, value in (values or {}).items():
        if value is not None:
            node = data
            *parents, last = key.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[last] = value
    config = from_dict(RunConfig, data)
    check_ranges(config)
    return config
