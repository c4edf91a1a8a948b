"""Sentences, and readers/writers for CoNLL column files, WikiAnn TSV files and plain text.

Every reader streams (one sentence in memory at a time) through an ``iter_*`` generator; the
``read_*`` functions are ``list(iter_*(...))``. Problems in a file raise
:class:`~structkd.data.errors.DataError` naming the file and line; nothing else escapes a reader
whatever the bytes (tested by fuzzing).

Common rules: lines end at ``\\n`` (CRLF tolerated), a UTF-8 byte-order mark is dropped, and a
file that is not valid UTF-8 is read as Latin-1 unless ``encoding`` is given. A file without any
sentence is an error. Tags are validated (``structkd.structures.tags.parse_tag``) but their
scheme is not: that is a property of a corpus (``tags.detect_scheme``).
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TextIO

from structkd.data.conllu import iter_dep
from structkd.data.errors import DataError
from structkd.data.textio import PathLike, iter_lines, resolve_encoding
from structkd.data.tokenize import tokenize
from structkd.io import text_output
from structkd.structures.tags import parse_tag

FORMATS: tuple[str, ...] = ("auto", "conll", "wikiann", "text", "raw", "conllu", "malttab")
"""Values of the ``fmt`` argument of :func:`iter_sentences` / :func:`read_ner`."""

DOCSTART = "-DOCSTART-"

_COLUMN_SEP = re.compile(r"[ \t]+")
_INDEX = re.compile(r"[0-9]{1,9}")
_CONLLU_ID = re.compile(
    r"[0-9]{1,9}(?:[-.][0-9]{1,9})?"
)  # a word, a multiword range, an empty node
_BAD_TOKEN = re.compile(r"[ \t\n]")
_DETECT_LINES = 200


@dataclass(frozen=True)
class Sentence:
    """One sentence of a corpus: tokens, optional gold tags and optional extra columns.

    Holds file contents only (no ids, tensors or predictions). Frozen: fields cannot be
    reassigned, but the lists are shared, not copied, so do not mutate them.

    Attributes:
        tokens: the words, at least one.
        tags: gold tags, one per token, or None for unlabeled text.
        columns: extra CoNLL columns (e.g. POS and chunk tags in CoNLL-2003), column-major:
            ``columns[k][i]`` is column ``k`` of token ``i``.
        line: 1-based line of the first token in its file, for messages; not compared.

    Raises:
        ValueError: for no tokens, or tags / a column whose length differs from the tokens'.
    """

    tokens: list[str]
    tags: list[str] | None = None
    columns: list[list[str]] = field(default_factory=list)
    line: int | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        n = len(self.tokens)
        if n == 0:
            raise ValueError("a sentence needs at least one token")
        if self.tags is not None and len(self.tags) != n:
            raise ValueError(f"{len(self.tags)} tags for {n} tokens")
        for k, column in enumerate(self.columns):
            if len(column) != n:
                raise ValueError(f"extra column {k} has {len(column)} entries for {n} tokens")

    def __len__(self) -> int:
        return len(self.tokens)


def _check_tag(path: PathLike, number: int, tag: str) -> None:
    try:
        parse_tag(tag)
    except ValueError as e:
        raise DataError(path, str(e), number) from e


def _no_sentences(path: PathLike, saw_lines: bool, skipped: str = "blank") -> DataError:
    if not saw_lines:
        return DataError(path, "the file is empty")
    return DataError(path, f"no sentences: the file holds only {skipped} lines")


def _tag_index(path: PathLike, number: int, tag_column: int | None, n_columns: int) -> int | None:
    """The tag column as an index in ``0 .. n_columns - 1``, or None for an unlabeled file."""
    if tag_column is None or n_columns == 1:
        return None
    if not -n_columns <= tag_column < n_columns:
        raise DataError(
            path, f"tag column {tag_column} does not exist: {n_columns} columns", number
        )
    index = tag_column % n_columns
    if index == 0:
        raise DataError(path, "the tag column cannot be the token column (column 0)", number)
    return index


def _conll_sentence(rows: list[list[str]], tag_index: int | None, line: int) -> Sentence:
    tokens = [row[0] for row in rows]
    tags = None if tag_index is None else [row[tag_index] for row in rows]
    extra = [k for k in range(1, len(rows[0])) if k != tag_index]
    return Sentence(tokens, tags, [[row[k] for row in rows] for k in extra], line)


def iter_conll(
    path: PathLike, tag_column: int | None = -1, encoding: str | None = None
) -> Iterator[Sentence]:
    """Streams sentences from a CoNLL-2000/2002/2003 style column file.

    One token per line, columns separated by spaces and/or tabs (only those: a token may contain
    other whitespace-like characters), the token first; a blank line ends a sentence; lines whose
    first column is ``-DOCSTART-`` are skipped and also end a sentence (CoNLL-2002 Dutch has no
    blank line after them). Every token line must have as many columns as the file's first one. A
    one-column file is unlabeled (``tags`` None). Columns other than the token and the tag go to
    ``Sentence.columns`` in file order.

    Args:
        path: the file.
        tag_column: index of the tag column, Python-style (-1 = last); None = no tags, all
            non-token columns are extra columns.
        encoding: None = UTF-8 with Latin-1 fallback (see the module doc).

    Yields:
        Sentence, with ``line`` set. O(bytes) time, memory of one sentence.

    Raises:
        DataError: empty file or no sentences; a line with a different column count (naming both
            lines); a malformed tag; a tag column that does not exist or is the token column.
    """
    encoding = resolve_encoding(path, encoding)
    n_columns = first_line = 0
    tag_index: int | None = None
    rows: list[list[str]] = []
    start = 0
    saw_lines = found = False
    for number, text in iter_lines(path, encoding):
        saw_lines = True
        stripped = text.strip(" \t")
        fields = _COLUMN_SEP.split(stripped) if stripped else []
        if not fields or fields[0] == DOCSTART:
            if rows:
                yield _conll_sentence(rows, tag_index, start)
                found, rows = True, []
            continue
        if not n_columns:
            n_columns, first_line = len(fields), number
            tag_index = _tag_index(path, number, tag_column, n_columns)
        elif len(fields) != n_columns:
            raise DataError(
                path,
                f"expected {n_columns} columns as on line {first_line}, found {len(fields)}",
                number,
            )
        if tag_index is not None:
            _check_tag(path, number, fields[tag_index])
        if not rows:
            start = number
        rows.append(fields)
    if rows:
        yield _conll_sentence(rows, tag_index, start)
    elif not found:
        raise _no_sentences(path, saw_lines, "blank or -DOCSTART-")


def iter_wikiann(path: PathLike, encoding: str | None = None) -> Iterator[Sentence]:
    """Streams sentences from a WikiAnn file (Rahimi et al. 2019): ``index<TAB>token<TAB>tag``.

    Lines are split on TAB only (a German token is a left-to-right mark, others hold soft
    hyphens). ``index`` is the token's 0-based position; an index 0 also starts a new sentence
    when the blank line before it is missing. Spaces around the index and tag are ignored; the
    token is kept exactly.

    Raises:
        DataError: empty file or no sentences; a line without exactly 3 tab-separated fields; a
            non-numeric or out-of-sequence index; an empty token; a malformed tag.
    """
    rows: list[tuple[str, str]] = []
    start = 0
    saw_lines = found = False
    for number, text in iter_lines(path, encoding):
        saw_lines = True
        if not text.strip(" \t"):
            if rows:
                yield Sentence([t for t, _ in rows], [g for _, g in rows], line=start)
                found, rows = True, []
            continue
        fields = text.split("\t")
        if len(fields) != 3:
            raise DataError(
                path,
                f"expected index<TAB>token<TAB>tag, found {len(fields)} tab-separated fields",
                number,
            )
        index, token, tag = fields[0].strip(" "), fields[1], fields[2].strip(" ")
        if not _INDEX.fullmatch(index):
            raise DataError(path, f"token index {index!r} is not a number up to 999999999", number)
        if int(index) == 0 and rows:
            yield Sentence([t for t, _ in rows], [g for _, g in rows], line=start)
            found, rows = True, []
        if int(index) != len(rows):
            raise DataError(
                path, f"token index {index} out of sequence: expected {len(rows)}", number
            )
        if not token:
            raise DataError(path, "empty token", number)
        _check_tag(path, number, tag)
        if not rows:
            start = number
        rows.append((token, tag))
    if rows:
        yield Sentence([t for t, _ in rows], [g for _, g in rows], line=start)
    elif not found:
        raise _no_sentences(path, saw_lines)


def iter_text(
    path: PathLike, encoding: str | None = None, raw: bool = False
) -> Iterator[Sentence]:
    """Streams unlabeled sentences from plain text: one per line, tokens split on whitespace
    (``raw``: by the rule-based tokenizer, ``structkd.data.tokenize``, which also splits off
    punctuation: ``"Monday."`` -> ``Monday``, ``.``).

    Any Unicode whitespace separates tokens; blank lines are skipped; ``tags`` is None.

    Raises:
        DataError: empty file or only blank lines.
    """
    saw_lines = found = False
    for number, text in iter_lines(path, encoding):
        saw_lines = True
        tokens = [t.text for t in tokenize(text)] if raw else text.split()
        if tokens:
            found = True
            yield Sentence(tokens, line=number)
    if not found:
        raise _no_sentences(path, saw_lines)


def iter_conllu_words(path: PathLike, encoding: str | None = None) -> Iterator[Sentence]:
    """Streams the words of a CoNLL-U treebank (its FORM column) as unlabeled sentences.

    ``#`` comment lines, multiword-token lines (``1-2``) and empty nodes (``1.1``) are skipped:
    a sentence is its syntactic words, as a parser reads it. ``tags`` is None.

    Raises:
        DataError: for a line that is not 10 tab-separated fields with a CoNLL-U ID, an empty
            FORM, or a file with no sentence.
    """
    saw_lines = found = False
    words: list[str] = []
    start = 0
    for number, text in iter_lines(path, encoding):
        saw_lines = True
        if not text.strip():
            if words:
                yield Sentence(words, line=start)
                found, words = True, []
            continue
        if text.startswith("#"):
            continue
        fields = text.split("\t")
        if len(fields) != 10 or not _CONLLU_ID.fullmatch(fields[0]):
            raise DataError(
                path,
                f"expected a CoNLL-U line of 10 tab-separated fields, got {text[:40]!r}",
                number,
            )
        if not fields[0].isdigit():
            continue
        if not fields[1]:
            raise DataError(path, "empty FORM", number)
        if not words:
            start = number
        words.append(fields[1])
    if words:
        yield Sentence(words, line=start)
    elif not found:
        raise _no_sentences(path, saw_lines, "blank or comment")


def _looks_conllu(text: str) -> bool:
    fields = text.split("\t")
    return len(fields) == 10 and bool(_CONLLU_ID.fullmatch(fields[0]))


def _looks_wikiann(text: str) -> bool:
    fields = text.split("\t")
    return len(fields) == 3 and bool(_INDEX.fullmatch(fields[0].strip(" ")))


def _ends_with_tag(fields: Sequence[str]) -> bool:
    if len(fields) < 2:
        return False
    try:
        parse_tag(fields[-1])
    except ValueError:
        return False
    return True


def detect_format(path: PathLike, encoding: str | None = None) -> str:
    """Guesses ``"conllu"``, ``"wikiann"``, ``"conll"`` or ``"text"`` from the first 200
    non-blank lines (``"malttab"`` for a file named ``*.malttab``).

    * ``"conllu"`` (a treebank: its words are read, see :func:`iter_conllu_words`) if at least
      half of the lines that are not ``#`` comments are 10 tab-separated fields starting with a
      CoNLL-U ID (``1``, ``1-2``, ``1.1``): read as text, its comment lines would be tagged as
      sentences and its 10 columns as tokens;
    * ``"wikiann"`` if at least half of them are ``integer<TAB>token<TAB>tag``;
    * ``"conll"`` if a ``-DOCSTART-`` line occurs, or at least half of them have two or more
      columns ending in a well-formed tag, or all have one column and a blank line separates
      sentences (unlabeled CoNLL);
    * ``"text"`` otherwise: several tokens per line with no tag column.

    The "half" thresholds let a file with a few bad lines be read in its format, so that its
    reader reports them with their line numbers instead of the guess silently reading it as text:
    a line of running text almost never ends in a token such as ``O`` or ``B-PER``.

    A file of one-word lines without blank lines is therefore read as text (one-word sentences):
    pass ``fmt="conll"`` for a one-column file holding a single sentence. An empty file is
    ``"conll"``, whose reader then reports it.

    Raises:
        DataError: if the file cannot be opened or decoded.
    """
    if os.fspath(path).lower().endswith(".malttab"):
        return "malttab"
    lines = iter_lines(path, encoding)
    sample: list[list[str]] = []
    wikiann = tagged = conllu = comments = 0
    blank = docstart = False
    for _, text in itertools.takewhile(lambda _: len(sample) < _DETECT_LINES, lines):
        stripped = text.strip(" \t")
        if not stripped:
            blank = True
            continue
        fields = _COLUMN_SEP.split(stripped)
        if fields[0] == DOCSTART:
            docstart = True
            continue
        sample.append(fields)
        comments += text.startswith("#")
        conllu += _looks_conllu(text)
        wikiann += _looks_wikiann(text)
        tagged += _ends_with_tag(fields)
    lines.close()
    if not sample:
        return "conll"
    if conllu and 2 * conllu >= len(sample) - comments:
        return "conllu"
    if 2 * wikiann >= len(sample):
        return "wikiann"
    if docstart or 2 * tagged >= len(sample):
        return "conll"
    if blank and all(len(fields) == 1 for fields in sample):
        return "conll"
    return "text"


def iter_sentences(
    path: PathLike,
    fmt: str = "auto",
    tag_column: int | None = -1,
    encoding: str | None = None,
) -> Iterator[Sentence]:
    """Streams the sentences of an NER file in any supported format.

    Args:
        path: the file.
        fmt: ``"auto"`` (see :func:`detect_format`), ``"conll"``, ``"wikiann"``, ``"text"``
            (whitespace-separated words), ``"raw"`` (text for the rule-based tokenizer),
            ``"conllu"`` or ``"malttab"`` (a treebank's words only).
        tag_column: for CoNLL files, see :func:`iter_conll`.
        encoding: None = UTF-8 with Latin-1 fallback.

    Raises:
        ValueError: for an unknown ``fmt``.
        DataError: see the format's reader.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    encoding = resolve_encoding(path, encoding)
    if fmt == "auto":
        fmt = detect_format(path, encoding)
    if fmt == "wikiann":
        return iter_wikiann(path, encoding)
    if fmt in ("text", "raw"):
        return iter_text(path, encoding, raw=fmt == "raw")
    if fmt == "conllu":
        return iter_conllu_words(path, encoding)
    if fmt == "malttab":
        return iter_malttab_words(path)
    return iter_conll(path, tag_column, encoding)


def iter_malttab_words(path: PathLike) -> Iterator[Sentence]:
    """Streams the words of a MaltTab treebank (``word<TAB>POS<TAB>head``, e.g. the Penn
    Treebank sample) as unlabeled sentences, checked by the treebank reader.

    Raises:
        DataError: for a malformed line (see :func:`structkd.data.conllu.iter_dep`).
    """
    for s in iter_dep(path, "malttab", multiroot=True):
        yield Sentence(list(s.words), line=s.line)


def read_ner(
    path: PathLike, fmt: str = "auto", tag_column: int | None = -1, encoding: str | None = None
) -> list[Sentence]:
    """All sentences of an NER file; see :func:`iter_sentences`."""
    return list(iter_sentences(path, fmt, tag_column, encoding))


def read_conll(
    path: PathLike, tag_column: int | None = -1, encoding: str | None = None
) -> list[Sentence]:
    """All sentences of a CoNLL column file; see :func:`iter_conll`."""
    return list(iter_conll(path, tag_column, encoding))


def read_wikiann(path: PathLike, encoding: str | None = None) -> list[Sentence]:
    """All sentences of a WikiAnn TSV file; see :func:`iter_wikiann`."""
    return list(iter_wikiann(path, encoding))


def read_text(path: PathLike, encoding: str | None = None) -> list[Sentence]:
    """All sentences of a plain-text file; see :func:`iter_text`."""
    return list(iter_text(path, encoding))


def _check_token(token: str, sentence: int) -> None:
    if not token or _BAD_TOKEN.search(token):
        raise ValueError(
            f"sentence {sentence}: token {token!r} is empty or holds a space, tab or newline, "
            "which the column format cannot represent"
        )


def _check_written_tag(tag: str, what: str, sentence: int) -> None:
    try:
        parse_tag(tag)
    except ValueError as e:
        raise ValueError(f"sentence {sentence}: {what}: {e}") from e


def _write_rows(
    out: TextIO, sentences: Iterable[Sentence], predictions: Iterable[Sequence[str]]
) -> int:
    with_gold: bool | None = None
    count = 0
    predicted = iter(predictions)
    for count, sentence in enumerate(sentences, start=1):
        tags = next(predicted, None)
        if tags is None:
            raise ValueError(f"fewer predictions than sentences: none for sentence {count}")
        if len(tags) != len(sentence.tokens):
            raise ValueError(
                f"sentence {count}: {len(tags)} predicted tags for {len(sentence)} tokens"
            )
        if with_gold is None:
            with_gold = sentence.tags is not None
        elif with_gold != (sentence.tags is not None):
            raise ValueError(f"sentence {count}: gold tags on some sentences but not on others")
        gold = sentence.tags if sentence.tags is not None else [None] * len(sentence)
        for token, gold_tag, tag in zip(sentence.tokens, gold, tags):
            _check_token(token, count)
            _check_written_tag(tag, "predicted tag", count)
            if gold_tag is None:
                out.write(f"{token} {tag}\n")
            else:
                _check_written_tag(gold_tag, "gold tag", count)
                out.write(f"{token} {gold_tag} {tag}\n")
        out.write("\n")
    if next(predicted, None) is not None:
        raise ValueError(f"more predictions than sentences ({count})")
    return count


def write_conll(
    sentences: Iterable[Sentence],
    predictions: Iterable[Sequence[str]],
    path_or_file: PathLike | TextIO,
) -> int:
    """Writes ``token [gold] predicted`` lines, a blank line after each sentence.

    The layout ``conlleval`` reads: columns separated by one space, gold before predicted. The
    gold column is written when the sentences have tags (all or none of them must). Both
    arguments may be generators: nothing is held in memory beyond one sentence. What
    :func:`read_conll` reads, this writes back unchanged, except that a token ``-DOCSTART-`` (from
    another format) is written but skipped when read.

    Args:
        sentences: the input sentences.
        predictions: one tag list per sentence, in the same order.
        path_or_file: a path, written atomically (temporary file in the same directory, then
            ``os.replace``: on any error the previous file is untouched), or an open text file,
            written in place.

    Returns:
        The number of sentences written.

    Raises:
        ValueError: if the counts or lengths of sentences and predictions differ, gold tags are
            on some sentences only, a token is empty or holds a space, tab or newline, or a tag
            is malformed.
    """
    if isinstance(path_or_file, (str, os.PathLike)):
        with text_output(path_or_file) as out:
            return _write_rows(out, sentences, predictions)
    return _write_rows(path_or_file, sentences, predictions)
