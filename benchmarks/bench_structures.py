"""Speed of structkd's structures against torch-struct 0.5 and SuPar 1.1.4, in one run.

Each task times ``log Z + marginals`` (the work of one Structural KD step on the teacher side and
of one training step's forward on the student side) on random float32 potentials that require
grad, batch 32, on the CPU; the KL task times ``kl(p, q)`` plus its backward pass. Peers that are
not installed are skipped (``pip install -e .[bench]`` installs them). The fastest of several
interleaved repeats is reported, and the ratio ours / fastest peer goes to benchmarks/README.md.

Usage: python benchmarks/bench_structures.py [--quick] [--threads 1 2] [--out benchmarks/README.md]

With ``--out`` only this script's section of the file (between its begin and end markers) is
rewritten; other sections (notes, other benchmarks' tables) stay as they are. ``--tasks`` keeps
the tasks whose names contain one of the given strings; such a partial run needs its own
``--section`` name, so that it cannot overwrite the full table.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch

import structkd as sk

warnings.filterwarnings("ignore", message=".*arg_constraints.*")

BATCH = 32


def _peer(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except Exception:  # a missing or broken optional peer is skipped, not fatal
        return None


TS = _peer("torch_struct")
SUPAR = _peer("supar.structs")


def best_seconds(tasks: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    """Fastest of ``repeats`` runs per library, the libraries interleaved round by round.

    Interleaving and the minimum make the ratio robust to other load on the machine: a burst of
    contention slows one round of every library rather than all runs of one.
    """
    for fn in tasks.values():
        fn()  # warm-up
    best = {name: float("inf") for name in tasks}
    for _ in range(repeats):
        for name, fn in tasks.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def _leaf(*shape: int) -> torch.Tensor:
    return torch.randn(*shape).requires_grad_()


def chain_task(n: int, n_tags: int) -> dict[str, Callable[[], Any]]:
    emissions, transitions = _leaf(BATCH, n, n_tags), _leaf(n_tags, n_tags)
    lengths = torch.full((BATCH,), n, dtype=torch.long)

    def ours() -> Any:
        dist = sk.LinearChainCRF(emissions, transitions, lengths)
        return dist.log_partition, dist.marginals

    tasks = {"structkd": ours}
    if TS is not None:
        def torch_struct() -> Any:
            edges = emissions[:, 1:, None, :] + transitions[None, None]  # [B, N-1, L, L]
            first = torch.cat([edges[:, :1] + emissions[:, :1, :, None], edges[:, 1:]], 1)
            dist = TS.LinearChainCRF(first, lengths)
            return dist.partition, dist.marginals

        tasks["torch-struct"] = torch_struct
    if SUPAR is not None:
        trans = torch.nn.functional.pad(transitions, (0, 1, 0, 1))

        def supar() -> Any:
            dist = SUPAR.LinearChainCRF(emissions, trans, lengths)
            return dist.log_partition, dist.marginals

        tasks["supar"] = supar
    return tasks


def kl_task(n: int, n_tags: int) -> dict[str, Callable[[], Any]]:
    e1, e2 = _leaf(BATCH, n, n_tags), _leaf(BATCH, n, n_tags)
    t1, t2 = _leaf(n_tags, n_tags), _leaf(n_tags, n_tags)
    lengths = torch.full((BATCH,), n, dtype=torch.long)

    def ours() -> Any:
        p = sk.LinearChainCRF(e1, t1, lengths)
        q = sk.LinearChainCRF(e2, t2, lengths)
        p.kl(q).sum().backward()

    tasks = {"structkd": ours}
    if TS is not None:
        def torch_struct() -> Any:
            def edges(e: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
                out = e[:, 1:, None, :] + t[None, None]
                return torch.cat([out[:, :1] + e[:, :1, :, None], out[:, 1:]], 1)

            p = TS.LinearChainCRF(edges(e1, t1), lengths)
            q = TS.LinearChainCRF(edges(e2, t2), lengths)
            p.kl(q).sum().backward()

        tasks["torch-struct"] = torch_struct
    if SUPAR is not None:
        def supar() -> Any:
            pad = torch.nn.functional.pad
            p = SUPAR.LinearChainCRF(e1, pad(t1, (0, 1, 0, 1)), lengths)
            q = SUPAR.LinearChainCRF(e2, pad(t2, (0, 1, 0, 1)), lengths)
            p.kl(q).sum().backward()

        tasks["supar"] = supar
    return tasks


def _torch_struct_arcs(arcs: torch.Tensor) -> torch.Tensor:
    """Our [B, n+1, n+1] (dep, head) layout -> torch-struct's [B, n, n] (head, dep), root on the
    diagonal."""
    words = arcs[:, 1:, 1:].transpose(1, 2)  # [B, n, n] head, dep
    root = torch.diag_embed(arcs[:, 1:, 0])
    eye = torch.eye(words.shape[-1], dtype=torch.bool)
    return torch.where(eye, root, words)


def tree_task(n: int, projective: bool) -> dict[str, Callable[[], Any]]:
    arcs = _leaf(BATCH, n + 1, n + 1)
    lengths = torch.full((BATCH,), n, dtype=torch.long)

    def ours() -> Any:
        dist = sk.DependencyCRF(arcs, lengths, projective=projective)
        return dist.log_partition, dist.marginals

    tasks = {"structkd": ours}
    if TS is not None:
        cls = TS.DependencyCRF if projective else TS.NonProjectiveDependencyCRF

        def torch_struct() -> Any:
            dist = cls(_torch_struct_arcs(arcs), lengths)
            return dist.partition, dist.marginals

        tasks["torch-struct"] = torch_struct
    if SUPAR is not None:
        cls2 = SUPAR.DependencyCRF if projective else SUPAR.MatrixTree

        def supar() -> Any:
            dist = cls2(arcs, lengths)
            return dist.log_partition, dist.marginals

        tasks["supar"] = supar
    return tasks


def sibling_task(n: int) -> dict[str, Callable[[], Any]]:
    arcs, sibs = _leaf(BATCH, n + 1, n + 1), _leaf(BATCH, n + 1, n + 1, n + 1)
    lengths = torch.full((BATCH,), n, dtype=torch.long)

    def ours() -> Any:
        dist = sk.SiblingDependencyCRF(arcs, sibs, lengths)
        return dist.log_partition, dist.marginals

    tasks = {"structkd": ours}
    if SUPAR is not None:
        def supar() -> Any:
            dist = SUPAR.Dependency2oCRF((arcs, sibs), lengths)
            return dist.log_partition, dist.marginals

        tasks["supar"] = supar
    return tasks


def matrix_tree_nan_check(scale: float) -> dict[str, str]:
    """Whether each library's matrix-tree marginals stay finite at large scores (float32)."""
    torch.manual_seed(0)
    arcs = torch.randn(4, 21, 21) * scale
    lengths = torch.full((4,), 20, dtype=torch.long)
    results = {}
    ours = sk.DependencyCRF(arcs, lengths, projective=False).marginals
    results["structkd"] = "finite" if torch.isfinite(ours).all() else "NaN/inf"
    if TS is not None:
        try:
            marg = TS.NonProjectiveDependencyCRF(_torch_struct_arcs(arcs), lengths).marginals
            results["torch-struct"] = "finite" if torch.isfinite(marg).all() else "NaN/inf"
        except Exception as err:  # report the peer's failure, do not stop the benchmark
            results["torch-struct"] = f"error: {type(err).__name__}"
    if SUPAR is not None:
        marg = SUPAR.MatrixTree(arcs.requires_grad_(), lengths).marginals
        results["supar"] = "finite" if torch.isfinite(marg).all() else "NaN/inf"
    return results


