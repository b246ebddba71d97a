"""Who may write a run directory: one training process at a time, over an earlier run
only when the user said so (--resume, --force), and never over anything else
(lmtool.outputs has the rule).

    with claim_run(RUN, resume=False, force=False):   # for the whole life of the training
        ...

The lock is an flock on a hidden sibling, `.RUN.lock` (not inside RUN: every checkpoint
swaps RUN for a new directory). The kernel drops an flock when its process dies, however
it dies, so a run killed with kill -9 never blocks the next --resume; the holder's pid
and host, written into the file, name it when a second process is refused.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from lmtool.errors import BadInput, RuntimeFailure
from lmtool.fsio import make_parents, named, umask
from lmtool.outputs import RUN, existing
from lmtool.outputs import is_run as is_run  # where callers have always found it
from lmtool.runfiles import STATE, TRAINER
from lmtool.wording import count


def lock_path(run_dir: Path) -> Path:
    run_dir = Path(os.path.abspath(run_dir))
    return run_dir.with_name(f".{run_dir.name}.lock")


def _holder(fd: int) -> str:
    """What the holding process wrote into the lock file, for the message."""
    try:
        info = json.loads(os.pread(fd, 4096, 0))
        return f"pid {info['pid']} on {info['host']}, since {info['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that is still starting"


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold the run's lock until the block ends; RuntimeFailure naming the holder if
    another process has it."""
    path = lock_path(run_dir)
    created = make_parents(path)
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666 & ~umask())
        except OSError as e:  # the user never typed the lock's name: name their path
            raise named(OSError(e.errno, e.strerror), run_dir) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise RuntimeFailure(
                f"{run_dir} is being written by another lmtool process ({holder})",
                "wait for it to finish or stop it; one process trains a run at a time",
            ) from None
        # The previous holder unlinks the file as it leaves: if it did so between our
        # open and flock, we locked an orphan; start again on the file now there.
        with contextlib.suppress(FileNotFoundError):
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                break
        os.close(fd)
    try:
        since = time.strftime("%Y-%m-%d %H:%M:%S")
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                  "since": since}).encode(), 0)
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # before unlocking: a waiter then retries on a new file
        os.close(fd)
        for directory in reversed(created):  # made for this run, and it left nothing
            with contextlib.suppress(OSError):
                directory.rmdir()


def check_run_output(run_dir: Path, *, resume: bool, force: bool) -> None:
    """Refuse to train into a path that holds something, unless told what to do; never
    over something that is not a run (lmtool.outputs has the rule)."""
    run_dir = Path(run_dir)
    earlier = existing(run_dir, RUN)
    if resume:
        if not earlier:
            raise BadInput(f"--resume: {run_dir} holds no run to resume",
                           "start a new run without --resume")
        return
    if force or not earlier:
        return
    try:
        step = json.loads((run_dir / TRAINER / STATE).read_text())["step"]
        done = f" ({count(step, 'step')} trained)"
    except (OSError, ValueError, KeyError, TypeError):
        done = ""
    raise BadInput(f"{run_dir} already holds a run{done}",
                   "pass --resume to continue it, with a higher --epochs to train longer, "
                   "or --force to start it again")


@contextlib.contextmanager
def claim_run(run_dir: Path, *, resume: bool, force: bool) -> Iterator[None]:
    """The run's lock and the check that training may write there, for the block's life.
    Under torchrun rank 0 alone writes the run, so it alone holds the lock (torchrun sets
    RANK; the other ranks only check)."""
    check_run_output(run_dir, resume=resume, force=force)  # before the lock: "/" has none
    if os.environ.get("RANK", "0") != "0":  # another rank: it only checks
        yield
        return
    with run_lock(run_dir):
        check_run_output(run_dir, resume=resume, force=force)  # again: it may have changed
        yield
