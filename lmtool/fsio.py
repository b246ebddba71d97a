"""Crash-safe output: everything is built in a temporary sibling, fsynced, then renamed.

A reader, or a crash at any instant (kill -9, power loss), sees either the old output or
the complete new one, never half of one. Outputs get the modes the umask asks for, as any
Unix tool's do. An OSError raised here always names the path the user asked for (never a
temporary name), so the CLI can report it in one line.

    with atomic_file(path, "w") as f: ...      # one file
    with atomic_dir(path, force=True) as tmp:  # a directory: fill `tmp`, it becomes `path`
        ...
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from lmtool.errors import BadInput, OutputExists


def umask() -> int:
    """The process's umask, read without changing it where Linux allows."""
    with contextlib.suppress(OSError, ValueError, StopIteration):
        status = Path("/proc/self/status").read_text()
        return int(next(line for line in status.splitlines() if line.startswith("Umask:"))
                   .split()[1], 8)
    mask = os.umask(0o022)  # elsewhere: set and restore (briefly racy with other threads)
    os.umask(mask)
    return mask


def check_output(path: Path, force: bool) -> None:
    """Refuse to overwrite an existing file or non-empty directory unless `force`."""
    path = Path(path)
    if path.is_dir():
        if any(path.iterdir()) and not force:
            raise OutputExists(path)
    elif os.path.lexists(path) and not force:
        raise OutputExists(path)


def make_dirs(path: Path) -> list[Path]:
    """mkdir -p `path`; return the directories created, outermost first.

    A file in the way becomes NotADirectoryError naming that file (mkdir would say
    "File exists" about a path the user may never have typed)."""
    missing = []
    path = Path(path)
    while not path.is_dir():
        if os.path.lexists(path):
            raise NotADirectoryError(errno.ENOTDIR, "Not a directory", str(path))
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):  # made meanwhile by another process
            directory.mkdir()
    return list(reversed(missing))


def make_parents(path: Path) -> list[Path]:
    """make_dirs for the directory `path` goes in."""
    return make_dirs(Path(path).parent)


def named(error: OSError, path: Path, tmp: Path | None = None) -> OSError:
    """`error` naming `path` when it names no file (os.write, fsync), and with `tmp`'s
    part of the names it has replaced by `path` (the user never saw `tmp`)."""
    if error.errno is None or isinstance(error, BrokenPipeError):
        return error
    names = [error.filename, error.filename2]
    if names[0] is None:
        names[0] = str(path)
    elif tmp is not None:
        names = [str(path) + str(n)[len(str(tmp)):] if n and str(n).startswith(str(tmp))
                 else n for n in names]
    if names == [error.filename, error.filename2]:
        return error
    renamed = OSError(error.errno, error.strerror, names[0], None, names[1])  # errno's class
    return renamed.with_traceback(error.__traceback__)  # LMTOOL_DEBUG shows where it was


def fsync_dir(path: Path) -> None:
    """Make a rename in `path` durable. Not every filesystem lets a directory be opened
    or fsynced; there is nothing more to do on those."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def settle_tree(root: Path) -> None:
    """Give everything under `root` the umask's modes (mkdtemp makes 0700, safetensors
    0600) and fsync it: files first (their errors count: they mean lost data), then the
    directories, deepest first."""
    mask = umask()
    directories = [root]
    for path in root.rglob("*"):
        if path.is_dir():
            directories.append(path)
            continue
        with contextlib.suppress(OSError):  # some filesystems (CIFS, FUSE) have no modes
            path.chmod(0o666 & ~mask)
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    for directory in reversed(directories):
        with contextlib.suppress(OSError):
            directory.chmod(0o777 & ~mask)
        fsync_dir(directory)


def exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False if the system
    or filesystem cannot."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                          ctypes.c_uint]
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def absolute(path: Path) -> Path:
    """`path` made absolute without following links: "." and "runs/.." get a name and a
    parent, as the temporary siblings need."""
    return Path(os.path.abspath(path))


def _aside(path: Path) -> Path:
    path = absolute(path)
    return path.with_name(f".{path.name}.aside")


def _tmp_prefix(path: Path) -> str:
    return f".{absolute(path).name}.tmp-"


def _naming(error: OSError, path: Path) -> OSError:
    """`error` about `path` alone: a temporary's name the user never typed must not
    show (`mkstemp` fails naming its candidate file)."""
    renamed = OSError(error.errno, error.strerror, str(path))
    return renamed.with_traceback(error.__traceback__)


def recover(path: Path) -> None:
    """Finish a fallback swap cut short: `path` missing, its aside copy present."""
    path = absolute(path)
    aside = _aside(path)
    if not os.path.lexists(path) and aside.is_dir():
        os.rename(aside, path)


def remove(path: Path) -> None:
    """Delete a file or a directory tree; nothing if it is not there."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _swap_in(tmp: Path, path: Path) -> None:
    """Put the finished `tmp` at `path` (absolute) in one step, then delete what was
    there."""
    if not os.path.lexists(path):
        os.rename(tmp, path)
    elif exchange(tmp, path):
        remove(tmp)  # it now holds the previous output
    else:
        aside = _aside(path)
        remove(aside)
        os.rename(path, aside)
        try:
            os.rename(tmp, path)  # a crash just before this: recover() undoes the first
        except OSError:
            os.rename(aside, path)
            raise
        remove(aside)
    fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_file(path: Path, mode: str = "wb") -> Iterator:
    """Open a temporary sibling of `path` for writing; on success fsync and rename it
    onto `path`. On any failure the temporary file is removed and `path` is untouched."""
    path = Path(path)
    try:
        make_parents(path)
    except OSError as e:
        raise named(e, path) from None
    try:
        fd, name = tempfile.mkstemp(prefix=_tmp_prefix(path), dir=absolute(path).parent)
    except OSError as e:
        raise _naming(e, path) from None
    tmp = Path(name)
    try:
        with contextlib.suppress(OSError):  # mkstemp makes 0600; not all filesystems care
            os.fchmod(fd, 0o666 & ~umask())
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(tmp.parent)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise named(e, path, tmp) from None
        raise


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_file(path, "w") as f:
        f.write(text)


@contextlib.contextmanager
def atomic_dir(path: Path, *, force: bool = False, clean_stale: bool = False) -> Iterator[Path]:
    """Build a directory in a temporary sibling; on success it replaces `path` atomically.

    On any failure (Ctrl-C included) the temporary directory is removed and `path` is
    left as it was. A file at `path` is never replaced by a directory. `clean_stale`
    first deletes temporaries a killed writer left; only a caller that knows no other
    process writes `path` (it holds the run lock) may ask for it.
    """
    path = Path(path)
    recover(path)
    if os.path.lexists(path) and not path.is_dir():
        raise BadInput(f"{path} is a file, not a directory",
                       "remove it or choose another output path")
    check_output(path, force)
    parent = absolute(path).parent
    try:
        make_parents(path)
        if clean_stale:
            for stale in parent.glob(_tmp_prefix(path) + "*"):
                remove(stale)
    except OSError as e:
        raise named(e, path) from None
    try:
        tmp = Path(tempfile.mkdtemp(prefix=_tmp_prefix(path), dir=parent))
    except OSError as e:
        raise _naming(e, path) from None
    try:
        yield tmp
        settle_tree(tmp)
        _swap_in(tmp, absolute(path))  # "a/b/.." cannot be renamed; the directory it names can
    except BaseException as e:
        remove(tmp)
        if isinstance(e, OSError):
            raise named(named(e, path, tmp), path, absolute(path)) from None
        raise
