"""A config that needs an optional package which is not installed: one ``error:`` line naming
the extra to install, exit status 2, no output directory (the import is made to fail through
``sys.modules``, so the test runs whether or not the package is installed)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from structkd.cli import main

ROOT = Path(__file__).parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "pipeline"


def test_a_transformer_encoder_without_transformers_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)  # `import transformers` fails
    model_dir = tmp_path / "tiny-bert"  # never read: the import fails first
    model_dir.mkdir()
    out = tmp_path / "out"
    status = main(
        [
            "train",
            str(ROOT / "configs" / "ner" / "teacher-minilm-crf.yaml"),
            f"--train={FIXTURES / 'train.conll'}",
            f"--out={out}",
            "--set",
            f"model.encoder.transformer={model_dir}",
            "--set",
            "data.dev=",
            "--set",
            "data.test=",
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert status == 2, err
    assert err == (
        "error: transformer models need the package transformers (transformers is not "
        "installed): pip install 'structkd[transformer]'\n"
    )
    assert not out.exists()
