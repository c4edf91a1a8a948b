"""Where the real corpora live: ``shared/data`` beside the project (see its README).

The project root's parent holds ``shared/data`` on developer machines and in CI; a git worktree
may sit deeper, so every ancestor of the root is tried. ``STRUCTKD_SHARED_DATA`` overrides the
search. Tests that need a corpus call :func:`shared_file`, which skips them when it is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def shared_data_root() -> Path | None:
    """The ``shared/data`` folder, or None if there is none."""
    override = os.environ.get("STRUCTKD_SHARED_DATA")
    if override:
        return Path(override) if Path(override).is_dir() else None
    for ancestor in ROOT.parents:
        candidate = ancestor / "shared" / "data"
        if candidate.is_dir():
            return candidate
    return None


def shared_file(relative: str) -> Path:
    """``shared/data/<relative>``; skips the calling test if it does not exist."""
    root = shared_data_root()
    path = root / relative if root is not None else None
    if path is None or not path.exists():
        pytest.skip(f"shared data file {relative} is not available")
    return path
