"""Encoder–decoders: the models, decoding through the generation library, training on
the run builder. Tiny models on CPU; the synthetic task is reversing a short sequence
of words."""

from __future__ import annotations

import json
import random

import pytest
import torch
from gen_fixtures import word_tokenizer

from lmtool.inference.runs import LoadedLM
from lmtool.models import build_seq2seq
from lmtool.models.seq2seq import EncoderDecoder, Seq2SeqState, pad_rows
from lmtool.models.seq2seq_config import Seq2SeqConfig, resolve_seq2seq_config
from lmtool.text.specials import SPECIAL_IDS

V = 7 + 8  # the specials, then words t7 ... t14
ARCHS = [("transformer", None), ("lstm", "none"), ("lstm", "bahdanau")]
ARCH_IDS = ["transformer", "lstm-none", "lstm-bahdanau"]


def tiny(arch: str, attention: str | None, seed: int = 0, **over) -> EncoderDecoder:
    values = dict(vocab_size=V, layers=2, dim=32, heads=2, hidden=32, context=16, dropout=0.0)
    if attention:
        values["attention"] = attention
    config = resolve_seq2seq_config(arch, "tiny", {**values, **over})
    config.vocab_size = V
    torch.manual_seed(seed)
    return build_seq2seq(config).eval()


def loaded(model: EncoderDecoder) -> LoadedLM:
    return LoadedLM(model, word_tokenizer(V), torch.device("cpu"), torch.float32)


def reverse_pairs(n: int, seed: int, longest: int = 4) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = [f"t{rng.randint(7, V - 1)}" for _ in range(rng.randint(2, longest))]
        out.append((" ".join(words), " ".join(reversed(words))))
    return out


SOURCES = [[8, 9, 10, 3], [11, 12, 3], [13, 7, 7, 8, 9, 3]]


# --- models -----------------------------------------------------------------------------


