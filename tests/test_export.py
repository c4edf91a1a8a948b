"""Shipping a student: ONNX and TorchScript exports predict what the PyTorch model predicts,
token for token, on the bundled WikiAnn test slice and the dependency fixture; int8 exports
reload and predict; ``structkd export``/``predict`` and ``sk.load`` on both kinds of directory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

import structkd as sk
from structkd.cli import main
from structkd.config import EncoderConfig, HeadConfig, ModelConfig, ParserConfig
from structkd.data.conll import read_ner
from structkd.data.conllu import read_dep
from structkd.data.errors import DataError
from structkd.data.resources import resolve_path
from structkd.data.trees import is_tree
from structkd.export import ExportedModel, export_model
from structkd.export.decode import best_spans, eisner_heads, viterbi
from structkd.export.graph import ExportGraph, reverse_within
from structkd.models.checkpoint import load_model, save_model
from structkd.models.parser import build_dep_model
from structkd.models.tagger import build_tagger
from structkd.structures.dependency import DependencyCRF
from structkd.structures.linear_chain import LinearChainCRF
from structkd.structures.semi_markov import SemiMarkovCRF
from structkd.tasks import get_task

FIXTURES = Path(__file__).parent / "fixtures"
WIKIANN_TEST = [s.tokens for s in read_ner(resolve_path("resource:wikiann_en/test.tsv"))]
EWT_PATH = FIXTURES / "dep" / "en_ewt-dev-slice.conllu"
EWT = read_dep(EWT_PATH, "auto")


pytestmark = pytest.mark.usefixtures("one_thread")


def _fit(model: torch.nn.Module, batch: object, steps: int) -> None:
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(steps):
        loss = model.nll(batch).mean()  # type: ignore[operator]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Saved tiny models, trained a few steps so that their scores are not flat: the CRF (with
    casing features), MaxEnt and span taggers on the NER fixture, the sequence-labeling,
    head-selection and projective parsers (2-layer BiLSTMs, the last two with words only) on
    the EWT slice."""
    root = tmp_path_factory.mktemp("models")
    train = read_ner(FIXTURES / "pipeline" / "train.conll")
    out = {}
    for kind in ("crf", "maxent", "span"):
        torch.manual_seed(0)
        casing = 3 if kind == "crf" else 0  # the CRF also reads casing features
        encoder = EncoderConfig(
            word_dim=8, casing_dim=casing, char_dim=4, char_filters=6, lstm_hidden=6
        )
        tagger = build_tagger(
            ModelConfig(encoder, HeadConfig(kind=kind, span_dim=6)),  # type: ignore[arg-type]
            [s.tokens for s in train],
            [s.tags for s in train],  # type: ignore[misc]
        )
        _fit(tagger, tagger.collate([s.tokens for s in train], [s.tags for s in train]), 40)
        save_model(tagger.eval(), root / kind)
        out[kind] = root / kind
    words, trees = [s.words for s in EWT], [(s.heads, s.rels) for s in EWT]
    for kind, chars in (("seqlabel", 6), ("head_selection", 0), ("projective", 0)):
        torch.manual_seed(0)
        encoder = EncoderConfig(
            word_dim=8, char_dim=4, char_filters=chars, lstm_hidden=6, lstm_layers=2
        )
        config = ModelConfig(encoder, parser=ParserConfig(kind=kind, arc_dim=8, rel_dim=4))
        parser = build_dep_model(config, words, trees)
        _fit(parser, parser.collate(words, trees), 8)
        save_model(parser.eval(), root / kind)
        out[kind] = root / kind
    return out


def _inputs(kind: str) -> list[list[str]]:
    return WIKIANN_TEST if kind in ("crf", "maxent", "span") else [s.words for s in EWT]


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.parametrize(
    "kind", ["crf", "maxent", "span", "seqlabel", "head_selection", "projective"]
)
def test_export_predicts_what_the_model_predicts(
    kind: str, fmt: str, models: dict[str, Path], tmp_path: Path
) -> None:
    model = load_model(models[kind])
    expected = get_task(model.task).predict(model, _inputs(kind), batch_size=16)
    export_model(models[kind], tmp_path / "export", fmt)
    exported = ExportedModel(tmp_path / "export")
    assert exported.predict(_inputs(kind), batch_size=16) == expected
    # Another batching (other padding) changes nothing either.
    assert exported.predict(_inputs(kind)[:40], batch_size=7) == expected[:40]
    # Nothing of the training run is needed: the model directory can go.
    assert not (tmp_path / "export" / "config.json").exists()


def test_graph_scores_equal_the_model_scores(models: dict[str, Path]) -> None:
    """The unpacked BiLSTM of the graph gives the packed one's emissions, padding included."""
    model = load_model(models["crf"])
    words = WIKIANN_TEST[:12]
    batch = model.collate(words)
    graph = ExportGraph(model)
    with torch.no_grad():
        (emissions,) = graph(*(getattr(batch, name) for name in graph.inputs))
        expected = model.structure(batch).emissions  # type: ignore[attr-defined]
    inside = torch.arange(emissions.shape[1])[None, :] < batch.lengths[:, None]
    assert torch.allclose(emissions[inside], expected[inside], atol=1e-5)