TASKS: list[tuple[str, Callable[[], dict[str, Callable[[], Any]]], float]] = [
    # (name, task builder, target ratio ours / fastest peer)
    ("linear chain N=40 L=17", lambda: chain_task(40, 17), 0.5),
    ("linear chain N=128 L=9", lambda: chain_task(128, 9), 0.5),
    ("KL of two CRFs N=40 L=17 (+backward)", lambda: kl_task(40, 17), 0.5),
    ("projective tree n=30", lambda: tree_task(30, True), 0.5),
    ("projective tree n=60", lambda: tree_task(60, True), 0.5),
    ("2nd-order sibling tree n=30", lambda: sibling_task(30), 0.5),
    ("matrix-tree n=30", lambda: tree_task(30, False), 0.8),
    ("matrix-tree n=60", lambda: tree_task(60, False), 0.8),
]


def timing_table(threads: int, repeats: int, tasks: list[str] | None = None) -> list[str]:
    """The speed table at one torch thread count, printed row by row as it is measured."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    print(f"{threads} torch thread(s):", flush=True)
    header = "| task | structkd (ms) | torch-struct (ms) | supar (ms) | ours / best peer | target |"
    lines = [f"{threads} torch thread(s):", "", header, "|---|---|---|---|---|---|"]
    for name, build, target in TASKS:
        if tasks is not None and not any(part in name for part in tasks):
            continue
        tasks_here = build()
        ms = {lib: 1000 * sec for lib, sec in best_seconds(tasks_here, repeats).items()}
        peers = [v for k, v in ms.items() if k != "structkd"]
        ratio = f"{ms['structkd'] / min(peers):.2f}x" if peers else "n/a"
        cells = [f"{ms[k]:.1f}" if k in ms else "-" for k in ("structkd", "torch-struct", "supar")]
        row = f"| {name} | {' | '.join(cells)} | {ratio} | <= {target}x |"
        lines.append(row)
        print(row, flush=True)
    return lines + [""]


def write_section(path: str, section: str, name: str = "") -> None:
    """Replaces this script's section ``name`` of ``path`` (for the full table of a file
    written before the markers existed: everything up to its first ``## `` heading; a new
    partial section goes at the end), keeping the rest."""
    tag = f"bench_structures.py{' ' + name if name else ''}"
    begin, end = f"<!-- {tag}: begin -->", f"<!-- {tag}: end -->"
    block = f"{begin}\n{section.rstrip()}\n{end}\n"
    try:
        with open(path, encoding="utf-8") as f:
            old = f.read()
    except FileNotFoundError:
        old = ""
    if begin in old and end in old:
        head, rest = old.split(begin, 1)
        new = head + block + rest.split(end, 1)[1]
    elif name:
        new = old.rstrip("\n") + "\n\n" + block
    elif "\n## " in old:
        new = block + "\n" + old[old.index("\n## ") + 1 :]
    else:
        new = block
    with open(path, "w", encoding="utf-8") as f:
        f.write(new)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--repeats", type=int, help="runs per library and task (default 15)")
    parser.add_argument(
        "--threads", type=int, nargs="+", default=[1], help="torch thread counts (1: least noise)"
    )
    parser.add_argument("--out", default=None, help="write a markdown report here")
    parser.add_argument("--tasks", nargs="+", help="only tasks whose names contain one of these")
    parser.add_argument("--section", default="", help="name of a partial run's own section")
    args = parser.parse_args()
    if args.tasks and args.out and not args.section:
        parser.error("a run with --tasks writes its own --section")
    repeats = args.repeats or (3 if args.quick else 15)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")

    lines: list[str] = []
    for threads in args.threads:
        lines += timing_table(threads, repeats, args.tasks)

    torch.set_num_threads(args.threads[0])
    lines += ["Matrix-tree marginals at large scores (float32, n=20):", "",
              "| scale | structkd | torch-struct | supar |", "|---|---|---|---|"]
    for scale in (50.0, 1000.0):
        res = matrix_tree_nan_check(scale)
        lines.append(f"| x{scale:g} | " + " | ".join(
            res.get(k, "-") for k in ("structkd", "torch-struct", "supar")) + " |")
        print(lines[-1], flush=True)

    machine = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
               f"torch {torch.__version__}, Python {platform.python_version()}; load average "
               f"{load:.1f} when the run started (other jobs share the cores)")
    if args.out:
        threads = " ".join(map(str, args.threads))
        report = REPORT if not args.section else PARTIAL_REPORT
        write_section(args.out, report.format(
            machine=machine, repeats=repeats, threads=threads, table="\n".join(lines),
            section=args.section, tasks=" ".join(f"'{t}'" for t in args.tasks or [])),
            args.section)
        print(f"wrote {args.out}")


REPORT = """# Benchmarks

`python benchmarks/bench_structures.py --threads {threads} --out benchmarks/README.md` (or
`make bench`) regenerates this section. Batch 32, float32, random potentials that require grad;
each cell is the fastest of {repeats} runs (libraries interleaved round by round) of
`log Z + marginals` (the KL row: `kl(p, q).sum().backward()`), all libraries measured in the
same run. Peers: torch-struct 0.5 and SuPar 1.1.4 (`pip install -e .[bench]`).

Machine: {machine}.

{table}
"""

PARTIAL_REPORT = """## {section}

`python benchmarks/bench_structures.py --tasks {tasks} --threads {threads} --repeats {repeats}
--section '{section}' --out benchmarks/README.md` regenerates this section: the rows of the
table above whose names contain {tasks}, measured as there (the fastest of {repeats} interleaved
runs each, all libraries in the same run).

Machine: {machine}.

{table}
"""

if __name__ == "__main__":
    main()
