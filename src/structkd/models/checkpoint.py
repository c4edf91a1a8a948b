"""Model checkpoints: safetensors weights + JSON config and vocabularies. Never pickle.

A model directory holds ``model.safetensors``, ``config.json`` (the task, model config,
vocabularies and the weights' SHA-256), for transformer models ``transformer/`` (tokenizer and
architecture files), and ``manifest.json``, the SHA-256 of every other file
(``structkd.models.manifest``), checked on load. Each file is written to a temporary name and
moved into place with ``os.replace``, weights first, then ``config.json``, the manifest last, so
a save killed midway never leaves a directory that loads as a different model: the checksums
catch a half-replaced set. Weights holding NaN or infinite values are refused too.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import Tensor

from structkd.config import ModelConfig, from_dict, to_dict
from structkd.io import atomic_write_bytes, atomic_write_json, sha256, temporary_directory
from structkd.models.base import Model
from structkd.models.manifest import MANIFEST, ManifestError, manifest_bytes, verify_manifest

FORMAT = "structkd-tagger"
VERSION = 1

ModelLoader = Callable[[ModelConfig, dict[str, Any], str | None], Model]
"""Rebuilds an untrained model of one family from a checkpoint's model config, its
``vocab.to_dict()`` and its transformer directory (None without a transformer)."""

LOADERS: dict[str, ModelLoader] = {}
"""Task name (``Model.task``) -> the loader of its model family, filled by ``register_loader``
where each family lives (``structkd.models.tagger``, ``structkd.models.parser``)."""


def register_loader(task: str) -> Callable[[ModelLoader], ModelLoader]:
    """Registers the function that rebuilds the models of ``task`` from their checkpoints, so
    that ``load_model`` reads any family without knowing the tasks.

    Raises:
        ValueError: if ``task`` already has a loader.
    """

    def register(loader: ModelLoader) -> ModelLoader:
        if task in LOADERS:
            raise ValueError(f"task {task!r} already has a model loader")
        LOADERS[task] = loader
        return loader

    return register


class CheckpointError(ValueError):
    """A model directory that is missing, incomplete or inconsistent."""


def tensors_to_bytes(tensors: dict[str, Tensor], metadata: dict[str, str] | None = None) -> bytes:
    """Safetensors bytes of CPU, contiguous copies (safetensors refuses shared storage)."""
    return save_safetensors(
        {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}, metadata
    )


def save_model(model: Model, directory: str | Path, manifest: bool = True) -> str:
    """Saves a model to ``directory`` (created if needed).

    Args:
        model: the model.
        directory: where its files go.
        manifest: write ``manifest.json`` (the SHA-256 of every file) last; a training
            checkpoint, which adds files of its own, writes it itself.

    Returns:
        The SHA-256 of the weights file (identifies the model, e.g. for caches).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    transformer = model.encoder.transformer
    if transformer is not None:
        tmp = temporary_directory(directory / "transformer")
        transformer.save_files(tmp)
        shutil.rmtree(directory / "transformer", ignore_errors=True)
        os.replace(tmp, directory / "transformer")
    weights = tensors_to_bytes(model.state_dict())
    digest = sha256(weights)
    atomic_write_bytes(directory / "model.safetensors", weights)
    atomic_write_json(
        directory / "config.json",
        {
            "format": FORMAT,
            "version": VERSION,
            "task": model.task,
            "model": to_dict(model.config),
            "vocab": model.vocab.to_dict(),
            "weights_sha256": digest,
        },
    )
    if manifest:
        atomic_write_bytes(directory / MANIFEST, manifest_bytes(directory))
    return digest


def read_model_config(directory: str | Path) -> dict[str, Any]:
    """The parsed ``config.json`` of a model directory.

    Raises:
        CheckpointError: if it is missing or not a structkd model.
    """
    path = Path(directory) / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{directory}: not a structkd model directory (no config.json)")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{path}: unreadable ({error})") from error
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a structkd model config")
    if meta.get("version") != VERSION:
        raise CheckpointError(f"{path}: format version {meta.get('version')}, expected {VERSION}")
    return meta


def load_model(directory: str | Path, device: torch.device | str = "cpu") -> Model:
    """Loads a model saved by ``save_model``, in eval mode, on ``device``.

    The ``task`` recorded in ``config.json`` (``ner`` when absent) names the model family, whose
    registered loader (``register_loader``) rebuilds the model.

    Raises:
        CheckpointError: if the directory is missing, incomplete or its files disagree.
    """
    directory = Path(directory)
    if not (directory / "config.json").is_file():
        read_model_config(directory)  # raises: not a model directory
    try:
        verify_manifest(directory)
    except ManifestError as error:
        raise CheckpointError(str(error)) from error
    meta = read_model_config(directory)
    weights_path = directory / "model.safetensors"
    try:
        weights = weights_path.read_bytes()
    except OSError as error:
        raise CheckpointError(f"{weights_path}: unreadable ({error})") from error
    if sha256(weights) != meta.get("weights_sha256"):
        raise CheckpointError(f"{directory}: weights do not match config.json (interrupted save?)")
    task = meta.get("task", "ner")
    loader = LOADERS.get(task) if isinstance(task, str) else None
    if loader is None:
        known = ", ".join(sorted(LOADERS))
        raise CheckpointError(f"{directory}: unknown task {task!r}; expected one of {known}")
    # A hand-edited or foreign config.json must fail as a CheckpointError, not a traceback.
    try:
        config = from_dict(ModelConfig, meta["model"], "model")
        transformer_dir = str(directory / "transformer") if config.encoder.transformer else None
        model = loader(config, meta["vocab"], transformer_dir)
        state = load_safetensors(weights)
    except (KeyError, TypeError, ValueError, SafetensorError) as error:
        raise CheckpointError(f"{directory}: inconsistent config.json ({_flat(error)})") from error
    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"{weights_path}: tensor {name} holds NaN or infinite values")
    try:
        model.load_state_dict(state)
    except RuntimeError as error:  # tensor names or shapes disagree with config.json
        message = f"{directory}: weights do not fit config.json ({_flat(error)})"
        raise CheckpointError(message) from error
    return model.to(device).eval()


def _flat(error: BaseException) -> str:
    """The error's message on one line (torch's load_state_dict message spans several)."""
    return f"{type(error).__name__}: {' '.join(str(error).split())}"
