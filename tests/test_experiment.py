"""``structkd experiment`` (a tiny grid on the fixture corpora) and ``structkd report``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from structkd.config import ConfigError
from structkd.lab.experiment import load_experiment, parameter_count, portable, run_experiment
from structkd.lab.report import load_results, render_experiment, write_report
from structkd.lab.speed import run_speed

FIXTURES = Path(__file__).parent / "fixtures" / "pipeline"
ROOT = Path(__file__).parents[1]
TINY = ["model.encoder.lstm_hidden=8", "model.encoder.word_dim=8", "train.max_epochs=1"]


def _spec(tmp_path: Path) -> Path:
    spec = {
        "data_root": str(FIXTURES),
        "work_dir": str(tmp_path / "runs"),
        "jobs": 2,
        "teachers": {
            "crf": {
                "config": str(ROOT / "configs/ner/teacher-crf.yaml"),
                "data": {"train": ["train.conll"], "dev": "dev.conll", "test": "test.conll"},
                "set": [*TINY, "model.encoder.char_filters=4"],
            }
        },
        "students": {
            "case2a": {
                "config": str(ROOT / "configs/ner/case2a.yaml"),
                "teacher": "crf",
                "seeds": [1],
                "data": {
                    "train": [{"path": "train.conll", "first": 20}],
                    "unlabeled": [{"path": "unlabeled.txt", "skip": 5, "first": 10}],
                    "dev": "dev.conll",
                    "test": "test.conll",
                },
                "set": TINY,
                "methods": {"none": "none", "structural": "structural"},
            }
        },
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return path


def test_grid_runs_records_and_skips_on_rerun(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    results = tmp_path / "results"
    ran = run_experiment(spec, results)
    assert [r.run_id for r in ran] == ["teacher-crf", "case2a-none-s1", "case2a-structural-s1"]
    out = results / "tiny"
    for run_id in ("teacher-crf", "case2a-none-s1", "case2a-structural-s1"):
        record = json.loads((out / run_id / "run.json").read_text())
        metrics = json.loads((out / run_id / "metrics.json").read_text())
        assert set(metrics) == {"dev", "test"} and 0 <= metrics["test"]["f1"] <= 100
        assert record["parameters"] == parameter_count(tmp_path / "runs/tiny" / run_id / "model")
        assert record["seconds"] > 0 and record["tokens_per_second"] > 0
        assert record["command"].startswith("structkd ")
        # one timed epoch (updates only), recorded for the training-cost table
        assert record["epochs"] == 1 and len(record["epoch_seconds"]) == 1
        assert 0 < record["epoch_seconds"][0] < record["seconds"] and record["steps"] > 0
        assert not (out / run_id / "model").exists()  # weights stay in the work dir
        # per-sentence test counts for the significance tests: they sum to the run's test F1
        counts = json.loads((out / run_id / "test_counts.json").read_text())
        assert counts["score"] == pytest.approx(metrics["test"]["f1"], abs=1e-9)
        assert counts["sentences"] * 3 == len(counts["counts"]) > 0
    structural = json.loads((out / "case2a-structural-s1/run.json").read_text())
    assert "--method structural" in structural["command"] and structural["teacher"] == "teacher-crf"
    none = json.loads((out / "case2a-none-s1/run.json").read_text())
    assert none["command"].startswith("structkd train") and "--unlabeled" not in none["command"]
    # the slices hold exactly the requested sentences
    sliced = Path(structural["data"][0]).read_text().strip().split("\n\n")
    assert len(sliced) == 20
    unlabeled = Path(structural["data"][1]).read_text().splitlines()
    assert unlabeled == (FIXTURES / "unlabeled.txt").read_text().splitlines()[5:15]
    # prediction speed of the teacher and of one student per case, measured afterwards
    measured = run_speed(spec, results, threads=1, batch_size=4, limit=6, log=lambda _: None)
    assert set(measured["models"]) == {"teacher-crf", "case2a-none-s1"}
    assert json.loads((out / "speed.json").read_text()) == measured
    for run_id, m in measured["models"].items():
        assert m["parameters"] == parameter_count(tmp_path / "runs/tiny" / run_id / "model")
        assert m["sentences"] == 6 and m["tokens_per_second"] > 0 and m["batch_size"] == 4
    # a second measurement of one model keeps the other's record; an unknown run id is refused
    again = run_speed(spec, results, threads=1, batch_size=4, limit=3, only=["case2a-none-s1"])
    assert again["models"]["teacher-crf"] == measured["models"]["teacher-crf"]
    assert again["models"]["case2a-none-s1"]["sentences"] == 3
    with pytest.raises(ConfigError, match="--only case9-none-s1: not measured by"):
        run_speed(spec, results, threads=1, only=["case9-none-s1"])
    # a finished run recorded without counts gets them on the next call (its model is kept)
    counted = (out / "case2a-structural-s1/test_counts.json").read_text()
    (out / "case2a-structural-s1/test_counts.json").unlink()
    before = (out / "case2a-structural-s1/metrics.json").stat().st_mtime_ns
    assert run_experiment(spec, results) == []
    assert (out / "case2a-structural-s1/metrics.json").stat().st_mtime_ns == before
    assert (out / "case2a-structural-s1/test_counts.json").read_text() == counted
    # the same teacher named by its model under a runs dir, as another experiment uses it:
    # its metrics are copied for the report and it is measured with the students
    other = yaml.safe_load(spec.read_text())
    other["teachers"] = {"crf": {"model": "tiny/teacher-crf/model"}}
    (tmp_path / "other").mkdir()
    reuse = tmp_path / "other/tiny.yaml"
    reuse.write_text(yaml.safe_dump(other))
    elsewhere = tmp_path / "results-other"
    assert run_experiment(reuse, elsewhere, only=["-"], runs_dir=str(tmp_path / "runs")) == []
    copied = elsewhere / "tiny/teacher-crf"
    assert json.loads((copied / "metrics.json").read_text()) == json.loads(
        (out / "teacher-crf/metrics.json").read_text()
    )
    record = json.loads((copied / "run.json").read_text())
    assert record["external"] == "tiny/teacher-crf/model" and record["role"] == "teacher"
    assert record["parameters"] == parameter_count(tmp_path / "runs/tiny/teacher-crf/model")
    assert record["epochs"] == 1 and str(tmp_path) not in (copied / "run.json").read_text()
    assert json.loads((elsewhere / "tiny/experiment.json").read_text())["runs"][0] == "teacher-crf"
    measured = run_speed(
        reuse,
        elsewhere,
        threads=1,
        batch_size=4,
        limit=6,
        log=lambda _: None,
        runs_dir=str(tmp_path / "runs"),
    )
    assert set(measured["models"]) == {"teacher-crf", "case2a-none-s1"}
    # rerunning one row with ``only`` keeps the whole plan in experiment.json (for the report)
    (out / "case2a-none-s1/metrics.json").unlink()
    assert [r.run_id for r in run_experiment(spec, results, only=["case2a-none-s1"])] == [
        "case2a-none-s1"
    ]
    assert json.loads((out / "experiment.json").read_text())["runs"] == [
        "teacher-crf",
        "case2a-none-s1",
        "case2a-structural-s1",
    ]
    # a rerun runs nothing; removing one result reruns only that run (its teacher model is kept)
    stamp = (out / "teacher-crf/run.json").stat().st_mtime_ns
    assert run_experiment(spec, results) == []
    assert (out / "teacher-crf/run.json").stat().st_mtime_ns == stamp
    (out / "case2a-structural-s1/metrics.json").unlink()
    assert [r.run_id for r in run_experiment(spec, results, dry_run=True)] == [
        "case2a-structural-s1"
    ]
    # without the teacher's weights, the teacher reruns first
    shutil.rmtree(tmp_path / "runs/tiny/teacher-crf/model")
    assert [r.run_id for r in run_experiment(spec, results, dry_run=True)] == [
        "teacher-crf",
        "case2a-structural-s1",
    ]


def test_a_teacher_given_by_its_model_is_not_retrained(tmp_path: Path) -> None:
    spec = yaml.safe_load(_spec(tmp_path).read_text())
    spec["teachers"] = {"crf": {"model": "elsewhere/teacher-crf/model"}}
    path = tmp_path / "reuse.yaml"
    path.write_text(yaml.safe_dump(spec))
    planned = run_experiment(path, tmp_path / "results", dry_run=True)
    assert [r.run_id for r in planned] == ["case2a-none-s1", "case2a-structural-s1"]
    structural = planned[1]
    assert structural.args[structural.args.index("--teacher") + 1] == "elsewhere/teacher-crf/model"
    assert structural.teacher == "teacher-crf"


def test_students_of_an_external_teacher_wait_until_it_finished(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from safetensors.torch import save_file

    spec = yaml.safe_load(_spec(tmp_path).read_text())
    spec["teachers"] = {"crf": {"model": "big/teacher-crf/model"}}
    spec["runs_dir"] = "not-here"  # replaced by the argument
    spec["students"]["case2a"]["methods"] = {"structural": "structural"}
    path = tmp_path / "wait.yaml"
    path.write_text(yaml.safe_dump(spec))
    runs = tmp_path / "teachers"
    planned = run_experiment(path, tmp_path / "results", dry_run=True, runs_dir=str(runs))
    assert [r.run_id for r in planned] == ["case2a-structural-s1"]
    assert planned[0].args[planned[0].args.index("--teacher") + 1] == str(
        runs / "big/teacher-crf/model"
    )
    # missing, then still training (checkpoints but no metrics.json): nothing starts
    assert run_experiment(path, tmp_path / "results", runs_dir=str(runs)) == []
    model = runs / "big/teacher-crf/model"
    model.mkdir(parents=True)
    (model.parent / "checkpoints").mkdir()
    save_file({"w": torch.zeros(3, 4)}, str(model / "model.safetensors"))
    assert run_experiment(path, tmp_path / "results", runs_dir=str(runs)) == []
    assert not (tmp_path / "results/wait/teacher-crf").exists()
    assert json.loads((tmp_path / "results/wait/experiment.json").read_text())["runs"] == [
        "teacher-crf",
        "case2a-structural-s1",
    ]
    # once its metrics.json is written, the teacher counts as finished and is recorded
    metrics = {"test": {"f1": 91.0, "tokens_per_second": 5.0}, "dev": {"f1": 93.0}}
    (model.parent / "metrics.json").write_text(json.dumps(metrics))
    assert run_experiment(path, tmp_path / "results", only=["-"], runs_dir=str(runs)) == []
    record = json.loads((tmp_path / "results/wait/teacher-crf/run.json").read_text())
    assert record["parameters"] == 12 and record["tokens_per_second"] == 5.0
    assert record["epochs"] == 0 and record["commit"] is None
    # retrained after its metrics were copied: the copy stays, and the log says so
    (model.parent / "metrics.json").write_text(json.dumps({**metrics, "test": {"f1": 92.0}}))
    assert run_experiment(path, tmp_path / "results", only=["-"], runs_dir=str(runs)) == []
    assert "changed since it was copied" in capsys.readouterr().out
    copied = json.loads((tmp_path / "results/wait/teacher-crf/metrics.json").read_text())
    assert copied["test"]["f1"] == 91.0


def test_a_grid_that_is_already_running_is_not_started_twice(tmp_path: Path) -> None:
    import fcntl

    spec = yaml.safe_load(_spec(tmp_path).read_text())
    spec["teachers"] = {"crf": {"model": "missing/model"}}
    spec["students"]["case2a"]["methods"] = {"structural": "structural"}
    path = tmp_path / "locked.yaml"
    path.write_text(yaml.safe_dump(spec))
    work = tmp_path / "runs/locked"
    work.mkdir(parents=True)
    with open(work / ".lock", "w") as held:  # as the first grid's process holds it
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(ConfigError, match="already running"):
            run_experiment(path, tmp_path / "results")
        assert run_experiment(path, tmp_path / "results", dry_run=True)  # a dry run still plans
    assert run_experiment(path, tmp_path / "results") == []  # released: it runs (and waits)


def test_committed_records_name_data_relative_to_the_data_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A grid run with ``--data-root ABSOLUTE`` records the data, the commands and the report's
    ``--data-root`` as the experiment file names them (``data_root: data``): no machine path."""
    monkeypatch.chdir(tmp_path)
    for name in ("teacher-crf", "case2a"):
        (tmp_path / "configs/ner").mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / f"configs/ner/{name}.yaml", tmp_path / f"configs/ner/{name}.yaml")
    spec = yaml.safe_load(_spec(tmp_path).read_text(encoding="utf-8"))
    spec.update(data_root="data", work_dir="runs")
    spec["teachers"]["crf"]["config"] = "configs/ner/teacher-crf.yaml"
    spec["students"]["case2a"]["config"] = "configs/ner/case2a.yaml"
    spec["students"]["case2a"]["methods"] = {"structural": "structural"}
    path = tmp_path / "rel.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    run_experiment(str(path), "results", data_root=str(FIXTURES))
    write_report("results", "report.md", plots=False)
    record = json.loads((tmp_path / "results/rel/case2a-structural-s1/run.json").read_text())
    assert "--test data/test.conll" in record["command"]
    assert "data/test.conll" in record["data"]
    assert "--teacher runs/rel/teacher-crf/model" in record["command"]
    assert "--data-root data`" in (tmp_path / "report.md").read_text(encoding="utf-8")
    for written in [*(tmp_path / "results").rglob("*.json"), tmp_path / "report.md"]:
        text = written.read_text(encoding="utf-8")
        assert str(tmp_path) not in text and str(FIXTURES) not in text, written


