"""Distillation on large unlabeled corpora (issue 16): cache size, annotation speed, memory.

Synthetic unlabeled corpora (generated here, never committed: a 2,000-word random vocabulary,
sentence lengths uniform in 4..24, mean 14), a small BiLSTM-CRF teacher (untrained: speed and
memory do not depend on its weights) and two students, a BiLSTM-CRF (case 1a) and a BiLSTM-MaxEnt
(case 2a), 17 BIOES tags (4 entity types). Every measurement runs in a fresh process, so that
its peak resident set size (``ru_maxrss``) is its own:

* annotate: the teacher pass that fills the cache (``Distiller``), 1 process or 2 (``torchrun``,
  gloo): sentences/s, the cache's bytes per token, peak RSS;
* predict: the teacher's plain prediction (Viterbi) on the same sentences and batch size, the
  speed annotation is compared with;
* train: a bounded number of training steps (forward, loss, backward, Adam) on the cached
  corpus, each batch once with Structural KD from the cache and once with a gold NLL (tags all
  ``O``) instead, interleaved: median ms per batch of each, and the peak RSS of the process
  (corpus, cache index, models, batches).

    python benchmarks/scale.py --work /tmp/scale --sizes 10000 100000 1000000 \\
        --report benchmarks/README.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).parent.parent
BATCH = 32
SECTION = "Large unlabeled corpora (issue 16)"


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _vocabulary(seed: int = 0, size: int = 2000) -> list[str]:
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    return ["".join(rng.choices(letters, k=rng.randint(2, 9))) for _ in range(size)]


def write_corpus(path: Path, sentences: int, seed: int = 1) -> None:
    """One sentence a line; Zipf-like word frequencies."""
    rng = random.Random(seed)
    vocab = _vocabulary()
    weights = [1.0 / (r + 1) for r in range(len(vocab))]
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as out:
        for _ in range(sentences):
            out.write(" ".join(rng.choices(vocab, weights, k=rng.randint(4, 24))) + "\n")
    tmp.replace(path)


def build_models(work: Path) -> None:
    """Teacher and students, vocabularies from a 2,000-sentence sample with random BIOES tags."""
    from structkd.config import EncoderConfig, HeadConfig, ModelConfig
    from structkd.models.checkpoint import save_model
    from structkd.models.tagger import build_tagger

    rng = random.Random(2)
    vocab = _vocabulary()
    types = ["PER", "LOC", "ORG", "MISC"]
    tokens, tags = [], []
    for _ in range(2000):
        words = rng.choices(vocab, k=rng.randint(4, 24))
        labels = ["O"] * len(words)
        start = rng.randrange(len(words) - 2)
        kind = rng.choice(types)
        labels[start : start + 3] = [f"B-{kind}", f"I-{kind}", f"E-{kind}"]
        labels[-1] = f"S-{rng.choice(types)}"
        tokens.append(words)
        tags.append(labels)
    sizes = {
        "teacher": dict(word_dim=50, char_filters=0, lstm_hidden=64, kind="crf"),
        "student-crf": dict(word_dim=30, char_filters=0, lstm_hidden=32, kind="crf"),
        "student-maxent": dict(word_dim=30, char_filters=0, lstm_hidden=32, kind="maxent"),
    }
    for name, size in sizes.items():
        kind = size.pop("kind")
        config = ModelConfig(EncoderConfig(**size), HeadConfig(kind=kind))  # type: ignore[arg-type]
        torch.manual_seed(len(name))
        save_model(build_tagger(config, tokens, tags), work / name)


def _words(corpus: Path, limit: int | None = None) -> list[list[str]]:
    from structkd.tasks import get_task

    task = get_task("ner")
    out = []
    for sentence in task.iter_unlabeled(str(corpus)):
        out.append(sentence.tokens)
        if limit is not None and len(out) == limit:
            break
    return out


def _distiller(
    work: Path, student_name: str, words: list[list[str]], cache: Path, stored: str
) -> Any:
    from structkd.config import DistillConfig
    from structkd.models.checkpoint import load_model
    from structkd.train.distill import Distiller

    teacher = load_model(work / "teacher")
    student = load_model(work / student_name)
    config = DistillConfig(anneal=False, lam=1.0, stored=stored)  # type: ignore[arg-type]
    corpus = [0] * len(words)
    return Distiller([teacher], config, words, corpus, student, cache, ["teacher"], BATCH)


def worker_annotate(args: dict[str, Any]) -> dict[str, Any]:
    from structkd.train import ddp

    ddp.setup("cpu")
    words = _words(Path(args["corpus"]))
    ddp.barrier()
    start = time.perf_counter()
    distiller = _distiller(
        Path(args["work"]), args["student"], words, Path(args["cache"]), args["stored"]
    )
    seconds = time.perf_counter() - start
    tokens = sum(len(w) for w in words)
    cache_bytes = sum(f.stat().st_size for f in Path(args["cache"]).rglob("*") if f.is_file())
    peak = torch.tensor([_peak_mib()])
    if ddp.active():
        torch.distributed.all_reduce(peak, torch.distributed.ReduceOp.MAX)
    result = {
        "sentences": len(words),
        "tokens": tokens,
        "seconds": seconds,
        "sentences_per_s": len(words) / seconds,
        "tokens_per_s": tokens / seconds,
        "cache_bytes": cache_bytes,
        "bytes_per_token": cache_bytes / tokens,
        "stored": distiller.form.name if distiller.form is not None else "marginals",
        "peak_rss_mib": float(peak),
    }
    ddp.teardown()
    return result


def worker_predict(args: dict[str, Any]) -> dict[str, Any]:
    from structkd.models.checkpoint import load_model
    from structkd.tasks import get_task

    words = _words(Path(args["corpus"]), args.get("limit"))
    teacher = load_model(Path(args["work"]) / "teacher")
    start = time.perf_counter()
    get_task("ner").predict(teacher, words, BATCH)
    seconds = time.perf_counter() - start
    tokens = sum(len(w) for w in words)
    return {"sentences": len(words), "tokens_per_s": tokens / seconds, "seconds": seconds}


def worker_train(args: dict[str, Any]) -> dict[str, Any]:
    from structkd.data.batching import bucket_batches

    words = _words(Path(args["corpus"]))
    distiller = _distiller(
        Path(args["work"]), args["student"], words, Path(args["cache"]), args["stored"]
    )
    student = distiller.student.train()
    optimizer = torch.optim.Adam(student.parameters(), lr=1e-3)
    batches = bucket_batches([len(w) for w in words], BATCH, seed=0)[: args["batches"]]
    times: dict[str, list[float]] = {"kd": [], "nokd": []}
    for step, ids in enumerate(batches):
        sentence_words = [words[i] for i in ids]
        for mode in ("kd", "nokd") if step % 2 == 0 else ("nokd", "kd"):
            start = time.perf_counter()
            if mode == "kd":
                batch = student.collate(sentence_words)
                loss = distiller.losses(student(batch), batch, ids).mean()
            else:
                batch = student.collate(sentence_words, [["O"] * len(w) for w in sentence_words])
                loss = student.nll(batch, student(batch)).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            times[mode].append(time.perf_counter() - start)
    warm = 5
    kd, nokd = (statistics.median(times[m][warm:]) * 1000 for m in ("kd", "nokd"))
    return {
        "batches": len(batches),
        "kd_ms": kd,
        "nokd_ms": nokd,
        "ratio": kd / nokd,
        "peak_rss_mib": _peak_mib(),
    }


WORKERS = {"annotate": worker_annotate, "predict": worker_predict, "train": worker_train}


def _spawn(kind: str, args: dict[str, Any], procs: int = 1) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    out = Path(args["work"]) / f"result-{os.getpid()}-{time.time_ns()}.json"
    command = [sys.executable, __file__, "--worker", kind, json.dumps(args), str(out)]
    if procs > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={procs}"]
        command = [*launcher, *command[1:]]
    subprocess.run(command, env=env, check=True)
    result: dict[str, Any] = json.loads(out.read_text())
    out.unlink()
    print(kind, procs, json.dumps(result), file=sys.stderr, flush=True)
    return result


VARIANTS = [("student-crf", "compact"), ("student-crf", "exact"), ("student-maxent", "exact")]


def measure(
    work: Path, sizes: list[int], train_batches: int, procs: list[int], multi_max: int
) -> list[dict]:
    work.mkdir(parents=True, exist_ok=True)
    if not (work / "teacher").exists():
        build_models(work)
    rows = []
    for size in sizes:
        corpus = work / f"corpus-{size}.txt"
        if not corpus.exists():
            write_corpus(corpus, size)
        limit = min(size, 100_000)
        plain = _spawn("predict", {"work": str(work), "corpus": str(corpus), "limit": limit})
        for student, stored in VARIANTS:
            if stored == "exact" and student == "student-crf" and size > multi_max:
                continue  # 1.2 KB a token: 17 GB of disk at a million sentences
            row: dict[str, Any] = {"size": size, "student": student, "predict": plain}
            row["stored_option"] = stored
            args = {"work": str(work), "corpus": str(corpus), "student": student, "stored": stored}
            for n in procs if size <= multi_max else procs[:1]:
                cache = work / f"cache-{size}-{student}-{stored}-{n}"
                for file in sorted(cache.rglob("*"), reverse=True) if cache.exists() else []:
                    file.unlink() if file.is_file() else file.rmdir()
                row[f"annotate{n}"] = _spawn("annotate", {**args, "cache": str(cache)}, n)
            cache = work / f"cache-{size}-{student}-{stored}-{procs[0]}"
            train_args = {**args, "cache": str(cache), "batches": train_batches}
            row["train"] = _spawn("train", train_args)
            rows.append(row)
    return rows


def table(rows: list[dict], procs: list[int], train_batches: int) -> str:
    head = [
        "sentences",
        "student",
        "distill.stored",
        "stored form",
        "cache B/token",
        *[f"annotate sent/s ({n} proc)" for n in procs],
        "annotate / predict tokens/s",
        "annotate peak RSS (MiB)",
        "KD ms/batch",
        "no-KD ms/batch",
        "KD / no-KD",
        "train peak RSS (MiB)",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        first = r[f"annotate{procs[0]}"]
        cells = [
            f"{r['size']:,}",
            r["student"].replace("student-", ""),
            r["stored_option"],
            first["stored"],
            f"{first['bytes_per_token']:.1f}",
            *[
                f"{r[f'annotate{n}']['sentences_per_s']:,.0f}" if f"annotate{n}" in r else "-"
                for n in procs
            ],
            f"{first['tokens_per_s'] / r['predict']['tokens_per_s']:.2f}",
            f"{first['peak_rss_mib']:,.0f}",
            f"{r['train']['kd_ms']:.1f}",
            f"{r['train']['nokd_ms']:.1f}",
            f"{r['train']['ratio']:.2f}",
            f"{r['train']['peak_rss_mib']:,.0f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    load = os.getloadavg()
    lines += [
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, 1 torch thread per process, "
        f"torch {torch.__version__}; load average at the end {load[0]:.1f} / {load[1]:.1f} / "
        f"{load[2]:.1f} (1 / 5 / 15 min). Training: the first {train_batches} batches of one "
        f"shuffled epoch (batch {BATCH}), medians after 5 warm-up batches.",
    ]
    return "\n".join(lines)


def write_section(report: Path, body: str, command: str) -> None:
    begin, end = "<!-- scale.py: begin -->", "<!-- scale.py: end -->"
    text = report.read_text(encoding="utf-8") if report.exists() else ""
    section = f"{begin}\n## {SECTION}\n\n`{command}` regenerates this table.\n\n{body}\n{end}"
    if begin in text and end in text:
        text = text[: text.index(begin)] + section + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    report.write_text(text, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", default="runs/scale", help="corpora, models and caches")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--train-batches", type=int, default=200)
    parser.add_argument(
        "--multi-max",
        type=int,
        default=100_000,
        help="largest corpus annotated with every --procs and CRF -> CRF with stored=exact",
    )
    parser.add_argument("--report", help="write the table as a section of this markdown file")
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        kind, worker_args, out = args.worker
        torch.set_num_threads(1)
        result = WORKERS[kind](json.loads(worker_args))
        if int(os.environ.get("RANK", "0")) == 0:
            Path(out).write_text(json.dumps(result))
        return
    rows = measure(Path(args.work), args.sizes, args.train_batches, args.procs, args.multi_max)
    body = table(rows, args.procs, args.train_batches)
    print(body)
    if args.report:
        command = (
            f"python benchmarks/scale.py --sizes {' '.join(map(str, args.sizes))} --procs "
            f"{' '.join(map(str, args.procs))} --train-batches {args.train_batches} "
            f"--multi-max {args.multi_max} --report benchmarks/README.md"
        )
        write_section(Path(args.report), body, command)


if __name__ == "__main__":
    main()
