"""The `lmtool` command: one Typer app per command group, joined here."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from lmtool import __version__
from lmtool.cli import attention as attention_cmd
from lmtool.cli import classify as classify_cmd
from lmtool.cli import complete as complete_cmd
from lmtool.cli import corpus, finetune, tokenize
from lmtool.cli import evaluate as evaluate_cmd
from lmtool.cli import export as export_cmd
from lmtool.cli import fill_mask as fill_mask_cmd
from lmtool.cli import generate as generate_cmd
from lmtool.cli import import_ as import_cmd
from lmtool.cli import info as info_cmd
from lmtool.cli import plot as plot_cmd
from lmtool.cli import pretrain as pretrain_cmd
from lmtool.cli.common import with_examples
from lmtool.cli.errors import LmtoolGroup

app = typer.Typer(
    name="lmtool",
    cls=LmtoolGroup,  # turns every error of every command into one line and an exit code
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
app.add_typer(finetune.app, name="finetune")
for _cmd, _name in ((pretrain_cmd, "pretrain"), (evaluate_cmd, "evaluate"), (info_cmd, "info"),
                   (classify_cmd, "classify"), (plot_cmd, "plot"),
                   (attention_cmd, "attention"), (export_cmd, "export")):
    app.command(_name, help=with_examples(_cmd.SUMMARY, *_cmd.HELP_EXAMPLES))(
        getattr(_cmd, _name)
    )
for _cmd, _name, _func in (
    (generate_cmd, "generate", "generate"),
    (complete_cmd, "complete", "complete"),
    (fill_mask_cmd, "fill-mask", "fill_mask"),
    (import_cmd, "import", "import_"),
):
    app.command(_name, help=with_examples(_cmd.SUMMARY, *_cmd.HELP_EXAMPLES))(
        getattr(_cmd, _func)
    )


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
    # torchrun sets these (distributed.launched_by_torchrun; not imported here, it would
    # load torch for every command).
    if not all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK")):
        app(prog_name="lmtool")
        return
    # A torchrun rank leaves with os._exit once everything is written, with the exit
    # code the command chose: gloo's threads outlive the process group and can abort
    # the interpreter's finalization (see distributed.exit_rank).
    from lmtool.training.distributed import exit_rank

    try:
        app(prog_name="lmtool")
    except SystemExit as e:
        exit_rank(e.code)
    exit_rank(0)
