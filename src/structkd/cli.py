"""Command line: ``structkd train|distill|evaluate|predict|export|annotate|demo|experiment``,
``speed`` and ``report``.

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
from importlib.metadata import PackageNotFoundError, version
from typing import Any, NoReturn

from structkd import __version__
from structkd.config import ConfigError, RunConfig, kd_method_names, load_config
from structkd.data.errors import DataError
from structkd.devices import check_device
from structkd.export import export_model
from structkd.io import text_output
from structkd.lab.demo import run_demo
from structkd.lab.experiment import run_experiment
from structkd.lab.report import write_report
from structkd.lab.speed import run_speed
from structkd.models.checkpoint import CheckpointError
from structkd.models.heads import DECODINGS, CRFHead, MaxEntHead
from structkd.predictor import load
from structkd.tasks import all_formats, get_task
from structkd.train.annotate import annotate
from structkd.train.loop import TrainingError
from structkd.train.run import run

FORMATS = all_formats()  # what the registered tasks read
USER_ERRORS = (ConfigError, DataError, CheckpointError, FileNotFoundError, FileExistsError, OSError)


class _Formatter(argparse.HelpFormatter):
    """Shows ``(default: X)`` after the help of every option that has a real default."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            action.option_strings
            and "%(default)" not in text
            and default not in (None, False, [], argparse.SUPPRESS)
        ):
            text += " (default: %(default)s)"
        return text


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def _count(text: str) -> int:
    """An argparse type: an integer >= 1 (a batch size, a thread or repeat count)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def _version() -> str:
    try:
        return version("structkd")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return __version__


def _add_device(parser: argparse.ArgumentParser, default: str | None) -> None:
    where = "the config's train.device, cpu if unset" if default is None else default
    parser.add_argument(
        "--device",
        default=default,
        help=f"torch device: cpu, cuda, cuda:N or mps (default: {where})",
    )


def _add_decode(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--decode",
        choices=DECODINGS,
        help="MaxEnt taggers: the best well-formed tag sequence (constrained, the default) "
        "or each word's best tag (argmax); see docs/decoding.md",
    )


def _set_decoding(predictor: Any, decoding: str | None) -> None:
    """Applies ``--decode`` to a loaded MaxEnt tagger; refuses it for anything else."""
    if decoding is None:
        return
    head = getattr(predictor.model, "head", None)
    if predictor.model is None:
        raise ConfigError("--decode applies to model directories: an export decodes as exported")
    if not isinstance(head, MaxEntHead) or isinstance(head, CRFHead):
        raise ConfigError("--decode applies to MaxEnt taggers (head kind maxent)")
    head.decoding = decoding


def _add_overrides(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "config",
        help="YAML run config: a file, or a config shipped with structkd by name "
        "(ner/teacher-crf, ner/case2a, dep/case1b, ...; see configs/ner/, configs/dep/)",
    )
    config = "replaces the config's"
    parser.add_argument(
        "--train",
        action="append",
        metavar="PATH",
        help=f"training corpus, repeatable ({config} "
        "data.train; resource:NAME is a file bundled with structkd)",
    )
    parser.add_argument("--dev", metavar="PATH", help=f"development corpus ({config} data.dev)")
    parser.add_argument("--test", metavar="PATH", help=f"test corpus ({config} data.test)")
    parser.add_argument(
        "--unlabeled",
        action="append",
        metavar="PATH",
        help=f"unlabeled text, one sentence a line, repeatable ({config} data.unlabeled)",
    )
    parser.add_argument("--out", metavar="DIR", help=f"output directory ({config} out)")
    parser.add_argument("--seed", type=int, help=f"random seed ({config} train.seed)")
    parser.add_argument(
        "--max-epochs", type=int, metavar="N", help=f"most epochs ({config} train.max_epochs)"
    )
    _add_device(parser, None)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set any config key, e.g. model.encoder.lstm_hidden=100 (repeatable)",
    )
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="structkd",
        description="Structural knowledge distillation for NER and dependency parsing.",
        epilog="Run 'structkd COMMAND --help' for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"structkd {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_overrides(commands.add_parser("train", help="train a tagger or a parser"))
    distill = commands.add_parser("distill", help="train a student from teachers")
    _add_overrides(distill)
    distill.add_argument(
        "--teacher",
        action="append",
        help="teacher model directory (repeatable; replaces distill.teachers)",
    )
    distill.add_argument(
        "--teacher-marginals",
        metavar="FILE",
        help="distil from a marginal file instead of teacher models (docs/marginal-files.md)",
    )
    distill.add_argument(
        "--method",
        choices=kd_method_names(),
        help="KD loss (replaces the config's distill.method, structural if unset)",
    )
    evaluate = commands.add_parser(
        "evaluate", help="span F1 (NER) or UAS/LAS (parsing) of a model on labeled data"
    )
    evaluate.add_argument("model", help="model directory or export directory")
    evaluate.add_argument("data", help="labeled corpus (resource:NAME: a bundled file)")
    evaluate.add_argument("--format", default="auto", choices=FORMATS, help="corpus format")
    _add_device(evaluate, "cpu")
    evaluate.add_argument(
        "--include-punct", action="store_true", help="parsing: score punctuation too"
    )
    _add_decode(evaluate)
    predict = commands.add_parser("predict", help="tag (CoNLL) or parse (CoNLL-U) a file, streamed")
    predict.add_argument("model", help="model directory or export directory (structkd export)")
    predict.add_argument("input", help="text, CoNLL, CoNLL-U, CoNLL-X or MaltTab file")
    predict.add_argument("--output", help="output file (default or '-': stdout)")
    predict.add_argument(
        "--format",
        default="auto",
        choices=FORMATS,
        help="input format (text: one sentence a line, words separated by spaces; raw: one "
        "sentence a line, tokenized by the rule-based tokenizer, 'Monday.' -> 'Monday' '.')",
    )
    _add_device(predict, "cpu")
    _add_decode(predict)
    export = commands.add_parser(
        "export", help="a student as ONNX or TorchScript with its vocabularies, for serving"
    )
    export.add_argument("model", help="model directory")
    export.add_argument(
        "--format", default="onnx", choices=("onnx", "torchscript"), help="graph format (onnx)"
    )
    export.add_argument("--out", required=True, help="export directory to write")
    export.add_argument("--quantize", choices=("int8",), help="dynamic int8 quantization")
    annotate = commands.add_parser(
        "annotate", help="write a teacher's marginals on a corpus as a marginal file"
    )
    annotate.add_argument("model", help="structkd or Hugging Face token-classifier directory")
    annotate.add_argument("text", help="sentences to annotate (text, CoNLL, CoNLL-U, ...)")
    annotate.add_argument(
        "--out", required=True, help="marginal file X (writes X.json and X.safetensors)"
    )
    annotate.add_argument(
        "--batch-size", type=_count, default=32, help="sentences a batch (the distillation's)"
    )
    annotate.add_argument(
        "--subword-pooling",
        default="first",
        choices=("first", "mean"),
        help="Hugging Face teachers: first subword or mean of the subwords",
    )
    _add_device(annotate, "cpu")
    demo = commands.add_parser("demo", help="teacher, student and KD student on bundled WikiAnn")
    demo.add_argument("--out", default="runs/demo", help="output directory")
    demo.add_argument("--no-progress", action="store_true", help="no progress bars")
    demo.add_argument(
        "--max-epochs", type=int, metavar="N", help="epochs of every model (default: 8/15/15)"
    )
    experiment = commands.add_parser(
        "experiment", help="run a grid of teacher and student runs (resumable)"
    )
    experiment.add_argument("spec", help="experiment YAML (see configs/experiments/)")
    experiment.add_argument("--results", default="results", help="results root")
    experiment.add_argument("--data-root", help="replaces the file's data_root")
    experiment.add_argument("--jobs", type=_count, help="runs at once (default: the file's jobs)")
    experiment.add_argument("--only", action="append", help="run id to run (repeatable)")
    experiment.add_argument("--dry-run", action="store_true", help="print the plan only")
    experiment.add_argument("--runs-dir", help="replaces the file's runs_dir (model: teachers)")
    speed = commands.add_parser(
        "speed", help="prediction speed of an experiment's teachers and students"
    )
    speed.add_argument("spec", help="experiment YAML whose models to measure")
    speed.add_argument("--results", default="results", help="results root")
    speed.add_argument("--data-root", help="replaces the file's data_root")
    speed.add_argument("--threads", type=_count, default=2, help="torch threads")
    speed.add_argument("--batch-size", type=_count, default=32, help="sentences a batch")
    speed.add_argument("--limit", type=_count, help="only the first N test sentences")
    speed.add_argument(
        "--repeats", type=_count, default=5, help="timed passes (the fastest counts)"
    )
    _add_device(speed, "cpu")
    speed.add_argument("--runs-dir", help="replaces the file's runs_dir (model: teachers)")
    speed.add_argument(
        "--only",
        action="append",
        metavar="RUN_ID",
        help="measure only this teacher or student (repeatable); the others already in "
        "speed.json are kept",
    )
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
        "distill.teacher_marginals": getattr(args, "teacher_marginals", None),
        "train.progress": False if args.no_progress else None,
        "train.device": args.device,
    }
    return load_config(args.config, args.set, values)


def _print_metrics(task: str, metrics: dict[str, Any]) -> None:
    for split, scores in metrics.items():
        print(get_task(task).summary(split, scores))


def _run(args: argparse.Namespace) -> int:
    if args.command in ("train", "distill"):
        config = _config(args)
        no_kd = config.distill.method == "none"
        from_file = bool(config.distill.teacher_marginals)
        if getattr(args, "teacher_marginals", None) and args.teacher:
            raise ConfigError("give --teacher or --teacher-marginals, not both")
        has_teacher = bool(config.distill.teachers) or from_file
        if args.command == "distill" and not has_teacher and not no_kd:
            raise ConfigError(
                "distill needs a teacher: --teacher DIR, --teacher-marginals FILE or "
                "distill.teachers"
            )
        # A marginal file replaces the config's teachers, as --teacher does.
        teachers = config.distill.teachers if args.command == "distill" and not from_file else []
        metrics = run(config, teachers, args.resume)
        if metrics:  # rank 0 of a distributed run, or a single process
            _print_metrics(config.task, metrics)
            print(f"model saved in {config.out}/model")
    elif args.command == "evaluate":
        # a model directory or an export directory
        predictor = load(args.model, check_device(args.device))
        _set_decoding(predictor, args.decode)
        print(json.dumps(predictor.evaluate(args.data, args.format, args.include_punct), indent=1))
    elif args.command == "predict":
        # a model directory or an export directory
        predictor = load(args.model, check_device(args.device))
        _set_decoding(predictor, args.decode)
        if args.output in (None, "-"):
            predictor.predict_file(args.input, args.format, sys.stdout)
        else:  # atomic for a regular file; devices, pipes and /dev/stdout are streamed to
            with text_output(args.output) as handle:
                predictor.predict_file(args.input, args.format, handle)
    elif args.command == "export":
        export_model(args.model, args.out, args.format, args.quantize)
        print(f"{args.format} export written to {args.out}")
    elif args.command == "annotate":
        path = annotate(
            args.model,
            args.text,
            args.out,
            args.batch_size,
            check_device(args.device),
            args.subword_pooling,
        )
        print(f"marginals written to {path}")
    elif args.command == "experiment":
        if not os.path.isfile(args.spec):
            raise FileNotFoundError(f"no such experiment file: {args.spec}")
        run_experiment(
            args.spec,
            args.results,
            args.data_root,
            args.jobs,
            args.only,
            args.dry_run,
            args.runs_dir,
        )
    elif args.command == "speed":
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
            device=check_device(args.device),
            runs_dir=args.runs_dir,
            only=args.only,
        )
    elif args.command == "report":
        write_report(args.results, args.out, plots=not args.no_plots)
        print(f"report written to {args.out}")
    else:
        run_demo(args.out, progress=not args.no_progress, max_epochs=args.max_epochs)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``structkd`` command; returns the exit status."""
    args = _parser().parse_args(argv)
    warnings.formatwarning = lambda message, *rest, **kw: f"warning: {message}\n"
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
