"""Many prompts from a file or stdin: one per line, or JSONL objects with per-prompt options,
generated in batches and returned in input order.

    {"prompt": "Once upon a time", "max_new_tokens": 20, "temperature": 0}

The first non-blank line decides, once for the whole input, whether it is JSONL or
plain prompts. A line that cannot be used (not JSON, not an object, no string "prompt",
an unknown or invalid option, a line of the other kind) comes out as a BadInput naming
its line number; the others go on.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace

from lmtool.errors import BadInput
from lmtool.inference.generate import generate_prompts, prepare
from lmtool.inference.generation import GenerateOptions, Generation
from lmtool.inference.runs import LoadedLM
from lmtool.wording import plural

# Options a JSONL line may set for its prompt.
LINE_OPTIONS = tuple(n for n in GenerateOptions.field_names() if n != "stop_at_eos")


@dataclass
class Request:
    line: int  # 1-based line number in the input
    prompt: str
    options: GenerateOptions  # resolved


def parse_requests(
    lines: Iterable[str], base: GenerateOptions, *, jsonl: bool | None = None
) -> Iterator[Request | BadInput]:
    """Requests from text lines. `jsonl` None: the first non-blank line decides for the
    whole input: JSONL when it starts with "{", else every line (even an empty one: a
    new document) is a prompt. A later line of the other kind is an error for that line
    (a JSONL line is never taken for prompt text, nor prompt text for a bad JSON line)."""
    base = base.seeded()  # one seed for every line that gives none (its row keys differ)
    first = None  # the line that decided the format (None: the caller did)
    blanks: list[tuple[int, str]] = []  # blank lines read before the format was known
    for number, raw in enumerate(lines, start=1):
        line = raw.rstrip("\r\n")
        if jsonl is None:
            if not line.strip():
                blanks.append((number, line))
                continue
            jsonl, first = _starts_json(line), number
            if not jsonl:  # the blank lines before were prompts (new documents)
                yield from (Request(n, text, base.resolved()) for n, text in blanks)
        if not jsonl:
            if _starts_json(line) and isinstance(_loads(line), dict):
                yield BadInput(
                    f"line {number}: a JSON object among plain-text prompts "
                    f"({_decided(first, 'plain text')})",
                    "give every prompt as a JSONL object, or every one as plain text")
            else:
                yield Request(number, line, base.resolved())
        elif line.strip():
            if not _starts_json(line) and _loads(line) is _NOT_JSON:
                yield BadInput(f"line {number}: plain text among JSONL prompts "
                               f"({_decided(first, 'JSONL')})", 'write {"prompt": "..."}')
            else:
                yield _parse_json(number, line, base)
    if jsonl is None:  # nothing but blank lines: plain prompts
        yield from (Request(n, text, base.resolved()) for n, text in blanks)


_NOT_JSON = object()


def _starts_json(line: str) -> bool:
    return line.lstrip().startswith("{")


def _loads(line: str):
    try:
        return json.loads(line)
    except ValueError:
        return _NOT_JSON


def _decided(first: int | None, kind: str) -> str:
    return f"line {first} made this input {kind}" if first else f"this input is {kind}"


def _parse_json(number: int, line: str, base: GenerateOptions) -> Request | BadInput:
    where = f"line {number}"
    try:
        data = json.loads(line)
    except ValueError as e:
        return BadInput(f"{where}: not valid JSON ({e.msg})")
    if not isinstance(data, dict):
        return BadInput(f"{where}: a JSONL prompt must be an object, got {type(data).__name__}",
                        'write {"prompt": "..."}')
    prompt = data.pop("prompt", None)
    if not isinstance(prompt, str):
        return BadInput(f'{where}: "prompt" must be a string', 'write {"prompt": "..."}')
    unknown = sorted(set(data) - set(LINE_OPTIONS))
    if unknown:
        return BadInput(f"{where}: unknown {plural(len(unknown), 'option')} {', '.join(unknown)}",
                        f"use {', '.join(LINE_OPTIONS)}")
    if isinstance(data.get("stop"), str):
        data["stop"] = [data["stop"]]
    if "stop" in data:
        data["stop"] = tuple(data["stop"]) if isinstance(data["stop"], list) else data["stop"]
    try:
        options = replace(base, **data)
        _check_types(options)
        return Request(number, prompt, options.resolved())
    except BadInput as e:  # name the JSON fields, not the flags: "--top-p" → "top_p"
        message = re.sub(r"--([a-z]+(?:-[a-z]+)*)", lambda m: m[1].replace("-", "_"), e.message)
        return BadInput(f"{where}: {message}", e.hint)


def _check_types(options: GenerateOptions) -> None:
    ints = ("max_new_tokens", "top_k", "beams", "num_return", "num_samples", "seed")
    floats = ("temperature", "top_p", "min_p", "repetition_penalty", "length_penalty")
    for name in ints + floats:
        value = getattr(options, name)
        kinds = (int,) if name in ints else (int, float)
        if value is not None and (isinstance(value, bool) or not isinstance(value, kinds)):
            raise BadInput(f"{name} must be a number" + (" (whole)" if name in ints else ""))
    if not isinstance(options.stop, tuple) or not all(isinstance(s, str) for s in options.stop):
        raise BadInput("stop must be a string or a list of strings")


def generate_requests(
    lm: LoadedLM,
    requests: Iterable[Request | BadInput],
    *,
    batch_size: int = 32,
    on_warning: Callable[[str], None] | None = None,
) -> Iterator[tuple[Request, list[Generation]] | BadInput]:
    """Each request's generations (or its error), in input order. Requests are taken
    `batch_size` rows at a time (memory stays flat over an endless stdin); within a
    window, those with the same options run as one batch."""
    if batch_size < 1:
        raise BadInput("--batch-size must be >= 1")
    window: list[Request | BadInput] = []
    rows = 0
    for item in requests:
        window.append(item)
        if isinstance(item, Request):
            o = item.options
            rows += o.num_return if o.beams > 1 else o.num_samples
        if rows >= batch_size:
            yield from _run_window(lm, window, on_warning)
            window, rows = [], 0
    yield from _run_window(lm, window, on_warning)


def _run_window(lm, window, on_warning):
    groups: dict[GenerateOptions, list[int]] = {}
    for i, item in enumerate(window):
        if isinstance(item, Request):
            groups.setdefault(item.options, []).append(i)
    results: dict[int, list[Generation]] = {}
    for options, members in groups.items():
        # A prompt's index is its line: its random draws depend on it, not on the batch.
        prompts = [prepare(lm, window[i].prompt, window[i].line - 1, on_warning,
                           label=f"line {window[i].line}") for i in members]
        out = generate_prompts(lm, prompts, options)
        for i in members:
            results[i] = [g for g in out if g.index == window[i].line - 1]
    for i, item in enumerate(window):
        yield (item, results[i]) if isinstance(item, Request) else item
