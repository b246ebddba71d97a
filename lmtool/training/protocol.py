"""What the trainer reads: training batches addressed by (epoch, index) and held-out
batches with their keys. The sources themselves, and what their batches hold, are
described in training/data.py."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any


class BatchSource:
    """Training batches addressed by (epoch, index). Subclasses set `batches_per_epoch`
    (batches in one pass over the data, all ranks together) and implement `batch`."""

    batches_per_epoch: int
    stateful: bool = False  # batch k+1 continues batch k row by row (carry the state)

    def batch(self, epoch: int, index: int) -> Any:
        """This rank's rows of batch `index` of `epoch`, as the objective's make_batch
        takes them."""
        raise NotImplementedError

    def lr_scale(self, epoch: int, index: int) -> float:
        """A factor on the learning rate for this batch (1: none)."""
        return 1.0


class EvalSource:
    """Held-out batches, each rank a share: (keys, raw) pairs (see training/data.py)."""

    stateful: bool = False

    def batches(self, rank: int = 0, world_size: int = 1) -> Iterator[tuple[Sequence[int], Any]]:
        raise NotImplementedError
