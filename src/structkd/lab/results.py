"""An experiment's recorded results, as the report and the summary read them.

``RESULTS/NAME/experiment.json`` (written by :mod:`structkd.lab.experiment`) records the
experiment file's mapping and the planned run ids in order; ``RESULTS/NAME/RUN_ID/`` holds each
finished run's ``metrics.json`` and ``run.json`` (and ``test_counts.json``,
``also_evaluated.json`` where recorded). :func:`recorded_spec` reads the recorded mapping back into
the typed :class:`~structkd.lab.spec.ExperimentSpec`, whose plan says what every planned run id
is (group, method, seed, teachers), finished or not. Which metrics a table shows, the score and
their headings come from the registered task that the runs' metrics report
(:func:`reported_task`, through :func:`structkd.tasks.task_reporting`).
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from structkd.config import RunConfig
from structkd.lab.significance import read_counts
from structkd.lab.spec import ExperimentSpec, PlannedRun
from structkd.tasks import Task, get_task, task_reporting

__all__ = [
    "LABELS",
    "load_results",
    "planned_runs",
    "recorded_spec",
    "reported_task",
    "rows",
    "score_metrics",
]

LABELS = {"none": "student w/o KD"}
"""How the report names a method label (the label itself when absent)."""


def load_results(directory: str | Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """An experiment's ``experiment.json`` ({} if absent) and run id -> {"run", "metrics"}, plus
    ``"counts"`` (record, ``[sentences, 3]`` array) where ``test_counts.json`` was recorded and
    ``"also"`` (label -> {"data", "score"}) where ``also_evaluated.json`` was."""
    directory = Path(directory)
    meta_file = directory / "experiment.json"
    meta = json.loads(meta_file.read_text(encoding="utf-8")) if meta_file.exists() else {}
    runs: dict[str, dict[str, Any]] = {}
    for run_dir in sorted(p for p in directory.iterdir() if (p / "metrics.json").exists()):
        runs[run_dir.name] = {
            "run": json.loads((run_dir / "run.json").read_text(encoding="utf-8")),
            "metrics": json.loads((run_dir / "metrics.json").read_text(encoding="utf-8")),
        }
        if (run_dir / "test_counts.json").exists():  # per-sentence counts, for the tests
            runs[run_dir.name]["counts"] = read_counts(run_dir / "test_counts.json")
        if (run_dir / "also_evaluated.json").exists():  # scores on the also_evaluate corpora
            also = (run_dir / "also_evaluated.json").read_text(encoding="utf-8")
            runs[run_dir.name]["also"] = json.loads(also)
    return meta, runs


def recorded_spec(meta: dict[str, Any]) -> ExperimentSpec:
    """The typed spec ``experiment.json`` records (an empty one when it records none)."""
    return ExperimentSpec.from_dict(meta.get("spec") or {}, "experiment.json")


def planned_runs(spec: ExperimentSpec) -> dict[str, PlannedRun]:
    """Run id -> planned run, for every run of ``spec``'s grid."""
    return {run.run_id: run for run in spec.plan()}


def reported_task(runs: dict[str, dict[str, Any]]) -> Task:
    """The registered task whose ``score_metrics`` the runs' test (or dev) metrics report; with
    no finished run to tell, the default task of a run config."""
    for r in runs.values():
        task = task_reporting(r["metrics"].get("test", r["metrics"].get("dev", {})))
        if task is not None:
            return task
    return get_task(RunConfig().task)


def score_metrics(runs: dict[str, dict[str, Any]]) -> tuple[str, ...]:
    """The metrics the tables show (the last: the score): ``reported_task``'s."""
    return reported_task(runs).score_metrics


def score_label(runs: dict[str, dict[str, Any]]) -> str:
    """The heading of the score (the last of ``score_metrics``), e.g. ``F1``, ``LAS``."""
    task = reported_task(runs)
    return task.metric_labels[task.score_metrics[-1]]


def scores(keys: tuple[str, ...], metrics: dict[str, Any]) -> dict[str, float]:
    """``{"dev_KEY", "test_KEY"}`` -> score, for the ``keys`` a run's metrics have."""
    return {
        f"{split}_{k}": float(metrics[split][k])
        for split in ("dev", "test")
        for k in keys
        if split in metrics and k in metrics[split]
    }


def mean(values: list[float]) -> float:
    return statistics.mean(values) if values else 0.0


def rows(
    meta: dict[str, Any], spec: ExperimentSpec, runs: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    """One row per (group, method) in planned order (``meta["runs"]``; without it, the finished
    runs'), with every seed's finished runs."""
    plan = planned_runs(spec)
    order: list[tuple[str, str, str]] = []  # (role, group, method)
    for run_id in meta.get("runs") or list(runs):
        key = _key(run_id, plan, runs)
        if key not in order:
            order.append(key)
    out = []
    for role, group, method in order:
        done = [
            r
            for r in runs.values()
            if (r["run"]["role"], r["run"]["group"], r["run"]["method"]) == (role, group, method)
        ]
        out.append({"role": role, "group": group, "method": method, "runs": done})
    return out


def _key(
    run_id: str, plan: dict[str, PlannedRun], runs: dict[str, dict[str, Any]]
) -> tuple[str, str, str]:
    """(role, group, method) of a run: as its ``run.json`` records it, else as the spec plans it."""
    if run_id in runs:
        record = runs[run_id]["run"]
        return record["role"], record["group"], record["method"]
    if run_id in plan:
        planned = plan[run_id]
        return planned.role, planned.group, planned.method
    return "student", "?", run_id


def group_of(run_id: str, spec: ExperimentSpec, runs: dict[str, dict[str, Any]]) -> str:
    """The group (teacher or student case) of run ``run_id``: its record's, else its plan's."""
    return _key(run_id, planned_runs(spec), runs)[1]


def case_teachers(spec: ExperimentSpec, table: list[dict[str, Any]], case: str) -> set[str]:
    """Run ids of the teacher(s) student case ``case`` distils from: those its finished runs
    name, and the one its experiment file names (known before any of its KD runs finished)."""
    ids = {
        teacher
        for r in table
        if r["role"] == "student" and r["group"] == case
        for x in r["runs"]
        for teacher in x["run"].get("teachers") or [x["run"].get("teacher")]
        if teacher
    }
    planned = spec.students[case].teachers if case in spec.students else ()
    return ids | {f"teacher-{name}" for name in planned}


def row_teachers(
    spec: ExperimentSpec, table: list[dict[str, Any]], row: dict[str, Any]
) -> set[str]:
    """Run ids of the teacher(s) one student row distils from: those its finished runs name (a
    method may name its own teacher), else the case's planned teacher, else all of the case's."""
    ids = {
        teacher
        for x in row["runs"]
        for teacher in x["run"].get("teachers") or [x["run"].get("teacher")]
        if teacher
    }
    if ids:
        return ids
    planned = spec.students[row["group"]].teachers if row["group"] in spec.students else ()
    return {f"teacher-{name}" for name in planned} or case_teachers(spec, table, row["group"])
