"""Projection of a span-based NER teacher (SemiMarkovCRF) onto tag-sequence students.

Structural KD needs the teacher's marginals of the *student's* parts (Wang et al., ACL 2021,
eq. 5). When the teacher scores labeled spans and the student scores BIOES/BIO tags, the two
factorizations are incompatible (the paper's Sec. 3.4, case 4), yet every span set maps to exactly
one tag sequence, so the teacher's tag marginals are exact sums of span-set probabilities:

* a token's tag is fixed by the span covering it: type r, whether the token starts it, whether
  it ends it (O when no span covers it). ``span_tag_marginals`` sums span marginals by these
  three facts, the MaxEnt (token softmax) student's parts;
* a CRF student also needs adjacent tag pairs (beyond the paper). Either tokens i and i+1 share a
  span (again sums of span marginals), or a unit (an O token or a span) ends at i and the next one
  starts at i+1. In the second case the semi-Markov property makes the two units conditionally
  independent given the boundary: ``P(u ends at i, v starts at i+1) = q(u) * P(v)`` with
  ``q(u) = w(prefix ending in u) / alpha[i+1]`` the posterior of the last unit of the prefix
  ``0..i``. All factors are probabilities (<= 1), so nothing overflows and no ``-inf`` is masked.

Everything is O(B (N^2 R + N R^2)), vectorized, and differentiable through the teacher's
potentials (a frozen teacher just yields constants).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from structkd.structures.semi_markov import SemiMarkovCRF

# Tag prefixes per scheme, in id order within a type.
_PREFIXES = {"BIOES": "BIES", "BIO": "BI"}


def _prefixes(scheme: str) -> str:
    if scheme not in _PREFIXES:
        raise ValueError(f"unknown tag scheme {scheme!r}; expected one of {sorted(_PREFIXES)}")
    return _PREFIXES[scheme]


def tag_names(n_types: int, scheme: str = "BIOES") -> list[str]:
    """Tag names in id order: ``["O", "B-0", "I-0", "E-0", "S-0", "B-1", ...]`` (BIOES).

    BIOES ids: O = 0, B-r = 1 + 4r, I-r = 2 + 4r, E-r = 3 + 4r, S-r = 4 + 4r.
    BIO ids: O = 0, B-r = 1 + 2r, I-r = 2 + 2r.
    """
    return ["O"] + [f"{prefix}-{r}" for r in range(n_types) for prefix in _prefixes(scheme)]


def _tag_id(scheme: str, label: int, starts: bool, ends: bool) -> int:
    """Id of the tag of a token of a type-``label`` span that starts/ends there."""
    prefixes = _prefixes(scheme)
    if scheme == "BIO":
        prefix = "B" if starts else "I"
    else:
        prefix = {(True, True): "S", (True, False): "B", (False, True): "E"}.get(
            (starts, ends), "I"
        )
    return 1 + len(prefixes) * label + prefixes.index(prefix)


def spans_to_tags(
    spans: list[tuple[int, int, int]], n: int, n_types: int, scheme: str = "BIOES"
) -> list[int]:
    """Tag ids of a sentence of ``n`` tokens holding the given ``(start, end, type)`` spans.

    Raises:
        ValueError: if a span lies outside the sentence, has an unknown type or overlaps another.
    """
    tags = [0] * n
    for start, end, label in spans:
        if not (0 <= start <= end < n and 0 <= label < n_types):
            raise ValueError(f"span {(start, end, label)} invalid for {n} tokens, {n_types} types")
        if any(tags[start : end + 1]):
            raise ValueError(f"span {(start, end, label)} overlaps another span")
        for i in range(start, end + 1):
            tags[i] = _tag_id(scheme, label, i == start, i == end)
    return tags


def _tag_ids(scheme: str, n_types: int, starts: bool, ends: bool, device: torch.device) -> Tensor:
    """LongTensor [R]: the tag id for each type, for a token that starts/ends its span."""
    ids = [_tag_id(scheme, r, starts, ends) for r in range(n_types)]
    return torch.tensor(ids, dtype=torch.long, device=device)


def _sum_tables(mu: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Cumulative sums of span quantities, shifted so every lookup below stays in range.

    Args:
        mu: [B, N, N, R] span quantities, zero outside ``i <= j < n``.

    Returns:
        Four [B, N + 1, N + 2, R] tables indexed ``[s + 1, e]``: the quantity itself ``mu[s, e]``;
        ``sum_{e' >= e} mu[s, e']``; ``sum_{s' <= s} mu[s', e]``;
        ``sum_{s' <= s, e' >= e} mu[s', e']`` (zero for row 0 and for e >= N).
    """
    padded = F.pad(mu, (0, 0, 0, 2, 1, 0))  # [B, N+1, N+2, R]
    from_end = padded.flip(2).cumsum(2).flip(2)  # [B, N+1, N+2, R]
    up_to_start = padded.cumsum(1)  # [B, N+1, N+2, R]
    return padded, from_end, up_to_start, from_end.cumsum(1)


