"""`lmtool attention` on sequence-to-sequence runs: the source x target weights of the
model's own translation, drawn in the terminal or to a file; an LSTM without attention
refused in one line."""

from __future__ import annotations

import numpy as np
import pytest
from test_seq2seq import write_task
from test_seq2seq_cli import one_line

RUNS = {"lstm": ("lstm", "bahdanau"), "lstm-none": ("lstm", "none"),
        "transformer": ("transformer", None)}
SOURCE = "t8 t9 t10"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from lmtool.training import train_seq2seq

    root = tmp_path_factory.mktemp("xattn")
    pairs, tok = write_task(root, n=64)
    out = {}
    for name, (arch, attention) in RUNS.items():
        out[name] = root / name
        train_seq2seq(pairs, out[name], tokenizer=tok, arch=arch, attention=attention,
                      overrides=dict(layers=2, dim=32, heads=2, hidden=32, context=16,
                                     dropout=0.0, batch_size=16, lr=1e-2, max_steps=30,
                                     eval_every=0, log_every=100, precision="fp32",
                                     device="cpu"))
    return out


def expected(run, **options):
    """The model's own weights over its own greedy translation of SOURCE."""
    from lmtool.inference.translate import encode_source, load_seq2seq, translate

    lm = load_seq2seq(run, device="cpu", precision="fp32")
    [out] = translate(lm, SOURCE)
    weights = lm.model.cross_attention(encode_source(lm, SOURCE).ids, out.tokens, **options)
    rows = len(out.tokens) + (out.stop_reason != "length")
    return weights[:rows].numpy(), out


@pytest.mark.parametrize(("name", "flags", "options"), [
    ("lstm", [], {}),
    ("transformer", [], {"layer": "mean"}),
    ("transformer", ["--layer", "1", "--head", "0"], {"layer": 1, "head": 0}),
])
def test_the_drawn_matrix_is_the_models_cross_attention(cli, runs, tmp_path, monkeypatch,
                                                        name, flags, options):
    from lmtool.plots import heatmap

    drawn = {}
    real = heatmap.heatmap_figure

    def spy(matrix, rows, columns, **kw):
        drawn.update(matrix=matrix, rows=rows, columns=columns)
        return real(matrix, rows, columns, **kw)

    monkeypatch.setattr(heatmap, "heatmap_figure", spy)
    png = tmp_path / "attention.png"
    result = cli("attention", runs[name], SOURCE, "-o", png, *flags, "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert result.stdout == ""
    want, out = expected(runs[name], **options)
    np.testing.assert_allclose(drawn["matrix"], want, atol=1e-6)
    np.testing.assert_allclose(drawn["matrix"].sum(axis=1), 1.0, atol=1e-5)
    assert drawn["columns"] == ["t8", "t9", "t10", "[EOS]"]  # the source, then [EOS]
    assert len(drawn["rows"]) == len(out.tokens) + (out.stop_reason != "length")
    assert f"translation: {out.text}" in result.stderr


def test_in_the_terminal_as_cells(cli, runs, monkeypatch):
    from lmtool.plots import terminal

    monkeypatch.setattr(terminal, "stdout_is_terminal", lambda: True)
    result = cli("attention", runs["lstm"], SOURCE, "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    shown = " ".join(result.stdout.split())  # the table wraps to the test's narrow width
    assert "Bahdanau attention" in shown and "rows: target" in shown
    assert "columns: 0 t8 1 t9 2 t10 3 [EOS]" in shown  # the source, under the table


def test_an_lstm_without_attention_is_refused_in_one_line(cli, runs, tmp_path):
    png = tmp_path / "attention.png"
    message = one_line(cli("attention", runs["lstm-none"], SOURCE, "-o", png))
    assert "no attention to show" in message and "--attention bahdanau" in message
    assert not png.exists()


@pytest.mark.parametrize(("name", "flags", "words"), [
    ("transformer", ["--layer", "2"], "--layer 2 is not one of"),
    ("transformer", ["--head", "5"], "--head 5 is not one of"),
    ("lstm", ["--layer", "0"], "one layer and one head"),
])
def test_layers_and_heads_out_of_range_are_refused(cli, runs, tmp_path, name, flags, words):
    png = tmp_path / "attention.png"
    assert words in one_line(cli("attention", runs[name], SOURCE, "-o", png, *flags))
    assert not png.exists()
