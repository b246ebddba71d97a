"""Between text and token ids for generation: prompts in, continuations out, stop
strings, and streaming that never prints half a character.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from lmtool.text.boundaries import document_text
from lmtool.text.specials import SPECIAL_IDS, SpecialIds

# Prompt tokens decoded together with a continuation, so that the tokenizer's decoder
# joins them as it would in the whole text (a leading space, a WordPiece "##").
JOIN_CONTEXT = 8


@dataclass
class Prompt:
    text: str
    ids: list[int]  # what the model reads first, in its reading order
    tokens: list[int]  # the prompt's own ids in reading order (no [EOS])
    truncated: int = 0  # prompt tokens left out to fit the context
    index: int = 0  # position in the caller's list of prompts
    # Whitespace typed where the writing goes on (the end; the start for a backward
    # model), which the model does not read: it stands for the continuation's own.
    space: str = ""


def encode_prompt(tokenizer, text: str, backward: bool, fits: int, index: int = 0,
                  specials: SpecialIds = SPECIAL_IDS) -> Prompt:
    """The ids a causal model reads for `text`: [EOS] (a document starts after one, as
    in the shards it was trained on) then the prompt, reversed for a backward model.
    The prompt is a document's beginning (its end, backward), so it loses the
    whitespace around it as every document does (text/boundaries.py); a space typed
    where the writing goes on is taken off the continuation instead ("Once upon a "
    → "time", not " time"). An empty prompt is just [EOS]: the model starts a new
    document. A prompt longer than `fits` tokens keeps the `fits` tokens nearest to
    where the writing goes on (the end; the start for a backward model) and drops the
    [EOS]. An imported run reads what its own tokenizer puts before a text instead of
    the [EOS] (`specials.start`: Llama's <s>; nothing for GPT-2, whose empty prompt is
    its <|endoftext|>), so it sees the ids `transformers` would give it."""
    body = document_text(text)
    space = (text[: len(text) - len(text.lstrip())] if backward
             else text[len(text.rstrip()) :]) if body else ""
    tokens = tokenizer.encode(body, add_special_tokens=False).ids if body else []
    start = list(specials.start) if (tokens or specials.start) else [specials.bos]
    ids = [*start, *(tokens[::-1] if backward else tokens)]
    truncated = 0
    if len(ids) > fits:
        truncated = len(ids) - len(start) - fits
        ids = ids[-fits:]
    return Prompt(text, ids, tokens, truncated, index, space)


def continuation_text(tokenizer, prompt: Prompt, new: Sequence[int], backward: bool) -> str:
    """The text of `new` (ids in reading order) as it reads after the prompt (before it,
    for a backward model): decoded together with a few prompt tokens, which are then
    taken off again, so the decoder joins the two as in the whole text."""
    new = list(new)
    if backward:
        head = prompt.tokens[:JOIN_CONTEXT]
        whole, base = tokenizer.decode(new + head), tokenizer.decode(head)
        text = (whole[: len(whole) - len(base)] if base and whole.endswith(base)
                else tokenizer.decode(new))
        space = prompt.space
        return text[: len(text) - len(space)] if space and text.endswith(space) else text
    tail = prompt.tokens[-JOIN_CONTEXT:]
    whole, base = tokenizer.decode(tail + new), tokenizer.decode(tail)
    text = whole[len(base) :] if whole.startswith(base) else tokenizer.decode(new)
    return text[len(prompt.space) :] if prompt.space and text.startswith(prompt.space) else text


class StopMatcher:
    """Cuts a growing text at the first stop string, releasing only text that can no
    longer turn out to be the start of one.

    feed(piece) → the text now safe to show. A suffix that could still begin a stop
    string ("\\n" with stop "\\n\\n") is held back until the next piece decides it. So
    no stop string can start in text already released, and searching only the held-back
    text is enough.
    """

    def __init__(self, stops: Sequence[str]):
        self.stops = [s for s in stops if s]
        self.pending = ""
        self.stopped = False

    def feed(self, piece: str) -> str:
        if self.stopped:
            return ""
        self.pending += piece
        if not self.stops:
            out, self.pending = self.pending, ""
            return out
        hits = [i for i in (self.pending.find(s) for s in self.stops) if i >= 0]
        if hits:
            out, self.pending, self.stopped = self.pending[: min(hits)], "", True
            return out
        hold = self._held(self.pending)
        out, self.pending = self.pending[: len(self.pending) - hold], self.pending[
            len(self.pending) - hold :
        ]
        return out

    def flush(self) -> str:
        """The end of the text: what was held back is not a stop string after all."""
        out, self.pending = ("" if self.stopped else self.pending), ""
        return out

    def _held(self, text: str) -> int:
        """Length of the longest suffix of `text` that is a proper prefix of a stop."""
        best = 0
        for stop in self.stops:
            for n in range(min(len(stop) - 1, len(text)), best, -1):
                if text.endswith(stop[:n]):
                    best = n
                    break
        return best


class TextStream:
    """Token ids in, text out, one token at a time, never half a UTF-8 character: the
    tokenizers library's DecodeStream holds back bytes until they form characters."""

    def __init__(self, tokenizer, prompt: Prompt, stops: Sequence[str] = ()):
        from tokenizers.decoders import DecodeStream

        self.tokenizer = tokenizer
        # Started from the prompt's last ids, so the first piece joins the prompt right.
        self.decoder = DecodeStream(prompt.tokens[-JOIN_CONTEXT:], skip_special_tokens=True)
        self.matcher = StopMatcher(stops)
        self.text = ""
        self.space = prompt.space  # still to be taken off the start (Prompt.space)

    def push(self, token: int) -> str:
        piece = self.decoder.step(self.tokenizer, token)
        if piece and self.space:
            if piece.startswith(self.space):
                piece, self.space = piece[len(self.space) :], ""
            elif self.space.startswith(piece):  # part of it: the rest may come next
                piece, self.space = "", self.space[len(piece) :]
            else:
                self.space = ""
        out = self.matcher.feed(piece) if piece else ""
        self.text += out
        return out

    def finish(self) -> str:
        out = self.matcher.flush()
        self.text += out
        return out

    @property
    def stopped(self) -> bool:
        return self.matcher.stopped


def cut_backward(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """A backward continuation grows at its start: keep what follows the LAST stop
    string (the one nearest the prompt)."""
    cuts = [text.rfind(s) + len(s) for s in stops if s and s in text]
    if not cuts:
        return text, False
    return text[max(cuts) :], True