def _scatter_tags(outside: Tensor, parts: list[tuple[Tensor, Tensor]], n_tags: int) -> Tensor:
    """[B, L, T] tag probabilities: O from ``outside`` [B, L], others from (ids [R], [B, L, R])."""
    out = torch.cat([outside[..., None], outside.new_zeros(*outside.shape, n_tags - 1)], -1)
    for ids, values in parts:
        out = out.index_add(-1, ids, values)
    return out


def _outside_marginals(teacher: SemiMarkovCRF) -> Tensor:
    """[B, N] P(token i is O) = ``exp(alpha[i] + beta[i + 1] - log Z)``, 0 on padding."""
    alpha, beta = teacher.log_alpha, teacher.log_beta  # [B, N+1]
    log_p = alpha[:, :-1] + beta[:, 1:] - teacher.log_partition[:, None]  # [B, N]
    tokens = torch.arange(alpha.shape[1] - 1, device=alpha.device) < teacher.lengths[:, None]
    return torch.where(tokens, log_p.exp(), torch.zeros_like(log_p))


def _starting_units(
    teacher: SemiMarkovCRF, scheme: str, tables: tuple[Tensor, Tensor, Tensor, Tensor]
) -> Tensor:
    """[B, N, T] P(a unit starts at token j and token j gets tag t) (O, S/B, or B in BIO).

    Args:
        teacher: the span distribution.
        scheme: "BIOES" or "BIO".
        tables: ``_sum_tables(teacher.marginals)``.
    """
    padded, from_end, _, _ = tables
    j = torch.arange(padded.shape[1] - 1, device=padded.device)
    n_tags, dev = len(tag_names(teacher.n_types, scheme)), padded.device
    return _scatter_tags(
        _outside_marginals(teacher),
        [
            (_tag_ids(scheme, teacher.n_types, True, True, dev), padded[:, j + 1, j]),
            (_tag_ids(scheme, teacher.n_types, True, False, dev), from_end[:, j + 1, j + 1]),
        ],
        n_tags,
    )


def span_tag_marginals(teacher: SemiMarkovCRF, scheme: str = "BIOES") -> Tensor:
    """Exact tag marginals ``P_teacher(tag_i = t)`` [B, N, T] of a span teacher.

    The tag of token i inside span (s, e, r) depends on ``s == i`` and ``e == i``, so with
    cumulative sums of the span marginals every tag costs O(1) per token (BIOES): S-r from
    ``mu[i, i, r]``, B-r from spans (i, e > i), E-r from spans (s < i, i), I-r from spans
    (s < i < e); in BIO, B-r = a span starts at i, I-r = it covers i without starting there.
    O is ``exp(alpha[i] + beta[i + 1] - log Z)``. Wang et al. (ACL 2021), Sec. 3.4, case 4.

    Complexity: O(B N^2 R).

    Args:
        teacher: the span distribution.
        scheme: "BIOES" or "BIO" (tag ids as in ``tag_names``).

    Returns:
        [B, N, T] with T = 1 + 4R (BIOES) or 1 + 2R (BIO); rows sum to 1, padding rows are 0.
    """
    mu = teacher.marginals  # [B, N, N, R]
    tables = _sum_tables(mu)
    _, _, up_to_start, inside = tables
    i = torch.arange(mu.shape[1], device=mu.device)
    n_types, dev = teacher.n_types, mu.device
    continuing = [
        (_tag_ids(scheme, n_types, False, True, dev), up_to_start[:, i, i]),  # spans (s < i, i)
        (_tag_ids(scheme, n_types, False, False, dev), inside[:, i, i + 1]),  # (s < i < e)
    ]
    starting = _starting_units(teacher, scheme, tables)  # [B, N, T]
    return starting + _scatter_tags(mu.new_zeros(mu.shape[:2]), continuing, starting.shape[-1])


