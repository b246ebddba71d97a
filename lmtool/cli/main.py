"""The `lmtool` command: one Typer app per command group, joined here."""

from __future__ import annotations

from typing import Annotated

import typer

from lmtool import __version__
from lmtool.cli import corpus, tokenize
from lmtool.cli.common import with_examples

app = typer.Typer(
    name="lmtool",
    help=with_examples(
        "Train tokenizers, pre-train and fine-tune small language models, generate and "
        "classify text.",
        "lmtool tokenize train corpora/demo -o tok.json",
        "lmtool tokenize encode corpora/demo --tokenizer tok.json -o data/",
        "lmtool corpus list",
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(tokenize.app, name="tokenize")
app.add_typer(corpus.app, name="corpus")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"lmtool {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """lmtool: language models from the shell."""


def main() -> None:
    app(prog_name="lmtool")
