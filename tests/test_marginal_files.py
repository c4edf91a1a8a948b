"""Marginal files: annotate -> file -> distill equals distilling from the teacher; validation."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from hf_tiny import tiny_token_classifier
from structkd.cli import main
from structkd.data.conll import read_ner
from structkd.kd.given import span_marginals_to_tags
from structkd.kd.span_projection import span_tag_marginals
from structkd.models.marginal_file import marginal_paths, read_marginals, write_marginals
from structkd.structures.semi_markov import SemiMarkovCRF

ROOT = Path(__file__).parent.parent
NER = ROOT / "tests" / "fixtures" / "pipeline"
TRAIN = NER / "train.conll"
NER_DATA = [f"--train={TRAIN}", f"--dev={NER / 'dev.conll'}", f"--test={NER / 'test.conll'}"]
EWT = ROOT / "tests" / "fixtures" / "dep" / "en_ewt-dev-slice.conllu"
DEP_DATA = [f"--train={EWT}", f"--dev={EWT}", f"--test={EWT}"]
TINY = [
    "model.encoder.word_dim=8",
    "model.encoder.char_dim=4",
    "model.encoder.char_filters=6",
    "model.encoder.lstm_hidden=6",
    "model.head.span_dim=5",
    "model.parser.arc_dim=8",
    "model.parser.rel_dim=4",
    "train.batch_size=8",
    "train.lr=0.01",
    "train.progress=false",
    "data.unlabeled=[]",  # a file covers the training sentences: here data.train only
]


pytestmark = pytest.mark.usefixtures("one_thread")


def cli(*args: str) -> int:
    sets = [a for s in TINY for a in ("--set", s)]
    return main([*args, *sets] if args[0] in ("train", "distill") else list(args))


def config(task: str, name: str) -> str:
    return str(ROOT / "configs" / task / f"{name}.yaml")


@pytest.fixture(scope="module")
def teachers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny trained teachers of every layout, and a Hugging Face one."""
    root = tmp_path_factory.mktemp("teachers")
    out = {}
    for task, name, data in (
        ("ner", "teacher-crf", NER_DATA),
        ("ner", "teacher-maxent", NER_DATA),
        ("ner", "teacher-span", NER_DATA),
        ("dep", "teacher-biaffine-crf", DEP_DATA),
    ):
        run = root / name
        assert cli("train", config(task, name), *data, f"--out={run}", "--max-epochs=1") == 0
        out[name] = run / "model"
    words = sorted({w for s in read_ner(TRAIN, "conll") for w in s.tokens})
    out["hf"] = tiny_token_classifier(root / "hf", max_positions=10, words=words[::2])
    return out


def distilled(out: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], list[float]]:
    """A distillation's cached teacher tensors, student weights and per-epoch losses."""
    (cache,) = (out / "cache").glob("*.safetensors")
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    losses = [float(r["loss"]) for r in log if "loss" in r]
    assert losses
    return load_file(str(cache)), load_file(str(out / "model" / "model.safetensors")), losses


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize(
    ("teacher", "task", "student", "data", "extra", "layout"),
    [
        ("hf", "ner", "case3", NER_DATA, [], "tags"),  # HF -> CRF student, structural
        ("hf", "ner", "case2a", NER_DATA, ["--method=posterior"], "tags"),
        (
            "hf",
            "ner",
            "case3",
            NER_DATA,
            ["--method=token", "--set", "distill.temperature=2"],
            "tags",
        ),
        ("hf", "ner", "case3", NER_DATA, ["--method=topwk", "--set", "distill.k=3"], "tags"),
        ("teacher-crf", "ner", "case1a", NER_DATA, [], "tag_pairs"),
        ("teacher-crf", "ner", "case2a", NER_DATA, ["--method=posterior"], "tag_pairs"),
        (
            "teacher-biaffine-crf",
            "dep",
            "case1b",
            DEP_DATA,
            ["--set", "model.parser.kind=head_selection"],
            "arcs",
        ),
    ],
)
def test_marginal_file_distils_exactly_as_the_teacher(
    teachers: dict[str, Path],
    tmp_path: Path,
    teacher: str,
    task: str,
    student: str,
    data: list[str],
    extra: list[str],
    layout: str,
) -> None:
    """annotate (same sentences, same batch size) -> --teacher-marginals gives bit for bit the
    teacher's cached marginals or targets, the same per-epoch losses and the same student."""
    corpus = TRAIN if task == "ner" else EWT
    file = tmp_path / "teacher"
    assert (
        cli("annotate", str(teachers[teacher]), str(corpus), f"--out={file}", "--batch-size=8") == 0
    )
    assert read_marginals(file).layout == layout
    common = [config(task, student), *data, "--max-epochs=2", *extra]
    assert cli("distill", *common, f"--teacher={teachers[teacher]}", f"--out={tmp_path / 'a'}") == 0
    assert cli("distill", *common, f"--teacher-marginals={file}", f"--out={tmp_path / 'b'}") == 0
    cache_a, weights_a, losses_a = distilled(tmp_path / "a")
    cache_b, weights_b, losses_b = distilled(tmp_path / "b")
    assert_same(cache_a, cache_b)
    assert losses_a == losses_b
    assert_same(weights_a, weights_b)