def span_tag_pair_marginals(teacher: SemiMarkovCRF, scheme: str = "BIOES") -> Tensor:
    """Exact adjacent tag-pair marginals ``P_teacher(tag_i = a, tag_{i+1} = c)`` [B, N-1, T, T].

    What a linear-chain CRF student needs from a span teacher (beyond the paper, which distils
    span teachers into MaxEnt students only). Two disjoint cases:

    * tokens i and i+1 lie in one span (s, e, r): the pair is fixed by ``s == i`` and
      ``e == i + 1``; four sums of span marginals from cumulative tables;
    * a unit (O token or span) ends at i and another starts at i+1: the probability is
      ``q_i(u) * P(v starts at i+1)`` with ``q_i(O) = exp(alpha[i] - alpha[i+1])`` and
      ``q_i((s, i, r)) = exp(alpha[s] + s[s, i, r] - alpha[i+1])``, the posterior of the last
      unit of the prefix 0..i, which the semi-Markov boundary makes independent of the rest.

    Complexity: O(B (N^2 R + N R^2)).

    Args:
        teacher: the span distribution.
        scheme: "BIOES" or "BIO".

    Returns:
        [B, max(N - 1, 0), T, T]; entry i is zero unless i + 1 < length. Summing over the second
        tag gives ``span_tag_marginals`` at position i.
    """
    mu = teacher.marginals  # [B, N, N, R]
    batch, max_len, _, n_types = mu.shape
    dev = mu.device
    pairs = max(max_len - 1, 0)
    n_tags = len(tag_names(n_types, scheme))
    alpha = teacher.log_alpha  # [B, N+1]
    # Posterior of the last unit of the prefix 0..e; <= 1 because alpha[e+1] sums all of them.
    log_q = alpha[:, :-1, None, None] + teacher.span_scores - alpha[:, None, 1:, None]
    q = torch.where(teacher.span_mask[..., None], log_q.exp(), torch.zeros_like(log_q))
    q_padded, _, q_up_to_start, _ = _sum_tables(q)
    i = torch.arange(pairs, device=dev)
    ending = _scatter_tags(
        (alpha[:, i] - alpha[:, i + 1]).exp(),
        [
            (_tag_ids(scheme, n_types, True, True, dev), q_padded[:, i + 1, i]),
            (_tag_ids(scheme, n_types, False, True, dev), q_up_to_start[:, i, i]),
        ],
        n_tags,
    )  # [B, N-1, T]
    tables = _sum_tables(mu)
    starting = _starting_units(teacher, scheme, tables)[:, 1:]  # [B, N-1, T]
    across = ending[:, :, :, None] * starting[:, :, None, :]  # [B, N-1, T, T]

    padded, from_end, up_to_start, inside = tables
    within = mu.new_zeros(batch, pairs, n_tags * n_tags)
    for left_starts, right_ends, values in (
        (True, True, padded[:, i + 1, i + 1]),  # span (i, i+1)
        (True, False, from_end[:, i + 1, i + 2]),  # spans (i, e > i+1)
        (False, True, up_to_start[:, i, i + 1]),  # spans (s < i, i+1)
        (False, False, inside[:, i, i + 2]),  # spans (s < i, e > i+1)
    ):
        left = _tag_ids(scheme, n_types, left_starts, False, dev)
        right = _tag_ids(scheme, n_types, False, right_ends, dev)
        within = within.index_add(-1, left * n_tags + right, values)
    return across + within.view(batch, pairs, n_tags, n_tags)
