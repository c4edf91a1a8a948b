"""The ``--device`` of ``train``, ``distill``, ``evaluate``, ``predict`` and ``speed``, checked.

A device the machine does not have would otherwise fail deep inside torch with a long
traceback (or, for ``cuda:7`` on a one-GPU machine, only at the first tensor moved there); this
module turns that into one :class:`~structkd.config.ConfigError` line before anything runs.
"""

from __future__ import annotations

import torch

from structkd.config import ConfigError

__all__ = ["check_device"]

_KINDS = "cpu, cuda, cuda:N or mps"


def check_device(name: str) -> str:
    """``name`` if this machine has that torch device, e.g. ``cpu``, ``cuda``, ``cuda:1``, ``mps``.

    Raises:
        ConfigError: for a name that is no device (``gpu``), a kind this build of torch or this
            machine lacks (``cuda`` without a GPU, ``mps`` off Apple silicon), or a GPU index
            past the last one.
    """
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(f"device {name!r}: expected {_KINDS}") from None
    if device.type == "cpu":
        return name
    if device.type == "cuda":
        if not torch.cuda.is_available():
            built = "has no CUDA support" if torch.version.cuda is None else "finds no GPU"
            raise ConfigError(f"device {name!r} is not available: this torch build {built}")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ConfigError(
                f"device {name!r} is not available: this machine has {count} GPU(s), "
                f"cuda:0 to cuda:{count - 1}"
            )
        return name
    if device.type == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError(f"device {name!r} is not available: no Apple MPS on this machine")
        return name
    raise ConfigError(f"device {name!r}: expected {_KINDS}")
