"""Config values out of range, duplicate YAML keys and escaping resource names: one ``error:``
line naming the key and its allowed range, exit status 2, and nothing written (no OUT, no
OUT/cache), whether the value comes from the config file or from ``--set``.

Every case runs through ``cli.main`` in-process with the fixture corpus; none gets as far as
reading data, so the file takes well under a second.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from structkd.cli import main
from structkd.config import RANGES, ConfigError, RunConfig, load_config
from structkd.lab.experiment import load_experiment
from structkd.train.run import run

ROOT = Path(__file__).parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "pipeline"

# (dotted key, YAML value, start of the message after "error: ")
CASES = [
    ("train.batch_size", "0", "train.batch_size: 0 is out of range (allowed: an integer >= 1)"),
    ("train.batch_size", "-1", "train.batch_size: -1 is out of range (allowed: an integer >= 1)"),
    (
        "train.lr",
        ".nan",
        "train.lr: nan is out of range (allowed: a finite number >= 0 and <= 1e+06)",
    ),
    ("train.lr", "-1", "train.lr: -1.0 is out of range (allowed: a finite number >= 0 and"),
    ("train.lr", ".inf", "train.lr: inf is out of range (allowed: a finite number >= 0 and"),
    ("train.lr", "2e6", "train.lr: 2000000.0 is out of range (allowed: a finite number >= 0 and"),
    ("train.weight_decay", "-1", "train.weight_decay: -1.0 is out of range (allowed: a finite"),
    ("model.encoder.dropout", "1.5", "model.encoder.dropout: 1.5 is out of range (allowed: a "),
    ("model.encoder.word_dim", "-5", "model.encoder.word_dim: -5 is out of range (allowed: an "),
    ("model.encoder.char_filters", "-1", "model.encoder.char_filters: -1 is out of range"),
    ("model.encoder.lstm_layers", "0", "model.encoder.lstm_layers: 0 is out of range"),
    ("train.seed", "100000000000000000000", "train.seed: 100000000000000000000 is out of range"),
    ("train.seed", "1e20", "train.seed: expected int, got '1e20'"),
    ("train.max_epochs", "0", "train.max_epochs: 0 is out of range (allowed: an integer >= 1)"),
    ("distill.k", "0", "distill.k: 0 is out of range (allowed: an integer >= 1)"),
    ("distill.temperature", "0", "distill.temperature: 0.0 is out of range (allowed: a finite"),
    ("distill.temperature", "-1", "distill.temperature: -1.0 is out of range"),
    ("distill.temperature", ".nan", "distill.temperature: nan is out of range"),
    ("data.train", "[1, 2]", "data.train[0]: expected str, got 1"),
    ("data.train", "resource:../cli.py", "data.train: 'resource:../cli.py': a resource name must"),
    ("data.dev", "resource:/etc/passwd", "data.dev: 'resource:/etc/passwd': a resource name must"),
]


def _yaml(key: str, value: str) -> str:
    """``a.b.c`` = value as nested YAML."""
    *parents, last = key.split(".")
    lines = [f"{'  ' * i}{part}:" for i, part in enumerate(parents)]
    return "\n".join([*lines, f"{'  ' * len(parents)}{last}: {value}"]) + "\n"


def _check(status: int, err: str, expected: str, out: Path) -> None:
    assert status == 2, err
    assert err.startswith(f"error: {expected}") and err.count("\n") == 1, err
    assert "Traceback" not in err
    assert not out.exists()  # neither OUT nor OUT/cache


def _argv(command: str, config: Path, out: Path, *extra: str) -> list[str]:
    argv = [command, str(config), f"--train={FIXTURES / 'train.conll'}", f"--out={out}"]
    if command == "distill":
        argv.append("--method=none")
    return [*argv, "--no-progress", *extra]


@pytest.mark.parametrize(("key", "value", "expected"), CASES)
def test_out_of_range_in_the_config_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], key: str, value: str, expected: str
) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(_yaml(key, value), encoding="utf-8")
    argv = _argv("distill" if key.startswith("distill") else "train", config, tmp_path / "out")
    if key.startswith("data."):  # --train would replace the file's value
        argv = [a for a in argv if not a.startswith("--train=")]
    _check(main(argv), capsys.readouterr().err, expected, tmp_path / "out")


@pytest.mark.parametrize(("key", "value", "expected"), CASES)
def test_out_of_range_through_set(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], key: str, value: str, expected: str
) -> None:
    config = tmp_path / "ok.yaml"
    config.write_text("train: {max_epochs: 1}\n", encoding="utf-8")
    argv = _argv("distill", config, tmp_path / "out", "--set", f"{key}={value}")
    if key.startswith("data."):
        argv = [a for a in argv if not a.startswith("--train=")]
    _check(main(argv), capsys.readouterr().err, expected, tmp_path / "out")


def test_command_line_options_are_range_checked_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "ok.yaml"
    config.write_text("{}\n", encoding="utf-8")
    out = tmp_path / "out"
    _check(
        main(_argv("train", config, out, "--max-epochs=0")),
        capsys.readouterr().err,
        "train.max_epochs: 0 is out of range",
        out,
    )
    _check(
        main(_argv("train", config, out, "--seed=-1")),
        capsys.readouterr().err,
        "train.seed: -1 is out of range (allowed: an integer >= 0 and <= 4294967295)",
        out,
    )


@pytest.mark.parametrize(
    ("text", "line", "key", "first"),
    [
        ("train:\n  lr: 0.1\n  seed: 2\n  lr: 0.2\n", 4, "lr", 2),
        ("train: {lr: 0.1}\nout: x\ntrain: {seed: 3}\n", 3, "train", 1),
        ("model:\n  encoder: {word_dim: 8, word_dim: 9}\n", 2, "word_dim", 2),
    ],
)
def test_a_duplicate_key_is_named_with_its_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    text: str,
    line: int,
    key: str,
    first: int,
) -> None:
    config = tmp_path / "dup.yaml"
    config.write_text(text, encoding="utf-8")
    expected = f"{config}:{line}: not valid YAML: duplicate key '{key}' (first on line {first})"
    _check(
        main(_argv("train", config, tmp_path / "out")),
        capsys.readouterr().err,
        expected,
        tmp_path / "out",
    )


def test_a_merge_key_may_still_be_overridden(tmp_path: Path) -> None:
    """``<<: *defaults`` then the same key is YAML's way to override, not a duplicate."""
    config = tmp_path / "merge.yaml"
    config.write_text(
        "defaults: &tiny {lr: 0.1, seed: 4}\ntrain:\n  <<: *tiny\n  lr: 0.2\n", encoding="utf-8"
    )
    with pytest.raises(ConfigError, match="unknown key defaults"):  # the merge itself is fine
        load_config(config)


