"""Unlabeled corpora at scale (issue 16): globs, exact-duplicate removal, a length filter."""

from __future__ import annotations

from pathlib import Path

import pytest

from structkd.config import load_config
from structkd.data.errors import DataError
from structkd.data.unlabeled import corpus_files, filter_sentences
from structkd.tasks import get_task
from structkd.train.fingerprint import run_fingerprint
from structkd.train.run import _corpora

CONFIG = Path(__file__).parent.parent / "configs" / "ner" / "case1a.yaml"


def _write(path: Path, lines: list[str]) -> str:
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return str(path)


def test_a_glob_is_its_files_sorted_and_a_pattern_without_files_an_error(tmp_path: Path) -> None:
    for name in ("b.txt", "a.txt", "c.md"):
        _write(tmp_path / name, ["x"])
    (tmp_path / "sub").mkdir()
    _write(tmp_path / "sub" / "d.txt", ["y"])
    assert corpus_files(str(tmp_path / "*.txt")) == [str(tmp_path / n) for n in ("a.txt", "b.txt")]
    assert corpus_files(str(tmp_path / "**" / "d.txt")) == [str(tmp_path / "sub" / "d.txt")]
    assert corpus_files(str(tmp_path / "plain.txt")) == [str(tmp_path / "plain.txt")]
    with pytest.raises(DataError, match=r"none\*\.txt: the pattern matches no file"):
        corpus_files(str(tmp_path / "none*.txt"))


def test_duplicates_and_lengths_are_filtered_streaming() -> None:
    sentences = [["a", "b"], ["a", "b"], ["A", "b"], ["a"], ["a", "b", "c", "d"], ["ab"]]
    dropped: dict[str, int] = {}
    seen: set[bytes] = set()
    kept = list(filter_sentences(iter(sentences), list, True, 2, 3, seen, dropped))
    assert kept == [["a", "b"], ["A", "b"]]  # exact: case matters, words not joined
    assert dropped == {"duplicate": 1, "length": 3}
    more = list(filter_sentences([["A", "b"], ["c", "d"]], list, True, seen=seen))
    assert more == [["c", "d"]]  # duplicates across corpora too
    assert list(filter_sentences(sentences, list)) == sentences  # options off: everything


def test_a_run_reads_a_glob_of_unlabeled_files_deduplicated_and_length_filtered(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _write(tmp_path / "u1.txt", ["one two", "three four five six", "one two"])
    _write(tmp_path / "u2.txt", ["one two", "seven", "eight nine"])
    values = {
        "data.train": [],
        "data.unlabeled": [str(tmp_path / "u*.txt")],
        "data.unlabeled_dedup": True,
        "data.unlabeled_min_words": 2,
        "data.unlabeled_max_words": 3,
    }
    config = load_config(CONFIG, [], values)
    sentences, corpus = _corpora(config, get_task("ner"), 1)
    assert [s.tokens for s in sentences] == [["one", "two"], ["eight", "nine"]]
    assert corpus == [0, 0]
    assert "dropped 2 duplicate and 2 too short or too long sentences" in capsys.readouterr().err
    fingerprint = run_fingerprint(config, [])
    assert fingerprint["config"]["data.unlabeled_dedup"] is True
    assert len(fingerprint["data"]["data.unlabeled"]) == 2  # each file's content
    plain = run_fingerprint(load_config(CONFIG, [], {"data.unlabeled": []}), [])
    assert not any(k.startswith("data.unlabeled_") for k in plain["config"])  # old runs resume
