"""Pictures: loss curves (lmtool plot), the sparkline in `info`, the confusion matrix
(evaluate --plot) and attention heatmaps (lmtool attention), in files and the terminal."""

from __future__ import annotations

import json
import shutil
import struct
import sys

import numpy as np
import pytest
from lm_fixtures import make_shards


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return make_shards(tmp_path_factory.mktemp("plots"), kind="char", vocab_size=64)


def _pretrain(shards, out, arch="transformer", **overrides):
    from lmtool.training import pretrain

    settings = dict(layers=2, heads=2, dim=32, context=32, batch_size=8, lr=3e-3,
                    max_steps=20, epochs=100, eval_every=10, eval_batches=2, log_every=2)
    pretrain(shards, out, objective="causal", arch=arch, overrides={**settings, **overrides},
             sample_chars=0)
    return out


@pytest.fixture(scope="module")
def run(shards, tmp_path_factory):
    return _pretrain(shards, tmp_path_factory.mktemp("runs") / "lm")


def _rows(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _copy(run, to, keep=lambda row: True):
    """A copy of `run` whose metrics.jsonl keeps the rows `keep` accepts."""
    shutil.copytree(run, to)
    rows = [r for r in _rows(run) if keep(r)]
    (to / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return to


def _lines(figure):
    """{gid: (x, y)} of every line the figure draws."""
    return {line.get_gid(): (list(line.get_xdata()), list(line.get_ydata()))
            for ax in figure.axes for line in ax.get_lines()}


# --- curves: the data drawn is the data logged --------------------------------------


def test_plotted_series_equal_the_metrics_file(run):
    from lmtool.plots.curves import curves_figure, ema, read_curves

    rows = _rows(run)
    train = [r for r in rows if "loss" in r]
    evals = [r for r in rows if "val_loss" in r]
    assert len(train) == 10 and len(evals) >= 2
    lines = _lines(curves_figure(read_curves([run], smooth=0.0, names=["lm"])))
    assert lines["lm:loss"] == ([r["step"] for r in train], [r["loss"] for r in train])
    assert lines["lm:val_loss"] == ([r["step"] for r in evals], [r["val_loss"] for r in evals])
    assert lines["lm:lr"][1] == [r["lr"] for r in train]
    # Smoothed: the raw values stay (faint), the drawn line is their moving average.
    lines = _lines(curves_figure(read_curves([run], smooth=0.6, names=["lm"])))
    assert lines["lm:loss:raw"][1] == [r["loss"] for r in train]
    assert lines["lm:loss"][1] == pytest.approx(ema([r["loss"] for r in train], 0.6))
    assert lines["lm:loss"][1] != lines["lm:loss:raw"][1]
    # Against tokens: a training row's own count, an evaluation row's read at its step.
    lines = _lines(curves_figure(read_curves([run], x="tokens", smooth=0.0, names=["lm"])))
    assert lines["lm:loss"][0] == [r["tokens"] for r in train]
    by_step = {r["step"]: r["tokens"] for r in train}
    assert lines["lm:val_loss"][0] == [by_step[r["step"]] for r in evals]
    lines = _lines(curves_figure(read_curves([run], x="time", smooth=0.0, names=["lm"])))
    assert lines["lm:loss"][0] == [r["elapsed_s"] for r in train]


def test_ema_is_debiased():
    from lmtool.plots.curves import ema

    assert ema([5.0, 5.0, 5.0], 0.9) == pytest.approx([5.0, 5.0, 5.0])  # not pulled to 0
    assert ema([1.0, 3.0], 0.0) == [1.0, 3.0]
    assert ema([0.0, 10.0], 0.5) == pytest.approx([0.0, 10.0 * 0.5 / 0.75])


def test_several_runs_get_several_series_named_in_the_legend(run, tmp_path):
    from lmtool.plots.curves import curves_figure, read_curves

    other = _copy(run, tmp_path / "other", keep=lambda r: r["step"] <= 10)
    figure = curves_figure(read_curves([run, other], names=["a", "b"]))
    lines = _lines(figure)
    assert {"a:loss", "a:val_loss", "b:loss", "b:val_loss", "a:lr", "b:lr"} <= set(lines)
    assert len(lines["b:loss:raw"][0]) == 5  # the copy's shorter history
    legend = [t.get_text() for t in figure.axes[0].get_legend().get_texts()]
    assert legend == ["a train", "a val", "b train", "b val"]
    assert figure.axes[0].get_lines()[0].get_color() != figure.axes[0].get_lines()[-1].get_color()


def test_a_classifier_gets_an_accuracy_panel(tmp_path):
    from clf_fixtures import make_classifier_run

    from lmtool.plots.curves import curves_figure, read_curves

    clf = make_classifier_run(tmp_path, "causal")
    rows = [{"step": s, "loss": 1.0 / s, "lr": 0.01, "tokens": 100 * s, "elapsed_s": s,
             "stage": 1 + s // 4} for s in range(1, 9)]
    rows += [{"step": s, "val_loss": 0.9 / s, "val_accuracy": 0.5 + s / 20, "epoch": s / 4,
              "elapsed_s": s} for s in (4, 8)]
    (clf / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    curves = read_curves([clf], smooth=0.0, names=["clf"])
    assert list(curves.panels) == ["loss", "accuracy", "learning rate"]
    figure = curves_figure(curves)
    assert [ax.get_title() for ax in figure.axes] == ["loss", "accuracy", "learning rate"]
    assert _lines(figure)["clf:val_accuracy"] == ([4, 8], [0.7, 0.9])


def test_a_run_without_evaluations_plots_training_loss_alone_with_a_note(run, tmp_path, cli):
    from lmtool.plots.curves import curves_figure, read_curves

    bare = _copy(run, tmp_path / "bare", keep=lambda r: "val_loss" not in r)
    curves = read_curves([bare], names=["bare"])
    assert curves.notes == ["bare has no evaluation rows yet: training loss alone"]
    assert [s.metric for s in curves.panels["loss"]] == ["loss"]
    assert "bare:val_loss" not in _lines(curves_figure(curves))
    result = cli("plot", bare, "-o", tmp_path / "bare.png")
    assert result.exit_code == 0, result.stderr
    assert "no evaluation rows yet: training loss alone" in result.stderr
    assert result.stdout == ""


def test_a_run_still_training_is_read_up_to_its_torn_last_line(run, tmp_path, cli,
                                                                 monkeypatch):
    from lmtool.plots.curves import read_curves

    live = _copy(run, tmp_path / "live")
    with open(live / "metrics.jsonl", "a") as f:
        f.write('{"step": 21, "loss": NaN, "lr": 0.001, "tokens": 9999}\n')  # diverged: no point
        f.write('{"step": 22, "loss": 1.2')  # a row being written
    curves = read_curves([live], smooth=0.0)
    assert curves.panels["loss"][0].x == [r["step"] for r in _rows(run) if "loss" in r]
    assert curves.panels["learning rate"][0].x[-1] == 21
    from lmtool.plots import terminal

    monkeypatch.setattr(terminal, "stdout_is_terminal", lambda: True)
    assert cli("plot", live).exit_code == 0


def test_nothing_logged_yet_is_one_line(run, tmp_path, cli):
    empty = _copy(run, tmp_path / "empty", keep=lambda r: False)
    result = cli("plot", empty, "-o", tmp_path / "e.png")
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "nothing to plot" in result.stderr
    assert not (tmp_path / "e.png").exists()
    result = cli("plot", tmp_path, "-o", tmp_path / "e.png")
    assert result.exit_code == 2 and "lmtool: error:" in result.stderr


# --- files -------------------------------------------------------------------------


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_files_are_written_in_the_format_the_suffix_names(run, tmp_path, cli):
    from lmtool.plots.curves import curves_figure, read_curves
    from lmtool.plots.files import DPI

    figure = curves_figure(read_curves([run]))
    width, height = (round(v * DPI) for v in figure.get_size_inches())
    out = tmp_path / "curves.png"
    result = cli("plot", run, "-o", out)
    assert result.exit_code == 0, result.stderr
    data = out.read_bytes()
    assert _png_size(data) == (width, height) and len(data) > 10_000
    svg = tmp_path / "curves.svg"
    assert cli("plot", run, "--x", "tokens", "-o", svg).exit_code == 0
    text = svg.read_text()
    assert text.startswith("<?xml") and "<svg" in text and "tokens seen" in text
    pdf = tmp_path / "curves.PDF"
    assert cli("plot", run, "-o", pdf).exit_code == 0
    assert pdf.read_bytes().startswith(b"%PDF-")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.PDF", "curves.png",
                                                          "curves.svg"]  # no temporaries


def test_outputs_follow_the_force_rule(run, tmp_path, cli):
    out = tmp_path / "curves.png"
    assert cli("plot", run, "-o", out).exit_code == 0
    before = out.read_bytes()
    result = cli("plot", run, "--no-smooth", "-o", out)
    assert result.exit_code == 2 and "already exists" in result.stderr
    assert out.read_bytes() == before
    assert cli("plot", run, "--no-smooth", "-o", out, "--force").exit_code == 0
    assert out.read_bytes() != before
    mine = tmp_path / "holiday.png"
    mine.write_bytes(b"\x89PNG\r\n\x1a\n a photo")
    result = cli("plot", run, "-o", mine, "--force")  # never replaces what lmtool did not write
    assert result.exit_code == 2 and "not a picture lmtool wrote" in result.stderr
    assert mine.read_bytes() == b"\x89PNG\r\n\x1a\n a photo"
    result = cli("plot", run, "-o", tmp_path / "curves.jpg")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert "cannot draw a .jpg file" in result.stderr


def test_a_missing_extra_is_one_line_saying_what_to_install(run, tmp_path, cli, monkeypatch):
    from lmtool.errors import EXIT_MISSING_EXTRA

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now fails
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    result = cli("plot", run, "-o", tmp_path / "c.png")
    assert result.exit_code == EXIT_MISSING_EXTRA == 4
    assert result.stderr == ("lmtool: error: matplotlib is not installed "
                             "(pip install 'lmtool[plot]')\n")
    assert not (tmp_path / "c.png").exists()


# --- the terminal ------------------------------------------------------------------


def test_no_picture_on_a_stdout_that_is_not_a_terminal(run, cli):
    result = cli("plot", run)
    assert result.exit_code == 2 and result.stdout == ""
    assert "not a terminal" in result.stderr and "-o curves.png" in result.stderr


def test_curves_in_the_terminal(run, tmp_path, cli, monkeypatch):
    from lmtool.plots import terminal

    other = _copy(run, tmp_path / "other")
    monkeypatch.setattr(terminal, "stdout_is_terminal", lambda: True)
    result = cli("plot", run, other, "--x", "time")
    assert result.exit_code == 0, result.stderr
    assert any("\u2801" <= c <= "\u28ff" for c in result.stdout)  # braille dots
    assert f"{run} train" in result.stdout and f"{other} val" in result.stdout
    assert "learning rate" in result.stdout and "time (s)" in result.stdout


def test_sparkline():
    from lmtool.plots.terminal import sparkline

    assert sparkline([3.0, 2.0, 1.0]) == "█▅▁"  # the middle of 8 levels rounds up
    assert sparkline([2.0, 2.0]) == "▁▁"
    assert sparkline([]) == ""
    line = sparkline(list(range(100, 0, -1)), width=10)
    assert len(line) == 10 and line[0] == "█" and line[-1] == "▁"


def test_info_shows_a_sparkline_on_a_terminal_only(run, cli, monkeypatch):
    from lmtool.plots import terminal

    piped = cli("info", run)
    assert piped.exit_code == 0 and "▁" not in piped.stdout
    monkeypatch.setattr(terminal, "stdout_is_terminal", lambda: True)
    shown = cli("info", run)
    spark = [line for line in shown.stdout.splitlines() if line.startswith("loss ")]
    assert len(spark) == 1 and "▁" in spark[0] and "→" in spark[0]
    assert shown.stdout.replace(spark[0] + "\n", "") == piped.stdout
    data = cli("info", run, "--format", "json")
    assert "▁" not in data.stdout
    json.loads(data.stdout)


def test_info_on_a_real_terminal_and_in_a_pipe(run):
    """The real check (sys.stdout.isatty), in a child process on a pseudo-terminal."""
    import os
    import pty
    import subprocess

    command = [sys.executable, "-m", "lmtool", "info", str(run)]
    piped = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert piped.returncode == 0 and "▁" not in piped.stdout
    leader, follower = pty.openpty()
    try:
        proc = subprocess.run(command, stdout=follower, stderr=subprocess.PIPE, timeout=120)
        os.close(follower)
        out = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the terminal closed: everything was read
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(leader)
    assert proc.returncode == 0, proc.stderr
    assert "loss        " in out.decode() and "▁" in out.decode()


# --- confusion matrix --------------------------------------------------------------


def test_confusion_figure_is_normalised_by_row_with_counts():
    from lmtool.plots.heatmap import confusion_figure

    counts = [[8, 2, 0], [1, 1, 0], [0, 0, 0]]
    figure = confusion_figure(["a", "b", "c"], counts)
    ax = figure.axes[0]
    shares = ax.get_images()[0].get_array()
    assert np.allclose(shares, [[0.8, 0.2, 0], [0.5, 0.5, 0], [0, 0, 0]])
    assert sorted(t.get_text() for t in ax.texts) == ["1", "1", "2", "8"]  # 0s left blank
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b", "c"]


def test_confusion_figure_stays_readable_at_77_classes():
    from lmtool.plots.heatmap import TEXT_MIN_PT, confusion_figure

    rng = np.random.default_rng(0)
    counts = np.diag(rng.integers(5, 40, 77)) + rng.integers(0, 3, (77, 77))
    labels = [f"intent_name_{i}" for i in range(77)]
    figure = confusion_figure(labels, counts)
    width, height = figure.get_size_inches()
    assert 10 < width < 20 and 10 < height < 20  # a page, not a poster nor a stamp
    ax = figure.axes[0]
    assert len(ax.get_xticklabels()) == 77
    assert all(t.get_fontsize() >= 4.5 for t in ax.get_xticklabels())
    assert ax.texts and all(t.get_fontsize() >= TEXT_MIN_PT for t in ax.texts)


def test_evaluate_plot_draws_the_confusion_matrix(tmp_path, cli):
    from clf_fixtures import make_classifier_run

    clf = make_classifier_run(tmp_path, "causal")
    labelled = tmp_path / "test.tsv"
    labelled.write_text("label\ttext\n" + "".join(
        f"{'pos' if i % 2 else 'neg'}\tthe cat sees a dog {i}\n" for i in range(12)))
    out = tmp_path / "confusion.png"
    result = cli("evaluate", clf, labelled, "--plot", out, "--format", "json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["examples"] == 12  # stdout as without --plot
    _png_size(out.read_bytes())
    result = cli("evaluate", clf, labelled, "--plot", out)
    assert result.exit_code == 2 and "already exists" in result.stderr


# --- attention ---------------------------------------------------------------------


@pytest.mark.parametrize("objective", ["causal", "masked"])
def test_explicit_attention_equals_the_sdpa_path(objective):
    import torch

    from lmtool.models import build_model
    from lmtool.models.config import ModelConfig

    torch.manual_seed(0)
    model = build_model(ModelConfig(vocab_size=40, objective=objective, layers=2, heads=2,
                                    dim=16, context=16, dropout=0.0)).eval()
    ids = torch.randint(7, 40, (2, 9))
    real = torch.ones(2, 9, dtype=torch.bool)
    real[1, 6:] = False  # a padded row
    with torch.no_grad():
        expected = [model.encode(ids), model.encode(ids, real=real)]
        for block in model.blocks:
            block.attn.keep_weights = True
        got = [model.encode(ids)]
        weights = model.blocks[1].attn.weights  # (B, H, T, T)
        got.append(model.encode(ids, real=real))
        padded = model.blocks[1].attn.weights
    for e, g in zip(expected, got, strict=True):
        torch.testing.assert_close(g, e, atol=1e-5, rtol=1e-5)
    assert weights.shape == (2, 2, 9, 9)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 2, 9))
    if objective == "causal":
        assert (weights.triu(1) == 0).all()  # no query sees a later key
    assert (padded[1, :, :6, 6:] == 0).all()  # nor a padding key


def test_attention_maps_of_a_run(run):
    from lmtool.inference.attention import attention_maps

    maps = attention_maps(run, "the cat sees a dog.", device="cpu")
    T = len("the cat sees a dog.") + 1  # a char tokenizer: one token a character, [EOS] first
    assert maps.weights.shape == (2, 2, T, T) and maps.tokens[:3] == ["[EOS]", "t", "h"]
    assert np.allclose(maps.weights.sum(-1), 1.0, atol=1e-5)
    assert np.allclose(maps.select(), maps.weights.mean(axis=(0, 1)))
    assert np.allclose(maps.select(1, 0), maps.weights[1, 0])
    assert np.allclose(maps.select(0).sum(-1), 1.0, atol=1e-5)
    from lmtool.checkpoint import load_checkpoint

    model = load_checkpoint(run).model
    assert all(not b.attn.keep_weights and b.attn.weights is None for b in model.blocks)


def test_attention_command(run, shards, tmp_path, cli, monkeypatch):
    out = tmp_path / "attention.svg"
    result = cli("attention", run, "the cat sees a dog.", "--layer", "1", "--head", "0",
                 "-o", out)
    assert result.exit_code == 0, result.stderr
    assert out.read_text().startswith("<?xml") and "layer 1, head 0" in out.read_text()
    result = cli("attention", run, "the cat.", "--layer", "2", "-o", tmp_path / "x.png")
    assert result.exit_code == 2 and "--layer 2 is not one of the model's layers 0..1" \
        in result.stderr
    result = cli("attention", run, "the cat.")
    assert result.exit_code == 2 and "not a terminal" in result.stderr
    from lmtool.plots import terminal

    monkeypatch.setattr(terminal, "stdout_is_terminal", lambda: True)
    result = cli("attention", run, "the cat.", "--layer", "0")
    assert result.exit_code == 0, result.stderr
    first = next(line for line in result.stdout.splitlines() if "[EOS]" in line)
    assert first.split()[-1] == "100"  # the first token can only attend to itself
    lstm = _pretrain(shards, tmp_path / "awd", arch="lstm", layers=1, hidden=16, dim=8,
                     max_steps=1, batch_size=2, context=8)
    result = cli("attention", lstm, "the cat.", "-o", tmp_path / "a.png")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert "AWD-LSTM: it has no attention" in result.stderr
