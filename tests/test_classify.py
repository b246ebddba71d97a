"""Batch classification: input order under bucketing, streaming, ensembles, the CLI."""

from __future__ import annotations

import itertools
import json
import random
import tracemalloc

import numpy as np
import pytest
from clf_fixtures import make_classifier_run
from lm_fixtures import generate_text

from lmtool.errors import BadInput
from lmtool.inference.classify import classify
from lmtool.text.documents import SkipReport, read_documents


def texts(n: int, seed: int = 0) -> list[str]:
    """Documents of very different lengths (0 to ~700 characters)."""
    rng = random.Random(seed)
    words = generate_text(seed, 40).split()
    return [" ".join(rng.choices(words, k=rng.choice([0, 1, 3, 10, 40, 120])))
            for _ in range(n)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("clf")
    return {kind: make_classifier_run(root, kind) for kind in
            ("lstm", "backward", "causal", "masked")} | {"root": root}


@pytest.mark.parametrize("kind", ["lstm", "masked"])
def test_order_and_results_under_length_bucketing(runs, kind):
    """Documents sorted by length into batches come back in input order, each with the
    probabilities it gets when classified alone."""
    docs = texts(50)
    batched = list(classify(runs[kind], docs, batch_size=8, block=20, device="cpu",
                            precision="fp32"))
    assert [p.index for p in batched] == list(range(50))
    assert [p.source for p in batched] == [f"#{i + 1}" for i in range(50)]
    alone = [next(classify(runs[kind], [d], device="cpu", precision="fp32")) for d in docs[:12]]
    for a, b in zip(alone, batched, strict=False):
        np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-5)
    assert len({round(p.probability, 6) for p in batched}) > 5  # not one answer for all


def test_unbounded_input_streams_in_flat_memory(runs):
    """An endless generator of lines: predictions come out while it is still being read,
    and memory does not grow from block to block (keeping as little as each block's
    list of texts and its probabilities would add ~3 KB a block, ~48 KB here)."""
    lines = itertools.cycle(texts(37, seed=3))
    stream = classify(runs["lstm"], lines, batch_size=32, block=64, device="cpu",
                      precision="fp32")
    for _ in itertools.islice(stream, 64 * 2):  # the model loaded, the first blocks done
        pass
    tracemalloc.start()
    for _ in itertools.islice(stream, 64 * 4):
        pass
    after_4, peak_4 = tracemalloc.get_traced_memory()
    for _ in itertools.islice(stream, 64 * 16):
        pass
    after_20, peak_20 = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert after_20 - after_4 < 20_000
    assert peak_20 < 1.2 * peak_4


def test_empty_and_truncated_documents_are_flagged(runs, tmp_path):
    run = make_classifier_run(runs["root"], "causal", max_tokens=10, name="short")
    preds = list(classify(run, ["", "   ", "ab", "a much longer document"], device="cpu"))
    assert [p.empty for p in preds] == [True, True, False, False]
    assert [p.truncated for p in preds] == [False, False, False, True]
    assert [p.tokens for p in preds] == [1, 1, 3, 10]  # [EOS] + up to 9 tokens
    # Nothing to tell a class by: an empty document gets no label, whatever the threshold.
    for threshold in (None, 0.0):
        preds = list(classify(run, ["", "   ", "ab", "a much longer document"],
                              threshold=threshold, device="cpu"))
        assert [p.label for p in preds[:2]] == [None, None]
        assert all(p.label in ("neg", "pos") for p in preds[2:])
        assert all(p.best in ("neg", "pos") for p in preds)  # what evaluation counts


def test_threshold_abstains(runs):
    preds = list(classify(runs["lstm"], texts(20), threshold=0.999, device="cpu"))
    assert all(p.label is None for p in preds)
    preds = list(classify(runs["lstm"], texts(20), threshold=0.0, device="cpu"))
    assert all(p.label in ("neg", "pos") for p in preds if not p.empty)
    with pytest.raises(BadInput, match="--threshold 1.5 must be between 0 and 1"):
        list(classify(runs["lstm"], ["x"], threshold=1.5))


def test_ensemble_averages_probabilities(runs):
    docs = texts(10)
    fwd = [p.probabilities for p in classify(runs["lstm"], docs, device="cpu")]
    bwd = [p.probabilities for p in classify(runs["backward"], docs, device="cpu")]
    both = [p.probabilities for p in classify(runs["lstm"], docs, ensemble=[runs["backward"]],
                                              device="cpu")]
    np.testing.assert_allclose(np.array(both), (np.array(fwd) + np.array(bwd)) / 2, atol=1e-6)


