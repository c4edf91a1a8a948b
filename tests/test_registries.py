"""Tasks, their formats and their model families are registered where they are defined: a new
task is found by ``get_task``, the command line and checkpoint loading without a list to edit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from structkd import cli
from structkd.config import ConfigError, ModelConfig, RunConfig
from structkd.models.checkpoint import LOADERS, CheckpointError, load_model, save_model
from structkd.models.manifest import ManifestWarning
from structkd.models.tagger import build_tagger
from structkd.tasks import all_formats, get_task, register_task, task_names, task_reporting
from structkd.tasks import base as task_base
from structkd.tasks.ner import NERTask
from structkd.train.run import run


def test_every_registered_task_is_found_by_its_name() -> None:
    assert set(task_names()) >= {"ner", "dep"}
    for name in task_names():
        assert get_task(name).name == name


def test_an_unknown_task_is_a_config_error_naming_the_registered_ones() -> None:
    names = " | ".join(repr(n) for n in task_names())
    with pytest.raises(ConfigError) as caught:
        get_task("pos")
    assert str(caught.value) == f"task: expected one of {names}, got 'pos'"


def test_a_run_of_an_unknown_task_fails_before_anything_is_written(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match="task: expected one of"):
        run(RunConfig(task="pos", out=str(out)))
    assert not out.exists()


def test_a_new_task_is_found_everywhere_once_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(task_base, "_TASKS", dict(task_base._TASKS))  # undone after the test

    @register_task
    class ToyTask(NERTask):
        name = "toy"
        input_formats = (*NERTask.input_formats, "toyfmt")
        score_metrics = ("toy_score",)
        metric_labels = {"toy_score": "Toy"}

    assert isinstance(get_task("toy"), ToyTask) and "toy" in task_names()
    assert "toyfmt" in all_formats()
    reporting = task_reporting({"toy_score": 1.0})
    assert reporting is not None and reporting.name == "toy"
    with pytest.raises(ValueError, match="registered twice"):

        @register_task
        class Impostor(NERTask):
            name = "toy"


def test_the_command_line_offers_every_format_a_task_reads() -> None:
    for name in task_names():
        assert set(get_task(name).input_formats) <= set(cli.FORMATS)
    assert set(cli.FORMATS) == set(all_formats())


def test_every_task_labels_its_score_metrics() -> None:
    for name in task_names():
        task = get_task(name)
        assert set(task.score_metrics) <= set(task.metric_labels)


def test_every_task_has_a_checkpoint_loader() -> None:
    assert set(task_names()) <= set(LOADERS)


def test_a_checkpoint_of_an_unregistered_task_is_refused(tmp_path: Path) -> None:
    tokens, tags = [["EU", "rejects", "Germany"]], [["S-ORG", "O", "S-LOC"]]
    config = ModelConfig()
    config.encoder.lstm_hidden = 4
    config.encoder.word_dim = 4
    config.encoder.char_filters = 0
    model = build_tagger(config, tokens, tags)
    save_model(model, tmp_path, manifest=False)
    meta = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**meta, "task": "pos"}))
    with (
        pytest.warns(ManifestWarning),
        pytest.raises(CheckpointError, match="unknown task 'pos'; expected one of dep, ner"),
    ):
        load_model(tmp_path)
