"""`lmtool pretrain`: train a causal or masked language model from token shards, or
(--objective seq2seq) an encoder–decoder from source/target pairs, or (--objective
denoising) one that rebuilds plain text from a corrupted copy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from lmtool.cli.common import Preset, choices
from lmtool.cli.options import (
    Optimizer,
    OptimizerFlag,
    RunOptions,
    RunOutput,
    Schedule,
    lm_flags,
    option,
    run_flags,
    run_options,
    with_blocks,
)
from lmtool.cli.progress import Reporter
from lmtool.cli.run_report import report_run, run_summary
from lmtool.errors import BadInput
from lmtool.models.config import ARCHS, OBJECTIVES, POSITIONS
from lmtool.models.seq2seq_config import ATTENTIONS

if TYPE_CHECKING:
    from lmtool.training.flags import TrainFlags

__all__ = ["Optimizer", "Reporter", "Schedule", "pretrain"]

HELP_EXAMPLES = (
    "lmtool pretrain data/ --objective causal --preset tiny -o runs/lm --epochs 20 "
    "--max-time 120",
    "lmtool pretrain data/ --objective masked --layers 2 --dim 64 -o runs/mlm --max-steps 500",
    "lmtool pretrain data/ --arch lstm -o runs/awd --epochs 2",
    "lmtool pretrain data/ --arch lstm --stateless -o runs/awd-windows --max-steps 1000",
    "lmtool pretrain data/ -o runs/lm --resume --epochs 4",
    "lmtool pretrain data/ -o runs/lm --max-steps 500 --format json | jq .last_eval",
    "torchrun --nproc_per_node 2 -m lmtool pretrain data/ -o runs/lm",
    "lmtool pretrain pairs.tsv --objective seq2seq --arch transformer --tokenizer tok.json "
    "--preset small -o runs/mt",
    "lmtool pretrain pairs.tsv --objective seq2seq --arch lstm --attention bahdanau "
    "--tokenizer tok.json -o runs/mt-lstm",
    "lmtool pretrain --source train.de --target train.en --objective seq2seq "
    "--tokenizer tok.json -o runs/mt",
    "lmtool pretrain corpus/ --objective denoising --arch transformer --tokenizer tok.json "
    "-o runs/bart",
)
SUMMARY = (
    "Pre-train a language model on token shards (from `lmtool tokenize encode`). "
    "Trains --epochs (1 unless given); --max-steps and --max-time only cut that short "
    "(the schedule then spans the steps they allow; to train longer, raise --epochs); "
    "they count the whole run, across resumptions. Settings come from the "
    "preset, then --config FILE, then the flags. Checkpoints are written atomically to "
    "-o (the first before step 1, so RUN/metrics.jsonl is live); Ctrl-C saves one and "
    "exits 130. --resume continues a run: a limit given with it replaces the saved ones; "
    "the learning-rate schedule keeps the horizon the run started with (steps past it "
    "run at the final rate; for a new schedule, fine-tune from the run); a run that has "
    "nothing left to do says so and exits 0. --format json prints the run's figures on stdout "
    "as one object. "
    "--objective seq2seq trains an encoder–decoder (--arch transformer, or lstm with "
    "--attention none or bahdanau) on source/target pairs: a TSV (a header naming source "
    "and target, or exactly source<TAB>target), CSV or JSONL file with source and target "
    "columns, or --source FILE --target FILE aligned line by line; tokenized with "
    "--tokenizer; a twentieth held out unless --valid PAIRS; teacher-forced cross-entropy "
    "with --label-smoothing (0.1); 10 epochs unless --epochs. "
    "--objective denoising pre-trains that encoder–decoder as BART does, on plain text "
    "(files, directories, globs, or a shard directory) cut into segments of the context: "
    "the encoder reads a copy with spans of Poisson(3) tokens covering 30% of it each "
    "replaced by one [MASK] (and, with --permute-sentences, its sentences shuffled), the "
    "decoder rebuilds the text; then lmtool finetune seq2seq trains it on pairs."
)


Objective = choices("Objective", (*OBJECTIVES, "seq2seq", "denoising"))
Attention = choices("Attention", ATTENTIONS)
Arch = choices("Arch", ARCHS)
Positions = choices("Positions", POSITIONS)


def _model(flag: str, help: str):
    return option(flag, help, panel="Model")


Int, Float = int | None, float | None  # None: not given (the config file or default wins)


@with_blocks(flags=(run_flags, lm_flags), options=run_options)
def pretrain(
    data: Annotated[Path | None, typer.Argument(
        metavar="DATA", show_default=False,
        help="A shard directory from lmtool tokenize encode; with --objective seq2seq, a "
             "pairs file (TSV, CSV or JSONL); with --objective denoising, text (a file or "
             "directory) or shards.")] = None,
    output: RunOutput = ...,  # type: ignore[assignment]  # required (after optional DATA)
    objective: Annotated[Objective | None, _model(
        "--objective", "causal, masked, seq2seq (an encoder–decoder on pairs), or "
        "denoising (an encoder–decoder rebuilding text, BART).")] = None,
    arch: Annotated[Arch | None, _model("--arch", "transformer (default) or lstm.")] = None,
    preset: Preset = None,
    layers: Annotated[Int, _model("--layers", "Transformer blocks / LSTM layers.")] = None,
    heads: Annotated[Int, _model("--heads", "Attention heads.")] = None,
    dim: Annotated[Int, _model("--dim", "Model width (LSTM: embedding size).")] = None,
    context: Annotated[Int, _model("--context", "Tokens per sequence (LSTM: BPTT length).")
                       ] = None,
    dropout: Annotated[Float, _model("--dropout", "Dropout (LSTM: multiplier).")] = None,
    positions: Annotated[
        Positions | None, _model("--positions", "rotary (default) or learned.")
    ] = None,
    hidden: Annotated[Int, _model("--hidden", "LSTM hidden size.")] = None,
    ar: Annotated[Float, _model("--ar", "LSTM: activation regularisation alpha (2).")] = None,
    tar: Annotated[Float, _model("--tar", "LSTM: temporal AR beta (1).")] = None,
    backward: Annotated[bool | None, _model(
        "--backward/--forward", "Causal: read text right to left (ULMFiT's backward LM)."
    )] = None,
    attention: Annotated[Attention | None, _model(
        "--attention", "seq2seq LSTM: none (a fixed context vector) or bahdanau (default).")
    ] = None,
    label_smoothing: Annotated[Float, _model(
        "--label-smoothing", "seq2seq: smooth the targets by this much (0.1).")] = None,
    permute_sentences: Annotated[bool, _model(
        "--permute-sentences", "denoising: also shuffle each segment's sentences.")] = False,
    source: Annotated[Path | None, option(
        "--source", "seq2seq: source sentences, one a line (with --target).", panel="Data")
    ] = None,
    target: Annotated[Path | None, option(
        "--target", "seq2seq: their targets, line for line.", panel="Data")] = None,
    valid: Annotated[Path | None, option(
        "--valid", "seq2seq: held-out pairs (default: a twentieth of the pairs).",
        panel="Data")] = None,
    optimizer: OptimizerFlag = None,
    flags: TrainFlags = None,  # type: ignore[assignment]  # run_flags, lm_flags: with_blocks
    config: Annotated[Path | None, option("--config", "JSON file of these fields.")] = None,
    tokenizer: Annotated[
        Path | None, option("--tokenizer", "The shards' tokenizer (default DATA/tokenizer.json).")
    ] = None,
    options: RunOptions = None,  # type: ignore[assignment]  # run_options: with_blocks
) -> None:
    from dataclasses import replace

    from lmtool.training.pretrain import pretrain as run_pretrain

    flags = replace(flags, layers=layers, heads=heads, dim=dim, context=context,
                    dropout=dropout, positions=positions, hidden=hidden, ar=ar, tar=tar,
                    backward=backward, optimizer=optimizer)
    seq2seq = objective is not None and objective.value == "seq2seq"
    denoising = objective is not None and objective.value == "denoising"
    if objective is None and options.resume:  # resuming: the run says what it is
        kind = _resumed_kind(output)
        seq2seq, denoising = kind == "seq2seq", kind == "denoising"
    if permute_sentences and not denoising:
        raise BadInput("--permute-sentences is for --objective denoising")
    if denoising:
        _denoise(data, output, arch, attention, preset, label_smoothing, permute_sentences,
                 tokenizer, config, flags, options, {"--source": source, "--target": target,
                                                     "--valid": valid})
        return
    pairs_only = {"--attention": attention, "--label-smoothing": label_smoothing,
                  "--source": source, "--target": target, "--valid": valid}
    if not seq2seq:
        given = [flag for flag, value in pairs_only.items() if value is not None]
        if given:
            raise BadInput(f"{', '.join(given)} {'is' if len(given) == 1 else 'are'} for "
                           "--objective seq2seq")
        if data is None:
            raise BadInput("missing DATA: a shard directory from lmtool tokenize encode")
        _refuse_pairs(data)
    else:
        if config is not None:
            raise BadInput("--config is for language models", "give seq2seq settings as flags")
        from lmtool.training.seq2seq import train_seq2seq

        with Reporter(options.quiet) as reporter:
            result = train_seq2seq(
                data, output, tokenizer=tokenizer, source=source, target=target, valid=valid,
                arch=arch.value if arch else None,
                attention=attention.value if attention else None, preset=preset,
                label_smoothing=label_smoothing, overrides=flags, resume=options.resume,
                force=options.force, callbacks=[reporter])
        report_run(result, options.quiet)
        if options.format == "json" and result.is_main:
            typer.echo(json.dumps(run_summary(result)))
        return
    with Reporter(options.quiet) as reporter:
        result = run_pretrain(
            data, output,
            objective=objective.value if objective else None,
            arch=arch.value if arch else None,
            preset=preset, overrides=flags, config_file=config, tokenizer=tokenizer,
            resume=options.resume, force=options.force, callbacks=[reporter],
            sample_chars=0 if options.quiet else 200,
        )
    report_run(result, options.quiet)
    if options.format == "json" and result.is_main:
        typer.echo(json.dumps(run_summary(result)))


def _denoise(data, output, arch, attention, preset, label_smoothing, permute, tokenizer,
             config, flags, options, pairs_only: dict) -> None:
    from lmtool.training.denoising import train_denoising

    given = [flag for flag, value in pairs_only.items() if value is not None]
    if given:
        raise BadInput(f"{', '.join(given)} {'is' if len(given) == 1 else 'are'} for "
                       "--objective seq2seq", "denoising reads plain text: pass it as DATA")
    if config is not None:
        raise BadInput("--config is for language models", "give denoising settings as flags")
    if data is None:
        raise BadInput("missing DATA: text files, a directory or shards to denoise")
    with Reporter(options.quiet) as reporter:
        result = train_denoising(
            [data], output, tokenizer=tokenizer, arch=arch.value if arch else None,
            attention=attention.value if attention else None, preset=preset,
            label_smoothing=label_smoothing, permute_sentences=permute, overrides=flags,
            resume=options.resume, force=options.force, callbacks=[reporter])
    report_run(result, options.quiet)
    if options.format == "json" and result.is_main:
        typer.echo(json.dumps(run_summary(result)))


def _resumed_kind(output: Path) -> str | None:
    """"seq2seq" or "denoising" for such a run in `output`, else None."""
    config = output / "config.json"
    try:
        saved = json.loads(config.read_text("utf-8"))
        if saved.get("task") != "seq2seq":
            return None
        return saved.get("pretraining", {}).get("objective") or "seq2seq"
    except (OSError, ValueError, AttributeError):
        return None


def _refuse_pairs(data: Path) -> None:
    """A pairs file given to a language model: say what fits."""
    from lmtool.text.pairs import looks_like_pairs

    if data.is_file() and (data.suffix.lower() in (".tsv", ".csv", ".jsonl")
                           or looks_like_pairs(data)):
        raise BadInput(f"{data} is a file of pairs, and a language model trains on token "
                       "shards", "train an encoder–decoder with --objective seq2seq "
                       "--tokenizer TOK, or encode text with lmtool tokenize encode")
