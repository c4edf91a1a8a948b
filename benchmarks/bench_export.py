"""Speed and F1 of an exported student: PyTorch eager vs ONNX Runtime (float and int8) vs
TorchScript, batch 1 and 32, 1 and 2 threads, on the bundled WikiAnn English test slice.

Trains (once; reused when ``--out`` already holds it) the ``structkd demo`` MaxEnt student and
the same encoder with a CRF head on the bundled WikiAnn slice, exports each with
``structkd export`` (ONNX, ONNX int8, TorchScript, TorchScript int8), then times end-to-end
prediction (words in, tags out: id lookup, graph, decoder) over the 500 test sentences in
length-bucketed batches. Each cell is the fastest of ``--repeats`` passes, all runtimes
measured in the same run, interleaved per repeat. F1 is span F1 on the test slice.

    python benchmarks/bench_export.py --out runs/bench_export --report benchmarks/README.md

``--report FILE`` writes the table as the section "## Exported students" of FILE, replacing that
section if it is there and keeping every other section; without it the table is printed.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path
from typing import Any

import onnxruntime
import torch

from structkd.config import DataConfig, HeadConfig, ModelConfig, RunConfig, TrainConfig
from structkd.data.conll import read_ner
from structkd.data.resources import resolve_path
from structkd.export import ExportedModel, export_model
from structkd.lab.demo import DATA, STUDENT
from structkd.metrics.span_f1 import SpanF1
from structkd.models.checkpoint import load_model
from structkd.tasks import get_task
from structkd.train.run import run

RUNTIMES = (
    ("PyTorch eager", None, None),
    ("TorchScript", "torchscript", None),
    ("TorchScript int8", "torchscript", "int8"),
    ("ONNX Runtime", "onnx", None),
    ("ONNX Runtime int8", "onnx", "int8"),
)


def train_student(out: Path, head: str, epochs: int) -> Path:
    """The demo student (or its CRF twin), trained without KD on the bundled slice."""
    model_dir = out / f"student-{head}" / "model"
    if (model_dir / "config.json").is_file():
        return model_dir
    config = RunConfig(
        model=ModelConfig(STUDENT.encoder, HeadConfig(kind=head)),  # type: ignore[arg-type]
        data=DataConfig(**DATA.__dict__),
        train=TrainConfig(seed=1, max_epochs=epochs, batch_size=32, lr=0.004, progress=False),
        out=str(out / f"student-{head}"),
    )
    run(config, [])
    return model_dir


def f1(gold: list[list[str]], predicted: list[list[str]]) -> float:
    metric = SpanF1()
    for g, p in zip(gold, predicted):
        metric.update(g, p)
    return float(metric.compute()["f1"])


SECTION = "## Exported students"


def replace_section(text: str, section: str) -> str:
    """``text`` (a markdown page) with its ``SECTION`` (up to the next ``## `` heading or
    ``<!--`` marker of another script's section) replaced by ``section``, or ``section``
    appended when the page has none."""
    lines = text.splitlines()
    if SECTION not in lines:
        return text.rstrip("\n") + "\n\n" + section
    start = lines.index(SECTION)
    end = next(
        (i for i in range(start + 1, len(lines)) if lines[i].startswith(("## ", "<!--"))),
        len(lines),
    )
    after = "\n".join(lines[end:])
    before = "\n".join(lines[:start]).rstrip("\n")
    return (before + "\n\n" if before else "") + section + ("\n" + after + "\n" if after else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="runs/bench_export", help="students and exports")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--heads", nargs="+", default=["maxent", "crf"])
    parser.add_argument("--limit", type=int, help="only the first N test sentences (a smoke run)")
    parser.add_argument("--report", help="write the table as a section of this markdown file")
    args = parser.parse_args()
    load_before = os.getloadavg()
    out = Path(args.out)
    test = read_ner(resolve_path(DATA.test))[: args.limit]  # type: ignore[arg-type]
    words = [s.tokens for s in test]
    gold = [list(s.tags or []) for s in test]
    tokens = sum(map(len, words))
    rows: list[list[str]] = []
    goals: list[str] = []
    for head in args.heads:
        model_dir = train_student(out, head, args.epochs)
        for _, fmt, quantize in RUNTIMES[1:]:
            name = f"{head}-{fmt}-{quantize or 'float'}"
            export_model(model_dir, out / "exports" / name, fmt, quantize)
        model = load_model(model_dir)
        task = get_task("ner")
        reference = task.predict(model, words, 32)
        for threads in args.threads:
            torch.set_num_threads(threads)
            runners: dict[str, Any] = {"PyTorch eager": None}
            for label, fmt, quantize in RUNTIMES[1:]:
                name = f"{head}-{fmt}-{quantize or 'float'}"
                runners[label] = ExportedModel(out / "exports" / name, threads=threads)
            best: dict[tuple[str, int], float] = {}
            outputs: dict[str, list[list[str]]] = {}
            for _ in range(args.repeats):
                for label, runner in runners.items():
                    for batch in (1, 32):
                        start = time.perf_counter()
                        if runner is None:
                            predicted = task.predict(model, words, batch)
                        else:
                            predicted = runner.predict(words, batch)
                        seconds = time.perf_counter() - start
                        key = (label, batch)
                        best[key] = min(best.get(key, float("inf")), seconds)
                        outputs[label] = predicted
            eager_1 = tokens / best[("PyTorch eager", 1)]
            onnx_1 = tokens / best[("ONNX Runtime", 1)]
            change = f1(gold, outputs["ONNX Runtime int8"]) - f1(gold, outputs["ONNX Runtime"])
            goals.append(
                f"{head}, {threads} thread{'s' if threads > 1 else ''}: ONNX Runtime at batch 1 "
                f"is {onnx_1 / eager_1:.2f}x eager (goal >= 2x); int8 F1 minus float ONNX F1 "
                f"is {change:+.2f} (goal >= -0.5)"
            )
            for label in runners:
                speed_1, speed_32 = (tokens / best[(label, b)] for b in (1, 32))
                same = sum(
                    a == b for p, r in zip(outputs[label], reference) for a, b in zip(p, r)
                )
                rows.append(
                    [
                        head,
                        label,
                        str(threads),
                        f"{speed_1:,.0f}",
                        f"{speed_32:,.0f}",
                        f"{speed_1 / eager_1:.2f}x",
                        f"{f1(gold, outputs[label]):.2f}",
                        f"{100 * same / tokens:.2f}%",
                    ]
                )
    load_after = os.getloadavg()
    lines = [
        SECTION,
        "",
        f"`python benchmarks/bench_export.py --out {args.out} --report FILE` "
        f"({args.epochs} epochs, fastest of {args.repeats} passes, runtimes interleaved per pass;"
        " all rows measured in the same run). End-to-end prediction (words in, tags out) over "
        f"{len(words)} sentences ({tokens} tokens) of the bundled WikiAnn English test slice.",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"onnxruntime {onnxruntime.__version__}, Python {platform.python_version()}; load "
        f"average {load_before[0]:.1f} at the start and {load_after[0]:.1f} at the end.",
        "",
        "| student | runtime | threads | tokens/s, batch 1 | tokens/s, batch 32 "
        "| batch 1 vs eager | test F1 | tags equal to eager |",
        "|---|---|---|---:|---:|---:|---:|---:|",
        *("| " + " | ".join(row) + " |" for row in rows),
        "",
        "Goals, from the rows above:",
        "",
        *(f"- {goal}" for goal in goals),
        "",
    ]
    table = "\n".join(lines)
    if args.report:
        path = Path(args.report)
        text = path.read_text(encoding="utf-8") if path.is_file() else "# Benchmarks\n"
        path.write_text(replace_section(text, table), encoding="utf-8")
        print(f"wrote {path}")
    else:
        print(table)


if __name__ == "__main__":
    main()
