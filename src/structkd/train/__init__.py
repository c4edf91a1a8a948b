"""Training: batching, the loop, distillation, teacher-marginal cache, checkpoints, DDP."""

from structkd.train.evaluate import evaluate, predict_tags
from structkd.train.loop import TrainingError, train
from structkd.train.run import run

__all__ = ["TrainingError", "evaluate", "predict_tags", "run", "train"]
