"""Unlabeled text at scale: corpora given as globs, exact duplicates dropped, a length filter.

Sentences stream through ``filter_sentences`` as their reader yields them; only a 16-byte digest
per distinct sentence is kept for duplicate removal (about 100 bytes a sentence with the set's
overhead: 100 MB for a million sentences).
"""

from __future__ import annotations

import glob
import hashlib
import os
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

from structkd.data.errors import DataError

T = TypeVar("T")

_GLOB = set("*?[")


def corpus_files(path: str) -> list[str]:
    """The files of a corpus given as a path or a glob (``**`` recursive), sorted by name.

    Raises:
        DataError: for a glob that matches no file.
    """
    if path.startswith("resource:") or not _GLOB & set(path):
        return [path]
    found = glob.glob(os.path.expanduser(path), recursive=True)
    files = sorted(f for f in found if os.path.isfile(f))
    if not files:
        raise DataError(path, "the pattern matches no file")
    return files


def filter_sentences(
    sentences: Iterable[T],
    words: Callable[[T], list[str]],
    dedup: bool = False,
    min_words: int = 0,
    max_words: int = 0,
    seen: set[bytes] | None = None,
    dropped: dict[str, int] | None = None,
) -> Iterator[T]:
    """The sentences kept, in order.

    Args:
        sentences: any iterable (read lazily).
        words: a sentence's words.
        dedup: drop a sentence whose words equal an earlier one's (exactly).
        min_words: drop sentences shorter than this (0: none).
        max_words: drop sentences longer than this (0: none).
        seen: digests of the sentences kept so far, shared across corpora (updated).
        dropped: counts of ``duplicate`` and ``length`` drops (updated).
    """
    seen = set() if seen is None else seen
    for sentence in sentences:
        tokens = words(sentence)
        if (min_words and len(tokens) < min_words) or (max_words and len(tokens) > max_words):
            if dropped is not None:
                dropped["length"] = dropped.get("length", 0) + 1
            continue
        if dedup:
            digest = hashlib.blake2b("\x00".join(tokens).encode("utf-8"), digest_size=16).digest()
            if digest in seen:
                if dropped is not None:
                    dropped["duplicate"] = dropped.get("duplicate", 0) + 1
                continue
            seen.add(digest)
        yield sentence
