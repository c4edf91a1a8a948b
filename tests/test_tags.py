"""Tag schemes: parsing, conlleval decoding (seqeval as the oracle), encoding, detection."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from seqeval.metrics.sequence_labeling import get_entities

from structkd.data.conll import read_conll
from structkd.structures.tags import (
    SCHEME_PREFIXES,
    SCHEMES,
    Span,
    convert,
    detect_scheme,
    entity_types,
    from_spans,
    parse_tag,
    to_spans,
)

from shared_data import shared_file

ANY_TAG = st.sampled_from(["O"] + [f"{p}-{t}" for p in "BIES" for t in ("PER", "LOC", "ORG-X")])
BIO_TAG = st.sampled_from(["O"] + [f"{p}-{t}" for p in "BI" for t in ("PER", "LOC")])


def seqeval_spans(tags: list[str]) -> list[Span]:
    """seqeval's default-mode entities, converted to half-open spans."""
    return [(start, end + 1, type_) for type_, start, end in get_entities(list(tags))]


@st.composite
def span_sets(draw: st.DrawFn) -> tuple[list[Span], int]:
    """Non-overlapping spans over a sentence, adjacent same-type entities included."""
    length = draw(st.integers(0, 12))
    cuts = sorted(draw(st.sets(st.integers(0, length), max_size=length + 1)))
    spans = []
    for start, end in zip(cuts, cuts[1:]):
        if draw(st.booleans()):
            spans.append((start, end, draw(st.sampled_from(["PER", "LOC"]))))
    return spans, length


class TestParseTag:
    def test_valid(self) -> None:
        assert parse_tag("O") == ("O", None)
        assert parse_tag("B-PER") == ("B", "PER")
        assert parse_tag("S-ORG-X") == ("S", "ORG-X")

    @pytest.mark.parametrize(
        "tag, reason",
        [
            ("I-", "no entity type"),
            ("X-PER", "unknown prefix"),
            ("PER", "expected 'O'"),
            ("", "expected 'O'"),
            ("b-PER", "unknown prefix"),
            ("B_PER", "expected 'O'"),
            ("o", "expected 'O'"),
            ("O-PER", "unknown prefix"),
        ],
    )
    def test_malformed_names_the_tag(self, tag: str, reason: str) -> None:
        with pytest.raises(ValueError, match=reason) as info:
            parse_tag(tag)
        assert repr(tag) in str(info.value)


class TestToSpans:
    @pytest.mark.parametrize(
        "tags, spans",
        [
            ([], []),
            (["O", "O"], []),
            (["B-PER", "I-PER", "O", "B-LOC"], [(0, 2, "PER"), (3, 4, "LOC")]),
            # conlleval: an I- after O, at the start, or after another type starts an entity
            (["O", "I-PER", "I-PER"], [(1, 3, "PER")]),
            (["I-LOC"], [(0, 1, "LOC")]),
            (["B-PER", "I-LOC", "I-LOC"], [(0, 1, "PER"), (1, 3, "LOC")]),
            # a B- always starts a new entity, even of the same type
            (["B-PER", "B-PER", "I-PER"], [(0, 1, "PER"), (1, 3, "PER")]),
            # IOB1: B- only separates adjacent entities of one type
            (
                ["I-PER", "I-PER", "B-PER", "I-PER", "O", "I-LOC"],
                [(0, 2, "PER"), (2, 4, "PER"), (5, 6, "LOC")],
            ),
            # BIOES, well formed
            (
                ["B-PER", "E-PER", "S-LOC", "B-ORG", "I-ORG", "E-ORG"],
                [(0, 2, "PER"), (2, 3, "LOC"), (3, 6, "ORG")],
            ),
            (["S-PER", "S-PER"], [(0, 1, "PER"), (1, 2, "PER")]),
            # BIOES, ill formed: E-/S- close entities, I-/E- after them start new ones
            (["E-PER", "E-PER"], [(0, 1, "PER"), (1, 2, "PER")]),
            (["S-PER", "I-PER"], [(0, 1, "PER"), (1, 2, "PER")]),
            (["B-PER", "S-PER"], [(0, 1, "PER"), (1, 2, "PER")]),
            (["B-PER", "I-PER", "E-PER", "I-PER"], [(0, 3, "PER"), (3, 4, "PER")]),
            (["B-PER", "E-LOC"], [(0, 1, "PER"), (1, 2, "LOC")]),
            (["B-ORG-X", "I-ORG-X"], [(0, 2, "ORG-X")]),
        ],
    )
    def test_hand_cases(self, tags: list[str], spans: list[Span]) -> None:
        assert to_spans(tags) == spans
        assert to_spans(tags) == seqeval_spans(tags)

    @settings(max_examples=400, deadline=None)
    @given(st.lists(ANY_TAG, max_size=14))
    def test_matches_seqeval_on_any_sequence(self, tags: list[str]) -> None:
        assert to_spans(tags) == seqeval_spans(tags)

    def test_scheme_restricts_prefixes(self) -> None:
        with pytest.raises(ValueError, match="'S-PER' is not a BIO tag"):
            to_spans(["O", "S-PER"], "BIO")
        with pytest.raises(ValueError, match="unknown tag scheme"):
            to_spans(["O"], "BILOU")
        # decoding does not depend on the scheme
        tags = ["I-PER", "B-PER", "O", "I-LOC"]
        assert to_spans(tags, "IOB1") == to_spans(tags, "BIO") == to_spans(tags, "BIOES")

    def test_malformed_tag_raises(self) -> None:
        with pytest.raises(ValueError, match="'I-'"):
            to_spans(["B-PER", "I-"])


