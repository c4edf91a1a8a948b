"""The README's API example runs as written and its claims hold."""

from __future__ import annotations

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_api_example_runs_and_cached_loss_matches() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    assert blocks, "README lost its API example"
    namespace: dict[str, object] = {}
    torch.manual_seed(0)
    exec(compile(blocks[0], str(README), "exec"), namespace)
    loss, loss2 = namespace["loss"], namespace["loss2"]
    assert isinstance(loss, torch.Tensor) and isinstance(loss2, torch.Tensor)
    torch.testing.assert_close(loss, loss2)
    assert namespace["emissions"].grad is not None  # type: ignore[union-attr]
