"""Every tag sequence of a tiny sentence: the output space of a linear chain or per-token
softmax (n_tags^n sequences)."""

from __future__ import annotations

import functools
import itertools

Tags = tuple[int, ...]


@functools.cache
def tag_sequences(n: int, n_tags: int) -> tuple[Tags, ...]:
    """Every sequence of n tag ids in 0..n_tags-1, in lexicographic order."""
    return tuple(itertools.product(range(n_tags), repeat=n))