def test_ensemble_labels_must_match(runs):
    other = make_classifier_run(runs["root"], "lstm", labels=("ham", "spam"), name="spam")
    with pytest.raises(BadInput, match="--ensemble: .*spam has the labels ham, spam"):
        list(classify(runs["lstm"], ["x"], ensemble=[other]))
    # The same labels in another order are aligned by name.
    swapped = make_classifier_run(runs["root"], "lstm", labels=("pos", "neg"), seed=1,
                                  name="swapped")
    docs = texts(8, seed=2)
    mine = np.array([p.probabilities for p in classify(runs["lstm"], docs, device="cpu")])
    theirs = list(classify(swapped, docs, device="cpu"))
    assert theirs[0].labels == ["pos", "neg"]
    theirs = np.array([p.probabilities for p in theirs])[:, ::-1]  # as (neg, pos)
    both = list(classify(runs["lstm"], docs, ensemble=[swapped], device="cpu"))
    assert both[0].labels == ["neg", "pos"]
    averaged = np.array([p.probabilities for p in both])
    np.testing.assert_allclose(averaged, (mine + theirs) / 2, atol=1e-6)
    assert np.abs(mine - theirs).max() > 1e-3  # the two runs disagree: the test can fail


def test_a_language_model_is_refused(tmp_path):
    from lm_fixtures import TINY, make_shards  # noqa: F401

    from lmtool.training import pretrain

    data = make_shards(tmp_path, paragraphs=40)
    pretrain(data, tmp_path / "lm", overrides=dict(
        layers=2, heads=2, dim=16, context=16, max_steps=1, batch_size=2), sample_chars=0)
    with pytest.raises(BadInput, match="is a language model, not a classifier") as refused:
        list(classify(tmp_path / "lm", ["x"]))
    assert "lmtool finetune classifier" in refused.value.hint


