"""`lmtool export`: a run as a Hugging Face transformers model directory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from lmtool.cli.common import Force, Output, Quiet, formats

HELP_EXAMPLES = (
    "lmtool export runs/lm -o hf/lm",
    "lmtool export runs/smol-reviews -o hf/smol-reviews --force",
)
SUMMARY = (
    "Export a run as a directory that transformers' AutoModelForCausalLM / "
    "AutoModelForMaskedLM and AutoTokenizer load with no custom code: an imported run "
    "to its own family; lmtool's causal Transformer to Starcoder2 (rotary) or GPT-2 "
    "(learned positions), its masked one to Megatron-BERT. An AWD-LSTM is refused."
)

ExportFormat = formats("text", "json")


def export(
    run: Annotated[Path, typer.Argument(help="A run directory.")],
    output: Output,
    force: Force = False,
    format: ExportFormat = "text",
    quiet: Quiet = False,  # export writes nothing but its result
) -> None:
    from lmtool.hub.export import export_run

    result = export_run(run, output, force=force)
    if format == "json":
        typer.echo(json.dumps({**vars(result), "output": str(result.output)}))
        return
    typer.echo(f"exported {run} as {result.architecture} ({result.parameters:,} parameters) "
               f"to {result.output}")
