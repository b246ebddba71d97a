"""Tokenizer training (every kind), loading, special tokens, normalisation and hashing."""

from __future__ import annotations

import json
import random
import shutil

import pytest

from lmtool.errors import BadInput
from lmtool.text.specials import SPECIAL_IDS, SPECIAL_TOKENS
from lmtool.text.tokenizer import (
    KINDS,
    load_tokenizer,
    min_vocab_size,
    save_tokenizer,
    tokenizer_sha256,
    train_tokenizer,
)

WORDS = [
    "the",
    "cat",
    "dog",
    "sat",
    "on",
    "a",
    "mat",
    "and",
    "ran",
    "far",
    "away",
    "quickly",
    "slowly",
    "never",
    "always",
    "über",
    "café",
]


def make_corpus(path, paragraphs: int = 120, seed: int = 0):
    """A small generated text: paragraphs of random sentences separated by blank lines."""
    rng = random.Random(seed)
    paras = []
    for _ in range(paragraphs):
        sentences = [
            " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9))).capitalize() + "."
            for _ in range(rng.randint(1, 3))
        ]
        paras.append("\n".join(sentences))
    path.write_text("\n\n".join(paras) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("corpus") / "corpus.txt")


@pytest.fixture(scope="module")
def bpe(corpus):
    return train_tokenizer([corpus], kind="bpe", vocab_size=400, min_frequency=1)


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_trains_with_specials_first_and_adds_none(corpus, kind):
    tok = train_tokenizer([corpus], kind=kind, vocab_size=300, min_frequency=1)
    assert [tok.token_to_id(t) for t in SPECIAL_TOKENS] == list(range(7))
    assert tok.get_vocab_size() <= 300
    ids = tok.encode("The cat sat on a mat.").ids
    assert ids and not set(ids) & set(range(7))  # no [BOS]/[EOS]/[CLS] added, no [UNK]
    # decode keeps special tokens unless asked to skip them
    with_eos = ids + [SPECIAL_IDS.eos]
    assert "[EOS]" in tok.decode(with_eos, skip_special_tokens=False)
    assert "[EOS]" not in tok.decode(with_eos)


def random_unicode(rng: random.Random, n: int) -> str:
    pools = [
        "abcxyz ABC\n\t  ",
        "éüßøåñçž",
        "日本語中文한국어",
        "😀🦀🎉👩‍👩‍👧🏳️‍🌈",
        "\u0000\u00ad\u200b\ufeff\u2028",
        "".join(chr(rng.randint(0x20, 0x2FFF)) for _ in range(50)),
    ]
    return "".join(rng.choice(rng.choice(pools)) for _ in range(n))


def test_bpe_round_trips_any_unicode_and_never_unknown(bpe):
    rng = random.Random(1)
    for _ in range(50):
        text = random_unicode(rng, rng.randint(1, 80))
        ids = bpe.encode(text).ids
        assert SPECIAL_IDS.unk not in ids
        assert bpe.decode(ids) == text


def test_char_kind_one_token_per_character_unknown_for_unseen(corpus):
    tok = train_tokenizer([corpus], kind="char", vocab_size=100, min_frequency=1)
    enc = tok.encode("cat mat")
    assert enc.tokens == list("cat mat")
    assert tok.decode(enc.ids) == "cat mat"
    assert tok.encode("c😀t").ids[1] == SPECIAL_IDS.unk


@pytest.mark.parametrize("kind", KINDS)
def test_vocab_too_small_names_the_minimum(corpus, kind):
    minimum = min_vocab_size(kind)
    with pytest.raises(BadInput) as e:
        train_tokenizer([corpus], kind=kind, vocab_size=minimum - 1)
    assert str(minimum) in str(e.value)


def test_bpe_minimum_covers_the_byte_alphabet():
    assert min_vocab_size("bpe") == 7 + 256
    assert min_vocab_size("char") > 7


def test_normalization(corpus):
    tok = train_tokenizer(
        [corpus],
        kind="wordpiece",
        vocab_size=300,
        min_frequency=1,
        normalization=["nfkc", "lowercase", "strip-accents"],
    )
    assert tok.normalizer.normalize_str("Über CAFÉ ﬁne") == "uber cafe fine"
    with pytest.raises(BadInput, match="unknown normalization"):
        train_tokenizer([corpus], normalization=["stem"])


def test_empty_corpus_is_bad_input(tmp_path):
    (tmp_path / "empty.txt").write_text("\n\n   \n")
    with pytest.raises(BadInput, match="empty corpus"):
        train_tokenizer([tmp_path / "empty.txt"], vocab_size=300)


def test_save_load_and_hash(bpe, tmp_path):
    path = tmp_path / "tok.json"
    save_tokenizer(bpe, path)
    with pytest.raises(BadInput, match="already exists"):
        save_tokenizer(bpe, path)
    copy = tmp_path / "run" / "tokenizer.json"
    copy.parent.mkdir()
    shutil.copyfile(path, copy)
    loaded = load_tokenizer(path)
    assert loaded.encode("the cat").ids == bpe.encode("the cat").ids
    # A copy, or a directory holding one, hashes the same as the original.
    assert tokenizer_sha256(load_tokenizer(copy.parent)) == tokenizer_sha256(bpe)
    other = train_tokenizer([path], kind="bpe", vocab_size=300)
    assert tokenizer_sha256(other) != tokenizer_sha256(bpe)


def test_load_rejects_what_is_not_an_lmtool_tokenizer(tmp_path):
    from tokenizers import Tokenizer, models

    (tmp_path / "text.json").write_text("just some text")
    (tmp_path / "other.json").write_text(json.dumps({"model": {"type": "nothing"}}))
    foreign = Tokenizer(models.WordLevel({"a": 0, "[PAD]": 1}, unk_token="a"))
    foreign.save(str(tmp_path / "foreign.json"))
    (tmp_path / "bytes.json").write_bytes(b"\xff\xfe\0")
    for name in ("text.json", "other.json", "bytes.json"):
        with pytest.raises(BadInput, match="is not a tokenizer file"):
            load_tokenizer(tmp_path / name)
    with pytest.raises(BadInput, match="special tokens"):
        load_tokenizer(tmp_path / "foreign.json")
    with pytest.raises(BadInput, match="does not exist"):
        load_tokenizer(tmp_path / "missing.json")
    with pytest.raises(BadInput, match="no tokenizer.json"):
        load_tokenizer(tmp_path)


def test_unigram_vocab_smaller_than_the_alphabet_is_bad_input(tmp_path):
    text = tmp_path / "alphabet.txt"
    text.write_text(" ".join(chr(c) for c in range(0x4E00, 0x4E00 + 60)) + "\n")
    with pytest.raises(BadInput, match="too small for the characters"):
        train_tokenizer([text], kind="unigram", vocab_size=20, min_frequency=1)


def test_invalid_utf8_while_training_is_bad_input(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine\n\xff\n")
    with pytest.raises(BadInput, match=r"bad.txt is not valid UTF-8 \(byte offset 5\)"):
        train_tokenizer([bad], vocab_size=300)
    tok = train_tokenizer([bad], vocab_size=300, encoding_errors="ignore")
    assert tok.get_vocab_size() >= 263
