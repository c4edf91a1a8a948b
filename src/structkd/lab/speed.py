"""Prediction speed of an experiment's models: ``structkd speed configs/experiments/X.yaml``.

The tokens/s recorded by each training run come from its test evaluation while other runs share
the machine, so they are noisy. This module measures every teacher of an experiment and one
student per case (a student's architecture, hence its speed, does not depend on the KD method)
afterwards, one model at a time, with a fixed number of torch threads and a fixed batch size,
and writes ``results/NAME/speed.json``, which :mod:`structkd.lab.report` turns into the speed table
(student/teacher speed ratio next to the score ratio).

Complexity: one prediction pass over the test sentences per repeat and model.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from structkd.config import ConfigError
from structkd.io import atomic_write_json
from structkd.lab.experiment import machine, parameter_count
from structkd.lab.spec import DataItem, load_experiment
from structkd.models.checkpoint import load_model
from structkd.tasks import get_task

__all__ = ["measure_speed", "run_speed"]


def measure_speed(
    model_dir: str | Path,
    test_path: str | Path,
    threads: int = 2,
    batch_size: int = 32,
    repeats: int = 3,
    limit: int | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Prediction tokens per second of one saved model (the fastest of ``repeats`` passes).

    Args:
        model_dir: a ``model/`` directory written by ``structkd train|distill``.
        test_path: labeled sentences in a format the model's task reads (gold outputs unused).
        threads: torch intra-op threads during the measurement (restored afterwards).
        batch_size: sentences per prediction batch (length-bucketed).
        repeats: timed passes; the fastest counts (the first batch is run once before, untimed).
        limit: only the first ``limit`` sentences.
        device: torch device the model predicts on.

    Returns:
        ``{"tokens_per_second", "tokens", "sentences", "parameters", "threads", "batch_size"}``
        (and ``"device"`` when it is not the CPU).
    """
    model: Any = load_model(model_dir, device)
    task = get_task(model.task)
    words = [task.words(s) for s in task.read_labeled(str(test_path), "auto")[:limit]]
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        task.predict(model, words[:batch_size], batch_size)
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            task.predict(model, words, batch_size)
            best = min(best, time.perf_counter() - start)
    finally:
        torch.set_num_threads(previous)
    tokens = sum(len(w) for w in words)
    result: dict[str, Any] = {
        "tokens_per_second": tokens / max(best, 1e-9),
        "tokens": tokens,
        "sentences": len(words),
        "parameters": parameter_count(model_dir),
        "threads": threads,
        "batch_size": batch_size,
    }
    if device != "cpu":
        result["device"] = device
    return result


def run_speed(
    path: str | Path,
    results_root: str | Path = "results",
    data_root: str | None = None,
    threads: int = 2,
    batch_size: int = 32,
    limit: int | None = None,
    repeats: int = 5,
    log: Any = print,
    device: str = "cpu",
    runs_dir: str | None = None,
    only: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Measures the teachers and one student per case of experiment ``path``; writes
    ``results_root/NAME/speed.json`` and returns its content.

    A teacher given by its ``model`` (trained elsewhere, under ``runs_dir``) is measured on the
    test file of the first student case that distils from it; one that no case uses, or whose
    model is not there, is skipped. With ``only`` (run ids such as ``teacher-crf`` or
    ``case1a-none-s1``) just those are measured, and the other models of an existing speed.json
    are kept (a grid measured in parts, e.g. a second pass with new cases).

    Raises:
        ConfigError: when a model to measure has not been trained yet, or ``only`` names a run
            id the experiment does not measure.
    """
    spec = load_experiment(path)
    name = Path(path).stem
    root = Path(data_root or spec.data_root)
    work = Path(spec.work_dir) / name
    teacher_root = Path(runs_dir or spec.runs_dir)
    jobs: list[tuple[str, Path, DataItem]] = []  # (run id, model dir, test file)
    for group, t in spec.teachers.items():
        if t.model is None:
            jobs.append((t.run_id, work / t.run_id / "model", _test(t.data, t.run_id)))
            continue
        # the students of one named teacher (not of several)
        tests = [_test(s.data, s.name) for s in spec.students.values() if s.teachers == (group,)]
        if tests and (teacher_root / t.model / "model.safetensors").exists():
            jobs.append((t.run_id, teacher_root / t.model, tests[0]))
        elif tests:
            log(f"{t.run_id}: {teacher_root / t.model} not found; not measured")
    for s in spec.students.values():
        run_id = f"{s.name}-{next(iter(s.methods))}-s{s.seeds[0]}"
        jobs.append((run_id, work / run_id / "model", _test(s.data, s.name)))
    models: dict[str, Any] = {}
    target = Path(results_root) / name
    if only:
        unknown = sorted(set(only) - {run_id for run_id, _, _ in jobs})
        if unknown:
            known = ", ".join(run_id for run_id, _, _ in jobs)
            raise ConfigError(f"--only {unknown[0]}: not measured by {path} (it measures {known})")
        jobs = [job for job in jobs if job[0] in only]
        if (target / "speed.json").exists():
            models = dict(json.loads((target / "speed.json").read_text(encoding="utf-8"))["models"])
    for run_id, model_dir, test in jobs:
        if not (model_dir / "model.safetensors").exists():
            raise ConfigError(f"{model_dir}: not trained yet; run the experiment first")
        test_file = test if isinstance(test, str) else test.path  # a whole file, not a slice
        models[run_id] = measure_speed(
            model_dir,
            root / test_file,
            threads=threads,
            batch_size=batch_size,
            repeats=repeats,
            limit=limit or None,
            device=device,
        )
        log(f"{run_id}: {models[run_id]['tokens_per_second']:,.0f} tokens/s")
    record = {
        "command": (
            f"structkd speed {path} --threads {threads} --batch-size {batch_size}"
            + (f" --limit {limit}" if limit else "")
            + f" --repeats {repeats}"
            + (f" --device {device}" if device != "cpu" else "")
        ),
        "sentences_limit": limit or None,
        "repeats": repeats,
        "machine": machine(),
        "threads": threads,
        "batch_size": batch_size,
        "models": models,
    }
    target.mkdir(parents=True, exist_ok=True)
    atomic_write_json(target / "speed.json", record)
    return json.loads(json.dumps(record))


def _test(data: dict[str, tuple[DataItem, ...]], owner: str) -> DataItem:
    """The (first) test file of a teacher or student case.

    Raises:
        ConfigError: when it names none.
    """
    if not data.get("test"):
        raise ConfigError(f"{owner}: no test data to measure on")
    return data["test"][0]
