"""Writing outputs safely: ``predict --output`` to regular files, links, devices and pipes; write
errors that name their path; temporaries of killed processes removed, live ones kept.

docs/reliability.md lists each case.
"""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from structkd.cli import main
from structkd.io import files
from structkd.io.files import (
    atomic_write_bytes,
    clean_stale_temporaries,
    host_name,
    output_target,
    temporary_file,
)

ROOT = Path(__file__).parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "pipeline"
TINY = [
    "model.encoder.word_dim=8",
    "model.encoder.char_dim=4",
    "model.encoder.char_filters=6",
    "model.encoder.lstm_hidden=6",
    "train.batch_size=8",
    "train.progress=false",
]
INPUT = str(FIXTURES / "unlabeled.txt")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tagger(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A one-epoch tagger and what ``predict`` writes for INPUT (to a new regular file)."""
    out = tmp_path_factory.mktemp("tagger") / "run"
    sets = [a for s in TINY for a in ("--set", s)]
    config = str(ROOT / "configs" / "ner" / "teacher-maxent.yaml")
    train = ["train", config, f"--train={FIXTURES / 'train.conll'}", "--set", "data.dev="]
    assert main([*train, "--set", "data.test=", f"--out={out}", "--max-epochs=1", *sets]) == 0
    reference = out / "reference.conll"
    assert main(["predict", str(out / "model"), INPUT, "--output", str(reference)]) == 0
    return out / "model", reference.read_text(encoding="utf-8")


def test_output_to_a_symlink_writes_through_it(tmp_path: Path, tagger: tuple[Path, str]) -> None:
    """The link stays a link; its target (existing, or not yet existing) gets the output."""
    model, expected = tagger
    target = tmp_path / "real.conll"
    target.write_text("old\n")
    link = tmp_path / "link.conll"
    link.symlink_to(target)
    assert main(["predict", str(model), INPUT, "--output", str(link)]) == 0
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_text(encoding="utf-8") == expected
    dangling = tmp_path / "dangling.conll"
    dangling.symlink_to(tmp_path / "new.conll")
    assert main(["predict", str(model), INPUT, "--output", str(dangling)]) == 0
    assert dangling.is_symlink() and (tmp_path / "new.conll").read_text() == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "dangling.conll",
        "link.conll",
        "new.conll",
        "real.conll",
    ]  # no temporary left beside them


def test_output_to_a_named_pipe_is_streamed(tmp_path: Path, tagger: tuple[Path, str]) -> None:
    """A fifo gets the output through itself and is still a fifo afterwards (before, the
    temporary file was renamed over it)."""
    model, expected = tagger
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()
    assert main(["predict", str(model), INPUT, "--output", str(fifo)]) == 0
    reader.join(timeout=60)
    assert received == [expected.encode("utf-8")]
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert os.listdir(tmp_path) == ["pipe"]


def test_devices_and_stdout_are_written_in_place(tmp_path: Path, tagger: tuple[Path, str]) -> None:
    """``/dev/null`` is opened, never replaced (it stays a character device); ``-`` and
    ``/dev/stdout`` write to standard output even when it is a regular file the shell opened
    (the output is appended there, the file is not renamed over)."""
    model, expected = tagger
    assert output_target(os.devnull) == (Path(os.devnull), False)
    assert output_target("/dev/stdout")[1] is False
    assert output_target(tmp_path / "new.conll") == (tmp_path / "new.conll", True)
    assert main(["predict", str(model), INPUT, "--output", os.devnull]) == 0
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    for name in ("-", "/dev/stdout"):
        stdout = tmp_path / f"stdout-{name.strip('/-').replace('/', '-') or 'dash'}.txt"
        stdout.write_text("kept\n")
        with open(stdout, "a", encoding="utf-8") as handle:
            done = subprocess.run(
                [sys.executable, "-m", "structkd", "predict", str(model), INPUT, "--output", name],
                stdout=handle,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
                timeout=120,
            )
        assert done.returncode == 0, done.stderr
        assert stdout.read_text(encoding="utf-8") == "kept\n" + expected
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_a_full_device_is_one_error_line_naming_it(
    tagger: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """``/dev/full`` fails every write with ENOSPC: exit 2, one line naming the path."""
    model, _ = tagger
    capsys.readouterr()
    assert main(["predict", str(model), INPUT, "--output", "/dev/full"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "No space left on device: '/dev/full'" in err, err


def test_a_failed_atomic_write_names_the_path_and_leaves_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOSPC at the last moment of a write (``fsync``): the error names the target, not the
    temporary, the previous content stays, and the temporary is gone."""
    target = tmp_path / "model.safetensors"
    target.write_bytes(b"previous")

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", full)
    with pytest.raises(OSError, match=r"No space left on device: '.*model\.safetensors'") as e:
        atomic_write_bytes(target, b"new")
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(target)
    assert os.listdir(tmp_path) == ["model.safetensors"] and target.read_bytes() == b"previous"
    with pytest.raises(FileNotFoundError, match="no-such-dir"):
        temporary_file(tmp_path / "no-such-dir" / "x")


def dead_pid() -> int:
    """The id of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_only_temporaries_of_dead_processes_on_this_host_are_removed(tmp_path: Path) -> None:
    """What a killed writer left is removed, at any depth; what a live process (this one), a
    process of another host or a user wrote stays."""
    dead, host = dead_pid(), host_name()
    (tmp_path / "cache").mkdir()
    stale_file = tmp_path / "cache" / f".marginals-ab.safetensors.1f2e.structkd-{dead}@{host}.tmp"
    stale_dir = tmp_path / f".epoch-0002.77aa.structkd-{dead}@{host}.tmp"
    live = tmp_path / f".train_log.jsonl.0b0b.structkd-{os.getpid()}@{host}.tmp"
    elsewhere = tmp_path / f".metrics.json.0c0c.structkd-{dead}@other-host.tmp"
    foreign = tmp_path / ".notes.tmp"
    stale_file.write_bytes(b"x")
    stale_dir.mkdir()
    (stale_dir / "model.safetensors").write_bytes(b"x")
    for path in (live, elsewhere, foreign):
        path.write_bytes(b"x")
    removed = clean_stale_temporaries(tmp_path)
    assert sorted(removed) == sorted([stale_file, stale_dir])
    assert all(p.exists() for p in (live, elsewhere, foreign))
    assert not stale_file.exists() and not stale_dir.exists()
    own = tmp_path / f".out.conll.0d0d.structkd-{dead}@{host}.tmp"
    other = tmp_path / f".other.conll.0e0e.structkd-{dead}@{host}.tmp"
    own.write_bytes(b"x")
    other.write_bytes(b"x")
    assert clean_stale_temporaries(tmp_path, "out.conll", recursive=False) == [own]
    assert other.exists()