@pytest.mark.parametrize(("arch", "attention"), ARCHS, ids=ARCH_IDS)
def test_cached_decoding_equals_teacher_forcing(arch, attention):
    model = tiny(arch, attention)
    source, mask = pad_rows(SOURCES)
    target = torch.tensor([[2, 13, 14, 8, 9], [2, 7, 8, 0, 0], [2, 9, 10, 11, 12]])
    with torch.no_grad():
        whole = model(source, mask, target)  # (B, T, V) in one forward, no cache
        state, hidden = model.start(SOURCES, capacity=8)  # encoder once, then [BOS]
        steps = [model.lm_head(hidden)]
        for t in range(1, target.size(1)):
            steps.append(model.lm_head(model.decode(target[:, t : t + 1], state)[:, -1]))
    torch.testing.assert_close(torch.stack(steps, 1), whole, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("attention", [None, "bahdanau"])
def test_the_lstm_encoder_decoder_runs_under_bf16_autocast_without_native_bf16(
        monkeypatch, attention):
    """`--precision bf16` on a CPU with neither AVX512-BF16 nor AMX: oneDNN has no bf16
    LSTM kernel there, so the recurrences run in fp32 and the result stays near fp32's."""
    import lmtool.models.lstm_precision as lstm_precision

    monkeypatch.setattr(lstm_precision, "cpu_has_bf16_lstm", lambda: False)
    model = tiny("lstm", attention)
    source, mask = pad_rows(SOURCES)
    target = torch.tensor([[2, 13, 14, 8, 9], [2, 7, 8, 0, 0], [2, 9, 10, 11, 12]])
    with torch.no_grad():
        full = model(source, mask, target)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(source, mask, target)
    torch.testing.assert_close(low.float(), full, atol=0.05, rtol=0.05)


@pytest.mark.parametrize(("arch", "attention"), ARCHS, ids=ARCH_IDS)
def test_a_padded_source_reads_as_it_does_alone(arch, attention):
    model = tiny(arch, attention)
    target = torch.tensor([[2, 13, 14]])
    with torch.no_grad():
        source, mask = pad_rows(SOURCES)
        batched = model(source, mask, target.expand(len(SOURCES), -1))
        for i, row in enumerate(SOURCES):
            alone = model(torch.tensor([row]), torch.ones(1, len(row), dtype=torch.bool), target)
            torch.testing.assert_close(batched[i], alone[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("arch", "attention"), [ARCHS[0], ARCHS[2]], ids=["transformer",
                                                                           "lstm-bahdanau"])
def test_attention_weights_sum_to_one_per_target_position(arch, attention):
    model = tiny(arch, attention)
    weights = model.cross_attention([8, 9, 10, 11, 3], [12, 13])
    assert weights.shape == (3, 5)  # [BOS] + 2 targets read, 5 source tokens
    torch.testing.assert_close(weights.sum(-1), torch.ones(3))
    assert bool((weights >= 0).all())


def test_bahdanau_weights_leave_padding_out():
    model = tiny("lstm", "bahdanau")
    source, mask = pad_rows(SOURCES)
    weights: list[torch.Tensor] = []
    with torch.no_grad():
        model.decode(torch.tensor([[2, 9]] * 3), model.remember(source, mask), weights)
    for w in weights:  # (B, S) per target step
        torch.testing.assert_close(w.sum(-1), torch.ones(3))
        assert float(w[~mask].abs().sum()) == 0.0


def test_an_lstm_without_attention_has_no_weights_to_show():
    from lmtool.errors import BadInput

    with pytest.raises(BadInput, match="no attention"):
        tiny("lstm", "none").cross_attention([8, 3], [9])


def test_tied_embeddings_are_one_tensor():
    for arch, attention in ARCHS:
        model = tiny(arch, attention)
        assert model.lm_head.weight is model.tok_emb.weight


# --- decoding ---------------------------------------------------------------------------


@pytest.mark.parametrize(("arch", "attention"), ARCHS, ids=ARCH_IDS)
@pytest.mark.parametrize("options", [{}, {"beams": 3}, {"temperature": 0.9, "seed": 3}],
                         ids=["greedy", "beam", "sampling"])
def test_batched_sources_decode_as_one_by_one(arch, attention, options):
    from lmtool.inference.translate import translate

    lm = loaded(tiny(arch, attention, seed=1))
    sources = ["t8 t9 t10", "t11", "t13 t7 t7 t8 t9 t10", "t12 t12"]
    together = translate(lm, sources, max_new_tokens=6, **options)
    alone = [translate(lm, [s], max_new_tokens=6, **options)[0] for s in sources]
    # One at a time each source is prompt 0; sampling keys on the index: give it back.
    if "seed" in options:
        alone = [translate(lm, sources[: i + 1], max_new_tokens=6, **options)[i]
                 for i in range(len(sources))]
    assert [g.tokens for g in together] == [g.tokens for g in alone]
    assert [g.index for g in together] == [0, 1, 2, 3]


class ScriptedSeq2Seq(EncoderDecoder):
    """The next token's log-probabilities depend on the previous target token alone
    (a table), whatever the source: a decoder whose best output is known."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.config = Seq2SeqConfig(vocab_size=table.size(0), context=16)
        self.table = table
        self.lm_head = torch.nn.Linear(table.size(0), table.size(0), bias=False)
        self.lm_head.weight.data = torch.eye(table.size(0))  # hidden = logits

    def remember(self, source, source_mask, *, cache=False, capacity=None):
        return Seq2SeqState({"mask": source_mask})

    def decode(self, target, state, weights=None):
        state.advance(target.size(1))
        return self.table[target]  # (B, T, V)


def scripted_table() -> torch.Tensor:
    """After [BOS]: t7 0.6, t8 0.4. After t7: t9..t13 0.2 each; after those, [EOS].
    After t8: t14 1.0, then [EOS]. Greedy writes t7 t9 (p 0.12); the best is t8 t14
    (p 0.4)."""
    p = torch.full((V, V), 1e-9)
    p[SPECIAL_IDS.bos, 7], p[SPECIAL_IDS.bos, 8] = 0.6, 0.4
    p[7, 9:14] = 0.2
    p[9:14, SPECIAL_IDS.eos] = 1.0
    p[8, 14] = 1.0
    p[14, SPECIAL_IDS.eos] = 1.0
    return (p / p.sum(-1, keepdim=True)).log()


def test_beam_search_finds_the_known_best_output_that_greedy_misses():
    from lmtool.inference.translate import translate

    lm = loaded(ScriptedSeq2Seq(scripted_table()))
    [greedy] = translate(lm, "t10", max_new_tokens=5)
    [beam] = translate(lm, "t10", max_new_tokens=5, beams=2)
    assert greedy.text == "t7 t9"
    assert beam.text == "t8 t14" and beam.stop_reason == "eos"
    assert beam.logprob == pytest.approx(float(torch.tensor(0.4).log()), abs=1e-4)


def test_bleu_and_chrf_are_sacrebleus():
    import sacrebleu

    from lmtool.inference.evaluate_seq2seq import corpus_scores

    hyps = ["the cat sat on the mat", "a dog runs in the park", "hello there"]
    refs = ["the cat sat on a mat", "the dog runs in the park", "hello there friend"]
    scores = corpus_scores(hyps, refs)
    assert scores["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score)
    assert scores["chrf"] == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs]).score)
    assert 0 < scores["bleu"] < 100
    assert scores["bleu_signature"].startswith("nrefs:1|")


# --- training ---------------------------------------------------------------------------


def write_task(root, n: int = 600, seed: int = 0, longest: int = 4):
    from lmtool.text.tokenizer import save_tokenizer

    root.mkdir(parents=True, exist_ok=True)
    save_tokenizer(word_tokenizer(V), root / "tok.json")
    rows = ["source\ttarget", *(f"{s}\t{t}" for s, t in reverse_pairs(n, seed, longest))]
    (root / "pairs.tsv").write_text("\n".join(rows) + "\n")
    return root / "pairs.tsv", root / "tok.json"


# Steps each needs to reverse 2-4 words exactly, and the longest source: Bahdanau's
# attention finds the alignment sooner than a fixed vector learns to hold the source.
LEARNING = {"transformer": (600, 4), "lstm-none": (800, 4), "lstm-bahdanau": (400, 4)}


@pytest.mark.parametrize(("arch", "attention"), ARCHS, ids=ARCH_IDS)
def test_tiny_models_learn_to_reverse_exactly(tmp_path, arch, attention):
    from lmtool.inference.translate import translate
    from lmtool.training import train_seq2seq

    name = ARCH_IDS[ARCHS.index((arch, attention))]
    steps, longest = LEARNING[name]
    pairs, tok = write_task(tmp_path, longest=longest)
    run = tmp_path / "run"
    result = train_seq2seq(
        pairs, run, tokenizer=tok, arch=arch, attention=attention,
        overrides=dict(layers=1, dim=32, heads=2, hidden=64, positions="learned", context=16,
                       dropout=0.0, tie_embeddings=False, batch_size=32, lr=1e-2, epochs=100,
                       max_steps=steps, eval_every=0, log_every=100,
                       precision="fp32", device="cpu"))
    assert result.last_eval["val_accuracy"] > 0.97
    unseen = reverse_pairs(40, seed=99, longest=longest)
    outputs = translate(run, [s for s, _ in unseen], device="cpu", precision="fp32")
    exact = sum(g.text == t for g, (_, t) in zip(outputs, unseen, strict=True))
    wrong = [(g.prompt, g.text) for g, (_, t) in zip(outputs, unseen, strict=True) if g.text != t]
    assert exact == len(unseen), wrong


def test_resume_repeats_the_uninterrupted_losses(tmp_path):
    from lmtool.training import train_seq2seq

    pairs, tok = write_task(tmp_path, n=200)
    # A constant rate: the run cut at step 10 plans the same rates as the whole one.
    flags = dict(layers=1, dim=32, heads=2, context=16, dropout=0.1, batch_size=16, lr=3e-3,
                 schedule="constant", warmup=0, epochs=100, eval_every=5, save_every=5,
                 log_every=1, precision="fp32", device="cpu")

    def losses(run):
        rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        return [(r["step"], r.get("loss"), r.get("val_loss")) for r in rows]

    whole, parts = tmp_path / "whole", tmp_path / "parts"
    train_seq2seq(pairs, whole, tokenizer=tok, overrides={**flags, "max_steps": 20})
    train_seq2seq(pairs, parts, tokenizer=tok, overrides={**flags, "max_steps": 10})
    train_seq2seq(pairs, parts, tokenizer=None, resume=True, overrides={"max_steps": 20})
    assert losses(parts) == losses(whole)
    config = json.loads((parts / "config.json").read_text())
    assert config["task"] == "seq2seq" and config["objective"] == "seq2seq"
