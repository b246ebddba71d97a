"""Text boundaries: a word encodes the same at the start of a document as inside one,
for every reader and tokenizer kind; tokenizer files written before keep their own
encoding. And the AWD-LSTM classifier's dropouts: output dropout once, one multiplier."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lmtool.models import build_model
from lmtool.models.classifier import CLASSIFIER_DROP_MULT, OUTPUT_P, Classifier, ClassifierConfig
from lmtool.models.config import ModelConfig, resolve_model_config
from lmtool.models.lstm import AWDLSTM, LockedDropout
from lmtool.text.documents import read_documents
from lmtool.text.encode import encode_corpus
from lmtool.text.labelled import iter_labelled, iter_text_pieces
from lmtool.text.shards import open_shards
from lmtool.text.specials import SPECIAL_IDS, SPECIAL_TOKENS
from lmtool.text.tokenizer import KINDS, load_tokenizer, save_tokenizer, train_tokenizer
from lmtool.training.documents import encode_documents

WORDS = ["hide", "seek", "river", "flows", "under", "the", "old", "stone", "bridge", "where",
         "children", "play"]


def plain_corpus(path, n=150):
    rng = np.random.default_rng(0)
    paras = [" ".join(rng.choice(WORDS, size=12)) for _ in range(n)]
    # Whitespace around paragraphs, as real files have: indents and trailing spaces.
    path.write_text("".join(f"  {p}  \n\n" for p in paras))
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("boundaries")
    corpus = plain_corpus(root / "plain.txt")
    labelled = root / "train.tsv"
    labelled.write_text("label\ttext\npos\t  hide under the bridge \nneg\tseek the river\t\n")
    return root, corpus, labelled


def contains(outer: list[int], inner: list[int]) -> bool:
    return any(outer[i : i + len(inner)] == inner for i in range(len(outer) - len(inner) + 1))


@pytest.mark.parametrize("kind", KINDS)
def test_first_word_of_a_labelled_document_encodes_as_inside_plain_text(data, kind):
    """A labelled document read for the classifier ("hide under the bridge", its first
    word at the start) is the same run of ids as that text inside a pre-training
    document, with a freshly trained tokenizer of each kind."""
    root, corpus, labelled = data
    tok = train_tokenizer([corpus], kind=kind, vocab_size=300, min_frequency=1)
    tok_path = root / f"{kind}.json"
    save_tokenizer(tok, tok_path, force=True)
    inside = tok.encode("they hide under the bridge").ids
    docs = encode_documents(iter_labelled(labelled), tok)
    first = docs.tokens(0)
    assert first and contains(inside, first), (kind, tok.encode("hide").tokens)
    # The same in the shards `pretrain` reads, where "hide ..." starts a paragraph.
    out = root / f"shards-{kind}"
    (root / "one.txt").write_text("  hide under the bridge  \n\nwe hide under the bridge\n")
    encode_corpus([root / "one.txt"], tok_path, out, val_fraction=0, force=True)
    ids = open_shards(out).train.tolist()
    end = ids.index(SPECIAL_IDS.eos)
    assert ids[:end] == first
    assert contains(ids[end + 1 : -1], first)


def test_every_reader_strips_the_same_whitespace(data, tmp_path):
    """Plain text, labelled rows, what LMs read from labelled files and what `classify`
    reads: the same text for the same document."""
    _, _, labelled = data
    plain = tmp_path / "doc.txt"
    plain.write_text("\n  hide under the bridge \n")
    from lmtool.text.sources import iter_documents

    want = "hide under the bridge"
    assert list(iter_documents([plain])) == [want]
    assert list(iter_documents([plain], document="file")) == [want]
    assert list(iter_documents([plain], document="line")) == [want]
    assert next(iter_labelled(labelled)).text == want
    assert next(iter_text_pieces([labelled]))[0] == want
    assert [t for _, t in read_documents([plain])] == [want]
    assert [t for _, t in read_documents([plain], per_line=True)] == ["", want]


def test_no_lone_space_before_eos(data, tmp_path):
    """In the shards, [EOS] follows a word, never a space or line end."""
    root, corpus, _ = data
    tok = train_tokenizer([corpus], kind="bpe", vocab_size=300, min_frequency=1)
    save_tokenizer(tok, tmp_path / "tok.json")
    encode_corpus([corpus], tmp_path / "tok.json", tmp_path / "out", val_fraction=0)
    ids = open_shards(tmp_path / "out").train
    ends = [int(ids[i - 1]) for i in np.flatnonzero(ids == SPECIAL_IDS.eos)]
    assert ends and all(tok.decode([i]).strip() == tok.decode([i]) != "" for i in ends)


def old_style_bpe(corpus) -> str:
    """A byte-level BPE as `tokenize train` wrote them before: no prefix space."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, min_frequency=1, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([corpus.read_text()], trainer=trainer)
    return tok.to_str(pretty=True)


def test_an_old_tokenizer_file_keeps_its_encoding_and_round_trips(data, tmp_path):
    _, corpus, _ = data
    text = old_style_bpe(corpus)
    path = tmp_path / "old.json"
    path.write_text(text)
    tok = load_tokenizer(path)
    # Loading changes nothing: the first word has no space, as when it was written.
    assert not tok.encode("hide").tokens[0].startswith("Ġ")
    assert json.loads(tok.to_str()) == json.loads(text)
    for s in ["hide under", " hide", "  two spaces ", "\nline\n", "é ü 日本"]:
        assert tok.decode(tok.encode(s).ids) == s
    # A new one puts the space in, and round-trips the same texts too.
    new = train_tokenizer([corpus], kind="bpe", vocab_size=300, min_frequency=1)
    assert new.encode("hide").tokens[0].startswith("Ġ")
    assert new.encode("the hide").ids == new.encode("the").ids + new.encode("hide").ids
    for s in ["hide under", " hide", "  two spaces ", "\nline\n", "é ü 日本"]:
        assert new.decode(new.encode(s).ids) == s


