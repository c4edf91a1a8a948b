"""From a run config to a trained model: read and check everything, then call the loop.

Every input (config, corpora, teachers) is read and checked before anything is written, so a
user error never leaves a half-made output directory.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from structkd.config import ConfigError, RunConfig
from structkd.data.resources import resolve_path
from structkd.devices import check_device
from structkd.models.base import Model
from structkd.models.hf_teacher import load_teacher
from structkd.tasks import Task, get_task
from structkd.train import ddp
from structkd.train.distill import Distiller, check_teachers
from structkd.train.loop import train
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
    for i, path in enumerate(data.unlabeled):
        part = task.read_unlabeled(path)
        sentences += part
        corpus += [i if bound else 0] * len(part)
    return sentences, corpus


def run(
    config: RunConfig, teacher_dirs: Sequence[str] = (), resume: bool = False
) -> dict[str, Any]:
    """Trains (``teacher_dirs`` empty) or distils a model of ``config.task`` as ``config`` says.

    Returns:
        The final metrics (also in ``OUT/metrics.json``).

    Raises:
        ConfigError, DataError, CheckpointError, FileNotFoundError: user errors, raised before
            anything is written.
    """
    config.train.device = ddp.setup(check_device(config.train.device))
    task = get_task(config.task)
    out = Path(config.out)
    started = last_checkpoint(out / "checkpoints") is not None
    if resume and not started and not out.is_dir():
        raise FileNotFoundError(f"nothing to resume: {out} does not exist")
    if not resume and started:
        raise FileExistsError(f"{out} already holds a run: pass --resume or choose another --out")
    # A run killed before its first complete checkpoint has nothing to continue: start it over.
    resume = resume and started
    distilling = bool(teacher_dirs) and config.distill.method != "none"
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
    sentences, corpus = _corpora(config, task, len(teachers))
    dev = task.read_labeled(config.data.dev, config.data.format) if config.data.dev else []
    test = task.read_labeled(config.data.test, config.data.format) if config.data.test else []
    if not any(task.is_labeled(s) for s in sentences):
        raise ConfigError("no labeled training sentences: the label set comes from data.train")
    model: Model | None = None
    if not resume:
        seed_everything(config.train.seed)
        model = task.build_model(config.model, sentences)
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
        )

    try:
        return train(
            model,
            config,
            sentences,
            corpus,
            dev,
            test,
            make_distiller if distilling else None,
            resume,
        )
    finally:
        ddp.teardown()
