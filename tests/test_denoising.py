"""Denoising pre-training (BART) and `finetune seq2seq`: the noise, the segments, a tiny
run that learns to rebuild text, a fine-tune that starts from its weights, refusals."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from gen_fixtures import save_run, tiny_lm, word_tokenizer
from test_seq2seq_cli import one_line

from lmtool.text.noise import corrupt, mask_spans, permute_sentences
from lmtool.text.specials import SPECIAL_IDS

V = 7 + 10  # the specials, then words t7 ... t16
TINY = dict(layers=1, dim=32, heads=2, context=16, dropout=0.0, batch_size=16, lr=1e-2,
            eval_every=0, log_every=1, precision="fp32", device="cpu")
SMALL = ["--layers", "1", "--dim", "32", "--heads", "2", "--context", "16", "--precision",
         "fp32", "--device", "cpu", "--quiet"]


# --- the noise ----------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 5, 10, 31, 200])
def test_spans_cover_thirty_percent_apart_and_each_becomes_one_mask(n):
    ids = list(range(100, 100 + n))
    for seed in range(50):
        spans = mask_spans(n, np.random.default_rng(seed))
        assert sum(length for _, length in spans) == (min(round(0.3 * n), n - 1) if n > 1
                                                      else 0)
        for (s1, l1), (s2, _) in zip(spans, spans[1:], strict=False):
            assert s1 + l1 < s2  # at least one kept token between two spans
        assert all(s >= 0 and s + length <= n for s, length in spans)
        noisy = corrupt(ids, np.random.default_rng(seed))
        assert noisy.count(SPECIAL_IDS.mask) == len(spans)
        expected, at = [], 0
        for s, length in spans:
            expected += [*ids[at:s], SPECIAL_IDS.mask]
            at = s + length
        assert noisy == expected + ids[at:]


def test_span_lengths_are_poisson_three():
    lengths = [length for seed in range(40)
               for _, length in mask_spans(1000, np.random.default_rng(seed))[:-1]]
    assert 2.8 < np.mean(lengths) < 3.2 and 2.5 < np.var(lengths) < 3.5
    assert 0 in lengths  # a zero-length span: a [MASK] inserted, nothing removed


def test_the_noise_is_a_function_of_the_seed():
    ids = list(range(10, 60))
    assert corrupt(ids, np.random.default_rng(3)) == corrupt(ids, np.random.default_rng(3))
    assert len({tuple(corrupt(ids, np.random.default_rng(s))) for s in range(10)}) == 10


def test_sentence_permutation_keeps_each_sentence_whole():
    dot = 99
    sentences = [[10, 11, dot], [12, dot], [13, 14, 15, dot], [16, dot], [17, dot]]
    ids = [t for s in sentences for t in s]
    orders = set()
    for seed in range(20):
        out = permute_sentences(ids, np.random.default_rng(seed), {dot})
        pieces, start = [], 0
        for i, t in enumerate(out):
            if t == dot:
                pieces.append(out[start : i + 1])
                start = i + 1
        assert sorted(map(tuple, pieces)) == sorted(map(tuple, sentences))
        orders.add(tuple(out))
    assert len(orders) > 5


def test_segments_stay_inside_documents():
    from lmtool.training.noisy_text import text_segments

    eos = SPECIAL_IDS.eos
    tokens = np.array([9] * 7 + [eos] + [8] * 2 + [eos, eos] + [7] * 3)  # 3 documents
    segments = text_segments(tokens, width=3)
    assert segments.tolist() == [[0, 3], [3, 6], [6, 7], [8, 10], [12, 15]]


# --- training -----------------------------------------------------------------------------


def write_text(root, documents: int = 150, seed: int = 0):
    from lmtool.text.tokenizer import save_tokenizer

    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    save_tokenizer(word_tokenizer(V), root / "tok.json")
    # Counting runs (t9 t10 t11 ...): a text the decoder can rebuild from what is left.
    docs = []
    for _ in range(documents):
        first, n = rng.randint(7, 10), rng.randint(4, 7)
        docs.append(" ".join(f"t{first + i}" for i in range(n)))
    (root / "text.txt").write_text("\n\n".join(docs) + "\n")
    pairs = [(d, d) for d in docs[:80]]  # a copying task: what denoising teaches
    (root / "pairs.tsv").write_text("".join(f"{s}\t{t}\n" for s, t in pairs))
    return root


@pytest.fixture(scope="module")
def denoised(tmp_path_factory):
    from lmtool.training import train_denoising

    root = write_text(tmp_path_factory.mktemp("bart"))
    train_denoising([root / "text.txt"], root / "bart", tokenizer=root / "tok.json",
                    permute_sentences=True, overrides={**TINY, "max_steps": 60})
    return root


def _losses(run) -> list[float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


def test_denoising_learns_to_rebuild_the_text(denoised):
    config = json.loads((denoised / "bart" / "config.json").read_text())
    assert config["task"] == "seq2seq" and config["pretraining"]["objective"] == "denoising"
    assert config["pretraining"]["permute_sentences"] is True
    losses = _losses(denoised / "bart")
    print("denoising losses:", losses[:3], losses[-3:])
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])


def test_finetune_starts_from_the_denoised_weights(denoised, tmp_path):
    from lmtool.checkpoint import load_checkpoint
    from lmtool.training import Callback, finetune_seq2seq, train_seq2seq

    class AtStart(Callback):
        def on_start(self, trainer):
            model = getattr(trainer.model, "module", trainer.model)
            self.weights = {k: v.clone() for k, v in model.state_dict().items()}

    start = AtStart()
    training = {k: v for k, v in TINY.items() if k not in ("layers", "dim", "heads", "context")}
    finetune_seq2seq(denoised / "bart", denoised / "pairs.tsv", tmp_path / "ft",
                     overrides={**training, "max_steps": 2}, callbacks=[start])
    base = load_checkpoint(denoised / "bart", "cpu", task="seq2seq").model.state_dict()
    assert start.weights.keys() == base.keys()
    assert all(torch.equal(start.weights[k], base[k]) for k in base)
    config = json.loads((tmp_path / "ft" / "config.json").read_text())
    assert config["base"]["run"] == str((denoised / "bart").resolve())

    train_seq2seq(denoised / "pairs.tsv", tmp_path / "scratch", tokenizer=denoised / "tok.json",
                  overrides={**TINY, "max_steps": 2})
    # The first step's loss is the starting weights': copying is what denoising taught.
    first = _losses(tmp_path / "ft")[0], _losses(tmp_path / "scratch")[0]
    print("first losses, fine-tune and from scratch:", first)
    assert first[0] < 0.5 * first[1]


# --- refusals -----------------------------------------------------------------------------


def test_a_language_model_is_refused_by_finetune_seq2seq(cli, denoised, tmp_path):
    lm = save_run(tiny_lm(vocab=V), tmp_path / "lm")
    message = one_line(cli("finetune", "seq2seq", lm, denoised / "pairs.tsv", "-o",
                           tmp_path / "out", *SMALL[-5:]))
    assert "is a language model, not a sequence-to-sequence run" in message
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("args", "words"), [
    (["--layers", "2"], "no option --layers"),
    (["--dim", "64"], "no option --dim"),
])
def test_finetune_seq2seq_keeps_the_base_runs_shape(cli, denoised, tmp_path, args, words):
    message = one_line(cli("finetune", "seq2seq", denoised / "bart", denoised / "pairs.tsv",
                           "-o", tmp_path / "out", *args))
    assert words in message
    assert not (tmp_path / "out").exists()


def test_finetune_seq2seq_refuses_its_base_as_output(cli, denoised):
    message = one_line(cli("finetune", "seq2seq", denoised / "bart", denoised / "pairs.tsv",
                           "-o", denoised / "bart"))
    assert "-o must name a new run" in message


@pytest.mark.parametrize(("args", "words"), [
    (["--objective", "denoising"], "needs --tokenizer"),
    (["--objective", "causal", "--permute-sentences"], "--permute-sentences is for"),
    (["--objective", "denoising", "--tokenizer", "TOK", "--valid", "PAIRS"],
     "--valid is for --objective seq2seq"),
])
def test_denoising_flags_that_do_not_fit_are_refused(cli, denoised, tmp_path, args, words):
    args = [str(denoised / "tok.json") if a == "TOK" else str(denoised / "pairs.tsv")
            if a == "PAIRS" else a for a in args]
    message = one_line(cli("pretrain", denoised / "text.txt", "-o", tmp_path / "out", *args,
                           *SMALL))
    assert words in message
    assert not (tmp_path / "out").exists()


def test_the_cli_pretrains_by_denoising_then_finetunes(cli, denoised, tmp_path):
    run = tmp_path / "bart"
    result = cli("pretrain", denoised / "text.txt", "--objective", "denoising", "--arch",
                 "transformer", "--tokenizer", denoised / "tok.json", "-o", run,
                 "--max-steps", "3", "--format", "json", *SMALL)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["steps"] == 3
    result = cli("finetune", "seq2seq", run, denoised / "pairs.tsv", "-o", tmp_path / "mt",
                 "--max-steps", "2", "--format", "json", *SMALL[-5:])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["base"] == str(run)
    shown = cli("info", run).stdout
    assert "pretraining denoising: 30% of the tokens masked in Poisson(3) spans" in shown
    assert f"base run    {run.resolve()}" in cli("info", tmp_path / "mt").stdout


def test_the_library_refuses_a_new_shape_naming_the_flags(denoised, tmp_path):
    from lmtool.errors import BadInput
    from lmtool.training import finetune_seq2seq

    with pytest.raises(BadInput, match="cannot change --dim, --layers"):
        finetune_seq2seq(denoised / "bart", denoised / "pairs.tsv", tmp_path / "out",
                         overrides={"layers": 2, "dim": 64, "max_steps": 1})
    assert not (tmp_path / "out").exists()
