"""Token healing in the autocomplete engine: a text that ends inside a word gets the
rest of that word, not the token after the partial one (inference/healing.py)."""

from __future__ import annotations

import itertools

import pytest
from gen_fixtures import save_run, trained_lm
from test_complete import count_reads, typing_session

from lmtool.inference.complete import CompletionEngine
from lmtool.inference.healing import TokenTexts, back_up, token_texts
from lmtool.text.specials import SPECIAL_TOKENS

# Every sentence ends "the riverbank.": a model trained on them knows the word whole.
LINES = [
    f"{who} {verb} {where} the riverbank."
    for who, verb, where in itertools.product(
        ("the cat", "the dog", "a bird", "my friend"), ("sat", "ran", "slept"),
        ("by", "to", "near"))
]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    made = {}

    def get(kind: str, arch: str):
        if (kind, arch) not in made:
            made[kind, arch] = trained_lm(tmp_path_factory.mktemp(f"{kind}-{arch}"), LINES,
                                          kind=kind, arch=arch,
                                          steps=600 if arch == "lstm" else 300)
        return made[kind, arch]

    return get


@pytest.mark.parametrize("arch", ["transformer", "lstm"])
@pytest.mark.parametrize("kind", ["bpe", "char"])
def test_a_word_being_typed_gets_the_rest_of_that_word(models, kind, arch):
    lm = models(kind, arch)
    engine = CompletionEngine(lm, max_words=3, max_tokens=12, follow=False)
    assert engine.suggest("the cat sat by the ri") == "verbank."
    assert engine.suggest("my friend ran to the riverb") == "ank."
    assert engine.suggest("a bird slept near the riverbank") == "."


def test_the_byte_level_model_needs_the_healing(models):
    """The model knows " riverbank" as one token and never read the partial " ri" (a
    token of its own), so reading " ri" and writing the next token (what `generate`
    does with a prompt) does not finish the word; the healed engine does."""
    from lmtool.inference import generate

    lm = models("bpe", "transformer")
    text = "the cat sat by the ri"
    tokens, heal = back_up(lm.tokenizer, token_texts(lm.tokenizer), text)
    assert heal is not None and heal.typed == " ri" and heal.spell == b" ri"
    assert lm.tokenizer.decode(tokens) == "the cat sat by the"
    seen = set(lm.tokenizer.encode(" ".join(LINES)).ids)
    assert lm.tokenizer.token_to_id("Ġriverbank") in seen
    assert lm.tokenizer.encode(text).ids[-1] not in seen
    plain = generate(lm, text, temperature=0, max_new_tokens=3)[0].text
    assert not plain.startswith("verbank")
    assert CompletionEngine(lm).suggest(text) == "verbank."


@pytest.mark.parametrize("arch", ["transformer", "lstm"])
def test_a_text_ending_in_a_space_is_read_whole_as_before(models, arch):
    from lmtool.inference import generate

    lm = models("bpe", arch)
    engine = CompletionEngine(lm, max_words=3, max_tokens=6)
    got = engine.suggest("the dog sat near the ")
    plain = generate(lm, "the dog sat near the", temperature=0, max_new_tokens=6)[0].text
    assert got and plain.lstrip().startswith(got)  # the greedy text of the whole text
    if arch == "transformer":  # (the little LSTM knows the sentence ends less well)
        assert got == "riverbank."


@pytest.mark.parametrize("arch", ["transformer", "lstm"])
def test_keystrokes_inside_a_word_read_nothing_and_match_a_fresh_engine(models, arch):
    lm = models("bpe", arch)
    engine = CompletionEngine(lm, max_words=3, max_tokens=6, follow=False)
    reads = count_reads(lm.model)  # tokens read by each call, decoding steps included
    steps = []
    step = engine.decoder.step
    engine.decoder.step = lambda state, ids: steps.append(1) or step(state, ids)
    text = "my friend slept near the riverbank."
    cached = 0
    for before, line in itertools.pairwise(typing_session(text)):
        n, m = len(reads), len(steps)
        got = engine.suggest(line)
        read = sum(reads[n:]) - (len(steps) - m)  # the prefix's tokens read
        assert read <= 2, line
        # One more letter of a word healed before and now: the text before the word
        # is the same, already read.
        was, now = (back_up(lm.tokenizer, engine.texts, t) for t in (before, line))
        if line.startswith(before) and was[1] and now[1] and was[0] == now[0]:
            assert read == 0, line
            cached += 1
        fresh = CompletionEngine(lm, max_words=3, max_tokens=6, follow=False).suggest(line)
        assert got == fresh, line
    assert cached > 10
    assert engine.suggest("my friend slept near the riv") == "erbank."


@pytest.mark.parametrize("arch", ["transformer", "lstm"])
def test_alternatives_are_healed_and_leave_the_prefix_state(models, arch):
    lm = models("bpe", arch)
    engine = CompletionEngine(lm, max_words=2, max_tokens=4)
    text = "the dog ran by the ri"
    alts = engine.alternatives(text, k=3)
    assert alts[0].text.startswith("verbank.")
    _, heal = back_up(lm.tokenizer, engine.texts, text)
    for alt in alts:  # every alternative starts by spelling the backed-up " ri" again
        assert engine.texts.left(heal.spell, alt.tokens) == b""
    fresh = CompletionEngine(lm, max_words=2, max_tokens=4).alternatives(text, k=3)
    assert [(a.text, a.tokens) for a in alts] == [(a.text, a.tokens) for a in fresh]
    assert engine.suggest(text) == "verbank."


def test_complete_prefix_on_the_command_line_is_healed(models, tmp_path, cli):
    run = save_run(models("bpe", "transformer"), tmp_path / "lm")
    result = cli("complete", run, "--prefix", "the cat sat by the ri", "-k", "2")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines()[0].split("\t")[0] == "verbank."


@pytest.mark.parametrize("kind", ["bpe", "wordpiece", "unigram", "char"])
def test_token_texts_join_into_the_decoded_text_and_allow_exactly_the_spellers(
        tmp_path, kind):
    from lmtool.text.tokenizer import train_tokenizer

    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(LINES + ["a café by the river", "un été au bord"]) + "\n",
                      encoding="utf-8")
    tok = train_tokenizer([corpus], kind=kind, vocab_size=300 if kind == "bpe" else 120,
                          min_frequency=1, document="line")
    texts = TokenTexts(tok)
    ids = tok.encode("the cat sat by the river bank").ids
    # Inside a text, each token reads as its text: the texts join into the decoding.
    whole, first = tok.decode(ids), tok.decode(ids[:1])
    assert b"".join(texts.texts[i] for i in ids[1:]) == whole[len(first):].encode()
    assert all(texts.texts[i] == b"" for i in range(len(SPECIAL_TOKENS)))
    for spell in (b" ri", b" riverb", b"caf\xc3\xa9", " é".encode(), b"t"):
        want = {i for i, t in enumerate(texts.texts)
                if t and (t.startswith(spell) or (len(t) < len(spell) and spell.startswith(t)))}
        got = texts.allowed(spell).tolist()
        assert sorted(got) == sorted(want), spell
    # A char tokenizer's tokens extend nothing: it is never healed.
    extended = any(texts.extended)
    assert extended == (kind != "char")
