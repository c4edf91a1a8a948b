"""Readers and writer for dependency treebanks: CoNLL-U, CoNLL-X and MaltTab.

Formats (one word a line, a blank line between sentences):

* CoNLL-U (https://universaldependencies.org/format.html): 10 tab-separated columns
  ``ID FORM LEMMA UPOS XPOS FEATS HEAD DEPREL DEPS MISC``; ``#`` comment lines, multiword-token
  ranges ``1-2`` and empty nodes ``3.1`` are not words: they are skipped by the reader and kept
  verbatim for the writer.
* CoNLL-X (Buchholz & Marsi, CoNLL 2006): 10 columns
  ``ID FORM LEMMA CPOSTAG POSTAG FEATS HEAD DEPREL PHEAD PDEPREL``, integer ids only.
* MaltTab (MaltParser's tab format): ``FORM POS HEAD`` with an optional 4th column ``DEPREL``,
  no ids, no comments (``#`` is a PTB word and tag).

Every reader checks what a parser or an evaluation relies on and raises :class:`DataError` with
the file and 1-based line: wrong column count, non-integer or non-consecutive or duplicate ids,
heads out of range, a gold graph with a cycle or without a root, several roots (unless
``multiroot=True``), an empty file, bytes that are not UTF-8. A UTF-8 BOM and CRLF line ends are
accepted. Non-projective trees are valid (see ``trees.is_projective``).

This is an own parser, not the PyPI ``conllu`` package: the checks above and their exact
``FILE:LINE`` messages are what the tests (and docs/reliability.md) pin down, the same reader
takes CoNLL-X and MaltTab, and it costs no extra dependency.
"""

from __future__ import annotations

import codecs
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from structkd.data.errors import DataError
from structkd.data.trees import find_cycles
from structkd.io import text_output


def _error(path: str | os.PathLike[str], line: int | None, message: str) -> DataError:
    """DataError in this module's (path, line, message) argument order."""
    return DataError(path, message, line=line)


FORMATS = ("conllu", "conllx", "malttab")
_EXTENSIONS = {".conllu": "conllu", ".conllx": "conllx", ".conll": "conllx", ".malttab": "malttab"}
_WORD_ID = re.compile(r"[0-9]{1,9}")  # more digits than any sentence needs; int() stays cheap
_RANGE_ID = re.compile(r"([0-9]{1,9})-([0-9]{1,9})")
_EMPTY_ID = re.compile(r"([0-9]{1,9})\.([0-9]{1,9})")
_HEAD, _DEPREL = 6, 7  # column indices in CoNLL-U and CoNLL-X


@dataclass
class DepSentence:
    """One sentence of a dependency treebank.

    Attributes:
        words: n word forms (multiword tokens and empty nodes excluded).
        tags: n POS tags a model reads: UPOS (CoNLL-U), CPOSTAG (CoNLL-X), POS (MaltTab).
        heads: n gold heads, 1-based, 0 = root.
        rels: n gold relations, or None when the file has none (MaltTab with 3 columns, or a
            DEPREL column that is ``_`` throughout).
        xpos: n fine tags: XPOS (CoNLL-U), POSTAG (CoNLL-X), POS (MaltTab).
        fmt: the format read, one of ``FORMATS``.
        lines: the sentence's lines as read (comments, multiword tokens, empty nodes, words),
            without line ends; the writer copies them and replaces only HEAD and DEPREL.
        word_lines: n indices into ``lines``, the line of each word.
        path: the file read ("" when built by hand).
        line: 1-based line of the sentence's first line in ``path`` (0 when built by hand).
    """

    words: list[str]
    tags: list[str]
    heads: list[int]
    rels: list[str] | None = None
    xpos: list[str] | None = None
    fmt: str = "conllu"
    lines: list[str] | None = None
    word_lines: list[int] | None = None
    path: str = ""
    line: int = 0

    def __len__(self) -> int:
        return len(self.words)

    @property
    def comments(self) -> list[str]:
        """The ``#`` lines of a CoNLL-U or CoNLL-X sentence, as read."""
        if self.lines is None or self.fmt == "malttab":
            return []
        return [text for text in self.lines if text.startswith("#")]


