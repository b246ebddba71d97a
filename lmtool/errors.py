"""User-facing errors. Library code raises these; the CLI turns them into one stderr line.

Exit codes (DESIGN.md): 2 usage / bad input, 1 runtime failure, 130 interrupted; 3 when
the work was done but some inputs were skipped (each reported on stderr).
"""

from __future__ import annotations

EXIT_RUNTIME = 1
EXIT_USAGE = 2
EXIT_PARTIAL = 3  # done, but some inputs were skipped: a script can tell
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # what a shell reports for a writer killed by SIGPIPE


class LmtoolError(Exception):
    """An error the user can act on: `message` says what is wrong, `hint` what to do."""

    exit_code = EXIT_RUNTIME

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class BadInput(LmtoolError):
    """Bad flags, missing or malformed input files: exit code 2."""

    exit_code = EXIT_USAGE


class OutputExists(BadInput):
    """An output is already there and --force was not given."""

    def __init__(self, path: object):
        super().__init__(f"{path} already exists", "pass --force to overwrite it")


class RuntimeFailure(LmtoolError):
    """The input was fine but the work failed (diverged training, device error): exit 1."""

    exit_code = EXIT_RUNTIME


class Interrupted(LmtoolError):
    """The user pressed Ctrl-C; whatever could be saved was saved: exit 130."""

    exit_code = EXIT_INTERRUPTED


class SomeSkipped(LmtoolError):
    """The command did its work but left some inputs out, as it reported: exit 3."""

    exit_code = EXIT_PARTIAL
