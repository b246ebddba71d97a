"""Tensor files: safetensors only, read and written by its library, with errors a person
can act on (an I/O failure as the OSError it is, naming the file; anything that is not
safetensors, a pickle included, as a corrupt file: never unpickled)."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from lmtool.errors import BadInput

if TYPE_CHECKING:
    import torch


@contextlib.contextmanager
def safetensors_errors(path: Path) -> Iterator[None]:
    """The library's SafetensorError as ours: an I/O failure as the OSError it wraps
    (Rust's "(os error 28)"), anything else (not safetensors, truncated) as corrupt."""
    from safetensors import SafetensorError

    try:
        yield
    except SafetensorError as e:
        if found := re.search(r"\(os error (\d+)\)", str(e)):
            raise OSError(int(found[1]), os.strerror(int(found[1])), str(path)) from None
        raise BadInput(f"{path} is not a readable safetensors file ({e})",
                       "the checkpoint is corrupt or not lmtool's; lmtool never loads "
                       "pickles") from None


def need_file(path: Path) -> Path:
    """`path`, or BadInput: a checkpoint file is missing."""
    if not path.is_file():
        raise BadInput(f"{path} is missing", "the checkpoint is incomplete")
    return path


def write_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    with safetensors_errors(path):
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(path))


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    with safetensors_errors(need_file(path)):
        return load_file(str(path))


def tensor_shapes(path: Path) -> dict[str, list[int]]:
    """Name → shape of every tensor in a safetensors file, read from its header alone."""
    from safetensors import safe_open

    with safetensors_errors(need_file(path)), safe_open(str(path), framework="pt") as f:
        return {name: list(f.get_slice(name).get_shape()) for name in f.keys()}  # noqa: SIM118
