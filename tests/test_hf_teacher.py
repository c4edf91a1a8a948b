"""Hugging Face token classifiers as teachers: label mapping, windows, pooling, the CLI."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch

from hf_tiny import FIXTURE_LABELS, tiny_token_classifier
from oracle import tag_sequences
from structkd.cli import main
from structkd.config import DistillConfig, EncoderConfig, HeadConfig, ModelConfig
from structkd.data.conll import read_ner
from structkd.data.vocab import tag_vocab
from structkd.kd.label_map import LabelMapError, TagMap
from structkd.models.hf_teacher import HFTagger, load_teacher, windows
from structkd.models.tagger import build_tagger
from structkd.structures.tags import from_spans, to_spans
from structkd.train.distill import Distiller

ROOT = Path(__file__).parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "pipeline"
TRAIN = read_ner(FIXTURES / "train.conll", "conll")
WORDS = sorted({w for s in TRAIN for w in s.tokens})
DATA = [
    f"--train={FIXTURES / 'train.conll'}",
    f"--dev={FIXTURES / 'dev.conll'}",
    f"--test={FIXTURES / 'test.conll'}",
]
TINY = [
    "model.encoder.word_dim=8",
    "model.encoder.char_dim=4",
    "model.encoder.char_filters=6",
    "model.encoder.lstm_hidden=6",
    "train.batch_size=8",
    "train.lr=0.01",
    "train.progress=false",
]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A teacher whose windows hold 8 subwords, so that most fixture sentences are windowed."""
    return tiny_token_classifier(
        tmp_path_factory.mktemp("hf") / "bert", max_positions=10, words=WORDS[::2]
    )


def brute_force_map(
    probs: torch.Tensor, teacher_labels: Sequence[str], types: Sequence[str], scheme: str
) -> torch.Tensor:
    """Student tag marginals [n, L_s] by enumerating every teacher label sequence, decoding it
    (conlleval rules) and writing its spans in the student's scheme."""
    tags = list(tag_vocab(types, scheme))
    n = probs.shape[0]
    out = torch.zeros(n, len(tags), dtype=torch.float64)
    for seq in tag_sequences(n, len(teacher_labels)):
        p = torch.prod(probs[torch.arange(n), list(seq)])
        student = from_spans(to_spans([teacher_labels[i] for i in seq]), n, scheme)
        for i, tag in enumerate(student):
            out[i, tags.index(tag)] += p
    return out


@pytest.mark.filterwarnings("ignore:teacher has no labels")
@pytest.mark.parametrize(
    ("teacher_labels", "scheme"),
    [
        (FIXTURE_LABELS, "BIOES"),
        (FIXTURE_LABELS, "BIO"),
        (["S-PER", "O", "E-PER", "B-PER", "I-PER", "B-LOC", "S-LOC"], "BIOES"),
        (["S-PER", "O", "E-PER", "B-PER", "I-PER"], "BIO"),
    ],
)
def test_label_map_equals_brute_force(teacher_labels: list[str], scheme: str) -> None:
    """The student's tag marginals equal those of the spans the teacher's (independent) label
    sequences decode to, ill-formed sequences (I- after O, E- without B-) included."""
    types = ["LOC", "ORG", "PER"]
    generator = torch.Generator().manual_seed(len(teacher_labels))
    tag_map = TagMap(teacher_labels, list(tag_vocab(types, scheme)), scheme)
    for n in (1, 2, 3, 4):
        logits = 3 * torch.randn(n, len(teacher_labels), generator=generator)
        probs = torch.softmax(logits.double(), -1)  # rows that sum to 1 in float64
        padded = torch.zeros(2, 5, len(teacher_labels), dtype=torch.float64)
        padded[1, :n] = probs
        padded[0, :2] = 0.5  # another sentence of the batch: must not leak into this one
        got = tag_map.apply(padded, torch.tensor([2, n]))
        torch.testing.assert_close(
            got[1, :n], brute_force_map(probs, teacher_labels, types, scheme)
        )
        assert bool((got[1, n:] == 0).all())
        torch.testing.assert_close(got[1, :n].sum(-1), torch.ones(n, dtype=torch.float64))