@pytest.mark.parametrize(
    ("teacher", "student", "extra"),
    [
        ("teacher-maxent", "case3", []),  # the teacher's own tags: taken as they are
        ("teacher-span", "case4", []),  # case 4: span marginals -> MaxEnt student's tags
        ("teacher-span", "case4", ["--method=posterior"]),
    ],
)
def test_marginal_file_distils_as_the_teacher_up_to_rounding(
    teachers: dict[str, Path], tmp_path: Path, teacher: str, student: str, extra: list[str]
) -> None:
    """Layouts whose file teacher computes the student's parts by another route than the
    teacher (the softmax of stored log-probabilities; tags from span marginals rather than from
    the forward-backward tables) agree with it to float32 rounding."""
    file = tmp_path / "teacher"
    assert cli("annotate", str(teachers[teacher]), str(TRAIN), f"--out={file}") == 0
    common = [config("ner", student), *NER_DATA, "--max-epochs=1", *extra]
    assert cli("distill", *common, f"--teacher={teachers[teacher]}", f"--out={tmp_path / 'a'}") == 0
    assert cli("distill", *common, f"--teacher-marginals={file}", f"--out={tmp_path / 'b'}") == 0
    cache_a, _, _ = distilled(tmp_path / "a")
    cache_b, _, _ = distilled(tmp_path / "b")
    assert cache_a.keys() == cache_b.keys()
    for key in cache_a:
        torch.testing.assert_close(cache_b[key], cache_a[key], rtol=1e-4, atol=1e-5)


def test_span_marginals_to_tags_equals_the_span_projection() -> None:
    generator = torch.Generator().manual_seed(0)
    scores = torch.randn(3, 5, 5, 2, generator=generator)
    teacher = SemiMarkovCRF(scores, torch.tensor([5, 3, 1]))
    for scheme in ("BIOES", "BIO"):
        expected = span_tag_marginals(teacher, scheme)
        mask = torch.arange(5)[None, :, None] < teacher.lengths[:, None, None]
        got = span_marginals_to_tags(teacher.marginals, scheme) * mask
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


@pytest.fixture()
def good_file(teachers: dict[str, Path], tmp_path: Path) -> Path:
    file = tmp_path / "crf"
    assert cli("annotate", str(teachers["teacher-crf"]), str(TRAIN), f"--out={file}") == 0
    return file


def _rewrite(file: Path, index: dict | None = None, tensors: dict | None = None) -> None:
    """Replaces the index and/or tensors of a marginal file, keeping its checksum valid."""
    json_path, data_path = marginal_paths(file)
    meta = dict(index) if index is not None else json.loads(json_path.read_text())
    if tensors is not None:
        save_file(tensors, str(data_path))
    meta["sha256"] = hashlib.sha256(data_path.read_bytes()).hexdigest()
    json_path.write_text(json.dumps(meta))


