"""Every set of labeled, non-overlapping spans of a tiny sentence: the output space of a
semi-Markov CRF (the tokens no span covers are O)."""

from __future__ import annotations

import functools

Span = tuple[int, int, int]  # (first token, last token, label), both ends inclusive
SpanSet = tuple[Span, ...]


@functools.cache
def span_sets(n: int, n_types: int, first: int = 0) -> tuple[SpanSet, ...]:
    """Every set of non-overlapping labeled spans on tokens first..n-1, spans sorted by start."""
    if first >= n:
        return ((),)
    out = list(span_sets(n, n_types, first + 1))  # token `first` is O
    for end in range(first, n):
        for label in range(n_types):
            out += [((first, end, label), *rest) for rest in span_sets(n, n_types, end + 1)]
    return tuple(out)


def count_span_sets(n: int, n_types: int) -> int:
    """Closed recursion c(n) = c(n-1) + R sum_{w=1..n} c(n-w), independent of the enumerator."""
    c = [1]
    for m in range(1, n + 1):
        c.append(c[m - 1] + n_types * sum(c[m - w] for w in range(1, m + 1)))
    return c[n]