def test_label_map_names_labels_it_cannot_map() -> None:
    tags = list(tag_vocab(["LOC", "PER"], "BIOES"))
    with pytest.raises(LabelMapError, match=r"labels B-MISC, I-MISC cannot be mapped.*LOC, PER"):
        TagMap(["O", "B-PER", "B-MISC", "I-MISC"], tags, "BIOES", "bert")
    with pytest.raises(LabelMapError, match=r"labels LABEL_1 are not O or PREFIX-TYPE"):
        TagMap(["O", "LABEL_1"], tags, "BIOES", "bert")
    with pytest.warns(UserWarning, match="no labels of entity types LOC"):
        TagMap(["O", "B-PER", "I-PER"], tags, "BIOES", "bert")


@pytest.mark.parametrize("budget", [1, 3, 4, 7])
def test_windows_cover_every_word_where_it_has_most_context(budget: int) -> None:
    generator = torch.Generator().manual_seed(budget)
    for n in (1, 2, 5, 13):
        counts = [min(budget, int(c)) for c in torch.randint(1, 4, (n,), generator=generator)]
        spans, owner = windows(counts, budget)
        assert spans[0][0] == 0 and spans[-1][1] == n
        for (s, e), (s2, e2) in zip(spans, spans[1:]):
            assert s < s2 <= e < e2  # consecutive windows touch or overlap, and move on
        for s, e in spans:
            assert sum(counts[s:e]) <= budget
        for i in range(n):
            context = {
                w: min(sum(counts[s:i]), sum(counts[i + 1 : e]))
                for w, (s, e) in enumerate(spans)
                if s <= i < e
            }
            assert context[owner[i]] == max(context.values())


def _plain_run(teacher: HFTagger, words: list[str], pooling: str) -> torch.Tensor:
    """Word distributions [n, L] from one forward pass over [CLS] subwords [SEP], by hand."""
    tok = teacher.tokenizer
    pieces = [
        tok([[w]], is_split_into_words=True, add_special_tokens=False)["input_ids"][0]
        for w in words
    ]
    ids = [tok.cls_token_id, *[p for ps in pieces for p in ps], tok.sep_token_id]
    with torch.no_grad():
        probs = torch.softmax(teacher.model(input_ids=torch.tensor([ids])).logits[0], -1)
    rows, at = [], 1
    for ps in pieces:
        rows.append(probs[at] if pooling == "first" else probs[at : at + len(ps)].mean(0))
        at += len(ps)
    return torch.stack(rows)


@pytest.mark.parametrize("pooling", ["first", "mean"])
def test_word_distributions_short_and_windowed(hf_dir: Path, pooling: str) -> None:
    """A sentence within the model's limit reads exactly as one plain forward pass (first
    subword, or the mean of the subwords' softmaxes); a longer one is windowed and every word
    reads as its most central window run alone; padding and batch-mates change nothing."""
    teacher, _ = load_teacher(hf_dir, subword_pooling=pooling)
    assert isinstance(teacher, HFTagger) and teacher.budget == 8
    short = ["London", "calling", "Lindström"]  # lon ##don: two subwords
    long_sentence = [w for s in TRAIN for w in s.tokens][:30]
    got = teacher.word_distributions(teacher.collate([short, long_sentence]))
    torch.testing.assert_close(got[0, :3], _plain_run(teacher, short, pooling))
    assert bool((got[0, 3:] == 0).all())
    pieces = teacher._word_pieces(long_sentence)
    spans, owner = windows([len(p) for p in pieces], teacher.budget)
    assert len(spans) > 3
    for i in range(len(long_sentence)):
        s, e = spans[owner[i]]
        alone = _plain_run(teacher, long_sentence[s:e], pooling)
        torch.testing.assert_close(got[1, i], alone[i - s], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got.sum(-1)[1], torch.ones(30))


