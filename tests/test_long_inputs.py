"""Very long inputs at prediction: characters per word are capped, the char CNN runs in slices,
and a sentence over the task's ``max_words`` is refused with one line naming its file and line.

The full-size cases (a 2,000-word sentence through both parsers, a 20,000-token line with a
200,000-character word) are measured by benchmarks/long_sentence.py; here they run at sizes that
keep the suite fast but would still have allocated gigabytes before the cap.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from structkd.cli import main
from structkd.config import load_config
from structkd.models.inputs import Vocabularies
from structkd.nn import embeddings
from structkd.nn.embeddings import MAX_WORD_CHARS, CharCNN
from structkd.tasks import get_task
from structkd.tasks.ner import NERTask
from structkd.train.run import run

ROOT = Path(__file__).parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "pipeline"
TINY = [
    "model.encoder.word_dim=8",
    "model.encoder.char_dim=4",
    "model.encoder.char_filters=6",
    "model.encoder.lstm_hidden=6",
    "train.batch_size=8",
    "train.progress=false",
]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tagger(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("long") / "tagger"
    values = {"data.train": [str(FIXTURES / "train.conll")], "train.max_epochs": 1, "out": str(out)}
    run(
        load_config(
            ROOT / "configs/ner/teacher-crf.yaml", [*TINY, "data.dev=", "data.test="], values
        )
    )
    return out / "model"


def test_a_word_is_collated_from_its_first_max_word_chars_characters() -> None:
    vocab = Vocabularies(
        words=["<pad>", "<unk>"], chars=["<pad>", "<unk>", "a", "b"], entity_types=[]
    )
    huge = "ab" * 100_000  # 200,000 characters
    batch = vocab.collate([["a", huge, "b"]])
    assert batch.chars is not None and batch.chars.shape == (1, 3, MAX_WORD_CHARS)
    assert batch.chars[0, 1].tolist() == [2, 3] * (MAX_WORD_CHARS // 2)
    assert batch.chars[0, 0].tolist() == [2] + [0] * (MAX_WORD_CHARS - 1)
    short = vocab.collate([["ab", "b"]])
    assert short.chars is not None and short.chars.shape == (1, 2, 2)  # no padding to the cap


def test_the_char_cnn_in_slices_equals_the_char_cnn_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    torch.manual_seed(0)
    cnn = CharCNN(num_chars=7, char_dim=4, filters=5)
    ids = torch.randint(0, 7, (3, 11, 9))
    ids[1, 4:] = 0  # padding words (all-zero rows) and padded characters
    ids[2, :, 5:] = 0
    whole = cnn(ids)
    monkeypatch.setattr(embeddings, "_CHUNK_CHARS", 40)  # 4 words a slice, a remainder slice
    sliced = cnn(ids)
    torch.testing.assert_close(sliced, whole, rtol=0, atol=1e-6)
    sliced.sum().backward()  # still trains through the slices
    assert cnn.conv.weight.grad is not None and torch.isfinite(cnn.conv.weight.grad).all()


def test_a_long_line_with_a_huge_word_through_predict(
    tagger: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """2,000 tokens, one of 200,000 characters: before the cap its [1, 2000, 200000] character
    ids alone took 3.2 GB and their embeddings 48 GB. Now it tags like any line."""
    words = ["Peter", "lives", "in", "Berlin", "."] * 400
    words[1000] = "x" * 200_000
    text = tmp_path / "long.txt"
    text.write_text("Peter lives in Berlin .\n" + " ".join(words) + "\n", encoding="utf-8")
    out = tmp_path / "long.conll"
    assert main(["predict", str(tagger), str(text), f"--output={out}", "--format=text"]) == 0
    sentences = out.read_text(encoding="utf-8").strip("\n").split("\n\n")
    assert [len(s.splitlines()) for s in sentences] == [5, 2000]
    assert sentences[1].splitlines()[1000].split()[0] == "x" * 200_000


def test_a_sentence_over_max_words_is_refused_naming_its_line(
    tagger: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(NERTask, "max_words", 50)
    text = tmp_path / "in.txt"
    text.write_text("a b c\n\n" + " ".join(["w"] * 50) + "\n" + " ".join(["w"] * 51) + "\n")
    out = tmp_path / "out.conll"
    assert main(["predict", str(tagger), str(text), f"--output={out}", "--format=text"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    expected = "a sentence of 51 words; this model predicts at most 50 words per sentence: split it"
    assert err == [f"error: {text}:4: {expected}"]
    assert not out.exists()


@pytest.mark.parametrize("task", ["ner", "dep"])
def test_the_python_api_refuses_an_over_long_sentence_by_its_index(task: str) -> None:
    limit = get_task(task).max_words
    get_task(task).check_max_words([["w"] * limit])
    with pytest.raises(ValueError, match=f"input 1: a sentence of {limit + 1:,} words"):
        get_task(task).check_max_words([["w"], ["w"] * (limit + 1)])
