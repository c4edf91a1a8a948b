"""Grids of runs from one YAML file: ``structkd experiment configs/experiments/NAME.yaml``.

An experiment names teachers (trained first) and students (one run per method and seed, distilled
from one teacher). Every run is a ``python -m structkd train|distill`` subprocess, so its exact
command is recorded and thread counts are set per run. Model weights, caches and data slices go to
the git-ignored ``work_dir``; only ``metrics.json`` and ``run.json`` (command, commit, seconds,
tokens/s, parameter count) are copied to ``results/NAME/RUN_ID/``, which stays small enough to
commit, with ``test_counts.json``: each test sentence's counts (entities correct, predicted and
gold; or correct heads, labeled heads and words), which the paired significance tests of
:mod:`structkd.lab.report` read (:mod:`structkd.lab.significance`). A run whose
``results/NAME/RUN_ID/metrics.json`` exists is skipped, so an interrupted grid resumes where it
stopped, across sessions (a half-trained run continues with ``--resume``); a finished run without
``test_counts.json`` whose model is still in ``work_dir`` gets its counts on the next call.

A teacher trained elsewhere is named by its ``model`` directory under ``runs_dir`` (the file's
key, default the current directory; ``--runs-dir`` replaces it), so committed files name no
machine's paths. Its ``metrics.json`` (next to ``model/``) is copied to
``results/NAME/teacher-NAME/`` for the report. Its students wait (are not started) while the
model is missing or still training (a ``checkpoints/`` folder but no ``metrics.json``).

Experiment file (paths in ``data`` are relative to ``data_root``; ``{path, skip, first}`` takes
sentences ``skip .. skip+first`` of a corpus)::

    data_root: ../shared/data
    work_dir: runs/experiments
    runs_dir: runs                # where ``model:`` teachers live (default: .)
    jobs: 2                       # runs at once
    threads: 1                    # OMP/MKL/torch threads per run
    teachers:
      crf: {config: configs/ner/teacher-crf.yaml, seed: 1, set: [train.max_epochs=10],
            data: {train: [{path: ner/wikiann-en/train.tsv, first: 5000}], dev: ..., test: ...}}
      old: {model: other/teacher-crf/model}   # trained elsewhere (under runs_dir): not rerun
    students:
      case2a:
        config: configs/ner/case2a.yaml
        teacher: crf
        seeds: [1, 2]
        data: {train: [...], unlabeled: [...], dev: ..., test: ...}
        methods:                  # label -> KD method, or {method: M, set: [KEY=VALUE, ...]}
          none: none              # a plain ``train`` run: no teacher, no unlabeled data
          structural-local: {method: structural, set: [distill.temperature_mode=local]}
          labeled-only: {method: structural, unlabeled: false}   # without the unlabeled text
          news: {method: structural, unlabeled: [other/news.txt]}  # other unlabeled text
          averaged: {method: structural, teacher: [crf, old],   # several teachers
                     set: [distill.teacher_binding=average]}
    also_evaluate: {src-dev: ner/other/dev.txt}   # every student also scored on these corpora

A student's ``teacher`` (of its case or of one method) may be a list of teacher names; the run
gets one ``--teacher`` per name. ``also_evaluate`` writes
``results/NAME/RUN_ID/also_evaluated.json`` (``{LABEL: {"data", "score"}}``) for each finished
student.
"""

from __future__ import annotations

import fcntl
import json
import os
import platform
import shlex
import shutil
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from math import prod
from pathlib import Path

import torch

from structkd.config import ConfigError
from structkd.io import atomic_write_bytes, atomic_write_json
from structkd.lab.grid_runs import (
    Run,
    also_evaluate,
    count_test_sentences,
    env_for,
    main_score,
    test_file,
)
from structkd.lab.spec import SPLITS, DataItem, ExperimentSpec, load_experiment

__all__ = [
    "Run",
    "load_experiment",
    "machine",
    "parameter_count",
    "plan_runs",
    "portable",
    "run_experiment",
]


