"""Sequence to sequence from the command line: the commands of issue 17, and every
refusal as one line and exit 2, with nothing left behind."""

from __future__ import annotations

import json

import pytest
from gen_fixtures import save_run, tiny_lm, word_tokenizer
from test_seq2seq import V, reverse_pairs

SMALL = ["--layers", "1", "--dim", "32", "--heads", "2", "--hidden", "32", "--context", "16",
         "--precision", "fp32", "--device", "cpu", "--quiet"]


def one_line(result, code: int = 2) -> str:
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    assert result.stderr.startswith("lmtool: error: ")
    assert result.stderr.count("\n") == 1, result.stderr
    return result.stderr.removeprefix("lmtool: error: ").rstrip("\n")


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    from lmtool.text.tokenizer import save_tokenizer

    root = tmp_path_factory.mktemp("s2s")
    save_tokenizer(word_tokenizer(V), root / "tok.json")
    pairs = reverse_pairs(120, seed=0)
    (root / "pairs.tsv").write_text(
        "source\ttarget\n" + "".join(f"{s}\t{t}\n" for s, t in pairs))
    (root / "test.tsv").write_text("".join(f"{s}\t{t}\n" for s, t in pairs[:10]))  # no header
    (root / "train.src").write_text("".join(f"{s}\n" for s, _ in pairs))
    (root / "train.tgt").write_text("".join(f"{t}\n" for _, t in pairs))
    return root


@pytest.fixture(scope="module")
def mt_run(task):
    from typer.testing import CliRunner

    from lmtool.cli.main import app

    run = task / "runs" / "mt"
    result = CliRunner().invoke(app, [
        "pretrain", str(task / "pairs.tsv"), "--objective", "seq2seq", "--arch", "transformer",
        "--tokenizer", str(task / "tok.json"), "-o", str(run), "--max-steps", "6", *SMALL])
    assert result.exit_code == 0, result.stderr
    return run


def test_the_lstm_command_trains_on_aligned_files(cli, task, tmp_path):
    run = tmp_path / "mt-lstm"
    result = cli("pretrain", "--source", task / "train.src", "--target", task / "train.tgt",
                 "--objective", "seq2seq", "--arch", "lstm", "--attention", "bahdanau",
                 "--tokenizer", task / "tok.json", "-o", run, "--max-steps", "3",
                 "--format", "json", *SMALL)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["steps"] == 3
    config = json.loads((run / "config.json").read_text())
    assert config["task"] == "seq2seq"
    assert config["model"]["arch"] == "lstm" and config["model"]["attention"] == "bahdanau"
    assert config["data"]["train_pairs"] + config["data"]["valid_pairs"] == 120


def test_generate_maps_each_source_to_its_output_in_order(cli, mt_run):
    from lmtool.inference.translate import translate

    sources = ["t8 t9 t10", "t11 t12", "t13"]
    expected = [g.text for g in translate(mt_run, sources, device="cpu")]
    one = cli("generate", mt_run, sources[0], "--device", "cpu")
    assert one.exit_code == 0, one.stderr
    assert one.stdout == expected[0] + "\n"  # the output alone, no source before it
    many = cli("generate", mt_run, "-", "--device", "cpu", "--format", "jsonl",
               input="\n".join(sources) + "\n")
    assert many.exit_code == 0, many.stderr
    rows = [json.loads(line) for line in many.stdout.splitlines()]
    assert [r["text"] for r in rows] == expected
    assert [r["source"] for r in rows] == sources and [r["index"] for r in rows] == [0, 1, 2]
    beams = cli("generate", mt_run, "-", "--device", "cpu", "--beams", "3",
                input="\n".join(sources) + "\n")
    assert beams.exit_code == 0 and len(beams.stdout.splitlines()) == 3