def test_portable_names_paths_under_a_root_and_keeps_the_rest() -> None:
    roots = [(Path("/data/root"), "../shared/data"), (Path("/proj"), ".")]
    assert portable("/data/root/ner/x.txt", roots) == "../shared/data/ner/x.txt"
    assert portable("/data/root", roots) == "../shared/data"
    assert portable("/proj/runs/m", roots) == "runs/m"
    assert portable("a.yaml", roots) == "a.yaml"
    assert portable("/data/rootless/x", roots) == "/data/rootless/x"  # not under /data/root
    assert portable("model.x=/proj/v.txt", roots) == "model.x=v.txt"


def test_unknown_teacher_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"students": {"s": {"teacher": "nope", "config": "x"}}}))
    with pytest.raises(ConfigError, match="unknown teacher 'nope'"):
        load_experiment(path)


def _write(
    directory: Path,
    run_id: str,
    run: dict,
    f1: tuple[float, float],
    speed: float,
    epoch_seconds: list[float] | None = None,
) -> None:
    (directory / run_id).mkdir(parents=True)
    record = {
        "epoch_seconds": epoch_seconds or [],
        "commit": "abc123",
        "threads": 1,
        "tokens_per_second": speed,
        "parameters": 1000 if run["role"] == "teacher" else 100,
        "data": ["d/train.tsv"],
        "teacher": "teacher-crf" if run["method"] not in ("teacher", "none") else None,
        **run,
    }
    (directory / run_id / "run.json").write_text(json.dumps(record))
    metrics = {"dev": {"f1": f1[0]}, "test": {"f1": f1[1], "tokens_per_second": speed}}
    (directory / run_id / "metrics.json").write_text(json.dumps(metrics))


