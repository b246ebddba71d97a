"""Transduction with an encoder–decoder run: each source in, its target out, in order.

    from lmtool.inference.translate import translate
    [g] = translate("runs/mt", "Ein Mann fährt Fahrrad.")            # greedy
    gs = translate("runs/mt", sources, beams=5)                       # beam search, batched
    g.text                                                            # the output alone

Decoding is the generation library's (inference/generate.py, beam.py, sampling.py,
decoding.py): greedy, sampling (temperature, top-k/p, seeds that do not depend on the
batch), beam search with a length penalty, batched sources. What differs from an LM
prompt: a source is its ids then [EOS], read once by the encoder (keys and values for
the cross-attention are computed once per source), and the decoder starts from [BOS];
the text written is the output alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from lmtool.errors import BadInput
from lmtool.inference.generation import GenerateOptions, Generation
from lmtool.inference.runs import LoadedLM
from lmtool.inference.text import Prompt
from lmtool.text.specials import SPECIAL_IDS
from lmtool.wording import plural

Warn = Callable[[str], None]


def load_seq2seq(run: str | Path | LoadedLM, *, device: str = "auto",
                 precision: str = "auto") -> LoadedLM:
    """Load a sequence-to-sequence run for inference (refusing any other kind)."""
    if isinstance(run, LoadedLM):
        if not getattr(run.model, "encoder_decoder", False):
            raise BadInput(f"{run.path} is not a sequence-to-sequence run")
        return run
    from lmtool.checkpoint import load_checkpoint
    from lmtool.device import resolve_device
    from lmtool.inference.runs import inference_dtype

    dev = resolve_device(device)
    ckpt = load_checkpoint(Path(run), dev, task="seq2seq")
    dtype = inference_dtype(precision, dev, ckpt.model)
    model = ckpt.model.to(dtype=dtype).eval()
    model.requires_grad_(False)
    return LoadedLM(model, ckpt.tokenizer, dev, dtype, Path(run))


def encode_source(lm: LoadedLM, text: str, index: int = 0, on_warning: Warn | None = None
                  ) -> Prompt:
    """A source as the encoder reads it: its ids (the first context - 1) then [EOS]."""
    if not isinstance(text, str):
        raise BadInput(f"source {index + 1} is not a string")
    keep = lm.config.context - 1
    ids = lm.tokenizer.encode(text.strip(), add_special_tokens=False).ids
    truncated = max(0, len(ids) - keep)
    if truncated and on_warning:
        on_warning(f"source {index + 1} has {len(ids)} tokens, more than the context of "
                   f"{lm.config.context} allows: kept the first {keep}")
    # `tokens` (what the output is joined to, and what repetition penalises) stays
    # empty: the output is a text of its own, in the target language.
    return Prompt(text, [*ids[:keep], SPECIAL_IDS.eos], [], truncated, index)


def resolve_options(lm: LoadedLM, options: GenerateOptions | None, values: dict
                    ) -> GenerateOptions:
    """The options with defaults filled in; max_new_tokens within the target context
    (the decoder's positions); greedy unless sampling was asked for."""
    unknown = sorted(set(values) - set(GenerateOptions.field_names()))
    if unknown:
        raise BadInput(f"unknown generation {plural(len(unknown), 'option')}: "
                       f"{', '.join(unknown)}")
    options = replace(options or GenerateOptions(), **values)
    if options.temperature is None and options.top_k is None and options.top_p is None \
            and options.min_p is None and options.num_samples == 1:
        options = replace(options, temperature=0.0)  # a translation: the likeliest, greedily
    options = options.resolved()
    return replace(options, max_new_tokens=min(options.max_new_tokens, lm.config.context))


def translate(
    run: str | Path | LoadedLM,
    sources: str | Sequence[str],
    options: GenerateOptions | None = None,
    *,
    device: str = "auto",
    precision: str = "auto",
    batch_size: int = 32,
    on_warning: Warn | None = None,
    **option_values,
) -> list[Generation]:
    """The output for each source, in input order (several per source with
    num_return or num_samples). Options as GenerateOptions fields; greedy by default."""
    from lmtool.inference.generate import generate_prompts

    lm = load_seq2seq(run, device=device, precision=precision)
    options = resolve_options(lm, options, option_values)
    texts = [sources] if isinstance(sources, str) else list(sources)
    if batch_size < 1:
        raise BadInput("--batch-size must be >= 1")
    per_row = options.num_return if options.beams > 1 else options.num_samples
    rows_per_batch = max(1, batch_size // per_row)
    results: list[Generation] = []
    for start in range(0, len(texts), rows_per_batch):
        batch = [encode_source(lm, text, start + i, on_warning)
                 for i, text in enumerate(texts[start : start + rows_per_batch])]
        results += generate_prompts(lm, batch, options)
    return results


__all__ = ["encode_source", "load_seq2seq", "resolve_options", "translate"]
