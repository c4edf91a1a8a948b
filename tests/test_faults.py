"""Faults never lose work: kills, crashes inside checkpoint writes, damaged caches, NaN losses.

Complements tests/test_pipeline_train.py (resume after an interrupt between epochs, a NaN loss,
a stale or byte-flipped cache): here a real ``structkd train`` process is SIGKILLed at the
moments a write is published, a crash is raised inside the safetensors save, and the teacher
cache is truncated or built by another teacher. docs/reliability.md lists every case.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import load_file

from structkd.cli import main
from structkd.config import RunConfig, load_config
from structkd.models import checkpoint
from structkd.models.checkpoint import load_model
from structkd.models.manifest import ManifestWarning
from structkd.train.cache import CacheWarning
from structkd.train.loop import make_optimizer
from structkd.train.run import run
from structkd.train.state import last_checkpoint, load_checkpoint

ROOT = Path(__file__).parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "pipeline"
CONFIGS = ROOT / "configs" / "ner"
TINY = [
    "model.encoder.word_dim=8",
    "model.encoder.char_dim=4",
    "model.encoder.char_filters=6",
    "model.encoder.lstm_hidden=6",
    "train.batch_size=8",
    "train.lr=0.01",
    "train.patience=0",
    "train.progress=false",
]
DATA = {
    "data.train": [str(FIXTURES / "train.conll")],
    "data.dev": str(FIXTURES / "dev.conll"),
    "data.test": str(FIXTURES / "test.conll"),
}
EPOCHS = 3

# Runs the CLI in a fresh process that SIGKILLs itself at the K-th time it publishes a file or
# directory under OUT (os.replace / os.rename): the file is fully written to its temporary name
# and about to be moved into place, the last moment a power cut can hit before it counts.
KILLER = """
import os, signal, sys
limit, out = int(sys.argv[1]), os.path.abspath(sys.argv[2])
calls = 0
def killing(real):
    def publish(src, dst, *args, **kwargs):
        global calls
        if os.path.abspath(dst).startswith(out):
            calls += 1
            if calls == limit:
                os.kill(os.getpid(), signal.SIGKILL)
        return real(src, dst, *args, **kwargs)
    return publish