def test_report_renders_the_expected_table(tmp_path: Path) -> None:
    exp = tmp_path / "results" / "exp"
    exp.mkdir(parents=True)
    meta = {
        "file": "configs/experiments/exp.yaml",
        "data_root": "/data",
        "machine": "test machine",
        "runs": [
            "teacher-crf",
            *(f"case2a-{m}-s{s}" for s in (1, 2) for m in ("none", "token", "structural")),
        ],
        "spec": {
            "teachers": {"crf": {}},
            "students": {
                "case2a": {
                    "seeds": [1, 2],
                    "methods": {"none": "none", "token": "token", "structural": "structural"},
                }
            },
        },
    }
    (exp / "experiment.json").write_text(json.dumps(meta))
    (exp / "NOTES.md").write_text("Hand-written analysis.\n")
    (tmp_path / "results/NOTES.md").write_text("Overview of all experiments.\n")
    teacher = {"role": "teacher", "group": "crf", "method": "teacher", "seed": 1}
    _write(exp, "teacher-crf", teacher, (60.0, 50.0), 1000.0)
    for seed, (dev, test, speed) in {1: (40.0, 30.0, 4000.0), 2: (42.0, 32.0, 6000.0)}.items():
        run = {"role": "student", "group": "case2a", "method": "none", "seed": seed}
        timing = [2.0, 4.0, 9.0] if seed == 1 else [3.0, 5.0]  # medians 4 and 4
        _write(exp, f"case2a-none-s{seed}", run, (dev, test), speed, timing)
    run = {"role": "student", "group": "case2a", "method": "structural", "seed": 1}
    _write(exp, "case2a-structural-s1", run, (45.0, 40.0), 5000.0, [6.0, 5.0, 7.0])
    record = json.loads((exp / "case2a-structural-s1/run.json").read_text())
    record["steps"] = 200  # 18 s of updates over 200 batches: 90 ms a batch
    record["parameters"] = 300  # its word table also holds the unlabeled words
    (exp / "case2a-structural-s1/run.json").write_text(json.dumps(record))
    text = write_report(tmp_path / "results", tmp_path / "docs/results.md", plots=False)
    table = text[text.index("| model") :].split("\n\n")[0].splitlines()
    assert table == [
        "| model | dev F1 | test F1 | n | tokens/s | speed ×T | test F1 / T | params |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        "| teacher (crf) | 60.00 | 50.00 | 1 | 1,000 | 1.00 | 1.000 | 1,000 |",
        "| student w/o KD | 41.00 ± 1.41 | 31.00 ± 1.41 | 2 | 5,000 | 5.00 | 0.620 | 100 |",
        "| token | not run |  |  |  |  |  |  |",
        "| structural | 45.00 | 40.00 | 1 | 5,000 | 5.00 | 0.800 | 300 |",
    ]
    assert "`structkd experiment configs/experiments/exp.yaml --data-root /data`" in text
    assert "commit: `abc123`" in text and "test machine" in text and "`d/train.tsv`" in text
    assert text.rstrip().endswith("Hand-written analysis.")
    assert text.index("Overview of all experiments.") < text.index("## exp")
    assert (tmp_path / "docs/results.md").read_text() == text
    cost = text[text.index("| case | method") :].split("\n\n")[0].splitlines()
    assert cost[2:] == [
        "| case2a | student w/o KD | 4.0 | 1.00 | – | – | 2.5 | 2 |",
        "| case2a | structural | 6.0 | 1.50 | 90.0 | – | 3.0 | 1 |",
    ]
    assert "Prediction speed, measured alone" not in text  # no speed.json yet
    # before any KD run of a case finished, its table shows its own teacher only
    other = {"role": "teacher", "group": "other", "method": "teacher", "seed": 1}
    _write(exp, "teacher-other", other, (10.0, 10.0), 10.0)
    early = {k: v for k, v in load_results(exp)[1].items() if "structural" not in k}
    planned = {**meta, "spec": {**meta["spec"], "teachers": {"crf": {}, "other": {}}}}
    planned["spec"]["students"] = {
        "case2a": {**meta["spec"]["students"]["case2a"], "teacher": "crf"}
    }
    table = render_experiment("exp", planned, early).split("### exp / case2a")[1]
    assert "| teacher (crf) |" in table and "teacher (other)" not in table
    shutil.rmtree(exp / "teacher-other")
    timing = {**meta, "spec": {**meta["spec"], "report": "cost"}}
    only_cost = render_experiment("exp", timing, load_results(exp)[1])
    assert "| case | method" in only_cost and "| model |" not in only_cost
    speed = {
        "command": "structkd speed exp.yaml",
        "threads": 2,
        "batch_size": 32,
        "machine": "m",
        "models": {
            "teacher-crf": {"tokens_per_second": 1000.0, "parameters": 1000},
            "case2a-none-s1": {"tokens_per_second": 8000.0, "parameters": 100},
        },
    }
    (exp / "speed.json").write_text(json.dumps(speed))
    text = write_report(tmp_path / "results", tmp_path / "docs/results.md", plots=False)
    rows = text[text.index("| model | params") :].split("\n\n")[0].splitlines()
    assert rows[2:] == [
        "| teacher-crf | 1,000 | | 1,000 | 1.00 | 50.00 | | | |",
        "| student case2a (teacher-crf) | 100 | 300 | 8,000 | 8.00 | 31.00 | 0.620 | 40.00 "
        "| 0.800 |",
    ]
    assert render_experiment("exp", meta, {}).count("not run") == 4
    pytest.importorskip("matplotlib")
    text = write_report(tmp_path / "results", tmp_path / "docs/results.md")
    for kind in ("methods", "speed"):
        png = tmp_path / f"docs/results/exp-case2a-{kind}.png"
        assert png.read_bytes()[:4] == b"\x89PNG"
        assert f"(results/exp-case2a-{kind}.png)" in text
