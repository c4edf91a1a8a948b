"""The committed full-resource experiment files plan the grid issue 12 asks for (no data needed)."""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import pytest

from structkd.config import load_config
from structkd.lab import experiment
from structkd.lab.experiment import load_experiment, plan_runs, run_experiment
from structkd.lab.spec import ExperimentSpec

ROOT = Path(__file__).parents[1]
GRIDS = ["conll03-full", "wikiann-de-full", "conll03-size", "conll03-pareto"]
KD = ["token", "posterior", "topk", "topwk", "substructure", "structural", "structural-T2"]


def _plan(name: str) -> tuple[ExperimentSpec, list]:
    spec = load_experiment(ROOT / f"configs/experiments/{name}.yaml")
    root = Path("DATA")
    with mock.patch.object(experiment, "_slice"):  # slices of corpora: not written here
        return spec, plan_runs(spec, root, Path("WORK/data"), Path("WORK"), Path("RUNS"))


@pytest.mark.parametrize("name", GRIDS)
def test_every_run_has_a_valid_run_config_and_relative_paths(name: str) -> None:
    spec, runs = _plan(name)
    text = (ROOT / f"configs/experiments/{name}.yaml").read_text()
    assert "/work/" not in text and "\n/" not in text
    for t in spec.teachers.values():  # trained elsewhere, named under runs_dir
        assert t.model is not None and not Path(t.model).is_absolute()
    assert "runs_dir" in spec.raw
    assert not Path(spec.runs_dir).is_absolute() and not Path(spec.data_root).is_absolute()
    for run in runs:
        sets = [b for a, b in zip(run.args, run.args[1:]) if a == "--set"]
        config = load_config(ROOT / run.args[1], sets)  # unknown keys or bad values raise
        assert config.train.max_epochs == (20 if run.group == "case1a-small-20ep" else 10)
        if run.teacher:
            teacher = run.args[run.args.index("--teacher") + 1]
            assert teacher.startswith("RUNS/") and teacher.endswith("/model")
        for path in run.data:  # a file under the data root, or a slice of one
            assert path.startswith(("DATA/", "WORK/data/"))
    # one run per method and seed; three seeds
    assert {r.seed for r in runs} == {1, 2, 3}
    assert len({r.run_id for r in runs}) == len(runs)


@pytest.mark.parametrize("name", ["conll03-full", "wikiann-de-full"])
def test_full_grids_cover_cases_and_methods(name: str) -> None:
    spec, runs = _plan(name)
    methods = {g: {r.method for r in runs if r.group == g} for g in spec.students}
    expected = {
        "case1a": {"none", *KD},
        "case2a": {"none", *KD},
        "case3": {"none", *KD},
        "case4": {"none", "topk", "topwk", "structural", "structural-T2"},
    }
    if name == "conll03-full":  # second pass: a smaller student of a stronger teacher
        expected["case1a-small"] = {"none", "token", "posterior", "structural", "structural-T2"}
        small = [r for r in runs if r.group == "case1a-small" and r.method != "none"]
        assert len(small) == 12
        assert all(r.teachers == ["teacher-glove-minilm-crf"] for r in small)
        # the dev probe: the same student and teacher without unlabeled text
        expected["case1a-small-labeled"] = {"structural"}
        expected["case1a-small-fixed"] = {"structural"}
        expected["case1a-small-20ep"] = {"none", "structural"}
        (probe,) = [r for r in runs if r.group == "case1a-small-labeled"]
        assert "--unlabeled" not in probe.args and probe.teachers == small[0].teachers
        sets = [b for a, b in zip(probe.args, probe.args[1:]) if a == "--set"]
        # no unlabeled text at all, not the base config's bundled sentences
        assert load_config(ROOT / probe.args[1], sets).data.unlabeled == []
    assert methods == expected
    heads = {"case1a": "crf", "case2a": "maxent", "case3": "crf", "case4": "maxent"}
    vectors = "glove-6b-50d" if name == "conll03-full" else "use-multilingual"
    family = "glove" if name == "conll03-full" else "use"
    teachers = {"case1a": "crf", "case2a": "crf", "case3": "maxent", "case4": "span"}
    for case, head in teachers.items():  # trained from configs/ner/teacher-FAMILY-HEAD.yaml
        (teacher,) = spec.students[case].teachers
        assert teacher == f"{family}-{head}"
        assert spec.teachers[teacher].model == f"{name}/teacher-{teacher}/model"
        assert (ROOT / f"configs/ner/teacher-{teacher}.yaml").exists()
    for run in runs:
        sets = [b for a, b in zip(run.args, run.args[1:]) if a == "--set"]
        config = load_config(ROOT / run.args[1], sets)
        assert config.model.head.kind == heads.get(run.group, "crf")
        assert config.model.encoder.pretrained_vectors == vectors
        if run.group.startswith("case1a-small"):  # no char CNN: casing from the casing feature
            assert config.model.encoder.char_filters == 0 and config.model.encoder.casing_dim > 0
        else:
            assert config.model.encoder.char_filters > 0  # a char CNN
        if run.method == "none":  # no teacher, no unlabeled text
            assert "--unlabeled" not in run.args and "--teacher" not in run.args
        elif run.group == "case1a-small-labeled":  # the probe without unlabeled text
            assert "--unlabeled" not in run.args and "--teacher" in run.args
        else:
            assert "--unlabeled" in run.args
            temperature = 2.0 if run.method == "structural-T2" else 1.0
            assert config.distill.temperature == temperature
    data = spec.raw["students"]["case1a"]["data"]
    corpus = "conll2003-en" if name == "conll03-full" else "wikiann-de"
    assert data["train"] == [f"ner/{corpus}/train.{'txt' if 'conll' in name else 'tsv'}"]
    assert data["unlabeled"] == [f"unlabeled/{'en' if 'conll' in name else 'de'}.txt"]


