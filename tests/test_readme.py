"""The README's command lines, run as a new user runs them: in order, on a fresh clone.

Why this test exists: a new user who copied "A day with lmtool" line by line met a path
that did not exist, a line that failed because an earlier line had made its output, and
warnings the README did not mention (issue 14). A README nobody runs goes stale, so this
test runs it. It knows no commands: it runs whatever lines the README's runnable blocks
hold, so a line added to the README is tested by adding it.

How README.md marks its fenced blocks (a block without an info string fails this test,
so every new block gets classified):

    ```sh            run here: every line, in the order the blocks appear
    ```sh untested   commands NOT run here: they need data from outside the repository,
                     minutes of training, or run this very suite
    ```text          not commands: layouts, transcripts

How a line runs: each in its own `bash -o pipefail -c` (so every command of a pipeline
must succeed), all in one directory holding a copy of `corpora/` and nothing else, as a
fresh clone would after `cd`, with `lmtool` and `torchrun` running this checkout and
one thread per process. Only files carry from one line to the next (no `cd`, no
variables). `\\` continues a line; `#` starts a comment. Every line must exit 0 and
print no `lmtool: warning:` (a warning the README does not mention is what a new user
trips over, e.g. a --vocab-size the corpus cannot fill), unless its comment says `warns`.

- A line whose comment starts with `# interactive` runs under a pseudo-terminal and is
  typed a line of text, Enter, then Ctrl-D (quit).
- `lmtool corpus download` never reaches a real host: LMTOOL_CORPUS_MANIFEST points at a
  copy of the shipped manifest whose addresses are a server on 127.0.0.1, which serves
  a small made-up text for every plain-text corpus (other formats are not served: a
  README line downloading one would fail here, to be marked `sh untested`).

The whole run must stay cheap (within about 3 minutes on 2 cores; run this file with -s
to see each line's wall and CPU time): lines that train do so with small limits
(`--max-steps`, `--epochs 1`), and the README says why.
"""

from __future__ import annotations

import hashlib
import json
import os
import pty
import re
import resource
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
RUN, UNTESTED, NOT_COMMANDS = "sh", "sh untested", "text"
LINE_TIMEOUT_S = 300


# --- Reading the README ----------------------------------------------------------------


def fenced_blocks(text: str) -> Iterator[tuple[int, str, list[str]]]:
    """(line number of the opening fence, info string, the block's lines)."""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = re.match(r"^ {0,3}(`{3,}|~{3,})(.*)$", lines[i])
        if not m:
            i += 1
            continue
        fence, info, start = m.group(1), m.group(2).strip(), i
        i += 1
        body = []
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i])
            i += 1
        i += 1  # the closing fence
        yield start + 1, info, body


def command_lines(body: list[str]) -> Iterator[str]:
    """A block's commands: comment-only and blank lines dropped, `\\` lines joined."""
    pending = ""
    for raw in body:
        line = raw.rstrip()
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        if line.strip() and not line.lstrip().startswith("#"):
            yield line.strip()
    if pending.strip():
        yield pending.strip()


def readme_commands() -> list[str]:
    return [
        line
        for _, info, body in fenced_blocks(README.read_text(encoding="utf-8"))
        if info == RUN
        for line in command_lines(body)
    ]


def test_every_fenced_block_says_whether_it_runs():
    unmarked = [
        f"README.md:{n}: ```{info}"
        for n, info, _ in fenced_blocks(README.read_text(encoding="utf-8"))
        if info not in (RUN, UNTESTED, NOT_COMMANDS)
    ]
    assert not unmarked, (
        f"give each fenced block one of the info strings {RUN!r} (run by this test), "
        f"{UNTESTED!r} or {NOT_COMMANDS!r}: " + "; ".join(unmarked)
    )
    assert readme_commands(), "the README has no ```sh block to run"


# --- The environment a new user has ----------------------------------------------------


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep the test output clean
        pass


def _made_up_text() -> bytes:
    """A stand-in for a plain-text corpus (never the real one: no network in tests)."""
    speeches = [
        "MILLER:\nThe wheel turns slow, and slower still the day.\n",
        "WARDEN:\nGo, fetch the lantern; night is at the gate.\n",
        "MILLER:\nI go, good warden, though my feet are lead.\n",
    ]
    return ("\n".join(speeches) * 40).encode()


