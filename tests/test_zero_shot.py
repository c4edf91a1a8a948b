"""Zero-shot distillation: a student with no labeled sentence learns from its teachers alone on
unlabeled text (the label set comes from the teacher), several source corpora make one teacher's
tag set, and a grid can average per-language teachers and score students on extra corpora."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from structkd.cli import main
from structkd.config import ConfigError, ModelConfig
from structkd.data.conll import Sentence
from structkd.lab.experiment import run_experiment
from structkd.models.checkpoint import load_model
from structkd.tasks import get_task

ROOT = Path(__file__).parent.parent
FIXTURES = Path(__file__).parent / "fixtures" / "pipeline"
CONFIGS = ROOT / "configs" / "ner"
TINY = [
    "model.encoder.word_dim=8",
    "model.encoder.char_dim=4",
    "model.encoder.char_filters=4",
    "model.encoder.lstm_hidden=6",
    "train.batch_size=8",
    "train.lr=0.01",
    "train.progress=false",
]
SETS = [a for s in TINY for a in ("--set", s)]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("zs") / "teacher"
    data = [f"--train={FIXTURES / 'train.conll'}", f"--dev={FIXTURES / 'dev.conll'}"]
    code = main(["train", str(CONFIGS / "teacher-maxent.yaml"), *data, f"--out={out}", *SETS,
                 "--max-epochs=2"])  # fmt: skip
    assert code == 0
    return out / "model"


def _distill(out: Path, teachers: list[Path], *extra: str) -> int:
    args = ["distill", str(CONFIGS / "case3.yaml"), "--set", "data.train=[]"]
    args += [f"--unlabeled={FIXTURES / 'unlabeled.txt'}", f"--dev={FIXTURES / 'dev.conll'}"]
    args += [f"--test={FIXTURES / 'test.conll'}", f"--out={out}", "--max-epochs=2"]
    return main([*args, *(a for t in teachers for a in ("--teacher", str(t))), *SETS, *extra])


def test_a_student_without_labels_takes_the_teachers_tag_set_and_says_so(
    teacher: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _distill(tmp_path / "student", [teacher]) == 0
    said = capsys.readouterr().out
    assert "no labeled training sentences: learning from 1 teacher(s) alone" in said
    assert "train 0 labeled + " in said
    student, master = load_model(tmp_path / "student/model"), load_model(teacher)
    assert student.vocab.entity_types == master.vocab.entity_types
    assert student.vocab.output_scheme == master.vocab.output_scheme
    assert student.vocab.tags == master.vocab.tags  # both BIOES over the same types
    metrics = json.loads((tmp_path / "student/metrics.json").read_text(encoding="utf-8"))
    assert "f1" in metrics["dev"] and "f1" in metrics["test"]
    log = (tmp_path / "student/train_log.jsonl").read_text(encoding="utf-8").splitlines()
    losses = [json.loads(line)["loss"] for line in log]
    assert len(losses) == 2 and losses[1] < losses[0]  # it learns from the KD loss alone


def test_no_labels_and_no_teacher_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["train", str(CONFIGS / "case3.yaml"), "--set", "data.train=[]"]
    args += [f"--unlabeled={FIXTURES / 'unlabeled.txt'}", f"--out={tmp_path / 'x'}"]
    with pytest.warns(UserWarning, match="data.unlabeled"):
        assert main([*args, *SETS]) == 2
    assert "data.train is empty" in capsys.readouterr().err
    assert not (tmp_path / "x" / "model").exists()


def test_several_source_corpora_make_one_tag_set(tmp_path: Path) -> None:
    """Types missing from one corpus are simply absent from it: the tag set is the union."""
    task = get_task("ner")
    per = [Sentence(["Ann", "runs"], ["B-PER", "O"])]
    loc = [Sentence(["in", "Oslo"], ["O", "B-LOC"]), Sentence(["Rome"], ["B-LOC"])]
    model = task.build_model(ModelConfig(), [*per, *loc])
    assert model.vocab.entity_types == ["LOC", "PER"]
    with pytest.raises(ConfigError, match="no labeled training sentences"):
        task.build_model(ModelConfig(), [Sentence(["a", "b"])])
    student = task.build_model(ModelConfig(), [Sentence(["a", "b"])], [model])
    assert student.vocab.entity_types == ["LOC", "PER"]


def test_a_grid_averages_per_language_teachers_and_scores_extra_corpora(tmp_path: Path) -> None:
    teacher = {
        "config": str(CONFIGS / "teacher-maxent.yaml"),
        "data": {"train": ["train.conll"], "dev": "dev.conll", "test": "test.conll"},
        "set": [*TINY, "train.max_epochs=1"],
    }
    spec = {
        "data_root": str(FIXTURES),
        "work_dir": str(tmp_path / "runs"),
        "teachers": {"a": teacher, "b": {**teacher, "seed": 2}},
        "also_evaluate": {"dev-again": "dev.conll"},
        "students": {
            "zs": {
                "config": str(CONFIGS / "case3.yaml"),
                "teacher": "a",
                "data": {"unlabeled": ["unlabeled.txt"], "dev": "dev.conll", "test": "test.conll"},
                "set": [*TINY, "train.max_epochs=1", "data.train=[]"],
                "methods": {
                    "both": {
                        "method": "structural",
                        "teacher": ["a", "b"],
                        "set": ["distill.teacher_binding=average"],
                    }
                },
            }
        },
    }
    path = tmp_path / "zs.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    run_experiment(path, tmp_path / "results")
    done = tmp_path / "results/zs/zs-both-s1"
    record = json.loads((done / "run.json").read_text(encoding="utf-8"))
    assert record["teachers"] == ["teacher-a", "teacher-b"]
    assert record["command"].count("--teacher ") == 2
    metrics = json.loads((done / "metrics.json").read_text(encoding="utf-8"))
    extra = json.loads((done / "also_evaluated.json").read_text(encoding="utf-8"))
    # the same corpus as the run's dev set: the same score
    assert extra["dev-again"]["score"] == pytest.approx(metrics["dev"]["f1"], abs=1e-9)
    assert extra["dev-again"]["data"] == "dev.conll"
