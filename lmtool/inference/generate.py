"""Text generation from a causal run: greedy, sampling, beam search; batched; streaming.

    from lmtool.inference import generate, stream
    [g] = generate("runs/lm", "Once upon a time", max_new_tokens=40, top_p=0.9, seed=1)
    g.text, g.stop_reason                         # the continuation, "eos"/"stop"/"length"
    g.seed          # sampling: the seed (drawn from the OS when none is given) that repeats it
    for piece in stream("runs/lm", "Once upon a time"):
        print(piece, end="", flush=True)

How it runs (inference/decoding.py for the model side):
1. Each prompt becomes [EOS] + its ids (a new document starts after [EOS]), reversed
   for a backward run, cut to the context for a Transformer.
2. The rows (prompts x samples) are read in one batched forward that fills each row's
   state (KV cache or LSTM (h, c)); every later step feeds one token per row.
3. Each step turns the logits into one token per row for the whole batch at once
   (inference/sampling.py); Python then looks at each row's token for [EOS], the
   length limit and stop strings. Finished rows leave the batch once a quarter of it
   is done (their state rows are dropped with `select`).
Beam search lives in inference/beam.py and shares steps 1 and 2.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from lmtool.errors import BadInput
from lmtool.inference.beam import beam_search
from lmtool.inference.decoding import Decoder, select
from lmtool.inference.generation import GenerateOptions, Generation
from lmtool.inference.runs import LoadedLM, load_lm
from lmtool.inference.sampling import filter_logits, gumbel_argmax, repetition_penalty, row_keys
from lmtool.inference.text import (
    Prompt,
    StopMatcher,
    TextStream,
    continuation_text,
    cut_backward,
    encode_prompt,
)
from lmtool.text.specials import SPECIAL_IDS
from lmtool.wording import plural

Warn = Callable[[str], None]


def generate(
    run: str | Path | LoadedLM,
    prompts: str | Sequence[str],
    options: GenerateOptions | None = None,
    *,
    device: str = "auto",
    precision: str = "auto",
    batch_size: int = 32,
    on_warning: Warn | None = None,
    **option_values,
) -> list[Generation]:
    """Generate for one prompt or many: a list of Generations in input order (several
    per prompt with num_samples or num_return). Options as GenerateOptions fields."""
    lm = load_lm(run, device=device, precision=precision)
    options = _options(options, option_values)
    texts = [prompts] if isinstance(prompts, str) else list(prompts)
    if batch_size < 1:
        raise BadInput("--batch-size must be >= 1")
    per_row = options.num_return if options.beams > 1 else options.num_samples
    rows_per_batch = max(1, batch_size // per_row)
    results: list[Generation] = []
    for start in range(0, len(texts), rows_per_batch):
        batch = [
            prepare(lm, text, start + i, on_warning,
                    label="the prompt" if isinstance(prompts, str) else None)
            for i, text in enumerate(texts[start : start + rows_per_batch])
        ]
        results += generate_prompts(lm, batch, options)
    return results


def _options(options: GenerateOptions | None, values: dict) -> GenerateOptions:
    unknown = sorted(set(values) - set(GenerateOptions.field_names()))
    if unknown:
        raise BadInput(f"unknown generation {plural(len(unknown), 'option')}: {', '.join(unknown)}")
    return replace(options or GenerateOptions(), **values).resolved()


def prepare(
    lm: LoadedLM, text: str, index: int = 0, on_warning: Warn | None = None,
    label: str | None = None,
) -> Prompt:
    """Encode one prompt for `lm`, warning when it had to be cut to the context."""
    label = label or f"prompt {index + 1}"
    if not isinstance(text, str):
        raise BadInput(f"{label} is not a string")
    config = lm.config
    limit = lm.model.max_positions
    fits = limit - 1 if limit is not None else 1 << 62
    prompt = encode_prompt(lm.tokenizer, text, config.backward, fits, index, lm.specials)
    if prompt.truncated and on_warning:
        kept = "first" if config.backward else "last"
        on_warning(
            f"{label} has {len(prompt.tokens)} tokens, more than the context of "
            f"{limit} allows: kept the {kept} {len(prompt.tokens) - prompt.truncated}"
        )
    return prompt


def generate_prompts(
    lm: LoadedLM, prompts: list[Prompt], options: GenerateOptions
) -> list[Generation]:
    """Generate for prompts already encoded, all in one batch; options resolved."""
    if options.beams > 1:
        return beam_search(lm, prompts, options)
    rows = [_Row(p, j, lm, options) for p in prompts for j in range(options.num_samples)]
    for _ in _sample(lm, rows, options):
        pass
    return [row.result() for row in rows]


def stream(
    run: str | Path | LoadedLM,
    prompt: str,
    options: GenerateOptions | None = None,
    *,
    device: str = "auto",
    precision: str = "auto",
    on_warning: Warn | None = None,
    **option_values,
) -> Iterator[str]:
    """The continuation of one prompt, piece by piece as it is generated: whole
    characters only, stop strings never shown. (Sampling or greedy, forward runs: a
    backward run writes right to left, so its text is only known at the end.)"""
    lm = load_lm(run, device=device, precision=precision)
    options = _options(options, option_values)
    if options.beams > 1 or options.num_samples > 1:
        raise BadInput("streaming writes one text", "use --beams 1 and --num-samples 1")
    if lm.config.backward:
        raise BadInput("a backward run writes right to left and cannot stream",
                       "use generate() and print the result")
    row = _Row(prepare(lm, prompt, 0, on_warning), 0, lm, options, streaming=True)
    for pieces in _sample(lm, [row], options):
        if pieces[0]:
            yield pieces[0]
    tail = row.finish_text()
    if tail:
        yield tail


def sample(
    model, tokenizer, prompt: str, max_new_tokens: int, *, temperature: float = 0.8,
    top_k: int | None = 40, seed: int = 0, stop_at_eos: bool = True,
) -> str:
    """A short sample from a model in memory (what `pretrain` shows at the end of a
    run); with stop_at_eos=False, documents are separated by a newline."""
    was_training = model.training
    model.eval()
    try:
        weight = next(model.parameters())
        lm = LoadedLM(model, tokenizer, weight.device, weight.dtype)
        options = GenerateOptions(max_new_tokens=max_new_tokens, temperature=temperature,
                                  top_k=top_k, seed=seed, stop_at_eos=stop_at_eos).resolved()
        [g] = generate_prompts(lm, [prepare(lm, prompt)], options)
        return g.text
    finally:
        model.train(was_training)


# --- the sampling loop --------------------------------------------------------------


@dataclass
class _Row:
    """One text being written: its prompt, the ids so far, and how it ended."""

    prompt: Prompt
    sample: int
    lm: LoadedLM
    options: GenerateOptions
    streaming: bool = False
    ids: list[int] = field(init=False)  # what the model has read (model order)
    new: list[int] = field(default_factory=list)  # generated ids (model order)
    reason: str | None = None
    stream: TextStream | None = None
    text: str | None = None

    def __post_init__(self):
        self.ids = list(self.prompt.ids)
        backward = self.lm.config.backward
        # Text is followed token by token when it must be shown as it comes or cut at
        # a stop string; otherwise decoded once at the end.
        if (self.streaming or self.options.stop) and not backward:
            self.stream = TextStream(self.lm.tokenizer, self.prompt, self.options.stop)

    def push(self, token: int) -> str:
        """Take the next token; return the text it makes visible (streaming)."""
        if token == self.lm.specials.eos and self.options.stop_at_eos:
            self.reason = "eos"
            return ""
        self.ids.append(token)
        self.new.append(token)
        shown = ""
        if self.stream is not None:
            shown = self.stream.push(token)
            if self.stream.stopped:
                self.reason = "stop"
        elif self.options.stop and self.lm.config.backward:
            text = continuation_text(self.lm.tokenizer, self.prompt, self.new[::-1], True)
            if cut_backward(text, self.options.stop)[1]:
                self.reason = "stop"
        if self.reason is None and len(self.new) >= self.options.max_new_tokens:
            self.reason = "length"
        return shown

    def finish_text(self) -> str:
        """The rest of the streamed text once the row is done."""
        return self.stream.finish() if self.stream is not None else ""

    def result(self) -> Generation:
        backward = self.lm.config.backward
        tokens = self.new[::-1] if backward else list(self.new)
        if self.stream is not None:
            self.finish_text()
            text = self.stream.text
        else:
            text = _documents_text(self.lm.tokenizer, self.prompt, tokens, backward,
                                   self.lm.specials.eos)
            if backward and self.options.stop:
                text = cut_backward(text, self.options.stop)[0]
        return Generation(
            self.prompt.text, text, tokens, self.reason or "length", self.prompt.index,
            self.sample, truncated=self.prompt.truncated, backward=backward,
            seed=None if self.options.greedy else self.options.seed,
        )


def _documents_text(tokenizer, prompt: Prompt, tokens: list[int], backward: bool,
                    eos: int = SPECIAL_IDS.eos) -> str:
    """Decode generated ids; an [EOS] inside them (stop_at_eos=False) becomes a newline."""
    if eos not in tokens:
        return continuation_text(tokenizer, prompt, tokens, backward)
    docs: list[list[int]] = [[]]
    for t in tokens:
        if t == eos:
            docs.append([])
        else:
            docs[-1].append(t)
    return "\n".join(tokenizer.decode(d) for d in docs)


def _choose(
    logits: torch.Tensor, options: GenerateOptions, keys: torch.Tensor, step: int,
    seen: torch.Tensor | None,
) -> torch.Tensor:
    """The next token of every row, (B, V) logits → (B,) ids."""
    if seen is not None:
        logits = repetition_penalty(logits, seen, options.repetition_penalty)
    if options.greedy:
        return logits.argmax(dim=-1)
    logits = filter_logits(logits / options.temperature, options.top_k, options.top_p,
                           options.min_p)
    return gumbel_argmax(logits, keys, step)


def _sample(lm: LoadedLM, rows: list[_Row], options: GenerateOptions) -> Iterator[list[str]]:
    """Run greedy/sampling generation for `rows` in one batch, in place; yields, after
    each step, the text each row made visible (for streaming)."""
    if options.max_new_tokens == 0 or not rows:
        for row in rows:
            row.reason = "length"
        return
    decoder = Decoder(lm)
    with torch.inference_mode():
        state, logits = decoder.start([r.ids for r in rows], options.max_new_tokens)
        keys = row_keys(options.seed, [(r.prompt.index, r.sample) for r in rows], lm.device)
        seen = None
        if options.repetition_penalty != 1:
            seen = torch.zeros_like(logits, dtype=torch.bool)  # (B, V) ids in the text
            for i, r in enumerate(rows):
                seen[i, r.prompt.tokens] = True
        alive = list(rows)  # the rows of the batch, in state order (finished ones too)
        step = 0
        while True:
            next_ids = _choose(logits, options, keys, step, seen)  # (B,)
            shown = [row.push(t) if row.reason is None else ""
                     for row, t in zip(alive, next_ids.tolist(), strict=True)]
            yield shown
            running = [i for i, row in enumerate(alive) if row.reason is None]
            if not running:
                return
            if len(running) <= 3 * len(alive) // 4:  # drop finished rows from the batch
                index = torch.tensor(running, device=lm.device)
                state = select(state, index)
                alive = [alive[i] for i in running]
                next_ids, keys = next_ids[index], keys[index]
                seen = seen[index] if seen is not None else None
            if seen is not None:
                seen.scatter_(1, next_ids[:, None], True)
            step += 1
            if decoder.full(state):
                state, logits = decoder.restart(
                    [r.ids for r in alive], options.max_new_tokens - step
                )
            else:
                logits = decoder.step(state, next_ids)


__all__ = [
    "GenerateOptions", "Generation", "StopMatcher", "generate", "sample",
    "stream",
]