def portable(token: str, roots: Sequence[tuple[Path, str]]) -> str:
    """``token`` (a path, or a ``KEY=PATH`` argument) with no machine's absolute path.

    An absolute path under one of ``roots`` (``(directory, its name in committed files)``, the
    first match wins) is renamed, e.g. ``/work/shared/data/ner/x.txt`` ->
    ``../shared/data/ner/x.txt`` for ``(Path("/work/shared/data"), "../shared/data")``, so that
    commands and data recorded in ``results/`` read the same on every machine.
    """
    key, sep, value = token.rpartition("=") if "=" in token else ("", "", token)
    if not os.path.isabs(value):
        return token
    for directory, name in roots:
        base = os.path.abspath(directory)
        if value == base or value.startswith(base.rstrip(os.sep) + os.sep):
            rest = os.path.relpath(value, base)
            value = name if rest == "." else rest if name == "." else f"{name}/{rest}"
            return f"{key}{sep}{value}"
    return token


def _slice(source: Path, skip: int, first: int | None, target: Path) -> None:
    """Writes sentences ``skip .. skip+first`` of ``source`` to ``target``.

    Sentences are blank-line separated blocks in labeled corpora and lines in raw text (a file
    with no blank line).
    """
    text = source.read_text(encoding="utf-8")
    blocks = [b for b in text.split("\n\n") if b.strip()]
    if len(blocks) > 1:
        chosen = blocks[skip : None if first is None else skip + first]
        body = "\n\n".join(b.strip("\n") for b in chosen) + "\n\n"
    else:
        lines = [line for line in text.splitlines() if line.strip()]
        body = "\n".join(lines[skip : None if first is None else skip + first]) + "\n"
    atomic_write_bytes(target, body.encode("utf-8"))  # concurrent experiments may slice it too


def _data_path(item: DataItem, root: Path, slices: Path) -> str:
    """A data file to pass on the command line; a :class:`DataSlice` is written once."""
    if isinstance(item, str):
        return item if item.startswith("resource:") else str(root / item)
    name = Path(item.path)
    end = "end" if item.first is None else item.skip + item.first
    target = slices / name.parent / f"{name.stem}.{item.skip}-{end}{name.suffix}"
    if not target.exists():
        _slice(root / item.path, item.skip, item.first, target)
    return str(target)


def _data_args(
    data: dict[str, tuple[DataItem, ...]], root: Path, slices: Path, keep: tuple[str, ...]
) -> list[str]:
    return [
        a
        for split in keep
        for item in data.get(split, ())
        for a in (f"--{split}", _data_path(item, root, slices))
    ]


def _config(config: str | None, owner: str) -> str:
    if config is None:
        raise ConfigError(f"{owner}: no 'config' to train from")
    return config


def plan_runs(
    spec: ExperimentSpec, root: Path, slices: Path, work: Path, runs_dir: Path = Path(".")
) -> list[Run]:
    """The commands of the grid's runs (:meth:`ExperimentSpec.plan`, less the teachers trained
    elsewhere): teachers first, then students by case, seed and method.

    ``runs_dir`` is where the ``model`` directories of teachers trained elsewhere are found.

    Raises:
        ConfigError: for a run with no ``config``.
    """
    runs: list[Run] = []
    for planned in spec.plan():
        if planned.role == "teacher":
            t = spec.teachers[planned.group]
            if t.model is not None:  # an already trained teacher (e.g. another experiment's)
                continue
            data = _data_args(t.data, root, slices, ("train", "dev", "test"))
            sets = [a for x in t.sets for a in ("--set", x)]
            config = _config(t.config, f"teacher {t.name}")
            args = ["train", config, *data, "--seed", str(planned.seed), *sets]
            runs.append(Run(planned, args, data[1::2]))
            continue
        s = spec.students[planned.group]
        method = s.methods[planned.method]
        corpora = dict(s.data)
        if method.unlabeled is not None:  # the method's own unlabeled text, or none
            corpora["unlabeled"] = method.unlabeled
        unlabeled = bool(method.teachers) and bool(corpora.get("unlabeled"))
        keep = SPLITS if unlabeled else ("train", "dev", "test")
        data = _data_args(corpora, root, slices, keep)
        sets = [a for x in [*s.sets, *method.sets] for a in ("--set", x)]
        config = _config(s.config, f"student {s.name}")
        if not method.teachers:
            args = ["train", config, *data, "--set", "data.unlabeled=[]", *sets]
        else:
            args = ["distill", config, *data]
            if not unlabeled and (s.data or method.unlabeled is not None):
                # A data block without unlabeled text means none, not the base config's.
                args += ["--set", "data.unlabeled=[]"]
            for teacher in method.teachers:
                model = spec.teachers[teacher].model
                where = runs_dir / model if model else work / f"teacher-{teacher}" / "model"
                args += ["--teacher", str(where)]
            # The seeds of one (case, method) share a teacher cache: the teacher pass over the
            # training and unlabeled sentences (the slowest step of a distillation run with a
            # large teacher) then runs once per method instead of once per seed. Its content
            # depends on the data, the student's structure, the teachers and the temperature,
            # not on the seed, and the cache's key checks that (structkd.train.cache). Cases
            # that name one ``cache`` (e.g. student sizes) share it likewise.
            cache = work / "cache" / f"{s.cache or s.name}-{planned.method}"
            args += ["--method", method.kind, *sets, "--set", f"distill.cache_dir={cache}"]
        runs.append(Run(planned, [*args, "--seed", str(planned.seed)], data[1::2]))
    return runs


