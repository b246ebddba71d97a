"""Token healing: complete the word being typed, not the token after it.

The problem. A subword tokenizer cuts "The ri" into "The", " ri". The model learnt
" river" as one token and has seldom read " ri" followed by anything, so after " ri"
its likeliest NEXT token starts a new word (" were"): the suggestion never finishes
"river". The cut the tokenizer made inside the word is not one the finished text has.

The fix, for a text that does not end in whitespace:
1. back up: take off the tokens of the text's last pre-token (the word being typed,
   with the space a byte-level BPE or a Metaspace unigram attaches to it), at most
   MAX_BACKUP of them;
2. the model reads the rest;
3. the first generated tokens must spell out the backed-up text again: a token is
   allowed when its text begins with what is left to spell (" river" for " ri": it
   finishes it) or is a proper prefix of it (" r" for " ri": spell the rest next);
   special tokens never are;
4. the suggestion is what follows the backed-up text.

When to heal. Whenever the text does not end in whitespace, not only inside a word:
a pre-token boundary (whitespace for BPE and unigram; also punctuation for WordPiece)
is one no finished text moves, but anything after it may still grow: "don'" is cut
"don", "'" while "don't" is "don", "'t", and "." may become "...". Healing a token
that is already complete costs nothing in quality: the token itself is among those
allowed, and the model chooses. It is skipped where it cannot change anything: one
backed-up token that no other token's text extends (every token of a char tokenizer,
which is why a char model is never healed), [UNK] or a special token, and text that
ends in whitespace (the engine handles the typed space itself, as before).

The texts of the vocabulary. Each id's text as it reads INSIDE a text (" river", not
the "river" that decoding the token alone gives under Metaspace), as bytes: a
byte-level BPE has tokens holding part of a UTF-8 character, and bytes compare them
exactly. Computed once per tokenizer (`token_texts`), with a sorted copy so that the
tokens beginning with a text are one contiguous range found by bisection (no Python
per vocabulary item per keystroke).
"""

from __future__ import annotations

import bisect
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from lmtool.inference.text import Prompt, continuation_text
from lmtool.text.specials import SPECIAL_TOKENS

MAX_BACKUP = 4  # tokens backed up at most: each may cost one more decoding step


class TokenTexts:
    """Every id's text inside a text, and the ids allowed to spell a given text."""

    def __init__(self, tokenizer):
        self.texts = _inner_texts(tokenizer)  # id → bytes (b"" for specials and [UNK])
        ordered = sorted((t, i) for i, t in enumerate(self.texts) if t)  # once per tokenizer
        self.keys = [t for t, _ in ordered]
        self.order = torch.tensor([i for _, i in ordered], dtype=torch.long)  # ids by text
        self.by_text: dict[bytes, list[int]] = {}
        for t, i in ordered:
            self.by_text.setdefault(t, []).append(i)
        # Every text beginning with t sorts right after t, so t is extended by another
        # token iff the next different key begins with it.
        self.extended = [False] * len(self.texts)
        for p, (t, i) in enumerate(ordered):
            q = p + 1
            while q < len(ordered) and ordered[q][0] == t:
                q += 1
            self.extended[i] = q < len(ordered) and ordered[q][0].startswith(t)

    def allowed(self, spell: bytes) -> torch.Tensor:
        """The ids that can come next while `spell` is still to be written: those whose
        text begins with it, then those whose text is a proper prefix of it, (N,)."""
        lo = bisect.bisect_left(self.keys, spell)
        end = _after(spell)
        hi = len(self.keys) if end is None else bisect.bisect_left(self.keys, end)
        parts = [i for n in range(1, len(spell)) for i in self.by_text.get(spell[:n], ())]
        if not parts:
            return self.order[lo:hi]
        return torch.cat([self.order[lo:hi], torch.tensor(parts, dtype=torch.long)])

    def bias(self, spell: bytes, vocab_size: int, device) -> torch.Tensor:
        """Added to the next logits while `spell` is to be written: 0 on the allowed ids,
        -inf elsewhere, (V,)."""
        bias = torch.full((vocab_size,), float("-inf"), device=device)  # (V,)
        bias[self.allowed(spell).to(device)] = 0.0
        return bias

    def left(self, spell: bytes, new: Sequence[int]) -> bytes:
        """What of `spell` is still to be written after the allowed ids `new` (b"" when
        it is all written: the last of them went past its end)."""
        for token in new:
            if not spell:
                break
            spell = spell[len(self.texts[token]) :]
        return spell


