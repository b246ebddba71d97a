"""Public corpora: the manifest, downloads that resume and verify, unpacking to plain text.

    corpus = find_corpus("tiny-shakespeare")
    result = download_corpus("tiny-shakespeare")   # -> result.path: a directory of .txt/.tsv

Layout of the cache (default `$LMTOOL_CACHE/corpora`, else `$XDG_CACHE_HOME/lmtool/corpora`,
else `~/.cache/lmtool/corpora`):

    NAME/downloads/FILE        the archive as fetched (FILE.part while incomplete)
    NAME/text/                 the unpacked plain text and TSV files

Only the standard library is used (urllib, hashlib, zipfile, tarfile, gzip, csv).
"""

from __future__ import annotations

import contextlib
import csv
import fnmatch
import gzip
import hashlib
import io
import json
import os
import re
import tarfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any

from lmtool import __version__
from lmtool.errors import BadInput, RuntimeFailure
from lmtool.fsio import atomic_dir, make_dirs, named

MANIFEST_ENV = "LMTOOL_CORPUS_MANIFEST"
FORMATS = ("plain", "gz", "zip", "tar.gz")
CHUNK = 1 << 20  # bytes read from the network (and hashed) at a time
TIMEOUT_S = 30.0  # per blocking socket operation, not for the whole download

Progress = Callable[[int, "int | None"], None]  # (bytes so far, total bytes or None)
Report = Callable[[str], None]  # a line of information for the person (stderr)


# --- The manifest --------------------------------------------------------------------------


@dataclass(frozen=True)
class CorpusFile:
    urls: list[str]  # tried in order: canonical first, then mirrors
    filename: str  # name in the downloads directory
    format: str  # one of FORMATS
    size: int | None  # bytes, when known
    sha256: str | None  # None: unknown, the download is unverified (unless md5 is known)
    md5: str | None
    unpack: list[dict[str, Any]] = field(default_factory=list)  # rules, see _unpack_rule

    @property
    def verification(self) -> str:
        return "sha256" if self.sha256 else "md5" if self.md5 else "unverified"


@dataclass(frozen=True)
class Corpus:
    name: str
    description: str
    homepage: str
    licence: str
    citation: str
    files: list[CorpusFile]

    @property
    def size(self) -> int | None:
        sizes = [f.size for f in self.files]
        return None if None in sizes else sum(sizes)  # type: ignore[arg-type]

    @property
    def verification(self) -> str:
        kinds = {f.verification for f in self.files}
        return "unverified" if "unverified" in kinds else "md5" if "md5" in kinds else "sha256"


def default_manifest_path() -> Path:
    env = os.environ.get(MANIFEST_ENV)
    if env:
        return Path(env)
    # A symlink to corpora/manifest.json in the repository; a wheel holds a copy of it,
    # so the manifest is found however lmtool was installed.
    return Path(__file__).parent / "corpora_manifest.json"


def default_cache_dir() -> Path:
    if os.environ.get("LMTOOL_CACHE"):
        return Path(os.environ["LMTOOL_CACHE"]) / "corpora"
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]) / "lmtool" / "corpora"
    return Path.home() / ".cache" / "lmtool" / "corpora"


def load_manifest(path: Path | None = None) -> list[Corpus]:
    """Read and check the manifest; every problem is reported at once."""
    path = path or default_manifest_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInput(
            f"corpus manifest not found: {path}", f"set {MANIFEST_ENV} or pass --manifest"
        ) from None
    except (OSError, json.JSONDecodeError) as e:
        raise BadInput(f"cannot read corpus manifest {path}: {e}") from None
    problems: list[str] = []
    corpora: list[Corpus] = []
    for i, entry in enumerate(data.get("corpora", []) if isinstance(data, dict) else []):
        where = f"corpora[{i}]" + (f" ({entry.get('name')})" if isinstance(entry, dict) else "")
        try:
            corpora.append(_corpus(entry))
        except (KeyError, TypeError, ValueError) as e:
            problems.append(f"{where}: {e}")
    if not corpora and not problems:
        problems.append('no "corpora" list')
    if problems:
        raise BadInput(f"bad corpus manifest {path}: " + "; ".join(problems))
    return corpora


