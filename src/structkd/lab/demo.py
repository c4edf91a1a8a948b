"""``structkd demo``: Structural KD on the bundled English WikiAnn slice, end to end.

Trains a BiLSTM-CRF teacher with a char CNN, a small MaxEnt student without KD, and the same
student with Structural KD (case 2a of Wang et al., ACL 2021: CRF teacher -> MaxEnt student) on the
labeled sentences plus the bundled unlabeled ones, then prints test F1 and speed of the three.
Speed is measured after all training, one model at a time, with a warm-up batch and the fastest of
several passes (:func:`structkd.lab.speed.measure_speed`), so that no model is timed while another
trains or while its own test evaluation warms up. Sizes and epochs are set so that the whole demo
takes a few minutes on two CPU cores.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from structkd.config import (
    DataConfig,
    DistillConfig,
    EncoderConfig,
    HeadConfig,
    ModelConfig,
    RunConfig,
    TrainConfig,
)
from structkd.lab.speed import measure_speed
from structkd.train.run import run

DATA = DataConfig(
    train=["resource:wikiann_en/train.tsv"],
    dev="resource:wikiann_en/dev.tsv",
    test="resource:wikiann_en/test.tsv",
)
TEACHER = ModelConfig(
    EncoderConfig(word_dim=64, char_dim=24, char_filters=32, lstm_hidden=96, dropout=0.4),
    HeadConfig(kind="crf"),
)
STUDENT = ModelConfig(
    EncoderConfig(word_dim=32, char_filters=0, lstm_hidden=24, dropout=0.2),
    HeadConfig(kind="maxent"),
)
SPEED_THREADS = 2
"""Torch threads while measuring speed (as ``structkd speed`` and the README's tables)."""


def _train(
    model: ModelConfig, out: Path, epochs: int, progress: bool, data: DataConfig
) -> tuple[dict[str, Any], float]:
    config = RunConfig(
        model=model,
        data=data,
        train=TrainConfig(
            seed=1, max_epochs=epochs, batch_size=32, lr=0.004, patience=0, progress=progress
        ),
        distill=DistillConfig(method="structural", anneal=True),
        out=str(out),
    )
    teachers = [str(out.parent / "teacher" / "model")] if data.unlabeled else []
    start = time.perf_counter()
    metrics = run(config, teachers)
    return metrics, time.perf_counter() - start


def run_demo(
    out: str | Path = "runs/demo",
    progress: bool = True,
    max_epochs: int | None = None,
    data: DataConfig = DATA,
) -> dict[str, Any]:
    """Runs the demo under ``out`` and prints the comparison table and where the models are.

    Args:
        out: the directory of the three runs (``teacher/``, ``student/``, ``student-kd/``).
        progress: progress bars (on a terminal).
        max_epochs: train every model this many epochs instead of the demo's 8/15/15 (a quick
            look; the F1 of so short a run means little).
        data: the labeled corpora (the bundled WikiAnn slice); the KD student adds
            ``data.unlabeled``, the bundled unlabeled sentences if it is empty.

    Returns:
        label -> {"f1", "tokens_per_second", "seconds", "model"} for the three models
        (``seconds``: training time; ``model``: the model directory).
    """
    out, test = Path(out), data.test or ""
    for name in ("teacher", "student", "student-kd"):
        if (out / name / "checkpoints").exists():
            shutil.rmtree(out / name)
    rows: dict[str, Any] = {}
    plan: list[tuple[str, str, ModelConfig, int, dict[str, list[str]]]] = [
        ("teacher", "teacher (BiLSTM-CRF + char CNN)", TEACHER, 8, {"unlabeled": []}),
        ("student", "student w/o KD (BiLSTM-MaxEnt)", STUDENT, 15, {"unlabeled": []}),
        (
            "student-kd",
            "student with Structural KD",
            STUDENT,
            15,
            {"unlabeled": data.unlabeled or ["resource:unlabeled_en.txt"]},
        ),
    ]
    for name, label, model, epochs, unlabeled in plan:
        print(f"== training {label}", flush=True)
        epochs = epochs if max_epochs is None else max_epochs
        corpora = DataConfig(**{**data.__dict__, **unlabeled})
        metrics, seconds = _train(model, out / name, epochs, progress, corpora)
        rows[label] = {"f1": metrics["test"]["f1"], "seconds": seconds}
        rows[label]["model"] = str(out / name / "model")
    print("== measuring prediction speed, one model at a time", flush=True)
    for row in rows.values():
        speed = measure_speed(row["model"], test, threads=SPEED_THREADS, repeats=5)
        row["tokens_per_second"] = speed["tokens_per_second"]
    print()
    print(f"{'model':40} {'test F1':>8} {'tokens/s':>10} {'train s':>8}")
    for label, row in rows.items():
        print(f"{label:40} {row['f1']:8.2f} {row['tokens_per_second']:10.0f} {row['seconds']:8.0f}")
    print(f"\ntokens/s: prediction on the test slice, {SPEED_THREADS} threads, batch 32, best of 5")
    print(f"models saved in {out}/ (teacher/model, student/model, student-kd/model); try")
    print(f"  structkd evaluate {out}/student-kd/model {test}")
    return rows
