"""fsio: atomic files and directories under faults, the errors they raise, their modes."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from lmtool import fsio
from lmtool.errors import BadInput, OutputExists, from_os_error


def enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_atomic_file_full_disk_keeps_the_old_file_and_names_the_path(tmp_path, monkeypatch):
    out = tmp_path / "tok.json"
    out.write_text("old")
    monkeypatch.setattr(os, "fsync", enospc)  # where a full disk shows on NFS / delalloc
    with pytest.raises(OSError) as caught, fsio.atomic_file(out, "w") as f:
        f.write("new")
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(out)
    assert out.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tok.json"]


def test_atomic_dir_failure_in_the_swap_leaves_the_old_directory(tmp_path, monkeypatch):
    out = tmp_path / "data"
    out.mkdir()
    (out / "a.bin").write_text("old")
    monkeypatch.setattr(fsio, "exchange", lambda a, b: False)
    real_rename = os.rename

    def rename(src, dst):
        if os.path.basename(src).startswith(".data.tmp-"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(OSError) as caught, fsio.atomic_dir(out, force=True) as tmp:
        (tmp / "a.bin").write_text("new")
    assert caught.value.filename == str(out)
    assert (out / "a.bin").read_text() == "old"  # the aside copy was put back
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_errors_inside_an_atomic_dir_name_the_final_path(tmp_path):
    out = tmp_path / "data"
    with pytest.raises(OSError) as caught, fsio.atomic_dir(out) as tmp:
        (tmp / "sub" / "x.bin").write_text("no sub/ here")
    assert caught.value.filename == str(out / "sub" / "x.bin")
    assert list(tmp_path.iterdir()) == []


def test_interrupt_removes_the_temporary_directory(tmp_path):
    with pytest.raises(KeyboardInterrupt), fsio.atomic_dir(tmp_path / "out") as tmp:
        (tmp / "half.bin").write_bytes(b"x")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_a_parent_that_is_a_file(tmp_path):
    (tmp_path / "notes.txt").write_text("keep")
    for target in (tmp_path / "notes.txt" / "tok.json", tmp_path / "notes.txt" / "a" / "b"):
        with pytest.raises(NotADirectoryError) as caught, fsio.atomic_file(target):
            pass
        assert caught.value.filename == str(tmp_path / "notes.txt")
    with pytest.raises(NotADirectoryError), fsio.atomic_dir(tmp_path / "notes.txt" / "d"):
        pass
    assert (tmp_path / "notes.txt").read_text() == "keep"


def test_a_directory_never_replaces_a_file(tmp_path):
    (tmp_path / "out").write_text("keep")
    with pytest.raises(BadInput, match="is a file"), fsio.atomic_dir(tmp_path / "out", force=True):
        pass
    assert (tmp_path / "out").read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_existing_outputs_need_force(tmp_path):
    (tmp_path / "f").write_text("x")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x").write_text("x")
    for path in (tmp_path / "f", tmp_path / "d"):
        with pytest.raises(OutputExists):
            fsio.check_output(path, force=False)
        fsio.check_output(path, force=True)
    (tmp_path / "empty").mkdir()
    fsio.check_output(tmp_path / "empty", force=False)


def test_unwritable_location(tmp_path, read_only):
    locked = tmp_path / "locked"
    locked.mkdir()
    read_only(locked)
    with pytest.raises(PermissionError) as caught, fsio.atomic_file(locked / "tok.json"):
        pass
    assert caught.value.filename == str(locked / "tok.json")  # not the temporary's name
    with pytest.raises(PermissionError) as caught, fsio.atomic_dir(locked / "data"):
        pass
    assert caught.value.filename == str(locked / "data")


def test_a_path_ending_in_dotdot_gets_its_temporary_beside_it(tmp_path, monkeypatch):
    """"a/b/.." names the directory a: the temporary goes beside a, not into a/b."""
    (tmp_path / "a" / "b").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    with fsio.atomic_dir(Path("a/b/.."), force=True) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".a.tmp-")
        (tmp / "x").write_text("x")
    assert sorted(os.listdir(tmp_path)) == ["a"] and os.listdir(tmp_path / "a") == ["x"]


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_outputs_follow_the_umask(tmp_path, mask):
    old = os.umask(mask)
    try:
        assert fsio.umask() == mask
        fsio.write_text_atomic(tmp_path / "tok.json", "{}")
        with fsio.atomic_dir(tmp_path / "data") as tmp:
            (tmp / "train.bin").write_bytes(b"\0")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "tok.json").stat().st_mode) == 0o666 & ~mask
    assert stat.S_IMODE((tmp_path / "data").stat().st_mode) == 0o777 & ~mask
    assert stat.S_IMODE((tmp_path / "data" / "train.bin").stat().st_mode) == 0o666 & ~mask


def test_os_errors_become_one_line_with_the_right_exit_code():
    full = from_os_error(OSError(errno.ENOSPC, "No space left on device", "runs/lm"))
    assert str(full).startswith("runs/lm: No space left on device (free some space")
    assert full.exit_code == 1
    for code in (errno.EACCES, errno.EROFS, errno.ENOTDIR, errno.ENOENT):
        assert from_os_error(OSError(code, os.strerror(code), "x")).exit_code == 2
    assert from_os_error(OSError(errno.EACCES, "Permission denied")).exit_code == 1  # no path
    moved = from_os_error(OSError(errno.EXDEV, "Invalid cross-device link", "a", None, "b"))
    assert moved.message == "a -> b: Invalid cross-device link" and moved.exit_code == 1