@dataclass
class Heal:
    """The backed-up end of a text, to be written again by the first generated tokens."""

    typed: str  # its text as the tokenizer decodes it after the kept tokens
    spell: bytes  # the same as the tokens' bytes (TokenTexts.texts)
    backed: int  # how many tokens were backed up

    def suggestion(self, text: str) -> str | None:
        """What follows the backed-up text in `text` (a continuation decoded after the
        kept tokens); None if `text` does not begin with it (the decoder's clean-up
        rules can join text differently, and then no honest cut exists)."""
        return text[len(self.typed) :] if text.startswith(self.typed) else None

    def constraint(self, texts: TokenTexts, vocab_size: int, device):
        """For beam search: each row's generated ids → an additive bias (rows, V) on
        the next logits, or None once every row has written the backed-up text."""

        def constrain(rows: list[list[int]]) -> torch.Tensor | None:
            spells = [texts.left(self.spell, row) for row in rows]
            if not any(spells):
                return None
            free = torch.zeros(vocab_size, device=device)  # (V,)
            biases = {s: texts.bias(s, vocab_size, device) if s else free for s in set(spells)}
            return torch.stack([biases[s] for s in spells])  # (rows, V)

        return constrain


def back_up(tokenizer, texts: TokenTexts, text: str) -> tuple[list[int], Heal | None]:
    """`text`'s token ids less the backed-up ones, and what to heal (None: nothing)."""
    if not text:
        return [], None
    encoding = tokenizer.encode(text, add_special_tokens=False)
    ids, words = encoding.ids, encoding.word_ids
    if text[-1].isspace() or not ids or words[-1] is None:
        return ids, None
    n = 1
    while n < min(len(ids), MAX_BACKUP) and words[-1 - n] == words[-1]:
        n += 1
    kept, backed = ids[: len(ids) - n], ids[len(ids) - n :]
    if not all(texts.texts[i] for i in backed) or (n == 1 and not texts.extended[backed[0]]):
        return ids, None
    spell = b"".join(texts.texts[i] for i in backed)
    typed = continuation_text(tokenizer, Prompt(text, [], kept), backed, False)
    return kept, Heal(typed, spell, n)


_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def token_texts(tokenizer) -> TokenTexts:
    """The tokenizer's TokenTexts, built on first use and kept while it lives."""
    found = _CACHE.get(tokenizer)
    if found is None:
        found = _CACHE[tokenizer] = TokenTexts(tokenizer)
    return found


# --- each id's text -------------------------------------------------------------------


def _inner_texts(tokenizer) -> list[bytes]:
    """Each id's bytes as they read after other text; b"" for the special tokens."""
    from lmtool.text.tokenizer import is_byte_level

    size = tokenizer.get_vocab_size()
    # The tokenizer's own special tokens: lmtool's 0..6, or an imported tokenizer's.
    specials = [i for i, t in tokenizer.get_added_tokens_decoder().items() if t.special]
    if is_byte_level(tokenizer):
        # The token's characters stand for bytes one to one (_byte_of).
        table = _byte_of()
        out = [bytes(table[c] for c in tokenizer.id_to_token(i)) for i in range(size)]
    else:
        # Decoded after an ordinary word and cut off again, so the decoder joins it as
        # inside a text: Metaspace's "▁river" → " river", WordPiece's "##b" → "b".
        anchor = _anchor(tokenizer)
        pairs = [[anchor, i] if anchor is not None else [i] for i in range(size)]
        base = tokenizer.decode([anchor]) if anchor is not None else ""
        out = []
        for whole in tokenizer.decode_batch(pairs):
            out.append(whole[len(base) :].encode() if whole.startswith(base) else b"")
    for i in specials:
        out[i] = b""
    return out


def _anchor(tokenizer) -> int | None:
    """An ordinary word's id (its decoded text alphanumeric, not a "##" piece)."""
    for i in range(len(SPECIAL_TOKENS), tokenizer.get_vocab_size()):
        token = tokenizer.id_to_token(i)
        if not token.startswith("##") and tokenizer.decode([i]).isalnum():
            return i
    return None


def _byte_of() -> dict[str, int]:
    """Byte-level BPE writes each byte as one printable character (GPT-2's scheme):
    the printable Latin-1 bytes as themselves, the 68 others as chr(256 + n), n
    counting them in byte order (so the space, byte 32, is "Ġ" = chr(288))."""
    printable = {*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)}
    table, n = {}, 0
    for b in range(256):
        if b in printable:
            table[chr(b)] = b
        else:
            table[chr(256 + n)] = b
            n += 1
    return table


def _after(prefix: bytes) -> bytes | None:
    """The least bytes string above every string beginning with `prefix` (None: none)."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes([stripped[-1] + 1])
