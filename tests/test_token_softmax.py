"""TokenSoftmax against brute-force enumeration (shared conformance suite)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch

from structkd import TokenSoftmax

from conformance import Case, ConformanceSuite, Potentials

N_TAGS = 3


def draw(gen: torch.Generator, batch: int, max_len: int) -> Potentials:
    return {"logits": torch.randn(batch, max_len, N_TAGS, generator=gen, dtype=torch.float64)}


def brute_score(pots: Potentials, b: int, y: Sequence[int]) -> float:
    return float(sum(pots["logits"][b, i, t] for i, t in enumerate(y)))


def indicator(y: Sequence[int], max_len: int) -> torch.Tensor:
    out = torch.zeros(max_len, N_TAGS, dtype=torch.float64)
    for i, t in enumerate(y):
        out[i, t] = 1
    return out


def to_batch(ys: Sequence[Sequence[int]], max_len: int) -> torch.Tensor:
    out = torch.zeros(len(ys), max_len, dtype=torch.long)
    for b, y in enumerate(ys):
        out[b, : len(y)] = torch.tensor(y, dtype=torch.long)
    return out


CASE = Case(
    make=TokenSoftmax,
    draw=draw,
    enumerate=lambda n: list(itertools.product(range(N_TAGS), repeat=n)),
    brute_score=brute_score,
    indicator=indicator,
    to_batch=to_batch,
    from_batch=lambda y, b, n: tuple(y[b, :n].tolist()),
    crop=lambda pots, b, n: {"logits": pots["logits"][b : b + 1, :n]},
    count={3: 27},
)


class TestTokenSoftmax(ConformanceSuite):
    case = CASE