def _fails(tmp_path: Path, file: Path, message: str, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "student"
    capsys.readouterr()
    common = [config("ner", "case1a"), *NER_DATA, "--max-epochs=1", f"--out={out}"]
    assert cli("distill", *common, f"--teacher-marginals={file}") == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_bad_marginal_files_are_user_errors(
    good_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    json_path, data_path = marginal_paths(good_file)
    meta = json.loads(json_path.read_text())
    tensors = load_file(str(data_path))
    n = len(meta["sentences"])

    fewer = dict(meta, sentences=meta["sentences"][:-1])
    del_last = {k: v for k, v in tensors.items() if not k.startswith(f"{n - 1}.")}
    _rewrite(good_file, fewer, del_last)
    _fails(tmp_path, good_file, f"holds {n - 1} sentences, the training data {n}", capsys)

    _rewrite(good_file, meta, tensors)
    other = json.loads(json.dumps(meta))
    other["sentences"][2]["tokens"][0] = "Elsewhere"
    _rewrite(good_file, other)
    _fails(tmp_path, good_file, "sentence 3 has tokens (Elsewhere", capsys)

    not_distribution = dict(tensors)
    not_distribution["4.tags"] = tensors["4.tags"] * 0.5
    _rewrite(good_file, meta, not_distribution)
    _fails(tmp_path, good_file, "sentence 5 (", capsys)
    _fails(tmp_path, good_file, "tags row 1 sums to", capsys)

    wrong_shape = dict(tensors)
    wrong_shape["0.pairs"] = tensors["0.pairs"][:-1]
    _rewrite(good_file, meta, wrong_shape)
    _fails(tmp_path, good_file, "sentence 1 (", capsys)

    inconsistent = dict(tensors)
    pairs = tensors["1.pairs"].clone()
    pairs[0] = 0.0
    pairs[0, -1, -1] = 1.0  # still a distribution, but not the one of the tags
    inconsistent["1.pairs"] = pairs
    _rewrite(good_file, meta, inconsistent)
    _fails(tmp_path, good_file, "pairs disagree with tags", capsys)

    _rewrite(good_file, meta, tensors)
    data_path.write_bytes(data_path.read_bytes()[:-8])
    _fails(tmp_path, good_file, "safetensors", capsys)
    _fails(tmp_path, tmp_path / "missing", "no such marginal file", capsys)


def test_layouts_refuse_what_they_cannot_teach(
    good_file: Path, teachers: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "student"
    common = [*NER_DATA, "--max-epochs=1", f"--out={out}", f"--teacher-marginals={good_file}"]
    for args, message in (
        ([config("ner", "case1a"), "--method=token"], "serves distill.method structural"),
        ([config("ner", "case1a"), "--set", "distill.temperature=2"], "temperature_mode=local"),
        ([config("dep", "case1b")], "teaches task ner, not dep"),
        ([config("ner", "case1a"), "--set", "model.head.tag_scheme=BIO"], "not among the student"),
        ([config("ner", "case1a"), f"--teacher={teachers['teacher-crf']}"], "not both"),
    ):
        capsys.readouterr()
        assert cli("distill", *args, *common) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
        assert not out.exists()
    spans = tmp_path / "spans"
    assert cli("annotate", str(teachers["teacher-span"]), str(TRAIN), f"--out={spans}") == 0
    capsys.readouterr()
    args = [config("ner", "case1a"), *NER_DATA, f"--teacher-marginals={spans}", f"--out={out}"]
    assert cli("distill", *args) == 2
    assert "not its tag-pair marginals" in capsys.readouterr().err


def test_write_marginals_checks_before_writing(tmp_path: Path) -> None:
    from structkd.data.errors import DataError

    rows = [{"tags": torch.tensor([[0.5, 0.5], [0.2, 0.7]])}]
    with pytest.raises(DataError, match=r"sentence 1 \(a b\): tags row 2 sums to 0.9"):
        write_marginals(tmp_path / "x", "tags", ["O", "B-PER"], [["a", "b"]], rows)
    assert not list(tmp_path.iterdir())