def _read_lines(path: str) -> Iterator[tuple[int, str]]:
    """(1-based line number, text without line end), decoded one line at a time so that an
    undecodable byte is reported at its line."""
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if number == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8) :]
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise _error(path, number, f"not UTF-8: {err.reason}") from None
            yield number, text.rstrip("\r\n")


def _blocks(path: str) -> Iterator[list[tuple[int, str]]]:
    """Groups the lines into sentences at blank (or whitespace-only) lines."""
    block: list[tuple[int, str]] = []
    for number, text in _read_lines(path):
        if text.strip():
            block.append((number, text))
        elif block:
            yield block
            block = []
    if block:
        yield block


def _check_fields(path: str, number: int, cols: list[str], expected: Sequence[int]) -> None:
    if len(cols) not in expected:
        want = " or ".join(str(e) for e in expected)
        raise _error(path, number, f"expected {want} tab-separated columns, got {len(cols)}")
    for i, col in enumerate(cols, start=1):
        if not col.strip():
            raise _error(path, number, f"column {i} is empty")


def _parse_head(path: str, number: int, text: str) -> int:
    if not _WORD_ID.fullmatch(text):
        raise _error(path, number, f"head {text[:20]!r} is not a non-negative integer")
    return int(text)


def _check_id(path: str, number: int, text: str, expected: int) -> None:
    """A word id must be the next integer: smaller ones were all seen already."""
    if not _WORD_ID.fullmatch(text):
        raise _error(path, number, f"word id {text[:20]!r} is not an integer")
    value = int(text)
    if value == 0:
        raise _error(path, number, "word id 0 is reserved for the root")
    if value < expected:
        raise _error(path, number, f"duplicate word id {value}")
    if value > expected:
        raise _error(path, number, f"non-consecutive word id {value}, expected {expected}")


def _check_tree(path: str, heads: list[int], numbers: list[int], multiroot: bool) -> None:
    """Heads in range, a root, no cycle, one root unless ``multiroot``; errors name a word line."""
    n = len(heads)
    for head, number in zip(heads, numbers):
        if head > n:
            raise _error(path, number, f"head {head} out of range 0..{n}")
    roots = [d for d, head in enumerate(heads, start=1) if head == 0]
    if not roots:
        raise _error(path, numbers[0], "no word is attached to the root (head 0)")
    if len(roots) > 1 and not multiroot:
        raise _error(path, numbers[roots[1] - 1], f"several roots: words {roots}")
    cycles = find_cycles(heads)
    if cycles:
        path_text = " -> ".join(str(d) for d in cycles[0] + cycles[0][:1])
        raise _error(path, numbers[cycles[0][0] - 1], f"cycle in the heads: {path_text}")


def _parse_conll(path: str, block: list[tuple[int, str]], fmt: str, multiroot: bool) -> DepSentence:
    """A CoNLL-U or CoNLL-X sentence; CoNLL-X has no multiword tokens or empty nodes."""
    words: list[str] = []
    tags: list[str] = []
    xpos: list[str] = []
    heads: list[int] = []
    rels: list[str] = []
    numbers: list[int] = []
    lines: list[str] = []
    word_lines: list[int] = []
    for number, text in block:
        lines.append(text)
        if text.startswith("#"):
            continue
        cols = text.split("\t")
        _check_fields(path, number, cols, (10,))
        expected = len(words) + 1
        token_range = _RANGE_ID.fullmatch(cols[0]) if fmt == "conllu" else None
        empty_node = _EMPTY_ID.fullmatch(cols[0]) if fmt == "conllu" else None
        if token_range:
            first, last = int(token_range[1]), int(token_range[2])
            if first != expected or last <= first:
                raise _error(path, number, f"bad multiword range {cols[0]} at word {expected}")
            continue
        if empty_node:
            if int(empty_node[1]) != expected - 1 or int(empty_node[2]) == 0:
                raise _error(path, number, f"empty node {cols[0]} after word {expected - 1}")
            continue
        _check_id(path, number, cols[0], expected)
        heads.append(_parse_head(path, number, cols[_HEAD]))
        words.append(cols[1])
        tags.append(cols[3])
        xpos.append(cols[4])
        rels.append(cols[_DEPREL])
        numbers.append(number)
        word_lines.append(len(lines) - 1)
    if not words:
        raise _error(path, block[0][0], "sentence without words")
    _check_tree(path, heads, numbers, multiroot)
    return DepSentence(
        words=words,
        tags=tags,
        heads=heads,
        rels=rels if any(rel != "_" for rel in rels) else None,
        xpos=xpos,
        fmt=fmt,
        lines=lines,
        word_lines=word_lines,
        path=path,
        line=block[0][0],
    )


