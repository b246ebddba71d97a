"""Generation from Python: cached = uncached, batched = one by one, seeds, beams, stops."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from gen_fixtures import table_lm, tiny_lm, word_tokenizer

from lmtool.errors import BadInput
from lmtool.inference.generate import GenerateOptions, generate, stream
from lmtool.inference.sampling import SUPPRESSED, filter_logits, repetition_penalty, row_keys
from lmtool.inference.text import StopMatcher, TextStream, encode_prompt
from lmtool.text.specials import SPECIAL_IDS

EOS = SPECIAL_IDS.eos
LMS = {
    "rotary": lambda **kw: tiny_lm(positions="rotary", **kw),
    "learned": lambda **kw: tiny_lm(positions="learned", **kw),
    "lstm": lambda **kw: tiny_lm(arch="lstm", **kw),
}


def uncached_greedy(lm, prompt_ids: list[int], n: int) -> list[int]:
    """The reference: re-read the whole visible window for every token, with the same
    window rule as the cached generator (past the context, restart from the last
    context - context // 4 tokens)."""
    model, config = lm.model, lm.config
    bias = torch.zeros(config.vocab_size)
    bias[list(SUPPRESSED)] = float("-inf")
    ids, start, new = list(prompt_ids), 0, []
    keep = config.context - config.context // 4
    with torch.no_grad():
        for _ in range(n):
            if config.arch == "transformer" and len(ids) - start > config.context:
                start = len(ids) - keep
            logits = model(torch.tensor([ids[start:]]))[0, -1] + bias
            token = int(logits.argmax())
            ids.append(token)  # [EOS] included: it reads as the start of a new document
            new.append(token)
    return new


@pytest.mark.parametrize("name", list(LMS))
def test_cached_greedy_generation_equals_uncached(name):
    """40 tokens after a 5-token prompt pass the context of 16 twice: the cache restarts
    from the recent tokens and must still agree with re-reading everything."""
    lm = LMS[name](seed=3)
    prompt = encode_prompt(lm.tokenizer, "t9 t10 t11 t12", False, 15)
    want = uncached_greedy(lm, prompt.ids, 40)
    [got] = generate(lm, "t9 t10 t11 t12", max_new_tokens=40, temperature=0,
                     stop_at_eos=False)
    assert got.tokens == want
    assert len(want) > 20  # the test is not vacuous: it went past the context


@pytest.mark.parametrize("name", list(LMS))
def test_batched_generation_equals_one_by_one(name):
    """Prompts of different lengths in one batch (Transformer: left padding; LSTM: rows
    grouped by length) give each prompt what it gets alone, greedy and sampled."""
    lm = LMS[name](seed=1)
    prompts = ["t9 t10 t11 t12 t13", "t20", "", "t30 t31"]
    for options in (dict(temperature=0), dict(temperature=1.0, top_k=20, seed=5)):
        together = generate(lm, prompts, max_new_tokens=12, **options)
        # one by one, each at its own input position (the draws depend on it)
        alone = generate(lm, prompts, max_new_tokens=12, batch_size=1, **options)
        assert [g.tokens for g in together] == [g.tokens for g in alone]
        assert [g.index for g in together] == [0, 1, 2, 3]


def test_same_seed_same_text_whatever_the_batch_size_and_other_seeds_differ():
    lm = tiny_lm(seed=2)
    prompts = ["t9", "t10 t11", "t12"]
    options = dict(max_new_tokens=15, temperature=1.0, seed=7, num_samples=2)
    a = generate(lm, prompts, batch_size=6, **options)
    b = generate(lm, prompts, batch_size=1, **options)
    c = generate(lm, prompts, batch_size=4, **options)
    assert [g.tokens for g in a] == [g.tokens for g in b] == [g.tokens for g in c]
    assert [(g.index, g.sample) for g in a] == [(i, j) for i in range(3) for j in range(2)]
    assert a[0].tokens != a[1].tokens  # two samples of one prompt differ
    other = generate(lm, prompts, batch_size=6, **{**options, "seed": 8})
    assert [g.tokens for g in other] != [g.tokens for g in a]


def test_sampling_follows_the_model_distribution():
    """The Gumbel-max draw with hashed noise samples softmax(logits): frequencies over
    many seeds match a known bigram table."""
    V = 10
    table = torch.full((V, V), -30.0)
    table[EOS, 7], table[EOS, 8], table[EOS, 9] = math.log(0.6), math.log(0.3), math.log(0.1)
    lm = table_lm(table, word_tokenizer(V))
    counts = {7: 0, 8: 0, 9: 0}
    for seed in range(600):
        [g] = generate(lm, "", max_new_tokens=1, temperature=1.0, seed=seed)
        counts[g.tokens[0]] += 1
    assert abs(counts[7] / 600 - 0.6) < 0.06
    assert abs(counts[8] / 600 - 0.3) < 0.06
    assert abs(counts[9] / 600 - 0.1) < 0.04


def _bigram_table() -> torch.Tensor:
    """From the start, 7 is likeliest (0.5) but leads nowhere in particular (1/3 each);
    8 (0.4) leads to 9 with 0.9, and 9 to 9 with 0.9. [EOS] is nearly impossible."""
    V = 10
    p = torch.full((V, V), 1e-6)
    p[EOS, 7], p[EOS, 8], p[EOS, 9] = 0.5, 0.4, 0.1
    p[7, 7] = p[7, 8] = p[7, 9] = 1 / 3
    p[8, 9], p[8, 7], p[8, 8] = 0.9, 0.05, 0.05
    p[9, 9], p[9, 7], p[9, 8] = 0.9, 0.05, 0.05
    return p.log()


def brute_force_best(lm, n: int, length_penalty: float):
    """Every continuation of the empty prompt up to n tokens over {7, 8, 9} (ending with
    [EOS] or at n), scored as beam search scores them: the best one and its score."""
    model = lm.model
    bias = torch.zeros(lm.config.vocab_size)
    bias[list(SUPPRESSED)] = float("-inf")
    best, best_score = None, -math.inf
    with torch.no_grad():
        for length in range(1, n + 1):
            for seq in itertools.product([7, 8, 9, EOS], repeat=length):
                if EOS in seq[:-1] or (length < n and seq[-1] != EOS):
                    continue  # [EOS] only at the end; shorter texts must end with it
                ids = [EOS, *seq]
                logp = torch.log_softmax(model(torch.tensor([ids]))[0] + bias, -1)
                total = sum(float(logp[i, t]) for i, t in enumerate(seq))
                score = total / length**length_penalty
                if score > best_score:
                    best, best_score = [t for t in seq if t != EOS], score
    return best, best_score


def test_beam_search_finds_the_known_best_where_greedy_does_not():
    lm = table_lm(_bigram_table(), word_tokenizer(10))
    best, score = brute_force_best(lm, 3, 0.0)
    assert best == [8, 9, 9]  # 0.4 * 0.9 * 0.9 = 0.324
    [greedy] = generate(lm, "", max_new_tokens=3, temperature=0)
    assert greedy.tokens[0] == 7 and greedy.tokens != best  # at most 0.5 / 9 = 0.056
    [beam] = generate(lm, "", max_new_tokens=3, beams=2, length_penalty=0.0)
    assert beam.tokens == best
    assert beam.score == pytest.approx(score, abs=1e-4)
    assert beam.logprob == pytest.approx(math.log(0.324), abs=1e-4)


@pytest.mark.parametrize("name", ["rotary", "lstm"])
@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
def test_exhaustive_beam_search_equals_brute_force_on_a_real_model(name, length_penalty):
    """With as many beams as there are texts of n - 1 tokens, beam search cannot miss:
    it must return the brute-force best, through cache reordering on a real model."""
    lm = LMS[name](vocab=10, seed=4)
    best, score = brute_force_best(lm, 3, length_penalty)
    [beam] = generate(lm, "", max_new_tokens=3, beams=16, length_penalty=length_penalty)
    assert beam.tokens == best
    assert beam.score == pytest.approx(score, abs=1e-4)


def true_logprob(lm, prompt: str, tokens: list[int]) -> float:
    """The summed log-probability of `tokens` after `prompt`, read without any cache."""
    bias = torch.zeros(lm.config.vocab_size)
    bias[list(SUPPRESSED)] = float("-inf")
    ids = encode_prompt(lm.tokenizer, prompt, False, 100).ids
    with torch.no_grad():
        logp = torch.log_softmax(lm.model(torch.tensor([ids + tokens]))[0] + bias, -1)
    return sum(float(logp[len(ids) - 1 + i, t]) for i, t in enumerate(tokens))


@pytest.mark.parametrize("name", list(LMS))
def test_beam_search_returns_the_n_best_in_order_for_each_prompt(name):
    lm = LMS[name](seed=5)
    out = generate(lm, ["t9", "t10 t11"], max_new_tokens=6, beams=4, num_return=3,
                   stop_at_eos=False)
    for g in out:  # each beam's score came from its own rows of the reordered state
        assert g.logprob == pytest.approx(true_logprob(lm, g.prompt, g.tokens), abs=1e-4)
    assert [(g.index, g.sample) for g in out] == [(i, r) for i in range(2) for r in range(3)]
    for i in range(2):
        scores = [g.score for g in out if g.index == i]
        assert scores == sorted(scores, reverse=True)
        assert len({tuple(g.tokens) for g in out if g.index == i}) == 3
    # a batch of prompts gives each what it gets alone
    alone = generate(lm, ["t9"], max_new_tokens=6, beams=4, num_return=3, stop_at_eos=False)
    assert [g.tokens for g in alone] == [g.tokens for g in out[:3]]


def test_stop_strings_cut_exactly_and_are_not_included():
    V = 12
    tok = word_tokenizer(V)
    script = [7, 8, 9, 10, 11, 7]  # "t7 t8 t9 t10 t11 t7"
    lm = table_lm(torch.zeros(V, V), tok, script=script)
    [g] = generate(lm, "", max_new_tokens=6, temperature=0, stop=["t10"])
    assert g.text == " t7 t8 t9 " or g.text == "t7 t8 t9 "
    assert g.stop_reason == "stop"
    [g] = generate(lm, "", max_new_tokens=6, temperature=0, stop=["9 t1", "t8"])
    assert g.text.strip() == "t7" and g.stop_reason == "stop"
    [g] = generate(lm, "", max_new_tokens=6, temperature=0, stop=["zzz"])
    assert g.text.strip() == "t7 t8 t9 t10 t11 t7" and g.stop_reason == "length"
    pieces = list(stream(lm, "", max_new_tokens=6, temperature=0, stop=["t10"]))
    assert "".join(pieces).strip() == "t7 t8 t9"


def test_stop_matcher_holds_back_only_what_could_start_a_stop():
    m = StopMatcher(["\n\n", "END"])
    assert m.feed("abc\n") == "abc"  # "\n" might begin "\n\n"
    assert m.feed("x E") == "\nx "  # it did not; "E" might begin "END"
    assert m.feed("N") == ""
    assert m.feed("Dtail") == ""  # "END" found: nothing more, ever
    assert m.stopped and m.flush() == ""


def test_streaming_never_prints_half_a_character():
    """Byte-level BPE trained on ASCII splits 'é' and '日' into byte tokens; a model that
    writes them token by token must reach the terminal as whole characters only."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from lmtool.text.specials import SPECIAL_TOKENS

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["plain ascii text only"] * 20, trainer)
    text = " café 日本 ok"
    ids = tok.encode(text).ids
    assert len(ids) > len(text.split())  # multi-byte characters took several tokens
    V = tok.get_vocab_size()
    lm = table_lm(torch.zeros(V, V), tok, script=ids)
    pieces = list(stream(lm, "", max_new_tokens=len(ids), temperature=0))
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)
    # and the held-back bytes are real: token by token, some pushes show nothing
    prompt = encode_prompt(tok, "", False, 100)
    ts = TextStream(tok, prompt)
    shown = [ts.push(i) for i in ids]
    assert "" in shown and "".join(shown) + ts.finish() == text


def test_backward_run_writes_what_comes_before_the_prompt_in_reading_order():
    V = 12
    tok = word_tokenizer(V)
    script = [9, 8, 7]  # a backward model writes right to left: t9, then t8, then t7
    lm = table_lm(torch.zeros(V, V), tok, script=script, prompt_len=3)
    lm.model.config.backward = True
    [g] = generate(lm, "t10 t11", max_new_tokens=3, temperature=0)
    assert g.tokens == [7, 8, 9]
    assert g.text.strip() == "t7 t8 t9"
    assert g.full_text.split() == ["t7", "t8", "t9", "t10", "t11"]
    with pytest.raises(BadInput, match="backward"):
        list(stream(lm, "t10", max_new_tokens=2))


def test_a_prompt_longer_than_the_context_is_cut_with_a_warning():
    lm = tiny_lm(context=8)
    warnings = []
    long = " ".join(f"t{i}" for i in range(7, 27))  # 20 tokens
    [g] = generate(lm, long, max_new_tokens=3, temperature=0, on_warning=warnings.append)
    assert g.truncated == 13 and len(g.tokens) <= 3
    assert len(warnings) == 1 and "kept the last 7" in warnings[0]
    lstm = tiny_lm(arch="lstm", context=8)
    [g] = generate(lstm, long, max_new_tokens=3, temperature=0, on_warning=warnings.append)
    assert g.truncated == 0 and len(warnings) == 1  # an LSTM reads any length


def test_max_new_tokens_zero_and_an_empty_prompt():
    lm = tiny_lm()
    [g] = generate(lm, "t9", max_new_tokens=0)
    assert g.text == "" and g.tokens == [] and g.stop_reason == "length"
    [g] = generate(lm, "", max_new_tokens=5, temperature=0)  # a new document
    assert g.prompt == "" and g.stop_reason in ("eos", "length")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (dict(top_p=0.0), "--top-p must be in"),
        (dict(top_p=1.5), "--top-p must be in"),
        (dict(temperature=-1.0), "--temperature must be >= 0"),
        (dict(beams=3, top_k=5), "--beams 3 .* drop --top-k"),
        (dict(beams=3, temperature=0.7, top_p=0.9), "drop --temperature, --top-p"),
        (dict(beams=2, num_return=3), "--num-return must be between 1 and --beams"),
        (dict(num_return=2), "--num-return need beam search"),
        (dict(max_new_tokens=-1), "--max-new-tokens"),
    ],
)
def test_contradicting_or_invalid_options_are_refused(options, message):
    with pytest.raises(BadInput, match=message):
        GenerateOptions(**options).resolved()


def test_logit_filters():
    logits = torch.tensor([[4.0, 3.0, 2.0, 1.0, 0.0]])
    kept = lambda out: (out > float("-inf")).int().tolist()[0]  # noqa: E731
    assert kept(filter_logits(logits, top_k=2)) == [1, 1, 0, 0, 0]
    probs = torch.softmax(logits, -1)[0]  # 0.64, 0.24, 0.09, ...
    assert float(probs[0]) < 0.7 < float(probs[:2].sum())
    assert kept(filter_logits(logits, top_p=0.7)) == [1, 1, 0, 0, 0]
    assert kept(filter_logits(logits, top_p=0.5)) == [1, 0, 0, 0, 0]
    assert kept(filter_logits(logits, top_p=1.0)) == [1, 1, 1, 1, 1]
    assert kept(filter_logits(logits, min_p=0.3)) == [1, 1, 0, 0, 0]  # e^-1 = 0.37 >= 0.3
    seen = torch.tensor([[True, False, False, True, False]])
    out = repetition_penalty(torch.tensor([[4.0, 3.0, 2.0, -1.0, 0.0]]), seen, 2.0)
    assert out.tolist() == [[2.0, 3.0, 2.0, -2.0, 0.0]]


def test_repetition_penalty_discourages_repeats():
    lm = tiny_lm(seed=6)
    [plain] = generate(lm, "t9", max_new_tokens=20, temperature=0)
    [penalised] = generate(lm, "t9", max_new_tokens=20, temperature=0, repetition_penalty=5.0)
    distinct = lambda g: len(set(g.tokens)) / max(len(g.tokens), 1)  # noqa: E731
    assert distinct(penalised) > distinct(plain)


def test_row_keys_depend_on_seed_prompt_and_sample_only():
    a = row_keys(1, [(0, 0), (0, 1), (5, 0)], "cpu")
    b = row_keys(1, [(5, 0)], "cpu")
    assert int(a[2]) == int(b[0])
    assert len(set(a.tolist())) == 3
    assert int(row_keys(2, [(5, 0)], "cpu")[0]) != int(b[0])


@pytest.mark.parametrize("name", ["rotary", "lstm"])
def test_decoding_asks_the_model_what_its_state_can_do_not_its_architecture_name(name):
    """A model kind the decoder has never heard of (here a renamed Transformer or LSTM)
    generates as before: batched prompts of different lengths, past the context, beams."""
    import dataclasses

    lm = LMS[name](seed=1)
    prompts = ["t9 t10 t11 t12 t13", "t20", "t30 t31"]

    def run():
        sampled = generate(lm, prompts, max_new_tokens=30, temperature=1.0, seed=3,
                           stop_at_eos=False)
        beams = generate(lm, prompts, max_new_tokens=6, beams=3, num_return=2)
        return [g.tokens for g in sampled + beams]

    before = run()
    lm.model.config = dataclasses.replace(lm.model.config, arch="some-new-kind")
    assert run() == before


def test_unseeded_sampling_draws_a_seed_and_reports_it_greedy_reports_none(monkeypatch):
    import lmtool.inference.generation as generation

    lm = tiny_lm(seed=2)
    drawn = itertools.count(11)
    monkeypatch.setattr(generation.secrets, "randbits", lambda bits: next(drawn))
    first = generate(lm, ["t9", "t10"], max_new_tokens=10, temperature=1.0)
    second = generate(lm, ["t9", "t10"], max_new_tokens=10, temperature=1.0)
    assert [g.seed for g in first] == [11, 11] and [g.seed for g in second] == [12, 12]
    again = generate(lm, ["t9", "t10"], max_new_tokens=10, temperature=1.0, seed=11,
                     batch_size=1)
    assert [g.tokens for g in again] == [g.tokens for g in first]
    assert [g.tokens for g in second] != [g.tokens for g in first]
    assert [g.seed for g in generate(lm, "t9", max_new_tokens=3, temperature=0)] == [None]
