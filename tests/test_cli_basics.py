import subprocess
import sys

from lmtool import __version__


def test_version(cli):
    result = cli("--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"lmtool {__version__}"


def test_python_dash_m():
    out = subprocess.run(
        [sys.executable, "-m", "lmtool", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == f"lmtool {__version__}"


def test_help_ends_with_examples(cli):
    result = cli("--help")
    assert result.exit_code == 0
    assert "Examples:" in result.stdout


def test_help_does_not_load_torch():
    """`lmtool --help` and the option choices come from torch-free modules (fast start)."""
    code = "import sys; from lmtool.cli.main import app; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_spelled_out_choices_match_the_library():
    from lmtool.cli.pretrain import Optimizer, Schedule
    from lmtool.training.config import OPTIMIZERS
    from lmtool.training.schedules import SCHEDULES

    assert [o.value for o in Optimizer] == list(OPTIMIZERS)
    assert [s.value for s in Schedule] == list(SCHEDULES)
