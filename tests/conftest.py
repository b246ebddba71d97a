"""Shared fixtures. Tests run on the CPU with tiny models, everything under tmp_path."""

from __future__ import annotations

import os

import pytest

# One thread per test process: tests that start subprocesses (torchrun, the CLI) would
# otherwise fight over the two cores and run 10x slower.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session", autouse=True)
def _precision_never_measured(tmp_path_factory):
    """`--precision auto` on a CPU with AVX512-BF16 but no AMX measures bf16 against fp32
    once per machine and caches the result. Tests never measure: their caches say "bf16
    is not faster" (so they train in fp32 wherever the flags do not say bf16), this one
    for runs that module-scoped fixtures train, each test's own below."""
    from lmtool.device import remember_bf16_speedup

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LMTOOL_CACHE", str(tmp_path_factory.mktemp("session-cache")))
        remember_bf16_speedup(1.0)
        yield


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    """No test reads or writes the real $HOME or cache directories."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    monkeypatch.setenv("LMTOOL_CACHE", str(home / ".cache" / "lmtool"))
    monkeypatch.delenv("LMTOOL_DEBUG", raising=False)
    from lmtool.device import remember_bf16_speedup

    remember_bf16_speedup(1.0)  # see _precision_never_measured


@pytest.fixture
def cli():
    """Invoke the CLI in-process; stdout and stderr are kept apart."""
    from typer.testing import CliRunner

    from lmtool.cli.main import app

    runner = CliRunner()

    def run(*args: str, input: str | bytes | None = None):
        return runner.invoke(app, [str(a) for a in args], input=input)

    return run


@pytest.fixture
def read_only(monkeypatch):
    """read_only(directory): nothing can be created under `directory` any more (EACCES).

    Permission bits do the job for a normal user; root ignores them (tests run as root
    in CI), so there every way lmtool creates a file or directory (os.open, os.mkdir,
    open) is made to fail for paths under it, as the kernel would.
    """
    import builtins
    import errno

    locked: list[str] = []

    def deny(directory):
        directory = os.path.abspath(directory)
        if os.geteuid() != 0:
            os.chmod(directory, 0o500)
            locked.append(directory)
            return

        def under(path) -> bool:
            try:
                return os.path.abspath(os.fsdecode(path)).startswith(directory + os.sep)
            except TypeError:  # a file descriptor
                return False

        def refuse(path):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fsdecode(path))

        real_open, real_mkdir, real_builtin_open = os.open, os.mkdir, builtins.open

        def os_open(path, flags, *args, **kwargs):
            if flags & (os.O_CREAT | os.O_WRONLY | os.O_RDWR) and under(path):
                refuse(path)
            return real_open(path, flags, *args, **kwargs)

        def mkdir(path, *args, **kwargs):
            if under(path):
                refuse(path)
            return real_mkdir(path, *args, **kwargs)

        def builtin_open(file, mode="r", *args, **kwargs):
            if any(c in mode for c in "wax+") and under(file):
                refuse(file)
            return real_builtin_open(file, mode, *args, **kwargs)

        monkeypatch.setattr(os, "open", os_open)
        monkeypatch.setattr(os, "mkdir", mkdir)
        monkeypatch.setattr(builtins, "open", builtin_open)

    yield deny
    for directory in locked:
        os.chmod(directory, 0o700)