def parameter_count(model_dir: str | Path) -> int:
    """Number of weights in ``model_dir/model.safetensors``, read from the file's header only."""
    with open(Path(model_dir) / "model.safetensors", "rb") as handle:
        (size,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(size))
    return sum(prod(v["shape"]) for k, v in header.items() if k != "__metadata__")


def _git_commit() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "src", "configs"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def machine() -> str:
    """One line describing the machine: OS, CPU, cores and torch version."""
    cpu = platform.processor() or platform.machine()
    return f"{platform.system()} {cpu}, {os.cpu_count()} cores, torch {torch.__version__}"


def _execute(
    run: Run,
    work: Path,
    results: Path,
    threads: int,
    log: Callable[[str], None],
    roots: Sequence[tuple[Path, str]] = (),
    extra: dict[str, tuple[str, str]] | None = None,
) -> None:
    """Runs ``run`` and records it in ``results/RUN_ID`` (paths named through ``roots``; a
    student's scores on the ``extra`` corpora too, see ``_also_evaluate``)."""
    out = work / run.run_id
    command = [sys.executable, "-m", "structkd", *run.args, "--out", str(out), "--no-progress"]
    if (out / "checkpoints").exists() and not (out / "metrics.json").exists():
        command.append("--resume")
    elif out.exists():  # a finished run whose results were removed, or a teacher to redo
        shutil.rmtree(out)
    env = env_for(threads)
    log(f"start {run.run_id}: {shlex.join(command)}")
    commit = _git_commit()  # the code the run starts with
    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "stdout.log", "w", encoding="utf-8") as stdout:
        code = subprocess.run(command, env=env, stdout=stdout, stderr=subprocess.STDOUT).returncode
    seconds = time.perf_counter() - start
    if code != 0:
        log(f"FAILED {run.run_id} (exit {code} after {seconds:.0f} s; see {out / 'stdout.log'})")
        return
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    log_file = out / "train_log.jsonl"
    epochs = (
        [json.loads(line) for line in log_file.read_text(encoding="utf-8").splitlines() if line]
        if log_file.exists()
        else []
    )
    record = {
        "run_id": run.run_id,
        "role": run.role,
        "group": run.group,
        "method": run.method,
        "seed": run.seed,
        "teacher": run.teacher,
        "teachers": run.teachers,
        "command": shlex.join(["structkd", *(portable(a, roots) for a in command[3:])]),
        "commit": commit,
        "machine": machine(),
        "threads": threads,
        "seconds": round(seconds, 1),
        "tokens_per_second": metrics.get("test", metrics.get("dev", {})).get("tokens_per_second"),
        "parameters": parameter_count(out / "model"),
        "epochs": len(epochs),
        "epoch_seconds": [e["train_seconds"] for e in epochs if "train_seconds" in e],
        "steps": epochs[-1]["step"] if epochs else 0,  # optimizer steps (batches) in all
        "data": [portable(d, roots) for d in run.data],
    }
    target = results / run.run_id
    target.mkdir(parents=True, exist_ok=True)
    atomic_write_json(target / "run.json", record)
    count_test_sentences(
        run, out / "model", target / "test_counts.json", main_score(metrics), threads, log
    )
    if extra and run.role == "student":
        also_evaluate(run, out / "model", target / "also_evaluated.json", extra, threads, log)
    atomic_write_json(target / "metrics.json", metrics)  # last: its presence marks the run done
    log(f"done {run.run_id} in {seconds:.0f} s")


