"""Frozen pretrained vectors: casing classes, WordPiece, USE de-quantization, pooling, unknown
words, text-file tables saved with the model, fine-tuned vectors; taggers and parsers."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from structkd.config import ConfigError, EncoderConfig, HeadConfig, ModelConfig, ParserConfig
from structkd.data.conll import read_ner
from structkd.data.conllu import read_conllu
from structkd.models.base import predict_sentences as predict_trees
from structkd.models.checkpoint import load_model, save_model
from structkd.models.tagger import build_tagger
from structkd.nn.embeddings import CASING_CLASSES, casing_class, casing_ids
from structkd.nn.vector_sources import basic_split, dequantization, word_table, wordpiece
from structkd.nn.vectors import PretrainedVectors, VectorTable
from structkd.tasks import get_task

FIXTURES = Path(__file__).parent / "fixtures"
TRAIN = read_ner(FIXTURES / "pipeline" / "train.conll")
TEST = read_ner(FIXTURES / "pipeline" / "test.conll")


pytestmark = pytest.mark.usefixtures("one_thread")


def test_casing_classes() -> None:
    cases = {
        "1996": "numeric",
        "12.5%": "mainly_numeric",
        "paris": "all_lower",
        "EU": "all_upper",
        "U.S.": "all_upper",
        "Paris": "initial_upper",
        "A4-size": "initial_upper",
        "mp3": "all_lower",  # the letters decide first (as Reimers & Gurevych)
        "$5": "contains_digit",
        "eBay": "other",
        ",": "other",
    }
    assert {w: CASING_CLASSES[casing_class(w)] for w in cases} == cases
    ids = casing_ids([["Paris", "1996"], ["eBay"]], 3)
    assert ids.tolist() == [[5, 1, 0], [7, 0, 0]]  # 0 only at padding


def test_wordpiece_greedy_longest_match() -> None:
    vocab = {p: i for i, p in enumerate(["[UNK]", "un", "##aff", "##able", "hello", ",", "##a"])}
    assert basic_split("Héllo,") == ["hello", ","]
    assert basic_split("x\u4e2dy") == ["x", "\u4e2d", "y"]  # CJK characters stand alone
    assert wordpiece("unaffable", vocab, 0) == [1, 2, 3]
    assert wordpiece("unaffablea", vocab, 0) == [1, 2, 3, 6]
    assert wordpiece("unx", vocab, 0) == [0]  # a part without a piece: the whole word is unknown
    assert wordpiece("un" * 60, vocab, 0) == [0]  # longer than 100 characters


def test_dequantization_interleaves_chunks() -> None:
    """Row r lives in chunk r % K at row r // K, de-quantized by that chunk's scale and offset."""
    rng = np.random.default_rng(0)
    count, per_chunk, dim = 3, 4, 5
    codes = rng.integers(0, 64, size=(count * per_chunk, dim), dtype=np.uint8)
    scale = np.array([0.5, 0.25, 2.0], np.float32)
    low = np.array([-1.0, 3.0, 0.0], np.float32)
    stored = {f"q{i + 1}": codes[i::count] for i in range(count)}
    table, row_scale, row_offset = dequantization({**stored, "scale": scale, "lo": low})
    assert np.array_equal(table, codes)
    for r in range(count * per_chunk):
        assert row_scale[r] == scale[r % count] and row_offset[r] == low[r % count]
    source = VectorTable(
        "q",
        torch.from_numpy(table),
        lambda w: [int(w)],
        scale=torch.from_numpy(row_scale),
        offset=torch.from_numpy(row_offset),
    )
    expected = codes[7].astype(np.float32) * scale[7 % count] + low[7 % count]
    vector = source.vector("7")
    assert vector is not None and np.allclose(vector.numpy(), expected)
    with pytest.raises(ValueError, match="chunks"):
        dequantization({"q1": codes[:4], "q3": codes[:4], "scale": scale, "lo": low})


def test_pooling_unknown_and_padding() -> None:
    table = torch.tensor([[1.0, 0.0], [3.0, 2.0], [5.0, 4.0]])
    pieces = {"ab": [0, 1], "c": [2], "x": []}
    source = VectorTable("t", table, lambda w: pieces.get(w, []), subword=True)
    module = PretrainedVectors(source, 2, project=False, saved=False)
    rows = module.rows([["ab", "c", "x"], ["c"]], 3)
    assert rows.tolist() == [[[0, 1], [2, -1], [3, -1]], [[2, -1], [-1, -1], [-1, -1]]]
    out = module(rows)
    assert out[0, 0].tolist() == [2.0, 1.0]  # the mean of the pieces' vectors
    assert out[0, 1].tolist() == [5.0, 4.0]
    assert torch.equal(out[0, 2], module.unknown)  # missing: the learned vector
    assert out[1, 1:].abs().sum() == 0  # padding
    out.sum().backward()
    assert module.unknown.grad is not None and "table" not in dict(module.named_parameters())
    assert set(module.state_dict()) == {"unknown", "fingerprint"}
    projected = PretrainedVectors(source, 3, project=False, saved=False)
    assert projected(rows).shape == (2, 3, 3)  # another size: a trainable projection


