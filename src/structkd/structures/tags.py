"""Tag schemes for span labelling: IOB1, BIO (IOB2) and BIOES (IOBES), and spans <-> tags.

A tag is ``"O"`` or ``PREFIX-TYPE`` with ``PREFIX`` one of ``B I E S`` and a non-empty ``TYPE``
(which may itself contain ``-``). The schemes differ in which prefixes they use and where:

* **IOB1** (CoNLL-2003 as distributed): every entity token is ``I-``; ``B-`` only marks the first
  token of an entity that directly follows another entity of the same type.
* **BIO** / IOB2: the first token of every entity is ``B-``, the others ``I-``.
* **BIOES** / IOBES: ``S-`` for one-token entities, else ``B-`` ``I-``* ``E-``.

Spans are ``(start, end, type)`` with **half-open** token offsets, ``tokens[start:end]``.

The module sits in ``structures`` beside ``relative_labels`` (the grammar of a sequence-labeling
parser's labels): pure Python that the KD projections and label maps of ``kd`` read, which may
import nothing above ``structures``.

Decoding (:func:`to_spans`) uses the chunk-boundary rules of ``conlleval`` (Tjong Kim Sang,
CoNLL-2000 evaluation script), extended to ``S-`` tags as in its Python port and in ``seqeval``'s
default mode. The same rules decode all three schemes, and on ill-formed sequences they do what
the CoNLL scores assume: an ``I-X`` after ``O``, at the sentence start, or after another type starts
a new entity; a type change always closes the running entity. On B/I/O tags the rules are exactly
those of ``conlleval.pl``, which has no ``S-``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import lru_cache

SCHEMES: tuple[str, ...] = ("IOB1", "BIO", "BIOES")
"""Supported schemes, poorest first (``detect_scheme`` returns the richest one present)."""

SCHEME_PREFIXES: dict[str, tuple[str, ...]] = {
    "IOB1": ("B", "I"),
    "BIO": ("B", "I"),
    "BIOES": ("B", "I", "E", "S"),
}
"""Per scheme, the prefixes in tag-vocabulary order (see ``structkd.data.vocab.tag_vocab``)."""

Span = tuple[int, int, str]
"""``(start, end, type)``: an entity over tokens ``start .. end - 1`` (half-open)."""


@lru_cache(maxsize=4096)
def parse_tag(tag: str) -> tuple[str, str | None]:
    """Splits a tag into ``(prefix, type)``: ``"B-PER" -> ("B", "PER")``, ``"O" -> ("O", None)``.

    Raises:
        ValueError: for anything else (``"I-"`` without a type, ``"X-PER"``, ``"PER"``, ``""``),
            with the offending tag in the message.
    """
    if tag == "O":
        return "O", None
    if len(tag) >= 2 and tag[1] == "-":
        if tag[0] not in "BIES":
            raise ValueError(
                f"malformed tag {tag!r}: unknown prefix {tag[0]!r} (expected B, I, E, S)"
            )
        if len(tag) == 2:
            raise ValueError(f"malformed tag {tag!r}: no entity type after {tag!r}")
        return tag[0], tag[2:]
    raise ValueError(f"malformed tag {tag!r}: expected 'O' or PREFIX-TYPE such as 'B-PER'")


def check_scheme(scheme: str) -> str:
    """Returns ``scheme`` if it is one of :data:`SCHEMES`, else raises ValueError."""
    if scheme not in SCHEME_PREFIXES:
        raise ValueError(f"unknown tag scheme {scheme!r}; expected one of {', '.join(SCHEMES)}")
    return scheme


def _ends(prev: str, cur: str, prev_type: str | None, cur_type: str | None) -> bool:
    """Whether an entity ended between the previous token and this one (conlleval endOfChunk).

    Never true after ``O`` (type None), so callers test ``prev_type is not None`` first to let the
    type checker see that the closed entity has a type. The sentence end behaves like an ``O``,
    after which every running entity ends.
    """
    if prev in "ES":
        return True
    if prev in "BI" and cur in "BSO":
        return True
    return prev != "O" and prev_type != cur_type


def _starts(prev: str, cur: str, prev_type: str | None, cur_type: str | None) -> bool:
    """Whether an entity starts at this token (conlleval startOfChunk, with S-)."""
    if cur in "BS":
        return True
    if cur in "EI" and prev in "ESO":
        return True
    return cur != "O" and prev_type != cur_type


def to_spans(tags: Sequence[str], scheme: str | None = None) -> list[Span]:
    """Entities of one sentence's tags, with conlleval's boundary rules (see the module doc).

    Args:
        tags: the sentence's tags, e.g. ``["B-PER", "I-PER", "O", "I-LOC"]``.
        scheme: if given, tags must use only this scheme's prefixes (``E-``/``S-`` in a BIO
            sequence raise). Decoding itself is the same for every scheme.

    Returns:
        ``[(start, end, type), ...]`` half-open, in order; for the example
        ``[(0, 2, "PER"), (3, 4, "LOC")]``. O(N) time.

    Raises:
        ValueError: for a malformed tag or one outside ``scheme``, naming the tag.
    """
    allowed = SCHEME_PREFIXES[check_scheme(scheme)] if scheme is not None else None
    spans: list[Span] = []
    prev, prev_type = "O", None
    begin = 0
    for i, tag in enumerate(tags):
        cur, cur_type = parse_tag(tag)
        if allowed is not None and cur != "O" and cur not in allowed:
            raise ValueError(f"tag {tag!r} is not a {scheme} tag")
        if prev_type is not None and _ends(prev, cur, prev_type, cur_type):
            spans.append((begin, i, prev_type))
        if _starts(prev, cur, prev_type, cur_type):
            begin = i
        prev, prev_type = cur, cur_type
    if prev_type is not None:
        spans.append((begin, len(tags), prev_type))
    return spans


def from_spans(spans: Iterable[Span], length: int, scheme: str) -> list[str]:
    """Tags for ``length`` tokens holding exactly ``spans`` in ``scheme``.

    The inverse of :func:`to_spans`: ``to_spans(from_spans(s, n, scheme)) == sorted(s)``.

    Args:
        spans: ``(start, end, type)`` half-open, non-overlapping, any order.
        length: number of tokens.
        scheme: ``"IOB1"``, ``"BIO"`` or ``"BIOES"``.

    Raises:
        ValueError: for an empty, out-of-range or overlapping span, or an empty type.
    """
    check_scheme(scheme)
    tags = ["O"] * length
    last_end, last_type = -1, ""
    for start, end, type_ in sorted(spans):
        if not 0 <= start < end <= length:
            raise ValueError(f"span {(start, end, type_)} is empty or outside [0, {length})")
        if start < last_end:
            raise ValueError(f"span {(start, end, type_)} overlaps the previous span")
        if not type_:
            raise ValueError(f"span {(start, end, type_)} has an empty type")
        if scheme == "IOB1":
            tags[start:end] = [f"I-{type_}"] * (end - start)
            if start == last_end and type_ == last_type:
                tags[start] = f"B-{type_}"
        elif scheme == "BIO":
            tags[start:end] = [f"B-{type_}"] + [f"I-{type_}"] * (end - start - 1)
        elif end - start == 1:
            tags[start] = f"S-{type_}"
        else:
            tags[start:end] = [f"B-{type_}"] + [f"I-{type_}"] * (end - start - 2) + [f"E-{type_}"]
        last_end, last_type = end, type_
    return tags


def convert(tags: Sequence[str], src: str, dst: str) -> list[str]:
    """Re-tags one sentence from scheme ``src`` to ``dst`` (ill-formed input decoded as conlleval).

    Raises:
        ValueError: for a malformed tag or one outside ``src``.
    """
    return from_spans(to_spans(tags, src), len(tags), dst)


def detect_scheme(tag_sequences: Iterable[Sequence[str]]) -> str:
    """The tag scheme of a corpus: ``"BIOES"``, ``"BIO"`` or ``"IOB1"``.

    Evidence, strongest first:

    1. any ``E-`` or ``S-`` tag -> ``"BIOES"``. A corpus mixing BIOES and IOB1/BIO tags is
       reported as BIOES, the richest scheme, whose decoder reads the other tags the same way.
    2. any ``B-X`` that does not directly follow a token of type X -> ``"BIO"`` (IOB1 uses B- only
       between two adjacent X entities). A BIO corpus with a few ill-formed ``I-`` starts, such as
       CoNLL-2002, stays BIO.
    3. any entity that starts with ``I-`` -> ``"IOB1"``.
    4. otherwise (no entity, or only adjacent-entity B- tags) -> ``"BIO"``.

    Every tag is validated, so this doubles as a check of the corpus. O(total tags).

    Raises:
        ValueError: for a malformed tag, naming it.
    """
    bioes = bio = iob1 = False
    for tags in tag_sequences:
        prev, prev_type = "O", None
        for tag in tags:
            cur, cur_type = parse_tag(tag)
            if cur in "ES":
                bioes = True
            elif cur == "B" and not (prev in "BI" and prev_type == cur_type):
                bio = True
            elif cur == "I" and (prev == "O" or prev_type != cur_type):
                iob1 = True
            prev, prev_type = cur, cur_type
    if bioes:
        return "BIOES"
    if bio or not iob1:
        return "BIO"
    return "IOB1"


def entity_types(tag_sequences: Iterable[Sequence[str]]) -> list[str]:
    """The sorted entity types used by a corpus' tags (``["LOC", "ORG", "PER"]``).

    Raises:
        ValueError: for a malformed tag, naming it.
    """
    types: set[str] = set()
    for tags in tag_sequences:
        for tag in tags:
            type_ = parse_tag(tag)[1]
            if type_ is not None:
                types.add(type_)
    return sorted(types)


def allowed_transitions(
    tags: Sequence[str], scheme: str
) -> tuple[list[bool], list[list[bool]], list[bool]]:
    """Which tags may start a sentence, follow one another and end a sentence in ``scheme``.

    A sequence is well formed when every entity is spelt as the scheme spells it (the sequences
    :func:`from_spans` writes): in BIOES an entity is ``S-X`` or ``B-X I-X* E-X``; in BIO
    (IOB2) it is ``B-X I-X*``, so ``I-X`` only continues an ``X``. IOB1 is not constrained
    here (its ``B-`` depends on the previous entity's type, which every tag sequence encodes).

    Args:
        tags: the tag inventory (e.g. ``Vocabularies.tags``).
        scheme: ``BIOES`` or ``BIO``.

    Returns:
        ``(start [L], transitions [L][L], end [L])`` booleans; ``transitions[a][c]`` allows tag
        ``a`` followed by tag ``c``.

    Raises:
        ValueError: for a scheme other than BIOES and BIO, or a tag outside it.
    """
    if scheme not in ("BIOES", "BIO"):
        raise ValueError(f"constrained decoding supports BIOES and BIO, not {scheme!r}")
    parsed = [parse_tag(t) for t in tags]
    for tag, (prefix, _) in zip(tags, parsed):
        if prefix != "O" and prefix not in SCHEME_PREFIXES[scheme]:
            raise ValueError(f"tag {tag!r} is not a {scheme} tag")
    inside = ("I", "E") if scheme == "BIOES" else ("I",)  # continue an open entity
    open_after = ("B", "I") if scheme == "BIOES" else ()  # must be continued (BIOES only)

    def follows(prev: tuple[str, str | None], cur: tuple[str, str | None]) -> bool:
        if cur[0] in inside:  # continues an entity of its own type
            return prev[0] in ("B", "I") and prev[1] == cur[1]
        return prev[0] not in open_after  # O, B-, S- start afresh once the last entity closed

    start = [p not in inside for p, _ in parsed]
    end = [p not in open_after for p, _ in parsed]
    transitions = [[follows(a, c) for c in parsed] for a in parsed]
    return start, transitions, end
