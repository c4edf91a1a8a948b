"""Bad and unusual input files the reader tests do not already cover.

The reader matrices live in tests/test_data_errors.py (NER) and tests/test_dep_readers.py
(treebanks); docs/reliability.md lists every case and the test that covers it. This file holds
the remaining ones: blank-only, space-separated, one-word and 5,000-word treebank files, and a
NER corpus that mixes tag schemes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from structkd.data.conll import read_ner
from structkd.data.conllu import read_dep
from structkd.data.errors import DataError
from structkd.data.trees import is_tree
from structkd.structures.tags import detect_scheme, to_spans


def _conllu_row(i: int, word: str, head: int) -> str:
    return f"{i}\t{word}\t{word.lower()}\tX\tX\t_\t{head}\tdep\t_\t_"


@pytest.mark.parametrize("fmt", ["conllu", "conllx", "malttab", "auto"])
def test_a_treebank_of_blank_lines_is_an_empty_file(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / "blank.txt"
    path.write_bytes(b"\n\n  \n\t\n\r\n")
    with pytest.raises(DataError, match="empty file") as info:
        read_dep(path, fmt)
    assert info.value.path == str(path) and info.value.line == 1


@pytest.mark.parametrize("fmt", ["conllu", "auto"])
def test_conllu_with_spaces_instead_of_tabs_names_the_line(tmp_path: Path, fmt: str) -> None:
    """CoNLL-U fields are tab-separated (word forms may hold spaces), so spaces are an error."""
    path = tmp_path / "spaces.conllu"
    path.write_text("# text = Dogs bark\n1 Dogs dog NOUN NNS _ 2 nsubj _ _\n2\tbark\n\n")
    with pytest.raises(DataError) as info:
        read_dep(path, fmt)
    assert info.value.line == 2
    assert "expected 10 tab-separated columns, got 1" in info.value.message


def test_one_word_sentences(tmp_path: Path) -> None:
    conllu = tmp_path / "one.conllu"
    conllu.write_text(_conllu_row(1, "Hi", 0) + "\n\n" + _conllu_row(1, "Bye", 0) + "\n")
    assert [(s.words, s.heads) for s in read_dep(conllu)] == [(["Hi"], [0]), (["Bye"], [0])]
    malttab = tmp_path / "one.malttab"
    malttab.write_text("Hi\tUH\t0\n")
    (sentence,) = read_dep(malttab, "malttab")
    assert (sentence.words, sentence.heads) == (["Hi"], [0])
    wrong = tmp_path / "self.conllu"
    wrong.write_text(_conllu_row(1, "Hi", 1) + "\n")
    with pytest.raises(DataError, match="self.conllu:1: "):
        read_dep(wrong)


@pytest.mark.parametrize("fmt", ["conllu", "malttab"])
def test_a_5000_word_sentence(tmp_path: Path, fmt: str) -> None:
    """A chain 1 <- 2 <- ... <- 5000 (word 1 is the root), then a one-word sentence."""
    n = 5000
    if fmt == "conllu":
        rows = [_conllu_row(i, f"w{i}", i - 1) for i in range(1, n + 1)]
        tail = _conllu_row(1, "end", 0)
    else:
        rows = [f"w{i}\tX\t{i - 1}\tdep" for i in range(1, n + 1)]
        tail = "end\tX\t0\tdep"
    path = tmp_path / f"long.{fmt}"
    path.write_text("\n".join(rows) + "\n\n" + tail + "\n")
    long, short = read_dep(path, fmt)
    assert len(long) == n and long.heads == list(range(n)) and is_tree(long.heads)
    assert (short.words, short.line) == (["end"], n + 2)
    # and an error at the end of it still names its line
    path.write_text("\n".join(rows[:-1] + [rows[-1].replace(f"\t{n - 1}\t", f"\t{n + 1}\t")]))
    with pytest.raises(DataError, match=f"long.{fmt}:{n}: head {n + 1} out of range"):
        read_dep(path, fmt)


def test_a_corpus_mixing_tag_schemes_reads_as_the_richest(tmp_path: Path) -> None:
    """BIO and BIOES sentences in one file: the reader validates tags, not schemes; the corpus
    is reported as BIOES, whose decoder reads the BIO sentence's entities unchanged."""
    path = tmp_path / "mixed.txt"
    path.write_text("John B-PER\nSmith I-PER\nsaid O\n\nAnn S-PER\nin O\nNew B-LOC\nYork E-LOC\n")
    bio, bioes = read_ner(path)
    assert detect_scheme([bio.tags, bioes.tags]) == "BIOES"
    assert to_spans(bio.tags, "BIOES") == [(0, 2, "PER")]
    assert to_spans(bioes.tags, "BIOES") == [(0, 1, "PER"), (2, 4, "LOC")]
    with pytest.raises(ValueError, match="tag 'S-PER' is not a BIO tag"):
        to_spans(bioes.tags, "BIO")
