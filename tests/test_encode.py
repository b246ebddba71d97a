"""Encoding a corpus into token shards: layout, [EOS], splits, dtype, streaming, failures."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from lmtool.errors import BadInput
from lmtool.text import sources
from lmtool.text.encode import ShardWriter, encode_corpus, in_val, iter_encoded
from lmtool.text.shards import dtype_for_vocab, open_shards
from lmtool.text.specials import SPECIAL_IDS, SPECIAL_TOKENS
from lmtool.text.tokenizer import load_tokenizer, save_tokenizer, tokenizer_sha256, train_tokenizer

EOS = SPECIAL_IDS.eos


def paragraphs(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    words = ["alpha", "beta", "gamma", "delta", "naïve", "😀", "x", "long-word", "12"]
    return [
        "\n".join(" ".join(rng.choice(words) for _ in range(rng.randint(2, 8))) for _ in range(2))
        + f" doc{i}"
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("enc")
    docs = paragraphs(200)
    corpus = root / "corpus.txt"
    corpus.write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    tok_path = root / "tok.json"
    save_tokenizer(train_tokenizer([corpus], vocab_size=300, min_frequency=1), tok_path)
    return corpus, tok_path, docs


def split_docs(array: np.ndarray) -> list[np.ndarray]:
    ends = np.flatnonzero(array == EOS)
    return np.split(array[: ends[-1] + 1], ends[:-1] + 1)


def test_shards_hold_every_document_once_followed_by_eos(setup, tmp_path):
    corpus, tok_path, docs = setup
    meta = encode_corpus([corpus], tok_path, tmp_path / "out", val_fraction=0.2, seed=3)
    shards = open_shards(tmp_path / "out")
    tok = load_tokenizer(shards.tokenizer_path)
    assert shards.train[-1] == EOS and shards.val[-1] == EOS
    decoded = [
        tok.decode(d[:-1].tolist()) for a in (shards.train, shards.val) for d in split_docs(a)
    ]
    assert sorted(decoded) == sorted(docs)
    # [EOS] count == document count, per split, and meta agrees with the files
    for name, array in (("train", shards.train), ("val", shards.val)):
        assert int((array == EOS).sum()) == meta["splits"][name]["documents"]
        assert len(array) == meta["splits"][name]["tokens"]
    assert meta["counts"]["documents"] == len(docs)
    assert meta["counts"]["characters"] == sum(map(len, docs))
    assert meta["counts"]["bytes"] == corpus.stat().st_size
    assert meta["dtype"] == "uint16" and shards.train.dtype == np.uint16
    assert meta["eos_id"] == EOS and meta["vocab_size"] == tok.get_vocab_size()
    assert meta["tokenizer_sha256"] == tokenizer_sha256(load_tokenizer(tok_path))
    assert meta["val_fraction"] == 0.2 and meta["seed"] == 3 and meta["document"] == "paragraph"
    assert json.loads((tmp_path / "out" / "meta.json").read_text()) == meta
    assert 20 <= meta["splits"]["val"]["documents"] <= 60  # about 20% of 200


def test_val_split_is_deterministic_by_seed(setup, tmp_path):
    corpus, tok_path, _ = setup
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        encode_corpus([corpus], tok_path, tmp_path / name, val_fraction=0.3, seed=seed)
    val = {n: (tmp_path / n / "val.bin").read_bytes() for n in "abc"}
    assert val["a"] == val["b"]
    assert val["a"] != val["c"]


def test_in_val_is_a_seeded_fraction():
    picks = [in_val(i, 7, 0.3) for i in range(10_000)]
    assert 0.27 < sum(picks) / len(picks) < 0.33
    assert picks == [in_val(i, 7, 0.3) for i in range(10_000)]
    assert not any(in_val(i, 7, 0.0) for i in range(1000))


def test_tiny_corpus_still_gets_a_val_document(setup, tmp_path):
    _, tok_path, _ = setup
    two = tmp_path / "two.txt"
    two.write_text("first document\n\nsecond document\n")
    meta = encode_corpus([two], tok_path, tmp_path / "out", val_fraction=0.01)
    assert meta["splits"]["train"]["documents"] == 1
    assert meta["splits"]["val"]["documents"] == 1
    shards = open_shards(tmp_path / "out")
    assert int((shards.val == EOS).sum()) == 1 and int((shards.train == EOS).sum()) == 1


def test_single_document_warns_and_has_no_val(setup, tmp_path):
    _, tok_path, _ = setup
    one = tmp_path / "one.txt"
    one.write_text("just one document\n")
    meta = encode_corpus([one], tok_path, tmp_path / "out")
    assert any("only one document" in w for w in meta["warnings"])
    assert open_shards(tmp_path / "out").val is None


def test_val_fraction_zero_writes_no_val(setup, tmp_path):
    corpus, tok_path, docs = setup
    meta = encode_corpus([corpus], tok_path, tmp_path / "out", val_fraction=0)
    assert not (tmp_path / "out" / "val.bin").exists()
    assert meta["splits"]["val"] == {"tokens": 0, "documents": 0}
    assert meta["splits"]["train"]["documents"] == len(docs)


def test_a_document_in_many_pieces_gets_one_eos(setup, tmp_path, monkeypatch):
    _, tok_path, _ = setup
    monkeypatch.setattr(sources, "PIECE_CHARS", 50)
    big = tmp_path / "big.txt"
    big.write_text("".join(f"line {i} of one long file\n" for i in range(200)))
    other = tmp_path / "other.txt"
    other.write_text("a second file\n")
    meta = encode_corpus(
        [big, other], tok_path, tmp_path / "out", document="file", val_fraction=0, chunk_chars=64
    )
    shards = open_shards(tmp_path / "out")
    assert meta["splits"]["train"]["documents"] == 2
    docs = split_docs(shards.train)
    assert len(docs) == 2
    tok = load_tokenizer(tok_path)
    # Encoded in pieces, it reads as the whole document (stripped) encoded at once.
    assert tok.decode(docs[0][:-1].tolist()) == big.read_text().strip()
    assert docs[0][:-1].tolist() == tok.encode(big.read_text().strip()).ids


class RecordingTokenizer:
    """A stand-in tokenizer that records the batches it is asked to encode."""

    def __init__(self):
        self.batches: list[list[str]] = []

    def encode_batch_fast(self, texts, add_special_tokens=True):
        assert add_special_tokens is False
        self.batches.append(list(texts))
        return [type("E", (), {"ids": [len(t)]})() for t in texts]


def test_encoder_streams_the_corpus_in_bounded_chunks():
    consumed = 0

    def pieces():
        nonlocal consumed
        for i in range(1000):
            consumed += 1
            yield f"document number {i}", True

    tok = RecordingTokenizer()
    stream = iter_encoded(tok, pieces(), chunk_chars=200)
    first = next(stream)
    # Only a chunk or two was read to produce the first result, not the whole corpus.
    assert consumed < 40
    assert len(first[1]) == len(tok.batches[0])
    rest = list(stream)
    assert consumed == 1000
    assert len(tok.batches) == 1 + len(rest) > 50
    assert max(sum(map(len, b)) for b in tok.batches) < 200 + 30
    assert [t for b in tok.batches for t in b] == [f"document number {i}" for i in range(1000)]


def test_dtype_for_vocab_switches_to_uint32():
    assert dtype_for_vocab(300) == np.uint16
    assert dtype_for_vocab(65_536) == np.uint16  # ids 0..65535 still fit
    assert dtype_for_vocab(65_537) == np.uint32


def test_writer_stores_large_ids_as_uint32(tmp_path):
    writer = ShardWriter(tmp_path, dtype_for_vocab(100_000), ("train",))
    writer.add("train", [5, 70_000, 99_999], last=True)
    writer.add("train", [65_536], last=True)
    writer.close()
    assert writer.counts() == {"train": {"tokens": 6, "documents": 2}}
    data = np.fromfile(tmp_path / "train.bin", dtype="<u4")
    assert data.tolist() == [5, 70_000, 99_999, EOS, 65_536, EOS]


def test_large_vocabulary_encodes_to_uint32_end_to_end(tmp_path):
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers

    vocab = {t: i for i, t in enumerate(SPECIAL_TOKENS)}
    vocab.update({f"w{i}": i for i in range(7, 70_007)})
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens([AddedToken(t, special=True) for t in SPECIAL_TOKENS])
    tok.save(str(tmp_path / "big.json"))
    (tmp_path / "c.txt").write_text("w8 w70000\n\nw66000 w7\n")
    meta = encode_corpus([tmp_path / "c.txt"], tmp_path / "big.json", tmp_path / "out")
    assert meta["dtype"] == "uint32"
    shards = open_shards(tmp_path / "out")
    got = sorted(np.concatenate([shards.train, shards.val]).tolist())
    assert got == sorted([8, 70_000, EOS, 66_000, 7, EOS])


def test_existing_output_needs_force(setup, tmp_path):
    """--force replaces earlier shards; files lmtool did not write, never."""
    corpus, tok_path, _ = setup
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    for force in (False, True):
        with pytest.raises(BadInput, match="already holds other files"):
            encode_corpus([corpus], tok_path, out, force=force)
    assert (out / "keep.txt").read_text() == "precious"
    shards = tmp_path / "shards"
    encode_corpus([corpus], tok_path, shards, seed=1)
    with pytest.raises(BadInput, match="already exists"):
        encode_corpus([corpus], tok_path, shards, seed=2)
    encode_corpus([corpus], tok_path, shards, seed=2, force=True)
    assert open_shards(shards).meta["seed"] == 2


def leftovers(directory):
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


def test_failure_midway_leaves_nothing_behind(setup, tmp_path):
    _, tok_path, _ = setup
    good = tmp_path / "a.txt"
    good.write_text("fine text\n\nmore fine text\n")
    bad = tmp_path / "b.txt"
    bad.write_bytes(b"ok\n" + b"caf\xe9\n")
    with pytest.raises(BadInput, match=r"b.txt is not valid UTF-8 \(byte offset 6\)"):
        encode_corpus([good, bad], tok_path, tmp_path / "out")
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []
    meta = encode_corpus([good, bad], tok_path, tmp_path / "out", encoding_errors="replace")
    assert meta["undecodable_bytes"] == 1 and any("replaced 1 byte" in w for w in meta["warnings"])


def test_empty_corpus_and_bad_fraction(setup, tmp_path):
    _, tok_path, _ = setup
    (tmp_path / "empty.txt").write_text("  \n\n")
    with pytest.raises(BadInput, match="empty corpus"):
        encode_corpus([tmp_path / "empty.txt"], tok_path, tmp_path / "out")
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []
    with pytest.raises(BadInput, match="--val-fraction"):
        encode_corpus([tmp_path / "empty.txt"], tok_path, tmp_path / "out", val_fraction=1.0)


def test_progress_reports_bytes_and_tokens(setup, tmp_path):
    corpus, tok_path, _ = setup
    calls = []
    encode_corpus(
        [corpus], tok_path, tmp_path / "out", progress=lambda *a: calls.append(a), chunk_chars=500
    )
    assert len(calls) > 3
    done, total, tokens = calls[-1]
    assert done == total == corpus.stat().st_size
    assert [c[2] for c in calls] == sorted(c[2] for c in calls) and tokens > 0
