"""Training: the loop, distillation, teacher-marginal cache, checkpoints, DDP."""

from structkd.train.loop import TrainingError, train
from structkd.train.run import run

__all__ = ["TrainingError", "run", "train"]
