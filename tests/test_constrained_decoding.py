"""Constrained decoding of MaxEnt taggers: the best well-formed tag sequence under the token
marginals. Oracle: brute force over every tag sequence of tiny sentences, with well-formedness
judged independently of the decoder (a sequence is well formed when writing its own entities
back in the scheme gives it unchanged, ``from_spans(to_spans(y)) == y``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from oracle import tag_sequences
from structkd.cli import main
from structkd.config import EncoderConfig, ModelConfig
from structkd.data.conll import read_ner
from structkd.export import export_model
from structkd.models.base import predict_sentences as predict_tags
from structkd.models.checkpoint import load_model, save_model
from structkd.models.heads import MaxEntHead
from structkd.models.tagger import build_tagger
from structkd.structures.tags import allowed_transitions, from_spans, to_spans
from structkd.structures.token_softmax import TokenSoftmax

FIXTURES = Path(__file__).parent / "fixtures" / "pipeline"


def _well_formed(tags: list[str], scheme: str) -> bool:
    return from_spans(to_spans(tags), len(tags), scheme) == tags


def _head(scheme: str) -> MaxEntHead:
    config = ModelConfig()
    config.head.kind = "maxent"
    config.head.tag_scheme = scheme  # type: ignore[assignment]
    tagger = build_tagger(config, [["a", "b", "c"]], [["B-PER", "O", "B-LOC"]])
    assert isinstance(tagger.head, MaxEntHead)
    return tagger.head


@pytest.mark.parametrize("scheme", ["BIOES", "BIO"])
def test_constrained_argmax_is_the_best_well_formed_sequence(scheme: str) -> None:
    head = _head(scheme)
    tags = head.vocab.tags  # O and the prefixes of PER and LOC
    gen = torch.Generator().manual_seed(0)
    lengths = torch.tensor([4, 3, 1, 2])
    logits = torch.randn(len(lengths), 4, len(tags), generator=gen) * 3
    structure = TokenSoftmax(logits, lengths)
    decoded = head.decode(structure)
    log_probs = logits.log_softmax(-1)
    for b, n in enumerate(lengths.tolist()):
        best, best_score = None, -float("inf")
        for ids in tag_sequences(n, len(tags)):
            seq = [tags[i] for i in ids]
            score = float(sum(log_probs[b, i, t] for i, t in enumerate(ids)))
            if _well_formed(seq, scheme) and score > best_score:
                best, best_score = seq, score
        assert decoded[b] == best, (b, decoded[b], best)


@pytest.mark.parametrize("scheme", ["BIOES", "BIO"])
def test_every_decoded_sequence_is_well_formed_and_argmax_stays_available(scheme: str) -> None:
    head = _head(scheme)
    gen = torch.Generator().manual_seed(1)
    lengths = torch.randint(1, 30, (64,), generator=gen)
    logits = torch.randn(64, 30, len(head.vocab.tags), generator=gen) * 4
    structure = TokenSoftmax(logits, lengths)
    assert all(_well_formed(t, scheme) for t in head.decode(structure))
    head.decoding = "argmax"
    plain = head.decode(structure)
    ids = logits.argmax(-1)
    assert plain == [[head.vocab.tags[t] for t in ids[b, :n]] for b, n in enumerate(lengths)]
    assert not all(_well_formed(t, scheme) for t in plain)  # what the constraint is for


def test_allowed_transitions_match_well_formedness_on_pairs() -> None:
    """Each allowed start, pair and end is one a well-formed sequence uses (and only those)."""
    for scheme, tags in [
        ("BIOES", ["O", "B-A", "I-A", "E-A", "S-A", "B-B", "I-B", "E-B", "S-B"]),
        ("BIO", ["O", "B-A", "I-A", "B-B", "I-B"]),
    ]:
        start, transitions, end = allowed_transitions(tags, scheme)
        seqs = [
            [tags[i] for i in ids] for n in (1, 2, 3, 4) for ids in tag_sequences(n, len(tags))
        ]
        good = [s for s in seqs if _well_formed(s, scheme)]
        assert {s[0] for s in good} == {t for t, ok in zip(tags, start) if ok}
        assert {s[-1] for s in good} == {t for t, ok in zip(tags, end) if ok}
        pairs = {(a, c) for s in good for a, c in zip(s, s[1:])}
        assert pairs == {
            (a, c) for a, row in zip(tags, transitions) for c, ok in zip(tags, row) if ok
        }


def test_decode_option_of_evaluate_and_predict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--decode argmax`` switches a MaxEnt tagger to per-word argmax; on a CRF tagger or an
    export it is one error line, exit 2."""
    train = read_ner(FIXTURES / "train.conll")
    dirs = {}
    for kind in ("maxent", "crf"):
        torch.manual_seed(0)
        config = ModelConfig(EncoderConfig(word_dim=8, char_filters=0, lstm_hidden=6))
        config.head.kind = kind  # type: ignore[assignment]
        tagger = build_tagger(config, [s.tokens for s in train], [s.tags for s in train])  # type: ignore[misc]
        save_model(tagger.eval(), tmp_path / kind)
        dirs[kind] = tmp_path / kind
    test = str(FIXTURES / "test.conll")
    for decoding in ("argmax", "constrained"):
        assert main(["predict", str(dirs["maxent"]), test, f"--decode={decoding}"]) == 0
        blocks = capsys.readouterr().out.strip("\n").split("\n\n")
        tags = [[line.split(" ")[-1] for line in b.split("\n")] for b in blocks]
        expected = load_model(dirs["maxent"])
        assert isinstance(expected.head, MaxEntHead)
        expected.head.decoding = decoding
        words = [s.tokens for s in read_ner(FIXTURES / "test.conll")]
        assert tags == predict_tags(expected, words)  # type: ignore[arg-type]
    assert main(["evaluate", str(dirs["crf"]), test, "--decode=argmax"]) == 2
    assert capsys.readouterr().err == (
        "error: --decode applies to MaxEnt taggers (head kind maxent)\n"
    )
    export_model(dirs["maxent"], tmp_path / "export")
    assert main(["evaluate", str(tmp_path / "export"), test, "--decode=argmax"]) == 2
    assert capsys.readouterr().err.startswith("error: --decode applies to model directories")
