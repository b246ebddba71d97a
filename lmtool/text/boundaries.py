"""Where a document begins and ends: one whitespace policy for every reader.

The policy. A document is its text without the whitespace around it (`document_text`):
plain-text paragraphs, lines and files (sources.py, so `tokenize train` and `tokenize
encode`), the texts of labelled files (labelled.py), the documents `classify` reads
(documents.py) and the prompts `generate` continues (inference/text.py). So a language
model sees every document start at its first word and end at its last, in pre-training
as in fine-tuning, and [EOS] follows a word, never a lone space or line end.

The tokenizer's half (text/tokenizer.py). A byte-level BPE trained by `tokenize train`
puts a space before every text (PREFIX_SPACE), and its decoder takes it off again:
"hide" is "Ġhide" at the start of a document as inside one. WordPiece splits
at whitespace and unigram's Metaspace prefixes "▁" already; a char tokenizer needs
nothing. A tokenizer file written before this keeps its own settings and so decodes
what it encoded.

Why not keep the whitespace: a labelled text is a cell of a table, whose surrounding
whitespace is layout, and a first word without its space ("hide", not "Ġhide") is a
token the pre-trained model almost never read.

One caveat: a document longer than sources.PIECE_CHARS (~1 MB) is encoded in pieces,
and the tokenizer gives each piece's first word a space too (about one token in a
megabyte differs from encoding the whole document at once).
"""

from __future__ import annotations


def document_text(text: str) -> str:
    """A document's text under the policy: the surrounding whitespace taken off."""
    return text.strip()


def piece_text(text: str, *, first: bool, last: bool) -> str:
    """One piece of a document handed out in several: the first loses its leading
    whitespace, the last its trailing whitespace, so the pieces join to `document_text`."""
    if first:
        text = text.lstrip()
    if last:
        text = text.rstrip()
    return text