def test_reverse_within_reverses_each_sentence_only() -> None:
    x = torch.arange(8.0).reshape(2, 4, 1)
    out = reverse_within(x, torch.tensor([3, 1]))[..., 0]
    assert out.tolist() == [[2.0, 1.0, 0.0, 3.0], [4.0, 5.0, 6.0, 7.0]]


def test_numpy_viterbi_is_the_crf_argmax() -> None:
    generator = torch.Generator().manual_seed(3)
    emissions = torch.randn(5, 7, 4, generator=generator)
    transitions, start, end = (torch.randn(*s, generator=generator) for s in ((4, 4), (4,), (4,)))
    lengths = torch.tensor([7, 1, 4, 6, 2])
    crf = LinearChainCRF(emissions, transitions, lengths, start, end)
    tags = viterbi(
        emissions.numpy(), lengths.numpy(), transitions.numpy(), start.numpy(), end.numpy()
    )
    assert np.array_equal(tags, crf.argmax.numpy())


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.parametrize("kind", ["crf", "head_selection"])
def test_int8_export_reloads_and_predicts(
    kind: str, fmt: str, models: dict[str, Path], tmp_path: Path
) -> None:
    model = load_model(models[kind])
    words = _inputs(kind)
    expected = get_task(model.task).predict(model, words)
    export_model(models[kind], tmp_path / "int8", fmt, quantize="int8")
    exported = ExportedModel(tmp_path / "int8")
    assert exported.quantize == "int8"
    got = exported.predict(words)
    assert [len(p if kind == "crf" else p[0]) for p in got] == list(map(len, words))
    if kind == "crf":
        same = sum(a == b for g, e in zip(got, expected) for a, b in zip(g, e))
    else:
        assert all(is_tree(heads) for heads, _ in got)
        same = sum(a == b for g, e in zip(got, expected) for a, b in zip(g[0], e[0]))
    # Int8 weights move a few near-tied decisions, not most of them.
    assert same >= 0.8 * sum(map(len, words))
    if fmt == "onnx":
        ops = {node.op_type for node in onnx.load(str(tmp_path / "int8" / "model.onnx")).graph.node}
        assert {"DynamicQuantizeLSTM", "MatMulInteger"} <= ops


def test_cli_export_then_predict_equals_model_predict(
    models: dict[str, Path], tmp_path: Path
) -> None:
    data = str(FIXTURES / "pipeline" / "test.conll")
    assert main(["predict", str(models["crf"]), data, "--output", str(tmp_path / "m.conll")]) == 0
    out = tmp_path / "onnx"
    assert main(["export", str(models["crf"]), "--format", "onnx", "--out", str(out)]) == 0
    assert main(["predict", str(out), data, "--output", str(tmp_path / "e.conll")]) == 0
    assert (tmp_path / "e.conll").read_text() == (tmp_path / "m.conll").read_text()
    # Exporting again over an export replaces it; over anything else it is refused.
    assert main(["export", str(models["crf"]), "--format", "torchscript", "--out", str(out)]) == 0
    assert (out / "model.pt").is_file() and not (out / "model.onnx").exists()
    assert main(["export", str(models["crf"]), "--out", str(models["maxent"])]) == 2


