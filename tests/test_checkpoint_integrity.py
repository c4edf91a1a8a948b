"""Every file of a model directory and checkpoint is checksummed; resumed runs are the same run.

The damages are those an adversarial user tried (issue 18): a changed label, a swapped
vocabulary word, NaN-flipped optimizer values, a ``state.json`` with an impossible counter, a
``LAST`` file of garbage. With the manifest each is caught naming the file; without one (a
directory from before manifests) the loader's own range checks still turn them into one error
line. ``--resume`` refuses other settings, data or teachers, and continues a finished run when
``--max-epochs`` grows. docs/reliability.md lists every case.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import pytest
from safetensors.torch import load_file, save_file

from structkd.cli import main
from structkd.io import sha256
from structkd.models.manifest import MANIFEST, ManifestWarning, manifest_bytes
from structkd.train.fingerprint import FingerprintWarning

ROOT = Path(__file__).parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "pipeline"
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


pytestmark = pytest.mark.usefixtures("one_thread")


def train_args(out: Path, *extra: str, train: Path = FIXTURES / "train.conll") -> list[str]:
    sets = [a for s in TINY for a in ("--set", s)]
    config = str(ROOT / "configs" / "ner" / "teacher-maxent.yaml")
    data = [f"--train={train}", f"--dev={FIXTURES / 'dev.conll'}"]
    data.append(f"--test={FIXTURES / 'test.conll'}")
    return ["train", config, *data, f"--out={out}", "--max-epochs=2", *sets, *extra]


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished two-epoch run."""
    out = tmp_path_factory.mktemp("integrity") / "out"
    assert main(train_args(out)) == 0
    return out


def copy_of(finished: Path, tmp_path: Path) -> Path:
    out = tmp_path / "out"
    shutil.copytree(finished, out)
    return out


def edit_json(path: Path, edit: Callable[[Any], None]) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def relabel(config: dict[str, Any]) -> None:
    types = config["vocab"]["entity_types"]
    types[types.index("LOC")] = "HOC"  # same size, another label


def swap_words(config: dict[str, Any]) -> None:
    words = config["vocab"]["words"]
    words[2], words[3] = words[3], words[2]


def nan_optimizer(directory: Path) -> None:
    path = directory / "optimizer.safetensors"
    tensors = load_file(str(path))
    name = next(k for k in sorted(tensors) if k.endswith("exp_avg"))
    tensors[name].view(-1)[0] = math.nan
    save_file(tensors, str(path))


def state_field(key: str, value: Any) -> Callable[[Path], None]:
    return lambda d: edit_json(d / "state.json", lambda s: s["state"].update({key: value}))


# damage -> (spoil, file it changes, error without the manifest or None if only it can tell)
DAMAGE: dict[str, tuple[Callable[[Path], None], str, str | None]] = {
    "label LOC -> HOC": (lambda d: edit_json(d / "config.json", relabel), "config.json", None),
    "two vocabulary words swapped": (
        lambda d: edit_json(d / "config.json", swap_words),
        "config.json",
        None,
    ),
    "optimizer value NaN": (
        nan_optimizer,
        "optimizer.safetensors",
        "optimizer.safetensors: optimizer.0.exp_avg holds NaN or infinite values",
    ),
    "state epoch -5": (
        state_field("epoch", -5),
        "state.json",
        "state.json: state.epoch must be an integer >= 0, not -5",
    ),
    "state epoch 'x'": (
        state_field("epoch", "x"),
        "state.json",
        "state.json: state.epoch must be an integer >= 0, not 'x'",
    ),
    "state best_score 99": (state_field("best_score", 99), "state.json", None),
    "state best_score NaN": (
        state_field("best_score", math.nan),
        "state.json",
        "state.json: state.best_score must be a finite number, not nan",
    ),
    "state history shortened": (
        lambda d: edit_json(d / "state.json", lambda s: s["state"]["history"].pop()),
        "state.json",
        "state.json: state.history has 1 records for 2 epochs",
    ),
}


