"""Readers and writer on real corpora, the bundled slices, fixtures and small hand-made files."""

from __future__ import annotations

import io
import itertools
import tempfile
import tracemalloc
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from structkd.data.conll import (
    Sentence,
    detect_format,
    iter_sentences,
    read_conll,
    read_ner,
    read_text,
    read_wikiann,
    write_conll,
)
from structkd.data.errors import DataError
from structkd.data.resources import resource_path
from structkd.structures.tags import to_spans

from shared_data import shared_file

FIXTURES = Path(__file__).parent / "fixtures"
# Tokens the column format must carry unchanged: non-ASCII, whitespace-like, line-break-like.
TOKEN = st.text(
    st.sampled_from(["a", "Z", "é", "-", "O", "\u00a0", "\u200e", "\u2028", "\x85", "\x1c", "\r"]),
    min_size=1,
    max_size=4,
)


def write(tmp_path: Path, text: str, name: str = "f.txt") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    return path


class TestSentence:
    def test_validation(self) -> None:
        assert len(Sentence(["a", "b"], ["O", "O"], [["X", "Y"]])) == 2
        with pytest.raises(ValueError, match="at least one token"):
            Sentence([])
        with pytest.raises(ValueError, match="1 tags for 2 tokens"):
            Sentence(["a", "b"], ["O"])
        with pytest.raises(ValueError, match="extra column 0"):
            Sentence(["a"], None, [["X", "Y"]])

    def test_frozen_and_line_not_compared(self) -> None:
        sentence = Sentence(["a"], line=3)
        assert sentence == Sentence(["a"], line=7)
        with pytest.raises(AttributeError):
            sentence.tags = ["O"]  # type: ignore[misc]


# (file, format, sentences, entities) as documented in shared/data/README.md
REAL = [
    ("ner/conll2003-en/dev.txt", "conll", 3250, 5942),
    ("ner/conll2003-en/test.txt", "conll", 3453, 5648),
    ("ner/conll2002-nl/test.txt", "conll", 5195, None),
    ("ner/conll2002-es/dev.txt", "conll", 1915, None),
    ("ner/wikiann-en/dev.tsv", "wikiann", 10000, None),
    ("ner/wikiann-de/train.tsv", "wikiann", 20000, None),
    ("unlabeled/en.txt", "text", 23181, None),
]


@pytest.mark.parametrize("relative, fmt, n_sentences, n_entities", REAL)
def test_real_corpora(relative: str, fmt: str, n_sentences: int, n_entities: int | None) -> None:
    path = shared_file(relative)
    assert detect_format(path) == fmt
    sentences = read_ner(path)
    assert len(sentences) == n_sentences
    assert all(s.tokens for s in sentences)
    if n_entities is not None:
        assert sum(len(to_spans(s.tags or [])) for s in sentences) == n_entities


def test_conll2003_columns_and_docstart() -> None:
    sentences = read_conll(shared_file("ner/conll2003-en/dev.txt"))
    first = sentences[0]
    assert first.tokens[:3] == ["CRICKET", "-", "LEICESTERSHIRE"]
    assert first.tags is not None and first.tags[:3] == ["O", "O", "B-ORG"]
    assert first.columns[0][:3] == ["NNP", ":", "NNP"]
    assert first.columns[1][:3] == ["B-NP", "O", "B-NP"]
    assert first.line == 3
    assert all(s.tokens[0] != "-DOCSTART-" for s in sentences)


def test_conll2002_docstart_without_blank_line() -> None:
    first = read_conll(shared_file("ner/conll2002-nl/dev.txt"))[0]
    assert first.tokens[:2] == ["Dat", "is"] and first.line == 2


def test_wikiann_keeps_odd_tokens_whole() -> None:
    sentences = read_wikiann(shared_file("ner/wikiann-de/train.tsv"))
    assert any(t.endswith("\u200e") for s in sentences for t in s.tokens)


def test_bundled_slices_and_fixtures() -> None:
    train = read_wikiann(resource_path("wikiann_en/train.tsv"))
    assert len(train) == 2000
    assert len(read_wikiann(resource_path("wikiann_en/dev.tsv"))) == 500
    assert len(read_wikiann(resource_path("wikiann_en/test.tsv"))) == 500
    assert len(read_text(resource_path("unlabeled_en.txt"))) == 2000
    # tests/fixtures/ner is the head of the bundled slice in two-column CoNLL
    assert read_conll(FIXTURES / "ner" / "train.txt") == train[:40]
    dev = read_wikiann(resource_path("wikiann_en/dev.tsv"))
    assert read_ner(FIXTURES / "ner" / "dev.txt") == dev[:20]


