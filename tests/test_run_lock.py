"""One run per output directory, with real concurrent processes.

A first ``structkd train`` is made to pause right after it has taken ``OUT``'s lock (a wrapper
holds it before its first read until the test lets it go), so the second process surely starts
while the first one runs. docs/reliability.md lists the cases.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from structkd.io.files import host_name
from structkd.train.lock import LOCK_NAME, RunLock, RunLockedError

ROOT = Path(__file__).parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "pipeline"
TINY = [
    "model.encoder.word_dim=8",
    "model.encoder.char_dim=4",
    "model.encoder.char_filters=6",
    "model.encoder.lstm_hidden=6",
    "train.batch_size=8",
    "train.progress=false",
    "data.test=",
]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}

# Runs the CLI; once the run holds its lock, creates READY and waits until GO exists.
PAUSING = """
import importlib, sys, time
from pathlib import Path
run_module = importlib.import_module("structkd.train.run")
ready, go = Path(sys.argv[1]), Path(sys.argv[2])
real = run_module._run
def paused(*args, **kwargs):
    ready.touch()
    while not go.exists():
        time.sleep(0.05)
    return real(*args, **kwargs)
run_module._run = paused
from structkd.cli import main
sys.exit(main(sys.argv[3:]))
"""


def train_args(out: Path, seed: int) -> list[str]:
    sets = [a for s in TINY for a in ("--set", s)]
    config = str(ROOT / "configs" / "ner" / "teacher-maxent.yaml")
    data = [f"--train={FIXTURES / 'train.conll'}", f"--dev={FIXTURES / 'dev.conll'}"]
    return ["train", config, *data, f"--out={out}", "--max-epochs=1", f"--seed={seed}", *sets]


def start_paused(tmp_path: Path, out: Path, seed: int) -> tuple[subprocess.Popen[str], Path]:
    ready, go = tmp_path / "ready", tmp_path / "go"
    first = subprocess.Popen(
        [sys.executable, "-c", PAUSING, str(ready), str(go), *train_args(out, seed)],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not ready.exists():
        assert first.poll() is None, first.communicate()
        assert time.monotonic() < deadline, "the first run never took its lock"
        time.sleep(0.05)
    return first, go


def structkd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "structkd", *args],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_second_run_on_the_same_out_exits_2_naming_the_holder(tmp_path: Path) -> None:
    """Seeds 1 and 2 on one ``--out`` at once: the second exits 2 with one line naming the
    first's process id and host and writes nothing; the first finishes with its own results;
    the lock file is gone afterwards."""
    out = tmp_path / "out"
    first, go = start_paused(tmp_path, out, seed=1)
    try:
        second = structkd(*train_args(out, seed=2))
        assert second.returncode == 2, second.stderr
        assert second.stderr.count("\n") == 1, second.stderr
        assert f"process {first.pid} on {host_name()}" in second.stderr
        assert second.stderr.startswith(f"error: {out} is in use by"), second.stderr
        assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]
    finally:
        go.touch()
        stdout, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "checkpoints",
        "metrics.json",
        "model",
        "train_log.jsonl",
    ]
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    metrics = json.loads((out / "metrics.json").read_text())
    assert f"F1 {metrics['dev']['f1']:.2f} " in stdout  # it printed its own dev F1 (percent)
    assert log[-1]["dev_f1"] == metrics["dev"]["f1"]
    again = structkd(*train_args(out, seed=2))  # finished, not locked: the old refusal
    assert again.returncode == 2 and "already holds a run" in again.stderr, again.stderr


def test_the_stale_lock_of_a_killed_run_is_taken_over(tmp_path: Path) -> None:
    """A run SIGKILLed while holding the lock leaves the lock file; the next run (``--resume``
    starts it over, as nothing was checkpointed) says it takes the stale lock over, finishes,
    and removes the lock file."""
    out = tmp_path / "out"
    first, _ = start_paused(tmp_path, out, seed=1)
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=60)
    holder = json.loads((out / LOCK_NAME).read_text())
    assert holder["pid"] == first.pid and holder["host"] == host_name()
    second = structkd(*train_args(out, seed=1), "--resume")
    assert second.returncode == 0, second.stderr
    assert f"taking over the stale lock of process {first.pid} on {host_name()}" in second.stderr
    assert not (out / LOCK_NAME).exists() and (out / "metrics.json").is_file()


def test_lock_in_process(tmp_path: Path) -> None:
    """The lock is exclusive even within one process (two opens are two locks), released on an
    exception, and a run that wrote nothing leaves no directory, not even the parents it made."""
    out = tmp_path / "a" / "b" / "out"
    with RunLock(out):
        assert (out / LOCK_NAME).is_file()
        with pytest.raises(RunLockedError, match=f"process {os.getpid()} on {host_name()}"):
            RunLock(out).acquire()
    assert not (tmp_path / "a").exists()
    with pytest.raises(ZeroDivisionError), RunLock(out):
        (out / "kept.txt").write_text("x")
        raise ZeroDivisionError
    assert sorted(p.name for p in out.iterdir()) == ["kept.txt"]
    with RunLock(out):  # free again
        pass


def test_an_out_that_is_a_file_is_one_error_line_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from structkd.cli import main

    out = tmp_path / "out"
    out.write_text("a file\n")
    capsys.readouterr()
    assert main(train_args(out, seed=1)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"'{out}'" in err and "File exists" in err, err
    assert out.read_text() == "a file\n"
