"""`lmtool evaluate` and `lmtool info` on real runs."""

from __future__ import annotations

import json
import math

import pytest
from lm_fixtures import make_shards


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return make_shards(tmp_path_factory.mktemp("eval"), kind="char", vocab_size=64)


def _run(shards, out, objective):
    from lmtool.training import pretrain

    pretrain(shards, out, objective=objective,
             overrides=dict(layers=2, heads=2, dim=32, context=32, batch_size=8, lr=3e-3,
                            max_steps=40, epochs=100, eval_every=20, eval_batches=0,
                            log_every=10),
             sample_chars=0)
    return out


@pytest.fixture(scope="module")
def causal_run(shards, tmp_path_factory):
    return _run(shards, tmp_path_factory.mktemp("runs") / "causal", "causal")


@pytest.fixture(scope="module")
def masked_run(shards, tmp_path_factory):
    return _run(shards, tmp_path_factory.mktemp("runs") / "masked", "masked")


def test_evaluate_shards_json(causal_run, shards, cli):
    result = cli("evaluate", causal_run, shards, "--format", "json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert {"loss", "tokens", "perplexity"} <= set(data)
    assert data["perplexity"] == pytest.approx(math.exp(data["loss"]))
    val_tokens = json.loads((shards / "meta.json").read_text())["splits"]["val"]["tokens"]
    assert data["tokens"] == val_tokens - 1  # every token but the first is predicted once
    # The last evaluation during training scored the same split the same way.
    rows = [json.loads(line) for line in (causal_run / "metrics.jsonl").read_text().splitlines()]
    last_eval = [r for r in rows if "val_loss" in r][-1]
    assert data["loss"] == pytest.approx(last_eval["val_loss"], rel=1e-3)


@pytest.mark.parametrize("objective", ["causal", "masked"])
@pytest.mark.parametrize("batch_size", ["16", "3"])
def test_the_trainers_last_eval_equals_evaluate(causal_run, masked_run, shards, cli,
                                                objective, batch_size):
    """One scoring function, the same masks: whatever --batch-size evaluate uses."""
    run = causal_run if objective == "causal" else masked_run
    result = cli("evaluate", run, shards, "--format", "json", "--batch-size", batch_size)
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    last_eval = [r for r in rows if "val_loss" in r][-1]
    assert last_eval["step"] == 40
    assert data["tokens"] == last_eval["val_tokens"]  # masked: the very same tokens masked
    for key in ("loss", "perplexity", "accuracy"):
        if key in data or f"val_{key}" in last_eval:
            assert data[key] == pytest.approx(last_eval[f"val_{key}"], rel=1e-5), key


def test_evaluate_text_and_shards_agree_in_magnitude(causal_run, shards, tmp_path, cli):
    text = shards.parent / "data.txt"
    on_text = json.loads(cli("evaluate", causal_run, text, "--format", "json").stdout)
    on_train = json.loads(cli("evaluate", causal_run, shards, "--split", "train",
                              "--format", "json").stdout)
    # The text file is the whole corpus: the train split plus the val documents.
    assert on_text["tokens"] > on_train["tokens"]
    assert on_text["loss"] == pytest.approx(on_train["loss"], rel=0.1)
    result = cli("evaluate", causal_run, "-", input=text.read_text()[:3000])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("loss ") and "perplexity" in result.stdout


def test_evaluate_masked_reports_accuracy_deterministically(masked_run, shards, cli):
    a = json.loads(cli("evaluate", masked_run, shards, "--format", "json").stdout)
    b = json.loads(cli("evaluate", masked_run, shards, "--format", "json").stdout)
    c = json.loads(cli("evaluate", masked_run, shards, "--format", "json", "--seed", "3").stdout)
    assert {"loss", "tokens", "accuracy"} <= set(a) and "perplexity" not in a
    assert 0 <= a["accuracy"] <= 1
    assert a == b  # masking is seeded
    assert c["tokens"] != a["tokens"] or c["loss"] != a["loss"]
    text = cli("evaluate", masked_run, shards)
    assert text.stdout.startswith("masked loss") and "accuracy" in text.stdout


def test_evaluate_bad_inputs(causal_run, shards, tmp_path, cli):
    other = make_shards(tmp_path / "o", kind="char", vocab_size=64, seed=4, paragraphs=30)
    result = cli("evaluate", causal_run, other)
    assert result.exit_code == 2 and "another tokenizer" in result.stderr
    result = cli("evaluate", tmp_path, shards)
    assert result.exit_code == 2 and "not an lmtool run" in result.stderr
    result = cli("evaluate", causal_run, tmp_path / "missing.txt")
    assert result.exit_code == 2 and "does not exist" in result.stderr


def test_info_text_and_json(causal_run, cli):
    result = cli("info", causal_run, "--format", "json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert {"arch", "objective", "parameters", "model", "training", "tokenizer", "data",
            "history"} <= set(data)
    from lmtool.checkpoint import load_checkpoint

    model = load_checkpoint(causal_run).model
    assert data["parameters"] == model.num_parameters()
    assert data["tokenizer"]["kind"] == "char" and data["tokenizer"]["vocab_size"] > 7
    assert len(data["tokenizer"]["sha256"]) == 64
    h = data["history"]
    assert h["step"] == 40 and h["tokens_seen"] == 40 * 8 * 32
    assert h["last_loss"] is not None and h["best_val_loss"] <= h["last_val_loss"]
    assert data["data"]["train_tokens"] > 0
    text = cli("info", causal_run)
    assert text.exit_code == 0
    assert f"{data['parameters']:,} parameters" in text.stdout
    assert "40 steps" in text.stdout and "char" in text.stdout


@pytest.mark.parametrize("suffix", [".tsv", ".csv", ".jsonl"])
def test_evaluate_reads_a_labelled_files_text_column(causal_run, tmp_path, cli, suffix):
    """A language model scores a labelled file's texts, as `finetune lm` reads them: not
    its header and labels. The same texts as plain paragraphs score the same."""
    docs = ["the cat sat on the mat", "a dog ran far away", "and then it rained"]
    (tmp_path / "plain.txt").write_text("\n\n".join(docs) + "\n")
    labelled = tmp_path / f"gold{suffix}"
    if suffix == ".jsonl":
        labelled.write_text("".join(json.dumps({"label": "x", "text": d}) + "\n" for d in docs))
    else:
        sep = "\t" if suffix == ".tsv" else ","
        labelled.write_text(f"label{sep}text\n" + "".join(f"x{sep}{d}\n" for d in docs))
    plain = cli("evaluate", causal_run, tmp_path / "plain.txt", "--format", "json")
    rows = cli("evaluate", causal_run, labelled, "--format", "json")
    assert plain.exit_code == 0 and rows.exit_code == 0, rows.stderr
    plain, rows = json.loads(plain.stdout), json.loads(rows.stdout)
    assert rows["input_tokens"] == plain["input_tokens"]
    assert rows["loss"] == pytest.approx(plain["loss"])
