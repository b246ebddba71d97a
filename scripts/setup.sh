#!/usr/bin/env bash
# Create .venv and install lmtool into it, with the right PyTorch for this machine.
#
# PyTorch is installed first, pinned, so that pip picks the build it should:
#   - a Linux machine with PyPI gets the CUDA build (PyPI's default Linux wheel);
#   - macOS gets the MPS-capable build;
#   - a machine that keeps a CPU wheel locally (pip find-links) gets that one.
# Set LMTOOL_TORCH to choose another spec, e.g.
#   LMTOOL_TORCH="torch --index-url https://download.pytorch.org/whl/cpu" bash scripts/setup.sh
# Re-running is cheap: nothing is reinstalled that is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
py=.venv/bin/python

# torch.optim.Muon arrived in 2.9: an older torch in the venv is replaced by the pin.
if ! "$py" -c "import sys, torch; sys.exit(tuple(map(int, torch.__version__.split('.')[:2])) < (2, 9))" 2>/dev/null; then
  # shellcheck disable=SC2086
  "$py" -m pip install --quiet --disable-pip-version-check ${LMTOOL_TORCH:-torch==2.13.0}
fi
if ! "$py" -c "import lmtool, pytest, ruff" 2>/dev/null \
   || [ pyproject.toml -nt .venv/.lmtool-installed ]; then
  "$py" -m pip install --quiet --disable-pip-version-check -e ".[dev]"
  touch .venv/.lmtool-installed
fi
