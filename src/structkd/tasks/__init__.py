"""Tasks: what the shared trainer, distiller and CLI need of each model family.

Importing the package registers every task (``register_task`` runs where each is defined).
"""

from structkd.tasks.base import (
    Task,
    all_formats,
    get_task,
    register_task,
    task_names,
    task_reporting,
)
from structkd.tasks.dep import DepTask
from structkd.tasks.ner import NERTask

__all__ = [
    "DepTask",
    "NERTask",
    "Task",
    "all_formats",
    "get_task",
    "register_task",
    "task_names",
    "task_reporting",
]
