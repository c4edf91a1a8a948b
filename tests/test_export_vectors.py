"""Exporting students that read frozen pretrained word vectors (a named table such as
``glove-6b-50d``, or a word-vector file): the export carries the table and its word index, so
it predicts what the PyTorch model predicts, token for token (words unseen in training but in
the table, case variants and words the table misses included), once the package or the file
is gone."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import onnx
import pytest
import torch

from structkd.cli import main
from structkd.config import EncoderConfig, HeadConfig, ModelConfig
from structkd.data.conll import read_ner
from structkd.export import ExportedModel, export_model
from structkd.models.checkpoint import load_model, save_model
from structkd.models.tagger import Tagger, build_tagger
from structkd.nn.vector_sources import open_vectors
from structkd.tasks import get_task
from test_vector_sources import GLOVE, write_glove

FIXTURES = Path(__file__).parent / "fixtures" / "pipeline"
TRAIN = read_ner(FIXTURES / "train.conll")
TEST = read_ner(FIXTURES / "test.conll")
SEEN = {w.lower() for s in TRAIN for w in s.tokens}
# The table: the fixtures' lowercased words less the first five (which it then misses), plus
# words of neither corpus.
TABLE_WORDS = sorted({w.lower() for s in TRAIN + TEST for w in s.tokens})[5:] + ["zebra", "quux"]
# Inputs: the test sentences, a case variant of each, and words only the table knows.
INPUTS = [s.tokens for s in TEST] + [[w.upper() for w in s.tokens] for s in TEST[:5]]
INPUTS.append(["Zebra", "quux", "ZEBRA", TEST[0].tokens[0]])

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def fake_glove(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fake glove package on sys.path, removed again (with the loaded table) at the end."""
    root = tmp_path / "site"
    (root / GLOVE).mkdir(parents=True)
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.delitem(sys.modules, GLOVE, raising=False)
    open_vectors.cache_clear()
    yield root / GLOVE
    sys.modules.pop(GLOVE, None)
    open_vectors.cache_clear()


def _trained(vectors: str, word_dim: int, head: str = "crf") -> Tagger:
    """A tagger on frozen ``vectors`` (with casing features and a char CNN), trained a few steps
    so that its scores are not flat."""
    encoder = EncoderConfig(
        pretrained_vectors=vectors,
        word_dim=word_dim,
        casing_dim=3,
        char_dim=4,
        char_filters=5,
        lstm_hidden=6,
    )
    torch.manual_seed(0)
    model = build_tagger(
        ModelConfig(encoder, HeadConfig(kind=head)),  # type: ignore[arg-type]
        [s.tokens for s in TRAIN],
        [s.tags for s in TRAIN],  # type: ignore[misc]
    )
    batch = model.collate([s.tokens for s in TRAIN], [s.tags for s in TRAIN])
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.03)
    for _ in range(30):
        loss = model.nll(batch).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def _forget_glove(package: Path) -> None:
    """As in a process without the package: not importable, no table loaded. The fixture's
    teardown undoes it (``sys.path`` restored, the module entry popped)."""
    sys.path.remove(str(package.parent))
    sys.modules[GLOVE] = None  # type: ignore[assignment]  # importing it now fails
    open_vectors.cache_clear()


def test_inputs_reach_every_kind_of_row() -> None:
    """The comparison below covers rows unseen in training, case variants and missing words."""
    words = {w for s in INPUTS for w in s}
    assert any(w.lower() in TABLE_WORDS and w.lower() not in SEEN for w in words)
    assert any(w != w.lower() and w.lower() in TABLE_WORDS for w in words)
    assert any(w.lower() not in TABLE_WORDS for w in words)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_named_table_export_predicts_what_the_model_predicts(
    fmt: str, fake_glove: Path, tmp_path: Path
) -> None:
    write_glove(fake_glove, TABLE_WORDS, seed=0)  # 6-d vectors
    model = _trained("glove-6b-50d", word_dim=8)  # 6 -> 8: the projection is in the graph
    assert model.encoder.vectors is not None and model.encoder.vectors.projection is not None
    save_model(model, tmp_path / "model")
    expected = get_task("ner").predict(model, INPUTS, batch_size=4)
    export_model(tmp_path / "model", tmp_path / "export", fmt)
    _forget_glove(fake_glove)
    exported = ExportedModel(tmp_path / "export")
    assert exported.inputs == ["vectors", "casing", "chars", "lengths"]
    assert exported.predict(INPUTS, batch_size=4) == expected
    assert exported.predict(INPUTS, batch_size=7) == expected
    # The checkpoint itself now cannot load: the export does not need what it needs.
    with pytest.raises(FileNotFoundError, match="glove"):
        load_model(tmp_path / "model")


def test_named_table_int8_export_reloads(fake_glove: Path, tmp_path: Path) -> None:
    write_glove(fake_glove, TABLE_WORDS, seed=0)
    model = _trained("glove-6b-50d", word_dim=6, head="maxent")
    save_model(model, tmp_path / "model")
    expected = get_task("ner").predict(model, INPUTS)
    export_model(tmp_path / "model", tmp_path / "int8", "onnx", quantize="int8")
    _forget_glove(fake_glove)
    graph = onnx.load(str(tmp_path / "int8" / "model.onnx")).graph
    (table,) = [t for t in graph.initializer if list(t.dims) == [len(TABLE_WORDS), 6]]
    assert table.data_type == onnx.TensorProto.UINT8  # the table is stored in 8 bits
    got = ExportedModel(tmp_path / "int8").predict(INPUTS)
    assert list(map(len, got)) == list(map(len, INPUTS))
    same = sum(a == b for g, e in zip(got, expected) for a, b in zip(g, e))
    assert same >= 0.8 * sum(map(len, INPUTS))


def test_vector_file_export_needs_no_file(tmp_path: Path) -> None:
    """A word-vector file's table (saved with the model) goes into the export; the CLI predicts
    with it in a process that has neither the file nor the model directory."""
    generator = torch.Generator().manual_seed(1)
    lines = [
        f"{w} " + " ".join(f"{v:.4f}" for v in torch.randn(5, generator=generator).tolist())
        for w in TABLE_WORDS
    ]
    vec = tmp_path / "tiny.vec"
    vec.write_text("\n".join(lines) + "\n", encoding="utf-8")
    model = _trained(str(vec), word_dim=5)
    assert model.encoder.vectors is not None and model.encoder.vectors.saved
    save_model(model, tmp_path / "model")
    expected = get_task("ner").predict(model, INPUTS)
    out = tmp_path / "export"
    assert main(["export", str(tmp_path / "model"), "--format", "onnx", "--out", str(out)]) == 0
    vec.unlink()
    for path in (tmp_path / "model").iterdir():
        path.unlink()
    (tmp_path / "model").rmdir()
    assert ExportedModel(out).predict(INPUTS) == expected
    text = tmp_path / "input.txt"
    text.write_text("\n".join(" ".join(s) for s in INPUTS) + "\n", encoding="utf-8")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cli = [sys.executable, "-m", "structkd", "predict", str(out), str(text), "--format", "text"]
    result = subprocess.run(
        [*cli, "--output", str(tmp_path / "tagged")], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    tagged = (tmp_path / "tagged").read_text(encoding="utf-8").split("\n\n")
    tags = [[line.split()[-1] for line in block.splitlines()] for block in tagged if block.strip()]
    assert tags == expected
