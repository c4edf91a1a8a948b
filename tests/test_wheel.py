"""A wheel of structkd works on its own: it holds the run configs, the bundled data and the
licence, and ``structkd train ner/teacher-crf`` runs from it in a directory that is no clone."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from structkd.config import packaged_configs, resolve_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from a copy of the sources (the build leaves nothing in the clone)."""
    pytest.importorskip("setuptools")
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    shutil.copytree(ROOT / "src", source / "src", ignore=ignore)
    out = tmp_path_factory.mktemp("wheel")
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    done = subprocess.run(
        [*command, "--no-index", "-q", "-w", str(out), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode != 0:
        pytest.fail(f"pip wheel failed: {done.stderr[-2000:]}")
    (built,) = out.glob("structkd-*.whl")
    return built


def test_the_wheel_holds_configs_data_and_licence(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = {n[len("structkd/configs/") : -len(".yaml")] for n in names if "/configs/" in n}
    assert configs == set(packaged_configs()) >= {"ner/teacher-crf", "ner/case2a", "dep/case1b"}
    assert configs == {
        f"{p.parent.name}/{p.stem}"
        for p in (ROOT / "configs").glob("*/*.yaml")
        if p.parent.name in ("ner", "dep")
    }
    for data in ("wikiann_en/test.tsv", "unlabeled_en.txt", "ud_en_ewt/train.conllu"):
        assert f"structkd/resources/{data}" in names
    assert any(re.fullmatch(r"structkd-[^/]+\.dist-info/licenses/LICENSE", n) for n in names)
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    text = zipfile.ZipFile(wheel).read(metadata).decode()
    assert "License-Expression: Apache-2.0" in text and "Requires-Python: >=3.10" in text
    mypy = re.search(r'python_version = "(3\.\d+)"', (ROOT / "pyproject.toml").read_text())
    assert mypy is not None and f"Requires-Python: >={mypy.group(1)}" in text
    assert "Classifier: Programming Language :: Python :: 3.10" in text


def test_a_packaged_config_trains_from_the_wheel_outside_a_clone(
    wheel: Path, tmp_path: Path
) -> None:
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)  # a pure-Python wheel: unpacking installs it
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "structkd", "train", "ner/teacher-crf", "--max-epochs=1"]
    tiny = ["model.encoder.word_dim=8", "model.encoder.char_filters=0"]
    tiny += ["model.encoder.lstm_hidden=6", "train.progress=false"]
    command += [a for s in tiny for a in ("--set", s)]
    done = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "train 2,000 labeled" in done.stdout  # the bundled WikiAnn slice, from the wheel
    assert (work / "runs/teacher-crf/model/model.safetensors").is_file()
    where = subprocess.run(
        [sys.executable, "-c", "import structkd; print(structkd.__file__)"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
    )
    assert where.stdout.startswith(str(site))


def test_a_file_beats_a_packaged_name_and_unknown_names_list_the_packaged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert (
        resolve_config("ner/teacher-crf.yaml").read_bytes()
        == (ROOT / "configs/ner/teacher-crf.yaml").read_bytes()
    )
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ner").mkdir()
    (tmp_path / "ner/teacher-crf.yaml").write_text("train: {seed: 7}\n")
    assert resolve_config("ner/teacher-crf.yaml") == Path("ner/teacher-crf.yaml")
    assert resolve_config("ner/teacher-crf").name == "teacher-crf.yaml"  # no file of that name
    with pytest.raises(FileNotFoundError, match=r"no such config file: ner/nope \(nor a packaged"):
        resolve_config("ner/nope")
