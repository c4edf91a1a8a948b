"""From a run config to a trained model: read and check everything, then call the loop.

Every input (config, corpora, teachers) is read and checked before anything is written, so a
user error never leaves a half-made output directory.
"""

from __future__ import annotations

import random
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from structkd.config import ConfigError, RunConfig, check_ranges
from structkd.data.resources import resolve_path
from structkd.data.unlabeled import corpus_files, filter_sentences
from structkd.devices import check_device
from structkd.io import clean_stale_temporaries
from structkd.models.base import Model
from structkd.models.hf_teacher import load_teacher
from structkd.models.marginal_file import MarginalFile, check_corpus, read_marginals
from structkd.models.marginal_teacher import METHODS, marginal_teacher
from structkd.tasks import Task, get_task
from structkd.train import ddp
from structkd.train.distill import Distiller, check_teachers
from structkd.train.fingerprint import run_fingerprint
from structkd.train.lock import RunLock, RunLockedError
from structkd.train.loop import say, train
from structkd.train.state import last_checkpoint

__all__ = ["resolve_path", "run", "seed_everything"]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def _corpora(config: RunConfig, task: Task, n_teachers: int) -> tuple[list[Any], list[int]]:
    """Training sentences (labeled, then unlabeled) and each one's corpus id."""
    data = config.data
    if not data.train and not data.unlabeled:
        raise ConfigError("data.train is empty: give a training corpus (or --train PATH)")
    bound = config.distill.teacher_binding == "corpus" and n_teachers > 1
    for name, paths in (("data.train", data.train), ("data.unlabeled", data.unlabeled)):
        if bound and paths and len(paths) != n_teachers:
            raise ConfigError(
                f"{name} has {len(paths)} corpora for {n_teachers} teachers; with "
                "teacher_binding=corpus, corpus i is distilled from teacher i"
            )
    sentences: list[Any] = []
    corpus: list[int] = []
    for i, path in enumerate(data.train):
        part = task.read_labeled(path, data.format)
        sentences += part
        corpus += [i if bound else 0] * len(part)
    seen: set[bytes] = set()
    dropped: dict[str, int] = {}
    for i, path in enumerate(data.unlabeled):
        before = len(sentences)
        for file in corpus_files(path):
            sentences.extend(
                filter_sentences(
                    task.iter_unlabeled(file),
                    task.words,
                    data.unlabeled_dedup,
                    data.unlabeled_min_words,
                    data.unlabeled_max_words,
                    seen,
                    dropped,
                )
            )
        corpus += [i if bound else 0] * (len(sentences) - before)
    if dropped and ddp.rank() == 0:
        print(
            f"data.unlabeled: dropped {dropped.get('duplicate', 0):,} duplicate and "
            f"{dropped.get('length', 0):,} too short or too long sentences",
            file=sys.stderr,
        )
    return sentences, corpus


def read_file_teacher(config: RunConfig) -> MarginalFile:
    """The checked marginal file ``distill.teacher_marginals``, if it can teach this run.

    Raises:
        DataError: for a malformed file; ConfigError: for a task, method or temperature its
            layout cannot serve.
    """
    assert config.distill.teacher_marginals is not None
    marginals = read_marginals(config.distill.teacher_marginals)
    layout, distill = marginals.layout, config.distill
    task = "dep" if layout == "arcs" else "ner"
    if task != config.task:
        raise ConfigError(
            f"{marginals.path}: a {layout} file teaches task {task}, not {config.task}"
        )
    if distill.method not in METHODS[layout]:
        raise ConfigError(
            f"{marginals.path}: a {layout} file serves distill.method "
            f"{', '.join(METHODS[layout])}, not {distill.method}"
        )
    global_temper = distill.temperature != 1.0 and distill.temperature_mode == "global"
    if layout != "tags" and global_temper:
        raise ConfigError(
            f"{marginals.path}: a {layout} file holds marginals at T = 1; temper them with "
            "distill.temperature_mode=local"
        )
    return marginals


