"""Resumable training state: model, optimizer and RNG state after each epoch, without pickle.

``OUT/checkpoints/epoch-NNNN/`` holds a model directory (see ``structkd.models.checkpoint``) plus
``optimizer.safetensors`` (optimizer and RNG tensors), ``state.json`` (counters, history, the
run's fingerprint, optimizer hyper-parameters, Python RNG) and, written last, ``manifest.json``
(the SHA-256 of each of these files, checked on load). The directory is written under a
temporary name and renamed; the ``LAST`` file, replaced atomically afterwards, names the newest
complete one. A run killed at any moment therefore resumes from the last finished epoch.
Counters out of range, non-finite optimizer values and a ``LAST`` that names no checkpoint are
refused with a ``CheckpointError`` naming the file.
"""

from __future__ import annotations

import json
import math
import random
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from torch import Tensor

from structkd.io import atomic_write_bytes, atomic_write_json, temporary_directory
from structkd.models.base import Model
from structkd.models.checkpoint import (
    CheckpointError,
    load_model,
    save_model,
    tensors_to_bytes,
)
from structkd.models.manifest import MANIFEST, manifest_bytes


@dataclass
class TrainState:
    """Counters of a training run (everything but tensors).

    Attributes:
        epoch: the next epoch to run (0-based).
        step: optimizer steps taken.
        best_score: best dev score so far (the task's ``selection_score``; -1 before any).
        bad_epochs: epochs since the best one.
        finished: training is over (max epochs or early stop).
        history: one log record per finished epoch.
        fingerprint: what makes the run this run (``structkd.train.fingerprint``): a resumed
            run must match it. Empty in checkpoints written before fingerprints existed.
    """

    epoch: int = 0
    step: int = 0
    best_score: float = -1.0
    bad_epochs: int = 0
    finished: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)
    fingerprint: dict[str, Any] = field(default_factory=dict)


def _check_state(state: TrainState, path: Path) -> None:
    """Raises CheckpointError naming ``path`` unless every counter has its type and range."""

    def count(name: str, value: Any) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise CheckpointError(f"{path}: state.{name} must be an integer >= 0, not {value!r}")

    for name in ("epoch", "step", "bad_epochs"):
        count(name, getattr(state, name))
    score = state.best_score
    if not isinstance(score, (int, float)) or isinstance(score, bool) or not math.isfinite(score):
        raise CheckpointError(f"{path}: state.best_score must be a finite number, not {score!r}")
    if not isinstance(state.finished, bool):
        raise CheckpointError(f"{path}: state.finished must be true or false")
    history = state.history
    if not isinstance(history, list) or not all(isinstance(r, dict) for r in history):
        raise CheckpointError(f"{path}: state.history must be a list of epoch records")
    if len(history) != state.epoch:
        raise CheckpointError(
            f"{path}: state.history has {len(history)} records for {state.epoch} epochs"
        )
    if not isinstance(state.fingerprint, dict):
        raise CheckpointError(f"{path}: state.fingerprint must be a mapping")


def _rng_tensors() -> dict[str, Tensor]:
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, rng in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = rng
    return tensors


def _optimizer_parts(optimizer: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Splits an optimizer state dict into tensors and JSON-able values."""
    state = optimizer.state_dict()
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, values in state["state"].items():
        for name, value in values.items():
            if isinstance(value, Tensor):
                tensors[f"optimizer.{index}.{name}"] = value
            else:
                scalars.setdefault(str(index), {})[name] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _restore_optimizer(
    optimizer: torch.optim.Optimizer, tensors: dict[str, Tensor], meta: dict[str, Any]
) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    for index, values in meta["scalars"].items():
        state.setdefault(int(index), {}).update(values)
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_checkpoint(
    directory: Path, model: Model, optimizer: torch.optim.Optimizer, state: TrainState
) -> Path:
    """Writes a complete epoch checkpoint under ``directory`` and points ``LAST`` at it.

    Older epoch checkpoints, and any a killed process left half-written, are removed afterwards.
    Returns the new checkpoint's path.
    """
    directory.mkdir(parents=True, exist_ok=True)
    name = f"epoch-{state.epoch:04d}"
    tmp = temporary_directory(directory / name)
    save_model(model, tmp, manifest=False)
    tensors, meta = _optimizer_parts(optimizer)
    optimizer_bytes = tensors_to_bytes({**tensors, **_rng_tensors()})
    atomic_write_bytes(tmp / "optimizer.safetensors", optimizer_bytes)
    python_rng = random.getstate()
    atomic_write_json(
        tmp / "state.json",
        {
            "state": asdict(state),
            "optimizer": meta,
            "python_rng": [python_rng[0], list(python_rng[1]), python_rng[2]],
        },
    )
    atomic_write_bytes(tmp / MANIFEST, manifest_bytes(tmp))  # last: it covers every file above
    final = directory / name
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    atomic_write_bytes(directory / "LAST", name.encode())
    # older checkpoints, and half-written ones (".epoch-*") left by a process killed mid-write
    for old in [*directory.glob("epoch-*"), *directory.glob(".epoch-*")]:
        if old.name != name:
            shutil.rmtree(old, ignore_errors=True)
    return final


def last_checkpoint(directory: Path) -> Path | None:
    """The newest complete epoch checkpoint, or None if there is none.

    Raises:
        CheckpointError: if ``LAST`` exists but does not name an existing checkpoint.
    """
    pointer = directory / "LAST"
    if not pointer.is_file():
        return None
    try:
        name = pointer.read_bytes().decode("ascii").strip()
    except (OSError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{pointer}: unreadable ({error})") from error
    if not re.fullmatch(r"epoch-\d{4,}", name):
        raise CheckpointError(f"{pointer}: does not name a checkpoint (expected epoch-NNNN)")
    path = directory / name
    if not path.is_dir():  # checkpoints are removed only after LAST names a newer one
        raise CheckpointError(
            f"{pointer}: names {name}, which does not exist (removed by hand?); restore it, or "
            f"remove {directory} to start the run over"
        )
    return path


def load_checkpoint(
    path: Path, optimizer_factory: Any, device: torch.device | str = "cpu"
) -> tuple[Model, torch.optim.Optimizer, TrainState]:
    """Restores model, optimizer, counters and RNG state from an epoch checkpoint.

    Args:
        path: an ``epoch-NNNN`` directory.
        optimizer_factory: builds a fresh optimizer for a model (its state is then loaded).
        device: where the model goes.

    Raises:
        CheckpointError: if the checkpoint is incomplete or inconsistent.
    """
    model = load_model(path, device).train()  # checks the manifest of every file here
    try:
        meta = json.loads((path / "state.json").read_text(encoding="utf-8"))
        tensors = load_safetensors((path / "optimizer.safetensors").read_bytes())
    except (OSError, ValueError, SafetensorError) as error:
        raise CheckpointError(f"{path}: incomplete training checkpoint ({error})") from error
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(
                f"{path / 'optimizer.safetensors'}: {name} holds NaN or infinite values"
            )
    try:
        optimizer = optimizer_factory(model)
        _restore_optimizer(optimizer, tensors, meta["optimizer"])
        torch.set_rng_state(tensors["rng.torch"])
        cuda = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
        if cuda and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(cuda)
        version, internal, gauss = meta["python_rng"]
        random.setstate((version, tuple(internal), gauss))
        state = TrainState(**meta["state"])
        _check_state(state, path / "state.json")
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise CheckpointError(
            f"{path}: inconsistent training checkpoint ({type(error).__name__}: {error})"
        ) from error
    return model, optimizer, state
