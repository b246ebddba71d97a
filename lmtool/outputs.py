"""What an -o may be: the one rule every command that writes an output follows.

lmtool replaces an output as a whole (fsio builds the new one beside it and swaps it in),
so the rule is about what may stand at the path before:

1. nothing, or an empty directory: always fine;
2. an earlier lmtool output of the same kind: replaced with --force, refused without;
3. anything else is refused, --force or not: files lmtool did not write (beside an
   earlier output in its directory too), an output of another kind (shards where a run
   goes), the current directory or one above it, the home directory or one above it,
   and any path inside a run or shard directory (the next save of that output would
   delete it). --resume is refused the same way: its next save replaces the run.

An output is recognised by what lmtool writes in it: a run by config.json with the run
format, shards by meta.json with the shard format, a tokenizer file by being a tokenizers
JSON with lmtool's special tokens at ids 0..6 (what `tokenize train` writes; a tokenizer
from elsewhere is the user's, not ours to replace). Every run is the same kind: a
classifier run may replace a language-model run under --force, as the user asked.

    check_output(path, SHARDS, force=force)      # BadInput (exit 2) if it may not write
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lmtool.errors import BadInput, OutputExists
from lmtool.fsio import recover
from lmtool.runfiles import CONFIG, METRICS, TRAINER, WEIGHTS
from lmtool.runfiles import FORMAT as RUN_FORMAT
from lmtool.runfiles import TOKENIZER as RUN_TOKENIZER
from lmtool.text.shards import FORMAT as SHARDS_FORMAT
from lmtool.text.shards import META
from lmtool.text.shards import TOKENIZER as SHARDS_TOKENIZER
from lmtool.text.specials import SPECIAL_TOKENS

_TOKENIZER_BYTES = 256 << 20  # more than any tokenizer file (a 250k vocabulary: ~20 MB)


def _json(path: Path) -> object:
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None


def _format_in(path: Path, name: str, fmt: str) -> bool:
    data = _json(path / name)
    return isinstance(data, dict) and data.get("format") == fmt


def _holds_run(path: Path) -> bool:
    return _format_in(Path(path), CONFIG, RUN_FORMAT)


def is_run(path: Path) -> bool:
    """True when `path` holds an lmtool run (a config.json of our format)."""
    recover(Path(path))  # a checkpoint swap cut short leaves the run aside
    return _holds_run(path)


def is_shards(path: Path) -> bool:
    """True when `path` holds token shards (a meta.json of our format)."""
    return _format_in(Path(path), META, SHARDS_FORMAT)


def is_tokenizer(path: Path) -> bool:
    """True when `path` is a tokenizers JSON with lmtool's special tokens at ids 0..6."""
    path = Path(path)
    try:  # a big file is the user's data, not ours: decide without reading it all
        small = path.is_file() and path.stat().st_size <= _TOKENIZER_BYTES
    except OSError:
        small = False
    data = _json(path) if small else None
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        return False
    added = data.get("added_tokens")
    have = {t.get("id"): t.get("content") for t in added if isinstance(t, dict)} \
        if isinstance(added, list) else {}
    return all(have.get(i) == token for i, token in enumerate(SPECIAL_TOKENS))


@dataclass(frozen=True)
class Kind:
    noun: str  # in messages: "runs/lm holds a run, not token shards"
    place: str  # "notes.txt is a file, not a run directory"
    directory: bool  # a directory (run, shards) or one file (tokenizer)
    holds: Callable[[Path], bool]  # does this path hold an earlier output of the kind?
    # What lmtool writes at the top of such a directory (checkpoint.save_checkpoint,
    # text.encode.encode_corpus): anything else there is the user's, and replacing the
    # directory would delete it. A writer that adds a file adds its name here.
    names: frozenset[str] = frozenset()


def _holds_export(path: Path) -> bool:
    """A model directory `lmtool export` wrote (its config.json says so)."""
    data = _json(Path(path) / CONFIG)
    return isinstance(data, dict) and "lmtool_export" in data


