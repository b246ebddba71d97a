"""fastai's own AWD-LSTM language model, timed step by step: run by benchmarks/lstm.py
with the Python of a virtual environment where fastai is installed (never lmtool's: the
two must not share an install). Prints one JSON line on stdout:
{"times": [seconds per step...], "tokens_per_step": B*T, "threads": n, "fastai": ...}.

fastai is driven the way its documentation trains a language model from scratch:
`language_model_learner(dls, AWD_LSTM, config=..., drop_mult=1.0, pretrained=False)`
and `fit_one_cycle`, so its loss (CrossEntropyLossFlat), AR/TAR callback (alpha 2, beta
1), state resetting and optimiser (its own Adam) are all its defaults.
"""

from __future__ import annotations

import sys

# Run as a script, Python puts benchmarks/ first on sys.path, where benchmarks/tokenize.py
# would shadow the standard `tokenize` module (which tracebacks and fastai's imports use).
del sys.path[0]

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from fastai import __version__ as fastai_version  # noqa: E402
from fastai.callback.core import Callback, CancelFitException  # noqa: E402
from fastai.data.core import DataLoaders  # noqa: E402
from fastai.text.all import (  # noqa: E402
    AWD_LSTM,
    LMDataLoader,
    awd_lstm_lm_config,
    language_model_learner,
)


class StepTimer(Callback):
    """The time between the starts of consecutive batches: everything fastai does per
    step. Stops the fit once `warmup + steps` steps are timed."""

    order = -100  # before every other callback

    def __init__(self, warmup: int, steps: int):
        self.warmup, self.steps = warmup, steps
        self.starts: list[float] = []

    def before_batch(self) -> None:
        self.starts.append(time.perf_counter())
        if len(self.starts) > self.warmup + self.steps:
            raise CancelFitException

    def times(self) -> list[float]:
        return np.diff(self.starts)[self.warmup :].tolist()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--tokens", required=True, help=".npy of int64 token ids (the corpus)")
    p.add_argument("--vocab", type=int, required=True)
    p.add_argument("--emb", type=int, required=True)
    p.add_argument("--hidden", type=int, required=True)
    p.add_argument("--layers", type=int, required=True)
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--bptt", type=int, required=True)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--bf16", action="store_true", help="learn.to_bf16(): bf16 autocast")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    ids = torch.from_numpy(np.load(args.tokens))  # (N,) int64
    train = LMDataLoader([ids], bs=args.batch, seq_len=args.bptt, shuffle=False)
    valid = LMDataLoader([ids[: args.batch * args.bptt * 2]], bs=args.batch, seq_len=args.bptt)
    dls = DataLoaders(train, valid, device=torch.device("cpu"))
    dls.vocab = [f"w{i}" for i in range(args.vocab)]  # only its length matters here
    config = dict(awd_lstm_lm_config, emb_sz=args.emb, n_hid=args.hidden, n_layers=args.layers)
    timer = StepTimer(args.warmup, args.steps)
    learn = language_model_learner(dls, AWD_LSTM, config=config, drop_mult=1.0,
                                   pretrained=False, cbs=[timer])
    if args.bf16:
        learn.to_bf16()
    with learn.no_bar(), learn.no_logging():
        learn.fit_one_cycle(1, 1e-3)
    print(json.dumps({"times": timer.times(), "tokens_per_step": args.batch * args.bptt,
                      "threads": torch.get_num_threads(), "fastai": fastai_version,
                      "torch": torch.__version__}))


if __name__ == "__main__":
    main()
