"""Files structkd writes follow the user's umask (0644 files, 0755 directories under umask 022),
although every one of them is written atomically through a temporary file."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from structkd.cli import main

ROOT = Path(__file__).parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "pipeline"
TINY = [
    "model.encoder.word_dim=8",
    "model.encoder.char_filters=0",
    "model.encoder.lstm_hidden=6",
    "train.batch_size=8",
    "train.progress=false",
]


@pytest.fixture
def umask_022() -> Iterator[None]:
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


@pytest.mark.usefixtures("umask_022")
def test_every_file_written_has_the_umask_mode(tmp_path: Path) -> None:
    data = [f"--{n}={FIXTURES / f'{n}.conll'}" for n in ("train", "dev", "test")]
    sets = [a for s in TINY for a in ("--set", s)]
    teacher, student = tmp_path / "teacher", tmp_path / "student"
    config = str(ROOT / "configs/ner/teacher-crf.yaml")
    assert main(["train", config, *data, *sets, f"--out={teacher}", "--max-epochs=1"]) == 0
    distill = ["distill", str(ROOT / "configs/ner/case2a.yaml"), *data, *sets]
    distill += [f"--teacher={teacher / 'model'}", f"--unlabeled={FIXTURES / 'unlabeled.txt'}"]
    assert main([*distill, f"--out={student}", "--max-epochs=1"]) == 0
    model = str(student / "model")
    predicted = tmp_path / "predicted.conll"
    assert main(["predict", model, str(FIXTURES / "test.conll"), f"--output={predicted}"]) == 0
    assert main(["export", model, "--format=torchscript", f"--out={tmp_path / 'ts'}"]) == 0
    text = str(FIXTURES / "unlabeled.txt")
    assert main(["annotate", model, text, f"--out={tmp_path / 'm'}"]) == 0
    assert (student / "cache").is_dir() and predicted.is_file()
    modes = {}
    for path in tmp_path.rglob("*"):  # tmp_path itself is made by pytest
        modes[str(path.relative_to(tmp_path))] = stat.S_IMODE(path.stat().st_mode)
    wrong = {
        name: oct(mode)
        for name, mode in modes.items()
        if mode != (0o755 if (tmp_path / name).is_dir() else 0o644)
    }
    assert len(modes) > 20 and not wrong, wrong
