"""Structural KD against brute-force cross-entropy, for every supported (teacher, student) pair.

The oracle enumerates the teacher's whole output space for tiny sentences, maps each output to
the student's form (span sets become tag sequences) and sums ``-P_t(y) log P_s(y)``.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

import structkd as sk
from oracle.pairs import LENGTHS, MAX_LEN, N_TAGS, PAIRS, Pair, alone, draw, side
from structkd.kd import tag_names

CRF = side("linear_chain_start_end")


def crf(gen: torch.Generator) -> dict[str, torch.Tensor]:
    return draw(CRF, gen)


def token(gen: torch.Generator, n_tags: int = N_TAGS) -> dict[str, torch.Tensor]:
    return draw(side("token_softmax", n_tags), gen)


def arcs(gen: torch.Generator) -> dict[str, torch.Tensor]:
    return draw(side("head_selection"), gen)


def spans(gen: torch.Generator) -> dict[str, torch.Tensor]:
    return draw(side("semi_markov"), gen)


def proj_tree(**kw: Any) -> sk.DependencyCRF:
    return sk.DependencyCRF(**kw, projective=True)


def nonproj_tree(**kw: Any) -> sk.DependencyCRF:
    return sk.DependencyCRF(**kw, projective=False)


def brute_cross_entropy(pair: Pair, tp: dict, sp: dict, temperature: float) -> torch.Tensor:
    out = []
    for b, n in enumerate(LENGTHS.tolist()):
        teacher = alone(pair.teacher, tp, b, n).tempered(temperature)
        student = alone(pair.student, sp, b, n).tempered(temperature)
        total = torch.zeros((), dtype=torch.float64)
        for y_t, y_s in pair.outputs(n):
            p_t = teacher.log_prob(y_t).exp()[0]
            total = total - p_t * student.log_prob(y_s)[0]
        out.append(total * temperature**2)
    return torch.stack(out)


@pytest.mark.parametrize("temperature", [1.0, 2.0])
@pytest.mark.parametrize("pair", list(PAIRS))
def test_structural_kd_equals_brute_force_cross_entropy(pair: str, temperature: float) -> None:
    teacher, student, tp, sp = PAIRS[pair].build(seed=len(pair))
    scheme = PAIRS[pair].tag_scheme
    loss = sk.structural_kd_loss(
        teacher, student, temperature=temperature, reduction="none", tag_scheme=scheme
    )
    expected = brute_cross_entropy(PAIRS[pair], tp, sp, temperature)
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=1e-6)
    mean = sk.structural_kd_loss(teacher, student, temperature=temperature, tag_scheme=scheme)
    torch.testing.assert_close(mean, expected.mean())


def _same_distribution(pair: str) -> tuple[Any, Any, dict[str, torch.Tensor]]:
    tp, _ = PAIRS[pair].draw(seed=3)
    sp = {k: v.clone().requires_grad_() for k, v in tp.items()}
    if pair == "3 token->crf":  # an independent CRF: zero transitions, same emissions
        n_tags = tp["logits"].shape[-1]
        sp = {
            "emissions": tp["logits"].clone().requires_grad_(),
            "transitions": torch.zeros(n_tags, n_tags, dtype=torch.float64, requires_grad=True),
        }
    teacher = PAIRS[pair].teacher.make(**tp, lengths=LENGTHS)
    return teacher, PAIRS[pair].student.make(**sp, lengths=LENGTHS), sp


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
