"""What a new user meets first on the command line: ``--version``, help texts that say what each
option does and its default, usage hints, ``--device`` and the w/o-KD baseline run from a KD
config."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pytest
import torch

from structkd.cli import _parser, main
from structkd.config import ConfigError
from structkd.devices import check_device

ROOT = Path(__file__).parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "pipeline"
DATA = [
    f"--train={FIXTURES / 'train.conll'}",
    f"--dev={FIXTURES / 'dev.conll'}",
    f"--test={FIXTURES / 'test.conll'}",
]
TINY = [
    "model.encoder.word_dim=8",
    "model.encoder.char_filters=0",
    "model.encoder.lstm_hidden=6",
    "train.batch_size=8",
    "train.progress=false",
]
TINY_SETS = [a for s in TINY for a in ("--set", s)]


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = _parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_version_is_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    version = re.search(r'^version = "(.+)"$', pyproject, re.M).group(1)  # type: ignore[union-attr]
    assert capsys.readouterr().out.strip() == f"structkd {version}"


@pytest.mark.parametrize(
    ("argv", "hint"),
    [
        (["bogus"], "(see structkd --help)"),
        (["--bogus"], "(see structkd --help)"),
        (["train"], "(see structkd train --help)"),
        (["evaluate", "m", "d", "--format", "xml"], "(see structkd evaluate --help)"),
    ],
)
def test_usage_errors_point_at_the_right_help(
    argv: list[str], hint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.rstrip().endswith(hint), err
    assert "structkd structkd" not in err


def test_every_option_has_a_help_text_and_shows_its_default() -> None:
    for name, sub in _subcommands().items():
        text = sub.format_help()
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help, f"structkd {name} {action.dest}: no help text"
            if action.option_strings and action.default not in (None, False, []):
                shown = f"(default: {action.default})"
                flat = " ".join(text.split())
                assert shown in flat, f"structkd {name} {action.option_strings[0]}: {shown}"
    # A config override says what it replaces, since its default lives in the config.
    train = " ".join(_subcommands()["train"].format_help().split())
    for key in ("train.seed", "train.max_epochs", "data.test", "train.device"):
        assert key in train


def test_device_option_on_every_command_that_runs_a_model() -> None:
    for name in ("train", "distill", "evaluate", "predict", "speed"):
        options = {o for a in _subcommands()[name]._actions for o in a.option_strings}
        assert "--device" in options, name


def test_check_device_accepts_what_exists() -> None:
    assert check_device("cpu") == "cpu"
    if torch.cuda.is_available():
        assert check_device("cuda") == "cuda"
        assert check_device(f"cuda:{torch.cuda.device_count() - 1}").startswith("cuda:")


@pytest.mark.parametrize("name", ["gpu", "cuda:x", "", "tpu"])
def test_check_device_rejects_names_that_are_no_device(name: str) -> None:
    with pytest.raises(ConfigError, match="expected cpu, cuda, cuda:N or mps"):
        check_device(name)


def test_check_device_rejects_a_gpu_past_the_last() -> None:
    with pytest.raises(ConfigError, match="not available"):
        check_device(f"cuda:{torch.cuda.device_count()}")
    if not torch.backends.mps.is_available():
        with pytest.raises(ConfigError, match="not available"):
            check_device("mps")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("command", ["train", "distill", "evaluate", "predict", "speed"])
def test_a_missing_device_is_one_line_exit_2_and_writes_nothing(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    spec = tmp_path / "grid.yaml"
    spec.write_text("teachers: {}\nstudents: {}\n", encoding="utf-8")
    argv = {
        "train": ["train", str(ROOT / "configs/ner/teacher-crf.yaml"), *DATA, f"--out={out}"],
        "distill": [
            "distill",
            str(ROOT / "configs/ner/case2a.yaml"),
            *DATA,
            f"--teacher={tmp_path}",
            f"--out={out}",
        ],
        "evaluate": ["evaluate", str(tmp_path), str(FIXTURES / "test.conll")],
        "predict": [
            "predict",
            str(tmp_path),
            str(FIXTURES / "unlabeled.txt"),
            f"--output={out}",
        ],
        "speed": ["speed", str(spec), f"--results={out}"],
    }[command]
    assert main([*argv, "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert re.fullmatch(r"error: device 'cuda' is not available: [^\n]+\n", err), err
    assert not out.exists()


def test_device_cpu_runs_and_is_recorded(tmp_path: Path) -> None:
    out = tmp_path / "cpu"
    argv = ["train", str(ROOT / "configs/ner/teacher-crf.yaml"), *DATA, *TINY_SETS]
    assert main([*argv, f"--out={out}", "--max-epochs=1", "--device=cpu"]) == 0
    saved = json.loads((out / "model" / "config.json").read_text())
    assert saved["task"] == "ner"
    assert main(["evaluate", str(out / "model"), str(FIXTURES / "test.conll"), "--device=cpu"]) == 0


def test_distill_method_none_ignores_unlabeled_data_with_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The w/o-KD baseline from a KD config that lists unlabeled text (and a teacher that was
    never trained): it trains on the labeled data only and says so."""
    out = tmp_path / "nokd"
    config = str(ROOT / "configs/ner/case2a.yaml")
    with pytest.warns(UserWarning, match="data.unlabeled .* is ignored"):
        code = main(
            [
                "distill",
                config,
                *DATA,
                f"--unlabeled={FIXTURES / 'unlabeled.txt'}",
                "--method=none",
                f"--teacher={tmp_path / 'never-trained'}",
                f"--out={out}",
                "--max-epochs=1",
                *TINY_SETS,
            ]
        )
    assert code == 0, capsys.readouterr().err
    assert (out / "metrics.json").exists() and not (out / "cache").exists()
    # Same data, same seed, plain train: the same model.
    plain = tmp_path / "plain"
    with pytest.warns(UserWarning, match="data.unlabeled .* is ignored"):
        assert main(["train", config, *DATA, f"--out={plain}", "--max-epochs=1", *TINY_SETS]) == 0
    assert (out / "model" / "model.safetensors").read_bytes() == (
        plain / "model" / "model.safetensors"
    ).read_bytes()
