"""``structkd demo``: Structural KD on the bundled English WikiAnn slice, end to end.

Trains a BiLSTM-CRF teacher with a char CNN, a small MaxEnt student without KD, and the same
student with Structural KD (case 2a of Wang et al., ACL 2021: CRF teacher -> MaxEnt student) on the
labeled sentences plus the bundled unlabeled ones, then prints test F1 and speed of the three.
Sizes and epochs are set so that the whole demo takes a few minutes on two CPU cores.
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


def _train(
    model: ModelConfig, out: Path, epochs: int, progress: bool, **data: Any
) -> tuple[dict[str, Any], float]:
    config = RunConfig(
        model=model,
        data=DataConfig(**{**DATA.__dict__, **data}),
        train=TrainConfig(
            seed=1, max_epochs=epochs, batch_size=32, lr=0.004, patience=0, progress=progress
        ),
        distill=DistillConfig(method="structural", anneal=True),
        out=str(out),
    )
    teachers = [str(out.parent / "teacher" / "model")] if data.get("unlabeled") else []
    start = time.perf_counter()
    metrics = run(config, teachers)
    return metrics, time.perf_counter() - start


def run_demo(out: str | Path = "runs/demo", progress: bool = True) -> dict[str, Any]:
    """Runs the demo under ``out`` and prints the comparison table.

    Returns:
        name -> {"f1", "tokens_per_second", "seconds"} for the three models.
    """
    out = Path(out)
    for name in ("teacher", "student", "student-kd"):
        if (out / name / "checkpoints").exists():
            shutil.rmtree(out / name)
    rows: dict[str, Any] = {}
    plan = [
        ("teacher", "teacher (BiLSTM-CRF + char CNN)", TEACHER, 8, {}),
        ("student", "student w/o KD (BiLSTM-MaxEnt)", STUDENT, 15, {}),
        (
            "student-kd",
            "student with Structural KD",
            STUDENT,
            15,
            {"unlabeled": ["resource:unlabeled_en.txt"]},
        ),
    ]
    for name, label, model, epochs, data in plan:
        print(f"== training {label}", flush=True)
        metrics, seconds = _train(model, out / name, epochs, progress, **data)
        rows[label] = {
            "f1": metrics["test"]["f1"],
            "tokens_per_second": metrics["test"]["tokens_per_second"],
            "seconds": seconds,
        }
    print()
    print(f"{'model':40} {'test F1':>8} {'tokens/s':>10} {'train s':>8}")
    for label, row in rows.items():
        print(f"{label:40} {row['f1']:8.2f} {row['tokens_per_second']:10.0f} {row['seconds']:8.0f}")
    return rows
