"""Training: one loop for every task and objective, batch sources, schedules, checkpoints,
DDP, and the commands built on them.

    from lmtool.training import pretrain, finetune_lm, train, evaluate
"""

from __future__ import annotations

from lmtool.training.config import TrainConfig
from lmtool.training.evaluate import evaluate
from lmtool.training.finetune import FinetuneResult, finetune_lm
from lmtool.training.pretrain import PretrainResult, pretrain
from lmtool.training.trainer import Callback, Trainer, train

__all__ = ["Callback", "FinetuneResult", "PretrainResult", "TrainConfig", "Trainer", "evaluate",
           "finetune_lm", "pretrain", "train"]
