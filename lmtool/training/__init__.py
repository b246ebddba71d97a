"""Training: one loop for every task and objective, batch sources, schedules, checkpoints,
DDP, and the commands built on them.

    from lmtool.training import pretrain, finetune_lm, finetune_classifier, TrainFlags
    pretrain("data/", "runs/lm", overrides=TrainFlags(max_steps=100, precision="fp32"))

Every kind of run goes through one builder (training/builder.py); how to add one:
docs/adding-a-task.md.
"""

from __future__ import annotations

from lmtool.training.classifier import ClassifierResult, finetune_classifier
from lmtool.training.config import TrainConfig
from lmtool.training.denoising import train_denoising
from lmtool.training.evaluate import evaluate
from lmtool.training.finetune import FinetuneResult, finetune_lm
from lmtool.training.flags import TrainFlags
from lmtool.training.pretrain import PretrainResult, pretrain
from lmtool.training.seq2seq import finetune_seq2seq, train_seq2seq
from lmtool.training.trainer import Callback, Trainer, train

__all__ = ["Callback", "ClassifierResult", "FinetuneResult", "PretrainResult", "TrainConfig",
           "TrainFlags", "Trainer", "evaluate", "finetune_classifier", "finetune_lm",
           "finetune_seq2seq", "pretrain", "train", "train_denoising", "train_seq2seq"]
