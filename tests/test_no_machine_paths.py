"""Committed results, docs and configs name files relative to a data root or the project, never
by the absolute path of the machine that wrote them, so that their commands run anywhere."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECKED = ("README.md", "docs", "results", "configs", "benchmarks")
TEXT = {".md", ".json", ".jsonl", ".yaml", ".yml", ".txt", ".csv", ".tsv"}
# /work/..., /home/..., /root/..., /Users/..., /tmp/..., /mnt/... at the start of a path
MACHINE_PATH = re.compile(r"(?<![\w.~-])/(?:work|home|root|Users|tmp|mnt|scratch)/")


def _committed() -> list[Path]:
    try:
        listed = subprocess.run(
            ["git", "ls-files", "--", *CHECKED], cwd=ROOT, capture_output=True, text=True
        )
    except OSError:
        listed = None
    if listed is None or listed.returncode != 0:  # not a git checkout (an unpacked sdist)
        pytest.skip("needs a git checkout to list the committed files")
    return [ROOT / name for name in listed.stdout.splitlines() if Path(name).suffix in TEXT]


def test_no_committed_result_or_doc_names_an_absolute_machine_path() -> None:
    files = _committed()
    assert any(f.match("results/*/*/run.json") for f in files)
    found = []
    for path in files:
        if not path.exists():  # deleted in the work tree, not yet committed
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if MACHINE_PATH.search(line):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:120]}")
    assert not found, "\n".join(found[:20])


@pytest.mark.parametrize(
    ("text", "bad"),
    [
        ("--test /work/shared/data/x.txt", True),
        ('"/home/me/runs/model"', True),
        ("--test ../shared/data/x.txt", False),
        ("runs/experiments/work/home/x", False),
        ("predict --output /dev/null", False),
    ],
)
def test_the_pattern_tells_machine_paths_from_relative_ones(text: str, bad: bool) -> None:
    assert bool(MACHINE_PATH.search(text)) is bad
