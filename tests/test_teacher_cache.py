"""The teacher encoder-feature cache of the baseline KD methods (``distill.cache_teacher``).

The oracle is the teacher run whole on every batch (``cache_teacher: false``): every method's
per-sentence KD loss, and a whole distillation run, must come out the same from the cached
features, which are built once, reused, and rebuilt with a warning when stale or damaged.
"""

from __future__ import annotations

import importlib
import json
import warnings
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from dep_tiny import DEP_TINY
from structkd.cli import main
from structkd.config import DistillConfig, EncoderConfig, HeadConfig, ModelConfig, load_config
from structkd.data.batching import bucket_batches
from structkd.data.conll import read_ner
from structkd.data.conllu import read_dep
from structkd.kd.methods import get_method
from structkd.models.base import Model
from structkd.models.pairs import pair_of
from structkd.models.tagger import build_tagger
from structkd.tasks import get_task
from structkd.train import loop
from structkd.train.cache import CacheWarning
from structkd.train.distill import Distiller
from structkd.train.run import run
from test_pipeline_models import tiny_bert
from torchrun import run_two_ranks

teacher_loader = importlib.import_module("structkd.models.hf_teacher")  # run's load_teacher
ROOT = Path(__file__).parent.parent
NER = Path(__file__).parent / "fixtures" / "pipeline"
EWT = Path(__file__).parent / "fixtures" / "dep" / "en_ewt-dev-slice.conllu"
TRAIN = read_ner(NER / "train.conll")
UNLABELED = [s.tokens for s in read_ner(NER / "unlabeled.txt")]
TOKENS = [s.tokens for s in TRAIN] + UNLABELED


pytestmark = pytest.mark.usefixtures("one_thread")


def tagger(kind: str, seed: int, **encoder: Any) -> Model:
    """A tiny tagger; dropout on, so that a teacher left in training mode would not match."""
    sizes: dict[str, Any] = dict(word_dim=8, char_dim=4, char_filters=6, lstm_hidden=6)
    sizes.update(encoder)
    config = ModelConfig(EncoderConfig(**sizes, dropout=0.3), HeadConfig(kind=kind, span_dim=5))  # type: ignore[arg-type]
    torch.manual_seed(seed)
    return build_tagger(config, TOKENS, [s.tags for s in TRAIN if s.tags is not None])


def kd_losses(
    distiller: Distiller, student: Model, tokens: Sequence[Sequence[str]], corpus: list[int]
) -> list[torch.Tensor]:
    """The per-sentence KD losses of every training batch (batches unlike the cache's)."""
    student.eval()
    out = []
    for ids in bucket_batches([len(t) for t in tokens], 7, seed=3, groups=corpus):
        batch = student.collate([tokens[i] for i in ids])
        with torch.no_grad():
            out.append(distiller.losses(student(batch), batch, ids))
    return out


