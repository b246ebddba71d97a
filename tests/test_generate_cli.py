"""`lmtool generate`, `complete --prefix` and `fill-mask` from the command line: output,
exit codes and one-line errors (stdout, stderr and exit code checked separately)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from gen_fixtures import save_run, tiny_lm


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("gen-runs")
    return {
        "lm": save_run(tiny_lm(context=32, seed=1), root / "lm"),
        "lstm": save_run(tiny_lm(arch="lstm", seed=1), root / "lstm"),
        "bwd": save_run(tiny_lm(backward=True, context=32, seed=1), root / "bwd"),
        "mlm": save_run(tiny_lm(objective="masked", context=32), root / "mlm"),
    }


def one_error_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lmtool: error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def test_generate_prints_prompt_and_continuation(runs, cli):
    result = cli("generate", runs["lm"], "t9 t10", "-n", "8", "--temperature", "0")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("t9 t10")
    assert result.stderr == ""
    again = cli("generate", runs["lm"], "t9 t10", "-n", "8", "--temperature", "0")
    assert again.stdout == result.stdout


def test_generate_jsonl_carries_prompt_text_tokens_reason_and_beam_scores(runs, cli):
    result = cli("generate", runs["lstm"], "t9", "-n", "5", "--beams", "3", "--num-return", "2",
                 "--format", "jsonl")
    assert result.exit_code == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == 2
    for rank, row in enumerate(rows):
        assert row["prompt"] == "t9" and row["sample"] == rank
        assert isinstance(row["text"], str) and isinstance(row["tokens"], list)
        assert row["stop_reason"] in ("eos", "stop", "length")
        assert "score" in row and "logprob" in row
    assert rows[0]["score"] >= rows[1]["score"]


def test_generate_many_prompts_keeps_input_order_and_reports_bad_jsonl_lines(runs, cli):
    lines = [json.dumps({"prompt": "t9", "max_new_tokens": 3}), "[1, 2]",
             json.dumps({"prompt": "t10 t11", "temperature": 0}), "{not json",
             json.dumps({"prompt": "t12", "top_p": 3})]
    result = cli("generate", runs["lm"], "-", "-n", "4", "--format", "jsonl",
                 input="\n".join(lines) + "\n")
    assert result.exit_code == 3
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["prompt"] for r in rows] == ["t9", "t10 t11"]
    assert [r["index"] for r in rows] == [0, 2]
    assert len(rows[0]["tokens"]) <= 3
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 4
    assert errors[0].startswith("lmtool: error: line 2: a JSONL prompt must be an object")
    assert errors[1].startswith("lmtool: error: line 4: not valid JSON")
    assert errors[2].startswith("lmtool: error: line 5: top_p must be in (0, 1]")
    assert errors[3] == "lmtool: error: skipped 3 prompts (see the errors above)"


def test_the_first_line_decides_plain_or_jsonl_and_a_line_of_the_other_kind_is_an_error(
        runs, cli):
    plain_first = "t9 t10\n" + json.dumps({"prompt": "t11"}) + "\n{ t12 }\n"
    result = cli("generate", runs["lm"], "-", "-n", "3", "--format", "jsonl", input=plain_first)
    assert result.exit_code == 3
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["index"], r["prompt"]) for r in rows] == [(0, "t9 t10"), (2, "{ t12 }")]
    errors = result.stderr.strip().splitlines()
    assert errors[0].startswith("lmtool: error: line 2: a JSON object among plain-text "
                                "prompts (line 1 made this input plain text)")
    assert errors[1] == "lmtool: error: skipped 1 prompt (see the errors above)"
    # JSONL decided by the first line with text: blank lines before it are not prompts
    jsonl_first = "\n" + json.dumps({"prompt": "t11"}) + "\nt9 t10\n"
    result = cli("generate", runs["lm"], "-", "-n", "3", "--format", "jsonl", input=jsonl_first)
    assert result.exit_code == 3
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["index"], r["prompt"]) for r in rows] == [(1, "t11")]
    errors = result.stderr.strip().splitlines()
    assert errors[0].startswith("lmtool: error: line 3: plain text among JSONL prompts "
                                "(line 2 made this input JSONL)")
    assert len(errors) == 2


def test_generate_text_lines_from_a_file_and_batch_size_does_not_change_them(runs, cli, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("t9\nt10 t11 t12\n\nt13\n")
    a = cli("generate", runs["lm"], "--file", prompts, "-n", "5", "--seed", "3",
            "--format", "jsonl")
    b = cli("generate", runs["lm"], "--file", prompts, "-n", "5", "--seed", "3",
            "--format", "jsonl", "--batch-size", "1")
    assert a.exit_code == b.exit_code == 0, a.stderr + b.stderr
    assert a.stdout == b.stdout
    assert [json.loads(r)["prompt"] for r in a.stdout.splitlines()] == ["t9", "t10 t11 t12",
                                                                       "", "t13"]


def test_sampling_without_seed_differs_each_run_and_its_reported_seed_repeats_it(
        runs, cli, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("t9\nt10 t11 t12\n\nt13\n")
    args = ("generate", runs["lm"], "--file", prompts, "-n", "20", "--temperature", "1.5",
            "--format", "jsonl")
    first, second = cli(*args), cli(*args)
    assert first.exit_code == second.exit_code == 0, first.stderr + second.stderr
    rows = [json.loads(line) for line in first.stdout.splitlines()]
    [seed] = {r["seed"] for r in rows}  # one seed for the run, on every row
    assert {json.loads(line)["seed"] for line in second.stdout.splitlines()} != {seed}
    assert [r["text"] for r in rows] != [json.loads(line)["text"]
                                         for line in second.stdout.splitlines()]
    for batch_size in ("32", "1"):  # the reported seed repeats the run, at any batch size
        again = cli(*args, "--seed", seed, "--batch-size", batch_size)
        assert again.exit_code == 0, again.stderr
        assert again.stdout == first.stdout


def test_greedy_and_beam_search_report_no_seed_and_never_vary(runs, cli):
    for extra in (["--temperature", "0"], ["--beams", "3"]):
        a = cli("generate", runs["lm"], "t9", "-n", "6", "--format", "jsonl", *extra)
        b = cli("generate", runs["lm"], "t9", "-n", "6", "--format", "jsonl", *extra)
        assert a.exit_code == 0, a.stderr
        assert a.stdout == b.stdout and "seed" not in json.loads(a.stdout)


def test_backward_run_prints_the_text_before_the_prompt(runs, cli):
    result = cli("generate", runs["bwd"], "t9 t10", "-n", "4", "--temperature", "0",
                 "--format", "jsonl")
    assert result.exit_code == 0, result.stderr
    row = json.loads(result.stdout)
    text = cli("generate", runs["bwd"], "t9 t10", "-n", "4", "--temperature", "0")
    assert text.stdout.rstrip("\n").endswith("t9 t10")
    assert text.stdout.rstrip("\n") == row["text"] + "t9 t10" or not row["tokens"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--beams", "3", "--top-k", "5"], "--beams 3 searches for the most likely text"),
        (["--top-p", "1.5"], "--top-p must be in (0, 1]"),
        (["--top-p", "0"], "--top-p must be in (0, 1]"),
        (["--temperature", "-1"], "--temperature must be >= 0"),
        (["--num-return", "2"], "--num-return need beam search"),
        (["--format", "tsv"], "--format: 'tsv' is not one of text, jsonl"),
    ],
)
def test_generate_refuses_bad_options(runs, cli, args, message):
    result = cli("generate", runs["lm"], "t9", *args)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert message in one_error_line(result)


def test_max_new_tokens_zero_writes_nothing_and_an_empty_prompt_starts_a_document(runs, cli):
    result = cli("generate", runs["lm"], "t9", "-n", "0")
    assert (result.exit_code, result.stdout, result.stderr) == (0, "", "")
    result = cli("generate", runs["lm"], "-n", "5", "--format", "jsonl")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["prompt"] == ""


def test_a_long_prompt_is_cut_with_a_one_line_warning(runs, cli):
    long = " ".join(f"t{7 + i % 30}" for i in range(60))
    result = cli("generate", runs["lm"], long, "-n", "3")
    assert result.exit_code == 0
    [warning] = result.stderr.strip().splitlines()
    assert warning.startswith("lmtool: warning: the prompt has 60 tokens")
    assert "kept the last 31" in warning


def test_a_masked_run_is_refused_by_generate_and_complete(runs, cli):
    for args in (["generate", runs["mlm"], "t9"], ["complete", runs["mlm"], "--prefix", "t9"]):
        result = cli(*args)
        assert result.exit_code == 2 and result.stdout == ""
        assert "masked (bidirectional) model" in one_error_line(result)
        assert "fill-mask" in result.stderr


def test_fill_mask_refuses_a_causal_run_and_input_without_mask(runs, cli):
    result = cli("fill-mask", runs["lm"], "t9 [MASK]")
    assert result.exit_code == 2 and result.stdout == ""
    assert "causal model: fill-mask needs a masked one" in one_error_line(result)
    assert "lmtool generate" in result.stderr
    result = cli("fill-mask", runs["mlm"], "t9 t10")
    assert result.exit_code == 2 and result.stdout == ""
    assert "has no [MASK]" in one_error_line(result)


def test_fill_mask_output_and_per_line_errors(runs, cli):
    result = cli("fill-mask", runs["mlm"], "t9 [MASK] t11", "--top-k", "3", "--format", "jsonl")
    assert result.exit_code == 0, result.stderr
    row = json.loads(result.stdout)
    assert len(row["masks"]) == 1 and len(row["masks"][0]) == 3
    assert row["filled"].startswith("t9 ") and "[MASK]" not in row["filled"]
    result = cli("fill-mask", runs["mlm"], "-", input="t9 [MASK]\nno mask\n[MASK] t10\n")
    assert result.exit_code == 3  # done, with a line left out
    assert result.stdout.count("[MASK] 1:") == 2
    errors = result.stderr.splitlines()
    assert len(errors) == 2 and "line 2 has no [MASK]" in errors[0]
    assert errors[1] == "lmtool: error: skipped 1 text (see the errors above)"


def test_complete_prefix_prints_ranked_completions(runs, cli):
    result = cli("complete", runs["lm"], "--prefix", "t9 t10", "-k", "3", "--format", "jsonl")
    assert result.exit_code == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == 3  # the vocabulary has many more
    assert len({r["completion"] for r in rows}) == 3
    assert [r["rank"] for r in rows] == list(range(len(rows)))
    assert all(r["prefix"] == "t9 t10" for r in rows)
    scores = [r["score"] for r in rows]
    assert scores == sorted(scores, reverse=True)
    text = cli("complete", runs["lm"], "--prefix", "t9 t10", "-k", "3")
    assert all(len(line.split("\t")) == 2 for line in text.stdout.splitlines())
    one = cli("complete", runs["lm"], "--prefix", "t9 t10", "-k", "1")
    assert one.exit_code == 0, one.stderr
    assert len(one.stdout.splitlines()) == 1


def test_complete_without_a_terminal_points_to_prefix(runs, cli):
    result = cli("complete", runs["lm"], input="")
    assert result.exit_code == 2 and result.stdout == ""
    line = one_error_line(result)
    assert "needs a terminal" in line and "--prefix" in line


def test_help_of_each_command_has_examples(cli):
    for command in ("generate", "complete", "fill-mask"):
        result = cli(command, "--help")
        assert result.exit_code == 0 and "Examples:" in result.stdout


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def test_closing_stdout_early_exits_141_without_a_traceback(runs, tmp_path):
    prompts = tmp_path / "many.txt"
    prompts.write_text("".join(f"t{7 + i % 30}\n" for i in range(400)))
    proc = subprocess.Popen(
        [sys.executable, "-m", "lmtool", "generate", str(runs["lm"]), "--file", str(prompts),
         "-n", "20", "--batch-size", "8"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(),
    )
    proc.stdout.readline()  # `| head -1`
    proc.stdout.close()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 141
    assert b"Traceback" not in err and err == b""


def test_one_prompt_to_a_terminal_streams_and_ends_with_a_newline(runs):
    """stdout on a pseudo-terminal: the streaming path."""
    import pty

    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "lmtool", "generate", str(runs["lm"]), "t9 t10", "-n", "6",
         "--temperature", "0"],
        stdout=follower, stderr=subprocess.PIPE, env=_env(),
    )
    os.close(follower)
    out = b""
    while True:
        try:
            chunk = os.read(leader, 1024)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    _, err = proc.communicate(timeout=120)
    os.close(leader)
    assert proc.returncode == 0, err
    piped = subprocess.run(
        [sys.executable, "-m", "lmtool", "generate", str(runs["lm"]), "t9 t10", "-n", "6",
         "--temperature", "0"], capture_output=True, env=_env(), check=True,
    )
    assert out.replace(b"\r\n", b"\n") == piped.stdout  # the same text, streamed


def test_a_classifier_run_is_refused_by_the_language_model_commands(tmp_path, cli):
    from clf_fixtures import make_classifier_run

    clf = make_classifier_run(tmp_path, "causal")
    for args in (["generate", clf, "t9"], ["complete", clf, "--prefix", "t9"],
                 ["fill-mask", clf, "t9 [MASK]"]):
        result = cli(*args)
        assert result.exit_code == 2 and result.stdout == ""
        assert "is a classifier run, not a language model" in one_error_line(result)
        assert "lmtool classify" in result.stderr
