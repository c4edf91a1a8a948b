"""The baseline KD losses against hand computations and brute force."""

from __future__ import annotations

import pytest
import torch

import structkd as sk
from oracle.pairs import LENGTHS, MAX_LEN, PAIRS, alone
from test_kd import crf, token


def _pair(name: str, seed: int = 0) -> tuple[object, object, dict, dict]:
    return PAIRS[name].build(seed)


def test_token_kd_is_per_token_kl_of_tempered_emissions() -> None:
    teacher, student, tp, sp = _pair("1a crf->crf")
    loss = sk.kd.token_kd_loss(teacher, student, temperature=2.0, reduction="none")
    for b, n in enumerate(LENGTHS.tolist()):
        p = torch.softmax(tp["emissions"][b, :n] / 2, -1)
        log_q = torch.log_softmax(sp["emissions"][b, :n] / 2, -1)
        expected = (p * (p.log() - log_q)).sum() * 4
        torch.testing.assert_close(loss[b], expected)


@pytest.mark.parametrize("pair", ["token->token", "headsel->headsel"])
def test_for_local_models_token_kd_is_structural_kd_minus_teacher_entropy(pair: str) -> None:
    teacher, student, _, _ = _pair(pair)
    structural = sk.structural_kd_loss(teacher, student, reduction="none")
    token = sk.kd.token_kd_loss(teacher, student, reduction="none")
    torch.testing.assert_close(token, structural - teacher.entropy)


def test_posterior_kd_is_kl_between_token_marginals() -> None:
    teacher, student, _, _ = _pair("1a crf->crf")
    loss = sk.kd.posterior_kd_loss(teacher, student, reduction="none")
    p, q = teacher.marginals, student.marginals
    for b, n in enumerate(LENGTHS.tolist()):
        expected = (p[b, :n] * (p[b, :n].log() - q[b, :n].log())).sum()
        torch.testing.assert_close(loss[b], expected)
    same = sk.kd.posterior_kd_loss(teacher, teacher, reduction="sum")
    assert abs(float(same)) < 1e-9


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("pair", ["1a crf->crf", "4 span->token", "1b proj->headsel"])
def test_topk_kd_matches_brute_force(pair: str, weighted: bool) -> None:
    teacher, student, tp, sp = _pair(pair, seed=4)
    k = 3
    loss = sk.kd.topk_kd_loss(
        teacher, student, k, weighted=weighted, reduction="none", tag_scheme=PAIRS[pair].tag_scheme
    )
    for b, n in enumerate(LENGTHS.tolist()):
        t_b = alone(PAIRS[pair].teacher, tp, b, n)
        s_b = alone(PAIRS[pair].student, sp, b, n)
        outputs = list(PAIRS[pair].outputs(n))  # (teacher's, student's)
        scores = torch.stack([t_b.score(y_t)[0] for y_t, _ in outputs])
        best = scores.argsort(descending=True)[:k]
        nll = torch.stack([-s_b.log_prob(outputs[i][1])[0] for i in best.tolist()])
        m = len(best)  # a sentence may have fewer than k structures
        weights = torch.softmax(scores[best], 0) if weighted else torch.full((m,), 1 / m)
        torch.testing.assert_close(loss[b], (weights.double() * nll).sum())


def test_topk_with_fewer_structures_than_k_uses_the_distinct_ones() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, MAX_LEN, 2, generator=gen, dtype=torch.float64)
    lengths = torch.tensor([3, 1])  # the second sentence has only 2 tag sequences
    teacher = sk.TokenSoftmax(logits, lengths)
    student = sk.TokenSoftmax(
        torch.randn(2, MAX_LEN, 2, generator=gen, dtype=torch.float64), lengths
    )
    loss = sk.kd.topk_kd_loss(teacher, student, 4, weighted=False, reduction="none")
    nll = -torch.log_softmax(student.logits[1, 0], -1)
    torch.testing.assert_close(loss[1], nll.mean())


def test_substructure_mse() -> None:
    teacher, student, tp, sp = _pair("1a crf->crf")
    loss = sk.kd.substructure_mse_loss(teacher, student, reduction="none")
    for b, n in enumerate(LENGTHS.tolist()):
        emission = (tp["emissions"][b, :n] - sp["emissions"][b, :n]).pow(2).mean()
        transition = (tp["transitions"] - sp["transitions"]).pow(2).mean()
        torch.testing.assert_close(loss[b], emission + transition)
    assert float(sk.kd.substructure_mse_loss(teacher, teacher)) == 0.0


def test_baselines_reject_mismatched_shapes() -> None:
    gen = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="same shape"):
        sk.kd.token_kd_loss(sk.TokenSoftmax(**token(gen, 5)), sk.LinearChainCRF(**crf(gen)))
    with pytest.raises(TypeError, match="per-token scores"):
        sk.kd.substructure_mse_loss(
            sk.SemiMarkovCRF(torch.zeros(1, 2, 2, 1)), sk.TokenSoftmax(**token(gen))
        )
