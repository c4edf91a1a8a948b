"""String <-> id vocabularies, and the tag vocabulary whose order the models rely on."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from structkd.structures.tags import SCHEME_PREFIXES, check_scheme


class Vocab:
    """A bijection between strings and ids ``0 .. len - 1``.

    Special entries come first: ``pad`` (if any) gets id 0, then ``unk`` (if any), then the
    entries in the order given. With ``unk``, unknown strings map to its id; without, they raise
    KeyError. Serializable to JSON through :meth:`to_dict` / :meth:`from_dict`.

    Args:
        entries: the ordinary strings, in id order, without duplicates.
        unk: the stand-in for unknown strings, or None.
        pad: the padding string, or None.

    Raises:
        ValueError: for a duplicate entry (including one equal to ``unk`` or ``pad``).
    """

    def __init__(
        self, entries: Iterable[str], unk: str | None = None, pad: str | None = None
    ) -> None:
        self.unk = unk
        self.pad = pad
        specials = [s for s in (pad, unk) if s is not None]
        self._itos: list[str] = specials + list(entries)
        self._stoi: dict[str, int] = {}
        for i, s in enumerate(self._itos):
            if s in self._stoi:
                raise ValueError(f"duplicate vocabulary entry {s!r}")
            self._stoi[s] = i
        self.pad_index: int | None = None if pad is None else self._stoi[pad]
        self.unk_index: int | None = None if unk is None else self._stoi[unk]

    @classmethod
    def build(
        cls,
        sequences: Iterable[Sequence[str]],
        min_count: int = 1,
        max_size: int | None = None,
        unk: str | None = "<unk>",
        pad: str | None = "<pad>",
    ) -> Vocab:
        """Counts strings and keeps the frequent ones, most frequent first (ties by string).

        Args:
            sequences: e.g. the token lists of a training set.
            min_count: drop strings seen fewer times.
            max_size: keep at most this many ordinary entries (specials not counted).
            unk: see the class; the default maps rare and unseen strings to ``"<unk>"``.
            pad: see the class.
        """
        counts = Counter(s for seq in sequences for s in seq)
        for special in (unk, pad):
            if special is not None:
                counts.pop(special, None)
        kept = sorted(
            (s for s, c in counts.items() if c >= min_count), key=lambda s: (-counts[s], s)
        )
        return cls(kept[:max_size], unk=unk, pad=pad)

    def __len__(self) -> int:
        return len(self._itos)

    def __contains__(self, item: object) -> bool:
        return item in self._stoi

    def __iter__(self) -> Iterator[str]:
        return iter(self._itos)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Vocab):
            return NotImplemented
        return (self._itos, self.unk, self.pad) == (other._itos, other.unk, other.pad)

    def __repr__(self) -> str:
        return f"Vocab(size={len(self)}, unk={self.unk!r}, pad={self.pad!r})"

    def index(self, item: str) -> int:
        """The id of ``item`` (the unk id for an unknown string when ``unk`` is set).

        Raises:
            KeyError: for an unknown string and no ``unk``.
        """
        found = self._stoi.get(item, self.unk_index)
        if found is None:
            raise KeyError(f"{item!r} is not in the vocabulary and it has no unk entry")
        return found

    def string(self, index: int) -> str:
        """The string with id ``index``.

        Raises:
            IndexError: outside ``0 .. len - 1``.
        """
        if not 0 <= index < len(self._itos):
            raise IndexError(f"id {index} outside the vocabulary of size {len(self)}")
        return self._itos[index]

    def encode(self, items: Iterable[str]) -> list[int]:
        """Ids of ``items`` (see :meth:`index`)."""
        return [self.index(s) for s in items]

    def decode(self, indices: Iterable[int]) -> list[str]:
        """Strings of ``indices`` (see :meth:`string`)."""
        return [self.string(int(i)) for i in indices]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable description: ``{"entries": [...], "unk": ..., "pad": ...}``."""
        specials = {s for s in (self.pad, self.unk) if s is not None}
        return {
            "entries": [s for s in self._itos if s not in specials],
            "unk": self.unk,
            "pad": self.pad,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Vocab:
        """Inverse of :meth:`to_dict`.

        Raises:
            ValueError: if ``data`` is not such a description.
        """
        entries, unk, pad = data.get("entries"), data.get("unk"), data.get("pad")
        if not isinstance(entries, list) or not all(isinstance(s, str) for s in entries):
            raise ValueError("vocabulary description needs 'entries': a list of strings")
        for name, special in (("unk", unk), ("pad", pad)):
            if special is not None and not isinstance(special, str):
                raise ValueError(f"vocabulary description: {name!r} must be a string or null")
        return cls(entries, unk=unk, pad=pad)


def tag_vocab(types: Iterable[str], scheme: str) -> Vocab:
    """The tag vocabulary for entity ``types`` in ``scheme``, in the order models rely on.

    Id 0 is ``"O"``. With the types sorted and deduplicated, type number ``r`` gets, for BIOES,
    ``B-r = 1 + 4r, I-r = 2 + 4r, E-r = 3 + 4r, S-r = 4 + 4r``; for BIO and IOB1,
    ``B-r = 1 + 2r, I-r = 2 + 2r``. No unk and no pad: an unknown tag is an error.

    Args:
        types: entity types, e.g. ``["PER", "LOC", "ORG"]`` (see ``tags.entity_types``).
        scheme: ``"IOB1"``, ``"BIO"`` or ``"BIOES"``.

    Raises:
        ValueError: for an unknown scheme or an empty type.
    """
    prefixes = SCHEME_PREFIXES[check_scheme(scheme)]
    ordered = sorted(set(types))
    if "" in ordered:
        raise ValueError("entity types must be non-empty strings")
    return Vocab(["O"] + [f"{p}-{t}" for t in ordered for p in prefixes])
