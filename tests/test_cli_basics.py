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
