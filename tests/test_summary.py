"""``summary.json``, the significance tables and the size-sweep Pareto plot of ``structkd report``
(on hand-made run records)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from structkd.lab.significance import paired_randomization
from structkd.lab.summary import pareto_points

KEYS = {
    "group",
    "method",
    "n",
    "test_mean",
    "test_std",
    "dev_mean",
    "teacher_test",
    "tokens_per_s",
    "teacher_tokens_per_s",
    "p_vs_best_other",
    "p_vs_none",
    "p_vs_teacher",
    "gap_closed",
}
SENTENCES = 200


def _counts(right: int, digest: str = "abc") -> dict:
    """Counts of a tagger right on the first ``right`` of 200 one-entity sentences."""
    flat = [v for i in range(SENTENCES) for v in (int(i < right), 1, 1)]
    score = 100.0 * right / SENTENCES
    return {
        "metric": "f1",
        "fields": ["correct", "predicted", "gold"],
        "sentences": SENTENCES,
        "words_sha256": digest,
        "score": score,
        "counts": flat,
    }


def _run(
    directory: Path,
    run_id: str,
    role: str,
    group: str,
    method: str,
    seed: int,
    scores: tuple[float, float],
    counts: dict | None = None,
) -> None:
    (directory / run_id).mkdir(parents=True)
    record = {
        "run_id": run_id,
        "role": role,
        "group": group,
        "method": method,
        "seed": seed,
        "teacher": None if method in ("none", "teacher") else "teacher-crf",
        "commit": "abc",
        "threads": 1,
        "tokens_per_second": 1.0,
        "parameters": 10,
        "data": [],
    }
    (directory / run_id / "run.json").write_text(json.dumps(record))
    metrics = {"dev": {"f1": scores[0]}, "test": {"f1": scores[1], "tokens_per_second": 1.0}}
    (directory / run_id / "metrics.json").write_text(json.dumps(metrics))
    if counts is not None:
        (directory / run_id / "test_counts.json").write_text(json.dumps(counts))


METHODS = {
    "none": "none",
    "token": "token",
    "structural": "structural",
    "structural-T2": {"method": "structural", "set": ["distill.temperature=2.0"]},
}
RIGHT = {
    "none": (100, 110),
    "token": (120, 130),
    "structural": (180, 170),
    "structural-T2": (150, 150),
}


def _experiment(root: Path) -> Path:
    exp = root / "exp"
    exp.mkdir(parents=True)
    spec = {
        "teachers": {"crf": {"model": "x/model"}},
        "students": {
            "case2a": {"teacher": "crf", "seeds": [1, 2], "methods": METHODS},
            "plain": {
                "teacher": "crf",
                "seeds": [1],
                "methods": {"none": "none", "structural": "structural"},
            },
        },
    }
    planned = ["teacher-crf"]
    planned += [f"case2a-{m}-s{s}" for s in (1, 2) for m in METHODS]
    planned += ["plain-none-s1", "plain-structural-s1"]
    meta = {"file": "e.yaml", "data_root": "d", "machine": "m", "runs": planned, "spec": spec}
    (exp / "experiment.json").write_text(json.dumps(meta))
    _run(exp, "teacher-crf", "teacher", "crf", "teacher", 1, (96.0, 95.0))
    for method, rights in RIGHT.items():
        for seed, right in zip((1, 2), rights):
            counts = _counts(right)
            score = counts["score"]
            run_id = f"case2a-{method}-s{seed}"
            _run(exp, run_id, "student", "case2a", method, seed, (score + 1, score), counts)
    # a case recorded before per-sentence counts existed: no tests, no table
    _run(exp, "plain-none-s1", "student", "plain", "none", 1, (50.0, 40.0))
    _run(exp, "plain-structural-s1", "student", "plain", "structural", 1, (60.0, 50.0))
    speed = {
        "command": "c",
        "threads": 2,
        "batch_size": 32,
        "machine": "m",
        "models": {
            "teacher-crf": {"tokens_per_second": 2000.0, "parameters": 1000},
            "case2a-none-s1": {"tokens_per_second": 40000.0, "parameters": 10},
        },
    }
    (exp / "speed.json").write_text(json.dumps(speed))
    return exp


def test_gap_closed_is_null_when_the_teacher_is_no_better_than_the_student(tmp_path: Path) -> None:
    from structkd.lab.report import write_report

    exp = _experiment(tmp_path / "results")
    metrics = {"dev": {"f1": 46.0}, "test": {"f1": 45.0, "tokens_per_second": 1.0}}
    (exp / "teacher-crf" / "metrics.json").write_text(json.dumps(metrics))
    write_report(tmp_path / "results", tmp_path / "docs/results.md", plots=False)
    by = {(r["group"], r["method"]): r for r in json.loads((exp / "summary.json").read_text())}
    # case2a: the teacher (45) is below the student w/o KD (52.5): no gap to close
    assert all(by[("case2a", m)]["gap_closed"] is None for m in METHODS)
    # plain: the teacher (45) is above the student w/o KD (40): (50 - 40) / (45 - 40)
    assert by[("plain", "structural")]["gap_closed"] == pytest.approx(2.0)


def test_summary_rows_and_significance_table(tmp_path: Path) -> None:
    from structkd.lab.report import write_report

    exp = _experiment(tmp_path / "results")
    text = write_report(tmp_path / "results", tmp_path / "docs/results.md", plots=False)
    rows = json.loads((exp / "summary.json").read_text())
    assert all(set(r) == KEYS for r in rows)
    by = {(r["group"], r["method"]): r for r in rows}
    assert list(by) == [
        ("crf", "teacher"),
        *(("case2a", m) for m in METHODS),
        ("plain", "none"),
        ("plain", "structural"),
    ]
    teacher = by[("crf", "teacher")]
    assert teacher["test_mean"] == 95.0 and teacher["tokens_per_s"] == 2000.0
    none, structural = by[("case2a", "none")], by[("case2a", "structural")]
    assert none["n"] == 2 and none["test_mean"] == pytest.approx(52.5)
    assert none["test_std"] == pytest.approx(3.5355, abs=1e-4) and none["dev_mean"] == 53.5
    assert none["gap_closed"] is None and none["p_vs_none"] is None
    # (87.5 - 52.5) / (95 - 52.5): the mean over seeds of each seed's gap to the mean w/o KD
    assert structural["gap_closed"] == pytest.approx(35.0 / 42.5)
    assert structural["teacher_test"] == 95.0 and structural["teacher_tokens_per_s"] == 2000.0
    assert structural["tokens_per_s"] == 40000.0  # the case's measured student: same layers

    # the same p-values a direct call gives on the matched seeds (seed 0, 10,000 samples)
    def arrays(method: str) -> list:
        import numpy as np

        return [np.asarray(_counts(r)["counts"]).reshape(-1, 3) for r in RIGHT[method]]

    expected = paired_randomization(arrays("structural"), arrays("token"), "f1", 10_000, 0)
    assert structural["p_vs_best_other"] == expected  # token is the best other method
    assert structural["p_vs_best_other"] < 0.001 and structural["p_vs_none"] < 0.001
    token = by[("case2a", "token")]
    assert token["p_vs_best_other"] is None  # only Structural KD rows face the best other
    assert token["p_vs_none"] == paired_randomization(
        arrays("token"), arrays("none"), "f1", 10_000, 0
    )
    assert by[("case2a", "structural-T2")]["p_vs_best_other"] is not None
    plain = by[("plain", "structural")]
    assert plain["p_vs_none"] is None and plain["gap_closed"] == pytest.approx(10 / 55)
    assert plain["tokens_per_s"] is None  # not measured alone
    # the tables: the case with counts gets its tests below its table, the other none
    case = text.split("### exp / case2a")[1].split("### exp / plain")[0]
    lines = case[case.index("| method | Δ vs w/o KD") :].split("\n\n")[0].splitlines()
    p = f"{expected:.4f}"
    assert lines[2] == f"| token | +10.00 | {token['p_vs_none']:.4f} | 2 |  |  |  |  |"
    assert lines[3] == (
        f"| structural | +35.00 | {structural['p_vs_none']:.4f} | 2 | token | +25.00 | {p} | 2 |"
    )
    assert "Δ vs w/o KD" not in text.split("### exp / plain")[1]


def test_unmatched_test_sentences_are_not_compared(tmp_path: Path) -> None:
    from structkd.lab.report import load_results
    from structkd.lab.summary import summary_rows

    exp = _experiment(tmp_path / "results")
    path = exp / "case2a-structural-s2/test_counts.json"
    path.write_text(json.dumps(_counts(170, digest="other test set")))
    (exp / "case2a-structural-s1/test_counts.json").unlink()
    rows = summary_rows(*load_results(exp))
    structural = next(r for r in rows if r["method"] == "structural" and r["group"] == "case2a")
    assert structural["p_vs_none"] is None and structural["p_vs_best_other"] is None


def _sweep(root: Path) -> Path:
    exp = root / "sweep"
    exp.mkdir(parents=True)
    methods = {"none": "none", "structural": "structural"}
    spec = {
        "report": "pareto",
        "teachers": {"crf": {"model": "x/model"}},
        "students": {
            **{g: {"teacher": "crf", "seeds": [1], "methods": methods} for g in ("small", "big")},
            "probe": {"teacher": "crf", "seeds": [1], "methods": {"structural": "structural"}},
        },
    }
    planned = ["teacher-crf", *(f"{g}-{m}-s1" for g in ("small", "big") for m in methods)]
    planned.append("probe-structural-s1")
    meta = {"file": "s.yaml", "data_root": "d", "machine": "m", "runs": planned, "spec": spec}
    (exp / "experiment.json").write_text(json.dumps(meta))
    _run(exp, "teacher-crf", "teacher", "crf", "teacher", 1, (92.0, 90.0))
    scores = {
        "small-none": 70.0,
        "small-structural": 75.0,
        "big-none": 84.0,
        "big-structural": 86.0,
    }
    for key, score in scores.items():
        group, method = key.split("-")
        _run(exp, f"{key}-s1", "student", group, method, 1, (score, score))
    _run(exp, "probe-structural-s1", "student", "probe", "structural", 1, (60.0, 60.0))
    speed = {
        "command": "c",
        "threads": 2,
        "batch_size": 32,
        "machine": "m",
        "models": {
            "teacher-crf": {"tokens_per_second": 1000.0, "parameters": 1000},
            "small-none-s1": {"tokens_per_second": 90000.0, "parameters": 10},
            "big-none-s1": {"tokens_per_second": 20000.0, "parameters": 100},
            "probe-structural-s1": {"tokens_per_second": 50000.0, "parameters": 10},
        },
    }
    (exp / "speed.json").write_text(json.dumps(speed))
    return exp


def test_pareto_points_and_plot(tmp_path: Path) -> None:
    from structkd.lab.report import write_report

    exp = _sweep(tmp_path / "results")
    write_report(tmp_path / "results", tmp_path / "docs/results.md", plots=False)
    points = pareto_points(json.loads((exp / "summary.json").read_text()))
    # the sizes in the file's order; a probe group with KD rows only is no size
    assert points["methods"] == {
        "none": [("small", 90000.0, 70.0, 0.0), ("big", 20000.0, 84.0, 0.0)],
        "structural": [("small", 90000.0, 75.0, 0.0), ("big", 20000.0, 86.0, 0.0)],
    }
    assert points["teachers"] == [("crf", 1000.0, 90.0)]
    assert not (tmp_path / "docs/results/sweep-pareto.png").exists()
    pytest.importorskip("matplotlib")
    text = write_report(tmp_path / "results", tmp_path / "docs/results.md")
    png = tmp_path / "docs/results/sweep-pareto.png"
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert "(results/sweep-pareto.png)" in text
    # an experiment that is not a sweep gets no Pareto plot
    _experiment(tmp_path / "results")
    write_report(tmp_path / "results", tmp_path / "docs/results.md")
    assert not (tmp_path / "docs/results/exp-pareto.png").exists()


def test_a_case_without_a_student_wo_kd_is_tested_against_its_teacher(tmp_path: Path) -> None:
    """Zero-shot: no labels, so no student w/o KD; the teacher applied directly is the baseline
    (each student seed paired with the teacher's one run)."""
    import numpy as np

    from structkd.lab.report import write_report

    exp = tmp_path / "results" / "zs"
    exp.mkdir(parents=True)
    methods = {"token": "token", "structural": "structural"}
    spec = {
        "teachers": {"crf": {"config": "t.yaml"}},
        "students": {"zs": {"teacher": "crf", "seeds": [1, 2], "methods": methods}},
    }
    planned = ["teacher-crf", *(f"zs-{m}-s{s}" for s in (1, 2) for m in methods)]
    meta = {"file": "e.yaml", "data_root": "d", "machine": "m", "runs": planned, "spec": spec}
    (exp / "experiment.json").write_text(json.dumps(meta))
    _run(exp, "teacher-crf", "teacher", "crf", "teacher", 1, (60.0, 50.0), _counts(100))
    right = {"token": (104, 96), "structural": (130, 126)}
    for method, rights in right.items():
        for seed, r in zip((1, 2), rights):
            score = _counts(r)["score"]
            run_id = f"zs-{method}-s{seed}"
            _run(exp, run_id, "student", "zs", method, seed, (score, score), _counts(r))
    extra = {"src-dev": {"data": "d/dev.txt", "score": 41.5}}
    (exp / "zs-token-s1" / "also_evaluated.json").write_text(json.dumps(extra))
    text = write_report(tmp_path / "results", tmp_path / "docs/results.md", plots=False)
    by = {(r["group"], r["method"]): r for r in json.loads((exp / "summary.json").read_text())}
    main = text[text.index("| model |") :].split("\n\n")[0].splitlines()
    assert main[0].startswith("| model | dev F1 | test F1 | src-dev F1 | n |")
    assert main[3].startswith("| token | 50.00 ± 2.83 | 50.00 ± 2.83 | 41.50 | 2 |")
    assert main[4].startswith("| structural | 64.00 ± 1.41 | 64.00 ± 1.41 | – | 2 |")
    assert "Also scored on (students only; `also_evaluate`): src-dev: `?`." in text
    teacher = [np.asarray(_counts(100)["counts"]).reshape(-1, 3)] * 2
    structural = [np.asarray(_counts(r)["counts"]).reshape(-1, 3) for r in right["structural"]]
    expected = paired_randomization(structural, teacher, "f1", 10_000, 0)
    assert by[("zs", "structural")]["p_vs_teacher"] == expected < 0.001
    assert by[("zs", "structural")]["p_vs_none"] is None
    assert by[("zs", "token")]["p_vs_teacher"] > 0.05  # +0.0 on average: no difference
    assert by[("crf", "teacher")]["p_vs_teacher"] is None
    table = text[text.index("| method | Δ vs teacher (crf)") :].split("\n\n")[0].splitlines()
    assert table[2].startswith("| token | +0.00 | ")
    assert table[3].startswith(f"| structural | +14.00 | {expected:.4f} | 2 | token | +14.00 |")


def test_a_method_with_its_own_teacher_is_measured_against_that_teacher(tmp_path: Path) -> None:
    """A case whose rows distil from different teachers (a method naming its own, as in
    conll03-full's ``structural-ft``): each row's teacher_test, gap_closed and p_vs_teacher come
    from the teacher its runs name, not from a mean over the case's teachers."""
    from structkd.lab.report import write_report

    exp = _experiment(tmp_path / "results")
    meta = json.loads((exp / "experiment.json").read_text())
    meta["spec"]["teachers"]["strong"] = {"model": "y/model"}
    meta["spec"]["students"]["case2a"]["methods"]["structural-strong"] = {
        "method": "structural",
        "teacher": "strong",
    }
    meta["runs"] += ["teacher-strong", "case2a-structural-strong-s1", "case2a-structural-strong-s2"]
    (exp / "experiment.json").write_text(json.dumps(meta))
    _run(exp, "teacher-strong", "teacher", "strong", "teacher", 1, (99.5, 99.0), _counts(198))
    for seed, right in zip((1, 2), (190, 196)):
        counts = _counts(right)
        run_id = f"case2a-structural-strong-s{seed}"
        _run(exp, run_id, "student", "case2a", "structural-strong", seed, (99.0, 0.0), counts)
        record = json.loads((exp / run_id / "run.json").read_text())
        record["teacher"] = "teacher-strong"
        (exp / run_id / "run.json").write_text(json.dumps(record))
        metrics = {"dev": {"f1": 99.0}, "test": {"f1": counts["score"], "tokens_per_second": 1.0}}
        (exp / run_id / "metrics.json").write_text(json.dumps(metrics))
    write_report(tmp_path / "results", tmp_path / "docs/results.md", plots=False)
    by = {(r["group"], r["method"]): r for r in json.loads((exp / "summary.json").read_text())}
    strong, structural = by[("case2a", "structural-strong")], by[("case2a", "structural")]
    assert strong["teacher_test"] == 99.0 and structural["teacher_test"] == 95.0
    # (96.5 - 52.5) / (99 - 52.5) against its own teacher
    assert strong["gap_closed"] == pytest.approx(44.0 / 46.5)
    assert structural["gap_closed"] == pytest.approx(35.0 / 42.5)
    # the strong teacher has counts (198 of 200 right): the row is paired with it
    assert strong["p_vs_teacher"] is not None and structural["p_vs_teacher"] is None
