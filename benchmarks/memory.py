"""Peak memory of the tree structures on one long sentence.

Each case runs in a fresh subprocess (so one case's freed memory cannot hide another's peak) and
reports the growth of the process's peak resident set size (``ru_maxrss``) over its resident size
just before the computation, i.e. what the computation itself added, after ``import torch`` and
the input scores. ``tracemalloc`` would miss it: torch allocates tensors outside Python's allocator.

    python benchmarks/memory.py            # every case at 300 words, a Markdown table on stdout
    python benchmarks/memory.py --words 60 80 100 --cases matrix-tree-f32-x1000
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time

CASES = {
    # name: (structure, dtype, what runs); "multiroot" in a name allows several root words
    "eisner-f32": ("projective", "float32", "log Z + marginals"),
    "eisner-f64": ("projective", "float64", "log Z + marginals"),
    "eisner-f32-backward": ("projective", "float32", "log Z + marginals + backward of log Z"),
    "matrix-tree-f32": ("non-projective", "float32", "log Z + marginals"),
    "matrix-tree-f64": ("non-projective", "float64", "log Z + marginals"),
    # x1000 scores make the Laplacian float64-singular: the log-space elimination fallback runs
    "matrix-tree-f32-x1000": ("non-projective", "float32", "log Z + marginals, fallback route"),
    "matrix-tree-multiroot-f32-x1000": (
        "non-projective",
        "float32",
        "log Z + marginals, fallback route, several roots",
    ),
}


def _rss_mib() -> float:
    """Current resident set size in MiB (Linux /proc)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def _peak_mib() -> float:
    """Peak resident set size of this process so far in MiB (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_case(name: str, words: int, limit_gib: float) -> dict[str, float | str]:
    """Runs one case in this process; returns its numbers (meant for a fresh subprocess).

    The address space is capped at ``limit_gib`` so that a case that needs more fails here with
    an allocation error instead of driving the machine into the OOM killer.
    """
    limit = int(limit_gib * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    import torch

    from structkd.structures.dependency import DependencyCRF

    torch.set_num_threads(1)
    structure, dtype_name, _ = CASES[name]
    dtype = getattr(torch, dtype_name)
    gen = torch.Generator().manual_seed(0)
    scores = torch.randn(1, words + 1, words + 1, generator=gen, dtype=dtype)  # [1, L, L]
    if name.endswith("x1000"):
        scores = scores * 1000
    scores.requires_grad_(name.endswith("backward"))
    before = _rss_mib()
    start = time.perf_counter()
    multiroot = "multiroot" in name
    try:
        dist = DependencyCRF(scores, projective=structure == "projective", multiroot=multiroot)
        log_z, marginals = dist.log_partition, dist.marginals
        if scores.requires_grad:
            log_z.sum().backward()
    except (MemoryError, RuntimeError) as error:  # torch reports a failed allocation as either
        if "memory" not in str(error).lower() and not isinstance(error, MemoryError):
            raise
        return {"case": name, "error": f"over the {limit_gib} GiB cap"}
    seconds = time.perf_counter() - start
    if not (torch.isfinite(log_z).all() and torch.isfinite(marginals).all()):
        raise SystemExit(f"{name}: non-finite result")
    return {
        "case": name,
        "baseline_mib": round(before, 1),
        "peak_mib": round(_peak_mib(), 1),
        "added_mib": round(_peak_mib() - before, 1),
        "seconds": round(seconds, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--words", type=int, nargs="+", default=[300])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--limit-gib", type=float, default=2.0, help="address-space cap per case")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_case(args.child, args.words[0], args.limit_gib)))
        return
    import torch

    print(
        f"One sentence, batch 1, 1 torch thread; torch {torch.__version__},"
        f" Python {platform.python_version()}, {platform.machine()}; each case capped at"
        f" {args.limit_gib} GiB of address space.\n"
    )
    print("| case | words | computes | added peak RSS (MiB) | process peak RSS (MiB) | time (s) |")
    print("|---|---|---|---|---|---|")
    for name in args.cases:
        for words in args.words:
            out = subprocess.run(
                [sys.executable, __file__, "--child", name, "--words", str(words)]
                + ["--limit-gib", str(args.limit_gib)],
                check=True,
                capture_output=True,
                text=True,
            )
            row = json.loads(out.stdout)
            cells = (
                [row["error"], "-", "-"]
                if "error" in row
                else [row["added_mib"], row["peak_mib"], row["seconds"]]
            )
            print(f"| {name} | {words} | {CASES[name][2]} | " + " | ".join(map(str, cells)) + " |")


if __name__ == "__main__":
    main()
