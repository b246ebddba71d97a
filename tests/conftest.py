"""Shared fixtures. Tests run on the CPU with tiny models, everything under tmp_path."""

from __future__ import annotations

import os

import pytest

# One thread per test process: tests that start subprocesses (torchrun, the CLI) would
# otherwise fight over the two cores and run 10x slower.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    """No test reads or writes the real $HOME or cache directories."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    monkeypatch.setenv("LMTOOL_CACHE", str(home / ".cache" / "lmtool"))
    monkeypatch.delenv("LMTOOL_DEBUG", raising=False)


@pytest.fixture
def cli():
    """Invoke the CLI in-process; stdout and stderr are kept apart."""
    from typer.testing import CliRunner

    from lmtool.cli.main import app

    runner = CliRunner()

    def run(*args: str, input: str | bytes | None = None):
        return runner.invoke(app, [str(a) for a in args], input=input)

    return run
