"""`lmtool tokenize`: train a tokenizer, encode a corpus into shards, text <-> ids, stats."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from lmtool.cli.common import (
    Document,
    DocumentMode,
    EncodingErrors,
    Errors,
    Force,
    Quiet,
    Seed,
    Sources,
    choices,
    formats,
    info,
    show_progress,
    stderr,
    warn,
    with_examples,
)
from lmtool.text.tokenizer import KINDS
from lmtool.wording import count

app = typer.Typer(
    help=with_examples(
        "Train tokenizers, encode corpora into token shards, and turn text into ids and back.",
        "lmtool tokenize train corpora/demo -o tok.json",
        "lmtool tokenize encode corpora/demo --tokenizer tok.json -o data/",
        "echo 'Hello world' | lmtool tokenize ids --tokenizer tok.json",
    ),
    no_args_is_help=True,
)


Kind = choices("Kind", KINDS)
StatsFormat = formats("text", "json")


TokenizerOpt = Annotated[
    Path,
    typer.Option(
        "--tokenizer",
        "-t",
        help="A tokenizer.json, or a shard or checkpoint directory holding one.",
    ),
]


def _report_warnings(warnings: list[str]) -> None:
    for line in warnings:
        warn(line)


@app.command(
    help=with_examples(
        "Train a tokenizer on text and write it as a tokenizers JSON file.\n\n"
        "Kinds: bpe (byte-level: any text, never [UNK]), wordpiece, unigram, char (one "
        "token per character; unseen characters become [UNK]). Every kind has the special "
        "tokens [PAD] [UNK] [BOS] [EOS] [MASK] [CLS] [SEP] at ids 0..6. Normalisation is "
        "off by default (bpe then decodes back to the exact input); --nfkc, --lowercase "
        "and --strip-accents can be combined. Training streams the documents.",
        "lmtool tokenize train corpora/demo -o tok.json",
        "lmtool tokenize train 'books/**/*.txt' --kind unigram --vocab-size 16000 -o tok.json",
        "cat notes.txt | lmtool tokenize train - --kind char --lowercase -o chars.json",
    )
)
def train(
    sources: Sources,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Where to write the tokenizer JSON.")
    ],
    kind: Annotated[Kind, typer.Option("--kind", help="Tokenizer model.")] = Kind.bpe,
    vocab_size: Annotated[int | None, typer.Option(
        "--vocab-size", help="Vocabulary size, special tokens included  [default: 8000]",
        show_default=False)] = None,
    min_frequency: Annotated[
        int,
        typer.Option("--min-frequency", help="Fewest occurrences for a merge or a character."),
    ] = 2,
    nfkc: Annotated[bool, typer.Option("--nfkc", help="Apply Unicode NFKC first.")] = False,
    lowercase: Annotated[bool, typer.Option("--lowercase", help="Lowercase all text.")] = False,
    strip_accents: Annotated[
        bool, typer.Option("--strip-accents", help="Remove accents (é → e).")
    ] = False,
    document: Document = DocumentMode.paragraph,
    encoding_errors: Errors = EncodingErrors.strict,
    force: Force = False,
    quiet: Quiet = False,
) -> None:
    from lmtool.outputs import TOKENIZER, check_output
    from lmtool.text.sources import ReadReport
    from lmtool.text.tokenizer import save_tokenizer, train_tokenizer, vocabulary_shortfall

    check_output(output, TOKENIZER, force=force)  # refuse before spending time on training
    normalization = [
        name
        for name, on in (("nfkc", nfkc), ("lowercase", lowercase), ("strip-accents", strip_accents))
        if on
    ]
    report = ReadReport()
    start = time.perf_counter()
    tok = train_tokenizer(
        sources,
        kind=kind.value,
        vocab_size=8000 if vocab_size is None else vocab_size,
        min_frequency=min_frequency,
        normalization=normalization,
        document=document.value,
        encoding_errors=encoding_errors.value,
        report=report,
        show_progress=show_progress(quiet),
    )
    save_tokenizer(tok, output, force=force)
    # A smaller vocabulary than asked for is worth a warning only if someone asked.
    shortfall = None if vocab_size is None else vocabulary_shortfall(
        tok, kind.value, vocab_size, min_frequency)
    _report_warnings(report.warnings(encoding_errors.value) + ([shortfall] if shortfall else []))
    info(
        f"trained a {kind.value} tokenizer ({count(tok.get_vocab_size(), 'token')}) on "
        f"{count(report.documents, 'document')} ({report.bytes / 1e6:.1f} MB) in "
        f"{time.perf_counter() - start:.1f} s → {output}",
        quiet,
    )


@app.command(
    help=with_examples(
        "Encode text into token shards for pre-training: train.bin, val.bin, meta.json and "
        "a copy of the tokenizer.\n\n"
        "Every document is followed by [EOS]. A document goes to the validation split by a "
        "seeded hash of its position (--val-fraction, --seed); a tiny corpus gets at least "
        "one validation document, and a single-document corpus none (with a warning). "
        "Binary files among the sources are skipped with a warning.",
        "lmtool tokenize encode corpora/demo --tokenizer tok.json -o data/",
        "lmtool tokenize encode 'wiki/*.txt' -t tok.json -o data/ --val-fraction 0.01",
    )
)
def encode(
    sources: Sources,
    tokenizer: TokenizerOpt,
    output: Annotated[Path, typer.Option("--output", "-o", help="Shard directory to write.")],
    val_fraction: Annotated[
        float, typer.Option("--val-fraction", help="Share of documents held out for validation.")
    ] = 0.1,
    seed: Seed = 0,
    document: Document = DocumentMode.paragraph,
    encoding_errors: Errors = EncodingErrors.strict,
    force: Force = False,
    quiet: Quiet = False,
) -> None:
    from lmtool.text.encode import encode_corpus

    start = time.perf_counter()
    with _EncodeProgress(show_progress(quiet)) as progress:
        meta = encode_corpus(
            sources,
            tokenizer,
            output,
            val_fraction=val_fraction,
            seed=seed,
            document=document.value,
            encoding_errors=encoding_errors.value,
            force=force,
            progress=progress,
        )
    seconds = time.perf_counter() - start
    _report_warnings(meta["warnings"])
    counts, splits = meta["counts"], meta["splits"]
    info(
        f"encoded {counts['bytes'] / 1e6:.1f} MB, {count(counts['documents'], 'document')} → "
        f"{count(counts['tokens'], 'token')} (train {splits['train']['tokens']:,}, "
        f"val {splits['val']['tokens']:,}; {meta['dtype']}) in {seconds:.1f} s "
        f"({counts['bytes'] / 1e6 / max(seconds, 1e-9):.1f} MB/s) → {output}",
        quiet,
    )


class _EncodeProgress:
    """A rich progress line on stderr (MB read, MB/s, tokens); a no-op when disabled."""

    def __init__(self, enabled: bool):
        self.enabled = enabled

    def __enter__(self):
        if not self.enabled:
            return None
        from rich.progress import (
            BarColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        self._progress = Progress(
            TextColumn("encoding"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[mb]:.1f} MB  {task.fields[rate]:.1f} MB/s"),
            TextColumn("{task.fields[tokens]:,} tokens"),
            TimeElapsedColumn(),
            console=stderr,
            transient=True,
        )
        self._progress.start()
        self._task = self._progress.add_task("encode", total=None, mb=0.0, rate=0.0, tokens=0)
        self._start = time.perf_counter()
        return self.update

    def update(self, done: int, total: int | None, tokens: int) -> None:
        rate = done / 1e6 / max(time.perf_counter() - self._start, 1e-9)
        self._progress.update(
            self._task, completed=done, total=total, mb=done / 1e6, rate=rate, tokens=tokens
        )

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self._progress.stop()


@app.command(
    help=with_examples(
        "Turn text into token ids: each input line becomes one line of space-separated ids. "
        "No special tokens are added.",
        "echo 'Hello world' | lmtool tokenize ids --tokenizer tok.json",
        "lmtool tokenize ids -t tok.json notes.txt | head",
    )
)
def ids(
    tokenizer: TokenizerOpt,
    sources: Annotated[
        list[str] | None,
        typer.Argument(metavar="SOURCES", help="Text files or - for stdin (the default)."),
    ] = None,
    encoding_errors: Errors = EncodingErrors.strict,
    quiet: Quiet = False,  # warnings only, as everywhere
) -> None:
    from lmtool.text.sources import ReadReport, iter_lines
    from lmtool.text.tokenizer import load_tokenizer

    tok = load_tokenizer(tokenizer)
    sources = sources or ["-"]
    interactive = "-" in sources  # answer each line at once when reading a pipe
    report = ReadReport()
    out = sys.stdout
    # A line is never cut in parts here (limit): one line in, one line out.
    for _, line in iter_lines(
        sources, encoding_errors=encoding_errors.value, report=report, limit=sys.maxsize
    ):
        text = line[:-1] if line.endswith("\n") else line
        text = text[:-1] if text.endswith("\r") else text
        out.write(" ".join(map(str, tok.encode(text, add_special_tokens=False).ids)) + "\n")
        if interactive:
            out.flush()
    out.flush()
    _report_warnings(report.warnings(encoding_errors.value))


@app.command(
    help=with_examples(
        "Turn token ids back into text: each line of space-separated ids becomes one line "
        "of text. Special tokens are kept unless --skip-special.",
        "echo 'Hello world' | lmtool tokenize ids -t tok.json | lmtool tokenize decode -t tok.json",
        "lmtool tokenize decode -t tok.json ids.txt",
    )
)
def decode(
    tokenizer: TokenizerOpt,
    sources: Annotated[
        list[str] | None,
        typer.Argument(metavar="SOURCES", help="Files of ids, or - for stdin (the default)."),
    ] = None,
    skip_special: Annotated[
        bool, typer.Option("--skip-special", help="Leave out special tokens such as [EOS].")
    ] = False,
    quiet: Quiet = False,  # decode writes nothing but its result
) -> None:
    from lmtool.errors import BadInput
    from lmtool.text.sources import iter_lines
    from lmtool.text.tokenizer import load_tokenizer

    tok = load_tokenizer(tokenizer)
    vocab_size = tok.get_vocab_size()
    sources = sources or ["-"]
    interactive = "-" in sources
    out = sys.stdout
    for number, (_, line) in enumerate(iter_lines(sources, limit=sys.maxsize), start=1):
        try:
            token_ids = [int(word) for word in line.split()]
        except ValueError:
            bad = next(w for w in line.split() if not w.lstrip("-").isdigit())
            raise BadInput(
                f"line {number}: {bad!r} is not a token id", "give space-separated integers"
            ) from None
        wrong = [i for i in token_ids if not 0 <= i < vocab_size]
        if wrong:
            raise BadInput(
                f"line {number}: {wrong[0]} is not a token id of this tokenizer",
                f"ids run from 0 to {vocab_size - 1}",
            )
        out.write(tok.decode(token_ids, skip_special_tokens=skip_special) + "\n")
        if interactive:
            out.flush()
    out.flush()


@app.command(
    help=with_examples(
        "How a tokenizer fits a corpus: documents, tokens, characters per token, the "
        "unknown-token rate and how much of the vocabulary is used.",
        "lmtool tokenize stats --tokenizer tok.json corpora/demo",
        "lmtool tokenize stats -t tok.json 'wiki/*.txt' --format json",
    )
)
def stats(
    tokenizer: TokenizerOpt,
    sources: Sources,
    document: Document = DocumentMode.paragraph,
    encoding_errors: Errors = EncodingErrors.strict,
    format: StatsFormat = "text",
    quiet: Quiet = False,
) -> None:
    from lmtool.text.stats import corpus_stats
    from lmtool.text.tokenizer import load_tokenizer

    tok = load_tokenizer(tokenizer)
    result = corpus_stats(
        sources, tok, document=document.value, encoding_errors=encoding_errors.value
    )
    _report_warnings(result.pop("warnings"))
    if format == "json":
        typer.echo(json.dumps(result, indent=2))
        return
    rows = [
        ("documents", f"{result['documents']:,}"),
        ("tokens", f"{result['tokens']:,}"),
        ("characters", f"{result['characters']:,}"),
        ("characters per token", f"{result['chars_per_token']:.2f}"),
        ("unknown tokens", f"{result['unknown_tokens']:,} ({result['unknown_rate']:.2%})"),
        (
            "vocabulary use",
            f"{result['distinct_ids']:,} / {result['vocab_size']:,} ({result['vocab_use']:.1%})",
        ),
    ]
    for name, value in rows:
        typer.echo(f"{name:<22}{value}")