@pytest.mark.parametrize("device", ["gpu", "cuda:99" if torch.cuda.is_available() else "cuda"])
def test_a_device_in_the_config_file_is_checked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], device: str
) -> None:
    config = tmp_path / "dev.yaml"
    config.write_text(f"train: {{device: '{device}'}}\n", encoding="utf-8")
    out = tmp_path / "out"
    status = main(_argv("train", config, out))
    _check(status, capsys.readouterr().err, f"device '{device}'", out)


def test_run_checks_a_config_built_in_python(tmp_path: Path) -> None:
    """The Python API (``structkd.train.run.run``) applies the same ranges as ``load_config``."""
    config = RunConfig(out=str(tmp_path / "out"))
    config.data.train = [str(FIXTURES / "train.conll")]
    config.train.batch_size = 0
    with pytest.raises(ConfigError, match=r"^train\.batch_size: 0 is out of range"):
        run(config)
    assert not (tmp_path / "out").exists()


def test_every_range_names_a_real_key_and_admits_its_default() -> None:
    default: object = RunConfig()
    for key, allowed in RANGES.items():
        value = default
        for part in key.split("."):
            value = getattr(value, part)  # AttributeError for a misspelt key
        assert value is None or allowed.admits(value), key  # type: ignore[arg-type]


def test_an_experiment_file_with_a_duplicate_method_is_refused(tmp_path: Path) -> None:
    """An experiment grid's duplicate entry (configs/experiments/conll03-minilm.yaml had two
    identical copies of two methods) is refused like a run config's."""
    spec = tmp_path / "grid.yaml"
    spec.write_text(
        "students:\n  s:\n    config: c.yaml\n    methods:\n      a: none\n      a: token\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match=rf"^{spec}:6: not valid YAML: duplicate key 'a'"):
        load_experiment(spec)


@pytest.mark.parametrize(
    "argv",
    [
        ["annotate", "MODEL", "TEXT", "--out=X", "--batch-size=0"],
        ["experiment", "SPEC", "--jobs=0"],
        ["speed", "SPEC", "--threads=-1"],
        ["speed", "SPEC", "--batch-size=0"],
        ["speed", "SPEC", "--limit=0"],
        ["speed", "SPEC", "--repeats=0"],
    ],
)
def test_counts_on_the_command_line_must_be_positive(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stop:
        main(argv)
    err = capsys.readouterr().err
    option = argv[-1].split("=")[0]
    assert stop.value.code == 2
    assert err.startswith(f"error: argument {option}: expected an integer >= 1, got ")
    assert err.count("\n") == 1
