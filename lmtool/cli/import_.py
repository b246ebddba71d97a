"""`lmtool import`: a published checkpoint (HF directory, hub id, .gguf) as a run."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from lmtool.cli.common import Force, Quiet, formats
from lmtool.cli.options import RunOutput

HELP_EXAMPLES = (
    "lmtool import ./SmolLM2-135M -o runs/smol",
    "lmtool import HuggingFaceTB/SmolLM2-135M -o runs/smol",
    "lmtool import smollm2.Q8_0.gguf -o runs/smol-gguf",
)
SUMMARY = (
    "Import a published model as a run: a Hugging Face model directory (config.json, "
    "safetensors weights, tokenizer.json), a hub id org/name (downloaded when online), or "
    "a .gguf file. Families: GPT-2, Llama (SmolLM2, TinyLlama, ...), BERT. Pickled "
    "weights (.bin, .pt) are refused, never loaded."
)

ImportFormat = formats("text", "json")


def import_(
    source: Annotated[str, typer.Argument(help="Model directory, hub id org/name, or .gguf.")],
    output: RunOutput,
    force: Force = False,
    format: ImportFormat = "text",
    quiet: Quiet = False,  # import writes nothing but its result
) -> None:
    from lmtool.hub.run import import_run

    result = import_run(source, output, force=force)
    if format == "json":
        typer.echo(json.dumps({**vars(result), "run": str(result.run)}))
        return
    head = ", a new MLM head (the checkpoint had none)" if result.new_head else ""
    typer.echo(f"imported {result.architecture} ({result.objective}, "
               f"{result.parameters:,} parameters, {result.vocab_size:,} tokens{head}) "
               f"to {result.run}")