def test_evaluate_gives_loss_perplexity_bleu_and_chrf(cli, mt_run, task):
    result = cli("evaluate", mt_run, task / "test.tsv", "--beams", "5", "--format", "json",
                 "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    scores = json.loads(result.stdout)
    assert {"loss", "perplexity", "bleu", "chrf", "bleu_signature"} <= set(scores)
    assert scores["pairs"] == 10 and scores["beams"] == 5
    assert 0 <= scores["bleu"] <= 100 and scores["perplexity"] > 1
    text = cli("evaluate", mt_run, task / "test.tsv", "--device", "cpu")
    assert "BLEU signature: nrefs:1|" in text.stdout


def test_tokenize_train_takes_both_sides(cli, task, tmp_path):
    result = cli("tokenize", "train", task / "train.src", task / "train.tgt", "--kind", "bpe",
                 "--vocab-size", "300", "-o", tmp_path / "tok.json")
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "tok.json").is_file()


@pytest.mark.parametrize(("name", "text", "message"), [
    ("p.tsv", "source\ttranslation\na\tb\n", "has no target column"),
    ("p.csv", "src,target\na,b\n", "has no source column"),
    ("p.jsonl", '{"source": "a"}\n', "no 'target' key"),
    ("p.tsv", "a\tb\tc\n", "3 fields; a TSV without a header has exactly two"),
    # A tab inside a sentence (Multi30k's train.de has one) must not silently make the
    # rest of the source the target.
    ("p.tsv", "source\ttarget\nein\tHund\ta dog\n", "p.tsv:2: 3 fields, the header has 2"),
    ("p.tsv", "source\ttarget\na\tb\nc\t \n", "p.tsv:3: empty target"),
    ("p.jsonl", '{"source": "", "target": "b"}\n', "p.jsonl:1: empty source"),
])
def test_bad_pairs_are_refused_before_training(cli, task, tmp_path, name, text, message):
    (tmp_path / name).write_text(text)
    run = tmp_path / "run"
    result = cli("pretrain", tmp_path / name, "--objective", "seq2seq", "--tokenizer",
                 task / "tok.json", "-o", run, *SMALL)
    assert message in one_line(result)
    assert not run.exists()


def test_aligned_files_of_different_lengths_say_both_counts(cli, task, tmp_path):
    (tmp_path / "short.tgt").write_text("t7\nt8\n")
    result = cli("pretrain", "--source", task / "train.src", "--target", tmp_path / "short.tgt",
                 "--objective", "seq2seq", "--tokenizer", task / "tok.json",
                 "-o", tmp_path / "run", *SMALL)
    message = one_line(result)
    assert "has 120 lines" in message and "has 2" in message
    assert not (tmp_path / "run").exists()


def test_a_language_model_is_refused_pairs(cli, task, tmp_path):
    lm = save_run(tiny_lm(vocab=V), tmp_path / "lm")
    assert "holds source/target pairs" in one_line(cli("evaluate", lm, task / "pairs.tsv"))
    assert "is a file of pairs" in one_line(cli("pretrain", task / "pairs.tsv", "-o",
                                                tmp_path / "x"))
    assert "--attention is for --objective seq2seq" in one_line(
        cli("pretrain", tmp_path, "-o", tmp_path / "x", "--attention", "none"))
    assert "not a sequence-to-sequence run" in one_line(
        cli("pretrain", task / "pairs.tsv", "--objective", "seq2seq", "-o", lm, "--resume"))


@pytest.mark.parametrize("args", [
    ["classify", "{run}", "some text"],
    ["fill-mask", "{run}", "a [MASK] b"],
    ["complete", "{run}", "--prefix", "t7"],
])
def test_a_seq2seq_run_is_refused_by_lm_commands_saying_what_fits(cli, mt_run, args):
    message = one_line(cli(*(a.format(run=mt_run) for a in args)))
    assert "sequence-to-sequence" in message and "lmtool generate" in message


def test_seq2seq_flags_that_do_not_fit_are_named(cli, task, tmp_path):
    base = ["pretrain", task / "pairs.tsv", "--objective", "seq2seq", "--tokenizer",
            task / "tok.json", "-o", tmp_path / "r"]
    assert "--attention is for --arch lstm" in one_line(cli(*base, "--attention", "none"))
    assert "no --ar" in one_line(cli(*base, "--ar", "1"))
    assert "needs --tokenizer" in one_line(cli("pretrain", task / "pairs.tsv", "--objective",
                                               "seq2seq", "-o", tmp_path / "r"))