RUN = Kind("a run", "a run directory", True, _holds_run,
           frozenset({CONFIG, WEIGHTS, RUN_TOKENIZER, METRICS, TRAINER}))
SHARDS = Kind("token shards", "a shard directory", True, is_shards,
              frozenset({META, SHARDS_TOKENIZER, "train.bin", "val.bin"}))
TOKENIZER = Kind("a tokenizer", "the tokenizer file", False, is_tokenizer)
EXPORT = Kind("an exported model", "an export directory", True, _holds_export,
              frozenset({CONFIG, WEIGHTS, RUN_TOKENIZER, "tokenizer_config.json"}))
# outputs that are replaced as a whole, what is inside too
_DIRECTORIES = (RUN, SHARDS, EXPORT)


def _guarded(real: Path) -> str | None:
    """Why lmtool must never replace `real` (a resolved path), or None."""
    places = []
    with contextlib.suppress(OSError):  # the current directory was deleted: none to keep
        places.append((Path.cwd().resolve(), "the current directory"))
    if os.environ.get("HOME"):
        places.append((Path(os.environ["HOME"]).resolve(), "your home directory"))
    for place, name in places:
        if real == place:
            return f"is {name}"
        if real in place.parents:
            return "is the root directory" if real == real.parent else f"is above {name}"
    return None


def _container(real: Path) -> tuple[Path, Kind] | None:
    """The run or shard directory `real` lies inside, if any."""
    for parent in real.parents:
        for kind in _DIRECTORIES:
            if kind.holds(parent):
                return parent, kind
    return None


def existing(path: Path, kind: Kind) -> bool:
    """True when `path` holds an earlier lmtool output of `kind` (--force may replace
    it); False when nothing is there or an empty directory. BadInput for anything lmtool
    must never replace, naming `path` as the user gave it."""
    path = Path(path)
    another = f"choose another -o; --force replaces only {kind.noun} lmtool wrote"
    real = Path(os.path.realpath(path))
    why = _guarded(real)
    if why:
        raise BadInput(f"{path} {why}",
                       "lmtool replaces its output as a whole; give -o a new name")
    inside = _container(real)
    if inside:
        where = inside[0] if path.is_absolute() else os.path.relpath(inside[0])
        raise BadInput(f"{path} is inside {where}, {inside[1].place}",
                       f"choose a path outside it: lmtool replaces {where} as a whole")
    if kind.directory:
        recover(path)
    if not os.path.lexists(path):
        return False
    if kind.directory and not path.is_dir():
        raise BadInput(f"{path} is a file, not {kind.place}", "choose another -o")
    if not kind.directory and path.is_dir():
        raise BadInput(f"{path} is a directory, in the way of {kind.place}",
                       "choose a file name for -o, such as tok.json")
    names = set(os.listdir(path)) if kind.directory else set()
    if kind.directory and not names:
        return False
    if kind.holds(path):
        theirs = sorted(names - kind.names)
        if theirs:
            shown = ", ".join(theirs[:3]) + (", ..." if len(theirs) > 3 else "")
            raise BadInput(f"{path} holds {kind.noun} and files lmtool did not write "
                           f"({shown})",
                           f"move them out first: lmtool replaces {path} as a whole")
        return True
    other = next((k for k in _DIRECTORIES if k is not kind and k.holds(path)), None)
    if other:
        raise BadInput(f"{path} holds {other.noun}, not {kind.noun}", another)
    if kind.directory:
        raise BadInput(f"{path} already holds other files", another)
    raise BadInput(f"{path} is not {kind.noun} lmtool wrote", another)


def check_output(path: Path, kind: Kind, *, force: bool) -> None:
    """Refuse what `existing` refuses, and an earlier output of `kind` without --force."""
    if existing(path, kind) and not force:
        raise OutputExists(path)
