"""Time and peak memory of predicting one very long sentence, the models at their configs' sizes.

Each case runs in a fresh subprocess with one torch thread and an address-space cap (a case that
needs more fails with an allocation error instead of waking the OOM killer). It builds an
untrained model of a shipped config (the vocabulary of a test fixture; the weights do not change
the cost, except how often Chu-Liu/Edmonds has to contract), then predicts one sentence of
``--words`` words drawn from the fixture's vocabulary. Reported: wall time and CPU time of the
prediction, the growth of the process's peak RSS over its RSS just before it (``ru_maxrss``), and
the process's peak.

    python benchmarks/long_sentence.py                       # every case, a Markdown table
    python benchmarks/long_sentence.py --cases parse-projective --words 500 1000
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = {
    # name: (config, overrides, fixture, default words, what runs)
    "parse-projective": (
        "configs/dep/teacher-biaffine-crf.yaml",
        ["model.parser.kind=projective"],
        "tests/fixtures/dep/en_ewt-dev-slice.conllu",
        2000,
        "biaffine parser, Eisner argmax",
    ),
    "parse-nonprojective": (
        "configs/dep/teacher-biaffine-crf.yaml",
        ["model.parser.kind=nonprojective"],
        "tests/fixtures/dep/en_ewt-dev-slice.conllu",
        2000,
        "biaffine parser, Chu-Liu/Edmonds",
    ),
    "tag-crf-long-token": (
        "configs/ner/teacher-crf.yaml",
        [],
        "tests/fixtures/ner/train.txt",
        20000,
        "char CNN + BiLSTM-CRF tagger, one 200,000-character word",
    ),
}


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_case(name: str, words: int, limit_gib: float) -> dict[str, float | str]:
    """Builds the case's model and predicts one sentence (meant for a fresh subprocess)."""
    limit = int(limit_gib * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    import torch

    from structkd.config import load_config
    from structkd.tasks import get_task

    torch.set_num_threads(1)
    config_path, overrides, fixture, _, _ = CASES[name]
    config = load_config(ROOT / config_path, overrides)
    task = get_task(config.task)
    sentences = task.read_labeled(str(ROOT / fixture), "auto")
    torch.manual_seed(0)
    model = task.build_model(config.model, sentences)
    vocabulary = sorted({w for s in sentences for w in task.words(s)})
    rng = random.Random(0)
    sentence = [rng.choice(vocabulary) for _ in range(words)]
    if name.endswith("long-token"):
        sentence[words // 2] = "x" * 200_000
    before, cpu = _rss_mib(), time.process_time()
    start = time.perf_counter()
    try:
        (output,) = task.predict(model, [sentence], 1)
    except (MemoryError, RuntimeError) as error:  # torch reports a failed allocation as either
        if "memory" not in str(error).lower() and not isinstance(error, MemoryError):
            raise
        return {"case": name, "error": f"over the {limit_gib} GiB cap"}
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    predicted = output[0] if isinstance(output, tuple) else output
    if len(predicted) != words:
        raise SystemExit(f"{name}: {len(predicted)} outputs for {words} words")
    return {
        "case": name,
        "peak_mib": round(_peak_mib(), 1),
        "added_mib": round(_peak_mib() - before, 1),
        "seconds": round(seconds, 1),
        "cpu_seconds": round(cpu, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--words", type=int, nargs="+", help="default: each case's own")
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--limit-gib", type=float, default=4.0, help="address-space cap per case")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_case(args.child, args.words[0], args.limit_gib)))
        return
    import torch

    print(
        f"One sentence, 1 torch thread; torch {torch.__version__}, Python"
        f" {platform.python_version()}, {platform.machine()}; each case capped at"
        f" {args.limit_gib} GiB of address space.\n"
    )
    print("| case | words | runs | wall (s) | CPU (s) | added peak RSS (MiB) | peak RSS (MiB) |")
    print("|---|---|---|---|---|---|---|")
    for name in args.cases:
        for words in args.words or [CASES[name][3]]:
            out = subprocess.run(
                [sys.executable, __file__, "--child", name, "--words", str(words)]
                + ["--limit-gib", str(args.limit_gib)],
                check=True,
                capture_output=True,
                text=True,
            )
            row = json.loads(out.stdout)
            keys = ["seconds", "cpu_seconds", "added_mib", "peak_mib"]
            cells = [row["error"], "-", "-", "-"] if "error" in row else [row[k] for k in keys]
            print(f"| {name} | {words} | {CASES[name][4]} | " + " | ".join(map(str, cells)) + " |")


if __name__ == "__main__":
    main()
