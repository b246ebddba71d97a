"""The run lock: one training process per run directory; a killed holder blocks nothing."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import pytest
from lm_fixtures import TINY, make_shards
from test_resume import checkpoint_step, env, lmtool, wait_for_checkpoint

from lmtool.errors import RuntimeFailure
from lmtool.rundir import lock_path, run_lock


def test_a_second_holder_is_refused_with_the_first_ones_pid_and_host(tmp_path):
    run = tmp_path / "runs" / "lm"
    with run_lock(run):
        assert lock_path(run).exists()
        with pytest.raises(RuntimeFailure) as caught, run_lock(run):
            pass
        message = str(caught.value)
        assert f"pid {os.getpid()} on {socket.gethostname()}" in message
        assert str(run) in message
    assert not lock_path(run).exists()  # released and removed
    with run_lock(run):  # and free again
        pass
    assert not (tmp_path / "runs").exists()  # the directories it made for nothing are gone


HOLD = """
import sys, time
from lmtool.rundir import run_lock
with run_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(600)
"""


def test_a_lock_left_by_a_killed_process_does_not_block(tmp_path):
    run = tmp_path / "lm"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdout=subprocess.PIPE,
                              text=True, env=env())
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RuntimeFailure, match=f"pid {holder.pid} "), run_lock(run):
            pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert lock_path(run).exists()  # kill -9 left the file behind...
    with run_lock(run):  # ...but not the lock: the kernel dropped it with the process
        pass


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return make_shards(tmp_path_factory.mktemp("lock"), kind="char", vocab_size=64)


def test_two_pretrain_processes_on_one_run(shards, tmp_path):
    """A --resume started while the first still trains is refused; after a kill -9 of the
    first, the next --resume trains."""
    run = tmp_path / "run"
    args = ["pretrain", shards, "-o", run, *TINY, "--batch-size", "4", "--save-every", "5",
            "--eval-every", "0", "--quiet", "--epochs", "1000"]  # a long run: killed, not done
    first = subprocess.Popen(lmtool(*args, "--max-steps", "100000"), env=env(),
                             stderr=subprocess.PIPE, text=True)
    try:
        wait_for_checkpoint(first, run, 5)
        second = subprocess.run(lmtool(*args, "--max-steps", "100000", "--resume"), env=env(),
                                capture_output=True, text=True, timeout=300)
        assert second.returncode == 1, second.stderr
        assert second.stderr.count("\n") == 1
        assert f"being written by another lmtool process (pid {first.pid} on " in second.stderr
        assert first.poll() is None  # the first one trains on, undisturbed
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    stopped = checkpoint_step(run)
    third = subprocess.run(lmtool(*args, "--max-steps", str(stopped + 5), "--resume"),
                           env=env(), capture_output=True, text=True, timeout=300)
    assert third.returncode == 0, third.stderr
    assert checkpoint_step(run) == stopped + 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no lock, no temporaries


def test_an_unwritable_place_names_the_run_not_its_lock(tmp_path, read_only):
    """The user never typed the lock's name (.run.lock): the error names the run."""
    locked = tmp_path / "locked"
    locked.mkdir()
    read_only(locked)
    with pytest.raises(PermissionError) as caught, run_lock(locked / "run"):
        pass
    assert caught.value.filename == str(locked / "run")
