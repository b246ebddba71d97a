"""User-facing errors. Library code raises these; the CLI turns them into one stderr line.

Exit codes (DESIGN.md): 2 usage / bad input, 1 runtime failure, 130 interrupted, 141
stdout closed early; 3 when the work was done but some inputs were skipped (each reported
on stderr); 4 when an optional part of lmtool is not installed (`pip install 'lmtool[plot]'`).
"""

from __future__ import annotations

import errno

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_USAGE = 2
EXIT_PARTIAL = 3  # done, but some inputs were skipped: a script can tell
EXIT_MISSING_EXTRA = 4  # an optional extra (lmtool[plot]) is not installed
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


class MissingExtra(LmtoolError):
    """A command needs an optional extra that is not installed: exit 4."""

    exit_code = EXIT_MISSING_EXTRA

    def __init__(self, package: str, extra: str):
        super().__init__(f"{package} is not installed", f"pip install 'lmtool[{extra}]'")


class SomeSkipped(LmtoolError):
    """The command did its work but left some inputs out, as it reported: exit 3."""

    exit_code = EXIT_PARTIAL


# OS errors about the path itself: the user named a wrong one (exit 2). Anything else
# (a full disk, an I/O error) is the machine failing the work (exit 1).
_BAD_PATH = {
    errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.EACCES, errno.EPERM, errno.EROFS,
    errno.EEXIST, errno.ENAMETOOLONG, errno.ELOOP, errno.ENOTEMPTY,
}
_HINTS = {
    errno.ENOSPC: "free some space and run it again",
    errno.EDQUOT: "free some space and run it again",
    errno.EFBIG: "the file system or `ulimit -f` limits the file size",
    errno.EACCES: "check its permissions, or choose another path",
    errno.EPERM: "check its permissions, or choose another path",
    errno.EROFS: "choose a writable location",
    errno.ENOTDIR: "a file is where a directory should be",
    errno.EISDIR: "a directory is where a file should be",
    errno.ENOENT: "check the path",
}


def from_os_error(error: OSError) -> LmtoolError:
    """An OSError as the one line a user reads: the path, the system's reason, a hint."""
    reason = error.strerror or str(error)
    where = [str(name) for name in (error.filename, error.filename2) if name is not None]
    message = f"{' -> '.join(where)}: {reason}" if where else reason
    kind = BadInput if where and error.errno in _BAD_PATH else RuntimeFailure
    hint = _HINTS.get(error.errno)
    if hint and where and error.errno in (errno.ENOSPC, errno.EDQUOT):
        hint += "; outputs are only replaced when complete"  # (fsio names every output)
    return kind(message, hint)
