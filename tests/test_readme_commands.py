"""Every command block of the README and docs/*.md runs as written (part of ``make test``).

A fenced block is a command block when its info string is ``bash`` or ``sh``. The line right above
its opening fence may mark it:

- ``<!-- not-run: WHY -->``: illustrative (placeholders such as ``my-bert-ner/``, the network,
  hours of training, what CI itself runs); never run;
- ``<!-- needs: ../shared/data -->``: runs only where the shared data sits beside the project.

All other command blocks run, in order, with ``bash -euo pipefail``, in one fresh directory per
Markdown file, so a block may use what an earlier block of its file made. ``.venv/bin/activate``
and ``.venv/bin/structkd`` exist there, as after ``make install``, and ``structkd`` on the PATH is
this checkout's, which trains every model for one epoch at a small size (``--max-epochs 1`` and
``--set`` of the encoder and parser sizes appended), so that the whole file costs seconds: the
commands, config names, files and ``resource:`` names are what is tested, not the scores. A block
of commands in a fence without an info string fails the test: it must say what it is.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from shared_data import shared_data_root

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```([\w-]*)\n(.*?)^```$", re.S | re.M)
MARK = re.compile(r"<!--\s*(not-run|needs):?\s*(.*?)\s*-->\s*$")
COMMAND = re.compile(r"^(structkd|make|pip|python|torchrun|setsid|awk|\.) ", re.M)
SMALL = [
    "model.encoder.word_dim=16",
    "model.encoder.char_filters=8",
    "model.encoder.lstm_hidden=16",
    "model.encoder.lstm_layers=1",
    "model.parser.arc_dim=32",
    "model.parser.rel_dim=16",
    "model.parser.sib_dim=16",
    "train.batch_size=64",
]
SHIM = f"""#!{sys.executable}
import sys
from structkd.cli import main
args = sys.argv[1:]
if args[:1] in (["train"], ["distill"]):
    args += ["--max-epochs", "1", *[a for s in {SMALL!r} for a in ("--set", s)]]
sys.exit(main(args))
"""


def blocks(path: Path) -> list[tuple[int, str, str, str]]:
    """``(line, info string, mark, body)`` of every fenced block of ``path``."""
    text = path.read_text(encoding="utf-8")
    found = []
    for match in FENCE.finditer(text):
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        mark = MARK.search(before)
        line = text[: match.start()].count("\n") + 1
        found.append((line, match[1], mark[1] if mark else "", match[2]))
    return found


def _workdir(tmp: Path) -> Path:
    """A directory laid out like a clone after ``make install``, with the shared data beside it
    when this machine has it."""
    work = tmp / "project"
    bin_dir = work / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    shim = bin_dir / "structkd"
    shim.write_text(SHIM, encoding="utf-8")
    shim.chmod(0o755)
    (bin_dir / "activate").write_text(f'export PATH="{bin_dir}:$PATH"\n', encoding="utf-8")
    shared = shared_data_root()
    if shared is not None:
        (tmp / "shared").mkdir()
        (tmp / "shared" / "data").symlink_to(shared)
    return work


@pytest.mark.parametrize("doc", DOCS, ids=[p.name for p in DOCS])
def test_command_blocks_run_as_written(doc: Path, tmp_path: Path) -> None:
    runnable = []
    for line, info, mark, body in blocks(doc):
        where = f"{doc.relative_to(ROOT)}:{line}"
        if not info and COMMAND.search(body):
            pytest.fail(f"{where}: a command block needs ```bash (runnable) or a not-run mark")
        if info in ("bash", "sh") and mark != "not-run":
            runnable.append((where, mark, body))
    if not runnable:
        pytest.skip(f"{doc.name} has no runnable command block")
    work = _workdir(tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env["PATH"] = f"{work / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    for where, mark, body in runnable:
        if mark == "needs" and not (tmp_path / "shared" / "data").exists():
            continue  # the shared data is not on this machine
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", body],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, f"{where} failed:\n{body}\n{done.stderr[-3000:]}"


def test_the_marks_are_understood(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(
        "<!-- not-run: placeholders -->\n```bash\nstructkd x\n```\n\n"
        "<!-- needs: ../shared/data -->\n```bash\nstructkd y\n```\n\n```sh\nstructkd z\n```\n",
        encoding="utf-8",
    )
    assert [(info, mark, body) for _, info, mark, body in blocks(doc)] == [
        ("bash", "not-run", "structkd x\n"),
        ("bash", "needs", "structkd y\n"),
        ("sh", "", "structkd z\n"),
    ]