def _corpus(entry: dict) -> Corpus:
    files = []
    for f in entry["files"]:
        if f["format"] not in FORMATS:
            raise ValueError(f"format {f['format']!r} is not one of {', '.join(FORMATS)}")
        for key in ("sha256", "md5"):
            if f.get(key) is not None and not re.fullmatch(r"[0-9a-f]+", f[key]):
                raise ValueError(f"{key} of {f['filename']} is not lower-case hex")
        if not f["urls"]:
            raise ValueError(f"no urls for {f['filename']}")
        if PurePosixPath(f["filename"]).name != f["filename"]:
            raise ValueError(f"filename {f['filename']!r} must be a plain file name")
        files.append(
            CorpusFile(
                urls=list(f["urls"]),
                filename=f["filename"],
                format=f["format"],
                size=f.get("size"),
                sha256=f.get("sha256"),
                md5=f.get("md5"),
                unpack=list(f.get("unpack") or []),
            )
        )
    return Corpus(
        name=entry["name"],
        description=entry.get("description", ""),
        homepage=entry.get("homepage", ""),
        licence=entry.get("licence", "unknown"),
        citation=entry.get("citation", ""),
        files=files,
    )


def find_corpus(name: str, corpora: list[Corpus]) -> Corpus:
    for corpus in corpora:
        if corpus.name == name:
            return corpus
    names = ", ".join(c.name for c in corpora)
    raise BadInput(f"unknown corpus {name!r}", f"known corpora: {names}")


def cached_path(corpus: Corpus, cache_dir: Path | None = None) -> Path | None:
    """The unpacked directory if this corpus was downloaded before, else None."""
    text = (cache_dir or default_cache_dir()) / corpus.name / "text"
    return text if text.is_dir() else None


# --- Downloading ---------------------------------------------------------------------------


@dataclass
class DownloadResult:
    path: Path  # the unpacked directory
    verified: bool  # every file's checksum was known and matched
    cached: bool  # nothing was fetched: the corpus was already unpacked
    unverified_files: list[str] = field(default_factory=list)


def download_corpus(
    name: str,
    cache_dir: Path | None = None,
    force: bool = False,
    manifest: Path | None = None,
    progress: Progress | None = None,
    report: Report | None = None,
) -> DownloadResult:
    """Fetch every file of corpus `name` (resuming partial downloads), verify, unpack."""
    corpus = find_corpus(name, load_manifest(manifest))
    root = (cache_dir or default_cache_dir()) / corpus.name
    text_dir = root / "text"
    unverified = [f.filename for f in corpus.files if f.verification == "unverified"]
    if text_dir.is_dir() and not force:
        return DownloadResult(text_dir, not unverified, True, unverified)
    downloads = root / "downloads"
    make_dirs(downloads)
    paths = [_fetch_file(f, downloads, force, progress, report) for f in corpus.files]
    with atomic_dir(text_dir, force=True) as tmp:
        for f, path in zip(corpus.files, paths, strict=True):
            unpack_file(f, path, tmp)
    return DownloadResult(text_dir, not unverified, False, unverified)


def _fetch_file(
    f: CorpusFile, downloads: Path, force: bool, progress: Progress | None, report: Report | None
) -> Path:
    dest = downloads / f.filename
    part = dest.with_name(dest.name + ".part")
    if force:
        for p in (dest, part):
            p.unlink(missing_ok=True)
    if dest.exists():
        verify_file(f, dest)  # a finished download from an earlier run
        return dest
    errors: list[str] = []
    for url in f.urls:
        try:
            fetch(url, part, expected_size=f.size, progress=progress, report=report)
            break
        except _NetworkError as e:
            errors.append(str(e))
            if report and url != f.urls[-1]:
                report(f"{e}; trying the next address")
    else:
        raise RuntimeFailure(
            errors[-1], "check the network connection; run again to resume the download"
        )
    verify_file(f, part)
    os.replace(part, dest)
    return dest


class _NetworkError(Exception):
    pass


