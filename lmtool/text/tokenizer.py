"""Training, loading and fingerprinting tokenizers (HF `tokenizers`).

Every kind puts lmtool's special tokens at ids 0..6 and adds none of them by itself:
`tok.encode(text)` returns the text's tokens only, and lmtool's code appends [EOS] or
prepends [CLS] where an objective needs them. Note that `tokenizers`' own `decode`
skips special tokens by default; pass `skip_special_tokens=False` to keep them.

Kinds:
  bpe        byte-level BPE (GPT-2 style): every byte is in the vocabulary, so no
             text ever maps to [UNK] and decode(encode(x)) == x; a space is put
             before every text (and taken off by the decoder: PREFIX_SPACE), so a
             document's first word is the token it is inside a document
  wordpiece  BERT-style WordPiece on whitespace/punctuation-split words
  unigram    SentencePiece-style Unigram language model ("▁" marks a space)
  char       one token per character seen in training; other characters are [UNK]
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from lmtool.errors import BadInput
from lmtool.text.sources import ReadReport, iter_documents
from lmtool.text.specials import SPECIAL_TOKENS, UNK

if TYPE_CHECKING:
    from tokenizers import Tokenizer

KINDS = ("bpe", "wordpiece", "unigram", "char")
NORMALIZATIONS = ("nfkc", "lowercase", "strip-accents")
BYTE_ALPHABET = 256
# A byte-level BPE reads every text with a space in front (a `Prepend` normalizer) and
# its decoder strips one: a word is then the same token at the start of a document as
# inside one ("Ġhide", not "hide"; text/boundaries.py), and decode(encode(x)) == x for
# any x. Unlike the ByteLevel pre-tokenizer's add_prefix_space, which adds no space to
# a text that begins with one, it always adds exactly one, so the decoder's strip is
# always right. A tokenizer file written before this has neither and keeps decoding
# what it encoded: loading never changes a file's settings.
PREFIX_SPACE = " "


def min_vocab_size(kind: str) -> int:
    """The smallest vocabulary a kind can have: the special tokens (+ the 256 bytes for bpe)."""
    extra = BYTE_ALPHABET if kind == "bpe" else 1
    return len(SPECIAL_TOKENS) + extra


def _normalizer(normalization: Sequence[str], kind: str):
    """The normalization steps asked for; a byte-level BPE's ends with PREFIX_SPACE."""
    from tokenizers import normalizers

    unknown = set(normalization) - set(NORMALIZATIONS)
    if unknown:
        raise BadInput(
            f"unknown normalization {', '.join(sorted(unknown))}",
            f"choose from {', '.join(NORMALIZATIONS)}",
        )
    steps = []
    if "strip-accents" in normalization:
        # Accents are separate code points only after decomposition (NFD / NFKD).
        steps += [normalizers.NFKD() if "nfkc" in normalization else normalizers.NFD()]
        steps += [normalizers.StripAccents()]
        steps += [normalizers.NFKC() if "nfkc" in normalization else normalizers.NFC()]
    elif "nfkc" in normalization:
        steps.append(normalizers.NFKC())
    if "lowercase" in normalization:
        steps.append(normalizers.Lowercase())
    if kind == "bpe":
        steps.append(normalizers.Prepend(PREFIX_SPACE))
    return normalizers.Sequence(steps) if steps else None


