"""Significance tests, ``summary.json`` rows and the size-sweep Pareto plot of an experiment.

:mod:`structkd.lab.report` calls these for each experiment directory. Every student case is
compared over its test sentences with :func:`structkd.lab.significance.paired_randomization`
(10,000 samples, seed 0, on the seeds both rows have ``test_counts.json`` for): each KD method
against the student without KD (``p_vs_none``), and each Structural KD row (any temperature)
against the best other method of its case, by mean test score, the student without KD included
(``p_vs_best_other``). A comparison with no matched seed, or sentences that differ, gets None.
Each student row is also compared with its own teacher (``p_vs_teacher``; the best of them by mean
test score when it names several; a method may name another teacher than its case; every student
seed paired with the teacher's one run): where a case has no student without KD, as in
zero-shot distillation, the teacher applied directly is the baseline to beat.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import numpy as np

from structkd.lab import results as recorded
from structkd.lab.results import LABELS
from structkd.lab.significance import paired_randomization
from structkd.lab.spec import ExperimentSpec

__all__ = ["SAMPLES", "case_tests", "pareto_plot", "pareto_points", "summary_rows"]

SAMPLES = 10_000


def _by_seed(row: dict[str, Any]) -> dict[int, tuple[dict[str, Any], np.ndarray]]:
    return {x["run"]["seed"]: x["counts"] for x in row["runs"] if x.get("counts") is not None}


def _test(
    a: dict[str, Any], b: dict[str, Any], samples: int
) -> tuple[float | None, float | None, int]:
    """(mean score difference a - b over matched seeds, p-value, matched seeds)."""
    left, right = _by_seed(a), _by_seed(b)
    seeds = sorted(set(left) & set(right))
    seeds = [s for s in seeds if left[s][0]["words_sha256"] == right[s][0]["words_sha256"]]
    if not seeds:
        return None, None, 0
    metric = left[seeds[0]][0]["metric"]
    xs, ys = [left[s][1] for s in seeds], [right[s][1] for s in seeds]
    p = paired_randomization(xs, ys, metric, samples=samples, seed=0)
    diff = statistics.mean(left[s][0]["score"] - right[s][0]["score"] for s in seeds)
    return diff, p, len(seeds)


def _test_teacher(
    row: dict[str, Any], teacher: dict[str, Any], samples: int
) -> tuple[float | None, float | None, int]:
    """(mean score difference row - teacher over row's seeds, p-value, seeds): each seed of
    ``row`` paired with the teacher's (first) run on the same test sentences."""
    left, right = _by_seed(row), list(_by_seed(teacher).values())
    if not right:
        return None, None, 0
    record, counts = right[0]
    seeds = [s for s in sorted(left) if left[s][0]["words_sha256"] == record["words_sha256"]]
    if not seeds:
        return None, None, 0
    xs, ys = [left[s][1] for s in seeds], [counts] * len(seeds)
    p = paired_randomization(xs, ys, record["metric"], samples=samples, seed=0)
    diff = statistics.mean(left[s][0]["score"] - record["score"] for s in seeds)
    return diff, p, len(seeds)


def _mean_main(row: dict[str, Any], keys: tuple[str, ...], key: str) -> float | None:
    values = [recorded.scores(keys, x["metrics"]).get(key) for x in row["runs"]]
    clean = [v for v in values if v is not None]
    return statistics.mean(clean) if clean else None


def case_tests(
    meta: dict[str, Any], runs: dict[str, dict[str, Any]], samples: int = SAMPLES
) -> dict[tuple[str, str], dict[str, Any]]:
    """Paired tests of each student case: (group, method) -> ``{"vs_none": (diff, p, seeds),
    "best_other": method or None, "vs_best_other": (diff, p, seeds), "teacher": group or
    None, "vs_teacher": (diff, p, seeds)}``, for rows with counts (the teacher: the row's own best
    by mean test score among those with counts).

    ``runs`` values carry ``"counts"`` (record, ``[sentences, 3]`` array) as
    :func:`structkd.lab.results.load_results` reads them.
    """
    spec = recorded.recorded_spec(meta)
    keys = recorded.score_metrics(runs)
    key = f"test_{keys[-1]}"
    every = recorded.rows(meta, spec, runs)
    teachers = {r["group"]: r for r in every if r["role"] == "teacher" and _by_seed(r)}
    rows = [r for r in every if r["role"] == "student" and r["runs"]]
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for group in dict.fromkeys(r["group"] for r in rows):
        members = [r for r in rows if r["group"] == group and _by_seed(r)]
        none = next((r for r in members if r["method"] == "none"), None)
        others = [r for r in members if spec.kind(group, r["method"]) != "structural"]
        best = max(others, key=lambda r: _mean_main(r, keys, key) or -1.0, default=None)
        for row in members:
            if row["method"] == "none":
                continue
            # a row's own teacher(s): a method may name another teacher than its case's
            ids = sorted(recorded.row_teachers(spec, every, row))
            mine = [
                teachers[t.removeprefix("teacher-")]
                for t in ids
                if t.removeprefix("teacher-") in teachers
            ]
            teacher = max(mine, key=lambda r: _mean_main(r, keys, key) or -1.0, default=None)
            result: dict[str, Any] = {
                "vs_none": _test(row, none, samples) if none else (None, None, 0),
                "best_other": None,
                "vs_best_other": (None, None, 0),
                "teacher": teacher["group"] if teacher else None,
                "vs_teacher": _test_teacher(row, teacher, samples) if teacher else (None, None, 0),
            }
            if spec.kind(group, row["method"]) == "structural" and best is not None:
                result["best_other"] = best["method"]
                result["vs_best_other"] = _test(row, best, samples)
            out[(group, row["method"])] = result
    return out


def significance_table(
    meta: dict[str, Any], group: str, tests: dict[tuple[str, str], dict[str, Any]], metric: str
) -> list[str]:
    """Markdown lines of one case's tests ([] when none of its rows has counts)."""
    rows = [(m, t) for (g, m), t in tests.items() if g == group]
    if not rows:
        return []
    # no student without KD (zero-shot: no labels to train one): the teacher is the baseline
    base, name = "vs_none", "w/o KD"
    if not any(t["vs_none"][2] for _, t in rows) and any(t["vs_teacher"][2] for _, t in rows):
        base, name = "vs_teacher", f"teacher ({rows[0][1]['teacher']})"
    lines = [
        f"Paired approximate randomization over the test sentences ({SAMPLES:,} samples; seeds "
        f"matched, n = seeds both rows recorded per-sentence counts for): Δ is the mean test "
        f"{metric} difference over those seeds."
        + (" The teacher's one run is paired with each student seed." if base != "vs_none" else ""),
        "",
        f"| method | Δ vs {name} | p vs {name} | n | best other method | Δ | p | n |",
        "|---|---:|---:|---:|---|---:|---:|---:|",
    ]
    for method, t in rows:
        diff, p, n = t[base]
        cells = [LABELS.get(method, method), _num(diff, "+.2f"), _num(p, ".4f"), str(n)]
        if t["best_other"] is None:
            cells += ["", "", "", ""]
        else:
            other, (diff2, p2, n2) = t["best_other"], t["vs_best_other"]
            cells += [LABELS.get(other, other), _num(diff2, "+.2f"), _num(p2, ".4f"), str(n2)]
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def _num(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def _speed_of(speed: dict[str, Any] | None, run_id: str | None) -> float | None:
    models = (speed or {}).get("models", {})
    value = models.get(run_id or "", {}).get("tokens_per_second")
    return None if value is None else float(value)


def _group_speeds(spec: ExperimentSpec, speed: dict[str, Any] | None) -> dict[str, float]:
    """Alone-measured tokens/s of each student case (one of its runs was measured)."""
    plan = recorded.planned_runs(spec)
    found: dict[str, float] = {}
    for run_id, m in (speed or {}).get("models", {}).items():
        if run_id in plan and plan[run_id].role == "student":
            found.setdefault(plan[run_id].group, float(m["tokens_per_second"]))
    return found


def summary_rows(
    meta: dict[str, Any],
    runs: dict[str, dict[str, Any]],
    speed: dict[str, Any] | None = None,
    tests: dict[tuple[str, str], dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """The rows of ``summary.json``: one per (group, method) in planned order, teachers with
    method ``teacher``. Scores are in percent (the task's main test metric: F1 or LAS);
    ``tokens_per_s`` comes from ``speed.json`` (the case's measured student stands for all of its
    methods: same layers); ``gap_closed`` is ``(KD - none) / (teacher - none)`` on mean scores
    (= the mean over seeds of each seed's gap closed against the mean without KD), None when
    the teacher does not score above the student without KD (there is no gap to close, and
    the ratio of two negative differences would read as a gain). None where not measured or
    not applicable."""
    spec = recorded.recorded_spec(meta)
    keys = recorded.score_metrics(runs)
    main, dev_key = f"test_{keys[-1]}", f"dev_{keys[-1]}"
    tests = case_tests(meta, runs) if tests is None else tests
    rows = recorded.rows(meta, spec, runs)
    speeds = _group_speeds(spec, speed)
    teachers = {r["group"]: r for r in rows if r["role"] == "teacher"}
    out = []
    for row in rows:
        scores = [recorded.scores(keys, x["metrics"]) for x in row["runs"]]
        test = [s[main] for s in scores if main in s]
        dev = [s[dev_key] for s in scores if dev_key in s]
        entry: dict[str, Any] = {
            "group": row["group"],
            "method": row["method"],
            "n": len(row["runs"]),
            "test_mean": statistics.mean(test) if test else None,
            "test_std": statistics.stdev(test) if len(test) > 1 else None,
            "dev_mean": statistics.mean(dev) if dev else None,
        }
        if row["role"] == "teacher":
            t_speed = _speed_of(speed, f"teacher-{row['group']}")
            entry.update(
                teacher_test=entry["test_mean"], tokens_per_s=t_speed, teacher_tokens_per_s=t_speed
            )
            entry.update(p_vs_best_other=None, p_vs_none=None, p_vs_teacher=None, gap_closed=None)
            out.append(entry)
            continue
        ids = sorted(recorded.row_teachers(spec, rows, row))
        t_rows = [teachers[t[len("teacher-") :]] for t in ids if t[len("teacher-") :] in teachers]
        t_scores = [_mean_main(t, keys, main) for t in t_rows]
        t_clean = [v for v in t_scores if v is not None]
        teacher_test = statistics.mean(t_clean) if t_clean else None
        none = next((r for r in rows if r["group"] == row["group"] and r["method"] == "none"), None)
        base = _mean_main(none, keys, main) if none else None
        gap = None
        if row["method"] != "none" and None not in (teacher_test, base) and test:
            assert teacher_test is not None and base is not None
            if teacher_test > base:  # else no gap to close
                gap = (statistics.mean(test) - base) / (teacher_test - base)
        t = tests.get((row["group"], row["method"]), {})
        entry.update(
            teacher_test=teacher_test,
            tokens_per_s=speeds.get(row["group"]),
            teacher_tokens_per_s=_speed_of(speed, ids[0]) if ids else None,
            p_vs_best_other=t.get("vs_best_other", (None, None, 0))[1],
            p_vs_none=t.get("vs_none", (None, None, 0))[1],
            p_vs_teacher=t.get("vs_teacher", (None, None, 0))[1],
            gap_closed=gap,
        )
        out.append(entry)
    return out


def pareto_points(summary: list[dict[str, Any]]) -> dict[str, Any]:
    """The size sweep's points from ``summary.json`` rows: ``{"methods": {method: [(group,
    tokens/s, test mean, test std), ...]}, "teachers": [(group, tokens/s, test)]}``.

    A size is a group with a student trained without KD; groups with KD rows only (one-off
    probes of a size, such as another KD weight) are left out, as are rows without a score or a
    measured speed. Points keep the experiment file's order of the sizes (not their measured
    speeds, which can tie or swap within the noise of a shared machine), so each method's line
    runs from one size to the next."""
    sizes = {r["group"] for r in summary if r["method"] == "none"}
    methods: dict[str, list[tuple[str, float, float, float]]] = {}
    teachers = []
    for r in summary:
        if r["test_mean"] is None or r["tokens_per_s"] is None:
            continue
        if r["method"] == "teacher":
            teachers.append((r["group"], r["tokens_per_s"], r["test_mean"]))
        elif r["group"] in sizes:
            point = (r["group"], r["tokens_per_s"], r["test_mean"], r["test_std"] or 0.0)
            methods.setdefault(r["method"], []).append(point)
    return {"methods": methods, "teachers": teachers}


def pareto_plot(name: str, summary: list[dict[str, Any]], metric: str, path: Path) -> bool:
    """Writes the test-score-against-speed plot of a size sweep (needs matplotlib); returns
    False when there is nothing to plot."""
    points = pareto_points(summary)
    if not points["methods"]:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method, series in points["methods"].items():
        xs, ys, errs = [p[1] for p in series], [p[2] for p in series], [p[3] for p in series]
        ax.errorbar(xs, ys, yerr=errs, marker="o", capsize=3, label=LABELS.get(method, method))
        for group, x, y, _ in series:
            ax.annotate(group, (x, y), textcoords="offset points", xytext=(4, -10), fontsize=7)
    for group, x, y in points["teachers"]:
        ax.scatter([x], [y], marker="*", s=180, color="black", zorder=3)
        ax.annotate(f"teacher ({group})", (x, y), textcoords="offset points", xytext=(6, 4))
    ax.set_xscale("log")
    ax.set_xlabel("prediction speed, tokens/s (measured alone; log scale)")
    ax.set_ylabel(f"test {metric} (mean over seeds; bars: std)")
    ax.set_title(f"{name}: student size against accuracy")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
