"""On-disk cache of what distillation reads from the teachers, per training sentence.

Structural KD needs, per training sentence, the teacher's marginals of the *student's* parts
(Wang et al., ACL 2021, eq. 5), or a smaller form they are rebuilt from per batch
(``structkd.kd.stored``); they do not change during training, so they are computed once.
The cache lives in a slot named by the data and the student's structure; its content is tagged
with a key that also covers the teachers' checkpoints, the temperature, the binding and the
stored form, and a SHA-256 of every file is kept in its JSON index. A cache whose key differs (a
retrained teacher, another temperature) or whose format is older is stale; one whose checksum or
content fails is corrupt: both are reported with a ``CacheWarning`` and rebuilt.

Per sentence, every tensor is cropped to the sentence's own length (dimensions that grow with the
padded length N, found by probing the student at two lengths) and stored flat. Rows are read from
disk per batch (``structkd.train.cache_files``), never the whole cache; a cache of more than
``PART_SENTENCES`` sentences is split into part files, written as the teacher pass goes, so that
a killed pass resumes from its last complete part. docs/cache.md describes the files.

The other KD methods keep their per-sentence targets (``KDMethod.layout``), or, when their target
is the teacher's output on each batch, each teacher's encoder features (one [n, H] tensor per
sentence), in the same kind of file (named ``targets-*`` and ``features-*``, see ``Distiller``).
"""

from __future__ import annotations

import hashlib
import json
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from structkd.io import atomic_write_bytes, atomic_write_json, file_sha256, sha256
from structkd.train import ddp
from structkd.train.cache_files import CachedRows, Marginals, Part, serialize

FORMAT = 2
"""The cache layout's version; a cache of another (format 1: one file read whole, no
``format`` in its index) is stale and rebuilt."""
PART_SENTENCES = 8192
"""Sentences per part file of a large cache (one file up to this many)."""


class CacheWarning(UserWarning):
    """A teacher-marginal cache was stale or corrupt and is being rebuilt."""


def position_offsets(
    probe: Callable[[list[list[str]]], list[Tensor]],
) -> list[list[int | None]]:
    """Per marginal tensor and non-batch dimension: ``size - N`` if it grows with N, else None.

    Found by probing the student's part layout at two padded lengths and comparing shapes, so any
    layout works (e.g. a chain's pair marginals [B, N-1, L, L] -> [-1, -1, None]).

    Args:
        probe: maps sentences to tensors in the student's part layout (``KDPair.student_parts``).
    """
    with torch.no_grad():
        shapes = [[m.shape for m in probe([["x"] * n])] for n in (5, 6)]
    return [
        [a - 5 if a != b else None for a, b in zip(small[1:], large[1:])]
        for small, large in zip(*shapes)
    ]


def crop(parts: list[Tensor], b: int, length: int, offsets: list[list[int | None]]) -> Marginals:
    """Sentence b's marginals, cut to its length: float16 and bfloat16 tensors as they are (a
    stored form that halves the cache), other floats in float32."""
    out = []
    for tensor, dims in zip(parts, offsets):
        index = tuple(slice(None) if o is None else slice(0, max(length + o, 0)) for o in dims)
        row = tensor[b][index].detach()
        if row.dtype not in (torch.float16, torch.bfloat16):
            row = row.float()
        out.append(row.cpu().contiguous())
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


Compute = Callable[[list[list[int]]], dict[int, Marginals]]
"""``batches -> {sentence index: rows}``: the teacher's rows of the sentences of some batches."""


def _warn(path: Path, what: str, problem: str) -> None:
    warnings.warn(f"{what} teacher cache {path} ({problem}); rebuilding", CacheWarning, 3)