def test_read_documents(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.txt").write_text("first doc\nsecond line\n")
    (tmp_path / "d" / "b.bin").write_bytes(b"\0\1\2")
    (tmp_path / "d" / "c.txt").write_bytes(b"caf\xe9")
    (tmp_path / "e.txt").write_text("one\n\nthree")
    report = SkipReport()
    docs = list(read_documents([tmp_path / "d", tmp_path / "e.txt"], report=report))
    # Without the whitespace around it, as every reader gives a document (text/boundaries.py).
    assert docs == [(str(tmp_path / "d" / "a.txt"), "first doc\nsecond line"),
                    (str(tmp_path / "e.txt"), "one\n\nthree")]
    assert [why for _, why in report.skipped] == [
        "binary", "not valid UTF-8 (byte offset 3)"]
    lines = list(read_documents([tmp_path / "e.txt"], per_line=True))
    assert lines == [(f"{tmp_path / 'e.txt'}:1", "one"), (f"{tmp_path / 'e.txt'}:2", ""),
                     (f"{tmp_path / 'e.txt'}:3", "three")]
    replaced = list(read_documents([tmp_path / "d" / "c.txt"], encoding_errors="replace"))
    assert replaced[0][1] == "caf\ufffd"
    # A document is read up to max_chars: a longer one is cut, never a multi-byte char.
    (tmp_path / "long.txt").write_text("é" * 100)
    assert list(read_documents([tmp_path / "long.txt"], max_chars=7))[0][1] == "é" * 7


# --- the CLI -------------------------------------------------------------------------------


def test_cli_text_output_in_input_order(cli, runs, tmp_path):
    files = []
    for i, doc in enumerate(texts(12)):
        f = tmp_path / "in" / f"doc{i:02d}.txt"
        f.parent.mkdir(exist_ok=True)
        f.write_text(doc)
        files.append(f)
    r = cli("classify", runs["lstm"], tmp_path / "in", "--device", "cpu", "--batch-size", "3")
    assert r.exit_code == 0, r.stderr
    rows = [line.split("\t") for line in r.stdout.splitlines()]
    assert [row[0] for row in rows] == [str(f) for f in files]
    assert all(0.5 <= float(row[2]) <= 1 for row in rows)
    # texts(12) holds empty ones: they get no label, and stderr says so.
    assert [row[1] == "-" for row in rows] == [not doc.strip() for doc in texts(12)]
    assert all(row[1] in ("neg", "pos") for row in rows if row[1] != "-")
    assert "empty document" in r.stderr


def test_cli_stdin_per_line_jsonl_and_tsv(cli, runs):
    lines = "good\n\nbad\n"
    r = cli("classify", runs["masked"], "-", "--per-line", "--format", "jsonl", "--top-k", "2",
            input=lines)
    assert r.exit_code == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [row["source"] for row in rows] == ["<stdin>:1", "<stdin>:2", "<stdin>:3"]
    assert [row["empty"] for row in rows] == [False, True, False]
    for row in rows:
        assert set(row["probabilities"]) == {"neg", "pos"}
        assert abs(sum(row["probabilities"].values()) - 1) < 1e-6
        assert row["label"] == (None if row["empty"] else row["top"][0]["label"])
    r = cli("classify", runs["masked"], "-", "--per-line", "--format", "tsv", input=lines)
    out = r.stdout.splitlines()
    assert out[0] == "source\tlabel\tprobability\tneg\tpos\tempty\ttruncated"
    assert [line.split("\t")[5] for line in out[1:]] == ["0", "1", "0"]


def test_cli_format_label_counts_with_sort_uniq(cli, runs):
    """`... --per-line --format label | sort | uniq -c` counts the labels: one label a
    line, in input order, the same ones the other formats give."""
    lines = [t for t in texts(30, seed=4) if t] * 2
    stdin = "".join(f"{line}\n" for line in lines)
    r = cli("classify", runs["lstm"], "-", "--per-line", "--format", "label", input=stdin)
    assert r.exit_code == 0, r.stderr
    jsonl = cli("classify", runs["lstm"], "-", "--per-line", "--format", "jsonl", input=stdin)
    expected = [json.loads(row)["label"] for row in jsonl.stdout.splitlines()]
    assert r.stdout.splitlines() == expected and len(expected) == len(lines)
    assert len(set(r.stdout.splitlines())) <= 2  # uniq -c folds them into one row a label
    r = cli("classify", runs["lstm"], "-", "--format", "label", "--top-k", "2", input="x")
    assert r.exit_code == 2 and "--format label prints one label" in r.stderr
    assert r.stdout == ""


@pytest.mark.parametrize("format, column", [("text", 1), ("tsv", 1), ("label", 0)])
def test_cli_empty_document_has_no_label_in_every_format(cli, runs, format, column):
    r = cli("classify", runs["lstm"], "-", "--per-line", "--format", format,
            "--threshold", "0", input="good\n   \nbad\n")
    assert r.exit_code == 0, r.stderr
    rows = [line.split("\t") for line in r.stdout.splitlines()[1 if format == "tsv" else 0:]]
    assert [row[column] for row in rows][1] == "-"
    assert {rows[0][column], rows[2][column]} <= {"neg", "pos"}
    assert "no label (-) for 1 empty document: <stdin>:2" in r.stderr
    r = cli("classify", runs["lstm"], "-", "--per-line", "--format", "jsonl",
            "--threshold", "0", input="good\n   \n")
    assert [json.loads(row)["label"] is None for row in r.stdout.splitlines()] == [False, True]


def test_cli_tsv_header_even_without_documents(cli, runs):
    r = cli("classify", runs["lstm"], "-", "--per-line", "--format", "tsv", input="")
    assert r.exit_code == 0, r.stderr
    assert r.stdout == "source\tlabel\tprobability\tneg\tpos\tempty\ttruncated\n"


def test_cli_not_a_classifier_run_hints_finetune_classifier(cli, runs, tmp_path):
    r = cli("classify", tmp_path, "-", input="x")
    assert r.exit_code == 2 and r.stdout == ""
    assert "pass a run made by lmtool finetune classifier" in r.stderr
    assert "pretrain" not in r.stderr


def test_cli_skipped_files_exit_3_after_the_others(cli, runs, tmp_path):
    (tmp_path / "a.txt").write_text("fine")
    (tmp_path / "b.bin").write_bytes(b"\0binary")
    (tmp_path / "c.txt").write_text("also fine")
    r = cli("classify", runs["lstm"], tmp_path / "a.txt", tmp_path / "b.bin", tmp_path / "c.txt")
    assert r.exit_code == 3
    assert [line.split("\t")[0] for line in r.stdout.splitlines()] == [
        str(tmp_path / "a.txt"), str(tmp_path / "c.txt")]
    assert f"skipped {tmp_path / 'b.bin'}: binary" in r.stderr
    assert "lmtool: error: skipped 1 input" in r.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--top-k", "0"], "--top-k must be at least 1"),
        (["--format", "json"], "--format: 'json' is not one of text, jsonl, tsv"),
        (["--threshold", "2"], "--threshold 2.0 must be between 0 and 1"),
        (["--batch-size", "0"], "--batch-size must be at least 1"),
    ],
)
def test_cli_bad_flags(cli, runs, args, message):
    r = cli("classify", runs["lstm"], "-", *args, input="x")
    assert r.exit_code == 2
    assert message in r.stderr and r.stdout == ""