def run(
    config: RunConfig, teacher_dirs: Sequence[str] = (), resume: bool = False
) -> dict[str, Any]:
    """Trains (``teacher_dirs`` empty) or distils a model of ``config.task`` as ``config`` says.

    The run holds ``OUT``'s lock (``structkd.train.lock``) from start to end, and first removes
    the temporary files that killed processes left in ``OUT`` and the cache directory.

    Returns:
        The final metrics (also in ``OUT/metrics.json``).

    Raises:
        ConfigError, DataError, CheckpointError, FileNotFoundError: user errors, raised before
            anything is written.
        RunLockedError: another live run holds ``OUT``.
    """
    check_ranges(config)  # load_config checked already; a RunConfig may be built in Python
    task = get_task(config.task)  # the one lookup: below this, the task is passed in
    config.train.device = ddp.setup(check_device(config.train.device))
    out = Path(config.out)
    existed = ddp.rank0_ok(out.is_dir())  # before the lock creates it
    lock = RunLock(out, enabled=ddp.rank() == 0)  # the other ranks of torchrun share rank 0's
    try:
        try:
            lock.acquire()
        finally:
            locked = ddp.rank0_ok(lock.enabled == lock.held)
        if not locked:
            raise RunLockedError(f"{out}: rank 0 could not take the run's lock")
        if lock.held:  # leftovers of killed processes (this run's, or a cache shared with others)
            clean_stale_temporaries(out)
            if config.distill.cache_dir:
                clean_stale_temporaries(config.distill.cache_dir)
        return _run(task, config, teacher_dirs, resume, existed)
    finally:
        lock.release()
        ddp.teardown()


def _run(
    task: Task, config: RunConfig, teacher_dirs: Sequence[str], resume: bool, existed: bool
) -> dict[str, Any]:
    out = Path(config.out)
    started = last_checkpoint(out / "checkpoints") is not None
    if resume and not started and not existed:
        raise FileNotFoundError(f"nothing to resume: {out} does not exist")
    if not resume and started:
        raise FileExistsError(f"{out} already holds a run: pass --resume or choose another --out")
    # A run killed before its first complete checkpoint has nothing to continue: start it over.
    resume = resume and started
    from_file = config.distill.teacher_marginals
    if from_file and teacher_dirs:
        raise ConfigError("distill.teachers and distill.teacher_marginals exclude each other")
    distilling = bool(teacher_dirs or from_file) and config.distill.method != "none"
    if config.data.unlabeled and not distilling:
        # The w/o-KD baseline is usually run from the same config as its KD students.
        warnings.warn(
            f"data.unlabeled ({len(config.data.unlabeled)} file(s)) is ignored: only "
            "distillation with a teacher uses unlabeled text",
            stacklevel=2,
        )
        config.data.unlabeled = []
    teacher_dirs = teacher_dirs if distilling else []  # --method none: the teachers are unused
    pooling = config.distill.subword_pooling
    loaded = [load_teacher(d, config.train.device, pooling) for d in teacher_dirs]
    teachers = [model for model, _ in loaded]
    teacher_ids = [digest for _, digest in loaded]
    marginals = read_file_teacher(config) if distilling and from_file else None
    teacher_names = [str(d) for d in teacher_dirs]
    if marginals is not None:
        teachers, teacher_ids = [marginal_teacher(marginals)], [marginals.digest()]
        teacher_names = [str(marginals.path)]
    sentences, corpus = _corpora(config, task, len(teachers))
    if marginals is not None:
        check_corpus(marginals, [task.words(s) for s in sentences], "the training data")
    dev = task.read_labeled(config.data.dev, config.data.format) if config.data.dev else []
    test = task.read_labeled(config.data.test, config.data.format) if config.data.test else []
    if not any(task.is_labeled(s) for s in sentences):
        if not teachers:
            raise ConfigError("no labeled training sentences: the label set comes from data.train")
        say(
            f"no labeled training sentences: learning from {len(teachers)} teacher(s) alone on "
            f"{len(sentences):,} unlabeled sentences, with the first teacher's label set"
        )
    fingerprint = run_fingerprint(config, teacher_ids)
    model: Model | None = None
    if not resume:
        seed_everything(config.train.seed)
        model = task.build_model(config.model, sentences, teachers)
        if teachers:
            check_teachers(teachers, model)

    def make_distiller(student: Model) -> Distiller:
        cache_dir = Path(config.distill.cache_dir or out / "cache")
        return Distiller(
            teachers,
            config.distill,
            [task.words(s) for s in sentences],
            corpus,
            student,
            cache_dir,
            teacher_ids,
            config.train.batch_size,
            teacher_names,
        )

    return train(
        task,
        model,
        config,
        sentences,
        corpus,
        dev,
        test,
        make_distiller if distilling else None,
        resume,
        fingerprint,
    )
