"""Models: nn blocks, taggers with every head, checkpoints, batched == one-by-one prediction."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from structkd.config import ConfigError, EncoderConfig, HeadConfig, ModelConfig, load_config
from structkd.data.conll import read_ner
from structkd.models.checkpoint import CheckpointError, load_model, save_model
from structkd.models.manifest import ManifestWarning
from structkd.models.tagger import Tagger, build_tagger
from structkd.nn.embeddings import CharCNN, WordEmbedding, read_word_vectors
from structkd.nn.layers import Biaffine, BiLSTM

FIXTURES = Path(__file__).parent / "fixtures" / "pipeline"


pytestmark = pytest.mark.usefixtures("one_thread")


TRAIN = read_ner(FIXTURES / "train.conll")


def tiny(kind: str, **encoder: object) -> ModelConfig:
    sizes = dict(word_dim=8, char_dim=4, char_filters=6, lstm_hidden=6, dropout=0.1)
    sizes.update(encoder)
    return ModelConfig(EncoderConfig(**sizes), HeadConfig(kind=kind, span_dim=5))  # type: ignore[arg-type]


def trained(kind: str, steps: int = 2, **encoder: object) -> Tagger:
    torch.manual_seed(0)
    model = build_tagger(tiny(kind, **encoder), [s.tokens for s in TRAIN], [s.tags for s in TRAIN])
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    batch = model.collate([s.tokens for s in TRAIN[:8]], [s.tags for s in TRAIN[:8]])
    for _ in range(steps):
        loss = model.loss(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


@pytest.mark.parametrize("kind", ["crf", "maxent", "span"])
def test_train_save_load_predict(kind: str, tmp_path: Path) -> None:
    model = trained(kind)
    tokens = [s.tokens for s in TRAIN[:10]]
    before = model.predict(model.collate(tokens))
    save_model(model, tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert loaded.predict(loaded.collate(tokens)) == before
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name]), name
    # Predictions come back in the training data's scheme (the fixtures are BIO).
    assert all(not t.startswith(("E-", "S-")) for tags in before for t in tags)


@pytest.mark.parametrize("kind", ["crf", "maxent", "span"])
def test_batched_equals_one_by_one(kind: str) -> None:
    model = trained(kind, steps=5)
    tokens = [s.tokens for s in TRAIN[:12]]
    batched = model.predict(model.collate(tokens))
    assert batched == [model.predict(model.collate([t]))[0] for t in tokens]
    structure = model.structure(model.collate(tokens))
    single = model.structure(model.collate(tokens[3:4]))
    assert torch.allclose(structure.log_partition[3], single.log_partition[0], atol=1e-5)


def test_loss_is_gold_negative_log_likelihood() -> None:
    model = trained("maxent")
    batch = model.collate([TRAIN[0].tokens], [TRAIN[0].tags])
    logits = model.head.emissions(model.encoder(batch))[0]  # type: ignore[union-attr]
    gold = batch.tags[0]  # type: ignore[index]
    expected = -torch.log_softmax(logits, -1).gather(-1, gold[:, None]).sum()
    assert torch.allclose(model.loss(batch), expected, atol=1e-5)


def test_unlabeled_sentences_add_no_gold_loss() -> None:
    model = trained("crf")
    labeled = model.collate([TRAIN[0].tokens], [TRAIN[0].tags])
    mixed = model.collate([TRAIN[0].tokens, TRAIN[1].tokens], [TRAIN[0].tags, None])
    assert torch.allclose(model.loss(labeled), model.loss(mixed), atol=1e-5)
    assert model.nll(mixed)[1] == 0


def test_load_rejects_mismatched_weights(tmp_path: Path) -> None:
    save_model(trained("maxent", steps=0), tmp_path / "a")
    save_model(trained("maxent", steps=1), tmp_path / "b")
    (tmp_path / "a" / "model.safetensors").write_bytes(
        (tmp_path / "b" / "model.safetensors").read_bytes()
    )
    with pytest.raises(CheckpointError, match=r"a/model\.safetensors: SHA-256 differs from man"):
        load_model(tmp_path / "a")
    (tmp_path / "a" / "manifest.json").unlink()  # a directory saved before manifests
    with pytest.warns(ManifestWarning), pytest.raises(CheckpointError, match="do not match"):
        load_model(tmp_path / "a")
    with pytest.raises(CheckpointError, match="no config.json"):
        load_model(tmp_path / "missing")


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown key model.encoder.lstm_hiden"):
        load_config(None, ["model.encoder.lstm_hiden=3"])
    with pytest.raises(ConfigError, match="train.max_epochs: expected int"):
        load_config(None, ["train.max_epochs=many"])
    with pytest.raises(ConfigError, match="model.head.kind: expected one of"):
        load_config(None, ["model.head.kind=tree"])
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 0.1\n  epochs: 3\n")
    with pytest.raises(ConfigError, match="unknown key train.epochs"):
        load_config(path)
    path.write_text("train:\n  lr: 0.1\n")
    assert load_config(path, ["train.lr=1"]).train.lr == 1.0


def test_char_cnn_and_bilstm_ignore_padding() -> None:
    torch.manual_seed(0)
    cnn, lstm = CharCNN(10, 4, 5), BiLSTM(5, 3)
    chars = torch.randint(2, 10, (2, 4, 6))
    chars[1, 2:] = 0  # second sentence has 2 words
    chars[1, :, 3:] = 0  # of 3 characters
    lengths = torch.tensor([4, 2])
    both = lstm(cnn(chars), lengths)
    alone = lstm(cnn(chars[1:, :2, :3]), lengths[1:])
    assert torch.allclose(both[1, :2], alone[0], atol=1e-6)
    assert both[1, 2:].abs().sum() == 0


def test_biaffine_matches_definition() -> None:
    torch.manual_seed(0)
    layer = Biaffine(3, 2)
    torch.nn.init.normal_(layer.weight)
    x, y = torch.randn(1, 4, 3), torch.randn(1, 4, 3)
    scores = layer(x, y)
    x1, y1 = torch.cat([x[0, 1], torch.ones(1)]), torch.cat([y[0, 2], torch.ones(1)])
    assert torch.allclose(scores[0, 1, 2, 1], x1 @ layer.weight[1] @ y1, atol=1e-5)


def test_pretrained_word_vectors(tmp_path: Path) -> None:
    path = tmp_path / "vectors.txt"
    path.write_text("2 3\nparis 1 2 3\nLondon 4 5 6\nbad 1\n", encoding="utf-8")
    vectors = read_word_vectors(path)
    assert set(vectors) == {"paris", "London"}
    table = WordEmbedding(4, 3)
    assert table.load_pretrained(["<pad>", "<unk>", "Paris", "London"], vectors) == 2
    assert table.table.weight[2].tolist() == [1, 2, 3]
    model = build_tagger(
        tiny("crf", word_dim=3, pretrained_vectors=str(path), freeze_vectors=False),
        [s.tokens for s in TRAIN],
        [s.tags for s in TRAIN],
    )
    assert model.encoder.words is not None
    row = model.vocab.word_index["London"]
    assert model.encoder.words.table.weight[row].tolist() == [4, 5, 6]


def tiny_bert(directory: Path) -> Path:
    transformers = pytest.importorskip("transformers")
    words = sorted({w.lower() for s in TRAIN for w in s.tokens})[:60]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words, "##s", "##a", "##e"]
    directory.mkdir()
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    config = transformers.BertConfig(
        vocab_size=len(vocab),
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=16,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    transformers.BertModel(config).save_pretrained(directory)
    transformers.BertTokenizerFast(str(directory / "vocab.txt")).save_pretrained(directory)
    return directory


def test_transformer_encoder_first_subword(tmp_path: Path) -> None:
    bert = tiny_bert(tmp_path / "bert")
    model = trained("crf", transformer=str(bert), word_dim=0, char_filters=0, lstm_hidden=0)
    embedder = model.encoder.transformer
    assert embedder is not None
    ids, first = embedder.featurize(["Paris", "xyzzy", "cats"])
    assert len(first) == 3 and first[0] == 1 and ids[0] == embedder.tokenizer.cls_token_id
    tokens = [s.tokens for s in TRAIN[:6]]
    before = model.predict(model.collate(tokens))
    assert before == [model.predict(model.collate([t]))[0] for t in tokens]
    save_model(model, tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert loaded.predict(loaded.collate(tokens)) == before
