"""A grid's runs (:mod:`structkd.lab.experiment`): the record of one run, and the scoring a finished
run gets in subprocesses: per-sentence test counts for the paired significance tests, and its
score on the experiment's ``also_evaluate`` corpora."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from structkd.config import ConfigError, load_config
from structkd.io import atomic_write_json
from structkd.lab.spec import PlannedRun
from structkd.tasks import task_reporting

__all__ = [
    "Run",
    "also_evaluate",
    "count_test_sentences",
    "env_for",
    "main_score",
    "score_file",
    "test_file",
]


@dataclass(frozen=True)
class Run:
    """One planned run of the grid with its command.

    Attributes:
        planned: the run as the experiment file plans it (run id, group, method, seed, teachers).
        args: ``structkd`` arguments after ``python -m structkd`` (without ``--out``).
        data: the data files the run reads, as given to the command.
    """

    planned: PlannedRun
    args: list[str]
    data: list[str] = field(default_factory=list)

    @property
    def run_id(self) -> str:
        return self.planned.run_id

    @property
    def role(self) -> str:
        return self.planned.role

    @property
    def group(self) -> str:
        return self.planned.group

    @property
    def method(self) -> str:
        return self.planned.method

    @property
    def seed(self) -> int | None:
        return self.planned.seed

    @property
    def teacher(self) -> str | None:
        return self.planned.teacher

    @property
    def teachers(self) -> list[str]:
        return self.planned.teachers


def env_for(threads: int) -> dict[str, str]:
    # torch sizes its intra-op thread pool from OMP_NUM_THREADS when it starts
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    # the runs import the same structkd as this process, whatever is installed in the venv
    src = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    return env


def test_file(run: Run) -> str | None:
    return next((b for a, b in zip(run.args, run.args[1:]) if a == "--test"), None)


def count_test_sentences(
    run: Run,
    model: Path,
    target: Path,
    score: float | None,
    threads: int,
    log: Callable[[str], None],
) -> bool:
    """Writes ``target`` (``test_counts.json``): the per-sentence test counts of ``model``, in a
    subprocess with ``threads`` threads; they must sum to the run's test ``score`` (from its
    ``metrics.json``). Returns whether they were written; a failure is logged, not raised."""
    test = test_file(run)
    if test is None:
        return False
    tmp = target.with_name(target.name + ".tmp")
    error = score_file(run, model, test, tmp, threads)
    if error is not None:
        log(f"no test counts for {run.run_id}: {error}")
        return False
    counted = json.loads(tmp.read_text(encoding="utf-8"))["score"]
    if score is not None and abs(counted - score) > 1e-6:
        tmp.unlink()
        log(f"no test counts for {run.run_id}: they give {counted:.4f}, metrics.json {score:.4f}")
        return False
    os.replace(tmp, target)
    return True


def score_file(run: Run, model: Path, data: str, target: Path, threads: int) -> str | None:
    """Writes ``target``: the per-sentence counts and score of ``model`` on ``data``
    (:mod:`structkd.lab.significance`, read as ``run`` reads its data), in a subprocess with
    ``threads`` threads. Returns None, or the error's last line."""
    sets = [b for a, b in zip(run.args, run.args[1:]) if a == "--set"]
    try:
        config = load_config(run.args[1], sets).data
        fmt, punct = config.format, config.include_punct
    except (ConfigError, OSError):  # the run itself read it: keep the defaults if it moved
        fmt, punct = "auto", False
    command = [sys.executable, "-m", "structkd.lab.significance", str(model), data, str(target)]
    command += ["--format", fmt, *(["--include-punct"] if punct else [])]
    done = subprocess.run(command, env=env_for(threads), capture_output=True, text=True)
    return None if done.returncode == 0 else str(done.stderr.strip().splitlines()[-1:])


def also_evaluate(
    run: Run,
    model: Path,
    target: Path,
    extra: dict[str, tuple[str, str]],
    threads: int,
    log: Callable[[str], None],
) -> bool:
    """Writes ``target`` (``also_evaluated.json``): ``{label: {"data", "score"}}``, the main
    score of ``model`` on each corpus of the experiment's ``also_evaluate`` (label -> (path as
    the experiment file gives it, path to read)); e.g. a source language's dev set, to choose a
    zero-shot student's temperature without target-language labels. Returns whether it was
    written; a failure is logged, not raised."""
    scores: dict[str, Any] = {}
    for label, (given, data) in extra.items():
        tmp = target.with_name(f"{target.name}.{label}.tmp")
        error = score_file(run, model, data, tmp, threads)
        if error is not None:
            log(f"no {label} score for {run.run_id}: {error}")
            return False
        score = json.loads(tmp.read_text(encoding="utf-8"))["score"]
        scores[label] = {"data": given, "score": score}
        tmp.unlink()
    atomic_write_json(target, scores)
    return True


def main_score(metrics: dict[str, Any]) -> float | None:
    """The test score that ``metrics.json`` gives the run (its task's selection score), None
    when no registered task reports its test metrics."""
    test = metrics.get("test", {})
    task = task_reporting(test)
    return None if task is None else task.selection_score(test)
