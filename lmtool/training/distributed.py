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
    """Leave the process group. Under DDP gloo's threads live on (the reducer keeps the
    group): the rank must still leave through `exit_rank`."""
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()


# Why a torchrun rank leaves with os._exit (lmtool.cli.main calls exit_rank).
# DDP's reducer keeps gloo's process group, and so its worker threads, alive after
# destroy_process_group (measured: the threads are still there at atexit). A worker that
# drops the last reference to a finished collective's tensor takes the GIL to release
# the tensor's Python object; if the main thread is already in Py_FinalizeEx, CPython
# ends the worker with pthread_exit, and its unwinding through a C++ destructor calls
# std::terminate: "terminate called without an active exception", exit -6, after a
# complete run. A core dump shows exactly that (pt_gloo_runloop: ~AsyncAllreduceWork ->
# TensorImpl::decref_pyobject -> take_gil -> PyThread_exit_thread -> std::terminate);
# upstream: pytorch/pytorch#190489 (a worker's decref during finalization), #179291.
# A barrier before destroy_process_group does not help (the group is not destroyed).
#
# Measured (torch 2.13.0 CPU, Python 3.11, 2 shared cores, OMP_NUM_THREADS=1), with
# `torchrun --standalone --nproc_per_node 2` on a bare script: init_process_group("gloo"),
# a DDP-wrapped Linear, one all_reduce, one all_reduce(async_op=True) of a 16 MB tensor
# left in flight, then
#   normal exit: 18 of 20 runs exited 0 (2 aborted, -6);
#   destroy_process_group, normal exit: 18 of 20 (2 aborted);
#   destroy_process_group, flush, os._exit(0): 20 of 20.
# With nothing left in flight (init, all_reduce, destroy, exit) 40 of 40 exited 0, with
# or without a DDP step: the abort needs a worker still holding a finished collective.
# Without DDP, destroy_process_group joins gloo's threads (none left after it).
# lmtool's own runs on the same machine did not abort before this change either
# (`torchrun ... -m lmtool pretrain` with the test's tiny settings: 40 of 40 exited 0;
# the --arch lstm one: 30 of 30; the test's clock worker: 30 of 30), nor after it
# (pretrain: 30 of 30): the window is a worker descheduled between finishing a
# collective and releasing it, so it shows under heavier load (~1 in 6 runs in CI).


def exit_rank(code: int | str | None) -> NoReturn:
    """End this torchrun rank with `code` (a `SystemExit.code`: None is 0, a message is
    printed and exits 1), without the interpreter's finalization (see above). Call it only
    once everything is written: lmtool writes its files in `with` blocks or atomically,
    and the two streams are flushed here."""
    status = 0 if code is None else code if isinstance(code, int) else 1
    if isinstance(code, str):
        sys.stderr.write(code + "\n")
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # results that cannot be delivered are a failure
            status = status or 1
    os._exit(status)
