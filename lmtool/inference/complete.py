"""Autocomplete: the likely continuations of a text being typed, fast enough for every
keystroke. No UI here (cli/complete_ui.py draws it); this is the engine.

    engine = CompletionEngine(load_lm("runs/lm"), max_words=5)
    engine.suggest("The cat sat on")             # the best continuation (ghost text)
    engine.alternatives("The cat sat on", k=5)   # the k best (beam search)
    engine.menu("The cat sat on", k=5)           # the suggestion first, then the others
    complete("runs/lm", "The cat sat on", k=5)   # the same in one call

What a keystroke costs. The engine keeps the model's state (KV cache or LSTM (h, c))
for the last text it read. A new text is tokenized, compared with the ids already
read, and only what differs is read: typing a letter usually changes the last token
or two, so a keystroke costs a couple of tokens, not the whole line. A state that can
`crop` (a KV cache) is cut back (free); one that cannot forget (an LSTM's (h, c)) keeps
a copy of itself at the last few positions and goes back to the nearest one. A
suggestion is then decoded greedily into the same cache and cropped off again (nothing
is copied).
If the person types the very characters the last suggestion began with, the rest of
it is shown again at once without running the model (`follow`, as a shell's
autosuggestions do): the ghost text does not flicker while it is being typed through.

A text that does not end in whitespace, typically inside a word, is healed
(inference/healing.py): the last word's tokens are backed up, the model reads the text
before them, and the first tokens it writes must spell the word again, so "The ri"
suggests "ver bank" rather than the word after " ri". Typing on inside a word then
reads nothing new (the text before the word stays the same).

Suggestions end after `max_words` words, at the end of a sentence, at [EOS], or after
`max_tokens` tokens, whichever comes first. The healing tokens count among the
`max_tokens`, so healing adds no decoding steps to a keystroke (benchmarks/generate.py:
p95 39.6 ms healed vs 42.0 ms unhealed in one run). `cancelled()` is asked between
tokens, so a suggestion made stale by the next keystroke stops early (the UI passes
it).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from lmtool.errors import BadInput
from lmtool.inference.beam import beam_search
from lmtool.inference.decoding import Decoder
from lmtool.inference.generation import GenerateOptions
from lmtool.inference.healing import Heal, back_up, token_texts
from lmtool.inference.runs import LoadedLM, load_lm
from lmtool.inference.text import Prompt, continuation_text

SENTENCE_END = re.compile(r"[.!?](?=\s|$)|\n")
WORD = re.compile(r"\S+")
LSTM_SNAPSHOTS = 8  # LSTM states kept for going back a few tokens (each is one row)
MAX_WIDENING = 8  # alternatives: search at most 8 x k beams for k distinct texts


@dataclass
class Completion:
    text: str  # what follows the typed text
    score: float  # beam search: length-normalised log-probability; greedy: log-probability
    tokens: list[int]  # the ids generated (a healed word's first ones spell its typed part)


def complete(
    run: str | Path | LoadedLM,
    prefix: str,
    *,
    k: int = 5,
    max_words: int = 5,
    max_tokens: int = 8,
    device: str = "auto",
    precision: str = "auto",
) -> list[Completion]:
    """The k best continuations of `prefix`, best first (beam search)."""
    engine = CompletionEngine(load_lm(run, device=device, precision=precision),
                              max_words=max_words, max_tokens=max_tokens)
    return engine.alternatives(prefix, k)


def trim(text: str, max_words: int) -> str:
    """Cut a continuation after its first sentence end or its max_words-th word."""
    end = SENTENCE_END.search(text)
    if end:
        text = text[: end.end()] if end.group() != "\n" else text[: end.start()]
    words = list(WORD.finditer(text))
    if len(words) > max_words:
        text = text[: words[max_words - 1].end()]
    return text


def _finished(text: str, max_words: int) -> bool:
    """Whether a growing continuation already holds all it may: a sentence end, or a
    word beyond max_words (the last word may still be growing until then)."""
    return bool(SENTENCE_END.search(text)) or len(WORD.findall(text)) > max_words


class CompletionEngine:
    """The n-best continuations of a prefix that changes one keystroke at a time."""

    def __init__(
        self, lm: LoadedLM, *, max_words: int = 5, max_tokens: int = 8, follow: bool = True
    ):
        if lm.config.backward:
            raise BadInput("a backward run writes what comes before a text, not after it",
                           "use a forward run for complete")
        if max_words < 1 or max_tokens < 1:
            raise BadInput("--max-words and --max-tokens must be >= 1")
        self.lm = lm
        self.decoder = Decoder(lm)
        self.texts = token_texts(lm.tokenizer)  # each id's text, for healing
        self.max_words = max_words
        self.max_tokens = max_tokens
        self.follow = follow  # typing the suggestion's own characters keeps the rest of it
        self.lock = threading.Lock()  # one computation at a time
        self._ids: list[int] = []  # ids in the state (the model's window of the prefix)
        limit = lm.model.max_positions
        self._state = lm.model.initial_state(1, capacity=limit)  # (options a state ignores)
        self._crops = callable(getattr(self._state, "crop", None))  # else: snapshots
        self._logits: torch.Tensor | None = None  # (1, V) after the last id
        self._snapshots: dict[int, object] = {}  # LSTM: length → state copy
        # The last text, its suggestion and the suggestion's score.
        self._last: tuple[str, str, float] | None = None

    # --- the public calls ---------------------------------------------------------

    def suggest(self, text: str, cancelled: Callable[[], bool] = lambda: False) -> str | None:
        """The best continuation of `text` ("" if none), or None when cancelled."""
        scored = self._suggest(text, cancelled)
        return None if scored is None else scored[0]

    def _suggest(self, text: str, cancelled) -> tuple[str, float] | None:
        """The suggestion and its score (see `menu`), or None when cancelled."""
        if self._last is not None:
            before, suggestion, score = self._last
            if text == before:  # asked again (the menu): the ghost text already shown
                return suggestion, score
            typed = text[len(before):]
            if self.follow and text.startswith(before) and typed and suggestion.startswith(typed):
                rest = suggestion[len(typed):]
                if rest:
                    self._last = (text, rest, score)
                    return rest, score
        # Trailing spaces are left out of what the model reads (a tokenizer may drop them,
        # or read a lone space as a token of its own) and taken off the suggestion.
        body = text.rstrip()
        tail = text[len(body):]
        with self.lock, torch.inference_mode():
            prompt, heal = self._window(body, heal=not tail)
            logits = self._read(prompt, cancelled)
            if logits is None:
                return None
            greedy = self._greedy(prompt, heal, logits, cancelled)
        if greedy is None:
            return None
        result, score = greedy
        if tail and result.startswith(tail):
            result = result[len(tail):]
        elif tail:
            result = result.lstrip()
        self._last = (text, result, score)
        return result, score

    def menu(self, text: str, k: int = 5) -> list[Completion]:
        """The k choices of a menu: the suggestion (the ghost text shown) first, then the
        best other alternatives. The suggestion is the alternative of the same text when
        the search found it, else its own: its mean log-probability per token as the
        score (the one it had when it was made, if it is the rest of one being typed
        through), and no tokens."""
        ghost, score = self._suggest(text, lambda: False)
        others = self.alternatives(text, k)
        if not ghost:
            return others
        same = [c for c in others if c.text == ghost]
        first = same[0] if same else Completion(ghost, score, [])
        return [first, *[c for c in others if c.text != ghost]][:k]

    def alternatives(self, text: str, k: int = 5) -> list[Completion]:
        """The k best distinct continuations of `text`, best first (beam search from
        the prefix's state, which it leaves as it was). Texts that differ only after
        the cut (`trim`) are one continuation, so the search widens (2x the beams, up to
        MAX_WIDENING x k) until it has k distinct ones or runs out of texts."""
        if k < 1:
            raise BadInput("-k must be >= 1")
        beams = max(k, 2)  # (one beam would be greedy search, which GenerateOptions refuses)
        while True:
            found, out = self._search(text, beams)
            if len(out) >= k or len(found) < beams or beams >= MAX_WIDENING * k:
                return out[:k]
            beams *= 2

    def _search(self, text: str, beams: int) -> tuple[list, list[Completion]]:
        """Beam search with `beams` beams: what it found, and the distinct trimmed
        continuations of that, best first."""
        body = text.rstrip()
        with self.lock, torch.inference_mode():
            prompt, heal = self._window(body, heal=body == text)
            logits = self._read(prompt, lambda: False)
            constrain = None
            if heal is not None:
                constrain = heal.constraint(self.texts, logits.size(-1), self.lm.device)
            options = GenerateOptions(max_new_tokens=self.max_tokens, beams=beams,
                                      num_return=beams, temperature=0).resolved()
            # beam_search expands the state into new rows: the prefix's stays as it is.
            found = beam_search(self.lm, [prompt], options, start=(self._state, logits),
                                constrain=constrain)
        out, seen = [], set()
        for g in found:
            piece = g.text if heal is None else heal.suggestion(g.text)
            if piece is None:
                continue
            piece = trim(piece, self.max_words)
            if body != text:  # the typed trailing space stands for the one suggested
                piece = piece.lstrip()
            if piece.strip() and piece not in seen:
                seen.add(piece)
                out.append(Completion(piece, g.score, g.tokens))
        return found, out

    # --- reading the prefix -----------------------------------------------------------

    def _window(self, text: str, heal: bool) -> tuple[Prompt, Heal | None]:
        """The prefix's ids as the model reads them ([EOS], then the text less what is
        backed up for healing when `heal`), and the healing. Past the context, the
        window starts at a multiple of context // 4 tokens, so it moves rarely and the
        cache stays. The text is a document's beginning: its leading whitespace is no
        part of it (text/boundaries.py); the caller keeps the trailing one out."""
        text = text.lstrip()
        if heal:
            tokens, healing = back_up(self.lm.tokenizer, self.texts, text)
        else:
            tokens, healing = self.lm.tokenizer.encode(text, add_special_tokens=False).ids, None
        start = list(self.lm.specials.start) or [self.lm.specials.bos]  # [EOS] for lmtool's
        prompt = Prompt(text, [*start, *tokens], tokens)
        if self.decoder.limit is not None:
            limit = self.decoder.limit - self.max_tokens
            step = max(1, self.decoder.limit // 4)
            over = len(prompt.ids) - limit
            if over > 0:
                start = -(-over // step) * step  # round up to a multiple of step
                prompt.ids = prompt.ids[start:]
        return prompt, healing

    def _read(self, prompt: Prompt, cancelled) -> torch.Tensor | None:
        """Bring the state to the prompt's ids, reading only what changed; return the
        logits (1, V) of the next token (None when cancelled)."""
        ids = prompt.ids
        common = 0
        for a, b in zip(self._ids, ids, strict=False):
            if a != b:
                break
            common += 1
        if common == len(ids) == len(self._ids) and self._logits is not None:
            return self._logits
        common = min(common, len(ids) - 1)  # read at least one token for its logits
        if self._crops:
            self._state.crop(common)
        else:
            common = self._restore(common)
        self._ids = ids[:common]
        self._logits = None
        todo = ids[common:]
        # The LSTM reads most in one go and the last two tokens singly, keeping a copy
        # of its state at each of those positions for the next keystroke.
        chunks = [todo] if self._crops else [todo[:-2], *([t] for t in todo[-2:])]
        for chunk in chunks:
            if not chunk:
                continue
            if cancelled():
                return None
            x = torch.tensor([chunk], device=self.lm.device)  # (1, T)
            hidden = self.lm.model.encode(x, self._state)  # (1, T, C)
            self._ids += chunk
            if not self._crops:
                self._snapshot()
        self._logits = self.decoder.logits(hidden[:, -1])  # (1, V)
        return self._logits

    def _restore(self, common: int) -> int:
        """LSTM: go back to the latest copy at or before `common` ids; its length."""
        usable = [n for n in self._snapshots if n <= common]
        if not usable:
            self._state, self._snapshots = self.lm.model.initial_state(1), {}
            return 0
        n = max(usable)
        self._snapshots = {m: s for m, s in self._snapshots.items() if m <= n}
        self._state = self._snapshots[n].clone()
        return n

    def _snapshot(self) -> None:
        self._snapshots[len(self._ids)] = self._state.clone()
        while len(self._snapshots) > LSTM_SNAPSHOTS:
            del self._snapshots[min(self._snapshots)]

    # --- the suggestion -----------------------------------------------------------

    def _greedy(self, prompt: Prompt, heal: Heal | None, logits: torch.Tensor,
                cancelled) -> tuple[str, float] | None:
        """Greedy decoding into the prefix's own state, which is restored afterwards:
        (the text, its mean log-probability per token), or None when cancelled. While
        the backed-up text is not yet written again, only the tokens that spell it may
        be chosen."""
        start = len(self._ids)
        state = self._state if self._crops else self._state.clone()
        spell = heal.spell if heal is not None else b""
        new: list[int] = []
        text = ""
        logprob = 0.0  # of the tokens in `new`
        try:
            for _ in range(self.max_tokens):  # the healing tokens included
                if spell:
                    logits = logits + self.texts.bias(spell, logits.size(-1), self.lm.device)
                token = int(logits.argmax(dim=-1))
                if token == self.lm.specials.eos or logits[0, token] == float("-inf"):
                    break  # the end, or nothing can spell what is left (healing)
                new.append(token)
                logprob += float(torch.log_softmax(logits[0], dim=-1)[token])
                spell = self.texts.left(spell, [token])
                if not spell:
                    text = self._suggestion(prompt, heal, new)
                    if _finished(text, self.max_words):
                        break
                if len(new) == self.max_tokens:
                    break
                if cancelled():
                    return None
                if self.decoder.full(state):
                    break
                logits = self.decoder.step(state, torch.tensor([token], device=self.lm.device))
        finally:
            if self._crops:
                state.crop(start)  # forget the suggestion, keep the prefix
        return trim(text, self.max_words), logprob / max(len(new), 1)

    def _suggestion(self, prompt: Prompt, heal: Heal | None, new: list[int]) -> str:
        """The text of `new` after the typed text (the backed-up part taken off)."""
        text = continuation_text(self.lm.tokenizer, prompt, new, False)
        if heal is None:
            return text
        rest = heal.suggestion(text)
        return "" if rest is None else rest
