"""Loading never unpickles: a static scan of src/ for every way Python code can run a pickle.

Checkpoints are safetensors + JSON (DESIGN.md: "never pickle"), because unpickling a file runs
whatever code it names. This test parses every module under src/ and fails on: importing
pickle-like modules; ``torch.load`` without ``weights_only=True``; ``yaml.load``/``unsafe_load``/
``full_load``; ``numpy.load(..., allow_pickle=True)``; builtin ``eval``/``exec``; and
``trust_remote_code=True``. The scanner is itself tested on offending snippets.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).parent.parent / "src"
PICKLE_MODULES = {
    "pickle",
    "cPickle",
    "_pickle",
    "dill",
    "cloudpickle",
    "joblib",
    "marshal",
    "shelve",
}
UNSAFE_YAML = {"load", "unsafe_load", "full_load", "load_all", "unsafe_load_all", "full_load_all"}


def _keyword_is(call: ast.Call, name: str, value: object) -> bool:
    return any(
        k.arg == name and isinstance(k.value, ast.Constant) and k.value.value is value
        for k in call.keywords
    )


def _dotted(node: ast.expr) -> str:
    """``torch.serialization.load`` for the expression that names a called function."""
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else "?"


def unsafe_loads(source: str, filename: str = "<src>") -> list[str]:
    """``file:line: what`` for every construct that can unpickle or run loaded code."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        where = f"{filename}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import):
            names = [a.name.split(".")[0] for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [(node.module or "").split(".")[0]]
        else:
            names = []
        found += [f"{where}: imports {n}" for n in names if n in PICKLE_MODULES]
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        if name in ("torch.load", "torch.serialization.load") and not _keyword_is(
            node, "weights_only", True
        ):
            found.append(f"{where}: {name} without weights_only=True")
        if name.split(".")[0] == "yaml" and name.split(".")[-1] in UNSAFE_YAML:
            found.append(f"{where}: {name} (use yaml.safe_load)")
        if name in ("np.load", "numpy.load") and _keyword_is(node, "allow_pickle", True):
            found.append(f"{where}: {name} with allow_pickle=True")
        if name in ("eval", "exec"):
            found.append(f"{where}: {name}()")
        if _keyword_is(node, "trust_remote_code", True):
            found.append(f"{where}: trust_remote_code=True")
    return found


def test_src_never_unpickles() -> None:
    files = sorted(SRC.rglob("*.py"))
    assert len(files) > 10, "src/ not found"
    found = [hit for f in files for hit in unsafe_loads(f.read_text(encoding="utf-8"), str(f))]
    assert found == []


@pytest.mark.parametrize(
    "snippet",
    [
        "import pickle",
        "import joblib as jl",
        "from dill import loads",
        "from pickle import load",
        "import torch\ntorch.load('m.pt')",
        "import torch\ntorch.load(f, map_location='cpu', weights_only=False)",
        "import torch\ntorch.serialization.load(f)",
        "import yaml\nyaml.load(text, Loader=yaml.Loader)",
        "import yaml\nyaml.unsafe_load(text)",
        "import numpy as np\nnp.load('a.npy', allow_pickle=True)",
        "eval(text)",
        "AutoModel.from_pretrained(path, trust_remote_code=True)",
    ],
)
def test_the_scan_catches_each_unsafe_construct(snippet: str) -> None:
    assert len(unsafe_loads(snippet)) == 1


def test_the_scan_allows_the_safe_forms() -> None:
    safe = (
        "import torch, yaml, numpy as np\n"
        "torch.load(f, weights_only=True)\n"
        "yaml.safe_load(text)\n"
        "np.load('a.npy')\n"
        "model.eval()\n"
        "AutoModel.from_pretrained(path, local_files_only=True)\n"
    )
    assert unsafe_loads(safe) == []
