"""Training: one loop for every objective, schedules, batches, checkpoints, DDP.

    from lmtool.training import pretrain, train, evaluate
"""

from __future__ import annotations

from lmtool.training.config import TrainConfig
from lmtool.training.evaluate import evaluate
from lmtool.training.pretrain import PretrainResult, pretrain
from lmtool.training.trainer import Callback, Trainer, train

__all__ = ["Callback", "PretrainResult", "TrainConfig", "Trainer", "evaluate", "pretrain", "train"]
