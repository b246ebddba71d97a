"""Man pages under man/ match the CLI, are valid roff, and shell completion works."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lmtool import __version__
from lmtool.cli.main import app
from lmtool.cli.manpage import render_pages, write_pages

MAN = Path(__file__).resolve().parent.parent / "man"
REGENERATE = "man/ is stale: run `.venv/bin/python scripts/make_man.py` and commit man/"


def test_man_pages_are_up_to_date(tmp_path):
    write_pages(app, tmp_path)
    fresh = {p.name: p.read_text(encoding="utf-8") for p in tmp_path.glob("*.1")}
    committed = {p.name: p.read_text(encoding="utf-8") for p in MAN.glob("*.1")}
    assert sorted(fresh) == sorted(committed), REGENERATE
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"{REGENERATE} (differs: {', '.join(stale)})"


def test_one_page_per_command_with_the_required_sections():
    pages = render_pages(app)
    for name in ("lmtool.1", "lmtool-tokenize.1", "lmtool-tokenize-train.1",
                 "lmtool-corpus-list.1", "lmtool-corpus-download.1"):
        assert name in pages
    for name, text in pages.items():
        lines = text.splitlines()
        assert lines[0].startswith(f'.TH "{name[:-2].upper()}" "1"'), name
        for section in (".SH NAME", ".SH SYNOPSIS", ".SH DESCRIPTION", ".SH EXIT STATUS",
                        ".SH ENVIRONMENT"):
            assert section in lines, f"{name} has no {section}"
        assert "\\fB130\\fR" in text and "\\fBLMTOOL_DEBUG\\fR" in text, name
        assert "\\fBLMTOOL_CACHE\\fR" in text, name
        # Every --help ends with examples; the page keeps them verbatim (no filling).
        assert ".nf\nExamples:\n" in text, name
        assert "\b" not in text  # Click's verbatim marker is not printed


def test_pages_carry_options_defaults_arguments_and_links():
    pages = render_pages(app)
    download = pages["lmtool-corpus-download.1"]
    assert "\\fB\\-\\-cache\\-dir\\fR \\fI<path>\\fR" in download
    assert ".SH ARGUMENTS" in download and "\\fBname\\fR" in download
    assert "\\fBlmtool\\-corpus\\fR(1)" in download  # SEE ALSO the parent
    listing = pages["lmtool-corpus-list.1"]
    assert "[default: text]" in listing
    group = pages["lmtool-corpus.1"]
    assert ".SH COMMANDS" in group and "\\fBlmtool\\-corpus\\-download\\fR(1)" in group
    # The header names the version, and no date (pages must not change from day to day).
    assert all(p.startswith('.TH "') and f'"" "lmtool {__version__}"' in p.splitlines()[0]
               for p in pages.values())


def test_write_pages_removes_stale_pages_only(tmp_path):
    (tmp_path / "lmtool-gone.1").write_text(".TH GONE 1\n")
    (tmp_path / "other.7").write_text("not ours\n")
    write_pages(app, tmp_path)
    assert not (tmp_path / "lmtool-gone.1").exists()
    assert (tmp_path / "other.7").exists()
    assert (tmp_path / "lmtool.1").exists()


@pytest.mark.skipif(shutil.which("groff") is None, reason="groff is not installed")
def test_groff_renders_every_page_without_warnings(tmp_path):
    write_pages(app, tmp_path)
    result = subprocess.run(
        ["groff", "-man", "-Tutf8", "-ww", "-z", *sorted(map(str, tmp_path.glob("*.1")))],
        capture_output=True, text=True,
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr


def _complete(words: str, cword: int) -> list[str]:
    env = {**os.environ, "_LMTOOL_COMPLETE": "complete_bash", "COMP_WORDS": words,
           "COMP_CWORD": str(cword)}
    out = subprocess.run([sys.executable, "-m", "lmtool"], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_shell_completion_completes_commands_and_corpus_names():
    assert _complete("lmtool tok", 1) == ["tokenize"]
    assert set(_complete("lmtool corpus ", 2)) == {"list", "download"}
    assert _complete("lmtool corpus download tiny", 3) == ["tiny-shakespeare"]


def test_show_completion_prints_a_bash_script(cli):
    result = cli("--show-completion", "bash")
    assert result.exit_code == 0
    assert "complete " in result.stdout and "_LMTOOL_COMPLETE=complete_bash" in result.stdout
