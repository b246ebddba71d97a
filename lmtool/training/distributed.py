"""Several processes under torchrun: PyTorch DDP, nothing home-made.

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK; without them everything here is a no-op
and the run is a single process.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import NoReturn

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    enabled: bool = False

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes checkpoints, metrics and logs."""
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))


def setup(device: torch.device) -> tuple[DistContext, torch.device]:
    """Join the process group when launched by torchrun; pick this rank's device."""
    if not launched_by_torchrun():
        return DistContext(), device
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ["LOCAL_RANK"])
    if device.type == "cuda":
        device = torch.device("cuda", local)  # one GPU per process
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistContext(rank, world, local, True), device


def wrap(model: torch.nn.Module, ctx: DistContext, device: torch.device) -> torch.nn.Module:
    if not ctx.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def all_sum(values: list[float], ctx: DistContext, device: torch.device) -> list[float]:
    """Element-wise sum over ranks (identity in a single process)."""
    if not ctx.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def all_gather_cat(tensor: torch.Tensor, dim: int, ctx: DistContext) -> torch.Tensor:
    """Every rank's `tensor` (all of one shape) concatenated along `dim` in rank order,
    on every rank (the tensor itself in a single process)."""
    if not ctx.enabled:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(ctx.world_size)]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim)


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def teardown(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()


def exit_rank(code: int | str | None) -> NoReturn:
    """End this torchrun rank with `code` (a `SystemExit.code`) once its work is done and
    written, without the interpreter's finalization.

    Why: DDP's reducer keeps gloo's process group, and so its worker threads, alive
    after `destroy_process_group` (measured: the threads are still there at `atexit`).
    A worker that drops the last reference to a finished collective's tensor then takes
    the GIL to release the tensor's Python object; if the main thread is already in
    `Py_FinalizeEx`, CPython ends that thread with `pthread_exit`, whose unwinding
    through a C++ destructor calls `std::terminate`: "terminate called without an
    active exception", exit -6, after a complete run. The core dump shows exactly this
    (pt_gloo_runloop: ~AsyncAllreduceWork -> TensorImpl::decref_pyobject ->
    take_gil -> PyThread_exit_thread -> std::terminate); upstream:
    pytorch/pytorch#190489 (a worker's decref during finalization) and #179291.
    `os._exit` skips finalization, so no thread can meet it; every file lmtool writes
    is closed by then (checkpoints and metrics are written atomically or in `with`),
    and the streams are flushed here.

    Measured on 2 shared cores, OMP_NUM_THREADS=1, torch 2.13.0 CPU, Python 3.11:
    a bare gloo + DDP script leaving one all_reduce in flight at exit aborted
    1 in 20 runs with a normal exit, 0 in 20 with this exit; see the report of issue 14
    for lmtool's own runs.
    """
    status = 0 if code is None else code if isinstance(code, int) else 1
    if isinstance(code, str):  # sys.exit("message") prints the message, exits 1
        sys.stderr.write(code + "\n")
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # results that cannot be delivered are a failure
            status = status or 1
    os._exit(status)