def test_distiller_caches_the_mapped_distributions(hf_dir: Path, tmp_path: Path) -> None:
    """Structural KD into a CRF student (case 3) caches, per sentence, the teacher's word
    distributions mapped onto the student's BIOES tags and their products as tag pairs."""
    teacher, digest = load_teacher(hf_dir)
    config = ModelConfig(EncoderConfig(word_dim=8, char_filters=0, lstm_hidden=6), HeadConfig())
    tokens = [s.tokens for s in TRAIN]
    student = build_tagger(config, tokens, [s.tags for s in TRAIN if s.tags is not None])
    distiller = Distiller(
        [teacher], DistillConfig(), tokens, [0] * len(tokens), student, tmp_path, [digest]
    )
    assert distiller.marginals is not None
    tag_map = TagMap(FIXTURE_LABELS, student.vocab.tags, "BIOES")
    for i in (0, 5, len(tokens) - 1):
        words = tokens[i]
        expected = tag_map.apply(
            teacher.word_distributions(teacher.collate([words])), torch.tensor([len(words)])
        )[0]
        unary, pair = distiller.marginals[i]
        torch.testing.assert_close(unary, expected, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(pair, expected[:-1, :, None] * expected[1:, None, :])


def cli(*args: str) -> int:
    return main([*args, *(a for s in TINY for a in ("--set", s))])


@pytest.mark.parametrize(
    ("config", "extra"),
    [
        ("case3", []),  # CRF student, structural KD
        ("case2a", []),  # MaxEnt student, structural KD
        ("case3", ["--method=token"]),
        ("case3", ["--method=posterior"]),
        ("case3", ["--method=topk", "--set", "distill.k=3"]),
        ("case3", ["--set", "distill.subword_pooling=mean", "--set", "distill.temperature=2"]),
    ],
)
def test_distill_from_a_hugging_face_teacher(
    hf_dir: Path, tmp_path: Path, config: str, extra: list[str]
) -> None:
    out = tmp_path / "student"
    args = [str(ROOT / "configs" / "ner" / f"{config}.yaml"), *DATA, f"--out={out}"]
    code = cli("distill", *args, f"--teacher={hf_dir}", "--max-epochs=1", *extra)
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert "test" in metrics
    cached = list((out / "cache").glob("*.safetensors"))
    assert len(cached) == 1  # marginals or targets, computed once


def test_hugging_face_teacher_from_the_config(hf_dir: Path, tmp_path: Path) -> None:
    args = [str(ROOT / "configs" / "ner" / "case3.yaml"), *DATA, f"--out={tmp_path / 's'}"]
    sets = ["--set", f"distill.teachers=[{hf_dir}]", "--max-epochs=1"]
    assert cli("distill", *args, *sets) == 0


def test_bad_hugging_face_teachers_are_user_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    transformers = pytest.importorskip("transformers")
    misc = tiny_token_classifier(tmp_path / "misc", labels=["O", "B-PER", "B-MISC", "I-MISC"])
    base = tmp_path / "base"
    tiny_token_classifier(base)
    config = transformers.AutoConfig.from_pretrained(base)
    transformers.BertModel(config).save_pretrained(tmp_path / "encoder")
    no_tokenizer = tmp_path / "no-tokenizer"
    transformers.BertForTokenClassification(config).save_pretrained(no_tokenizer)
    args = [str(ROOT / "configs" / "ner" / "case3.yaml"), *DATA, "--max-epochs=1"]
    for teacher, message in (
        (misc, "labels B-MISC, I-MISC cannot be mapped"),
        (tmp_path / "encoder", "not a token classifier"),
        (no_tokenizer, "no usable tokenizer"),
    ):
        out = tmp_path / f"out-{teacher.name}"
        capsys.readouterr()  # what building the models printed
        assert cli("distill", *args, f"--teacher={teacher}", f"--out={out}") == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
        assert not out.exists()
