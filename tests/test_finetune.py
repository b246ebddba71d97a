"""`finetune lm`: ULMFiT stage 2 from Python and the CLI, and every bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from lm_fixtures import generate_text, make_shards

# epochs: a long plan, which max_steps (a cap) cuts short
BASE = dict(layers=2, heads=2, dim=32, context=32, batch_size=8, lr=3e-3, max_steps=80,
            epochs=1000, eval_every=0, log_every=20, dropout=0.0, optimizer="adamw")
BACKBONES = {  # (objective, arch, extra settings)
    "transformer": ("causal", "transformer", {}),
    "transformer-backward": ("causal", "transformer", {"backward": True}),
    # masked training learns 15% of the tokens per step: more steps, and the tiny
    # preset's Muon, which leaves its unigram plateau sooner (test_training.py)
    "masked": ("masked", "transformer", {"optimizer": "muon", "lr": 1e-2, "max_steps": 150}),
    "lstm": ("causal", "lstm", {"hidden": 64, "context": 24, "lr": 1e-2}),
    "lstm-backward": ("causal", "lstm", {"hidden": 64, "context": 24, "lr": 1e-2,
                                         "backward": True}),
}
FAST = ["--max-steps", "20", "--log-every", "10", "--eval-every", "0", "--quiet"]


def shifted_text(seed: int, paragraphs: int) -> str:
    """The fixture grammar with every word spelled backwards: the same characters (the
    char tokenizer knows them all) in another domain."""
    text = generate_text(seed, paragraphs)
    return "\n".join(" ".join(w[::-1] for w in line.split(" ")) for line in text.split("\n"))


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return make_shards(tmp_path_factory.mktemp("ft"), kind="char", vocab_size=64)


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    path = tmp_path_factory.mktemp("target") / "target.txt"
    path.write_text(shifted_text(seed=3, paragraphs=300))
    return path


@pytest.fixture(scope="module")
def bases(shards, tmp_path_factory):
    from lmtool.training import pretrain

    root, runs = tmp_path_factory.mktemp("bases"), {}

    def get(name: str):
        if name not in runs:
            objective, arch, extra = BACKBONES[name]
            settings = {**BASE, **extra}
            if arch == "lstm":
                settings.pop("heads")
            pretrain(shards, root / name, objective=objective, arch=arch, overrides=settings,
                     sample_chars=0)
            runs[name] = root / name
        return runs[name]

    return get


@pytest.mark.parametrize("backbone", list(BACKBONES))
def test_finetune_lowers_the_held_out_loss_on_a_shifted_domain(bases, target, tmp_path,
                                                                backbone):
    from lmtool.training import finetune_lm

    out = tmp_path / "ft"
    steps = 150 if backbone == "masked" else 40
    result = finetune_lm(bases(backbone), [target], out,
                         overrides=dict(max_steps=steps, epochs=1000, log_every=10,
                                            eval_every=0))
    before, after = result.before, result.after
    assert before["tokens"] == after["tokens"] > 0  # the same held-out tokens, in full
    assert after["loss"] < before["loss"] - 0.1, (before, after)
    assert ("accuracy" if backbone == "masked" else "perplexity") in after
    config = json.loads((out / "config.json").read_text())
    assert config["task"] == "lm" and config["base"]["run"] == str(bases(backbone).resolve())
    assert config["training"]["schedule"] == "stlr" and config["training"]["discriminative"] == 2.6
    assert config["model"] == json.loads((bases(backbone) / "config.json").read_text())["model"]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "val_loss" in r] == [0, steps]
    assert not [p for p in tmp_path.iterdir() if p.name != "ft"]  # no temporary shards left


def test_cli_reports_before_and_after_and_reads_labelled_text(bases, shards, tmp_path, cli):
    labelled = tmp_path / "rows.tsv"
    lines = [line for line in shifted_text(4, 60).split("\n") if line.strip()]
    labelled.write_text("label\ttext\n" + "".join(f"{i % 2}\t{t}\n" for i, t in enumerate(lines)))
    out = tmp_path / "ft"
    result = cli("finetune", "lm", bases("transformer"), labelled, "-o", out,
                 "--max-steps", "10", "--log-every", "5", "--format", "json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["before"]["perplexity"] > data["after"]["perplexity"]
    assert "held-out before: loss" in result.stderr and "held-out after:  loss" in result.stderr
    assert "eval step 0: val loss" in result.stderr
    # the rows' text alone was read: no label column in the training data
    config = json.loads((out / "config.json").read_text())
    tokens = config["data"]["train_tokens"] + config["data"]["val_tokens"]
    text_chars = sum(len(t) for t in lines)
    assert text_chars <= tokens <= text_chars + len(lines)  # one [EOS] per row
    info = cli("info", out)
    assert info.exit_code == 0 and "stlr" in info.stdout
    described = json.loads(cli("info", out, "--format", "json").stdout)
    assert described["task"] == "lm"
    assert described["base"]["run"] == str(bases("transformer").resolve())
    assert described["history"]["last_val_perplexity"] == pytest.approx(
        data["after"]["perplexity"])
    # a shard directory of the base's tokenizer is read as it is; --json, the old spelling
    # of --format json, still works (scripts and benchmarks/ulmfit.py pass it)
    again = cli("finetune", "lm", bases("transformer"), shards, "-o", tmp_path / "ft2", *FAST,
                "--json")
    assert again.exit_code == 0, again.stderr
    assert json.loads(again.stdout)["after"]["perplexity"] > 0


def test_resume_continues_and_refuses_a_changed_base(bases, target, tmp_path, cli):
    base = tmp_path / "base"
    shutil.copytree(bases("transformer"), base)
    out = tmp_path / "ft"
    assert cli("finetune", "lm", base, target, "-o", out, *FAST).exit_code == 0
    more = cli("finetune", "lm", base, target, "-o", out, *FAST, "--max-steps", "30",
               "--resume")
    assert more.exit_code == 0, more.stderr
    assert json.loads((out / "trainer" / "state.json").read_text())["step"] == 30
    other = tmp_path / "other.txt"
    other.write_text(shifted_text(9, 50))
    err = one_line(cli("finetune", "lm", base, other, "-o", out, *FAST, "--max-steps", "40",
                       "--resume"))
    assert "not what" in err and "fine-tuned on" in err
    from safetensors.torch import load_file, save_file

    weights = load_file(base / "model.safetensors")
    save_file({k: v * 1.01 for k, v in weights.items()}, str(base / "model.safetensors"))
    before = (out / "model.safetensors").read_bytes()
    err = one_line(cli("finetune", "lm", base, target, "-o", out, *FAST, "--max-steps", "40",
                       "--resume"))
    assert "base run" in err and "changed" in err
    assert (out / "model.safetensors").read_bytes() == before


# --- bad input: one line, exit 2, nothing written ---------------------------------------------


def one_line(result, code: int = 2) -> str:
    assert result.exit_code == code, (result.stdout, result.stderr)
    assert result.stderr.startswith("lmtool: error: ")
    assert result.stderr.count("\n") == 1, result.stderr
    return result.stderr


def nothing_written(tmp_path, *keep) -> bool:
    return sorted(p.name for p in tmp_path.iterdir()) == sorted(keep)


def test_the_run_is_missing_or_not_a_language_model(bases, target, tmp_path, cli):
    err = one_line(cli("finetune", "lm", tmp_path / "nope", target, "-o", tmp_path / "ft"))
    assert "does not exist" in err
    clf = tmp_path / "clf"
    shutil.copytree(bases("transformer"), clf)
    config = json.loads((clf / "config.json").read_text())
    (clf / "config.json").write_text(json.dumps({**config, "task": "classifier"}))
    err = one_line(cli("finetune", "lm", clf, target, "-o", tmp_path / "ft"))
    assert "not a language model" in err
    (tmp_path / "plain").mkdir()
    err = one_line(cli("finetune", "lm", tmp_path / "plain", target, "-o", tmp_path / "ft"))
    assert "not an lmtool run" in err
    assert nothing_written(tmp_path, "clf", "plain")


def test_the_text_is_missing_empty_binary_or_too_short(bases, tmp_path, cli):
    base = bases("transformer")
    out = tmp_path / "ft"
    err = one_line(cli("finetune", "lm", base, tmp_path / "missing.txt", "-o", out))
    assert "does not exist" in err
    (tmp_path / "empty.txt").write_text("\n\n  \n")
    err = one_line(cli("finetune", "lm", base, tmp_path / "empty.txt", "-o", out))
    assert "holds no text" in err
    (tmp_path / "blob.bin").write_bytes(bytes(range(256)) * 40)
    err = one_line(cli("finetune", "lm", base, tmp_path / "blob.bin", "-o", out))
    assert "no text" in err and "binary" in err
    (tmp_path / "short.txt").write_text("a cat.\n\nthe dog.\n\na hat.\n")
    err = one_line(cli("finetune", "lm", base, tmp_path / "short.txt", "-o", out))
    assert "too short" in err or "fewer than one batch" in err
    one = tmp_path / "one.txt"
    one.write_text(generate_text(1, 3).replace("\n\n", " "))
    err = one_line(cli("finetune", "lm", base, one, "-o", out, "--document", "file"))
    assert "single document" in err
    assert nothing_written(tmp_path, "empty.txt", "blob.bin", "short.txt", "one.txt")


def test_shards_made_with_another_tokenizer(bases, tmp_path, cli):
    other = make_shards(tmp_path / "o", kind="char", vocab_size=64, seed=7, paragraphs=40)
    err = one_line(cli("finetune", "lm", bases("transformer"), other, "-o", tmp_path / "ft"))
    assert "another tokenizer" in err
    assert not (tmp_path / "ft").exists()


def test_output_rules(bases, target, tmp_path, cli):
    base = bases("transformer")
    err = one_line(cli("finetune", "lm", base, target, "-o", base))
    assert "new run" in err
    out = tmp_path / "ft"
    assert cli("finetune", "lm", base, target, "-o", out, *FAST).exit_code == 0
    err = one_line(cli("finetune", "lm", base, target, "-o", out, *FAST))
    assert "--resume" in err and "--force" in err
    err = one_line(cli("finetune", "lm", base, target, "-o", out, *FAST, "--resume",
                       "--lr", "0.5"))
    assert "--lr 0.5" in err
    assert cli("finetune", "lm", base, target, "-o", out, *FAST, "--force").exit_code == 0


def test_help_has_examples(cli):
    result = cli("finetune", "lm", "--help")
    assert result.exit_code == 0
    assert "Examples:" in result.stdout and "lmtool finetune lm" in result.stdout


def test_quiet_keeps_the_result_paths_are_absolute_and_info_shows_the_base(
        bases, target, tmp_path, cli, monkeypatch):
    base = bases("transformer")
    monkeypatch.chdir(target.parent)  # the text given relative to where training runs
    out = tmp_path / "ft"
    result = cli("finetune", "lm", base, target.name, "-o", out, *FAST, "--max-steps", "1")
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""  # --quiet: no log
    before, after = result.stdout.splitlines()  # the result, on stdout even so
    assert before.startswith("held-out before: loss") and after.startswith("held-out after:")
    data = json.loads((out / "config.json").read_text())["data"]
    stored = Path(data["path"])
    assert data["sources"] == [str(stored)] and stored.is_absolute()
    assert stored.resolve() == target.resolve()
    info = cli("info", out).stdout
    assert f"base LM     {base.resolve()}" in info
    assert "history     1 step," in info
