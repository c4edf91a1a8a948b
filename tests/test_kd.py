"""Structural KD against brute-force cross-entropy, for every supported (teacher, student) pair.

The oracle enumerates the teacher's whole output space for tiny sentences, maps each output to
the student's form (span sets become tag sequences) and sums ``-P_t(y) log P_s(y)``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch

import structkd as sk
from structkd.kd import spans_to_tags, tag_names

N_TYPES = 2
N_TAGS = 1 + 4 * N_TYPES  # BIOES
MAX_LEN = 3
LENGTHS = torch.tensor([MAX_LEN, 2])


def _randn(gen: torch.Generator, *shape: int, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(*shape, generator=gen, dtype=torch.float64) * scale


# ---- output spaces ----------------------------------------------------------------------------


def tag_space(n: int, n_tags: int) -> Iterator[torch.Tensor]:
    for tags in itertools.product(range(n_tags), repeat=n):
        y = torch.zeros(1, MAX_LEN, dtype=torch.long)
        y[0, :n] = torch.tensor(tags, dtype=torch.long)
        yield y


def span_space(n: int) -> Iterator[list[list[tuple[int, int, int]]]]:
    def rec(start: int) -> Iterator[list[tuple[int, int, int]]]:
        if start >= n:
            yield []
            return
        yield from rec(start + 1)  # token `start` is O
        for end in range(start, n):
            for r in range(N_TYPES):
                for rest in rec(end + 1):
                    yield [(start, end, r), *rest]

    for spans in rec(0):
        yield [spans]


def _is_tree(heads: tuple[int, ...], projective: bool, multiroot: bool) -> bool:
    n = len(heads)
    if not multiroot and sum(h == 0 for h in heads) != 1:
        return False
    for d in range(1, n + 1):  # no cycles: every word reaches ROOT
        seen, h = set(), d
        while h != 0:
            if h in seen:
                return False
            seen.add(h)
            h = heads[h - 1]
    if projective:
        for d, h in enumerate(heads, start=1):
            lo, hi = min(d, h), max(d, h)
            for k in range(lo + 1, hi):  # every word inside the arc descends from its head
                a = k
                while a not in (0, h):
                    a = heads[a - 1]
                if a != h:
                    return False
    return True


def tree_space(n: int, projective: bool | None, multiroot: bool = False) -> Iterator[torch.Tensor]:
    """Head assignments; projective=None enumerates all of them (head selection)."""
    for heads in itertools.product(range(n + 1), repeat=n):
        if any(h == d for d, h in enumerate(heads, start=1)):
            continue
        if projective is not None and not _is_tree(heads, projective, multiroot):
            continue
        y = torch.zeros(1, MAX_LEN + 1, dtype=torch.long)
        y[0, 1 : n + 1] = torch.tensor(heads, dtype=torch.long)
        yield y


# ---- structures ---------------------------------------------------------------------------------


def crf(gen: torch.Generator, n_tags: int = N_TAGS) -> dict[str, torch.Tensor]:
    return {
        "emissions": _randn(gen, 2, MAX_LEN, n_tags),
        "transitions": _randn(gen, n_tags, n_tags),
        "start": _randn(gen, n_tags),
        "end": _randn(gen, n_tags),
    }


def token(gen: torch.Generator, n_tags: int = N_TAGS) -> dict[str, torch.Tensor]:
    return {"logits": _randn(gen, 2, MAX_LEN, n_tags, scale=1.5)}


def arcs(gen: torch.Generator) -> dict[str, torch.Tensor]:
    return {"arc_scores": _randn(gen, 2, MAX_LEN + 1, MAX_LEN + 1)}


def sibling(gen: torch.Generator) -> dict[str, torch.Tensor]:
    return {
        "arc_scores": _randn(gen, 2, MAX_LEN + 1, MAX_LEN + 1),
        "sib_scores": _randn(gen, 2, MAX_LEN + 1, MAX_LEN + 1, MAX_LEN + 1),
    }


def spans(gen: torch.Generator) -> dict[str, torch.Tensor]:
    return {"span_scores": _randn(gen, 2, MAX_LEN, MAX_LEN, N_TYPES)}


def proj_tree(**kw: Any) -> sk.DependencyCRF:
    return sk.DependencyCRF(**kw, projective=True)


def nonproj_tree(**kw: Any) -> sk.DependencyCRF:
    return sk.DependencyCRF(**kw, projective=False)


def span_to_tags(y: list[list[tuple[int, int, int]]], n: int, scheme: str) -> torch.Tensor:
    out = torch.zeros(1, MAX_LEN, dtype=torch.long)
    out[0, :n] = torch.tensor(spans_to_tags(y[0], n, N_TYPES, scheme), dtype=torch.long)
    return out


Space = Callable[[int], Iterator[Any]]
# name: (teacher class, teacher potentials, teacher space, student class, student potentials,
#        map teacher output -> student output, tag scheme)
PAIRS: dict[str, tuple[Any, ...]] = {
    "1a crf->crf": (
        sk.LinearChainCRF,
        crf,
        lambda n: tag_space(n, N_TAGS),
        sk.LinearChainCRF,
        crf,
        None,
        "BIOES",
    ),
    "2a crf->token": (
        sk.LinearChainCRF,
        crf,
        lambda n: tag_space(n, N_TAGS),
        sk.TokenSoftmax,
        token,
        None,
        "BIOES",
    ),
    "3 token->crf": (
        sk.TokenSoftmax,
        token,
        lambda n: tag_space(n, N_TAGS),
        sk.LinearChainCRF,
        crf,
        None,
        "BIOES",
    ),
    "token->token": (
        sk.TokenSoftmax,
        token,
        lambda n: tag_space(n, N_TAGS),
        sk.TokenSoftmax,
        token,
        None,
        "BIOES",
    ),
    "4 span->token": (
        sk.SemiMarkovCRF,
        spans,
        span_space,
        sk.TokenSoftmax,
        token,
        "BIOES",
        "BIOES",
    ),
    "4 span->token BIO": (
        sk.SemiMarkovCRF,
        spans,
        span_space,
        sk.TokenSoftmax,
        lambda g: token(g, 1 + 2 * N_TYPES),
        "BIO",
        "BIO",
    ),
    "span->crf": (sk.SemiMarkovCRF, spans, span_space, sk.LinearChainCRF, crf, "BIOES", "BIOES"),
    "1b proj->headsel": (
        proj_tree,
        arcs,
        lambda n: tree_space(n, True),
        sk.HeadSelection,
        arcs,
        None,
        "BIOES",
    ),
    "1b nonproj->headsel": (
        nonproj_tree,
        arcs,
        lambda n: tree_space(n, False),
        sk.HeadSelection,
        arcs,
        None,
        "BIOES",
    ),
    "headsel->headsel": (
        sk.HeadSelection,
        arcs,
        lambda n: tree_space(n, None),
        sk.HeadSelection,
        arcs,
        None,
        "BIOES",
    ),
    "2b sibling->headsel": (
        sk.SiblingDependencyCRF,
        sibling,
        lambda n: tree_space(n, True),
        sk.HeadSelection,
        arcs,
        None,
        "BIOES",
    ),
    "proj->proj": (proj_tree, arcs, lambda n: tree_space(n, True), proj_tree, arcs, None, "BIOES"),
    "nonproj->nonproj": (
        nonproj_tree,
        arcs,
        lambda n: tree_space(n, False),
        nonproj_tree,
        arcs,
        None,
        "BIOES",
    ),
}


def _build(pair: str, seed: int) -> tuple[Any, Any, dict[str, torch.Tensor], dict[str, Any]]:
    t_cls, t_pots, _, s_cls, s_pots, _, _ = PAIRS[pair]
    gen = torch.Generator().manual_seed(seed)
    tp, sp = t_pots(gen), s_pots(gen)
    return t_cls, s_cls, tp, sp


def _slice(pots: dict[str, torch.Tensor], b: int) -> dict[str, torch.Tensor]:
    """Sentence b of the batch; shared potentials (no batch axis) stay as they are."""
    shared = {"transitions", "start", "end"}
    return {k: v if k in shared else v[b : b + 1] for k, v in pots.items()}


def brute_cross_entropy(pair: str, tp: dict, sp: dict, temperature: float) -> torch.Tensor:
    t_cls, _, space, s_cls, _, scheme, _ = PAIRS[pair]
    out = []
    for b, n in enumerate(LENGTHS.tolist()):
        lengths = torch.tensor([n])
        teacher = t_cls(**_slice(tp, b), lengths=lengths).tempered(temperature)
        student = s_cls(**_slice(sp, b), lengths=lengths).tempered(temperature)
        total = torch.zeros((), dtype=torch.float64)
        for y in space(n):
            p_t = teacher.log_prob(y).exp()[0]
            y_s = y if scheme is None else span_to_tags(y, n, scheme)
            total = total - p_t * student.log_prob(y_s)[0]
        out.append(total * temperature**2)
    return torch.stack(out)


@pytest.mark.parametrize("temperature", [1.0, 2.0])
@pytest.mark.parametrize("pair", list(PAIRS))
def test_structural_kd_equals_brute_force_cross_entropy(pair: str, temperature: float) -> None:
    t_cls, s_cls, tp, sp = _build(pair, seed=len(pair))
    teacher = t_cls(**tp, lengths=LENGTHS)
    student = s_cls(**sp, lengths=LENGTHS)
    scheme = PAIRS[pair][6]
    loss = sk.structural_kd_loss(
        teacher, student, temperature=temperature, reduction="none", tag_scheme=scheme
    )
    expected = brute_cross_entropy(pair, tp, sp, temperature)
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=1e-6)
    mean = sk.structural_kd_loss(teacher, student, temperature=temperature, tag_scheme=scheme)
    torch.testing.assert_close(mean, expected.mean())


def _same_distribution(pair: str) -> tuple[Any, Any, dict[str, torch.Tensor]]:
    t_cls, s_cls, tp, _ = _build(pair, seed=3)
    sp = {k: v.clone().requires_grad_() for k, v in tp.items()}
    if pair == "3 token->crf":  # an independent CRF: zero transitions, same emissions
        n_tags = tp["logits"].shape[-1]
        sp = {
            "emissions": tp["logits"].clone().requires_grad_(),
            "transitions": torch.zeros(n_tags, n_tags, dtype=torch.float64, requires_grad=True),
        }
    return t_cls(**tp, lengths=LENGTHS), s_cls(**sp, lengths=LENGTHS), sp


@pytest.mark.parametrize("temperature", [1.0, 2.0])
@pytest.mark.parametrize(
    "pair",
    [
        "1a crf->crf",
        "3 token->crf",
        "token->token",
        "headsel->headsel",
        "proj->proj",
        "nonproj->nonproj",
    ],
)
def test_gradient_vanishes_when_student_equals_teacher(pair: str, temperature: float) -> None:
    teacher, student, sp = _same_distribution(pair)
    loss = sk.structural_kd_loss(teacher, student, temperature=temperature, reduction="sum")
    loss.backward()
    for name, tensor in sp.items():
        assert tensor.grad is not None
        torch.testing.assert_close(
            tensor.grad,
            torch.zeros_like(tensor),
            atol=1e-9,
            rtol=0,
            msg=f"{pair}: gradient of {name}",
        )


def test_gradient_flows_only_to_the_student() -> None:
    gen = torch.Generator().manual_seed(0)
    tp = {k: v.requires_grad_() for k, v in crf(gen).items()}
    sp = {k: v.requires_grad_() for k, v in crf(gen).items()}
    loss = sk.structural_kd_loss(
        sk.LinearChainCRF(**tp, lengths=LENGTHS), sk.LinearChainCRF(**sp, lengths=LENGTHS)
    )
    loss.backward()
    assert all(v.grad is None for v in tp.values())
    assert all(v.grad is not None and v.grad.abs().sum() > 0 for v in sp.values())


def test_local_temperature_renormalizes_each_slot() -> None:
    gen = torch.Generator().manual_seed(1)
    teacher = sk.LinearChainCRF(**crf(gen), lengths=LENGTHS)
    student = sk.TokenSoftmax(**token(gen), lengths=LENGTHS)
    q = sk.kd.project(teacher, student)
    tempered = sk.kd.local_temper(q, 2.0)
    expected = torch.softmax(q.log() / 2.0, -1)
    mask = LENGTHS[:, None] > torch.arange(MAX_LEN)[None]
    torch.testing.assert_close(tempered[mask], expected[mask])
    assert float(tempered[~mask].abs().sum()) == 0.0
    loss = sk.structural_kd_loss(
        teacher, student, temperature=2.0, temperature_mode="local", reduction="none"
    )
    manual = sk.kd.structural_kd_loss_from_marginals(tempered, student, 2.0, "none")
    torch.testing.assert_close(loss, manual)


def test_from_cached_marginals_matches_direct_loss() -> None:
    gen = torch.Generator().manual_seed(2)
    teacher = sk.SemiMarkovCRF(**spans(gen), lengths=LENGTHS)
    student = sk.LinearChainCRF(**crf(gen), lengths=LENGTHS)
    cached = sk.kd.project(teacher, student)
    assert isinstance(cached, tuple) and cached[1].shape == (2, MAX_LEN - 1, N_TAGS, N_TAGS)
    torch.testing.assert_close(
        sk.kd.structural_kd_loss_from_marginals(cached, student, reduction="sum"),
        sk.structural_kd_loss(teacher, student, reduction="sum"),
    )


def test_unsupported_pair_names_the_supported_ones() -> None:
    gen = torch.Generator().manual_seed(0)
    with pytest.raises(TypeError, match="LinearChainCRF -> TokenSoftmax"):
        sk.structural_kd_loss(sk.TokenSoftmax(**token(gen)), sk.HeadSelection(**arcs(gen)))
    with pytest.raises(TypeError, match="same kind of tree"):
        sk.structural_kd_loss(proj_tree(**arcs(gen)), nonproj_tree(**arcs(gen)))


def test_label_set_mismatch_is_a_clear_error() -> None:
    gen = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="tag sets"):
        sk.structural_kd_loss(sk.TokenSoftmax(**token(gen, 5)), sk.TokenSoftmax(**token(gen)))


def test_tag_names_layout() -> None:
    assert tag_names(2, "BIOES") == ["O", "B-0", "I-0", "E-0", "S-0", "B-1", "I-1", "E-1", "S-1"]
    assert tag_names(2, "BIO") == ["O", "B-0", "I-0", "B-1", "I-1"]
