"""What training says on the console: a start-of-run summary and one line per epoch, also when
standard output is a pipe or a file (no progress bars there), and the demo's closing lines."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from structkd.config import DataConfig
from structkd.data.conll import read_conll
from structkd.lab.demo import run_demo
from structkd.lab.experiment import parameter_count

ROOT = Path(__file__).parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "pipeline"
TINY = [
    "model.encoder.word_dim=8",
    "model.encoder.char_filters=0",
    "model.encoder.lstm_hidden=6",
    "train.batch_size=8",
]


def test_training_to_a_pipe_prints_a_summary_and_every_epoch(tmp_path: Path) -> None:
    out = tmp_path / "run"
    config = str(ROOT / "configs/ner/teacher-crf.yaml")
    command = [sys.executable, "-m", "structkd", "train", config]
    command += [f"--train={FIXTURES / 'train.conll'}", f"--dev={FIXTURES / 'dev.conll'}"]
    command += [f"--test={FIXTURES / 'test.conll'}", f"--out={out}", "--max-epochs=2"]
    command += [a for s in TINY for a in ("--set", s)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    sizes = [len(read_conll(FIXTURES / f"{n}.conll")) for n in ("train", "dev", "test")]
    summary = (
        rf"ner: Tagger with {parameter_count(out / 'model'):,} parameters; "
        rf"train {sizes[0]:,} labeled \+ 0 unlabeled sentences, dev {sizes[1]:,}, "
        rf"test {sizes[2]:,}; device cpu; 2 epochs at most; output {re.escape(str(out))}"
    )
    assert re.fullmatch(summary, lines[0]), lines[0]
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    expected = [
        f"epoch {r['epoch']}/2  loss {r['loss']:.4f}  dev f1 {r['dev_f1']:.2f}  "
        f"{r['train_seconds']:.1f} s"
        for r in log
    ]
    assert lines[1:3] == expected
    assert lines[3].startswith("dev: F1 ") and lines[-1] == f"model saved in {out}/model"
    assert "it/s" not in done.stderr  # no progress bar off a terminal


def test_demo_measures_each_model_after_training_and_says_where_they_are(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = DataConfig(
        train=[str(FIXTURES / "train.conll")],
        dev=str(FIXTURES / "dev.conll"),
        test=str(FIXTURES / "test.conll"),
        unlabeled=[str(FIXTURES / "unlabeled.txt")],
    )
    rows = run_demo(tmp_path / "demo", progress=False, max_epochs=1, data=data)
    printed = capsys.readouterr().out
    assert len(rows) == 3
    for row in rows.values():
        assert (Path(row["model"]) / "model.safetensors").is_file()
        assert row["tokens_per_second"] > 0
    # Speed comes after all three trainings, in one pass over the models.
    assert printed.index("== measuring prediction speed") > printed.rindex("== training")
    assert f"models saved in {tmp_path / 'demo'}/ (teacher/model, student/model, " in printed
    assert f"structkd evaluate {tmp_path / 'demo'}/student-kd/model" in printed