@pytest.fixture
def corpus_server(tmp_path) -> Iterator[Path]:
    """A manifest whose every address is on 127.0.0.1; yields its path."""
    www = tmp_path / "www"
    www.mkdir()
    data = _made_up_text()
    manifest = json.loads((REPO / "corpora" / "manifest.json").read_text(encoding="utf-8"))
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(www)))
    url = f"http://127.0.0.1:{server.server_address[1]}"
    for corpus in manifest["corpora"]:
        for f in corpus["files"]:
            f["urls"] = [f"{url}/{corpus['name']}/{f['filename']}"]
            if f["format"] == "plain":
                (www / corpus["name"]).mkdir(exist_ok=True)
                (www / corpus["name"] / f["filename"]).write_bytes(data)
                f.update(size=len(data), sha256=hashlib.sha256(data).hexdigest(), md5=None)
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(manifest), encoding="utf-8")
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield path
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def clone(tmp_path, corpus_server, monkeypatch) -> Path:
    """A directory as a fresh clone has it (only `corpora/` matters to the README's
    lines), and an environment in which `lmtool` and `torchrun` run this checkout."""
    work = tmp_path / "clone"
    work.mkdir()
    shutil.copytree(REPO / "corpora", work / "corpora")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, module in (("lmtool", "lmtool"), ("torchrun", "torch.distributed.run")):
        shim = bin_dir / name
        shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m {module} "$@"\n')
        shim.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # torchrun's two ranks share 2 cores
    monkeypatch.setenv("LMTOOL_CORPUS_MANIFEST", str(corpus_server))
    return work


# --- Running a line --------------------------------------------------------------------


def _bash(line: str) -> list[str]:
    return ["bash", "-o", "pipefail", "-c", line]


def run_line(line: str, cwd: Path) -> tuple[int, str]:
    """Run `line` with no terminal (stdin empty); (exit code, stderr)."""
    proc = subprocess.Popen(
        _bash(line), cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        _, stderr = proc.communicate(timeout=LINE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the whole line: bash and what it started
        _, stderr = proc.communicate()
        return -signal.SIGKILL, f"timed out after {LINE_TIMEOUT_S} s\n{stderr}"
    return proc.returncode, stderr


def run_interactive(line: str, cwd: Path) -> tuple[int, str]:
    """Run `line` on a pseudo-terminal (stdin and stderr; stdout stays a pipe, as in
    `lmtool complete runs/lm > notes.txt`): wait for its screen to settle, type a line
    and Enter, then Ctrl-D."""
    import fcntl
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    proc = subprocess.Popen(
        _bash(line), cwd=cwd, stdin=slave, stdout=subprocess.DEVNULL, stderr=slave,
        start_new_session=True,
    )
    os.close(slave)
    screen = bytearray()
    deadline = time.monotonic() + LINE_TIMEOUT_S

    def settle(quiet_s: float = 0.5) -> None:
        """Read the screen until something was drawn and then nothing for `quiet_s`."""
        last = None
        while time.monotonic() < deadline and proc.poll() is None:
            ready, _, _ = select.select([master], [], [], 0.05)
            if ready:
                try:
                    screen.extend(os.read(master, 65536))
                except OSError:  # EIO: the process closed the terminal
                    return
                last = time.monotonic()
            elif last is not None and time.monotonic() - last > quiet_s:
                return

    try:
        for keys in (b"The baker", b"\r", b"\x04"):
            settle()
            os.write(master, keys)
        while proc.poll() is None and time.monotonic() < deadline:
            settle(0.2)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return -signal.SIGKILL, "timed out; the screen:\n" + screen.decode(errors="replace")
        return proc.returncode, screen.decode(errors="replace")
    finally:
        os.close(master)


def lmtool_warnings(stderr: str) -> list[str]:
    return [w.strip() for w in stderr.splitlines() if "lmtool: warning:" in w]


def problem(line: str, code: int, stderr: str) -> str | None:
    """What is wrong with a line's run, if anything."""
    if code != 0:
        return f"exited {code}"
    if re.search(r"#.*\bwarns\b", line):
        return None  # the README says this line warns
    unexpected = lmtool_warnings(stderr)
    if unexpected:
        return "warned (fix the line, or say `warns` in its comment): " + " | ".join(unexpected)
    return None


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def test_the_readme_runs_top_to_bottom_on_a_fresh_clone(clone):
    timings = ["  wall     cpu  line"]  # for the failure message, and for -s: where time goes
    for line in readme_commands():
        start, cpu = time.monotonic(), _children_cpu_s()
        interactive = re.search(r"#\s*interactive\b", line) is not None
        code, stderr = (run_interactive if interactive else run_line)(line, clone)
        timings.append(
            f"{time.monotonic() - start:6.1f}s {_children_cpu_s() - cpu:6.1f}s  {line}"
        )
        wrong = problem(line, code, stderr)
        assert wrong is None, (
            f"README line {wrong}:\n  {line}\n--- stderr (last 3000 characters):\n"
            f"{stderr[-3000:]}\n--- lines run so far:\n" + "\n".join(timings)
        )
    print("\n".join(timings))