def test_cli_predicts_raw_text_with_the_tokenizer(
    models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--format raw`` tokenizes each line by the rules of ``sk.tokenize`` (``text`` splits on
    whitespace only), for a model and its export alike."""
    text = tmp_path / "in.txt"
    text.write_text("EU rejects German call to boycott British lamb.\n\nSee you (Monday).\n")
    export_model(models["crf"], tmp_path / "e", "onnx")
    outputs = []
    for path in (models["crf"], tmp_path / "e"):
        assert main(["predict", str(path), str(text), "--format", "raw"]) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1]
    sentences = [[line.split()[0] for line in b.splitlines()] for b in outputs[0].split("\n\n")]
    assert [s for s in sentences if s] == [
        ["EU", "rejects", "German", "call", "to", "boycott", "British", "lamb", "."],
        ["See", "you", "(", "Monday", ")", "."],
    ]
    assert main(["predict", str(models["seqlabel"]), str(text), "--format", "raw"]) == 0
    assert "\t(\t" in capsys.readouterr().out  # the parser reads the same tokens


def test_cli_parses_with_an_export(models: dict[str, Path], tmp_path: Path) -> None:
    data = str(FIXTURES / "dep" / "en_ewt-dev-slice.conllu")
    out = tmp_path / "ts"
    assert (
        main(["export", str(models["seqlabel"]), "--format", "torchscript", "--out", str(out)]) == 0
    )
    assert main(["predict", str(models["seqlabel"]), data, "--output", str(tmp_path / "m")]) == 0
    assert main(["predict", str(out), data, "--output", str(tmp_path / "e")]) == 0
    assert (tmp_path / "e").read_text() == (tmp_path / "m").read_text()


def test_numpy_eisner_is_the_projective_argmax() -> None:
    generator = torch.Generator().manual_seed(5)
    scores = 3 * torch.randn(6, 9, 9, generator=generator)
    lengths = torch.tensor([8, 1, 2, 5, 7, 3])
    expected = DependencyCRF(scores, lengths, projective=True).argmax
    got = eisner_heads(scores.numpy(), lengths.numpy())
    assert got == [expected[b, 1 : n + 1].tolist() for b, n in enumerate(lengths.tolist())]
    assert all(is_tree(heads) and heads.count(0) == 1 for heads in got)


def test_numpy_span_decoder_is_the_semi_markov_argmax() -> None:
    generator = torch.Generator().manual_seed(6)
    scores = torch.randn(5, 7, 7, 3, generator=generator) - 0.5
    lengths = torch.tensor([7, 1, 3, 6, 4])
    expected = SemiMarkovCRF(scores, lengths).argmax
    assert best_spans(scores.numpy(), lengths.numpy()) == expected
    assert any(len(spans) > 1 for spans in expected)


def test_export_refuses_teacher_kinds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    words, trees = [s.words for s in EWT], [(s.heads, s.rels) for s in EWT]
    encoder = EncoderConfig(word_dim=8, char_filters=0, lstm_hidden=4)
    config = ModelConfig(encoder, parser=ParserConfig(kind="sibling", arc_dim=4, rel_dim=4))
    save_model(build_dep_model(config, words, trees), tmp_path / "sibling")
    assert main(["export", str(tmp_path / "sibling"), "--out", str(tmp_path / "out")]) == 2
    assert "cannot export a dep model of kind 'sibling'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_load_model_and_export_directories(models: dict[str, Path], tmp_path: Path) -> None:
    export_model(models["maxent"], tmp_path / "e", "onnx")
    texts = ["EU rejects German call to boycott British lamb.", "Peter Blackburn", ""]
    pretokenized = [["EU", "rejects", "German", "call"], ["Peter", "Blackburn"]]
    for path in (models["maxent"], tmp_path / "e"):
        predictor = sk.load(path)
        assert predictor.task == "ner"
        out = predictor.predict(texts)
        assert [len(s.tokens) for s in out] == [9, 2, 0]
        assert [t.text for t in out[0].tokens][-2:] == ["lamb", "."]
        for sentence in out:
            assert isinstance(sentence, sk.TaggedSentence)
            for entity in sentence.entities:
                assert sentence.text[entity.start : entity.end] == entity.text
        assert [s.tags for s in predictor.predict(pretokenized)] == predictor.predict_words(
            pretokenized
        )
    words = [s.tokens for s in read_ner(FIXTURES / "pipeline" / "train.conll")]
    model = sk.load(models["maxent"]).predict(words, batch_size=8)
    exported = sk.load(tmp_path / "e").predict(words)
    assert [s.entities for s in model] == [s.entities for s in exported]
    assert any(s.entities for s in model)  # the comparison is not between empty lists


def test_load_a_parser_returns_heads_and_relations(models: dict[str, Path], tmp_path: Path) -> None:
    export_model(models["head_selection"], tmp_path / "e", "onnx")
    for path in (models["head_selection"], tmp_path / "e"):
        (parsed,) = sk.load(path).predict(["The cat sat on the mat ."])
        assert isinstance(parsed, sk.ParsedSentence)
        assert len(parsed.heads) == 7 and is_tree(parsed.heads)
        assert parsed.relations is not None and len(parsed.relations) == 7


def test_predict_rejects_non_string_words(models: dict[str, Path]) -> None:
    with pytest.raises(TypeError, match="input 1"):
        sk.load(models["crf"]).predict(["fine", ["a", ""]])


def test_export_refuses_missing_onnxruntime_cleanly(
    models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without onnxruntime an ONNX export cannot run: one clear error, exit 2."""
    export_model(models["crf"], tmp_path / "e", "onnx")
    import builtins

    real_import = builtins.__import__

    def no_onnxruntime(name: str, *args: object, **kwargs: object) -> object:
        if name == "onnxruntime":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(builtins, "__import__", no_onnxruntime)
    with pytest.raises(DataError, match="pip install"):
        ExportedModel(tmp_path / "e")


@pytest.mark.parametrize(
    ("kind", "data"),
    [("crf", "resource:wikiann_en/test.tsv"), ("head_selection", str(EWT_PATH))],
)
def test_evaluate_an_export_scores_as_the_model(
    kind: str, data: str, models: dict[str, Path], tmp_path: Path
) -> None:
    export_model(models[kind], tmp_path / "e", "onnx")
    scores = [sk.load(path).evaluate(data) for path in (models[kind], tmp_path / "e")]
    for s in scores:
        s.pop("tokens_per_second")
    assert scores[0] == scores[1]
    assert main(["evaluate", str(tmp_path / "e"), data]) == 0
