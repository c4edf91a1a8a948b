"""Tasks: what the shared trainer, distiller and CLI need of each model family."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from structkd.config import ConfigError
from structkd.tasks.base import Task
from structkd.tasks.dep import DepTask
from structkd.tasks.ner import NERTask

TASKS = ("ner", "dep")


def get_task(name: str) -> Task:
    """The task called ``name`` (``ner`` or ``dep``).

    Raises:
        ConfigError: for an unknown name.
    """
    if name == "ner":
        return NERTask()
    if name == "dep":
        return DepTask()
    raise ConfigError(f"unknown task {name!r}; expected one of {', '.join(TASKS)}")


def task_reporting(scores: Mapping[str, Any]) -> Task | None:
    """The registered task whose ``score_metrics`` are all among ``scores`` (one split of a
    ``metrics.json``), None when there is none: how a results file tells its task.
    """
    for name in TASKS:
        task = get_task(name)
        if all(metric in scores for metric in task.score_metrics):
            return task
    return None


__all__ = ["TASKS", "Task", "get_task", "task_reporting"]
