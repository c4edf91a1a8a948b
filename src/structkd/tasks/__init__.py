"""Tasks: what the shared trainer, distiller and CLI need of each model family."""

from __future__ import annotations

from structkd.config import ConfigError
from structkd.tasks.base import Task

TASKS = ("ner", "dep")


def get_task(name: str) -> Task:
    """The task called ``name`` (``ner`` or ``dep``).

    Raises:
        ConfigError: for an unknown name.
    """
    if name == "ner":
        from structkd.tasks.ner import NERTask

        return NERTask()
    if name == "dep":
        from structkd.tasks.dep import DepTask

        return DepTask()
    raise ConfigError(f"unknown task {name!r}; expected one of {', '.join(TASKS)}")


__all__ = ["TASKS", "Task", "get_task"]
