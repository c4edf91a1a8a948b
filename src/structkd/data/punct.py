"""Which words an attachment score counts: punctuation is excluded by convention.

One mask, ``non_punct_mask``: a word is punctuation when its UPOS is ``PUNCT``, or, without
tags, when all its characters are (``is_punctuation``). ``punct_mask``, what every attachment
score of the package uses, first expresses a treebank sentence's own tags as that UPOS decision
(CoNLL-U: its UPOS, or its XPOS among the PTB punctuation tags where UPOS is ``_``; CoNLL-X and
MaltTab: a tag among them).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Collection, Sequence

from structkd.data.conllu import DepSentence

PTB_PUNCT_TAGS = frozenset({"``", "''", ",", ".", ":", "-LRB-", "-RRB-", "#", "$"})
"""Penn Treebank tags treated as punctuation. Chen & Manning (EMNLP 2014) and most PTB parsing
papers exclude only ```` '' , . :``; pass ``ptb_tags`` to reproduce that setup."""


def is_punctuation(word: str) -> bool:
    """Whether every character of ``word`` is Unicode punctuation (the CoNLL-X ``eval.pl`` rule)."""
    return bool(word) and all(unicodedata.category(c).startswith("P") for c in word)


def non_punct_mask(words: Sequence[str], upos: Sequence[str] | None = None) -> list[bool]:
    """The usual scoring mask: False for punctuation tokens, True for the others.

    Args:
        words: the sentence's words.
        upos: universal POS tags; when given, punctuation is ``upos == "PUNCT"`` (the treebank's
            own decision), else :func:`is_punctuation` of the word.

    Raises:
        ValueError: for a tag count that differs from the word count.
    """
    if upos is not None:
        if len(upos) != len(words):
            raise ValueError(f"{len(upos)} POS tags for {len(words)} words")
        return [tag != "PUNCT" for tag in upos]
    return [not is_punctuation(w) for w in words]


def punct_mask(
    sentence: DepSentence,
    include: bool = False,
    ptb_tags: Collection[str] = PTB_PUNCT_TAGS,
) -> list[bool]:
    """Per word, whether an attachment score counts it.

    Punctuation is a word whose UPOS is ``PUNCT`` in CoNLL-U (its XPOS is checked against
    ``ptb_tags`` where UPOS is ``_``, e.g. a file written from MaltTab), and a word with a tag
    (CPOSTAG or POSTAG) in ``ptb_tags`` in CoNLL-X and MaltTab.

    Args:
        sentence: the sentence.
        include: count punctuation too (every word gets True).
        ptb_tags: the PTB tags that mark punctuation.

    Returns:
        n booleans, True = scored. O(n).
    """
    n = len(sentence)
    if include:
        return [True] * n
    xpos = sentence.xpos if sentence.xpos is not None else ["_"] * n
    if sentence.fmt == "conllu":
        upos = [
            tag if tag != "_" else ("PUNCT" if fine in ptb_tags else "_")
            for tag, fine in zip(sentence.tags, xpos)
        ]
    else:  # CoNLL-X and MaltTab tags are PTB's (or a treebank's own), never UPOS
        upos = [
            "PUNCT" if tag in ptb_tags or fine in ptb_tags else "X"
            for tag, fine in zip(sentence.tags, xpos)
        ]
    return non_punct_mask(sentence.words, upos)
