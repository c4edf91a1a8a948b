"""Treebank readers, writer and punctuation masks on the fixtures under tests/fixtures/dep."""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from structkd.data.conllu import (
    DepSentence,
    detect_format,
    iter_dep,
    read_conllu,
    read_conllx,
    read_dep,
    read_malttab,
    write_conllu,
)
from structkd.data.errors import DataError
from structkd.data.punct import punct_mask
from structkd.data.trees import is_projective, is_tree

from shared_data import shared_file

FIXTURES = Path(__file__).parent / "fixtures" / "dep"
EWT = FIXTURES / "en_ewt-dev-slice.conllu"
WSJ = FIXTURES / "wsj-slice.malttab"
EWT_DEV = "dep/en_ewt/en_ewt-ud-dev.conllu"  # under shared/data, when present


def without_source(sentence: DepSentence) -> DepSentence:
    return dataclasses.replace(sentence, path="", line=0)


def test_ewt_slice_is_read_with_words_heads_and_kept_lines() -> None:
    sentences = read_conllu(EWT)
    assert len(sentences) == 33
    first = sentences[0]
    assert first.words == ["From", "the", "AP", "comes", "this", "story", ":"]
    assert first.tags == ["ADP", "DET", "PROPN", "VERB", "DET", "NOUN", "PUNCT"]
    assert first.xpos == ["IN", "DT", "NNP", "VBZ", "DT", "NN", ":"]
    assert first.heads == [3, 3, 4, 0, 6, 4, 4]
    assert first.rels == ["case", "det", "obl", "root", "det", "nsubj", "punct"]
    assert first.line == 1 and first.path == str(EWT)
    assert first.comments[0].startswith("# newdoc id = weblog-blogspot.com_nominations")
    # Multiword tokens and empty nodes are lines, not words.
    with_range = sentences[6]
    assert any(text.split("\t")[0] == "29-30" for text in with_range.lines or [])
    assert "did" in with_range.words and "n't" in with_range.words
    empty_node = sentences[30]
    assert "8.1\twrite" in "\n".join(empty_node.lines or [])
    assert empty_node.words.count("write") == 1
    assert all(is_tree(s.heads) for s in sentences)
    assert [k for k, s in enumerate(sentences) if not is_projective(s.heads)] == [19, 27, 31]


def test_malttab_slice_has_20_sentences_without_relations() -> None:
    sentences = read_malttab(WSJ)
    assert len(sentences) == 20
    first = sentences[0]
    assert first.words[:4] == ["Pierre", "Vinken", ",", "61"]
    assert first.tags[:4] == ["NNP", "NNP", ",", "CD"]
    assert first.heads[:4] == [2, 8, 2, 5]
    assert first.rels is None and first.fmt == "malttab" and first.comments == []
    assert sentences[1].line == 20
    assert read_dep(WSJ) == sentences


def test_round_trip_keeps_every_line_of_the_input(tmp_path: Path) -> None:
    sentences = read_conllu(EWT)
    out = tmp_path / "out.conllu"
    write_conllu(sentences, [s.heads for s in sentences], [s.rels or [] for s in sentences], out)
    assert out.read_text(encoding="utf-8") == EWT.read_text(encoding="utf-8")
    again = read_conllu(out)
    assert [without_source(s) for s in again] == [without_source(s) for s in sentences]


def test_written_predictions_change_only_head_and_deprel(tmp_path: Path) -> None:
    sentences = read_conllu(EWT)[:8]
    heads = [[0] + [1] * (len(s) - 1) for s in sentences]
    rels = [["root"] + ["dep"] * (len(s) - 1) for s in sentences]
    out = tmp_path / "pred.conllu"
    write_conllu(sentences, heads, rels, out)
    again = read_conllu(out)
    for old, new, h, r in zip(sentences, again, heads, rels):
        assert (new.heads, new.rels) == (h, r)
        assert (new.words, new.tags, new.xpos, new.comments) == (
            old.words, old.tags, old.xpos, old.comments)
        for a, b in zip(old.lines or [], new.lines or []):
            cols_a, cols_b = a.split("\t"), b.split("\t")
            assert cols_a[:6] + cols_a[8:] == cols_b[:6] + cols_b[8:]
    unlabeled = tmp_path / "unlabeled.conllu"
    write_conllu(sentences, heads, None, unlabeled)
    assert all(s.rels is None for s in read_conllu(unlabeled))


