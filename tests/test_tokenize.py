"""The rule-based tokenizer of ``sk.load(...).predict`` on raw text: punctuation split off,
abbreviations, numbers and inner hyphens kept, character offsets exact."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from structkd.data.tokenize import join_tokens, tokenize


def words(text: str) -> list[str]:
    return [t.text for t in tokenize(text)]


def test_punctuation_is_split_from_words() -> None:
    assert words("See you Monday.") == ["See", "you", "Monday", "."]
    assert words('(EU) said: "no!"') == ["(", "EU", ")", "said", ":", '"', "no", "!", '"']
    assert words("Wait... what?!") == ["Wait", "...", "what", "?", "!"]


def test_abbreviations_numbers_and_inner_punctuation_stay_whole() -> None:
    assert words("The U.S. grew 3.5% to 1,000 in 24/7 e-mail.") == [
        "The",
        "U.S.",
        "grew",
        "3.5",
        "%",
        "to",
        "1,000",
        "in",
        "24/7",
        "e-mail",
        ".",
    ]
    assert words("O'Neil's café, don't") == ["O'Neil's", "café", ",", "don't"]


def test_offsets_point_into_the_text() -> None:
    text = "  EU rejects\tGerman call.\n"
    tokens = tokenize(text)
    assert [(t.text, t.start, t.end) for t in tokens] == [
        ("EU", 2, 4),
        ("rejects", 5, 12),
        ("German", 13, 19),
        ("call", 20, 24),
        (".", 24, 25),
    ]
    assert tokenize("") == [] and tokenize(" \n ") == []


@given(st.text(max_size=60))
def test_tokens_cover_every_non_space_character_once(text: str) -> None:
    tokens = tokenize(text)
    for token in tokens:
        assert text[token.start : token.end] == token.text and token.text.strip() == token.text
    assert all(a.end <= b.start for a, b in zip(tokens, tokens[1:]))
    assert "".join(t.text for t in tokens) == "".join(text.split())


def test_pre_tokenized_words_are_joined_by_spaces() -> None:
    text, tokens = join_tokens(["EU", "rejects", "."])
    assert text == "EU rejects ."
    assert [(t.start, t.end) for t in tokens] == [(0, 2), (3, 10), (11, 12)]
