"""The best-evaluation keeper: the checkpointer `finetune classifier` and `finetune lm`
give the run builder, so that RUN/model.safetensors always holds the weights that scored
best on the held-out data so far (the classifier: by accuracy, then loss; a language
model: by loss, the base run's weights at step 0 included)."""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch

from lmtool.checkpoint import TrainerState
from lmtool.training.run import Checkpointer


def better(row: dict, best: dict | None) -> bool:
    """Higher held-out accuracy, then lower loss."""
    if best is None:
        return True
    return (row["val_accuracy"], -row["val_loss"]) > (best["val_accuracy"], -best["val_loss"])


def lower_loss(row: dict, best: dict | None) -> bool:
    """Lower held-out loss (a language model's: lower perplexity)."""
    return best is None or row["val_loss"] < best["val_loss"]


def resume_from_last(model: torch.nn.Module, state: TrainerState
                     ) -> tuple[torch.nn.Module, bool]:
    """A resumed run's best model (what model.safetensors holds: the loaded `model`) and
    whether the last step's weights, saved apart as `last.*`, were loaded into `model`
    to go on from (then the weights training continues with are not the best)."""
    last = {k.removeprefix("last."): v for k, v in state.tensors.items()
            if k.startswith("last.")}
    best_model = copy.deepcopy(model)
    if last:
        model.load_state_dict(last)
    return best_model, bool(last)


class BestCheckpointer(Checkpointer):
    """Saves the best epoch's weights as the run's model and, when the last step's
    weights differ, those as `last.*` tensors in RUN/trainer/ for `--resume`.

    Also annotates each evaluation row with its epoch and the layer groups training,
    before the metrics log records it (this callback comes first)."""

    def __init__(self, run_dir, config, tokenizer_json, metrics, *,
                 model: torch.nn.Module, best: dict | None,
                 better: Callable[[dict, dict | None], bool] = better,
                 from_start: bool = False, current_is_best: bool = True):
        super().__init__(run_dir, config, tokenizer_json, metrics)
        self.best = best
        self.better = better
        self.from_start = from_start  # the evaluation at step 0 (the start) may be best
        self.best_model = copy.deepcopy(model).cpu()  # the weights of the best epoch so far
        self.current_is_best = current_is_best  # the model's weights are the best ones

    def on_eval(self, trainer, row: dict) -> None:
        row["epoch"] = round(row["step"] / trainer.limits.steps_per_epoch, 4)
        row["trainable_groups"] = trainer.trainable
        if row["step"] == 0 and not self.from_start:
            return
        if self.better(row, self.best):
            self.best = dict(row)
            self.best_model.load_state_dict(trainer.model.state_dict())
            self.current_is_best = True
        else:
            self.current_is_best = False

    def on_step(self, trainer) -> None:
        if self.best is not None:
            self.current_is_best = False  # the weights moved on from the best epoch's

    def on_save(self, trainer, state: TrainerState) -> None:
        from lmtool.checkpoint import save_checkpoint

        if self.best is None or self.current_is_best:
            model = trainer.model
        else:
            model = self.best_model
            # copies: tied weights (embedding and LM head) must not share memory on disk
            last = {f"last.{k}": v.detach().to("cpu", copy=True)
                    for k, v in trainer.model.state_dict().items()}
            state = TrainerState(state.step, state.epoch, state.tokens_seen, state.elapsed_s,
                                 state.optimizer, {**state.tensors, **last}, state.extra)
        self.config["best"] = self.best
        save_checkpoint(self.run_dir, model=model, config=self.config,
                        tokenizer_json=self.tokenizer_json, metrics=self.metrics.rows,
                        trainer=state)
        self.metrics.live = True
