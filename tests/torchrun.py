"""``python -m structkd`` under torchrun with two CPU ranks (gloo), for the DDP tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


def run_two_ranks(args: list[str], out: Path, timeout: int) -> subprocess.CompletedProcess[str]:
    """Runs ``structkd ARGS --out=OUT`` on 2 ranks, one thread each; output captured."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2"]
    return subprocess.run(
        [*launcher, "-m", "structkd", *args, f"--out={out}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