def test_a_prompt_reads_as_a_document_start_and_its_typed_space_is_not_doubled(data):
    from lmtool.inference.text import TextStream, continuation_text, encode_prompt

    _, corpus, _ = data
    tok = train_tokenizer([corpus], kind="bpe", vocab_size=300, min_frequency=1)
    plain = encode_prompt(tok, "the river", False, 100)
    spaced = encode_prompt(tok, "  the river ", False, 100)
    assert spaced.tokens == plain.tokens == tok.encode("the river").ids
    new = tok.encode("the river flows").ids[len(plain.tokens) :]  # " flows"
    assert continuation_text(tok, plain, new, False) == " flows"
    assert continuation_text(tok, spaced, new, False) == "flows"
    stream = TextStream(tok, spaced)
    assert "".join(stream.push(t) for t in new) + stream.finish() == "flows"


# --- the classifier's dropouts ---------------------------------------------------------


def lstm_config(**dropouts) -> ModelConfig:
    return ModelConfig(arch="lstm", objective="causal", vocab_size=40, layers=2, dim=16,
                       hidden=24, context=8, **dropouts)


def applied_dropouts(model: torch.nn.Module, *inputs) -> list[tuple[str, float]]:
    """(module name, p) of every dropout module with p > 0 one train-mode forward ran."""
    ran = []
    for name, m in model.named_modules():
        if isinstance(m, (LockedDropout, torch.nn.Dropout)) and m.p > 0:
            m.register_forward_hook(lambda mod, *_, name=name: ran.append((name, mod.p)))
    model.train()
    model(*inputs)
    return ran


def test_output_dropout_is_applied_once_in_the_classifier():
    """Only the output dropout on: the LM applies it on its outputs, the classifier
    once in its head (not also on every time step inside the encoder)."""
    config = lstm_config(dropout=1.0, embed_dropout=0.0, input_dropout=0.0,
                         hidden_dropout=0.0, weight_dropout=0.0, output_dropout=0.4)
    ids = torch.randint(7, 40, (4, 10))
    lm = build_model(config)
    assert applied_dropouts(lm, ids) == [("output_dropout", 0.4)]
    clf = Classifier(build_model(config), ClassifierConfig(labels=["a", "b"], hidden_dropout=0.0))
    lengths = torch.full((4,), 10)
    # The classifier reads 10 tokens in two chunks of 8: an encoder-side output dropout
    # would run twice, then the head's once more.
    assert applied_dropouts(clf, ids, lengths) == [("head.hidden.1", 0.4)]


def test_classifier_dropouts_follow_one_multiplier():
    """The classifier's AWD-LSTM dropouts are fastai's classifier values times one
    multiplier (0.5, not the base LM's 0.7), the head's output dropout too; --dropout
    changes that one multiplier for all of them."""
    from lmtool.training.classifier import CLASSIFIER_DEFAULTS, LSTM_DROPOUTS
    from lmtool.training.flags import TrainFlags, finetune_configs

    base_model = resolve_model_config("lstm", "causal", "small")
    assert base_model.dropout == 0.7
    base = {"model": {**base_model.to_dict(), "vocab_size": 40}}
    fastai = {"embed_dropout": 0.05, "input_dropout": 0.4, "hidden_dropout": 0.3,
              "weight_dropout": 0.5, "output_dropout": OUTPUT_P}
    for flags, mult in [(TrainFlags(), CLASSIFIER_DROP_MULT), (TrainFlags(dropout=0.3), 0.3)]:
        model, _ = finetune_configs(base, CLASSIFIER_DEFAULTS, flags, "finetune classifier",
                                    model_changes=LSTM_DROPOUTS)
        clf = Classifier(build_model(model), ClassifierConfig(labels=["a", "b"]))
        lstm = clf.backbone
        assert isinstance(lstm, AWDLSTM)
        got = {"embed_dropout": lstm.embed_p, "input_dropout": lstm.input_dropout.p,
               "hidden_dropout": lstm.layer_dropouts[0].p, "weight_dropout": lstm.rnns[0].weight_p,
               "output_dropout": clf.head.hidden[1].p}
        assert got == pytest.approx({k: v * mult for k, v in fastai.items()})
    assert pytest.approx(0.2) == CLASSIFIER_DROP_MULT * OUTPUT_P  # fastai's head: 0.4 x 0.5


def test_the_text_after_a_mask_reads_as_inside_the_text(data):
    """fill-mask: the tokenizer's space before a text must not come after each [MASK]."""
    from lmtool.inference.fill_mask import _encode_around_masks

    _, corpus, _ = data
    tok = train_tokenizer([corpus], kind="bpe", vocab_size=300, min_frequency=1)
    whole = tok.encode("the river flows under the bridge").ids
    head = tok.encode("the river").ids
    ids = _encode_around_masks(tok, "the river[MASK] under the bridge")
    assert ids == head + [SPECIAL_IDS.mask] + whole[len(tok.encode("the river flows").ids):]
    assert _encode_around_masks(tok, "[MASK]") == [SPECIAL_IDS.mask]
