"""On-disk cache of teacher marginals projected onto the student's parts.

Structural KD needs, per training sentence, the teacher's marginals of the *student's* parts
(Wang et al., ACL 2021, eq. 5); they do not change during training, so they are computed once.
The file lives in a slot named by the data and the student's structure; its content is tagged
with a key that also covers the teachers' checkpoints, the temperature and the binding, and a
SHA-256 of the file is kept beside it. A cache whose key differs (a retrained teacher, another
temperature) is stale; one whose checksum or content fails is corrupt: both are reported with a
``CacheWarning`` and rebuilt.

Per sentence, every marginal tensor is cropped to the sentence's own length (dimensions that grow
with the padded length N, found by probing the student at two lengths) and stored flat.

The other KD methods keep each teacher's encoder features (one [n, H] tensor per sentence) in the
same kind of file (named ``features-*``, see ``Distiller``), so that only the teacher's head runs
on each batch.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from torch import Tensor, nn

from structkd.models.checkpoint import atomic_write, atomic_write_json, sha256, tensors_to_bytes
from structkd.train import ddp

Marginals = list[Tensor]  # one sentence's marginal tensors, cropped to its length


class CacheWarning(UserWarning):
    """A teacher-marginal cache was stale or corrupt and is being rebuilt."""


def as_list(parts: Any) -> list[Tensor]:
    """Part marginals (a tensor or a tuple of tensors) as a list."""
    return list(parts) if isinstance(parts, (tuple, list)) else [parts]


M = TypeVar("M", bound=nn.Module)


@contextmanager
def evaluating(model: M) -> Iterator[M]:
    """``model`` in eval mode for the block (no dropout, so no draw from the global RNG)."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def position_offsets(
    probe: Callable[[list[list[str]]], list[Tensor]],
) -> list[list[int | None]]:
    """Per marginal tensor and non-batch dimension: ``size - N`` if it grows with N, else None.

    Found by probing the student's part layout at two padded lengths and comparing shapes, so any
    layout works (e.g. a chain's pair marginals [B, N-1, L, L] -> [-1, -1, None]).

    Args:
        probe: maps sentences to tensors in the student's part layout (``Task.student_parts``).
    """
    with torch.no_grad():
        shapes = [[m.shape for m in probe([["x"] * n])] for n in (5, 6)]
    return [
        [a - 5 if a != b else None for a, b in zip(small[1:], large[1:])]
        for small, large in zip(*shapes)
    ]


def crop(parts: list[Tensor], b: int, length: int, offsets: list[list[int | None]]) -> Marginals:
    """Sentence b's marginals, cut to its length."""
    out = []
    for tensor, dims in zip(parts, offsets):
        index = tuple(slice(None) if o is None else slice(0, max(length + o, 0)) for o in dims)
        out.append(tensor[b][index].detach().float().cpu().contiguous())
    return out


def pad_batch(
    rows: Sequence[Marginals], max_len: int, offsets: list[list[int | None]], like: Tensor
) -> Any:
    """Stacks cropped marginals into the student's batched layout for padded length ``max_len``.

    Returns a tensor, or a tuple of tensors when the student has several kinds of parts.
    """
    stacked = []
    for c, dims in enumerate(offsets):
        first = rows[0][c]
        size = [d if o is None else max(max_len + o, 0) for d, o in zip(first.shape, dims)]
        out = like.new_zeros([len(rows), *size])
        for b, row in enumerate(rows):
            index: tuple[int | slice, ...] = (b, *(slice(0, s) for s in row[c].shape))
            out[index] = row[c].to(like)
        stacked.append(out)
    return stacked[0] if len(stacked) == 1 else tuple(stacked)


def data_hash(sentences: Sequence[Sequence[str]], corpus: Sequence[int]) -> str:
    """SHA-256 of the sentences' words and corpus ids, in order."""
    digest = hashlib.sha256()
    for tokens, c in zip(sentences, corpus):
        digest.update(json.dumps([c, list(tokens)], ensure_ascii=False).encode("utf-8"))
    return digest.hexdigest()


def _serialize(rows: Sequence[Marginals], key: str, index: Sequence[int] = ()) -> bytes:
    tensors: dict[str, Tensor] = {"index": torch.tensor(list(index), dtype=torch.long)}
    for c in range(len(rows[0]) if rows else 0):
        tensors[f"c{c}.data"] = torch.cat([r[c].flatten() for r in rows])
        tensors[f"c{c}.shapes"] = torch.tensor([list(r[c].shape) for r in rows], dtype=torch.long)
    return tensors_to_bytes(tensors, {"key": key, "sentences": str(len(rows))})


def _write(path: Path, rows: Sequence[Marginals], key: str) -> None:
    data = _serialize(rows, key)
    atomic_write(path, data)
    meta = {"key": key, "sha256": sha256(data), "sentences": len(rows)}
    atomic_write_json(path.with_suffix(".json"), meta)