def test_cli_ensemble_with_other_labels(cli, runs):
    other = make_classifier_run(runs["root"], "lstm", labels=("a", "b", "c"), name="abc")
    r = cli("classify", runs["lstm"], "-", "--ensemble", other, input="x")
    assert r.exit_code == 2 and "has the labels a, b, c" in r.stderr and r.stdout == ""


# --- evaluate ------------------------------------------------------------------------------


def test_evaluate_counts_what_classify_predicts(cli, runs, tmp_path):
    docs = texts(40, seed=5)
    rng = random.Random(1)
    gold = [rng.choice(["neg", "pos", "maybe"]) if i % 10 else "maybe" for i in range(40)]
    f = tmp_path / "gold.tsv"
    f.write_text("label\ttext\n" + "".join(f"{g}\t{d}\n" for g, d in zip(gold, docs,
                                                                           strict=True)))
    # Every example counts the best label, an empty one too (classify leaves it unlabelled).
    predicted = [p.best for p in classify(runs["causal"], docs, device="cpu")]
    r = cli("evaluate", runs["causal"], f, "--format", "json", "--device", "cpu")
    assert r.exit_code == 0, r.stderr
    result = json.loads(r.stdout)
    right = sum(p == g for p, g in zip(predicted, gold, strict=True))
    assert result["accuracy"] == pytest.approx(right / 40)
    assert result["examples"] == 40
    assert set(result) >= {"accuracy", "macro_f1", "per_class", "confusion"}
    n_maybe = gold.count("maybe")
    assert result["unseen_labels"] == {"maybe": n_maybe}
    assert result["per_class"]["maybe"]["support"] == n_maybe
    assert sum(map(sum, result["confusion"]["matrix"])) == 40
    examples = f"{n_maybe} example" + ("s" if n_maybe != 1 else "")
    assert f"label 'maybe' ({examples}) is not one the classifier knows" in r.stderr
    text = cli("evaluate", runs["causal"], f, "--device", "cpu")
    assert text.exit_code == 0
    assert text.stdout.startswith(f"accuracy {right / 40:.4f}")
    assert "true \\ predicted" in text.stdout and "\x1b[" not in text.stdout


@pytest.mark.parametrize(
    "content, message",
    [
        ("label\ttext\npos\tgood\n\tbad\n", "gold.tsv:3: the row has an empty label"),
        ("label,text\npos,good\n", "gold.tsv:1: the header is CSV, but the file is read as TSV"),
        ("label\ttext\n", "gold.tsv holds no examples"),
        ("nonsense without columns\n", "gold.tsv:1: the row has no text"),
    ],
)
def test_evaluate_bad_labelled_file(cli, runs, tmp_path, content, message):
    f = tmp_path / "gold.tsv"
    f.write_text(content)
    r = cli("evaluate", runs["lstm"], f)
    assert r.exit_code == 2 and message in r.stderr and r.stdout == ""


def test_evaluate_refuses_a_set_with_none_of_the_classifiers_labels(cli, runs, tmp_path):
    """A folder of plain text (sub-folders are taken as classes) is not this classifier's
    labelled data: refused in one line, not scored as accuracy 0."""
    for name in ("news", "notes"):
        (tmp_path / "plain" / name).mkdir(parents=True)
        (tmp_path / "plain" / name / "a.txt").write_text("some text")
    r = cli("evaluate", runs["lstm"], tmp_path / "plain", "--device", "cpu")
    assert r.exit_code == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1
    assert "holds none of the classifier's labels: it has news, notes; the classifier " \
           "knows neg, pos" in r.stderr


def test_evaluate_needs_one_labelled_source(cli, runs, tmp_path):
    r = cli("evaluate", runs["lstm"], tmp_path / "a.tsv", tmp_path / "b.tsv")
    assert r.exit_code == 2 and "one labelled source, not 2" in r.stderr
