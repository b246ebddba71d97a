"""`lmtool corpus`: list and download well-known public corpora."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from lmtool.cli.common import (
    Format,
    Quiet,
    info,
    show_progress,
    stderr,
    warn,
    with_examples,
)

app = typer.Typer(
    help=with_examples(
        "List and download well-known public corpora (into a local cache, as plain text).",
        "lmtool corpus list",
        "lmtool corpus download tiny-shakespeare",
        "lmtool tokenize train $(lmtool corpus download tiny-shakespeare) -o tok.json",
    ),
    no_args_is_help=True,
)

Manifest = Annotated[
    Path | None,
    typer.Option(
        "--manifest",
        help="Corpus manifest (JSON) to read instead of the built-in one "
        "(also $LMTOOL_CORPUS_MANIFEST).",
    ),
]
CacheDir = Annotated[
    Path | None,
    typer.Option(
        "--cache-dir",
        help="Where corpora are kept. Default: $LMTOOL_CACHE/corpora, else "
        "$XDG_CACHE_HOME/lmtool/corpora, else ~/.cache/lmtool/corpora.",
    ),
]


def _complete_names(incomplete: str) -> list[str]:
    """Shell completion of corpus names, from the manifest."""
    from lmtool.corpora import load_manifest
    from lmtool.errors import LmtoolError

    try:
        return [c.name for c in load_manifest() if c.name.startswith(incomplete)]
    except LmtoolError:
        return []


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return "?"


@app.command(
    "list",
    help=with_examples(
        "List the corpora `download` knows: size, checksum kind (sha256, md5 or "
        "unverified), whether it is in the cache, and a description. --format json adds "
        "licence, citation and URLs.",
        "lmtool corpus list",
        "lmtool corpus list --format json",
    ),
)
def list_(
    manifest: Manifest = None,
    cache_dir: CacheDir = None,
    format: Format = "text",
    quiet: Quiet = False,  # list writes nothing but its result
) -> None:
    from lmtool.corpora import cached_path, load_manifest

    corpora = load_manifest(manifest)
    rows = []
    for c in corpora:
        cached = cached_path(c, cache_dir)
        rows.append(
            {
                "name": c.name,
                "size": c.size,
                "verification": c.verification,
                "licence": c.licence,
                "description": c.description,
                "homepage": c.homepage,
                "citation": c.citation,
                "urls": [u for f in c.files for u in f.urls],
                "cached": str(cached) if cached else None,
            }
        )
    if format in ("json", "jsonl"):
        if format == "json":
            typer.echo(json.dumps(rows, indent=2))
        else:
            for row in rows:
                typer.echo(json.dumps(row))
        return
    if format == "tsv":
        typer.echo("name\tsize\tverification\tlicence\tcached\tdescription")
        for r in rows:
            typer.echo(
                f"{r['name']}\t{r['size'] or ''}\t{r['verification']}\t{r['licence']}\t"
                f"{r['cached'] or ''}\t{r['description']}"
            )
        return
    width = max(len(r["name"]) for r in rows)
    typer.echo(f"{'NAME':<{width}}  {'SIZE':>9}  {'CHECKSUM':<10}  CACHED  DESCRIPTION")
    for r in rows:
        typer.echo(
            f"{r['name']:<{width}}  {_size(r['size']):>9}  {r['verification']:<10}  "
            f"{'yes' if r['cached'] else 'no':<6}  {r['description']}"
        )


class _Progress:
    """Bytes and MB/s on one stderr line, redrawn at most a few times a second."""

    def __init__(self, name: str):
        self.name, self.start, self.last = name, time.monotonic(), 0.0
        self.first: int | None = None

    def __call__(self, done: int, total: int | None) -> None:
        now = time.monotonic()
        if self.first is None:
            self.first = done
        if now - self.last < 0.2 and done != total:
            return
        self.last = now
        rate = (done - self.first) / max(now - self.start, 1e-6) / 1e6
        of = f" of {_size(total)}" if total else ""
        stderr.file.write(f"\r{self.name}: {_size(done)}{of}, {rate:.1f} MB/s   ")
        stderr.file.flush()

    def close(self) -> None:
        if self.first is not None:
            stderr.file.write("\n")


@app.command(
    help=with_examples(
        "Download a corpus, check its checksum, unpack it to plain text and print the "
        "directory's path on stdout.\n\n"
        "An interrupted download resumes where it stopped (HTTP Range). A corpus already in "
        "the cache is not fetched again unless --force is given. A file whose checksum is "
        "not known is reported as unverified on stderr.",
        "lmtool corpus download tiny-shakespeare",
        "lmtool corpus download wikitext-2 --cache-dir data/corpora",
        "lmtool tokenize train $(lmtool corpus download tiny-shakespeare) -o tok.json",
    )
)
def download(
    name: Annotated[
        str,
        typer.Argument(
            help="Corpus name, as `lmtool corpus list` shows it.",
            autocompletion=_complete_names,
        ),
    ],
    cache_dir: CacheDir = None,
    force: Annotated[
        bool, typer.Option("--force", help="Download and unpack again, even if cached.")
    ] = False,
    manifest: Manifest = None,
    quiet: Quiet = False,
) -> None:
    from lmtool.corpora import download_corpus

    bar = _Progress(name) if show_progress(quiet) else None
    try:
        result = download_corpus(
            name,
            cache_dir=cache_dir,
            force=force,
            manifest=manifest,
            progress=bar,
            report=lambda line: info(line, quiet),
        )
    finally:
        if bar:
            bar.close()
    if result.unverified_files:
        warn(
            f"unverified: no known checksum for {', '.join(result.unverified_files)} "
            f"(corpus {name})"
        )
    if result.cached:
        info(f"{name} is already in the cache (--force downloads it again)", quiet)
    typer.echo(str(result.path))
