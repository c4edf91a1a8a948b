"""Malformed inputs: each is parsed as documented or raises DataError at the right line; fuzzing."""

from __future__ import annotations

import os
import pickle
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from structkd.data.conll import (
    Sentence,
    read_conll,
    read_ner,
    read_text,
    read_wikiann,
)
from structkd.data.errors import DataError

MALFORMED = Path(__file__).parent / "fixtures" / "malformed"
Reader = Callable[[Path], list[Sentence]]


def test_data_error_formatting() -> None:
    located = DataError(Path("a/b.txt"), "bad tag", 7)
    assert str(located) == "a/b.txt:7: bad tag"
    assert (located.path, located.line, located.message) == ("a/b.txt", 7, "bad tag")
    assert str(DataError("c.txt", "the file is empty")) == "c.txt: the file is empty"
    assert isinstance(located, ValueError)
    copy = pickle.loads(pickle.dumps(located))
    assert (str(copy), copy.line) == (str(located), 7)


# (fixture, reader, line of the error or None, message fragment)
ERRORS = [
    ("empty.txt", read_conll, None, "the file is empty"),
    ("empty.txt", read_text, None, "the file is empty"),
    ("empty.txt", read_wikiann, None, "the file is empty"),
    ("empty.txt", read_ner, None, "the file is empty"),
    ("blank_only.txt", read_conll, None, "no sentences"),
    ("blank_only.txt", read_text, None, "no sentences"),
    ("blank_only.txt", read_wikiann, None, "no sentences"),
    ("docstart_only.txt", read_ner, None, "no sentences"),
    ("wrong_columns.txt", read_conll, 5, "expected 3 columns as on line 1, found 2"),
    ("wrong_columns.txt", read_ner, 5, "expected 3 columns as on line 1, found 2"),
    ("tag_no_type.txt", read_conll, 3, "malformed tag 'I-': no entity type"),
    ("tag_no_type.txt", read_ner, 3, "malformed tag 'I-'"),
    ("tag_bad_prefix.txt", read_ner, 2, "malformed tag 'X-LOC': unknown prefix 'X'"),
    ("wikiann_bad_index.tsv", read_ner, 3, "token index 3 out of sequence: expected 2"),
    ("wikiann_spaces.tsv", read_ner, 2, "found 1 tab-separated fields"),
    ("wrong_columns.txt", read_wikiann, 1, "found 1 tab-separated fields"),
]


@pytest.mark.parametrize("name, reader, line, message", ERRORS)
def test_error_matrix(name: str, reader: Reader, line: int | None, message: str) -> None:
    path = MALFORMED / name
    with pytest.raises(DataError) as info:
        reader(path)
    error = info.value
    assert error.line == line
    assert message in error.message
    assert error.path == str(path)
    assert str(error).startswith(f"{path}:{line}: " if line else f"{path}: ")


def test_latin1_fallback() -> None:
    sentences = read_ner(MALFORMED / "latin1.txt")
    assert [s.tokens for s in sentences] == [["Málaga", "es"], ["Saúl"]]
    assert [s.tags for s in sentences] == [["B-LOC", "O"], ["B-PER"]]


def test_bom_and_crlf() -> None:
    sentences = read_ner(MALFORMED / "bom_crlf.txt")
    assert [s.tokens for s in sentences] == [["Málaga", "es"], ["Berlin"]]
    assert [s.tags for s in sentences] == [["B-LOC", "O"], ["B-LOC"]]
    assert [s.line for s in sentences] == [1, 4]


def test_tabs_and_spaces_mixed() -> None:
    (sentence,) = read_ner(MALFORMED / "tabs_spaces.txt")
    assert sentence.tokens == ["EU", "rejects"]
    assert sentence.columns == [["NNP", "VBZ"]] and sentence.tags == ["B-ORG", "O"]


def test_sentence_sizes(tmp_path: Path) -> None:
    one = tmp_path / "one.txt"
    one.write_text("Paris B-LOC\n")
    assert read_conll(one) == [Sentence(["Paris"], ["B-LOC"])]
    long = tmp_path / "long.txt"
    long.write_text("".join(f"w{i} O\n" for i in range(5000)) + "\nend O\n")
    sentences = read_ner(long)
    assert [len(s) for s in sentences] == [5000, 1]
    assert sentences[1].line == 5002


def test_unreadable_paths(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cannot open") as info:
        read_conll(tmp_path / "missing.txt")
    assert info.value.line is None
    with pytest.raises(DataError, match="cannot open"):
        read_ner(tmp_path)


def test_encodings(tmp_path: Path) -> None:
    path = tmp_path / "f.txt"
    path.write_bytes("a O\n\nb O\n\nMálaga B-LOC\n".encode())
    with pytest.raises(DataError, match="not valid ascii") as info:
        read_conll(path, encoding="ascii")
    assert info.value.line == 5
    assert read_conll(path, encoding="latin-1")[2].tokens == ["MÃ¡laga"]
    with pytest.raises(DataError, match="unknown encoding 'klingon'"):
        read_ner(path, encoding="klingon")
    utf16 = tmp_path / "u16.txt"
    utf16.write_bytes("a O\n".encode("utf-16"))
    with pytest.raises(DataError, match="UTF-16 is not supported") as info:
        read_ner(utf16)
    assert info.value.line == 1


NEAR_VALID = st.lists(
    st.sampled_from(
        [
            b"0",
            b"1",
            b"2",
            b"x",
            b"O",
            b"B-PER",
            b"I-",
            b"X-PER",
            b"-DOCSTART-",
            b" ",
            b"\t",
            b"\n",
            b"\r\n",
            b"\n\n",
            b"\xef\xbb\xbf",
            b"\xff\xfe",
            "é".encode(),
            b"\xe9",
            b"\x00",
            "\u2028".encode(),
            b"\x85",
        ]
    ),
    max_size=40,
).map(b"".join)
RAW = st.one_of(st.binary(max_size=200), NEAR_VALID)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(RAW)
def test_fuzz_readers_only_parse_or_raise_data_error(data: bytes) -> None:
    fd, name = tempfile.mkstemp(suffix=".txt")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        for reader in (read_conll, read_wikiann, read_text, read_ner):
            try:
                sentences = reader(Path(name))
            except DataError as e:
                assert e.path == name and (e.line is None or e.line >= 1)
            else:
                assert sentences and all(isinstance(s, Sentence) and s.tokens for s in sentences)
    finally:
        os.unlink(name)


def test_huge_wikiann_index(tmp_path: Path) -> None:
    path = tmp_path / "w.tsv"
    path.write_text("0\ta\tO\n" + "9" * 5000 + "\tb\tO\n")
    with pytest.raises(DataError, match="is not a number up to 999999999") as info:
        read_wikiann(path)
    assert info.value.line == 2