def _external_teachers(spec: ExperimentSpec, runs_dir: Path) -> dict[str, tuple[Path, bool]]:
    """Teachers given by their ``model``: name -> (model directory, finished training)."""
    found = {}
    for name, t in spec.teachers.items():
        if t.model is not None:
            model = runs_dir / t.model
            training = (model.parent / "checkpoints").exists()
            finished = not training or (model.parent / "metrics.json").exists()
            found[name] = (model, (model / "model.safetensors").exists() and finished)
    return found


def _import_teacher(
    name: str, model: Path, given: str, target: Path, log: Callable[[str], None]
) -> bool:
    """Copies the ``metrics.json`` of a teacher trained elsewhere (next to its ``model/``) to
    ``target/``, with a ``run.json`` that names the model as the experiment file does. Done
    once: a teacher whose metrics changed since (retrained) is reported, not copied again."""
    source = model.parent / "metrics.json"
    if not source.exists():
        return False
    metrics = json.loads(source.read_text(encoding="utf-8"))
    if (target / "metrics.json").exists():
        if json.loads((target / "metrics.json").read_text(encoding="utf-8")) != metrics:
            log(
                f"WARNING teacher-{name}: {source} changed since it was copied (retrained?); "
                f"its students' results may come from the old teacher"
            )
        return False
    log_file = model.parent / "train_log.jsonl"
    epochs = (
        [json.loads(line) for line in log_file.read_text(encoding="utf-8").splitlines() if line]
        if log_file.exists()
        else []
    )
    record = {
        "run_id": f"teacher-{name}",
        "role": "teacher",
        "group": name,
        "method": "teacher",
        "seed": None,
        "teacher": None,
        "command": None,
        "external": given,  # under runs_dir; trained outside this grid
        "commit": None,
        "machine": None,
        "threads": None,
        "seconds": None,
        "tokens_per_second": metrics.get("test", metrics.get("dev", {})).get("tokens_per_second"),
        "parameters": parameter_count(model),
        "epochs": len(epochs),
        "epoch_seconds": [e["train_seconds"] for e in epochs if "train_seconds" in e],
        "steps": epochs[-1]["step"] if epochs else 0,
        "data": [],
    }
    target.mkdir(parents=True, exist_ok=True)
    atomic_write_json(target / "run.json", record)
    atomic_write_json(target / "metrics.json", metrics)
    return True