def _build(kind: str, vocab_size: int, min_frequency: int, show_progress: bool):
    """An untrained tokenizer of `kind` and the trainer that fills it."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    common = {
        "vocab_size": vocab_size,
        "special_tokens": SPECIAL_TOKENS,
        "show_progress": show_progress,
    }
    if kind == "bpe":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        # The normalizer puts a space before every text (PREFIX_SPACE) and the decoder
        # takes exactly one off again.
        tok.decoder = decoders.Sequence([decoders.ByteLevel(), decoders.Strip(" ", 1, 0)])
        trainer = trainers.BpeTrainer(
            min_frequency=min_frequency,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes: no [UNK]
            **common,
        )
    elif kind == "wordpiece":
        tok = Tokenizer(models.WordPiece(unk_token=UNK))
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(min_frequency=min_frequency, **common)
    elif kind == "unigram":
        tok = Tokenizer(models.Unigram())
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        trainer = trainers.UnigramTrainer(unk_token=UNK, **common)
    elif kind == "char":
        # Every character is its own pre-token; the word-level model then maps each to
        # an id, and characters it never saw (or cut by --vocab-size) to [UNK].
        tok = Tokenizer(models.WordLevel(unk_token=UNK))
        tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
        tok.decoder = decoders.Fuse()
        trainer = trainers.WordLevelTrainer(min_frequency=min_frequency, **common)
    else:
        raise BadInput(f"unknown tokenizer kind {kind!r}", f"choose from {', '.join(KINDS)}")
    return tok, trainer


def train_tokenizer(
    sources: Sequence[str | Path],
    *,
    kind: str = "bpe",
    vocab_size: int = 8000,
    min_frequency: int = 2,
    normalization: Sequence[str] = (),
    document: str = "paragraph",
    encoding_errors: str = "strict",
    report: ReadReport | None = None,
    show_progress: bool = False,
) -> Tokenizer:
    """Train a tokenizer of `kind` on the documents of `sources`, streaming them."""
    if kind not in KINDS:
        raise BadInput(f"unknown tokenizer kind {kind!r}", f"choose from {', '.join(KINDS)}")
    minimum = min_vocab_size(kind)
    if vocab_size < minimum:
        why = "7 special tokens and 256 bytes" if kind == "bpe" else "7 special tokens"
        raise BadInput(
            f"--vocab-size {vocab_size} is too small for a {kind} tokenizer",
            f"it needs at least {minimum} ({why}); pass --vocab-size {minimum} or more",
        )
    if min_frequency < 1:
        raise BadInput("--min-frequency must be at least 1")
    tok, trainer = _build(kind, vocab_size, min_frequency, show_progress)
    normalizer = _normalizer(normalization, kind)
    if normalizer is not None:
        tok.normalizer = normalizer
    report = report if report is not None else ReadReport()
    docs = iter_documents(
        sources, document=document, encoding_errors=encoding_errors, report=report
    )
    try:
        tok.train_from_iterator(docs, trainer=trainer)
    except Exception as e:  # the Rust trainer raises a bare Exception
        if "not large enough" in str(e):
            raise BadInput(
                f"--vocab-size {vocab_size} is too small for the characters of this corpus",
                "a unigram vocabulary must hold every character; pass a larger --vocab-size",
            ) from None
        raise
    if report.documents == 0:
        raise report.no_text()
    _check_specials(tok, "the trained tokenizer")
    return tok


def vocabulary_shortfall(tok: Tokenizer, kind: str, vocab_size: int,
                         min_frequency: int) -> str | None:
    """Why a trained vocabulary is smaller than asked for, as a warning line (None if
    it is not): the trainers stop silently when the corpus has nothing more to give."""
    got = tok.get_vocab_size()
    if got >= vocab_size:
        return None
    # Unigram has no --min-frequency: it keeps the pieces that pay for themselves.
    often = f" at least {min_frequency} times" if min_frequency > 1 and kind != "unigram" else ""
    why = {
        "char": f"the corpus has only {got - len(SPECIAL_TOKENS):,} distinct characters"
                f"{' seen' + often if often else ''}",
        "unigram": "the unigram trainer keeps only the pieces the corpus supports",
    }.get(kind, f"no further merge occurs{often or ' in the corpus'}")
    more = " (a larger corpus, or a lower --min-frequency, gives more)" if often else (
        " (a larger corpus gives more)")
    return f"the vocabulary has {got:,} tokens, not the {vocab_size:,} asked for: {why}{more}"


def _check_specials(tok: Tokenizer, name: str) -> None:
    wrong = [t for i, t in enumerate(SPECIAL_TOKENS) if tok.token_to_id(t) != i]
    if wrong:
        raise BadInput(
            f"{name} does not have lmtool's special tokens at ids 0..6 ({', '.join(wrong)})",
            "train it with: lmtool tokenize train",
        )


def find_tokenizer_file(path: Path) -> Path:
    """`path` itself, or the tokenizer.json inside a shard or checkpoint directory."""
    path = Path(path)
    if path.is_dir():
        inner = path / "tokenizer.json"
        if not inner.is_file():
            raise BadInput(f"{path} has no tokenizer.json", "pass a tokenizer file")
        return inner
    if not path.exists():
        raise BadInput(f"{path} does not exist", "pass a tokenizer file from lmtool tokenize train")
    return path


def is_byte_level(tok: Tokenizer) -> bool:
    """Whether a tokenizer's tokens are byte-level BPE tokens (each character one byte),
    told from its pre-tokenizer: the decoder differs between old and new files."""
    from tokenizers import pre_tokenizers

    return isinstance(tok.pre_tokenizer, pre_tokenizers.ByteLevel)


def tokenizer_kind(path: Path) -> str:
    """bpe, wordpiece, unigram or char (a word-level model over single characters), read
    from a tokenizer.json without loading it; "unknown" when it cannot tell."""
    try:
        spec = json.loads(Path(path).read_text("utf-8"))
        kind = str(spec["model"]["type"]).lower()
    except (OSError, ValueError, KeyError, TypeError):
        return "unknown"
    return "char" if kind == "wordlevel" else kind


def load_tokenizer(path: Path, lmtool_specials: bool = True) -> Tokenizer:
    """Load a tokenizer file (or a directory holding tokenizer.json) and check it is
    lmtool's (`lmtool_specials=False`: an imported run's, which keeps its own ids)."""
    from tokenizers import Tokenizer

    file = find_tokenizer_file(path)
    hint = "make one with: lmtool tokenize train SOURCES -o tokenizer.json"
    data = file.read_bytes()  # an OSError (permission, I/O) names the file as it is
    try:
        text = data.decode("utf-8")
        json.loads(text)  # a clearer failure for non-JSON than the Rust parser's
        tok = Tokenizer.from_str(text)
    except Exception:  # decoding, JSON errors, and the Rust parser's bare Exception
        raise BadInput(f"{file} is not a tokenizer file", hint) from None
    if lmtool_specials:
        _check_specials(tok, str(file))
    return unpadded(tok)


def unpadded(tok: Tokenizer) -> Tokenizer:
    """`tok` with its padding and truncation off, as transformers encodes by default.

    A published tokenizer.json may carry them (sentence-transformers' MiniLM pads every
    text to 128 ids with [PAD]); lmtool pads its batches and cuts documents itself."""
    tok.no_padding()
    tok.no_truncation()
    return tok


def save_tokenizer(tok: Tokenizer, path: Path, *, force: bool = False) -> None:
    """Write the tokenizer JSON atomically; an earlier one needs `force`, and nothing
    else is ever replaced (lmtool.outputs)."""
    from lmtool.fsio import write_text_atomic
    from lmtool.outputs import TOKENIZER, check_output

    check_output(Path(path), TOKENIZER, force=force)
    write_text_atomic(Path(path), tok.to_str(pretty=True))


def tokenizer_sha256(tok: Tokenizer) -> str:
    """A fingerprint of the tokenizer's content: a copied or re-loaded file hashes the same."""
    return hashlib.sha256(tok.to_str().encode("utf-8")).hexdigest()
