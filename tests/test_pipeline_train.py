"""Training loop, distillation and the CLI, on the fixture corpora with tiny models."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from structkd.cli import main
from structkd.config import DistillConfig, EncoderConfig, HeadConfig, ModelConfig, load_config
from structkd.data.batching import bucket_batches
from structkd.data.conll import read_ner
from structkd.models.checkpoint import load_model
from structkd.models.tagger import build_tagger
from structkd.train import loop
from structkd.train.cache import CacheWarning
from structkd.train.distill import Distiller
from structkd.train.run import run
from test_pipeline_models import tiny_bert
from torchrun import run_two_ranks

ROOT = Path(__file__).parent.parent
FIXTURES = Path(__file__).parent / "fixtures" / "pipeline"


pytestmark = pytest.mark.usefixtures("one_thread")


CONFIGS = ROOT / "configs" / "ner"
DATA = [
    f"--train={FIXTURES / 'train.conll'}",
    f"--dev={FIXTURES / 'dev.conll'}",
    f"--test={FIXTURES / 'test.conll'}",
]
TINY = [
    "model.encoder.word_dim=8",
    "model.encoder.char_dim=4",
    "model.encoder.char_filters=6",
    "model.encoder.lstm_hidden=6",
    "model.head.span_dim=5",
    "train.batch_size=8",
    "train.lr=0.01",
    "train.progress=false",
]


def tiny_student() -> ModelConfig:
    encoder = EncoderConfig(word_dim=8, char_filters=0, lstm_hidden=8, dropout=0.0)
    return ModelConfig(encoder, HeadConfig(kind="maxent"))


def cli(*args: str) -> int:
    sets = [a for s in TINY for a in ("--set", s)]
    return main([*args, *sets] if args[0] in ("train", "distill") else list(args))


def teacher(tmp_path: Path, name: str, epochs: int = 1) -> Path:
    out = tmp_path / name
    code = cli(
        "train", str(CONFIGS / f"{name}.yaml"), *DATA, f"--out={out}", f"--max-epochs={epochs}"
    )
    assert code == 0
    return out / "model"


def weights(directory: Path) -> dict[str, torch.Tensor]:
    return load_file(str(directory / "model.safetensors"))


def test_bucket_batches_cover_everything_and_respect_groups() -> None:
    lengths = [5, 1, 3, 3, 9, 2, 7, 4]
    groups = [0, 1, 0, 1, 0, 1, 0, 1]
    batches = bucket_batches(lengths, 3, seed=4, groups=groups)
    assert sorted(i for b in batches for i in b) == list(range(8))
    assert all(len({groups[i] for i in b}) == 1 and len(b) <= 3 for b in batches)
    assert batches == bucket_batches(lengths, 3, seed=4, groups=groups)


def test_train_writes_outputs(tmp_path: Path) -> None:
    model_dir = teacher(tmp_path, "teacher-crf", epochs=2)
    out = model_dir.parent
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2] and "dev_f1" in log[0]
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"dev", "test"}
    assert {"f1", "precision", "recall", "per_type"} <= set(metrics["test"])
    assert main(["evaluate", str(model_dir), str(FIXTURES / "test.conll")]) == 0
    pred = tmp_path / "pred.conll"
    assert (
        main(["predict", str(model_dir), str(FIXTURES / "unlabeled.txt"), f"--output={pred}"]) == 0
    )
    blocks = pred.read_text().strip().split("\n\n")
    assert len(blocks) == 30 and all(len(line.split()) == 2 for line in blocks[0].splitlines())


@pytest.mark.parametrize("command", ["train", "distill"])
def test_resumed_run_ends_like_uninterrupted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str, crf_teacher: Path
) -> None:
    teachers = [str(crf_teacher)] if command == "distill" else []
    path = CONFIGS / ("case2a.yaml" if command == "distill" else "teacher-maxent.yaml")

    def config(out: Path):  # noqa: ANN202
        return load_config(
            path,
            [*TINY, "train.patience=0"],
            {
                "data.train": [str(FIXTURES / "train.conll")],
                "data.dev": str(FIXTURES / "dev.conll"),
                "data.unlabeled": [str(FIXTURES / "unlabeled.txt")] if teachers else [],
                "train.max_epochs": 3,
                "out": str(out),
            },
        )

    full = run(config(tmp_path / "full"), teachers)
    saved = loop.save_checkpoint
    calls = []

    def killed_after_two(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        path = saved(*args, **kwargs)
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return path

    monkeypatch.setattr(loop, "save_checkpoint", killed_after_two)
    with pytest.raises(KeyboardInterrupt):
        run(config(tmp_path / "resumed"), teachers)
    monkeypatch.setattr(loop, "save_checkpoint", saved)
    assert (tmp_path / "resumed" / "checkpoints" / "LAST").read_text() == "epoch-0002"
    resumed = run(config(tmp_path / "resumed"), teachers, resume=True)
    assert resumed["dev"]["f1"] == full["dev"]["f1"]
    for model in ("model", "checkpoints/epoch-0003"):
        a, b = weights(tmp_path / "full" / model), weights(tmp_path / "resumed" / model)
        assert all(torch.equal(a[k], b[k]) for k in a), model
    logs = [
        (tmp_path / d / "train_log.jsonl").read_text().splitlines() for d in ("full", "resumed")
    ]
    # Less each epoch's wall-clock train_seconds, never reproducible.
    records = [
        [{k: v for k, v in json.loads(r).items() if k != "train_seconds"} for r in log]
        for log in logs
    ]
    assert records[0] == records[1] and len(records[0]) == 3


def test_non_finite_loss_stops_and_keeps_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = loop.batch_loss
    steps = []

    def poisoned(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        steps.append(1)
        loss = real(*args, **kwargs)
        return loss * float("nan") if len(steps) > 6 else loss

    monkeypatch.setattr(loop, "batch_loss", poisoned)
    out = tmp_path / "nan"
    code = cli("train", str(CONFIGS / "teacher-maxent.yaml"), *DATA, f"--out={out}")
    assert code == 1
    assert "non-finite loss" in capsys.readouterr().err
    assert (out / "checkpoints" / "LAST").read_text() == "epoch-0001"
    assert (out / "model" / "model.safetensors").exists()


@pytest.mark.parametrize(
    ("case", "teacher_config"),
    [
        ("case1a", "teacher-crf"),
        ("case2a", "teacher-crf"),
        ("case3", "teacher-maxent"),
        ("case4", "teacher-span"),
    ],
)
def test_case_configs_run(tmp_path: Path, case: str, teacher_config: str) -> None:
    model_dir = teacher(tmp_path, teacher_config)
    out = tmp_path / case
    code = cli(
        "distill",
        str(CONFIGS / f"{case}.yaml"),
        *DATA,
        f"--unlabeled={FIXTURES / 'unlabeled.txt'}",
        f"--teacher={model_dir}",
        f"--out={out}",
        "--max-epochs=1",
    )
    assert code == 0
    assert json.loads((out / "metrics.json").read_text())["test"]["f1"] >= 0
    assert list((out / "cache").glob("marginals-*.safetensors"))


def test_kd_loss_goes_down(tmp_path: Path) -> None:
    """Training on the structural KD loss alone drives KL(teacher || student) towards 0."""
    teacher_model = load_model(teacher(tmp_path, "teacher-crf"))
    train = read_ner(FIXTURES / "train.conll")
    tokens = [s.tokens for s in train]
    torch.manual_seed(0)
    student = build_tagger(tiny_student(), tokens, [s.tags for s in train])
    distiller = Distiller(
        [teacher_model],
        DistillConfig(anneal=False, lam=1.0),
        tokens,
        [0] * len(tokens),
        student,
        tmp_path / "cache",
        ["teacher"],
    )
    assert distiller.marginals is not None
    # For a MaxEnt student the cross-entropy's minimum is the teacher's token entropy.
    entropy = sum(-(m[0] * m[0].clamp_min(1e-12).log()).sum() for m in distiller.marginals)
    batch = student.collate(tokens)
    indices = list(range(len(tokens)))

    def kl() -> float:
        student.eval()
        with torch.no_grad():
            ce = distiller.losses(student.structure(batch), batch, indices).sum()
        student.train()
        return float(ce - entropy)

    before = kl()
    optimizer = torch.optim.Adam(student.parameters(), lr=0.02)
    for _ in range(30):
        loss = distiller.losses(student.structure(batch), batch, indices).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert before > 0 and kl() < 0.3 * before, (before, kl())


def test_cache_is_reused_and_stale_or_corrupt_cache_rebuilt(tmp_path: Path) -> None:
    model_dir = teacher(tmp_path, "teacher-crf")
    cache = tmp_path / "cache"

    def distill(out: str, *extra: str) -> None:
        code = cli(
            "distill",
            str(CONFIGS / "case1a.yaml"),
            *DATA,
            f"--teacher={model_dir}",
            f"--out={tmp_path / out}",
            f"--unlabeled={FIXTURES / 'unlabeled.txt'}",
            "--max-epochs=1",
            "--set",
            f"distill.cache_dir={cache}",
            *extra,
        )
        assert code == 0

    distill("a")
    (path,) = cache.glob("marginals-*.safetensors")
    stamp = path.stat().st_mtime_ns
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheWarning)
        distill("b")
    assert path.stat().st_mtime_ns == stamp
    with pytest.warns(CacheWarning, match="stale"):
        distill("c", "--set", "distill.temperature=2.0")
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.warns(CacheWarning, match="corrupt"):
        distill("d", "--set", "distill.temperature=2.0")


def test_user_errors_exit_2_without_outputs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.conll"
    bad.write_text("John B-PER\nsmith X-PER\n\n", encoding="utf-8")
    config = str(CONFIGS / "teacher-crf.yaml")
    cases = [
        ["train", str(tmp_path / "missing.yaml")],
        ["train", config, f"--train={bad}", f"--out={tmp_path / 'o1'}"],
        ["train", config, *DATA, "--set", "model.encoder.lstm_hiden=3", f"--out={tmp_path / 'o2'}"],
        ["train", config, *DATA, "--set", "train.seed=first", f"--out={tmp_path / 'o3'}"],
        ["train", config, f"--train={tmp_path / 'nope.conll'}", f"--out={tmp_path / 'o4'}"],
        [
            "distill",
            str(CONFIGS / "case1a.yaml"),
            *DATA,
            f"--teacher={tmp_path}",
            f"--out={tmp_path / 'o5'}",
        ],
        ["evaluate", str(tmp_path / "no-model"), str(FIXTURES / "test.conll")],
        ["predict", str(tmp_path / "no-model"), str(FIXTURES / "unlabeled.txt")],
        ["train"],
    ]
    for args in cases:
        assert cli(*args) == 2 if args != ["train"] else _exits_2(args), args
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert not any((tmp_path / f"o{i}").exists() for i in range(1, 6))


def _exits_2(args: list[str]) -> bool:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    return exit_info.value.code == 2


@pytest.fixture(scope="module")
def crf_teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return teacher(tmp_path_factory.mktemp("teachers"), "teacher-crf")


@pytest.mark.parametrize(
    "extra",
    [
        ["--method=token"],
        ["--method=posterior"],
        ["--method=topk", "--set", "distill.k=3"],
        ["--method=topwk", "--set", "distill.k=3"],
        ["--method=substructure"],
        ["--method=none"],
        ["--set", "distill.temperature=2", "--set", "distill.temperature_mode=local"],
    ],
)
def test_kd_methods_run(tmp_path: Path, crf_teacher: Path, extra: list[str]) -> None:
    code = cli(
        "distill",
        str(CONFIGS / "case1a.yaml"),
        *DATA,
        f"--teacher={crf_teacher}",
        f"--out={tmp_path / 'o'}",
        "--max-epochs=1",
        "--set",
        "data.unlabeled=[]",
        *extra,
    )
    assert code == 0
    assert (tmp_path / "o" / "metrics.json").exists()


@pytest.mark.parametrize("binding", ["corpus", "average"])
def test_several_teachers(tmp_path: Path, crf_teacher: Path, binding: str) -> None:
    maxent = teacher(tmp_path, "teacher-maxent")
    code = cli(
        "distill",
        str(CONFIGS / "case1a.yaml"),
        *DATA,
        f"--train={FIXTURES / 'dev.conll'}",
        f"--teacher={crf_teacher}",
        f"--teacher={maxent}",
        f"--out={tmp_path / 'o'}",
        "--max-epochs=1",
        "--set",
        "data.unlabeled=[]",
        "--set",
        f"distill.teacher_binding={binding}",
    )
    assert code == 0


@pytest.mark.skipif(not torch.distributed.is_available(), reason="no torch.distributed")
def test_torchrun_distill_shards_teacher_marginals(tmp_path: Path, crf_teacher: Path) -> None:
    """Two CPU ranks (gloo): sharded teacher marginals equal a single process's; training ends."""
    args = [
        "distill",
        str(CONFIGS / "case2a.yaml"),
        *DATA,
        f"--teacher={crf_teacher}",
        f"--unlabeled={FIXTURES / 'unlabeled.txt'}",
        "--max-epochs=1",
        *[a for s in TINY for a in ("--set", s)],
    ]
    done = run_two_ranks(args, tmp_path / "ddp", timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((tmp_path / "ddp" / "metrics.json").read_text())["test"]["f1"] >= 0
    assert main([*args, f"--out={tmp_path / 'one'}"]) == 0
    (sharded,) = (tmp_path / "ddp" / "cache").glob("*.safetensors")
    (single,) = (tmp_path / "one" / "cache").glob("*.safetensors")
    a, b = load_file(str(sharded)), load_file(str(single))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not list((tmp_path / "ddp" / "cache").glob("*shard*"))


def test_transformer_teacher_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bert = tiny_bert(tmp_path / "bert")
    out = tmp_path / "minilm"
    code = cli(
        "train",
        str(CONFIGS / "teacher-minilm-crf.yaml"),
        *DATA,
        f"--out={out}",
        "--max-epochs=1",
        "--set",
        f"model.encoder.transformer={bert}",
        "--set",
        "train.lr=0.001",
    )
    assert code == 0
    capsys.readouterr()
    assert main(["predict", str(out / "model"), str(FIXTURES / "test.conll")]) == 0
    lines = capsys.readouterr().out.strip().split("\n\n")[0].splitlines()
    assert all(len(line.split()) == 3 for line in lines)  # token, gold, predicted


def test_unsupported_teacher_student_pair_is_a_user_error(
    tmp_path: Path, crf_teacher: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli(
        "distill",
        str(CONFIGS / "case1a.yaml"),
        *DATA,
        f"--teacher={crf_teacher}",
        f"--out={tmp_path / 'o'}",
        "--set",
        "model.head.kind=span",
        "--set",
        "data.unlabeled=[]",
    )
    assert code == 2
    assert "LinearChainCRF" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_head_lr_trains_the_head_apart_from_the_encoder() -> None:
    """``train.head_lr`` (given as YAML reads ``1e-3``, a string) puts every parameter outside
    the encoder in a group of its own: at ``lr`` = 0 one step moves the head (CRF transitions
    included) and leaves the encoder as it was."""
    config = load_config(CONFIGS / "case1a.yaml", ["train.lr=0", "train.head_lr=1e-2"])
    assert config.train.head_lr == pytest.approx(0.01)
    sentences = read_ner(FIXTURES / "train.conll")
    tags = [s.tags for s in sentences if s.tags is not None]
    torch.manual_seed(0)
    model = build_tagger(tiny_student_crf(), [s.tokens for s in sentences], tags)
    optimizer = loop.make_optimizer(model, config.train)
    groups = optimizer.param_groups
    assert [g["lr"] for g in groups] == [0.0, 0.01]
    inside = {id(p) for p in model.encoder.parameters()}
    assert {id(p) for p in groups[0]["params"]} == inside
    assert len(groups[0]["params"]) + len(groups[1]["params"]) == len(list(model.parameters()))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.train()
    loss = model.nll(model.collate([s.tokens for s in sentences[:8]], tags[:8])).mean()
    loss.backward()
    optimizer.step()
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert moved and all(not n.startswith("encoder.") for n in moved)
    assert "head.transitions" in moved


def tiny_student_crf() -> ModelConfig:
    encoder = EncoderConfig(word_dim=8, char_filters=0, lstm_hidden=8, dropout=0.0)
    return ModelConfig(encoder, HeadConfig(kind="crf"))
