"""Length-bucketed batching: sentences of similar length share a batch, to waste little padding.

Only indices are produced; tensors are built per batch by the task (``Task.collate``), and no
state is ever written onto sentence objects.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def bucket_batches(
    lengths: Sequence[int],
    batch_size: int,
    seed: int | None = None,
    groups: Sequence[int] | None = None,
) -> list[list[int]]:
    """Splits sentence indices into batches of similar length.

    Sentences are sorted by length (ties in a random order when ``seed`` is given), cut into
    batches of ``batch_size``, and the batch order is shuffled. The result depends only on the
    arguments, so a resumed run sees the same batches as an uninterrupted one.

    Args:
        lengths: sentence lengths.
        batch_size: sentences per batch (> 0).
        seed: shuffling seed; None keeps sorted order (evaluation).
        groups: a group id per sentence (e.g. its corpus); batches never mix groups.

    Returns:
        Lists of indices into ``lengths``. O(S log S).
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    count = len(lengths)
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    order = torch.randperm(count, generator=gen).tolist() if gen is not None else range(count)
    group_of = groups if groups is not None else [0] * count
    ranked = sorted(order, key=lambda i: (group_of[i], lengths[i]))
    batches: list[list[int]] = []
    for i in ranked:
        last = batches[-1] if batches else None
        if last is None or len(last) == batch_size or group_of[last[0]] != group_of[i]:
            batches.append([i])
        else:
            last.append(i)
    if gen is not None:
        batches = [batches[i] for i in torch.randperm(len(batches), generator=gen).tolist()]
    return batches
