"""Brute-force enumeration of dependency trees, the oracle of the depdata tests."""

from __future__ import annotations

import itertools
from functools import cache

import numpy as np


def reaches_root(heads: tuple[int, ...], d: int) -> bool:
    """Whether following heads from word d ends at 0 (no cycle, no head out of range)."""
    seen = set()
    while d != 0:
        if d in seen or not 0 <= heads[d - 1] <= len(heads):
            return False
        seen.add(d)
        d = heads[d - 1]
    return True


@cache
def all_trees(n: int, single_root: bool) -> np.ndarray:
    """[T, n] every dependency tree over n words, by filtering all (n+1)^n head assignments."""
    trees = [
        heads for heads in itertools.product(range(n + 1), repeat=n)
        if all(h != d for d, h in enumerate(heads, start=1))
        and all(reaches_root(heads, d) for d in range(1, n + 1))
        and (not single_root or heads.count(0) == 1)
    ]
    return np.array(trees, dtype=np.int64).reshape(len(trees), n)