def _parse_malttab(path: str, block: list[tuple[int, str]], multiroot: bool) -> DepSentence:
    rows = [(number, text.split("\t")) for number, text in block]
    width = len(rows[0][1])
    for number, cols in rows:
        _check_fields(path, number, cols, (3, 4) if number == rows[0][0] else (width,))
    heads = [_parse_head(path, number, cols[2]) for number, cols in rows]
    numbers = [number for number, _ in rows]
    _check_tree(path, heads, numbers, multiroot)
    tags = [cols[1] for _, cols in rows]
    return DepSentence(
        words=[cols[0] for _, cols in rows],
        tags=tags,
        heads=heads,
        rels=[cols[3] for _, cols in rows] if width == 4 else None,
        xpos=list(tags),
        fmt="malttab",
        lines=[text for _, text in block],
        word_lines=list(range(len(rows))),
        path=path,
        line=block[0][0],
    )


def detect_format(path: str | os.PathLike[str]) -> str:
    """The format of a file: from its extension (``.conllu``, ``.conllx``/``.conll``,
    ``.malttab``), else from the first word line (10 columns: CoNLL-U, 3 or 4: MaltTab).

    Raises:
        DataError: when neither tells (the line that did not fit, or line 1 of an empty file).
    """
    path = str(path)
    fmt = _EXTENSIONS.get(Path(path).suffix.lower())
    if fmt is not None:
        return fmt
    for number, text in _read_lines(path):
        cols = text.split("\t")
        if not text.strip() or (text.startswith("#") and len(cols) not in (3, 4)):
            continue
        if len(cols) == 10:
            return "conllu"
        if len(cols) in (3, 4):
            return "malttab"
        raise _error(path, number, f"cannot tell the format from {len(cols)} columns")
    raise _error(path, 1, "empty file: no sentences")


def iter_dep(
    path: str | os.PathLike[str], fmt: str = "auto", multiroot: bool = False
) -> Iterator[DepSentence]:
    """Streams the sentences of a treebank, checking each (see the module docstring).

    Args:
        path: the file.
        fmt: one of ``FORMATS`` or ``"auto"`` (see ``detect_format``).
        multiroot: accept several words attached to the root (some CoNLL-X treebanks).

    Yields:
        DepSentence, in file order. O(file size) time, O(longest sentence) memory.

    Raises:
        DataError: on the first malformed line, or on a file without sentences.
        ValueError: on an unknown ``fmt``.
    """
    path = str(path)
    if fmt == "auto":
        fmt = detect_format(path)
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be 'auto' or one of {FORMATS}, got {fmt!r}")
    empty = True
    for block in _blocks(path):
        if fmt == "malttab":
            yield _parse_malttab(path, block, multiroot)
            empty = False
        elif all(text.startswith("#") for _, text in block):
            continue  # a comment block, e.g. a trailing document comment
        else:
            yield _parse_conll(path, block, fmt, multiroot)
            empty = False
    if empty:
        raise _error(path, 1, "empty file: no sentences")


def read_dep(
    path: str | os.PathLike[str], fmt: str = "auto", multiroot: bool = False
) -> list[DepSentence]:
    """All sentences of a treebank (``iter_dep`` collected)."""
    return list(iter_dep(path, fmt, multiroot))


def read_conllu(path: str | os.PathLike[str]) -> list[DepSentence]:
    """All sentences of a CoNLL-U file (one root per sentence, as UD requires)."""
    return read_dep(path, "conllu")


def read_conllx(path: str | os.PathLike[str], multiroot: bool = False) -> list[DepSentence]:
    """All sentences of a CoNLL-X file."""
    return read_dep(path, "conllx", multiroot)


def read_malttab(path: str | os.PathLike[str], multiroot: bool = False) -> list[DepSentence]:
    """All sentences of a MaltTab file (``FORM POS HEAD [DEPREL]``)."""
    return read_dep(path, "malttab", multiroot)


def _field(value: str) -> str:
    if not value or value != value.strip() or any(c in value for c in "\t\n\r"):
        raise ValueError(f"cannot write {value!r} as a CoNLL-U field")
    return value


