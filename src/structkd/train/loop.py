"""The training loop: supervised training and distillation, resumable, one epoch at a time."""

from __future__ import annotations

import json
import math
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

from structkd.config import RunConfig, TrainConfig
from structkd.data.batching import bucket_batches
from structkd.io import atomic_write_bytes, atomic_write_json
from structkd.models.base import Model
from structkd.models.checkpoint import load_model, save_model
from structkd.tasks import Task
from structkd.train import ddp
from structkd.train.distill import Distiller
from structkd.train.fingerprint import check_same_run
from structkd.train.state import TrainState, last_checkpoint, load_checkpoint, save_checkpoint


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. the loss became NaN or infinite)."""


EXPLODED = 1e3
"""An epoch whose mean training loss exceeds ``EXPLODED`` times the loss of the run's first step
(an untrained model's), or ``EXPLODED`` nats when that was below 1, has diverged: the run warns.
A healthy loss stays within a few times its start: teacher annealing moves the loss from the KD
term to the gold NLL, which may start far higher than a KD loss near 0 (a sub-structure MSE of
2e-4 went to 86 in one test); a diverged teacher (lr = 1e6) reaches 1e7 from about 30."""


def _non_finite_parameter(model: nn.Module) -> str | None:
    """The name of the first parameter holding NaN or infinity, or None."""
    for name, parameter in model.named_parameters():
        if not bool(torch.isfinite(parameter).all()):
            return name
    return None


def _diverged(model: nn.Module, state: TrainState, checkpoints: Path) -> TrainingError | None:
    """A TrainingError if the last step left a non-finite weight (the next forward would fail
    on it with a ValueError deep inside a structure), else None."""
    name = _non_finite_parameter(model)
    if name is None:
        return None
    last = last_checkpoint(checkpoints)
    return TrainingError(
        f"non-finite weights ({name}) after epoch {state.epoch + 1}, step {state.step}; try a "
        f"lower train.lr. Last good checkpoint: {last if last is not None else 'none'}"
    )


def _warn_if_exploded(epoch: int, loss: float, first: Any, out: Path) -> None:
    """Warns if ``loss`` exceeds ``EXPLODED`` times ``max(first, 1)`` (``first``: the first
    step's loss, as recorded in epoch 1's log line; absent in logs of older runs)."""
    if not isinstance(first, (int, float)) or not math.isfinite(first):
        return
    scale = max(first, 1.0)
    if loss > EXPLODED * scale:
        warnings.warn(
            f"{out}: epoch {epoch}'s mean training loss {loss:.4g} is {loss / scale:.3g} times "
            f"max(1, the first step's {first:.4g}): training has diverged, and the model is not "
            "fit to be a teacher; try a lower train.lr",
            stacklevel=3,
        )


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """Adam or AdamW over the trainable parameters; with ``config.head_lr``, two groups: the
    model's ``encoder`` at ``lr``, everything else at ``head_lr``."""
    cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    params = [p for p in model.parameters() if p.requires_grad]
    encoder = getattr(model, "encoder", None)
    if config.head_lr is None or not isinstance(encoder, nn.Module):
        return cls(params, lr=config.lr, weight_decay=config.weight_decay)
    inside = {id(p) for p in encoder.parameters()}
    groups = [
        {"params": [p for p in params if id(p) in inside], "lr": config.lr},
        {"params": [p for p in params if id(p) not in inside], "lr": config.head_lr},
    ]
    return cls(groups, lr=config.lr, weight_decay=config.weight_decay)


def batch_loss(
    model: Model,
    net: nn.Module,
    batch: Any,
    indices: Sequence[int],
    distiller: Distiller | None,
    lam: float,
) -> Tensor:
    """Mean per-sentence loss: gold NLL, or ``lam KD + (1 - lam) NLL`` for a labeled sentence and
    ``w KD`` for an unlabeled one (``w``: ``distill.unlabeled_weight``)."""
    output = net(batch)  # through the DDP wrapper when distributed
    nll = model.nll(batch, output)  # [B]
    labeled = batch.labeled.to(nll.device)
    if distiller is None:
        return nll.sum() / labeled.sum().clamp(min=1)
    kd_loss = distiller.losses(output, batch, indices)  # [B]
    weight = distiller.config.unlabeled_weight
    unlabeled = kd_loss if weight == 1.0 else weight * kd_loss
    return torch.where(labeled, lam * kd_loss + (1 - lam) * nll, unlabeled).mean()


def progress_enabled(config: TrainConfig) -> bool:
    return config.progress and sys.stderr.isatty() and ddp.rank() == 0


def say(line: str) -> None:
    """Prints one line of a run's console report (rank 0 only), flushed at once, so that it
    reaches a pipe or a log file as it happens, not at exit."""
    if ddp.rank() == 0:
        print(line, flush=True)


def run_summary(
    task: Task,
    model: Model,
    config: RunConfig,
    sentences: Sequence[Any],
    dev: Sequence[Any],
    test: Sequence[Any],
    teachers: int,
    resumed_at: int,
) -> str:
    """The start-of-run line: task, model size, data sizes, device and output directory."""
    labeled = sum(1 for s in sentences if task.is_labeled(s))
    size = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = f" ({size - trainable:,} frozen)" if trainable != size else ""
    kd = f", {config.distill.method} KD from {teachers} teacher(s)" if teachers else ""
    return (
        f"{task.name}: {type(model).__name__} with {size:,} parameters{frozen}{kd}; "
        f"train {labeled:,} labeled + {len(sentences) - labeled:,} unlabeled sentences, "
        f"dev {len(dev):,}, test {len(test):,}; device {config.train.device}; "
        f"{config.train.max_epochs} epochs at most"
        + (f", resuming after epoch {resumed_at}" if resumed_at else "")
        + f"; output {config.out}"
    )


def epoch_line(record: dict[str, Any], max_epochs: int, task: Task) -> str:
    """One line per epoch: ``epoch 3/30  loss 1.2345  dev f1 45.67  12.3 s``."""
    line = f"epoch {record['epoch']}/{max_epochs}  loss {record['loss']:.4f}"
    name = task.log_metrics[0]
    value = record.get(f"dev_{name}")
    if value is not None:
        line += f"  dev {name} {value:.2f}"
    return line + f"  {record['train_seconds']:.1f} s"


def _write_log(out: Path, history: list[dict[str, Any]]) -> None:
    lines = "".join(json.dumps(record) + "\n" for record in history)
    atomic_write_bytes(out / "train_log.jsonl", lines.encode("utf-8"))


def _final_metrics(
    task: Task, config: RunConfig, dev: Sequence[Any], test: Sequence[Any]
) -> dict[str, Any]:
    out = Path(config.out)
    best = load_model(out / "model", config.train.device)
    metrics: dict[str, Any] = {}
    for name, sentences in (("dev", dev), ("test", test)):
        if sentences:
            scores = task.evaluate(best, sentences, config.data.include_punct)
            metrics[name] = {k: scores[k] for k in task.report_metrics}
            metrics[name]["tokens_per_second"] = scores["tokens_per_second"]
    atomic_write_json(out / "metrics.json", metrics)
    return metrics


def _extend_or_say_finished(state: TrainState, cfg: TrainConfig, out: Path) -> None:
    """A resumed run that had finished goes on if ``max_epochs`` grew (not after early
    stopping); one with nothing left to train says so."""
    early = bool(cfg.patience and state.bad_epochs >= cfg.patience)
    if state.finished and not early and state.epoch < cfg.max_epochs:
        state.finished = False
    elif state.finished or state.epoch >= cfg.max_epochs:
        why = f"stopped early after {state.bad_epochs} epochs without a better dev score"
        warnings.warn(
            f"{out}: the run is finished at epoch {state.epoch} "
            f"({why if early else f'max_epochs {cfg.max_epochs}'}); nothing more to train"
            + ("" if early else ": pass a larger --max-epochs to continue it"),
            stacklevel=3,
        )


def train(
    task: Task,
    model: Model | None,
    config: RunConfig,
    sentences: Sequence[Any],
    corpus: Sequence[int],
    dev: Sequence[Any],
    test: Sequence[Any],
    distiller_factory: Callable[[Model], Distiller] | None = None,
    resume: bool = False,
    fingerprint: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Trains a model of ``task`` (``config.task``'s) and writes everything under ``config.out``.

    Writes ``model/`` (best by the task's dev score, or the last model without a dev set),
    ``checkpoints/`` (after every epoch, for ``resume``), ``train_log.jsonl`` (one line per
    epoch) and ``metrics.json`` (``{"dev": ..., "test": ...}``). The run is deterministic for a
    seed on CPU, and a resumed run ends exactly where an uninterrupted one does.

    Args:
        task: what reads, collates and scores the model's data.
        model: a fresh model (built after seeding), or None when resuming.
        config: the run config.
        sentences: training sentences, labeled and (for distillation) unlabeled.
        corpus: corpus id per training sentence (teacher binding; batches never mix corpora).
        dev: development sentences (model selection and early stopping); may be empty.
        test: test sentences, evaluated with the best model at the end; may be empty.
        distiller_factory: builds the KD objective for the student (None = supervised).
        resume: continue from ``OUT/checkpoints``: the same run (``fingerprint``), up to
            ``config.train.max_epochs``, which may be larger than the first time (a run that
            stopped early, or has no epochs left, says so and trains no more).
        fingerprint: what identifies the run (``structkd.train.fingerprint``); stored in
            every checkpoint, and compared with the checkpoint's when resuming.

    Returns:
        The metrics written to ``metrics.json``.

    Raises:
        TrainingError: on a non-finite loss (the last good checkpoint is kept).
        ConfigError: when resuming with a fingerprint that differs from the checkpoint's.
    """
    cfg, out = config.train, Path(config.out)
    checkpoints = out / "checkpoints"
    if resume:
        path = last_checkpoint(checkpoints)
        if path is None:
            raise FileNotFoundError(f"nothing to resume: no checkpoint in {checkpoints}")
        model, optimizer, state = load_checkpoint(
            path, lambda m: make_optimizer(m, cfg), cfg.device
        )
        if fingerprint is not None:
            check_same_run(state.fingerprint, fingerprint, path)
        _extend_or_say_finished(state, cfg, out)
    else:
        assert model is not None
        model = model.to(cfg.device)
        optimizer, state = make_optimizer(model, cfg), TrainState(fingerprint=fingerprint or {})
    with torch.random.fork_rng(devices=[]):  # a resumed run must not draw differently
        distiller = distiller_factory(model) if distiller_factory is not None else None
    teachers = len(distiller.teachers) if distiller is not None else 0
    say(run_summary(task, model, config, sentences, dev, test, teachers, state.epoch))
    net = ddp.wrap(model)
    lengths = [len(s) for s in sentences]
    # Every rank must take the same number of steps (DDP all-reduces each backward).
    steps_per_epoch = len(bucket_batches(lengths, cfg.batch_size, 0, corpus)) // ddp.world()
    total_steps = steps_per_epoch * cfg.max_epochs
    first_step_loss = math.nan  # the loss of the untrained model, recorded in epoch 1's log
    while not state.finished and state.epoch < cfg.max_epochs:
        model.train()
        batches = bucket_batches(lengths, cfg.batch_size, cfg.seed * 7919 + state.epoch, corpus)
        batches = batches[ddp.rank() :: ddp.world()][:steps_per_epoch]
        total = 0.0
        started = time.perf_counter()
        bar = tqdm(batches, desc=f"epoch {state.epoch + 1}", disable=not progress_enabled(cfg))
        for indices in bar:
            batch = task.collate(model, [sentences[i] for i in indices])
            lam = distiller.weight(state.step, total_steps) if distiller is not None else 0.0
            try:
                loss = batch_loss(model, net, batch, indices, distiller, lam)
            except ValueError:  # e.g. "emissions contains NaN": say why when weights diverged
                error = _diverged(model, state, checkpoints)
                if error is None:
                    raise
                raise error from None
            if state.step == 0:
                first_step_loss = loss.item()
            if not math.isfinite(loss.item()):
                last = last_checkpoint(checkpoints)
                raise TrainingError(
                    f"non-finite loss ({loss.item()}) at epoch {state.epoch + 1}, step "
                    f"{state.step + 1}; try a lower train.lr. Last good checkpoint: "
                    f"{last if last is not None else 'none (first epoch)'}"
                )
            optimizer.zero_grad()
            loss.backward()
            if cfg.clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
            optimizer.step()
            state.step += 1
            total += loss.item()
            bar.set_postfix(loss=f"{loss.item():.3f}")
        record: dict[str, Any] = {
            "epoch": state.epoch + 1,
            "step": state.step,
            "loss": total / max(len(batches), 1),
            "train_seconds": round(time.perf_counter() - started, 3),  # updates only, no dev eval
        }
        if state.epoch == 0 and batches:
            record["first_step_loss"] = first_step_loss
        if distiller is not None:
            record["lambda"] = distiller.weight(state.step, total_steps)
            record.update(distiller.epoch_stats())
        diverged = _diverged(model, state, checkpoints)
        if diverged is not None:
            raise diverged
        first = (state.history or [record])[0].get("first_step_loss")
        _warn_if_exploded(state.epoch + 1, record["loss"], first, out)
        improved = True
        if dev:
            scores = task.evaluate(model, dev, config.data.include_punct)
            record.update({f"dev_{k}": scores[k] for k in task.log_metrics})
            improved = task.selection_score(scores) > state.best_score
            if improved:
                state.best_score = task.selection_score(scores)
        state.bad_epochs = 0 if improved else state.bad_epochs + 1
        state.epoch += 1
        state.history.append(record)
        say(epoch_line(record, cfg.max_epochs, task))
        state.finished = bool(cfg.patience and state.bad_epochs >= cfg.patience)
        state.finished = state.finished or state.epoch >= cfg.max_epochs
        if ddp.rank() == 0:
            if improved:
                save_model(model, out / "model")
            save_checkpoint(checkpoints, model, optimizer, state)
            _write_log(out, state.history)
    ddp.barrier()
    if ddp.rank() != 0:
        return {}
    return _final_metrics(task, config, dev, test)