class TestFromSpans:
    def test_hand_cases(self) -> None:
        spans = [(0, 2, "PER"), (2, 3, "PER"), (4, 7, "LOC")]
        assert from_spans(spans, 8, "IOB1") == [
            "I-PER",
            "I-PER",
            "B-PER",
            "O",
            "I-LOC",
            "I-LOC",
            "I-LOC",
            "O",
        ]
        assert from_spans(spans, 8, "BIO") == [
            "B-PER",
            "I-PER",
            "B-PER",
            "O",
            "B-LOC",
            "I-LOC",
            "I-LOC",
            "O",
        ]
        assert from_spans(spans, 8, "BIOES") == [
            "B-PER",
            "E-PER",
            "S-PER",
            "O",
            "B-LOC",
            "I-LOC",
            "E-LOC",
            "O",
        ]
        # IOB1 needs no B- between adjacent entities of different types
        assert from_spans([(0, 1, "PER"), (1, 2, "LOC")], 2, "IOB1") == ["I-PER", "I-LOC"]

    @settings(max_examples=300, deadline=None)
    @given(span_sets(), st.sampled_from(SCHEMES))
    def test_round_trip(self, case: tuple[list[Span], int], scheme: str) -> None:
        spans, length = case
        tags = from_spans(spans[::-1], length, scheme)
        assert len(tags) == length
        assert {parse_tag(t)[0] for t in tags} <= {"O", *SCHEME_PREFIXES[scheme]}
        assert to_spans(tags, scheme) == spans
        assert detect_scheme([tags]) == (scheme if spans else "BIO")
        for dst in SCHEMES:
            assert convert(tags, scheme, dst) == from_spans(spans, length, dst)

    @pytest.mark.parametrize(
        "spans, match",
        [
            ([(1, 1, "PER")], "empty or outside"),
            ([(2, 5, "PER")], "empty or outside"),
            ([(-1, 1, "PER")], "empty or outside"),
            ([(0, 2, "PER"), (1, 3, "LOC")], "overlaps"),
            ([(0, 1, "")], "empty type"),
        ],
    )
    def test_invalid_spans(self, spans: list[Span], match: str) -> None:
        with pytest.raises(ValueError, match=match):
            from_spans(spans, 4, "BIO")


def test_convert_repairs_ill_formed_bio() -> None:
    assert convert(["O", "I-PER", "I-PER", "I-LOC"], "BIO", "BIO") == [
        "O",
        "B-PER",
        "I-PER",
        "B-LOC",
    ]
    assert convert(["O", "I-PER", "B-LOC"], "BIO", "BIOES") == ["O", "S-PER", "S-LOC"]
    assert convert(["I-PER", "B-PER", "O"], "IOB1", "BIO") == ["B-PER", "B-PER", "O"]


class TestDetectScheme:
    @pytest.mark.parametrize(
        "corpus, scheme",
        [
            ([["O", "O"]], "BIO"),
            ([], "BIO"),
            ([["I-PER", "I-PER", "O"], ["I-LOC", "B-LOC"]], "IOB1"),
            ([["B-PER", "I-PER", "O"], ["O", "B-LOC"]], "BIO"),
            # BIO with one ill-formed I- start (as in each CoNLL-2002 file) stays BIO
            ([["B-PER", "I-PER"], ["O", "I-LOC"]], "BIO"),
            ([["B-PER", "E-PER", "S-LOC"]], "BIOES"),
            # mixed: the richest scheme wins
            ([["I-PER", "I-PER", "B-PER"], ["S-LOC"]], "BIOES"),
            ([["I-PER", "O"], ["B-LOC"]], "BIO"),
            # IOB1 never puts B- on an entity next to one of another type
            ([["I-PER", "B-LOC"]], "BIO"),
            ([["I-PER", "B-PER"]], "IOB1"),
        ],
    )
    def test_cases(self, corpus: list[list[str]], scheme: str) -> None:
        assert detect_scheme(corpus) == scheme

    def test_validates_every_tag(self) -> None:
        with pytest.raises(ValueError, match="'X-PER'"):
            detect_scheme([["S-PER"], ["O", "X-PER"]])

    def test_entity_types(self) -> None:
        assert entity_types([["B-PER", "O"], ["S-LOC", "I-PER", "B-ORG-X"]]) == [
            "LOC",
            "ORG-X",
            "PER",
        ]
        with pytest.raises(ValueError, match="'B-'"):
            entity_types([["B-"]])


@pytest.mark.parametrize(
    "path, count",
    [("conll2002-es/train.txt", 1), ("conll2002-es/test.txt", 1), ("conll2002-nl/test.txt", 0)],
)
def test_conll2002_is_bio_despite_ill_formed_starts(path: str, count: int) -> None:
    """Each Spanish file has one entity starting with I- (the Dutch ones have none)."""
    corpus_tags = [s.tags or [] for s in read_conll(shared_file(f"ner/{path}"))]
    ill_formed = [
        (prev, tag)
        for tags in corpus_tags
        for prev, tag in zip(["O", *tags], tags)
        if tag.startswith("I-") and (prev == "O" or prev[2:] != tag[2:])
    ]
    assert len(ill_formed) == count
    assert detect_scheme(corpus_tags) == "BIO"