def _meta(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """A cache index (JSON beside its file), or None and what is wrong with it."""
    try:
        meta = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        return None, str(error)
    if not isinstance(meta, dict):
        return None, "its index is no mapping"
    return meta, None


def _read(path: Path, key: str, count: int) -> CachedRows | None:
    """The cached rows (``count`` of them), or None (with a warning when a cache exists but is
    unusable: unreadable, of an older format, stale, its checksums or its sentence count
    wrong). Every file's SHA-256 is checked, streamed; no data is loaded."""
    meta_path = path.with_suffix(".json")
    if not path.exists() and not meta_path.exists():
        return None
    meta, problem = _meta(path)
    if meta is None:
        _warn(path, "corrupt", str(problem))
        return None
    if meta.get("format") != FORMAT:
        found = meta.get("format", 1)
        _warn(path, "stale", f"written in format {found}, this version reads {FORMAT}")
        return None
    if meta.get("key") != key:
        _warn(path, "stale", "other teacher/settings")
        return None
    try:
        if file_sha256(path) != meta.get("sha256"):
            _warn(path, "corrupt", "checksum mismatch")
            return None
        if meta.get("sentences") != count:
            problem = f"its index counts {meta.get('sentences')!r} sentences, the data {count}"
            _warn(path, "corrupt", problem)
            return None
        return _open(path, meta, count)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as error:
        _warn(path, "corrupt", str(error) or type(error).__name__)
        return None


def _open(path: Path, meta: dict[str, Any], count: int) -> CachedRows:
    """The reader of a checked cache index.

    Raises:
        ValueError, OSError, KeyError: for a part that is missing, damaged or out of place.
    """
    listed = meta.get("parts", [])
    if not listed:  # one part: the data is in the file itself, a row per sentence in order
        part = Part(path)
        if not torch.equal(part.index, torch.arange(count)):
            raise ValueError(f"its rows are not sentences 0..{count - 1}")
        return CachedRows([part], torch.zeros(count, dtype=torch.int32), part.index.int())
    parts = []
    for entry in listed:
        file = path.parent / _parts_dir(path) / str(entry["file"])
        if file_sha256(file) != entry["sha256"]:
            raise ValueError(f"part {file.name}: checksum mismatch")
        parts.append(Part(file))
    part_of = torch.full((count,), -1, dtype=torch.int32)
    row_of = torch.zeros(count, dtype=torch.int32)
    for p, part in enumerate(parts):
        inside = (part.index >= 0) & (part.index < count)
        if not bool(inside.all()):
            raise ValueError(f"part {p} holds sentences outside 0..{count - 1}")
        part_of[part.index] = p
        row_of[part.index] = torch.arange(part.index.numel(), dtype=torch.int32)
    if bool((part_of < 0).any()):
        raise ValueError("sentences missing from every part")
    return CachedRows(parts, part_of, row_of)


def _parts_dir(path: Path) -> str:
    return f"{path.stem}.parts"


def _plan(batches: list[list[int]], part_sentences: int) -> list[list[list[int]]]:
    """Consecutive batches grouped into parts of about ``part_sentences`` sentences."""
    parts: list[list[list[int]]] = [[]]
    size = 0
    for ids in batches:
        if size >= part_sentences:
            parts.append([])
            size = 0
        parts[-1].append(ids)
        size += len(ids)
    return parts


def _progress(total: int, what: str) -> Any:
    """A progress bar (sentences/s and ETA) on a terminal, for rank 0 only."""
    enabled = sys.stderr.isatty() and ddp.rank() == 0
    return tqdm(total=total, desc=f"teacher {what}", unit=" sent", disable=not enabled)


def _run(compute: Compute, batches: list[list[int]], bar: Any) -> dict[int, Marginals]:
    rows: dict[int, Marginals] = {}
    for ids in batches:
        rows.update(compute([ids]))
        bar.update(len(ids))
    return rows


def _part_done(file: Path, part_key: str, sentences: int) -> bool:
    """Whether a part file of an earlier (killed) pass is complete and current."""
    meta, _ = _meta(file)
    try:
        return (
            meta is not None
            and meta.get("key") == part_key
            and meta.get("sentences") == sentences
            and file_sha256(file) == meta.get("sha256")
        )
    except OSError:
        return False


def cached_marginals(
    directory: Path,
    slot: dict[str, Any],
    key: dict[str, Any],
    compute: Compute,
    batches: list[list[int]],
    name: str = "marginals",
    part_sentences: int | None = None,
) -> CachedRows:
    """Reads the rows for ``key`` from the cache, or computes and stores them.

    Up to ``part_sentences`` sentences the cache is one file; beyond, its index file names part
    files (``NAME-SLOT.parts/``) of about ``part_sentences`` sentences each, written as they are
    computed, so that a killed pass resumes from its last complete part. Under ``torchrun``
    rank r computes parts r, r + world, ... (one part: batches r, r + world, ...); rank 0 writes
    the index, which every rank then reads.

    Args:
        directory: the cache directory (created if needed).
        slot: what names the file (data and student structure).
        key: everything the content depends on (slot, teachers, temperature, ...).
        compute: the rows of the sentences of some batches.
        batches: every sentence's index, in the batches the teacher runs in.
        name: what the file holds (its name's prefix), e.g. ``features`` for a teacher's
            encoder features (``Distiller``).
        part_sentences: sentences per part file (None: ``PART_SENTENCES``).
    """
    count = sum(len(b) for b in batches)
    slot_id = hashlib.sha256(json.dumps(slot, sort_keys=True).encode()).hexdigest()[:20]
    key_id = hashlib.sha256(
        json.dumps({**slot, **key, "format": FORMAT}, sort_keys=True).encode()
    ).hexdigest()
    path = Path(directory) / f"{name}-{slot_id}.safetensors"
    rows = _read(path, key_id, count)
    ddp.barrier()  # every rank has looked before anyone rewrites the file
    if rows is not None:
        return rows
    plan = _plan(batches, part_sentences or PART_SENTENCES)
    if len(plan) == 1:
        _fill_single(path, key_id, compute, batches, count, name)
    else:
        _fill_parts(path, key_id, compute, plan, count, name)
    ddp.barrier()
    rows = _read(path, key_id, count)
    if rows is None:
        raise RuntimeError(f"teacher cache {path} unreadable right after it was written")
    return rows


def _write(path: Path, data: bytes, key: str, sentences: int, **extra: Any) -> None:
    atomic_write_bytes(path, data)
    meta = {"format": FORMAT, "key": key, "sha256": sha256(data), "sentences": sentences}
    atomic_write_json(path.with_suffix(".json"), {**meta, **extra})


def _fill_single(
    path: Path, key: str, compute: Compute, batches: list[list[int]], count: int, what: str
) -> None:
    """One file, rows in sentence order (the same bytes whatever the number of ranks)."""
    rank, world = ddp.rank(), ddp.world()
    mine = batches[rank::world]
    with _progress(sum(len(b) for b in mine), what) as bar:
        part = _run(compute, mine, bar)
    if world == 1:
        _write(path, serialize([part[i] for i in range(count)], key, range(count)), key, count)
        return
    rank_file = path.with_name(f"{path.stem}.rank{rank}.safetensors")
    atomic_write_bytes(rank_file, serialize(list(part.values()), key, list(part)))
    ddp.barrier()
    if rank == 0:
        merged: dict[int, Marginals] = {}
        for r in range(world):
            other = path.with_name(f"{path.stem}.rank{r}.safetensors")
            reader = Part(other)
            with other.open("rb") as handle:
                for j, i in enumerate(reader.index.tolist()):
                    merged[i] = [t.clone() for t in reader.row(handle, j)]
            other.unlink()
        _write(path, serialize([merged[i] for i in range(count)], key, range(count)), key, count)


def _fill_parts(
    path: Path, key: str, compute: Compute, plan: list[list[list[int]]], count: int, what: str
) -> None:
    """Part files (resumed: complete current ones are kept), then the index naming them."""
    rank, world = ddp.rank(), ddp.world()
    folder = path.parent / _parts_dir(path)
    files = [f"{path.stem}-{p:05d}.safetensors" for p in range(len(plan))]
    part_keys = [
        hashlib.sha256(json.dumps([key, p, batches]).encode()).hexdigest()
        for p, batches in enumerate(plan)
    ]
    mine = list(range(rank, len(plan), world))
    sizes = [sum(len(b) for b in plan[p]) for p in range(len(plan))]
    todo = [p for p in mine if not _part_done(folder / files[p], part_keys[p], sizes[p])]
    with _progress(sum(sizes[p] for p in todo), what) as bar:
        for p in todo:
            rows = _run(compute, plan[p], bar)
            index = [i for ids in plan[p] for i in ids]
            data = serialize([rows[i] for i in index], part_keys[p], index)
            _write(folder / files[p], data, part_keys[p], sizes[p])
    ddp.barrier()
    if rank != 0:
        return
    entries = []
    for p, file in enumerate(files):
        meta, problem = _meta(folder / file)
        if meta is None:
            raise RuntimeError(f"teacher cache part {folder / file} unreadable: {problem}")
        entries.append({"file": file, "sha256": meta["sha256"], "sentences": sizes[p]})
    for stray in folder.iterdir():  # parts of an earlier plan (another batch size)
        if stray.name.split(".")[0] + ".safetensors" not in files:
            stray.unlink()
    head = serialize([], key, [])
    _write(path, head, key, count, parts=entries)
