"""Brute-force enumeration of head assignments and dependency trees, shared by the arc tests.

A per-sentence structure is a tuple ``heads`` of length n: ``heads[d - 1]`` is the head of word
``d`` (0 = ROOT). Batched (compact) form: LongTensor [B, N+1] with index 0 unused.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Sequence
from typing import Any

import torch

from conformance import Case, Potentials

Heads = tuple[int, ...]


@functools.cache
def head_assignments(n: int) -> tuple[Heads, ...]:
    """Every choice of a head in 0..n other than itself for each of n words: n^n of them."""
    choices = [[h for h in range(n + 1) if h != d] for d in range(1, n + 1)]
    return tuple(itertools.product(*choices))


def is_tree(heads: Heads) -> bool:
    """Every word reaches ROOT without a cycle."""
    for d in range(1, len(heads) + 1):
        seen = set()
        while d != 0:
            if d in seen:
                return False
            seen.add(d)
            d = heads[d - 1]
    return True


def is_projective(heads: Heads) -> bool:
    """No two arcs cross (ROOT at position 0 included)."""
    spans = [(min(d, h), max(d, h)) for d, h in enumerate(heads, start=1)]
    return not any(a < c < b < e for a, b in spans for c, e in spans)


@functools.cache
def trees(n: int, projective: bool, multiroot: bool) -> tuple[Heads, ...]:
    """Every dependency tree of n words of the given kind."""
    return tuple(
        y
        for y in head_assignments(n)
        if is_tree(y)
        and (multiroot or y.count(0) == 1 or n == 0)
        and (not projective or is_projective(y))
    )


def draw(gen: torch.Generator, batch: int, max_len: int) -> Potentials:
    size = max_len + 1
    return {"arc_scores": torch.randn(batch, size, size, generator=gen, dtype=torch.float64)}


def brute_score(pots: Potentials, b: int, y: Heads) -> float:
    return float(sum(pots["arc_scores"][b, d, h] for d, h in enumerate(y, start=1)))


def indicator(y: Heads, max_len: int) -> torch.Tensor:
    out = torch.zeros(max_len + 1, max_len + 1, dtype=torch.float64)
    for d, h in enumerate(y, start=1):
        out[d, h] = 1
    return out


def to_batch(ys: Sequence[Heads], max_len: int) -> torch.Tensor:
    out = torch.zeros(len(ys), max_len + 1, dtype=torch.long)
    for b, y in enumerate(ys):
        out[b, 1 : len(y) + 1] = torch.tensor(y, dtype=torch.long)
    return out


def arc_case(
    make: Callable[..., Any],
    enumerate_fn: Callable[[int], Sequence[Heads]],
    max_len: int,
    count: dict[int, int],
    has_topk: bool = True,
) -> Case:
    """A conformance Case for a structure over arc scores [B, N+1, N+1]."""
    return Case(
        make=make,
        draw=draw,
        enumerate=enumerate_fn,
        brute_score=brute_score,
        indicator=indicator,
        to_batch=to_batch,
        from_batch=lambda y, b, n: tuple(y[b, 1 : n + 1].tolist()),
        crop=lambda pots, b, n: {"arc_scores": pots["arc_scores"][b : b + 1, : n + 1, : n + 1]},
        max_len=max_len,
        count=count,
        has_topk=has_topk,
    )