@pytest.mark.parametrize("manifest", [True, False], ids=["manifest", "no manifest"])
@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_checkpoint_files_are_named(
    tmp_path: Path,
    finished: Path,
    damage: str,
    manifest: bool,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``--resume --max-epochs 3`` on a damaged checkpoint exits 2 with one line naming the
    file (before, these were exit 0 and a wrong model, or a traceback)."""
    spoil, name, legacy = DAMAGE[damage]
    if not manifest and legacy is None:
        pytest.skip("only the manifest can tell this damage from a real checkpoint")
    out = copy_of(finished, tmp_path)
    checkpoint = out / "checkpoints" / "epoch-0002"
    if not manifest:
        (checkpoint / MANIFEST).unlink()
    spoil(checkpoint)
    capsys.readouterr()
    with pytest.warns(ManifestWarning) if not manifest else nullcontext():
        status = main(train_args(out, "--resume", "--max-epochs=3"))
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1, err
    if manifest:
        expected = f"error: {checkpoint / name}: SHA-256 differs from manifest.json"
        assert err.startswith(expected), err
    else:
        assert err.startswith(f"error: {checkpoint / legacy.split(':')[0]}"), err
        assert legacy in err, err
    assert json.loads((out / "metrics.json").read_text()) == json.loads(
        (finished / "metrics.json").read_text()
    )  # nothing was rewritten


def test_a_changed_label_in_model_config_is_named(
    tmp_path: Path, finished: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``evaluate`` on a model whose ``config.json`` has one label changed: exit 2 naming it
    (before: exit 0 and F1 computed with the wrong label)."""
    out = copy_of(finished, tmp_path)
    edit_json(out / "model" / "config.json", relabel)
    capsys.readouterr()
    assert main(["evaluate", str(out / "model"), str(FIXTURES / "test.conll")]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"error: {out / 'model' / 'config.json'}: SHA-256 differs from manifest.json (the file "
        "was changed or damaged after it was saved)\n"
    )


def test_nan_weights_without_a_manifest_are_refused(
    tmp_path: Path, finished: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """NaN weights whose checksum was updated too (no manifest): refused on load, naming the
    tensor, instead of a ``ValueError: emissions contains NaN`` traceback later."""
    out = copy_of(finished, tmp_path)
    model = out / "model"
    tensors = load_file(str(model / "model.safetensors"))
    name = sorted(tensors)[0]
    tensors[name].view(-1)[0] = math.nan
    save_file(tensors, str(model / "model.safetensors"))
    digest = sha256((model / "model.safetensors").read_bytes())
    edit_json(model / "config.json", lambda c: c.update(weights_sha256=digest))
    (model / MANIFEST).write_bytes(manifest_bytes(model))  # a consistent, re-signed directory
    capsys.readouterr()
    assert main(["evaluate", str(model), str(FIXTURES / "test.conll")]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"error: {model / 'model.safetensors'}: tensor {name} holds NaN or infinite values\n"
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\xff\xfe\x00garbage", "unreadable"),
        (b"../../elsewhere", "does not name a checkpoint (expected epoch-NNNN)"),
        (b"", "does not name a checkpoint"),
        (b"epoch-0007", "names epoch-0007, which does not exist"),
    ],
    ids=["invalid bytes", "a path", "empty", "a missing checkpoint"],
)
def test_a_bad_last_file_is_one_error_line(
    tmp_path: Path,
    finished: Path,
    content: bytes,
    message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = copy_of(finished, tmp_path)
    (out / "checkpoints" / "LAST").write_bytes(content)
    capsys.readouterr()
    assert main(train_args(out, "--resume", "--max-epochs=3")) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {out / 'checkpoints' / 'LAST'}: {message}"), err
    assert err.count("\n") == 1, err


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        (["--seed=2"], "train.seed (1 then, 2 now)"),
        (["--set", "train.lr=0.02"], "train.lr (0.01 then, 0.02 now)"),
        (["--set", "model.encoder.lstm_hidden=7"], "model.encoder.lstm_hidden (6 then, 7 now)"),
        (["--train", str(FIXTURES / "dev.conll")], "data.train (other file content)"),
    ],
    ids=["seed", "lr", "model size", "train data"],
)
def test_resume_refuses_another_run(
    tmp_path: Path,
    finished: Path,
    extra: list[str],
    field: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A resumed run with other settings or data exits 2 naming what differs (before, epochs
    2-4 trained silently on another corpus)."""
    out = copy_of(finished, tmp_path)
    args = train_args(out, "--resume", "--max-epochs=3", *extra)
    if extra[0] == "--train":  # replaces, not adds, the training corpus
        args.remove(f"--train={FIXTURES / 'train.conll'}")
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and field in err, err
    assert err.startswith(f"error: --resume: {out} was started with other settings"), err
    assert (out / "checkpoints" / "LAST").read_text() == "epoch-0002"


def test_resume_accepts_a_moved_corpus_and_continues_a_finished_run(
    tmp_path: Path, finished: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--resume --max-epochs 3`` on a finished two-epoch run trains epoch 3 and ends where a
    fresh three-epoch run ends (a copy of the corpus elsewhere is the same corpus); resuming a
    finished run again says plainly that there is nothing to train."""
    fresh = tmp_path / "fresh"
    assert main(train_args(fresh, "--max-epochs=3")) == 0
    out = copy_of(finished, tmp_path)
    moved = tmp_path / "moved.conll"
    shutil.copy(FIXTURES / "train.conll", moved)
    assert main(train_args(out, "--resume", "--max-epochs=3", train=moved)) == 0
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    reference = [json.loads(line) for line in (fresh / "train_log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2, 3]
    assert [r["loss"] for r in log] == [r["loss"] for r in reference]
    assert (
        json.loads((out / "metrics.json").read_text())["test"]["f1"]
        == json.loads((fresh / "metrics.json").read_text())["test"]["f1"]
    )
    with pytest.warns(UserWarning, match="finished at epoch 3 .max_epochs 3.; nothing more"):
        assert main(train_args(out, "--resume", "--max-epochs=3")) == 0
    assert (out / "checkpoints" / "LAST").read_text() == "epoch-0003"


def test_a_checkpoint_without_fingerprint_resumes_with_a_warning(
    tmp_path: Path, finished: Path
) -> None:
    """Checkpoints from before fingerprints (and manifests) still resume, saying what cannot
    be checked."""
    out = copy_of(finished, tmp_path)
    checkpoint = out / "checkpoints" / "epoch-0002"
    edit_json(checkpoint / "state.json", lambda s: s["state"].pop("fingerprint"))
    (checkpoint / MANIFEST).unlink()
    with pytest.warns(FingerprintWarning, match="cannot check that --resume continues"):
        assert main(train_args(out, "--resume", "--max-epochs=3")) == 0
    assert (out / "checkpoints" / "LAST").read_text() == "epoch-0003"
