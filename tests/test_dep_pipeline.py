"""The dependency pipeline end to end: configs/dep through the CLI (train, distill, evaluate,
predict), attachment scores against hand computations, the KD loss going down, user errors."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

from dep_tiny import DEP_TINY
from structkd.cli import main
from structkd.config import ConfigError, DistillConfig, EncoderConfig, ModelConfig, load_config
from structkd.data.conll import read_ner
from structkd.data.conllu import read_conllu, read_dep
from structkd.data.trees import is_tree
from structkd.kd.stored import HalfMarginals
from structkd.models.checkpoint import load_model
from structkd.models.depbase import DepModel
from structkd.models.seqlabel import SeqLabelParser
from structkd.models.tagger import build_tagger
from structkd.tasks import dep as dep_task
from structkd.tasks import get_task
from structkd.train.distill import Distiller

ROOT = Path(__file__).parent.parent
CONFIGS = ROOT / "configs" / "dep"
FIXTURES = Path(__file__).parent / "fixtures" / "dep"
EWT = FIXTURES / "en_ewt-dev-slice.conllu"
BAD = FIXTURES / "bad"
DATA = [f"--train={EWT}", f"--dev={EWT}", f"--test={EWT}"]
TINY = [
    *DEP_TINY,
    "train.batch_size=8",
    "train.lr=0.01",
    "train.progress=false",
]
TEACHERS = ("teacher-biaffine", "teacher-biaffine-crf", "teacher-sibling")


pytestmark = pytest.mark.usefixtures("one_thread")


def cli(*args: str) -> int:
    sets = [a for s in TINY for a in ("--set", s)]
    return main([*args, *sets] if args[0] in ("train", "distill") else list(args))


@pytest.fixture(scope="module")
def teachers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each teacher config trained for one epoch on the fixture (once for the module)."""
    root = tmp_path_factory.mktemp("teachers")
    out = {}
    for name in TEACHERS:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # non-projective training trees (tested elsewhere)
            code = cli(
                "train", str(CONFIGS / f"{name}.yaml"), *DATA, f"--out={root / name}",
                "--max-epochs=1",
            )
        assert code == 0
        out[name] = root / name
    return out


def check_predictions(model_dir: Path, tmp_path: Path) -> None:
    """predict writes CoNLL-U: the input's lines with a well-formed tree per sentence."""
    pred = tmp_path / "pred.conllu"
    assert main(["predict", str(model_dir / "model"), str(EWT), f"--output={pred}"]) == 0
    gold, parsed = read_conllu(EWT), read_conllu(pred)
    assert [s.words for s in parsed] == [s.words for s in gold]
    assert all(is_tree(s.heads) and s.rels is not None for s in parsed)
    assert [s.comments for s in parsed] == [s.comments for s in gold]


