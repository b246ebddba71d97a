"""`lmtool info`: a run's config, size, tokenizer, data and training history."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from lmtool.cli.common import Quiet, formats
from lmtool.wording import plural

HELP_EXAMPLES = ("lmtool info runs/lm", "lmtool info runs/lm --format json | jq .history")
SUMMARY = "Show what a run is (config, parameters, tokenizer, data) and how training went."


InfoFormat = formats("text", "json", "jsonl")


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return "-" if value is None else str(value)


def info(
    run: Annotated[Path, typer.Argument(help="A run directory.")],
    format: InfoFormat = "text",
    quiet: Quiet = False,  # info writes nothing but its result
) -> None:
    from lmtool.training.info import run_info

    data = run_info(run)
    if format != "text":
        typer.echo(json.dumps(data, indent=None if format == "jsonl" else 2))
        return
    m, t, tok, d, h = (data["model"], data["training"], data["tokenizer"], data["data"],
                       data["history"])
    lines = [
        f"run         {data['run']}",
        f"model       {data['arch']} ({data['objective']}"
        + (", backward" if m.get("backward") else "") + f"), preset {_fmt(data['preset'])}, "
        f"{_fmt(data['parameters'])} parameters",
        f"            layers {m['layers']}, dim {m['dim']}, context {m['context']}, "
        f"dropout {m['dropout']}, "
        + (f"hidden {m['hidden']}" if m.get("arch") == "lstm"
           else f"heads {m['heads']}, positions {m['positions']}")
        + (f", attention {m['attention']}" if "attention" in m and m.get("arch") == "lstm"
           else ""),
        f"training    {t.get('optimizer', 'adamw')}, batch {_fmt(t.get('batch_size'))}"
        + (f" x {t['window']} tokens" if t.get("window") else "") + ", "
        f"lr {_fmt(t.get('lr'))}, "
        f"schedule {t.get('schedule')}, weight decay {_fmt(t.get('weight_decay'))}, "
        f"seed {t.get('seed')}",
        f"tokenizer   {tok.get('kind')}, {_fmt(tok.get('vocab_size'))} tokens, "
        f"sha256 {str(tok.get('sha256'))[:16]}",
        f"data        {d.get('path')} ({_fmt(d.get('train_tokens'))} train / "
        f"{_fmt(d.get('val_tokens'))} val tokens)",
        f"history     {_fmt(h.get('step'))} {plural(h.get('step') or 0, 'step')}, "
        f"{_fmt(h.get('tokens_seen'))} tokens, "
        f"{_fmt(h.get('elapsed_s'))}s",
        f"            last loss {_fmt(h['last_loss'])}, val loss last {_fmt(h['last_val_loss'])}"
        f" / best {_fmt(h['best_val_loss'])}",
    ]
    spark = _loss_sparkline(run)
    if spark:
        lines.append(spark)
    if data.get("pretraining", {}).get("objective") == "denoising":
        p = data["pretraining"]
        lines.append(f"pretraining denoising: {p['mask_ratio']:.0%} of the tokens masked in "
                     f"Poisson({p['span_lambda']:g}) spans"
                     + (", sentences permuted" if p.get("permute_sentences") else ""))
    if "classifier" in data:
        lines += _classifier_lines(data["classifier"])
    elif data.get("base"):  # a fine-tuned language model or encoder–decoder
        label = "base run   " if data.get("task") == "seq2seq" else "base LM    "
        lines.append(f"{label} {data['base'].get('run')}")
        if data.get("kept"):
            kept = data["kept"]
            lines.append(f"weights     step {kept['step']}'s, the best held-out "
                         f"(val loss {_fmt(kept['val_loss'])})")
    typer.echo("\n".join(lines))


def _loss_sparkline(run: Path) -> str:
    """"loss        ▇▅▄▃▂▂▁▁ 6.22 → 2.31": the training loss at a glance, on a terminal only
    (a pipe gets the lines above alone)."""
    from lmtool.plots import terminal

    if not terminal.stdout_is_terminal():
        return ""
    from lmtool.checkpoint import read_metrics

    losses = [r["loss"] for r in read_metrics(run) if isinstance(r.get("loss"), (int, float))]
    if len(losses) < 2:
        return ""
    return f"loss        {terminal.sparkline(losses)} {_fmt(losses[0])} → {_fmt(losses[-1])}"


def _classifier_lines(c: dict) -> list[str]:
    """Labels, base language model and per-epoch history of a classifier run."""
    base, best = c["base"], c.get("best") or {}
    lines = [
        f"labels      {', '.join(c['labels'])}",
        f"base LM     {base.get('run')} ({base.get('arch')}, {base.get('objective')}"
        + (", backward" if base.get("backward") else "") + ")",
    ]
    if best:
        lines.append(f"best epoch  {best['epoch']:g}: val accuracy {best['val_accuracy']:.4f}, "
                     f"macro-F1 {best['val_macro_f1']:.4f}, loss {best['val_loss']:.4f}")
    lines.append("epoch  groups  val loss  accuracy  macro-F1")
    for r in c["epochs"]:
        lines.append(f"{r['epoch']:>5g}  {_fmt(r['trainable_groups']):>6}  {r['val_loss']:8.4f}  "
                     f"{r['val_accuracy']:8.4f}  {r['val_macro_f1']:8.4f}")
    return lines