def check_cached_equals_online(
    teachers: list[Model],
    student: Model,
    config: DistillConfig,
    tokens: Sequence[Sequence[str]],
    corpus: list[int],
    cache: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Distiller:
    """KD losses (and loss statistics) with cached teacher features (or cached per-sentence
    targets: token and posterior distributions, k-best lists) equal the online ones, and the
    cached distiller never runs a teacher's encoder after its cache is built; returns it."""
    ids = [f"teacher{i}" for i in range(len(teachers))]
    online = Distiller(
        teachers, replace(config, cache_teacher=False), tokens, corpus, student, cache, ids
    )
    assert online.features is None
    expected = kd_losses(online, student, tokens, corpus)
    # A batch size unlike training's: each sentence is encoded beside other sentences.
    cached = Distiller(teachers, config, tokens, corpus, student, cache, ids, batch_size=5)
    pair = pair_of(teachers[0].as_teacher_of(student), student)
    cached_targets = get_method(config.method).layout(pair) is not None
    if cached_targets:
        assert cached.features is None and cached.targets is not None
        assert len(cached.targets) == len(tokens)
    else:
        assert cached.features is not None and cached.targets is None
        counts = [corpus.count(i) for i in range(len(teachers))]
        assert [len(f) for f in cached.features] == counts
    for teacher in teachers:

        def no_encoder(*args: Any) -> None:
            raise AssertionError("the teacher's encoder ran although its features are cached")

        monkeypatch.setattr(teacher.encoder, "forward", no_encoder)
    got = kd_losses(cached, student, tokens, corpus)
    for a, b in zip(got, expected):
        assert a.shape == b.shape and bool(torch.isfinite(a).all())
        # Features match to float32 rounding only (a sentence's batch-mates change the order of
        # sums in the encoder); losses such as posterior KD, with log q terms, amplify ~1e-7 in
        # the teacher's marginals to ~1e-5. A misplaced or stale feature row is off by O(1).
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert float(sum(e.abs().sum() for e in expected)) > 0  # not a vacuous comparison
    stats, reference = cached.epoch_stats(), online.epoch_stats()
    assert stats.keys() == reference.keys()
    for key in stats:
        assert stats[key] == pytest.approx(reference[key], rel=1e-5, abs=1e-6)
    if cached_targets:
        assert len(list(cache.glob("targets-*.safetensors"))) == 1
    else:
        assert len(list(cache.glob("features-*.safetensors"))) == len(teachers)
    return cached


@pytest.mark.parametrize(
    ("method", "teacher_kind", "student_kind"),
    [
        ("token", "crf", "crf"),
        ("posterior", "crf", "crf"),
        ("topk", "crf", "crf"),
        ("topwk", "crf", "crf"),
        ("top1", "crf", "crf"),
        ("substructure", "crf", "crf"),
        ("posterior", "crf", "maxent"),
        ("topwk", "maxent", "crf"),  # case 3
        ("topwk", "span", "maxent"),  # case 4: segmentations cached as the student's tags
    ],
)
def test_ner_kd_losses_from_cached_features_equal_online(
    method: str,
    teacher_kind: str,
    student_kind: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    teacher = tagger(teacher_kind, seed=1)
    student = tagger(student_kind, seed=2, char_filters=0)
    config = DistillConfig(method=method, k=3, temperature=2.0)  # type: ignore[arg-type]
    corpus = [0] * len(TOKENS)
    check_cached_equals_online(
        [teacher], student, config, TOKENS, corpus, tmp_path / "c", monkeypatch
    )


def test_transformer_teacher_features_are_one_row_per_word(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A transformer encoder pools each word's first subword: features [n, H] per sentence, and
    the KD losses from them equal the teacher run whole."""
    bert = tiny_bert(tmp_path / "bert")
    teacher = tagger("crf", seed=1, transformer=str(bert), word_dim=0, char_filters=0)
    student = tagger("crf", seed=2, char_filters=0)
    corpus = [0] * len(TOKENS)
    distiller = check_cached_equals_online(
        [teacher],
        student,
        DistillConfig(method="substructure"),
        TOKENS,
        corpus,
        tmp_path,
        monkeypatch,
    )
    assert distiller.features is not None
    dim = teacher.encoder.dim
    assert [tuple(f[0].shape) for f in distiller.features[0]] == [(len(t), dim) for t in TOKENS]


def test_several_teachers_each_cache_their_own_corpus(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Teacher i encodes only corpus i's sentences, in its own cache file."""
    teachers = [tagger("crf", seed=1), tagger("maxent", seed=3, lstm_hidden=4)]
    student = tagger("crf", seed=2, char_filters=0)
    corpus = [0] * len(TRAIN) + [1] * len(UNLABELED)
    config = DistillConfig(method="posterior")
    check_cached_equals_online(
        teachers, student, config, TOKENS, corpus, tmp_path / "c", monkeypatch
    )


@pytest.mark.parametrize(
    ("teacher_config", "student_kind", "method"),
    [
        ("teacher-biaffine-crf", "seqlabel", "token"),
        ("teacher-biaffine-crf", "seqlabel", "top1"),
        ("teacher-biaffine-crf", "head_selection", "token"),
        ("teacher-biaffine-crf", "head_selection", "top1"),
        ("teacher-biaffine-crf", "seqlabel", "topwk"),
        ("teacher-sibling", "seqlabel", "token"),
        ("teacher-sibling", "seqlabel", "topwk"),
        ("teacher-sibling", "seqlabel", "substructure"),
    ],
)
def test_dep_kd_losses_from_cached_features_equal_online(
    teacher_config: str,
    student_kind: str,
    method: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    task = get_task("dep")
    sentences = read_dep(EWT)
    configs = ROOT / "configs" / "dep"
    teacher_model = load_config(configs / f"{teacher_config}.yaml", DEP_TINY).model
    student_model = load_config(
        configs / "case1b.yaml", [*DEP_TINY, f"model.parser.kind={student_kind}"]
    ).model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # non-projective training trees (tested elsewhere)
        torch.manual_seed(1)
        teacher = task.build_model(teacher_model, sentences)
        # Fitted a little, so that its best trees use labels the student knows (top1).
        optimizer = torch.optim.Adam(teacher.parameters(), lr=0.05)
        batch = task.collate(teacher, sentences)
        for _ in range(15):
            optimizer.zero_grad()
            teacher.nll(batch).mean().backward()
            optimizer.step()
        torch.manual_seed(2)
        student = task.build_model(student_model, sentences)
    words = [s.words for s in sentences]
    config = DistillConfig(method=method, temperature=2.0)  # type: ignore[arg-type]
    check_cached_equals_online(
        [teacher], student, config, words, [0] * len(words), tmp_path / "c", monkeypatch
    )


def test_stale_or_corrupt_feature_cache_is_rebuilt_with_a_warning(tmp_path: Path) -> None:
    teacher = tagger("crf", seed=1)
    student = tagger("crf", seed=2, char_filters=0)
    cache = tmp_path / "cache"
    corpus = [0] * len(TOKENS)

    def features(teacher_id: str, method: str = "substructure") -> list[torch.Tensor]:
        config = DistillConfig(method=method)  # type: ignore[arg-type]
        distiller = Distiller([teacher], config, TOKENS, corpus, student, cache, [teacher_id])
        return [row[0] for row in distiller.features[0]] if distiller.features else []

    fresh = features("first")
    (path,) = cache.glob("features-*.safetensors")
    stamp = path.stat().st_mtime_ns
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheWarning)
        features("first", "posterior")  # its targets live in their own file
        assert all(torch.equal(a, b) for a, b in zip(features("first"), fresh))
        features("first", "structural")  # its marginals live in their own file
    assert path.stat().st_mtime_ns == stamp
    assert len(list(cache.glob("marginals-*.safetensors"))) == 1
    with pytest.warns(CacheWarning, match="stale"):
        features("retrained")
    for damage in ("flip", "truncate"):
        data = bytearray(path.read_bytes())
        if damage == "flip":
            data[-3] ^= 0xFF
        else:
            del data[len(data) // 2 :]
        path.write_bytes(bytes(data))
        with pytest.warns(CacheWarning, match="corrupt"):
            rebuilt = features("retrained")
        assert all(torch.equal(a, b) for a, b in zip(rebuilt, fresh))
    assert list(cache.glob("features-*.safetensors")) == [path]


def test_kbest_cache_is_reused_and_rebuilt_when_stale_or_corrupt(tmp_path: Path) -> None:
    """A k-best cache is read back as written; another teacher or another k is a stale cache and
    a flipped byte a corrupt one, both rebuilt with a warning to the same lists."""
    teacher = tagger("crf", seed=1)
    student = tagger("crf", seed=2, char_filters=0)
    cache = tmp_path / "cache"
    corpus = [0] * len(TOKENS)

    def kbest(teacher_id: str, k: int = 3) -> list[list[torch.Tensor]]:
        config = DistillConfig(method="topwk", k=k)
        distiller = Distiller([teacher], config, TOKENS, corpus, student, cache, [teacher_id])
        assert distiller.targets is not None and distiller.features is None
        return distiller.targets

    fresh = kbest("first")
    assert [tuple(r[0].shape) for r in fresh] == [(3, len(t)) for t in TOKENS]
    assert all(abs(float(r[1].sum()) - 1.0) < 1e-5 for r in fresh)  # weights per sentence
    (path,) = cache.glob("targets-*.safetensors")
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheWarning)
        again = kbest("first")
    assert all(torch.equal(a, b) for x, y in zip(again, fresh) for a, b in zip(x, y))
    for other in (("retrained", 3), ("first", 2)):
        with pytest.warns(CacheWarning, match="stale"):
            kbest(*other)
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.warns(CacheWarning, match="corrupt"):
        rebuilt = kbest("first", 2)
    assert all(torch.equal(a, b) for x, y in zip(rebuilt, kbest("first", 2)) for a, b in zip(x, y))


CONFIGS = ROOT / "configs" / "ner"
DATA = [f"--train={NER / 'train.conll'}", f"--dev={NER / 'dev.conll'}"]
TINY = [
    "model.encoder.word_dim=8",
    "model.encoder.char_dim=4",
    "model.encoder.char_filters=6",
    "model.encoder.lstm_hidden=6",
    "train.batch_size=8",
    "train.lr=0.01",
    "train.progress=false",
]


def cli(*args: str) -> int:
    return main([*args, *[a for s in TINY for a in ("--set", s)]])


@pytest.fixture(scope="module")
def crf_teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("teacher") / "crf"
    assert (
        cli("train", str(CONFIGS / "teacher-crf.yaml"), *DATA, f"--out={out}", "--max-epochs=3")
        == 0
    )
    return out / "model"


def scores(out: Path) -> dict[str, Any]:
    metrics = json.loads((out / "metrics.json").read_text())
    return {
        split: {k: v for k, v in m.items() if k != "tokens_per_second"}
        for split, m in metrics.items()
    }


def test_distill_with_and_without_cache_agree_and_the_cache_is_reused(
    tmp_path: Path, crf_teacher: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same metrics and losses with the teacher cache on and off; with it on, each training
    sentence goes through the teacher's encoder once, and not at all once the cache exists."""
    encoded: list[tuple[str, ...]] = []
    real_load = teacher_loader.load_model

    def spied_teacher(*args: Any, **kwargs: Any) -> Model:
        model = real_load(*args, **kwargs)
        forward = model.encoder.forward

        def spy(batch: Any) -> torch.Tensor:
            encoded.extend(tuple(t) for t in batch.tokens)
            return forward(batch)

        monkeypatch.setattr(model.encoder, "forward", spy)
        return model

    monkeypatch.setattr(teacher_loader, "load_model", spied_teacher)
    training = {tuple(t) for t in TOKENS}
    cache = tmp_path / "cache"

    def distill(out: str, *extra: str) -> int:
        encoded.clear()
        code = cli(
            "distill",
            str(CONFIGS / "case1a.yaml"),
            *DATA,
            f"--unlabeled={NER / 'unlabeled.txt'}",
            f"--teacher={crf_teacher}",
            f"--out={tmp_path / out}",
            "--method=token",
            "--max-epochs=2",
            "--set",
            f"distill.cache_dir={cache}",
            *extra,
        )
        assert code == 0
        return sum(t in training for t in encoded)

    assert distill("cached") == len(TOKENS)  # the cache is filled: each sentence once
    (path,) = cache.glob("targets-*.safetensors")  # token KD's per-token distributions
    stamp = path.stat().st_mtime_ns
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheWarning)
        assert distill("reused") == 0
    assert path.stat().st_mtime_ns == stamp
    assert distill("online", "--set", "distill.cache_teacher=false") == 2 * len(TOKENS)
    assert sorted(cache.iterdir()) == sorted([path, path.with_suffix(".json")])
    logs = {
        name: [json.loads(line) for line in (tmp_path / name / "train_log.jsonl").open()]
        for name in ("cached", "reused", "online")
    }
    for name in ("reused", "online"):
        assert scores(tmp_path / name) == scores(tmp_path / "cached"), name
        for a, b in zip(logs[name], logs["cached"]):
            assert a["loss"] == pytest.approx(b["loss"], rel=1e-5), name


def test_resumed_token_distillation_ends_like_uninterrupted(
    tmp_path: Path, crf_teacher: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def config(out: Path):  # noqa: ANN202
        return load_config(
            CONFIGS / "case2a.yaml",
            [*TINY, "train.patience=0", "distill.method=token"],
            {
                "data.train": [str(NER / "train.conll")],
                "data.dev": str(NER / "dev.conll"),
                "data.unlabeled": [str(NER / "unlabeled.txt")],
                "train.max_epochs": 2,
                "out": str(out),
            },
        )

    full = run(config(tmp_path / "full"), [str(crf_teacher)])
    saved = loop.save_checkpoint

    def killed_after_one(*args: Any, **kwargs: Any) -> Path:
        saved(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "save_checkpoint", killed_after_one)
    with pytest.raises(KeyboardInterrupt):
        run(config(tmp_path / "resumed"), [str(crf_teacher)])
    monkeypatch.setattr(loop, "save_checkpoint", saved)
    resumed = run(config(tmp_path / "resumed"), [str(crf_teacher)], resume=True)
    assert resumed["dev"]["f1"] == full["dev"]["f1"]
    a = load_file(str(tmp_path / "full" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "model" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    logs = [(tmp_path / d / "train_log.jsonl").read_text() for d in ("full", "resumed")]
    strip = [
        [
            {k: v for k, v in json.loads(line).items() if k != "train_seconds"}
            for line in log.splitlines()
        ]
        for log in logs
    ]
    assert strip[0] == strip[1] and len(strip[0]) == 2


@pytest.mark.skipif(not torch.distributed.is_available(), reason="no torch.distributed")
@pytest.mark.parametrize(("method", "kind"), [("substructure", "features"), ("token", "targets")])
def test_torchrun_shards_teacher_features(
    tmp_path: Path, crf_teacher: Path, method: str, kind: str
) -> None:
    """Two CPU ranks (gloo) each run the teacher on half the sentences; rank 0 merges their
    features (or targets) into the file a single process writes."""
    args = [
        "distill",
        str(CONFIGS / "case2a.yaml"),
        *DATA,
        f"--teacher={crf_teacher}",
        f"--unlabeled={NER / 'unlabeled.txt'}",
        f"--method={method}",
        "--max-epochs=1",
        *[a for s in TINY for a in ("--set", s)],
    ]
    done = run_two_ranks(args, tmp_path / "ddp", timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((tmp_path / "ddp" / "metrics.json").read_text())["dev"]["f1"] >= 0
    assert main([*args, f"--out={tmp_path / 'one'}"]) == 0
    (sharded,) = (tmp_path / "ddp" / "cache").glob(f"{kind}-*.safetensors")
    (single,) = (tmp_path / "one" / "cache").glob(f"{kind}-*.safetensors")
    a, b = load_file(str(sharded)), load_file(str(single))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)  # the same batches, split across ranks
    assert not list((tmp_path / "ddp" / "cache").glob("*shard*"))