def write_vectors(path: Path, words: list[str], dim: int) -> dict[str, list[float]]:
    rng = np.random.default_rng(1)
    vectors = {w: [round(float(x), 4) for x in rng.normal(size=dim)] for w in words}
    lines = [f"{len(words)} {dim}"] + [f"{w} " + " ".join(map(str, v)) for w, v in vectors.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return vectors


def tagger_config(**encoder: object) -> ModelConfig:
    sizes = dict(word_dim=4, char_dim=4, char_filters=6, lstm_hidden=6, dropout=0.1)
    sizes.update(encoder)
    return ModelConfig(EncoderConfig(**sizes), HeadConfig(kind="crf"))  # type: ignore[arg-type]


def unseen_word() -> str:
    """A lowercase test word that no training sentence has (in any casing)."""
    seen = {w.lower() for s in TRAIN for w in s.tokens}
    return next(w for s in TEST for w in s.tokens if w.lower() not in seen and w.isalpha())


def test_frozen_text_file_vectors_are_the_vocabulary_and_saved(tmp_path: Path) -> None:
    words = sorted({w.lower() for s in TRAIN + TEST for w in s.tokens})[:-5]
    path = tmp_path / "vectors.vec"
    vectors = write_vectors(path, words, 4)
    torch.manual_seed(0)
    config = tagger_config(pretrained_vectors=str(path), casing_dim=3)
    model = build_tagger(config, [s.tokens for s in TRAIN], [s.tags for s in TRAIN])
    assert model.vocab.words[2:] == words and model.encoder.words is None
    vectors_module = model.encoder.vectors
    assert vectors_module is not None and vectors_module.saved
    word = unseen_word()
    out = vectors_module(vectors_module.rows([[word.upper(), "qqqq"]], 2))[0]
    assert out[0].tolist() == pytest.approx(vectors[word.lower()])  # unseen, still its vector
    assert torch.equal(out[1], vectors_module.unknown)
    model.eval()
    tokens = [s.tokens for s in TEST]
    before = model.predict(model.collate(tokens))
    save_model(model, tmp_path / "m")
    path.unlink()  # the checkpoint holds the table: it loads without the file
    loaded = load_model(tmp_path / "m")
    assert loaded.predict(loaded.collate(tokens)) == before
    assert "encoder.vectors.table" in loaded.state_dict()  # a buffer, never trained
    assert "encoder.vectors.table" not in dict(loaded.named_parameters())
    with pytest.raises(FileNotFoundError):
        build_tagger(config, [s.tokens for s in TRAIN], [s.tags for s in TRAIN])


def test_text_file_size_and_word_dim_must_agree(tmp_path: Path) -> None:
    path = tmp_path / "vectors.txt"
    write_vectors(path, ["paris", "london"], 3)
    tokens, tags = [s.tokens for s in TRAIN], [s.tags for s in TRAIN]
    with pytest.raises(ConfigError, match="word_dim: 3"):
        build_tagger(tagger_config(pretrained_vectors=str(path)), tokens, tags)
    with pytest.raises(ConfigError, match="word_dim > 0"):
        build_tagger(tagger_config(pretrained_vectors=str(path), word_dim=0), tokens, tags)


def test_a_lowercased_frozen_table_without_casing_features_warns(tmp_path: Path) -> None:
    path = tmp_path / "vectors.txt"
    write_vectors(path, ["paris", "london"], 4)
    tokens, tags = [s.tokens for s in TRAIN], [s.tags for s in TRAIN]
    blind = tagger_config(pretrained_vectors=str(path), char_filters=0)
    with pytest.warns(UserWarning, match="cannot see capitalisation"):
        build_tagger(blind, tokens, tags)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build_tagger(
            tagger_config(pretrained_vectors=str(path), char_filters=0, casing_dim=2), tokens, tags
        )
        build_tagger(tagger_config(pretrained_vectors=str(path)), tokens, tags)  # char CNN


def test_fine_tuned_vectors_initialise_word_embeddings(tmp_path: Path) -> None:
    path = tmp_path / "vectors.txt"
    vectors = write_vectors(path, ["london", "zzzz"], 4)
    config = tagger_config(pretrained_vectors=str(path), freeze_vectors=False)
    model = build_tagger(config, [s.tokens for s in TRAIN], [s.tags for s in TRAIN])
    assert model.encoder.vectors is None and model.encoder.words is not None
    assert "zzzz" in model.vocab.word_index  # a word table's words join the vocabulary
    assert model.encoder.words.table.weight.requires_grad
    row = model.vocab.word_index["zzzz"]
    assert model.encoder.words.table.weight[row].tolist() == pytest.approx(vectors["zzzz"])


def test_word_table_prefers_the_exact_form() -> None:
    table = word_table("t", torch.eye(3), ["Apple", "apple", "pear"])
    assert table.rows("Apple") == (0,) and table.rows("APPLE") == (1,)
    assert table.rows("Pear") == (2,) and table.rows("plum") == () and not table.lowercased


def test_parser_with_frozen_vectors_saves_and_loads(tmp_path: Path) -> None:
    sentences = read_conllu(FIXTURES / "dep" / "en_ewt-dev-slice.conllu")
    words = sorted({w.lower() for s in sentences for w in s.words})
    path = tmp_path / "vectors.txt"
    write_vectors(path, words, 4)
    encoder = EncoderConfig(
        word_dim=4, pretrained_vectors=str(path), casing_dim=2, char_filters=0, lstm_hidden=6
    )
    config = ModelConfig(encoder, parser=ParserConfig("projective", arc_dim=8, rel_dim=4))
    task = get_task("dep")
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # non-projective training trees
        model = task.build_model(config, sentences)
    assert model.encoder.vectors is not None
    model.eval()
    before = predict_trees(model, [s.words for s in sentences])  # type: ignore[arg-type]
    save_model(model, tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert predict_trees(loaded, [s.words for s in sentences]) == before  # type: ignore[arg-type]