@contextmanager
def _grid_lock(work: Path, path: str | Path) -> Iterator[None]:
    """Holds ``work/.lock`` while a grid runs, so a second copy of it stops at once.

    Raises:
        ConfigError: when another process holds the lock.
    """
    work.mkdir(parents=True, exist_ok=True)
    with open(work / ".lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            raise ConfigError(f"{path}: this grid is already running ({work / '.lock'})") from error
        yield  # the lock goes with the file when it is closed


def run_experiment(
    path: str | Path,
    results_root: str | Path = "results",
    data_root: str | None = None,
    jobs: int | None = None,
    only: list[str] | None = None,
    dry_run: bool = False,
    runs_dir: str | None = None,
) -> list[Run]:
    """Runs the grid of ``path``, skipping finished runs.

    Args:
        path: the experiment YAML file; its stem names ``results_root/NAME``.
        results_root: where ``NAME/RUN_ID/{metrics,run,test_counts}.json`` are written.
        data_root: overrides the file's ``data_root``.
        jobs: runs at once (overrides the file's ``jobs``).
        only: run ids to restrict the grid to (a teacher a chosen student needs is kept).
        dry_run: print the plan and run nothing.
        runs_dir: overrides the file's ``runs_dir`` (where ``model:`` teachers are found).

    Returns:
        The runs that were pending when the grid started (with ``dry_run``: every pending run,
        including students whose external teacher is not ready).
    """
    spec = load_experiment(path)
    name = Path(path).stem
    root = Path(data_root or spec.data_root)
    work = Path(spec.work_dir) / name
    results = Path(results_root) / name
    threads = spec.threads
    teacher_root = Path(runs_dir or spec.runs_dir)
    external = _external_teachers(spec, teacher_root)
    runs = plan_runs(spec, root, work / "data", work, teacher_root)
    # the whole plan, for the report, even with ``only``; external teachers first
    grid = [r.run_id for r in spec.plan()]
    if only:
        runs = [
            r
            for r in runs
            if r.run_id in only or any(r.run_id in s.teachers for s in runs if s.run_id in only)
        ]
    done = {r.run_id for r in runs if (results / r.run_id / "metrics.json").exists()}
    students = [r for r in runs if r.role == "student" and r.run_id not in done]
    needed = {t for r in students for t in r.teachers}
    teachers = [
        r
        for r in runs
        if r.role == "teacher"
        and (
            r.run_id not in done or r.run_id in needed and not (work / r.run_id / "model").exists()
        )
    ]
    # finished runs recorded before test counts existed, whose weights are still here
    uncounted = [
        r
        for r in runs
        if r.run_id in done
        and not (results / r.run_id / "test_counts.json").exists()
        and (work / r.run_id / "model" / "model.safetensors").exists()
        and test_file(r) is not None
    ]
    extra = {
        label: (given, _data_path(given, root, work / "data"))
        for label, given in spec.also_evaluate.items()
    }
    unevaluated = [
        r
        for r in runs
        if extra
        and r.role == "student"
        and r.run_id in done
        and not (results / r.run_id / "also_evaluated.json").exists()
        and (work / r.run_id / "model" / "model.safetensors").exists()
    ]
    waiting = {f"teacher-{t}" for t, (_, ready) in external.items() if not ready}
    # committed files name the data as the experiment file does, whatever --data-root was
    spelled = spec.data_root
    roots = [(root, spelled), (teacher_root, spec.runs_dir), (Path.cwd(), ".")]
    lock = threading.Lock()

    def log(message: str) -> None:
        with lock:
            print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)

    log(f"{name}: {len(runs)} runs, {len(done)} done, {len(teachers) + len(students)} to run")
    for t in sorted(waiting):
        model = external[t[len("teacher-") :]][0]
        log(f"{t}: {model} is missing or still training; its students wait")
    if dry_run:
        for r in [*teachers, *students]:
            note = " (waits for its teacher)" if waiting & set(r.teachers) else ""
            log(f"would run {r.run_id}{note}: structkd {shlex.join(r.args)}")
        for r in uncounted:
            log(f"would count {r.run_id}'s test sentences")
        return [*teachers, *students]
    with _grid_lock(work, path):
        results.mkdir(parents=True, exist_ok=True)
        atomic_write_json(
            results / "experiment.json",
            {
                "file": portable(str(path), roots),
                "spec": spec.raw,
                "commit": _git_commit(),
                "machine": machine(),
                "data_root": spelled,
                "runs": grid,
            },
        )
        for t, (model, ready) in external.items():
            given = str(spec.teachers[t].model)
            if ready and _import_teacher(t, model, given, results / f"teacher-{t}", log):
                log(f"teacher-{t}: metrics copied from {model.parent}")
        ready_students = [r for r in students if not waiting & set(r.teachers)]

        def count(r: Run) -> None:
            metrics = json.loads((results / r.run_id / "metrics.json").read_text(encoding="utf-8"))
            target = results / r.run_id / "test_counts.json"
            if count_test_sentences(
                r, work / r.run_id / "model", target, main_score(metrics), threads, log
            ):
                log(f"counted {r.run_id}'s test sentences")

        def evaluate(r: Run) -> None:
            target = results / r.run_id / "also_evaluated.json"
            if also_evaluate(r, work / r.run_id / "model", target, extra, threads, log):
                log(f"scored {r.run_id} on {', '.join(extra)}")

        # students that need no teacher train alongside the teachers
        stages = (
            [*teachers, *(r for r in ready_students if r.teacher is None)],
            [r for r in ready_students if r.teacher is not None],
        )
        with ThreadPoolExecutor(max_workers=jobs or spec.jobs) as pool:
            list(pool.map(count, uncounted))
            list(pool.map(evaluate, unevaluated))
            for stage in stages:
                list(
                    pool.map(
                        lambda r: _execute(r, work, results, threads, log, roots, extra), stage
                    )
                )
        return [*teachers, *ready_students]
