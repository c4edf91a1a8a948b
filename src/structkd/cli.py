"""Command line: ``structkd train|distill|evaluate|predict|demo|experiment|speed|report``.

The run config's ``task`` (``ner`` or ``dep``) selects the model family, readers and metrics;
``evaluate`` and ``predict`` read it from the model directory.

User errors (bad config, bad data, missing files) print one ``error: ...`` line on stderr and exit
with status 2, before anything is written.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from collections.abc import Sequence
from typing import Any, NoReturn

from structkd.config import ConfigError, KDMethod, RunConfig, load_config
from structkd.data.errors import DataError
from structkd.models.checkpoint import CheckpointError

FORMATS = ("auto", "conll", "wikiann", "text", "conllu", "conllx", "malttab")
USER_ERRORS = (ConfigError, DataError, CheckpointError, FileNotFoundError, FileExistsError, OSError)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see structkd {self.prog.split()[-1]} --help)\n")


def _add_overrides(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="YAML run config (see configs/ner/, configs/dep/)")
    parser.add_argument("--train", action="append", help="training corpus (repeatable)")
    parser.add_argument("--dev", help="development corpus")
    parser.add_argument("--test", help="test corpus")
    parser.add_argument("--unlabeled", action="append", help="unlabeled text (repeatable)")
    parser.add_argument("--out", help="output directory")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--max-epochs", type=int)
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key"
    )
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="structkd",
        description="Structural knowledge distillation for NER and dependency parsing.",
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_overrides(commands.add_parser("train", help="train a tagger or a parser"))
    distill = commands.add_parser("distill", help="train a student from teachers")
    _add_overrides(distill)
    distill.add_argument(
        "--teacher",
        action="append",
        help="teacher model directory (repeatable; replaces distill.teachers)",
    )
    distill.add_argument("--method", choices=KDMethod.__args__, help="KD loss")  # type: ignore[attr-defined]
    evaluate = commands.add_parser(
        "evaluate", help="span F1 (NER) or UAS/LAS (parsing) of a model on labeled data"
    )
    evaluate.add_argument("model", help="model directory")
    evaluate.add_argument("data", help="labeled corpus")
    evaluate.add_argument("--format", default="auto", choices=FORMATS)
    evaluate.add_argument(
        "--include-punct", action="store_true", help="parsing: score punctuation too"
    )
    predict = commands.add_parser("predict", help="tag (CoNLL) or parse (CoNLL-U) a file, streamed")
    predict.add_argument("model", help="model directory")
    predict.add_argument("input", help="text, CoNLL, CoNLL-U, CoNLL-X or MaltTab file")
    predict.add_argument("--output", help="output file (default: stdout)")
    predict.add_argument("--format", default="auto", choices=FORMATS)
    demo = commands.add_parser("demo", help="teacher, student and KD student on bundled WikiAnn")
    demo.add_argument("--out", default="runs/demo", help="output directory")
    demo.add_argument("--no-progress", action="store_true", help="no progress bars")
    experiment = commands.add_parser(
        "experiment", help="run a grid of teacher and student runs (resumable)"
    )
    experiment.add_argument("spec", help="experiment YAML (see configs/experiments/)")
    experiment.add_argument("--results", default="results", help="results root")
    experiment.add_argument("--data-root", help="replaces the file's data_root")
    experiment.add_argument("--jobs", type=int, help="runs at once")
    experiment.add_argument("--only", action="append", help="run id to run (repeatable)")
    experiment.add_argument("--dry-run", action="store_true", help="print the plan only")
    speed = commands.add_parser(
        "speed", help="prediction speed of an experiment's teachers and students"
    )
    speed.add_argument("spec", help="experiment YAML whose models to measure")
    speed.add_argument("--results", default="results", help="results root")
    speed.add_argument("--data-root", help="replaces the file's data_root")
    speed.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    speed.add_argument("--batch-size", type=int, default=32, help="sentences a batch (32)")
    speed.add_argument("--limit", type=int, help="only the first N test sentences")
    speed.add_argument("--repeats", type=int, default=5, help="timed passes (the fastest counts)")
    report = commands.add_parser("report", help="Markdown tables (and plots) of results/")
    report.add_argument("results", help="results root (one folder per experiment)")
    report.add_argument("--out", default="docs/results.md", help="Markdown file to write")
    report.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    return parser


def _config(args: argparse.Namespace) -> RunConfig:
    values: dict[str, Any] = {
        "data.train": args.train,
        "data.dev": args.dev,
        "data.test": args.test,
        "data.unlabeled": args.unlabeled,
        "out": args.out,
        "train.seed": args.seed,
        "train.max_epochs": args.max_epochs,
        "distill.method": getattr(args, "method", None),
        "distill.teachers": getattr(args, "teacher", None),
        "train.progress": False if args.no_progress else None,
    }
    if not os.path.isfile(args.config):
        raise FileNotFoundError(f"no such config file: {args.config}")
    return load_config(args.config, args.set, values)


def _print_metrics(task: str, metrics: dict[str, Any]) -> None:
    from structkd.tasks import get_task

    for split, scores in metrics.items():
        print(get_task(task).summary(split, scores))


def _run(args: argparse.Namespace) -> int:
    if args.command in ("train", "distill"):
        from structkd.train.run import run

        config = _config(args)
        if args.command == "distill" and not config.distill.teachers:
            raise ConfigError("distill needs a teacher: --teacher DIR or distill.teachers")
        teachers = config.distill.teachers if args.command == "distill" else []
        metrics = run(config, teachers, args.resume)
        if metrics:  # rank 0 of a distributed run, or a single process
            _print_metrics(config.task, metrics)
            print(f"model saved in {config.out}/model")
    elif args.command == "evaluate":
        from structkd.models.checkpoint import load_model
        from structkd.tasks import get_task

        model = load_model(args.model)
        task = get_task(model.task)
        sentences = task.read_labeled(args.data, args.format)
        print(json.dumps(task.evaluate(model, sentences, args.include_punct), indent=1))
    elif args.command == "predict":
        from structkd.data.textio import atomic_text_output
        from structkd.models.checkpoint import load_model
        from structkd.tasks import get_task

        model = load_model(args.model)
        task = get_task(model.task)
        if args.output is None:
            task.predict_file(model, args.input, args.format, sys.stdout)
        else:
            with atomic_text_output(args.output) as handle:
                task.predict_file(model, args.input, args.format, handle)
    elif args.command == "experiment":
        from structkd.experiment import run_experiment

        if not os.path.isfile(args.spec):
            raise FileNotFoundError(f"no such experiment file: {args.spec}")
        run_experiment(args.spec, args.results, args.data_root, args.jobs, args.only, args.dry_run)
    elif args.command == "speed":
        from structkd.speed import run_speed

        if not os.path.isfile(args.spec):
            raise FileNotFoundError(f"no such experiment file: {args.spec}")
        run_speed(
            args.spec,
            args.results,
            args.data_root,
            args.threads,
            args.batch_size,
            args.limit,
            args.repeats,
        )
    elif args.command == "report":
        from structkd.report import write_report

        write_report(args.results, args.out, plots=not args.no_plots)
        print(f"report written to {args.out}")
    else:
        from structkd.demo import run_demo

        run_demo(args.out, progress=not args.no_progress)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``structkd`` command; returns the exit status."""
    args = _parser().parse_args(argv)
    warnings.formatwarning = lambda message, *rest, **kw: f"warning: {message}\n"
    from structkd.train.loop import TrainingError

    try:
        return _run(args)
    except BrokenPipeError:
        # The reader of our output went away (`structkd predict ... | head`): not an error.
        # Point stdout at devnull so the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except TrainingError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