@pytest.mark.parametrize("name", TEACHERS)
def test_teacher_configs_train_evaluate_predict(
    teachers: dict[str, Path], name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = teachers[name]
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert {"dev_uas", "dev_las", "loss"} <= set(log[-1])
    test = json.loads((out / "metrics.json").read_text())["test"]
    assert 0 <= test["las"] <= test["uas"] <= 100 and "per_relation" in test
    capsys.readouterr()
    assert main(["evaluate", str(out / "model"), str(EWT)]) == 0
    assert json.loads(capsys.readouterr().out)["uas"] == pytest.approx(test["uas"])
    check_predictions(out, tmp_path)


@pytest.mark.parametrize(("case", "teacher"), [("case1b", "teacher-biaffine-crf"),
                                               ("case2b", "teacher-sibling")])
def test_case_configs_distill(
    teachers: dict[str, Path], case: str, teacher: str, tmp_path: Path
) -> None:
    out = tmp_path / case
    code = cli(
        "distill", str(CONFIGS / f"{case}.yaml"), *DATA, f"--unlabeled={EWT}",
        f"--teacher={teachers[teacher] / 'model'}", f"--out={out}", "--max-epochs=2",
    )
    assert code == 0
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    # The teacher mass the student's labels cannot express is logged, not silently dropped.
    assert all(0 < r["kd_lost_mass"] < 1 for r in log), log
    assert log[0]["lambda"] > log[1]["lambda"]
    assert list((out / "cache").glob("marginals-*.safetensors"))
    assert isinstance(load_model(out / "model"), SeqLabelParser)
    assert {"uas", "las"} <= set(json.loads((out / "metrics.json").read_text())["test"])
    check_predictions(out, tmp_path)


@pytest.mark.parametrize(
    ("method", "kind"),
    [("token", "seqlabel"), ("top1", "seqlabel"), ("structural", "head_selection"),
     ("token", "head_selection"), ("top1", "head_selection"), ("topwk", "seqlabel"),
     ("substructure", "head_selection")],
)
def test_other_methods_and_head_selection_student(
    teachers: dict[str, Path], method: str, kind: str, tmp_path: Path
) -> None:
    code = cli(
        "distill", str(CONFIGS / "case1b.yaml"), *DATA, f"--method={method}",
        f"--teacher={teachers['teacher-biaffine-crf'] / 'model'}", f"--out={tmp_path / 'o'}",
        "--max-epochs=1", "--set", f"model.parser.kind={kind}",
        "--set", "distill.temperature=2.0", "--set", "distill.temperature_mode=local",
    )
    assert code == 0
    record = json.loads((tmp_path / "o" / "train_log.jsonl").read_text().splitlines()[0])
    assert ("kd_lost_mass" in record) == (kind == "seqlabel")
    assert all(is_tree(h) for h, _ in dep_task.predict_trees(
        load_model(tmp_path / "o" / "model"), [s.words for s in read_conllu(EWT)]))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("teacher", "student"),
    [("teacher-biaffine-crf", "seqlabel"), ("teacher-sibling", "seqlabel"),
     ("teacher-biaffine-crf", "head_selection")],
)
def test_structural_kd_loss_goes_down(
    teachers: dict[str, Path], teacher: str, student: str, tmp_path: Path
) -> None:
    """Training on the structural KD loss alone drives the student to the teacher's marginals:
    the loss's excess over its minimum (the teacher's per-word entropy, after conditioning on
    what the student can express) shrinks."""
    task = get_task("dep")
    sentences = read_dep(EWT)
    wider = ["model.encoder.lstm_hidden=16", "model.parser.arc_dim=16"]
    config = load_config(CONFIGS / "case1b.yaml", [*TINY, *wider, f"model.parser.kind={student}"])
    torch.manual_seed(0)
    model = task.build_model(config.model, sentences)
    words = [s.words for s in sentences]
    distiller = Distiller(
        [load_model(teachers[teacher] / "model")], DistillConfig(anneal=False, lam=1.0), words,
        [0] * len(words), model, tmp_path / "cache", ["t"],
    )
    assert distiller.marginals is not None
    floor = 0.0
    for (q,) in distiller.marginals:  # [n, K] labels or [n+1, n+1] arcs, rows = words
        q = q.double() / q.double().sum(-1, keepdim=True).clamp_min(1e-30)
        floor -= float(torch.where(q > 0, q * q.log(), 0.0).sum())
    batch = task.collate(model, sentences)
    indices = list(range(len(words)))

    def excess() -> float:
        model.eval()
        with torch.no_grad():
            loss = distiller.losses(model(batch), batch, indices).sum()
        model.train()
        return float(loss) - floor

    before = excess()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(40):
        loss = distiller.losses(model(batch), batch, indices).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert before > 0 and excess() < 0.5 * before, (before, excess())
    assert distiller.epoch_stats().get("kd_lost_mass", 0.0) >= 0


def test_attachment_scores_by_hand_and_punctuation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, teachers: dict[str, Path]
) -> None:
    conllu = tmp_path / "gold.conllu"
    conllu.write_text(
        "1\tThe\tthe\tDET\tDT\t_\t2\tdet\t_\t_\n"
        "2\tcat\tcat\tNOUN\tNN\t_\t3\tnsubj\t_\t_\n"
        "3\tsat\tsit\tVERB\tVBD\t_\t0\troot\t_\t_\n"
        "4\t.\t.\tPUNCT\t.\t_\t3\tpunct\t_\t_\n\n"
    )
    malttab = tmp_path / "gold.malttab"  # PTB tags mark punctuation
    malttab.write_text("Hi\tUH\t0\troot\n,\t,\t1\tpunct\nyou\tPRP\t1\tvocative\n")
    predictions = {
        ("The", "cat", "sat", "."): ([2, 3, 0, 2], ["det", "obj", "root", "punct"]),
        ("Hi", ",", "you"): ([0, 3, 1], ["root", "punct", "obj"]),
    }
    monkeypatch.setattr(
        dep_task, "predict_trees", lambda model, words: [predictions[tuple(w)] for w in words]
    )
    task = get_task("dep")
    model = load_model(teachers["teacher-biaffine"] / "model")
    expected = {  # (file, include punctuation): (UAS, LAS)
        (conllu, False): (100.0, 200 / 3),  # cat's relation is wrong
        (conllu, True): (75.0, 50.0),  # the period's head is wrong too
        (malttab, False): (100.0, 50.0),
        (malttab, True): (200 / 3, 100 / 3),
    }
    for (path, punct), (uas, las) in expected.items():
        scores = task.evaluate(model, task.read_labeled(str(path), "auto"), include_punct=punct)
        assert (scores["uas"], scores["las"]) == (pytest.approx(uas), pytest.approx(las))
    both = task.read_labeled(str(conllu), "auto") + task.read_labeled(str(malttab), "auto")
    scores = task.evaluate(model, both)
    assert scores["tokens"] == 5 and scores["per_relation"]["nsubj"]["las"] == 0.0


def test_predict_plain_text(teachers: dict[str, Path], tmp_path: Path) -> None:
    text = tmp_path / "in.txt"
    text.write_text("The cat sat .\n\nDogs   bark\n")
    out = tmp_path / "out.conllu"
    model = teachers["teacher-biaffine-crf"] / "model"
    assert main(["predict", str(model), str(text), f"--output={out}"]) == 0
    parsed = read_conllu(out)
    assert [s.words for s in parsed] == [["The", "cat", "sat", "."], ["Dogs", "bark"]]
    assert all(is_tree(s.heads) for s in parsed)