def fetch(
    url: str,
    part: Path,
    expected_size: int | None = None,
    progress: Progress | None = None,
    report: Report | None = None,
) -> None:
    """Append the rest of `url` to `part`, resuming from its current size with a Range
    request; start again from byte 0 when the server ignores or refuses the range."""
    offset = part.stat().st_size if part.exists() else 0
    if expected_size is not None and offset == expected_size:
        return  # complete already: the checksum will tell whether it is right
    for attempt in range(2):  # the second attempt is a restart from byte 0
        headers = {"User-Agent": f"lmtool/{__version__}"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        request = urllib.request.Request(url, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
                if offset and response.status == 206:
                    start = _range_start(response.headers.get("Content-Range", ""))
                    if start != offset:
                        raise _NetworkError(
                            f"{url}: the server resumed at byte {start}, not {offset}"
                        )
                    if report:
                        report(f"resuming {part.name[:-5]} at byte {offset:,}")
                    mode = "ab"
                else:
                    if offset and report:
                        report(f"{url}: the server cannot resume; downloading from the start")
                    offset, mode = 0, "wb"
                length = response.headers.get("Content-Length")
                total = offset + int(length) if length and length.isdigit() else expected_size
                _stream(response, part, mode, offset, total, progress)
                return
        except urllib.error.HTTPError as e:
            if e.code == 416 and offset and attempt == 0:
                part.unlink(missing_ok=True)  # our partial file is not a prefix: start again
                offset = 0
                continue
            raise _NetworkError(f"cannot download {url}: HTTP {e.code} {e.reason}") from None
        except (urllib.error.URLError, OSError, ValueError) as e:
            if isinstance(e, OSError) and e.filename == str(part):
                raise  # our disk failed (full, read-only), not the network
            reason = getattr(e, "reason", e)
            raise _NetworkError(f"cannot download {url}: {_one_line(reason)}") from None


def _range_start(content_range: str) -> int | None:
    m = re.match(r"bytes (\d+)-", content_range)
    return int(m.group(1)) if m else None


def _one_line(reason: object) -> str:
    return " ".join(str(reason).split()) or type(reason).__name__


def _stream(
    response: IO[bytes],
    part: Path,
    mode: str,
    done: int,
    total: int | None,
    progress: Progress | None,
) -> None:
    make_dirs(part.parent)
    try:
        with open(part, mode) as out:
            while chunk := response.read(CHUNK):
                out.write(chunk)
                done += len(chunk)
                if progress:
                    progress(done, total)
            out.flush()
            os.fsync(out.fileno())
    except OSError as e:  # a full disk: the part stays, for the next run to resume
        raise named(e, part) from None


def verify_file(f: CorpusFile, path: Path) -> None:
    """Check the size and checksum we know of; a bad file is removed (exit 1)."""
    actual_size = path.stat().st_size
    problem = None
    if f.size is not None and actual_size != f.size:
        problem = f"{f.filename} has {actual_size:,} bytes, expected {f.size:,}"
    elif f.sha256 or f.md5:
        algo, expected = ("sha256", f.sha256) if f.sha256 else ("md5", f.md5)
        actual = file_digest(path, algo)
        if actual != expected:
            problem = f"checksum mismatch for {f.filename}: {algo} {actual}, expected {expected}"
    if problem:
        path.unlink(missing_ok=True)
        raise RuntimeFailure(problem, "the file was removed; run the command again to retry")


def file_digest(path: Path, algo: str = "sha256") -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


# --- Unpacking -----------------------------------------------------------------------------
# A rule takes archive members (a glob over member paths) to one output file in the text
# directory:
#   {"members": "wikitext-2/wiki.train.tokens", "to": "train.txt"}             copy the bytes
#   {"members": "aclImdb/train/pos/*.txt", "to": "train.tsv", "label": "positive"}
#        one TSV row per member: label<TAB>text (whitespace collapsed); header label\ttext
#   {"members": "aclImdb/train/unsup/*.txt", "to": "unlabelled.txt"}  many members ->
#        one paragraph each (several members into one .txt)
#   {"members": "SST-2/train.tsv", "to": "train.tsv", "table": {"delimiter": "\t",
#        "header": true, "text": ["sentence"], "label": "label", "labels": {"0": "negative"}}}
#        rows of a CSV/TSV member -> label<TAB>text (or text lines when no "label")
# "replace" maps strings to replacements in the text first (e.g. "<br />" -> " ").
# No rules: every member is extracted as it is.


def unpack_file(f: CorpusFile, archive: Path, out: Path) -> None:
    rules = f.unpack
    matched = [0] * len(rules)
    outputs: dict[str, IO[bytes]] = {}
    with contextlib.ExitStack() as stack:  # closes every output file, also on failure
        for member, read in iter_members(archive, f.format, f.filename):
            if not rules:
                _write_member(out, member, read())
                continue
            data: bytes | None = None  # read lazily, once: a tar member cannot be re-read
            for i, rule in enumerate(rules):
                if fnmatch.fnmatchcase(member, rule["members"]):
                    data = read() if data is None else data
                    matched[i] += 1
                    if rule["to"] not in outputs:
                        target = _safe_path(out, rule["to"])
                        outputs[rule["to"]] = stack.enter_context(open(target, "wb"))
                    _apply_rule(rule, data, outputs[rule["to"]], first=matched[i] == 1)
    missing = [r["members"] for r, n in zip(rules, matched, strict=True) if n == 0]
    if missing:
        raise RuntimeFailure(
            f"{f.filename} has no member matching {', '.join(missing)}",
            "the archive is not the one the manifest describes; check the manifest entry",
        )


def iter_members(path: Path, fmt: str, filename: str) -> Iterator[tuple[str, Callable[[], bytes]]]:
    """(member path, read) for each regular file, in archive order."""
    try:
        if fmt == "plain":
            yield filename, path.read_bytes
        elif fmt == "gz":
            name = filename[:-3] if filename.endswith(".gz") else filename
            yield name, lambda: gzip.decompress(path.read_bytes())
        elif fmt == "zip":
            with zipfile.ZipFile(path) as z:
                for info in z.infolist():
                    if not info.is_dir():
                        yield info.filename, lambda info=info: z.read(info)
        elif fmt == "tar.gz":
            with tarfile.open(path, "r:gz") as t:
                for info in t:  # streaming: members are read in order, once
                    if info.isfile():
                        handle = t.extractfile(info)
                        yield info.name, (lambda h=handle: h.read())
    except (zipfile.BadZipFile, tarfile.TarError, gzip.BadGzipFile, EOFError, OSError) as e:
        raise RuntimeFailure(f"cannot unpack {filename}: {_one_line(e)}") from None


def _safe_path(out: Path, member: str) -> Path:
    parts = PurePosixPath(member).parts
    if not parts or PurePosixPath(member).is_absolute() or ".." in parts:
        raise RuntimeFailure(f"refusing to unpack {member!r}: it points outside the directory")
    return out.joinpath(*parts)


def _write_member(out: Path, member: str, data: bytes) -> None:
    target = _safe_path(out, member)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)


def _clean(text: str, rule: dict) -> str:
    for old, new in (rule.get("replace") or {}).items():
        text = text.replace(old, new)
    return " ".join(text.split())  # one line, no tabs: safe in a TSV row


def _apply_rule(rule: dict, data: bytes, handle: IO[bytes], first: bool) -> None:
    if rule["to"].endswith(".tsv") and handle.tell() == 0:
        handle.write(b"label\ttext\n")
    if "table" in rule:
        for label, text in _table_rows(rule, data):
            line = f"{label}\t{text}" if label is not None else text
            handle.write(line.encode("utf-8") + b"\n")
    elif "label" in rule:
        text = _clean(data.decode("utf-8", errors="replace"), rule)
        handle.write(f"{rule['label']}\t{text}\n".encode())
    elif not any(c in rule["members"] for c in "*?["):
        handle.write(data)  # one member copied as it is
    else:
        if not first:
            handle.write(b"\n")  # paragraphs: a blank line between documents
        handle.write(_clean(data.decode("utf-8", errors="replace"), rule).encode() + b"\n")


def _table_rows(rule: dict, data: bytes) -> Iterator[tuple[str | None, str]]:
    spec = rule["table"]
    text = data.decode("utf-8", errors="replace")
    reader = csv.reader(
        io.StringIO(text, newline=""),
        delimiter=spec.get("delimiter", ","),
        quoting=csv.QUOTE_NONE if spec.get("delimiter") == "\t" else csv.QUOTE_MINIMAL,
    )
    header: list[str] | None = next(reader, None) if spec.get("header") else None

    def column(key: str | int) -> int:
        if isinstance(key, int):
            return key
        if header is None or key not in header:
            raise RuntimeFailure(f"no column {key!r} in {rule['members']}")
        return header.index(key)

    text_cols = [column(k) for k in spec["text"]]
    label_col = column(spec["label"]) if "label" in spec else None
    labels = spec.get("labels") or {}
    for row in reader:
        if not row:
            continue
        body = _clean(" ".join(row[c] for c in text_cols if c < len(row)), rule)
        if label_col is None:
            yield None, body
        else:
            raw = row[label_col] if label_col < len(row) else ""
            yield labels.get(raw, raw), body