def test_malttab_and_conllx_are_written_as_conllu(tmp_path: Path) -> None:
    sentences = read_malttab(WSJ)
    out = tmp_path / "wsj.conllu"
    write_conllu(sentences, [s.heads for s in sentences], None, out)
    again = read_conllu(out)
    assert [(s.words, s.heads, s.xpos) for s in again] == [
        (s.words, s.heads, s.xpos) for s in sentences]
    assert all(set(s.tags) == {"_"} for s in again)  # a PTB tag is no UPOS
    assert [punct_mask(s) for s in again] == [punct_mask(s) for s in sentences]
    conllx = tmp_path / "ewt.conllx"
    ewt = read_conllu(EWT)[:5]
    write_conllu(ewt, [s.heads for s in ewt], [s.rels or [] for s in ewt], conllx)
    as_x = read_conllx(conllx)
    assert [(s.words, s.tags, s.heads, s.rels, s.fmt) for s in as_x] == [
        (s.words, s.tags, s.heads, s.rels, "conllx") for s in ewt]
    back = tmp_path / "back.conllu"
    write_conllu(as_x, [s.heads for s in as_x], [s.rels or [] for s in as_x], back)
    assert all(text.split("\t")[8:] == ["_", "_"]
               for s in read_conllu(back) for text in s.lines or [] if "\t" in text)


def test_writer_rejects_bad_predictions_and_leaves_the_old_file(tmp_path: Path) -> None:
    sentences = read_conllu(EWT)[:2]
    out = tmp_path / "out.conllu"
    out.write_text("old\n")
    with pytest.raises(ValueError, match="out of range"):
        write_conllu(sentences, [s.heads for s in sentences[:1]] + [[99] * len(sentences[1])],
                     None, out)
    with pytest.raises(ValueError, match="1 head lists for 2 sentences"):
        write_conllu(sentences, [[0]], None, out)
    with pytest.raises(ValueError, match="sentence 0: 7 words, 1 heads"):
        write_conllu(sentences, [[0], sentences[1].heads], None, out)
    with pytest.raises(ValueError, match="field"):
        write_conllu(sentences[:1], [sentences[0].heads], [["a b "] * len(sentences[0])], out)
    assert out.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["out.conllu"]


def test_bom_and_crlf_are_accepted(tmp_path: Path) -> None:
    crlf = tmp_path / "crlf.conllu"
    crlf.write_bytes(b"\xef\xbb\xbf" + EWT.read_bytes().replace(b"\n", b"\r\n"))
    assert [without_source(s) for s in read_conllu(crlf)] == [
        without_source(s) for s in read_conllu(EWT)]
    tab = tmp_path / "crlf.malttab"
    tab.write_bytes(b"\xef\xbb\xbf" + WSJ.read_bytes().replace(b"\n", b"\r\n"))
    assert [s.words for s in read_malttab(tab)] == [s.words for s in read_malttab(WSJ)]


def test_format_detection(tmp_path: Path) -> None:
    assert detect_format(EWT) == "conllu" and detect_format(WSJ) == "malttab"
    for source, fmt in ((EWT, "conllu"), (WSJ, "malttab")):
        plain = tmp_path / f"{fmt}.txt"
        plain.write_bytes(source.read_bytes())
        assert detect_format(plain) == fmt
        assert len(read_dep(plain)) == len(read_dep(source))
    hashed = tmp_path / "hash.txt"
    hashed.write_text("#\t#\t2\n5\tCD\t0\n")
    assert read_dep(hashed)[0].words == ["#", "5"]
    with pytest.raises(ValueError, match="fmt"):
        read_dep(EWT, "conll")


def test_iter_dep_streams() -> None:
    stream = iter_dep(EWT, "conllu")
    assert next(stream).words[0] == "From"
    assert next(stream).words[0] == "President"


def test_multiroot_is_allowed_on_request() -> None:
    path = FIXTURES / "bad" / "several_roots.conllu"
    assert read_dep(path, multiroot=True)[1].heads == [0, 1, 0]