def test_user_errors_exit_2_with_file_and_line(
    teachers: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(CONFIGS / "teacher-biaffine.yaml")
    model = str(teachers["teacher-biaffine"] / "model")
    cases = [
        (["train", config, f"--train={BAD / 'cycle.conllu'}", f"--out={tmp_path / 'o1'}"],
         f"{BAD / 'cycle.conllu'}:7: cycle in the heads"),
        (["train", config, f"--train={EWT}", f"--dev={BAD / 'wrong_columns.malttab'}",
          f"--out={tmp_path / 'o2'}"], f"{BAD / 'wrong_columns.malttab'}:5: expected 4"),
        (["evaluate", model, str(BAD / "non_integer_head.conllu")],
         f"{BAD / 'non_integer_head.conllu'}:6: head '_'"),
        (["predict", model, str(BAD / "several_roots.conllu")],
         f"{BAD / 'several_roots.conllu'}:8: several roots"),
        (["train", config, *DATA, "--set", "data.format=wikiann", f"--out={tmp_path / 'o3'}"],
         "task dep reads formats"),
        (["distill", str(CONFIGS / "case1b.yaml"), *DATA, f"--teacher={model}",
          "--method=posterior", f"--out={tmp_path / 'o4'}"],
         "distill.method=posterior is not available for task dep"),
    ]
    for args, message in cases:
        code = cli(*args)
        err = capsys.readouterr().err
        assert code == 2, (args, err)
        assert err.startswith("error: ") and err.count("\n") == 1, err
        assert message in err, err
    assert not any((tmp_path / f"o{i}").exists() for i in range(1, 5))


def test_distiller_refuses_a_tagger_teacher_and_a_seqlabel_teacher(
    teachers: dict[str, Path], tmp_path: Path
) -> None:
    task = get_task("dep")
    sentences = read_dep(EWT)
    config = load_config(CONFIGS / "case1b.yaml", TINY)
    student = task.build_model(config.model, sentences)
    assert isinstance(student, DepModel)
    other = task.build_model(config.model, sentences)
    with pytest.raises(ConfigError, match="teacher 1 is a seqlabel model"):
        Distiller([other], DistillConfig(), [], [], student, tmp_path, ["x"])
    ner = read_ner(FIXTURES.parent / "pipeline" / "train.conll")
    tagger = build_tagger(ModelConfig(EncoderConfig(word_dim=4, char_filters=0, lstm_hidden=0)),
                          [s.tokens for s in ner], [s.tags for s in ner if s.tags])
    with pytest.raises(ConfigError, match="teacher 1 is a ner model, the student a dep model"):
        Distiller([tagger], DistillConfig(), [], [], student, tmp_path, ["x"])


def test_minilm_teacher_is_configured() -> None:
    config = load_config(CONFIGS / "teacher-minilm-biaffine.yaml")
    assert config.task == "dep" and config.model.encoder.transformer == "all-MiniLM-L6-v2"
    assert config.model.encoder.lstm_hidden == 0 and config.model.parser.kind == "head_selection"


@pytest.mark.parametrize("student", ["seqlabel", "head_selection"])
def test_compact_cache_stores_parser_targets_in_float16(
    teachers: dict[str, Path], student: str, tmp_path: Path
) -> None:
    """``distill.stored: compact``: a parser teacher's labeled arcs (sequence-labeling student)
    or arcs (graph student) are cached in float16, half the bytes of the exact cache, and every
    sentence's KD loss stays within 1e-3 of the exact cache's."""
    task = get_task("dep")
    sentences = read_dep(EWT)
    config = load_config(CONFIGS / "case1b.yaml", [*TINY, f"model.parser.kind={student}"])
    torch.manual_seed(0)
    model = task.build_model(config.model, sentences).eval()
    words = [s.words for s in sentences]
    teacher = load_model(teachers["teacher-biaffine-crf"] / "model")
    made = {
        stored: Distiller(
            [teacher], DistillConfig(stored=stored), words, [0] * len(words), model,  # type: ignore[arg-type]
            tmp_path / stored, ["t"],
        )
        for stored in ("exact", "compact")
    }
    assert made["exact"].form is None and isinstance(made["compact"].form, HalfMarginals)
    size = {k: sum(f.stat().st_size for f in (tmp_path / k).rglob("*.safetensors")) for k in made}
    assert 0.45 < size["compact"] / size["exact"] < 0.6, size
    batch = task.collate(model, sentences)
    indices = list(range(len(words)))
    with torch.no_grad():
        output = model(batch)
        exact, half = (made[k].losses(output, batch, indices) for k in ("exact", "compact"))
    assert float(exact.abs().sum()) > 0
    assert bool(((half - exact).abs() <= 1e-3 * exact.abs().clamp(min=1)).all())