def _deserialize(tensors: dict[str, Tensor], count: int) -> list[Marginals]:
    """The rows of a serialized cache.

    Raises:
        ValueError: if the file does not hold ``count`` rows whose shapes fill its data exactly.
    """
    rows: list[Marginals] = [[] for _ in range(count)]
    c = 0
    while f"c{c}.data" in tensors:
        data, shapes = tensors[f"c{c}.data"], tensors[f"c{c}.shapes"]
        rows_found = shapes.shape[0] if shapes.dim() else 0
        if rows_found != count or (count and shapes.dim() != 2):
            raise ValueError(f"{rows_found} rows, expected {count}")
        start = 0
        for i, shape in enumerate(shapes.tolist()):
            size = 1
            for d in shape:
                size *= d
            if min(shape, default=0) < 0 or start + size > data.numel():
                raise ValueError(f"row {i}'s shape {shape} runs past the data")
            rows[i].append(data[start : start + size].reshape(shape))
            start += size
        if start != data.numel():
            raise ValueError(f"{data.numel() - start} values beyond the last row")
        c += 1
    return rows


def _read(path: Path, key: str, count: int) -> list[Marginals] | None:
    """The cached rows (``count`` of them), or None (with a warning when a cache exists but is
    unusable: unreadable, stale, its checksum or its sentence count wrong)."""
    meta_path = path.with_suffix(".json")
    if not path.exists() and not meta_path.exists():
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        data = path.read_bytes()
    except (OSError, ValueError) as error:
        warnings.warn(f"corrupt teacher cache {path} ({error}); rebuilding", CacheWarning, 2)
        return None
    if not isinstance(meta, dict):
        warnings.warn(
            f"corrupt teacher cache {path} (its index is no mapping); rebuilding", CacheWarning, 2
        )
        return None
    if meta.get("key") != key:
        warnings.warn(
            f"stale teacher cache {path} (other teacher/settings); rebuilding", CacheWarning, 2
        )
        return None
    if sha256(data) != meta.get("sha256"):
        warnings.warn(
            f"corrupt teacher cache {path} (checksum mismatch); rebuilding", CacheWarning, 2
        )
        return None
    if meta.get("sentences") != count:
        warnings.warn(
            f"corrupt teacher cache {path} (its index counts {meta.get('sentences')!r} "
            f"sentences, the data {count}); rebuilding",
            CacheWarning,
            2,
        )
        return None
    try:
        return _deserialize(load_safetensors(data), count)
    except (SafetensorError, ValueError, KeyError, RuntimeError) as error:
        warnings.warn(f"corrupt teacher cache {path} ({error}); rebuilding", CacheWarning, 2)
        return None


def cached_marginals(
    directory: Path,
    slot: dict[str, Any],
    key: dict[str, Any],
    compute: Callable[[int, int], dict[int, Marginals]],
    count: int,
    name: str = "marginals",
) -> list[Marginals]:
    """Loads the marginals for ``key`` from the cache, or computes and stores them.

    Under ``torchrun`` every rank computes a shard; rank 0 merges the shards into the cache,
    which the other ranks then read.

    Args:
        directory: the cache directory (created if needed).
        slot: what names the file (data and student structure).
        key: everything the content depends on (slot, teachers, temperature, ...).
        compute: ``(shard, shards) -> {sentence index: marginals}`` for one shard of the data.
        count: the number of sentences.
        name: what the file holds (its name's prefix), e.g. ``features`` for a teacher's
            encoder features (``Distiller``).
    """
    slot_id = hashlib.sha256(json.dumps(slot, sort_keys=True).encode()).hexdigest()[:20]
    key_id = hashlib.sha256(json.dumps({**slot, **key}, sort_keys=True).encode()).hexdigest()
    path = Path(directory) / f"{name}-{slot_id}.safetensors"
    rows = _read(path, key_id, count)
    ddp.barrier()  # every rank has looked before anyone rewrites the file
    if rows is not None:
        return rows
    rank, world = ddp.rank(), ddp.world()
    part = compute(rank, world)
    if world == 1:
        rows = [part[i] for i in range(count)]
        _write(path, rows, key_id)
        return rows
    shard = path.with_name(f"{path.stem}.shard{rank}.safetensors")
    atomic_write(shard, _serialize(list(part.values()), key_id, list(part)))
    ddp.barrier()
    if rank == 0:
        merged: dict[int, Marginals] = {}
        for r in range(world):
            other = path.with_name(f"{path.stem}.shard{r}.safetensors")
            tensors = load_safetensors(other.read_bytes())
            index = tensors["index"].tolist()
            merged.update(zip(index, _deserialize(tensors, len(index))))
            other.unlink()
        _write(path, [merged[i] for i in range(count)], key_id)
    ddp.barrier()
    rows = _read(path, key_id, count) if rank != 0 else [merged[i] for i in range(count)]
    if rows is None:
        raise RuntimeError(f"teacher cache {path} missing after rank 0 wrote it")
    return rows