def test_size_sweep_goes_from_a_linear_head_to_two_bilstm_layers() -> None:
    spec, runs = _plan("conll03-size")
    assert spec.report == "pareto"
    sizes = {}
    for run in runs:
        sets = [b for a, b in zip(run.args, run.args[1:]) if a == "--set"]
        encoder = load_config(ROOT / run.args[1], sets).model.encoder
        sizes.setdefault(run.group, set()).add((encoder.lstm_hidden, encoder.lstm_layers))
        assert run.method in ("none", "structural")
    assert sizes == {
        "linear": {(0, 1)},
        "bilstm-50": {(50, 1)},
        "bilstm-150": {(150, 1)},
        "bilstm2-200": {(200, 2)},
    }


def test_dry_run_lists_the_grid_and_who_waits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = ROOT / "configs/experiments/conll03-size.yaml"
    planned = run_experiment(path, tmp_path, dry_run=True, runs_dir=str(tmp_path / "none"))
    assert len(planned) == 24
    out = capsys.readouterr().out
    assert "conll03-size: 24 runs, 0 done, 24 to run" in out
    assert "teacher-glove-crf:" in out and "its students wait" in out
    assert out.count("(waits for its teacher)") == 12
    assert not (tmp_path / "conll03-size").exists()  # a dry run writes nothing


def test_seeds_of_a_method_share_one_teacher_cache_and_methods_do_not() -> None:
    """A distillation run's teacher pass is cached per (case, method): the seeds of a method
    read one cache (the teacher runs once), two methods or two cases never share one."""
    _, runs = _plan("conll03-full")
    caches: dict[tuple[str, str], set[str]] = {}
    for run in runs:
        sets = [b for a, b in zip(run.args, run.args[1:]) if a == "--set"]
        found = [s.split("=", 1)[1] for s in sets if s.startswith("distill.cache_dir=")]
        if run.method == "none":
            assert not found
            continue
        assert len(found) == 1 and found[0].startswith("WORK/cache/")
        caches.setdefault((run.group, run.method), set()).add(found[0])
    assert all(len(c) == 1 for c in caches.values())  # one per (case, method), all seeds
    assert len({next(iter(c)) for c in caches.values()}) == len(caches)  # none shared


def test_cases_naming_one_cache_share_the_teacher_pass_of_each_method() -> None:
    """The student sizes of conll03-pareto name one ``cache``: all their Structural KD runs
    read one teacher cache (the teacher annotates the sentences once), and runs without KD
    read none."""
    spec, runs = _plan("conll03-pareto")
    sizes = {name for name, s in spec.students.items() if s.cache == "sizes"}
    assert {"linear", "bilstm-25", "bilstm-50", "bilstm-100"} <= sizes
    found: dict[str, set[str]] = {}
    for run in runs:
        if run.group not in sizes:
            continue
        sets = [b for a, b in zip(run.args, run.args[1:]) if a == "--set"]
        for s in sets:
            if s.startswith("distill.cache_dir="):
                found.setdefault(run.method, set()).add(s.split("=", 1)[1])
    assert found == {
        "structural": {"WORK/cache/sizes-structural"},
        "structural-wsj": {"WORK/cache/sizes-structural-wsj"},
        "structural-labeled": {"WORK/cache/sizes-structural-labeled"},
    }
    labeled_kd = [r for r in runs if r.method == "structural-labeled"]
    assert {r.group for r in labeled_kd} == {"linear", "bilstm-25"} and len(labeled_kd) == 6
    assert all("--unlabeled" not in r.args and "data.unlabeled=[]" in r.args for r in labeled_kd)
    wsj = [r for r in runs if r.method == "structural-wsj"]
    news = "DATA/dep/ptb-sample/wsj_0001-0199.malttab"
    assert len(wsj) == 12 and all(r.data[1] == news for r in wsj)
    # 4 sizes x 3 seeds, and the fixed-lambda and unlabeled-weight probes
    assert len([r for r in runs if r.method == "structural" and r.group in sizes]) == 14
    labeled = [r for r in runs if r.group.endswith("-labeled-only")]
    assert len(labeled) == 2 and all("WORK/cache/labeled-structural" in r.args[-3] for r in labeled)