def _conllu_lines(sentence: DepSentence) -> tuple[list[str], list[int]]:
    """The sentence as CoNLL-U lines and the index of each word's line.

    CoNLL-U input is copied; CoNLL-X keeps ID..FEATS and clears PHEAD/PDEPREL (they are not
    DEPS/MISC); MaltTab and hand-built sentences are synthesized, MaltTab's PTB tag going to XPOS
    (it is not a UPOS).
    """
    if sentence.fmt == "conllu" and sentence.lines is not None and sentence.word_lines:
        return list(sentence.lines), list(sentence.word_lines)
    if sentence.fmt == "conllx" and sentence.lines is not None and sentence.word_lines:
        lines = list(sentence.lines)
        for i in sentence.word_lines:
            lines[i] = "\t".join(lines[i].split("\t")[:8] + ["_", "_"])
        return lines, list(sentence.word_lines)
    xpos = sentence.xpos if sentence.xpos is not None else ["_"] * len(sentence)
    upos = sentence.tags if sentence.fmt == "conllu" else ["_"] * len(sentence)
    lines = [
        "\t".join([str(d), _field(word), "_", _field(u), _field(x), "_", "0", "_", "_", "_"])
        for d, (word, u, x) in enumerate(zip(sentence.words, upos, xpos), start=1)
    ]
    return lines, list(range(len(lines)))


def format_conllu(
    sentence: DepSentence, heads: Sequence[int], rels: Sequence[str] | None = None
) -> str:
    """One sentence as CoNLL-U text, its blank line included, with these heads and relations.

    The lines of a CoNLL-U input sentence are kept as ``write_conllu`` keeps them; only HEAD
    and DEPREL change. Lets a caller stream predictions into any text stream.

    Args:
        sentence: the input sentence.
        heads: n heads (1-based, 0 = root).
        rels: n relations, or None to write ``_``.

    Raises:
        ValueError: on a length mismatch, a head out of range or a relation that is not a valid
            field.
    """
    n = len(sentence)
    heads = list(heads)
    rels = list(rels) if rels is not None else ["_"] * n
    if len(heads) != n or len(rels) != n:
        raise ValueError(f"{n} words, {len(heads)} heads, {len(rels)} rels")
    if any(not 0 <= h <= n for h in heads):
        raise ValueError(f"heads {heads} out of range 0..{n}")
    lines, word_lines = _conllu_lines(sentence)
    for i, head, rel in zip(word_lines, heads, rels):
        cols = lines[i].split("\t")
        cols[_HEAD], cols[_DEPREL] = str(head), _field(rel)
        lines[i] = "\t".join(cols)
    return "".join(text + "\n" for text in lines) + "\n"


def write_conllu(
    sentences: Sequence[DepSentence],
    pred_heads: Sequence[Sequence[int]],
    pred_rels: Sequence[Sequence[str]] | None,
    path: str | os.PathLike[str],
) -> None:
    """Writes predicted trees as CoNLL-U, atomically (a temporary file, then ``os.replace``).

    Every line of a CoNLL-U input sentence (comments, multiword tokens, empty nodes, all other
    columns) is kept; only HEAD and DEPREL of the words change. Reading the file back gives the
    input sentences with the predicted heads and relations.

    Args:
        sentences: the input sentences.
        pred_heads: one list of n heads (1-based, 0 = root) per sentence.
        pred_rels: one list of n relations per sentence, or None to write ``_``.
        path: the output file.

    Raises:
        ValueError: on a length mismatch, a head out of range or a relation that is not a valid
            field (empty, or holding whitespace at its ends, a tab or a line end).
    """
    if len(pred_heads) != len(sentences):
        raise ValueError(f"{len(pred_heads)} head lists for {len(sentences)} sentences")
    if pred_rels is not None and len(pred_rels) != len(sentences):
        raise ValueError(f"{len(pred_rels)} relation lists for {len(sentences)} sentences")
    chunks: list[str] = []
    for k, sentence in enumerate(sentences):
        rels = pred_rels[k] if pred_rels is not None else None
        try:
            chunks.append(format_conllu(sentence, pred_heads[k], rels))
        except ValueError as error:
            raise ValueError(f"sentence {k}: {error}") from None
    with text_output(path) as handle:  # readers never see a half-written file
        handle.writelines(chunks)
