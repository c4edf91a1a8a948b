"""Diverged training and broken teachers (issue 18): a loss that explodes is reported, a step
that leaves non-finite weights stops the run with one line, and a teacher whose outputs are no
probabilities is refused before anything is cached, naming the teacher and the sentence."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from structkd.cli import main
from structkd.config import load_config
from structkd.kd.methods import get_method
from structkd.train import loop
from structkd.train.run import run

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "pipeline"
CONFIGS = ROOT / "configs" / "ner"
TINY = [
    "model.encoder.word_dim=8",
    "model.encoder.char_dim=4",
    "model.encoder.char_filters=6",
    "model.encoder.lstm_hidden=6",
    "train.batch_size=8",
    "train.progress=false",
    "data.dev=",
    "data.test=",
]
SETS = [a for s in TINY for a in ("--set", s)]
TRAIN = f"--train={FIXTURES / 'train.conll'}"


@pytest.fixture(scope="module")
def diverged_teacher(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A CRF teacher trained at lr = 1e6 (two epochs), and the warnings its run gave."""
    out = tmp_path_factory.mktemp("diverged") / "teacher"
    values = {"data.train": [str(FIXTURES / "train.conll")], "out": str(out)}
    config = load_config(
        CONFIGS / "teacher-crf.yaml", [*TINY, "train.lr=1e6", "train.max_epochs=2"], values
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run(config)
    return out / "model", [str(w.message) for w in caught]


def test_an_exploding_loss_warns(diverged_teacher: tuple[Path, list[str]]) -> None:
    _, messages = diverged_teacher
    exploded = [m for m in messages if "training has diverged" in m]
    assert len(exploded) == 2, messages  # one per epoch
    assert exploded[0].count("\n") == 0 and "epoch 1's mean training loss" in exploded[0]
    assert "times max(1, the first step's 29." in exploded[0] and "lower train.lr" in exploded[0]


def test_a_healthy_run_does_not_warn(tmp_path: Path) -> None:
    values = {"data.train": [str(FIXTURES / "train.conll")], "out": str(tmp_path / "ok")}
    config = load_config(CONFIGS / "teacher-maxent.yaml", [*TINY, "train.max_epochs=2"], values)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*training has diverged")
        run(config)


def test_non_finite_weights_stop_the_run_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A step that leaves a NaN weight (the forward would then raise ``ValueError: emissions
    contains NaN`` inside the CRF) is a TrainingError: exit 1, one line naming the weight."""
    real = loop.make_optimizer
    steps = []

    def poisoning(model: torch.nn.Module, config: Any) -> torch.optim.Optimizer:
        optimizer = real(model, config)
        step = optimizer.step

        def poisoned_step(*args: Any, **kwargs: Any) -> Any:
            result = step(*args, **kwargs)
            steps.append(1)
            if len(steps) == 2:
                with torch.no_grad():
                    next(model.parameters()).fill_(float("nan"))
            return result

        optimizer.step = poisoned_step  # type: ignore[method-assign]
        return optimizer

    monkeypatch.setattr(loop, "make_optimizer", poisoning)
    out = tmp_path / "out"
    status = main(["train", str(CONFIGS / "teacher-crf.yaml"), TRAIN, f"--out={out}", *SETS])
    err = capsys.readouterr().err
    assert status == 1, err
    assert err.startswith("error: non-finite weights (") and err.count("\n") == 1, err
    assert "after epoch 1, step 2; try a lower train.lr" in err and "Traceback" not in err


def _scaled(t: torch.Tensor) -> torch.Tensor:
    return t * 6.2e27  # what the diverged teacher cached


def _nan(t: torch.Tensor) -> torch.Tensor:
    return t * float("nan")


def _heavy(t: torch.Tensor) -> torch.Tensor:
    return t * 0.5 + 0.5  # every value in [0.5, 1]: each token's mass is above 1


@pytest.mark.parametrize(
    ("method", "damage", "problem"),
    [
        ("structural", _scaled, "values from 0 to 6.2e+27, outside [0, 1]"),
        ("structural", _nan, "NaN or infinite values"),
        ("token", _scaled, "outside [0, 1]"),
        ("posterior", _heavy, "a distribution of total mass"),
    ],
)
def test_a_teacher_whose_outputs_are_no_probabilities_is_refused(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    diverged_teacher: tuple[Path, list[str]],
    method: str,
    damage: Any,
    problem: str,
) -> None:
    """The teacher's projected marginals (structural) or targets (token, posterior) of one
    training sentence are damaged: exit 2, one line naming the teacher directory, the sentence
    and the problem; the student is never trained and no cache is written."""
    teacher, _ = diverged_teacher
    kind = type(get_method(method))
    real = kind.targets
    block = FIXTURES.joinpath("train.conll").read_text(encoding="utf-8").split("\n\n")[2]
    victim = [line.split(" ")[0] for line in block.strip("\n").split("\n")]

    def broken(self: Any, *args: Any) -> list[torch.Tensor]:
        tensors = real(self, *args)
        words = args[2]  # targets(pair, source, words, config)
        for b, sentence in enumerate(words):
            if list(sentence) == victim:
                for t in tensors:
                    t[b] = damage(t[b])
        return tensors

    monkeypatch.setattr(kind, "targets", broken)
    out = tmp_path / "student"
    argv = ["distill", str(CONFIGS / "case2a.yaml"), TRAIN, f"--teacher={teacher}"]
    argv += [f"--out={out}", f"--method={method}", "--set", "data.unlabeled=[]", *SETS]
    status = main(argv)
    err = capsys.readouterr().err
    assert status == 2, err
    assert err.startswith(f"error: teacher {teacher}: its outputs on training sentence ")
    assert f"({' '.join(victim[:8])!r}) are not probabilities (" in err and problem in err, err
    assert "the teacher has probably diverged" in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not list(out.glob("cache/*.safetensors")) and not (out / "model").exists()


def test_a_loss_that_starts_near_zero_may_grow_without_a_warning(tmp_path: Path) -> None:
    """A KD loss near 0 at the first step (a sub-structure MSE of 2e-4) that becomes the gold
    NLL under teacher annealing (86) is healthy: the threshold is 1e3 x max(first step, 1)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loop._warn_if_exploded(1, 86.0, 2.4e-4, tmp_path)
        loop._warn_if_exploded(1, 999.0, 0.5, tmp_path)
    with pytest.warns(
        UserWarning,
        match=r"epoch 2's mean training loss 1\.5e\+04 is 1\.5e\+04 times max\(1, the first "
        r"step's 0\.5\)",
    ):
        loop._warn_if_exploded(2, 1.5e4, 0.5, tmp_path)
