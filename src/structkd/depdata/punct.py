"""Which words an attachment score counts: punctuation is excluded by convention."""

from __future__ import annotations

from collections.abc import Collection

from structkd.depdata.conllu import DepSentence

PTB_PUNCT_TAGS = frozenset({"``", "''", ",", ".", ":", "-LRB-", "-RRB-", "#", "$"})
"""Penn Treebank tags treated as punctuation. Chen & Manning (EMNLP 2014) and most PTB parsing
papers exclude only ```` '' , . :``; pass ``ptb_tags`` to reproduce that setup."""


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
        punct = [
            tag == "PUNCT" or (tag == "_" and fine in ptb_tags)
            for tag, fine in zip(sentence.tags, xpos)
        ]
    else:
        punct = [tag in ptb_tags or fine in ptb_tags for tag, fine in zip(sentence.tags, xpos)]
    return [not p for p in punct]