class TestConllColumns:
    TEXT = "EU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\nGerman JJ B-NP B-MISC\n"

    def test_tag_column_choice(self, tmp_path: Path) -> None:
        path = write(tmp_path, self.TEXT)
        last = read_conll(path)
        assert last[0].tags == ["B-ORG", "O"] and last[0].columns == [
            ["NNP", "VBZ"],
            ["B-NP", "B-VP"],
        ]
        chunks = read_conll(path, tag_column=2)
        assert chunks[1].tags == ["B-NP"] and chunks[1].columns == [["JJ"], ["B-MISC"]]
        untagged = read_conll(path, tag_column=None)
        assert untagged[0].tags is None and len(untagged[0].columns) == 3

    @pytest.mark.parametrize(
        "column, match",
        [(0, "token column"), (4, "does not exist"), (-5, "does not exist"), (1, "'NNP'")],
    )
    def test_bad_tag_column(self, tmp_path: Path, column: int, match: str) -> None:
        with pytest.raises(DataError, match=match) as info:
            read_conll(write(tmp_path, self.TEXT), tag_column=column)
        assert info.value.line == 1

    def test_one_column_is_unlabeled(self, tmp_path: Path) -> None:
        sentences = read_ner(write(tmp_path, "Hello\nworld\n\nBye\n"))
        assert [s.tokens for s in sentences] == [["Hello", "world"], ["Bye"]]
        assert all(s.tags is None and s.columns == [] for s in sentences)


class TestOtherReaders:
    def test_wikiann_index_zero_starts_a_sentence(self, tmp_path: Path) -> None:
        path = write(tmp_path, "0\tA\tB-PER\n1\tB\tI-PER\n0\tC\tO\n\n0\tD\tS-LOC\n", "w.tsv")
        sentences = read_wikiann(path)
        assert [s.tokens for s in sentences] == [["A", "B"], ["C"], ["D"]]
        assert [s.line for s in sentences] == [1, 3, 5]

    def test_wikiann_keeps_spaces_inside_tokens(self, tmp_path: Path) -> None:
        path = write(tmp_path, "0\tNew York\tB-LOC \n1\t\u00a0\tO\r\n", "w.tsv")
        assert read_wikiann(path)[0].tokens == ["New York", "\u00a0"]
        assert read_wikiann(path)[0].tags == ["B-LOC", "O"]

    def test_text(self, tmp_path: Path) -> None:
        path = write(tmp_path, "A  b\tc\n\n   \nd\u3000e\n")
        sentences = read_text(path)
        assert [s.tokens for s in sentences] == [["A", "b", "c"], ["d", "e"]]
        assert [s.line for s in sentences] == [1, 4]
        assert sentences[0].tags is None

    @pytest.mark.parametrize(
        "text, fmt",
        [
            ("0\tA\tO\n1\tB\tB-PER\n", "wikiann"),
            ("A O\nB B-PER\n", "conll"),
            ("A O\nB I-\n", "conll"),  # a bad tag is reported by the reader, not misread as text
            ("-DOCSTART-\nWord\n", "conll"),
            ("One\n\nTwo\n", "conll"),
            ("One\nTwo\n", "text"),
            ("The cat sat .\nIt purred .\n", "text"),
            ("", "conll"),
        ],
    )
    def test_detect_format(self, tmp_path: Path, text: str, fmt: str) -> None:
        assert detect_format(write(tmp_path, text)) == fmt

    def test_explicit_format_and_unknown(self, tmp_path: Path) -> None:
        path = write(tmp_path, "A O\nB B-PER\n")
        assert [s.tokens for s in read_ner(path, fmt="text")] == [["A", "O"], ["B", "B-PER"]]
        with pytest.raises(ValueError, match="unknown format 'tsv'"):
            read_ner(path, fmt="tsv")


