"""The typed experiment spec: what an experiment file plans, read once and checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from structkd.config import ConfigError, load_config
from structkd.lab.experiment import plan_runs
from structkd.lab.spec import DataSlice, ExperimentSpec

RAW = {
    "teachers": {"crf": {"config": "t.yaml", "seed": 3}, "old": {"model": "x/model"}},
    "students": {
        "case1a-small": {
            "config": "s.yaml",
            "teacher": "crf",
            "seeds": [1, 2],
            "data": {"train": [{"path": "a/train.txt", "first": 5}], "test": "a/test.txt"},
            "methods": {
                "none": "none",
                "structural-T2": {"method": "structural", "set": ["distill.temperature=2"]},
                "both": {"teacher": ["crf", "old"]},
            },
        }
    },
}


def test_the_plan_names_every_run_with_its_parts() -> None:
    spec = ExperimentSpec.from_dict(RAW)
    plan = spec.plan()
    assert [r.run_id for r in plan[:2]] == ["teacher-old", "teacher-crf"]  # elsewhere first
    assert plan[0].seed is None and plan[1].seed == 3
    students = plan[2:]
    assert [r.run_id for r in students] == [
        f"case1a-small-{m}-s{s}" for s in (1, 2) for m in ("none", "structural-T2", "both")
    ]
    t2 = students[1]
    assert (t2.group, t2.method, t2.kind, t2.seed) == (
        "case1a-small",
        "structural-T2",
        "structural",
        1,
    )
    assert t2.teachers == ["teacher-crf"] and students[0].teachers == []
    assert students[2].teachers == ["teacher-crf", "teacher-old"]
    assert spec.students["case1a-small"].data["train"] == (DataSlice("a/train.txt", 0, 5),)
    assert spec.kind("case1a-small", "both") == "structural"


@pytest.mark.parametrize(
    ("students", "message"),
    [
        ({"s": {"teacher": "nope"}}, "e.yaml: student s: unknown teacher 'nope'"),
        ({"s": {"methods": {"a": 1}}}, "e.yaml: student s: method a: expected str or map"),
        ({"s": {"data": {"train": [{"first": 3}]}}}, "e.yaml: student s: data entry"),
        (
            {"s": {"methods": {"a": {"unlabeled": 3}}}},
            "e.yaml: student s: method a: unlabeled: expected true, false or a list of corpora",
        ),
    ],
)
def test_a_malformed_file_is_refused_in_one_line(students: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=f"^{message}") as error:
        ExperimentSpec.from_dict({"students": students}, "e.yaml")
    assert "\n" not in str(error.value)


def test_a_method_may_distil_without_unlabeled_text_or_on_its_own(tmp_path: Path) -> None:
    """``unlabeled: false``: the case's unlabeled corpus is not passed, and the base config's
    (e.g. bundled sentences) is emptied; ``unlabeled: [...]``: those corpora instead of the
    case's; the other KD methods keep the case's."""
    spec = ExperimentSpec.from_dict(
        {
            "teachers": {"t": {"model": "x/model"}},
            "students": {
                "s": {
                    "config": "configs/ner/case1a.yaml",
                    "teacher": "t",
                    "data": {"train": "a.txt", "unlabeled": "u.txt", "dev": "d.txt"},
                    "methods": {
                        "structural": "structural",
                        "labeled-only": {"method": "structural", "unlabeled": False},
                        "news": {"method": "structural", "unlabeled": ["n.txt", "m.txt"]},
                    },
                }
            },
        }
    )
    runs = {r.method: r for r in plan_runs(spec, Path("D"), tmp_path, tmp_path)}
    assert runs["structural"].args[runs["structural"].args.index("--unlabeled") + 1] == "D/u.txt"
    only = runs["labeled-only"].args
    assert "--unlabeled" not in only and "data.unlabeled=[]" in only
    assert "D/u.txt" not in runs["labeled-only"].data
    news = runs["news"].args
    assert [b for a, b in zip(news, news[1:]) if a == "--unlabeled"] == ["D/n.txt", "D/m.txt"]
    assert "data.unlabeled=[]" not in news
    root = Path(__file__).parents[1]
    sets = [b for a, b in zip(only, only[1:]) if a == "--set"]
    assert load_config(root / only[1], sets).data.unlabeled == []
