"""A rule-based word tokenizer for raw text, with character offsets.

The rules, applied left to right (the longest match at each position wins, whitespace separates
and is dropped):

1. an abbreviation of single letters with periods is one token: ``U.S.``, ``e.g.``;
2. a word is a run of letters, digits and underscores, possibly joined by one inner
   ``-``, ``'``, ``’``, ``.``, ``,`` or ``/`` between two such runs: ``Monday``, ``3.5``,
   ``1,000``, ``e-mail``, ``O'Neil``, ``don't``, ``24/7``;
3. any other character is punctuation: a run of the same character is one token (``...``,
   ``--``, ``!!``), different characters are separate tokens (``."`` -> ``.``, ``"``).

So ``"Monday."`` -> ``Monday``, ``.``; ``"(EU)"`` -> ``(``, ``EU``, ``)``. This is close to the
tokenization of CoNLL and WikiAnn corpora for ordinary prose; text tokenized otherwise (a
treebank's ``do n't``) should be given pre-tokenized.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_TOKEN = re.compile(
    r"""
    (?:[^\W\d_]\.){2,}                 # U.S., e.g.
    | \w+(?:[-'’.,/]\w+)*              # words, numbers, inner hyphens and apostrophes
    | ([^\w\s])\1*                     # a run of one punctuation character
    """,
    re.VERBOSE,
)


@dataclass(frozen=True)
class Token:
    """A token and where it is: ``text[start:end] == token.text``."""

    text: str
    start: int
    end: int


def tokenize(text: str) -> list[Token]:
    """The tokens of ``text`` by the module's rules, with character offsets. O(len(text))."""
    return [Token(m.group(), m.start(), m.end()) for m in _TOKEN.finditer(text)]


def join_tokens(words: list[str]) -> tuple[str, list[Token]]:
    """Pre-tokenized words as text joined by single spaces, and their offsets in it."""
    tokens, position = [], 0
    for word in words:
        tokens.append(Token(word, position, position + len(word)))
        position += len(word) + 1
    return " ".join(words), tokens
