"""KD methods are registered objects (``structkd.kd.methods``): the config and the command line
take every registered name, a pair offers exactly the methods it has primitives for, and a new
method is one object: registered, it distils through the trainer with no task or trainer code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

from structkd.cli import _parser as build_parser
from structkd.config import ConfigError, DistillConfig, kd_method_names
from structkd.kd import methods as registry
from structkd.kd.methods import KDPair, Stats, get_method, method_names, methods_for
from structkd.kd.methods.token import TokenKD
from structkd.models.pairs import pair_of
from structkd.train.distill import Distiller
from test_teacher_cache import TOKENS, kd_losses, tagger

pytestmark = pytest.mark.usefixtures("one_thread")

PAPER = {"structural", "token", "posterior", "topk", "topwk", "top1", "substructure"}


def test_every_registered_method_is_a_config_and_command_line_choice() -> None:
    assert set(method_names()) == PAPER
    assert set(kd_method_names()) == {*PAPER, "none"}
    for name in method_names():
        assert get_method(name).name == name
        assert DistillConfig(method=name).method == name
    parser = build_parser()
    args = parser.parse_args(["distill", "c.yaml", "--method", "topwk"])
    assert args.method == "topwk"
    with pytest.raises(SystemExit):
        parser.parse_args(["distill", "c.yaml", "--method", "bogus"])


def test_an_unknown_method_is_refused_naming_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"distill.method: expected one of 'structural' \|"):
        DistillConfig(method="bogus")
    with pytest.raises(KeyError, match="choose one of structural, token"):
        get_method("bogus")


def test_a_pair_offers_the_methods_it_has_primitives_for() -> None:
    teacher, student = tagger("crf", seed=1), tagger("maxent", seed=2)
    assert set(methods_for(pair_of(teacher, student))) == PAPER


class HalfTokenKD(TokenKD):
    """A method written outside structkd: half the Token KD loss."""

    name = "half-token"

    def loss(self, pair: KDPair, targets: Any, output: Any, config: Any, stats: Stats) -> Tensor:
        return 0.5 * super().loss(pair, targets, output, config, stats)


@pytest.mark.parametrize("cache_teacher", [True, False])
def test_a_new_method_is_one_registered_object(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cache_teacher: bool
) -> None:
    """Registered, a new method is accepted by the config and distils through the ``Distiller``
    (its targets cached per sentence by its layout, or computed per batch): its losses are
    half of Token KD's on the same batches."""
    monkeypatch.setattr(registry, "_METHODS", dict(registry._METHODS))
    registry.register_method(HalfTokenKD())
    with pytest.raises(ValueError, match="registered already"):
        registry.register_method(HalfTokenKD())
    teacher, student = tagger("crf", seed=1).eval(), tagger("crf", seed=2, char_filters=0)
    corpus = [0] * len(TOKENS)

    def losses(method: str) -> list[Tensor]:
        config = DistillConfig(method=method, cache_teacher=cache_teacher)
        d = Distiller([teacher], config, TOKENS, corpus, student, tmp_path / method, ["t"])
        assert (d.targets is not None) == cache_teacher
        return kd_losses(d, student, TOKENS, corpus)

    half, full = losses("half-token"), losses("token")
    assert len(half) == len(full) > 1
    for h, f in zip(half, full):
        assert bool((f > 0).all())
        torch.testing.assert_close(h, 0.5 * f, rtol=0, atol=0)


def test_a_dependency_pair_has_no_posterior_kd() -> None:
    """Posterior KD needs per-token teacher marginals on a tagger's tokens; the parser pair does
    not provide them, and the trainer's error names the methods it does."""
    from test_dep_kd_baselines import _models

    teacher, student = _models("teacher-biaffine.yaml")
    assert set(methods_for(pair_of(teacher, student))) == PAPER - {"posterior"}


@pytest.mark.parametrize("method", ["token", "substructure"])
def test_a_span_teacher_refuses_per_token_methods_in_one_line(tmp_path: Path, method: str) -> None:
    """A semi-Markov teacher has no per-token scores: Token KD and score matching are refused
    with a ConfigError naming what it offers (no TypeError from deep inside a loss)."""
    teacher, student = tagger("span", seed=1).eval(), tagger("maxent", seed=2)
    config = DistillConfig(method=method)
    with pytest.raises(ConfigError) as error:
        Distiller([teacher], config, TOKENS, [0] * len(TOKENS), student, tmp_path, ["t"])
    message = str(error.value)
    assert message.startswith(f"distill.method={method} is not available for task ner with a ")
    offered = "structural, posterior, topk, topwk, top1"
    assert f"SemiMarkovCRF teacher; choose one of {offered}" in message
    assert not any(tmp_path.iterdir())  # nothing cached