class TestWriteConll:
    SENTENCES = [Sentence(["John", "lives"], ["B-PER", "O"]), Sentence(["Bonn"], ["B-LOC"])]
    PREDICTED = [["B-PER", "O"], ["B-ORG"]]

    def test_gold_and_predicted_round_trip(self, tmp_path: Path) -> None:
        out = tmp_path / "pred.txt"
        assert write_conll(iter(self.SENTENCES), iter(self.PREDICTED), out) == 2
        assert out.read_text() == "John B-PER B-PER\nlives O O\n\nBonn B-LOC B-ORG\n\n"
        assert [s.tags for s in read_conll(out, tag_column=1)] == [s.tags for s in self.SENTENCES]
        assert [s.tags for s in read_conll(out)] == self.PREDICTED

    def test_without_gold_and_to_open_file(self) -> None:
        buffer = io.StringIO()
        write_conll([Sentence(["Hi"])], [["O"]], buffer)
        assert buffer.getvalue() == "Hi O\n\n"

    @pytest.mark.parametrize(
        "sentences, predicted, match",
        [
            (SENTENCES, PREDICTED[:1], "fewer predictions"),
            (SENTENCES[:1], PREDICTED, "more predictions"),
            (SENTENCES, [["O"], ["O"]], "1 predicted tags for 2 tokens"),
            ([SENTENCES[0], Sentence(["x"])], PREDICTED, "gold tags on some"),
            ([Sentence(["New York"])], [["O"]], "'New York'"),
            ([Sentence(["a"])], [["B-"]], "predicted tag: malformed tag 'B-'"),
            ([Sentence(["a\tb"])], [["O"]], "holds a space, tab or newline"),
        ],
    )
    def test_errors_leave_previous_file(
        self, tmp_path: Path, sentences: list[Sentence], predicted: list[list[str]], match: str
    ) -> None:
        out = tmp_path / "pred.txt"
        out.write_text("previous\n")
        with pytest.raises(ValueError, match=match):
            write_conll(sentences, predicted, out)
        assert out.read_text() == "previous\n"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["pred.txt"]

    @settings(max_examples=150, deadline=None)
    @given(
        st.lists(
            st.tuples(st.lists(TOKEN, min_size=1, max_size=5), st.booleans()),
            min_size=1,
            max_size=5,
        ),
        st.booleans(),
    )
    def test_round_trip(self, rows: list[tuple[list[str], bool]], with_gold: bool) -> None:
        sentences = [
            Sentence(tokens, ["B-X" if flag else "O" for _ in tokens] if with_gold else None)
            for tokens, flag in rows
        ]
        predicted = [["S-Y"] * len(s) for s in sentences]
        buffer = io.StringIO()
        write_conll(sentences, predicted, buffer)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "out.txt"
            path.write_text(buffer.getvalue(), encoding="utf-8")
            back = read_conll(path, tag_column=1 if with_gold else -1)
            assert [s.tokens for s in back] == [s.tokens for s in sentences]
            if with_gold:
                assert [s.tags for s in back] == [s.tags for s in sentences]
                assert [s.columns for s in back] == [[p] for p in predicted]
            else:
                assert [s.tags for s in back] == predicted

    def test_failure_mid_stream_is_atomic(self, tmp_path: Path) -> None:
        def predictions() -> Iterator[list[str]]:
            yield ["B-PER", "O"]
            raise RuntimeError("model crashed")

        out = tmp_path / "pred.txt"
        with pytest.raises(RuntimeError, match="crashed"):
            write_conll(self.SENTENCES, predictions(), out)
        assert list(tmp_path.iterdir()) == []


def _write_big(path: Path, n: int) -> None:
    with path.open("w") as f:
        for i in range(n):
            f.write(f"w{i} B-PER\nx I-PER\ny O\n\n")


def test_streams_100k_sentences_without_keeping_them(tmp_path: Path) -> None:
    """predict's path (read, tag, write) holds only the current sentence, whatever the count."""
    source = tmp_path / "big.txt"
    _write_big(source, 100_000)
    refs: list[weakref.ref[Sentence]] = []
    most_alive = 0

    def predictions(sentences: Iterator[Sentence]) -> Iterator[list[str]]:
        nonlocal most_alive
        for i, sentence in enumerate(sentences):
            refs.append(weakref.ref(sentence))
            if i % 20_000 == 19_999:
                most_alive = max(most_alive, sum(r() is not None for r in refs))
            yield sentence.tags or []

    sentences, copy = itertools.tee(iter_sentences(source, "auto"))
    assert write_conll(sentences, predictions(copy), tmp_path / "out.txt") == 100_000
    # itertools.tee keeps its buffer in blocks of 57 items: bounded, unlike the 100k.
    assert 0 < most_alive <= 60
    assert (tmp_path / "out.txt").read_text().count("\n\n") == 100_000


def test_streaming_memory_is_below_file_size(tmp_path: Path) -> None:
    source = tmp_path / "big.txt"
    _write_big(source, 10_000)
    tracemalloc.start()
    try:
        sentences, copy = itertools.tee(iter_sentences(source, "auto"))
        write_conll(sentences, (s.tags or [] for s in copy), tmp_path / "out.txt")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # The file is 229 kB, the sentences as a list would take about 6 MB.
    assert peak < source.stat().st_size, peak
