"""Data-parallel training with ``torchrun``: process group set-up and small helpers.

Started by ``torchrun --nproc_per_node=N -m structkd distill ...``: every rank trains on its share
of the batches inside ``DistributedDataParallel`` (gloo on CPU, nccl on GPU), which averages the
gradients; rank 0 alone writes checkpoints, logs and metrics. Without ``torchrun`` (no
``WORLD_SIZE`` > 1) everything here is a no-op, so the single-process path is unchanged.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if active() else 0


def world() -> int:
    return dist.get_world_size() if active() else 1


def setup(device: str) -> str:
    """Joins the ``torchrun`` process group if launched by it; returns this rank's device.

    On GPU each rank takes the device of its ``LOCAL_RANK``.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or active():
        return device
    cuda = device.startswith("cuda")
    dist.init_process_group("nccl" if cuda else "gloo")
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return f"cuda:{local}"
    return device


def wrap(model: nn.Module) -> nn.Module:
    """``model`` inside DistributedDataParallel when distributed, else itself."""
    if not active():
        return model
    device = next(model.parameters()).device
    device_ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def rank0_ok(ok: bool) -> bool:
    """Whether rank 0 reported ``ok`` (every rank gets rank 0's value; ``ok`` elsewhere)."""
    if not active():
        return ok
    flag = [ok]
    dist.broadcast_object_list(flag, src=0)
    return bool(flag[0])


def barrier() -> None:
    if active():
        dist.barrier()


def teardown() -> None:
    if active():
        dist.destroy_process_group()
