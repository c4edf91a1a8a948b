"""What makes a training run this run, so that ``--resume`` continues it and nothing else.

The fingerprint is stored in every checkpoint's ``state.json``: the run config (every key but
those that only say where or how visibly the run goes: ``out``, ``train.max_epochs``, which a
resumed run may raise, ``train.progress``, ``train.device``, ``distill.cache_dir``), the SHA-256 of
each data file's content (not its path: a moved corpus is the same corpus) and each teacher's
weights SHA-256 (not its directory). A resumed run whose fingerprint differs is refused with a
``ConfigError`` that names every differing field.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from structkd.config import ConfigError, RunConfig, to_dict
from structkd.data.resources import resolve_path
from structkd.data.unlabeled import corpus_files
from structkd.io import file_sha256

# Keys that may change between an interrupted run and its resumption.
FREE_KEYS = ("out", "train.max_epochs", "train.progress", "train.device", "distill.cache_dir")
# Keys left out of the fingerprint at their default (added after runs were fingerprinted: an
# older checkpoint, which lacks them, still resumes).
LATER_KEYS = {
    "data.unlabeled_dedup": False,
    "data.unlabeled_min_words": 0,
    "data.unlabeled_max_words": 0,
    "distill.stored": "exact",
}
# Keys fingerprinted by content instead of by value.
CONTENT_KEYS = ("data.train", "data.dev", "data.test", "data.unlabeled", "distill.teachers")


class FingerprintWarning(UserWarning):
    """A checkpoint written before fingerprints existed: its run cannot be checked."""


def _flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _digest(path: str) -> str:
    try:
        return file_sha256(Path(resolve_path(path)))
    except OSError as error:
        raise ConfigError(f"{path}: cannot read it to fingerprint the run ({error})") from error


def run_fingerprint(config: RunConfig, teacher_ids: list[str]) -> dict[str, Any]:
    """The fingerprint of a run: ``{"config": {dotted key: value}, "data": {key: digests},
    "teachers": [weights SHA-256]}``. Reads each data file once (O(bytes))."""
    flat = _flat(to_dict(config))
    data = config.data
    return {
        "config": {
            k: v
            for k, v in sorted(flat.items())
            if k not in FREE_KEYS and k not in CONTENT_KEYS and LATER_KEYS.get(k, ()) != v
        },
        "data": {
            "data.train": [_digest(p) for p in data.train],
            "data.unlabeled": [_digest(f) for p in data.unlabeled for f in corpus_files(p)],
            "data.dev": _digest(data.dev) if data.dev else None,
            "data.test": _digest(data.test) if data.test else None,
        },
        "teachers": list(teacher_ids),
    }


def differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """The fields in which two fingerprints differ, each as a short phrase."""
    found = []
    old, new = saved.get("config", {}), current.get("config", {})
    for key in sorted(set(old) | set(new)):
        if old.get(key, "<unset>") != new.get(key, "<unset>"):
            found.append(
                f"{key} ({old.get(key, '<unset>')!r} then, {new.get(key, '<unset>')!r} now)"
            )
    old_data, new_data = saved.get("data", {}), current.get("data", {})
    for key in sorted(set(old_data) | set(new_data)):
        if old_data.get(key) != new_data.get(key):
            found.append(f"{key} (other file content)")
    if saved.get("teachers") != current.get("teachers"):
        found.append("the teachers (other checkpoints)")
    return found


def check_same_run(saved: dict[str, Any], current: dict[str, Any], checkpoint: Path) -> None:
    """Raises ConfigError unless ``current`` (this invocation) matches ``saved`` (the
    checkpoint's); warns when the checkpoint has no fingerprint."""
    if not saved:
        warnings.warn(
            f"{checkpoint}: written by an older structkd without a run fingerprint; cannot "
            "check that --resume continues the same run",
            FingerprintWarning,
            3,
        )
        return
    found = differences(saved, current)
    if found:
        raise ConfigError(
            f"--resume: {checkpoint.parent.parent} was started with other settings; differs: "
            f"{'; '.join(found)}. Resume with the original settings or choose another --out"
        )