# (file, format, line, words of the message)
BAD = [
    ("head_out_of_range.conllu", "conllu", 9, "head 7 out of range 0..3"),
    ("non_integer_id.conllu", "conllu", 7, "word id '2a' is not an integer"),
    ("duplicate_id.conllu", "conllu", 8, "duplicate word id 2"),
    ("non_consecutive_id.conllu", "conllu", 8, "non-consecutive word id 4, expected 3"),
    ("id_zero.conllu", "conllu", 6, "reserved for the root"),
    ("cycle.conllu", "conllu", 7, "cycle in the heads: 2 -> 4 -> 2"),
    ("no_root.conllu", "conllu", 7, "no word is attached to the root"),
    ("several_roots.conllu", "conllu", 8, "several roots: words [1, 3]"),
    ("wrong_columns.conllu", "conllu", 7, "expected 10 tab-separated columns, got 9"),
    ("non_integer_head.conllu", "conllu", 6, "head '_' is not a non-negative integer"),
    ("negative_head.conllu", "conllu", 6, "head '-1' is not a non-negative integer"),
    ("empty_column.conllu", "conllu", 7, "column 2 is empty"),
    ("bad_multiword_range.conllu", "conllu", 6, "bad multiword range 1-1"),
    ("misplaced_empty_node.conllu", "conllu", 7, "empty node 5.1 after word 1"),
    ("sentence_without_words.conllu", "conllu", 6, "sentence without words"),
    ("multiword_in_conllx.conllx", "conllx", 4, "word id '1-2' is not an integer"),
    ("only_comments.conllu", "conllu", 1, "empty file"),
    ("empty.conllu", "conllu", 1, "empty file"),
    ("empty.conllu", "auto", 1, "empty file"),
    ("not_utf8.conllu", "conllu", 6, "not UTF-8"),
    ("wrong_columns.malttab", "malttab", 5, "expected 4 tab-separated columns, got 3"),
    ("head_out_of_range.malttab", "malttab", 6, "head 4 out of range 0..3"),
    ("non_integer_head.malttab", "malttab", 4, "head 'two' is not a non-negative integer"),
    ("cycle.malttab", "malttab", 4, "cycle in the heads: 1 -> 2 -> 1"),
    ("two_columns.malttab", "malttab", 4, "expected 3 or 4 tab-separated columns, got 2"),
]


@pytest.mark.parametrize(("name", "fmt", "line", "message"), BAD)
def test_each_validation_error_names_its_line(name: str, fmt: str, line: int, message: str) -> None:
    path = FIXTURES / "bad" / name
    with pytest.raises(DataError) as info:
        read_dep(path, fmt)
    assert (info.value.path, info.value.line) == (str(path), line)
    assert message in info.value.message
    assert str(info.value) == f"{path}:{line}: {info.value.message}"


def test_huge_numbers_are_data_errors(tmp_path: Path) -> None:
    path = tmp_path / "huge.malttab"
    path.write_text("Dogs\tNNS\t2\nbark\tVBP\t" + "9" * 5000 + "\n")
    with pytest.raises(DataError, match="huge.malttab:2: head '9999"):
        read_malttab(path)


def test_punct_masks() -> None:
    ewt = read_conllu(EWT)
    assert punct_mask(ewt[0]) == [True] * 6 + [False]
    assert punct_mask(ewt[0], include=True) == [True] * 7
    for sentence in ewt:
        assert punct_mask(sentence) == [tag != "PUNCT" for tag in sentence.tags]
    wsj = read_malttab(WSJ)[0]  # Pierre Vinken , 61 years old , will join ... Nov. 29 .
    assert [w for w, keep in zip(wsj.words, punct_mask(wsj)) if not keep] == [",", ",", "."]
    quotes = DepSentence(["``", "$", "5", "''", "-LRB-"], ["``", "$", "CD", "''", "-LRB-"],
                         [3, 3, 0, 3, 3], fmt="malttab")
    assert punct_mask(quotes) == [False, False, True, False, False]
    assert punct_mask(quotes, ptb_tags={"``", "''"}) == [False, True, True, False, True]


line_text = st.lists(
    st.sampled_from(
        ["1", "2", "3", "0", "1-2", "2.1", "_", "#", "x", "", "-1", "root", "9" * 5000]),
    min_size=1, max_size=11,
).map("\t".join)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.one_of(
        st.binary(max_size=300),
        st.lists(st.one_of(line_text, st.just("")), max_size=12).map(
            lambda lines: "\n".join(lines).encode()),
    ),
    fmt=st.sampled_from(["conllu", "conllx", "malttab", "auto"]),
)
def test_readers_parse_or_raise_data_error_on_any_bytes(data: bytes, fmt: str) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "fuzz.txt")
        with open(path, "wb") as handle:
            handle.write(data)
        try:
            sentences = read_dep(path, fmt)
        except DataError as err:
            assert err.path == path and err.line >= 1
            return
        assert sentences and all(is_tree(s.heads) and len(s.heads) == len(s) for s in sentences)


def test_full_ewt_dev_reads_and_round_trips(tmp_path: Path) -> None:
    ewt_dev = shared_file(EWT_DEV)
    sentences = read_conllu(ewt_dev)
    assert len(sentences) == 2001
    out = tmp_path / "dev.conllu"
    write_conllu(sentences, [s.heads for s in sentences], [s.rels or [] for s in sentences], out)
    assert out.read_text(encoding="utf-8") == ewt_dev.read_text(encoding="utf-8")