os.replace, os.rename = killing(os.replace), killing(os.rename)
from structkd.cli import main
sys.exit(main(sys.argv[3:]))
"""


pytestmark = pytest.mark.usefixtures("one_thread")


def train_args(out: Path, *extra: str) -> list[str]:
    sets = [a for s in TINY for a in ("--set", s)]
    return [
        "train",
        str(CONFIGS / "teacher-maxent.yaml"),
        *(f"--{k.split('.')[1]}={v[0] if isinstance(v, list) else v}" for k, v in DATA.items()),
        f"--out={out}",
        f"--max-epochs={EPOCHS}",
        *sets,
        *extra,
    ]


def cli_process(kill_at: int, out: Path, args: list[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run(
        [sys.executable, "-c", KILLER, str(kill_at), str(out), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def metrics_without_speed(out: Path) -> dict[str, Any]:
    """metrics.json less the throughput figures (wall-clock, never reproducible)."""
    metrics = json.loads((out / "metrics.json").read_text())
    for split in metrics.values():
        split.pop("tokens_per_second")
    return metrics


def log_without_speed(out: Path) -> list[dict[str, Any]]:
    """train_log.jsonl less each epoch's wall-clock ``train_seconds``."""
    lines = (out / "train_log.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "train_seconds"} for line in lines]


def same_weights(a: Path, b: Path) -> bool:
    x, y = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def test_sigkill_at_several_points_then_resume_ends_like_an_uninterrupted_run(
    tmp_path: Path,
) -> None:
    """One run killed three times, always resumed with ``--resume``:

    1. at the 5th publish: inside the first epoch's checkpoint (``checkpoints/`` exists, no
       complete checkpoint yet), so ``--resume`` has to start the run over;
    2. at the 12th publish of the resumed process: inside the second epoch's writes;
    3. at the 1st publish of the next process: right after resuming.

    The final metrics.json (less throughput), train_log.jsonl and best model equal those of an
    uninterrupted run with the same seed, and no half-written checkpoint is left behind.
    """
    reference = tmp_path / "reference"
    assert main(train_args(reference)) == 0  # in this process: one thread, as in the children
    out = tmp_path / "killed"
    for attempt, kill_at in enumerate((5, 12, 1)):
        extra = ["--resume"] if attempt else []
        killed = cli_process(kill_at, out, train_args(out, *extra))
        assert killed.returncode == -9, (kill_at, killed.stderr[-2000:])
    assert not (out / "metrics.json").exists()
    finished = cli_process(0, out, train_args(out, "--resume"))
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert metrics_without_speed(out) == metrics_without_speed(reference)
    assert log_without_speed(out) == log_without_speed(reference)
    assert same_weights(out / "model", reference / "model")
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["LAST", "epoch-0003"]
    assert list(out.rglob(".*")) == []  # no temporary file or directory left


def config(out: Path, epochs: int = EPOCHS) -> RunConfig:
    """No dev set: every epoch then counts as the best and writes model/ as well."""
    values = {**DATA, "train.max_epochs": epochs, "out": str(out)}
    del values["data.dev"]
    return load_config(CONFIGS / "teacher-maxent.yaml", [*TINY, "data.dev="], values)


@pytest.mark.parametrize("failing_save", [1, 2, 3])
def test_a_crash_inside_a_checkpoint_write_keeps_the_previous_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing_save: int
) -> None:
    """Epoch 2's safetensors saves (best model, checkpoint model, optimizer) each fail in turn
    (as a full disk would): epoch 1's checkpoint and model/ still load, and resuming finishes
    the run as an uninterrupted one does."""
    reference = run(config(tmp_path / "reference", epochs=2))
    out = tmp_path / "crashed"
    real = checkpoint.save_safetensors
    calls = []

    def failing(*args: Any, **kwargs: Any) -> bytes:
        if last_checkpoint(out / "checkpoints") is not None:  # epoch 1 is safely written
            calls.append(1)
            if len(calls) == failing_save:
                raise OSError(28, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(checkpoint, "save_safetensors", failing)
    with pytest.raises(OSError, match="No space left"):
        run(config(out, epochs=2))
    monkeypatch.setattr(checkpoint, "save_safetensors", real)
    last = last_checkpoint(out / "checkpoints")
    assert last is not None and last.name == "epoch-0001"
    _, _, state = load_checkpoint(last, lambda m: make_optimizer(m, config(out).train))
    assert state.epoch == 1 and not state.finished
    load_model(out / "model")
    assert not (out / "metrics.json").exists()
    resumed = run(config(out, epochs=2), resume=True)
    assert resumed["test"]["f1"] == reference["test"]["f1"]
    assert same_weights(out / "model", tmp_path / "reference" / "model")
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["LAST", "epoch-0002"]


@pytest.fixture(scope="module")
def teachers(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two CRF teachers trained for one epoch with different seeds."""
    base = tmp_path_factory.mktemp("teachers")
    dirs = []
    for seed in (1, 2):
        values = {**DATA, "train.max_epochs": 1, "train.seed": seed, "out": str(base / str(seed))}
        run(load_config(CONFIGS / "teacher-crf.yaml", TINY, values))
        dirs.append(base / str(seed) / "model")
    return dirs[0], dirs[1]


def same_tensors(a: bytes, b: bytes) -> bool:
    """Same safetensors content (the header's metadata order may differ between writes)."""
    x, y = load_safetensors(a), load_safetensors(b)
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def distill(out: Path, teacher: Path, cache: Path) -> dict[str, Any]:
    values = {
        **DATA,
        "data.unlabeled": [str(FIXTURES / "unlabeled.txt")],
        "train.max_epochs": 1,
        "distill.cache_dir": str(cache),
        "out": str(out),
    }
    return run(load_config(CONFIGS / "case1a.yaml", TINY, values), [str(teacher)])


def test_damaged_or_stale_teacher_cache_is_rebuilt_with_a_warning(
    tmp_path: Path, teachers: tuple[Path, Path]
) -> None:
    first, second = teachers
    cache = tmp_path / "cache"
    fresh = distill(tmp_path / "fresh", first, cache)
    (data,) = cache.glob("marginals-*.safetensors")
    meta = data.with_suffix(".json")
    good_data, good_meta = data.read_bytes(), meta.read_bytes()
    damages = {
        "truncated file": (lambda: data.write_bytes(good_data[: len(good_data) // 2]), "corrupt"),
        "empty file": (lambda: data.write_bytes(b""), "corrupt"),
        "truncated index": (lambda: meta.write_bytes(good_meta[:10]), "corrupt"),
        "missing index": (meta.unlink, "corrupt"),
        "index sentence count off by 100": (
            lambda: _edit_json(meta, lambda m: m.update(sentences=m["sentences"] + 100)),
            "index counts .* sentences, the data",
        ),
        "index []": (lambda: meta.write_text("[]"), "index is no mapping"),
    }
    for i, (name, (damage, kind)) in enumerate(damages.items()):
        damage()
        with pytest.warns(CacheWarning, match=kind):
            again = distill(tmp_path / f"run{i}", first, cache)
        assert again["dev"]["f1"] == fresh["dev"]["f1"], name
        assert same_tensors(data.read_bytes(), good_data), name  # rebuilt to the same content
    with pytest.warns(CacheWarning, match="stale"):
        distill(tmp_path / "other-teacher", second, cache)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheWarning)
        distill(tmp_path / "reused", second, cache)  # the rebuilt cache is valid


def test_a_cache_write_killed_midway_leaves_no_temporary_behind(
    tmp_path: Path, teachers: tuple[Path, Path]
) -> None:
    """``structkd distill`` SIGKILLed as it publishes the teacher cache (its first write): the
    cache's temporary and the run's lock file stay behind; the rerun removes the temporary,
    takes the stale lock over, and finishes leaving no dot-file at all."""
    out = tmp_path / "out"
    sets = [a for s in TINY for a in ("--set", s)]
    args = [
        "distill",
        str(CONFIGS / "case1a.yaml"),
        *(f"--{k.split('.')[1]}={v[0] if isinstance(v, list) else v}" for k, v in DATA.items()),
        f"--unlabeled={FIXTURES / 'unlabeled.txt'}",
        f"--teacher={teachers[0]}",
        f"--out={out}",
        "--max-epochs=1",
        *sets,
    ]
    killed = cli_process(1, out, args)
    assert killed.returncode == -9, killed.stderr[-2000:]
    left = sorted(p.name for p in out.rglob(".*"))
    assert left[1] == ".structkd.lock" and len(left) == 2, left
    assert left[0].startswith(".marginals-") and left[0].endswith(".tmp"), left
    again = cli_process(0, out, args)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "taking over the stale lock" in again.stderr
    assert list(out.rglob(".*")) == []


def test_non_finite_loss_in_the_first_epoch_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A NaN before any checkpoint: exit status 1, one clear line, and no output directory at
    all, so a rerun starts clean (tests/test_pipeline_train.py covers a NaN in a later epoch)."""
    from structkd.train import loop

    real = loop.batch_loss
    monkeypatch.setattr(loop, "batch_loss", lambda *a, **k: real(*a, **k) * float("nan"))
    out = tmp_path / "nan"
    assert main(train_args(out)) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "non-finite loss (nan) at epoch 1, step 1" in err, err
    assert "Last good checkpoint: none (first epoch)" in err
    assert not out.exists()
    assert main(train_args(out, "--resume")) == 2
    assert "nothing to resume" in capsys.readouterr().err
    monkeypatch.setattr(loop, "batch_loss", real)
    assert main(train_args(out)) == 0


def _edit_json(path: Path, edit: Any) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


# damage -> (spoil the directory, the file it changes, the message without a manifest)
MODEL_DAMAGE = {
    "config.json not JSON": (
        lambda d: (d / "config.json").write_text("{"),
        "config.json",
        "unreadable",
    ),
    "config.json without checksum": (
        lambda d: _edit_json(d / "config.json", lambda c: c.pop("weights_sha256")),
        "config.json",
        "weights do not match config.json",
    ),
    "weights truncated": (
        lambda d: (d / "model.safetensors").write_bytes(b"\x08\x00"),
        "model.safetensors",
        "weights do not match config.json",
    ),
    "vocabulary edited": (
        lambda d: _edit_json(d / "config.json", lambda c: c["vocab"]["words"].pop()),
        "config.json",
        "weights do not fit config.json (RuntimeError: Error(s) in loading state_dict",
    ),
    "vocabulary not a mapping": (
        lambda d: _edit_json(d / "config.json", lambda c: c.update(vocab=5)),
        "config.json",
        "inconsistent config.json (TypeError: ",
    ),
    "model config with a wrong type": (
        lambda d: _edit_json(d / "config.json", lambda c: c["model"]["head"].update(kind=3)),
        "config.json",
        "inconsistent config.json (ConfigError: model.head.kind",
    ),
}
CHECKPOINT_DAMAGE = {
    "state.json without optimizer": (
        lambda d: _edit_json(d / "state.json", lambda s: s.pop("optimizer")),
        "state.json",
        "inconsistent training checkpoint (KeyError: 'optimizer')",
    ),
    "optimizer state truncated": (
        lambda d: (d / "optimizer.safetensors").write_bytes(b"\x10"),
        "optimizer.safetensors",
        "incomplete training checkpoint",
    ),
}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run") / "out"
    assert main(train_args(out, "--max-epochs=1")) == 0
    return out


@pytest.mark.parametrize("manifest", [True, False], ids=["manifest", "no manifest"])
@pytest.mark.parametrize("damage", list(MODEL_DAMAGE) + list(CHECKPOINT_DAMAGE))
def test_a_damaged_model_or_checkpoint_is_one_error_line(
    tmp_path: Path,
    finished_run: Path,
    damage: str,
    manifest: bool,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Hand-edited, truncated or foreign files in a model directory or training checkpoint:
    exit status 2 and one ``error: DIR...`` line naming the problem, never a traceback. With
    its manifest the changed file is named; without one (a directory saved before manifests
    existed) the loader's own checks catch these cases too."""
    out = tmp_path / "out"
    shutil.copytree(finished_run, out)
    capsys.readouterr()
    spoil, name, message = {**MODEL_DAMAGE, **CHECKPOINT_DAMAGE}[damage]
    if damage in MODEL_DAMAGE:
        target = out / "model"
        command = ["evaluate", str(target), str(FIXTURES / "test.conll")]
    else:
        target = out / "checkpoints" / "epoch-0001"
        command = train_args(out, "--resume", "--max-epochs=2")
    if not manifest:
        (target / "manifest.json").unlink()
    spoil(target)
    if manifest:
        status = main(command)
    else:
        with pytest.warns(ManifestWarning, match="no manifest.json .saved by an older"):
            status = main(command)
    err = capsys.readouterr().err
    assert status == 2, err
    assert err.startswith(f"error: {target}") and err.count("\n") == 1, err
    if manifest:
        assert err.startswith(f"error: {target / name}: SHA-256 differs from manifest.json"), err
    else:
        assert message in err, err
