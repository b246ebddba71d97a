"""`finetune classifier`: the ULMFiT recipe through the one trainer, resume, bad input."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest
import torch
from lm_fixtures import make_shards
from safetensors.torch import load_file

from lmtool.checkpoint import load_checkpoint
from lmtool.errors import BadInput
from lmtool.training import finetune_classifier, pretrain
from lmtool.training.trainer import Callback

TINY_LM = dict(layers=2, heads=2, dim=16, hidden=24, context=16, batch_size=4, max_steps=2)
WORDS = {"pos": ["sun", "warm", "glad", "kind"], "neg": ["rain", "cold", "sad", "mean"]}


def labelled_rows(n: int, seed: int = 0, labels=("pos", "neg")) -> list[tuple[str, str]]:
    """Rows whose label a model can learn: its words come from the label's list."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = labels[i % len(labels)]
        words = WORDS.get(label, ["grey", "plain"])
        rows.append((label, " ".join(rng.choice(words) for _ in range(rng.randint(2, 8)))))
    return rows


def write_tsv(path, rows) -> str:
    path.write_text("label\ttext\n" + "".join(f"{lab}\t{text}\n" for lab, text in rows))
    return str(path)


@pytest.fixture(scope="module")
def lms(tmp_path_factory):
    """Tiny language models: AWD-LSTM, causal and masked Transformer (a few steps)."""
    root = tmp_path_factory.mktemp("lms")
    data = make_shards(root, paragraphs=60)
    out = {}
    for name, arch, objective in (("lstm", "lstm", "causal"),
                                  ("causal", "transformer", "causal"),
                                  ("masked", "transformer", "masked")):
        out[name] = root / name
        pretrain(data, out[name], arch=arch, objective=objective, sample_chars=0,
                 overrides=dict(TINY_LM, eval_every=0))
    out["root"] = root
    return out


class Weights(Callback):
    """A copy of every parameter at each evaluation (the end of each epoch)."""

    def __init__(self):
        self.snapshots = []

    def on_eval(self, trainer, row):
        self.snapshots.append({n: p.detach().clone() for n, p in trainer.model.named_parameters()})


@pytest.mark.parametrize("kind", ["lstm", "masked"])
def test_gradual_unfreezing_epoch_by_epoch(lms, tmp_path, kind):
    """Epoch e trains the top e layer groups: the head alone first, the embedding only
    in the last stage, which is two epochs long; the schedule reaches every group."""
    data = write_tsv(tmp_path / "train.tsv", labelled_rows(40))
    weights = Weights()
    result = finetune_classifier(lms[kind], data, tmp_path / "clf", callbacks=[weights],
                                 overrides=dict(batch_size=8, device="cpu", unfreeze_every=1))
    groups = 4  # embedding, 2 layers, head
    assert [r["trainable_groups"] for r in result.history] == [1, 2, 3, 4, 4]
    assert [r["epoch"] for r in result.history] == [1, 2, 3, 4, 5]
    names = list(weights.snapshots[0])
    layer_of = {}  # parameter name → its layer group, bottom (0) to top (3)
    model = load_checkpoint(tmp_path / "clf", task="classifier").model
    by_id = {id(p): n for n, p in model.named_parameters()}
    for g, modules in enumerate(model.layer_groups()):
        for m in modules:
            for p in m.parameters():
                layer_of[by_id[id(p)]] = g
    assert set(layer_of) == set(names)
    for epoch in range(1, groups):
        before, after = weights.snapshots[epoch - 1], weights.snapshots[epoch]
        for name in names:
            moved = not torch.equal(before[name], after[name])
            trains = layer_of[name] >= groups - 1 - epoch
            if not trains:
                assert not moved, f"{name} (group {layer_of[name]}) moved in epoch {epoch + 1}"
        # the group unfrozen this epoch did move
        fresh = [n for n in names if layer_of[n] == groups - 1 - epoch]
        assert any(not torch.equal(before[n], after[n]) for n in fresh)


def test_from_scratch_keeps_the_architecture_not_the_weights(lms, tmp_path):
    """The backbone of a --from-scratch classifier is a seeded random one, not the
    base run's; before the first step, a normal one is the base's."""
    data = write_tsv(tmp_path / "train.tsv", labelled_rows(40))
    base = load_file(str(lms["lstm"] / "model.safetensors"))
    opts = dict(batch_size=8, device="cpu", max_steps=1)
    backbones = {}
    for name, scratch, seed in (("ulmfit", False, 0), ("scratch", True, 0),
                                ("again", True, 0), ("seed1", True, 1)):
        first = FirstStep()
        finetune_classifier(lms["lstm"], data, tmp_path / name, from_scratch=scratch,
                            overrides=dict(opts, seed=seed), callbacks=[first])
        backbones[name] = {k.removeprefix("backbone."): v for k, v in first.before.items()
                           if k.startswith("backbone.")}
        config = json.loads((tmp_path / name / "config.json").read_text())
        assert config["base"]["from_scratch"] is scratch
    assert backbones["ulmfit"].keys() <= base.keys()
    assert all(torch.equal(v, base[k]) for k, v in backbones["ulmfit"].items())
    assert all(not torch.equal(v, base[k]) for k, v in backbones["scratch"].items()
               if v.dim() > 1)
    assert all(torch.equal(v, backbones["again"][k]) for k, v in backbones["scratch"].items())
    assert not torch.equal(backbones["scratch"]["embedding.weight"],
                           backbones["seed1"]["embedding.weight"])


def test_resume_matches_an_uninterrupted_run(lms, tmp_path):
    """A run stopped after its second epoch (by a crash), in the middle of a stage, and
    resumed ends with the same rates, losses, weights, best epoch and held-out figures
    as a run never stopped."""
    data = write_tsv(tmp_path / "train.tsv", labelled_rows(40, seed=1))
    opts = dict(batch_size=8, device="cpu", epochs=4)
    whole = finetune_classifier(lms["lstm"], data, tmp_path / "whole", overrides=opts)

    class Crash(Callback):
        def on_step(self, trainer):
            if trainer.state.step == 12:  # in the third epoch (5 steps each)
                raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError, match="simulated crash"):
        finetune_classifier(lms["lstm"], data, tmp_path / "cut", overrides=opts,
                            callbacks=[Crash()])
    resumed = finetune_classifier(lms["lstm"], data, tmp_path / "cut", resume=True,
                                  overrides=dict(device="cpu"))
    assert resumed.resumed_from == 10
    # step 10 is in the middle of a stage: its cycle goes on where it was
    stages = json.loads((tmp_path / "cut" / "config.json").read_text())["stages"]["stages"]
    ends = [sum(st["steps"] for st in stages[: k + 1]) for k in range(len(stages))]
    assert ends == [4, 8, 12, 20] and 8 < 10 < 12

    def train_rows(run):
        return [(r["step"], r["stage"], r["lr"], r["loss"])
                for r in map(json.loads, (run / "metrics.jsonl").open()) if "loss" in r]

    assert train_rows(tmp_path / "cut") == train_rows(tmp_path / "whole")
    assert [r["val_loss"] for r in resumed.history] == [r["val_loss"] for r in whole.history]
    assert resumed.best_epoch == whole.best_epoch
    a = load_file(str(tmp_path / "whole" / "model.safetensors"))
    b = load_file(str(tmp_path / "cut" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_best_epoch_is_the_model_kept(lms, tmp_path):
    from lmtool.inference.evaluate import evaluate_classifier

    rows = labelled_rows(60, seed=2)
    train = write_tsv(tmp_path / "train.tsv", rows[:40])
    valid = write_tsv(tmp_path / "valid.tsv", rows[40:])
    result = finetune_classifier(lms["causal"], train, tmp_path / "clf", valid=valid,
                                 overrides=dict(batch_size=8, device="cpu", lr=0.05))
    best = max(result.history, key=lambda r: (r["val_accuracy"], -r["val_loss"]))
    assert result.best["step"] == best["step"]
    scored = evaluate_classifier(tmp_path / "clf", valid, device="cpu", precision="fp32")
    assert scored["accuracy"] == pytest.approx(best["val_accuracy"])
    config = json.loads((tmp_path / "clf" / "config.json").read_text())
    assert config["task"] == "classifier" and config["classifier"]["labels"] == ["neg", "pos"]
    assert config["best"]["step"] == best["step"]


def test_valid_labels_the_training_set_lacks_count_as_wrong(lms, tmp_path):
    train = write_tsv(tmp_path / "train.tsv", labelled_rows(24))
    valid = write_tsv(tmp_path / "valid.tsv", labelled_rows(9, labels=("pos", "neg", "meh")))
    result = finetune_classifier(lms["lstm"], train, tmp_path / "clf", valid=valid,
                                 overrides=dict(batch_size=8, device="cpu", epochs=1))
    assert result.history[-1]["val_accuracy"] <= 6 / 9
    assert any("meh" in w for w in result.warnings)


def test_class_weights_auto(lms, tmp_path):
    rows = [("pos", "sun warm")] * 30 + [("neg", "rain cold")] * 6
    data = write_tsv(tmp_path / "train.tsv", rows)
    finetune_classifier(lms["lstm"], data, tmp_path / "clf", class_weights_mode="auto",
                        overrides=dict(batch_size=8, device="cpu", epochs=1))
    config = json.loads((tmp_path / "clf" / "config.json").read_text())
    assert config["data"]["class_weights"] == "auto"


@pytest.mark.parametrize(
    "rows, message",
    [
        ([("pos", "a"), ("pos", "b"), ("pos", "c")], "holds one class only"),
        ([("pos", "a")], "holds one document"),
    ],
)
def test_bad_labelled_data(lms, tmp_path, rows, message):
    data = write_tsv(tmp_path / "train.tsv", rows)
    with pytest.raises(BadInput, match=message):
        finetune_classifier(lms["lstm"], data, tmp_path / "clf")
    assert not (tmp_path / "clf").exists()


def test_a_classifier_is_no_base_for_a_classifier(lms, tmp_path):
    data = write_tsv(tmp_path / "train.tsv", labelled_rows(20))
    finetune_classifier(lms["lstm"], data, tmp_path / "clf",
                        overrides=dict(batch_size=8, device="cpu", epochs=1))
    with pytest.raises(BadInput, match="is a classifier, not a language model"):
        finetune_classifier(tmp_path / "clf", data, tmp_path / "clf2")


# --- the CLI -------------------------------------------------------------------------------


def test_cli_finetune_classifier_then_classify_evaluate_info(cli, lms, tmp_path):
    rows = labelled_rows(48, seed=3)
    train = write_tsv(tmp_path / "train.tsv", rows[:36])
    test = write_tsv(tmp_path / "test.tsv", rows[36:])
    r = cli("finetune", "classifier", lms["lstm"], train, "-o", tmp_path / "clf",
            "--batch-size", "8", "--device", "cpu", "--unfreeze-every", "1", "--format", "json")
    assert r.exit_code == 0, r.stderr
    result = json.loads(r.stdout)  # stdout holds this one object, the figures on stderr too
    assert result["labels"] == ["neg", "pos"] and len(result["history"]) == 5
    assert result["best"] in result["history"]
    epochs = [line for line in r.stderr.splitlines() if line.startswith("epoch ")]
    assert len(epochs) == 5 and epochs[0].startswith("epoch 1/5: train loss")
    assert "1/4 layer groups" in epochs[0] and "4/4 layer groups" in epochs[3]
    assert "best epoch" in r.stderr
    r = cli("evaluate", tmp_path / "clf", test, "--format", "json", "--device", "cpu")
    assert r.exit_code == 0 and 0 <= json.loads(r.stdout)["accuracy"] <= 1
    r = cli("classify", tmp_path / "clf", "-", "--per-line", input="sun warm\nrain cold\n")
    assert r.exit_code == 0 and len(r.stdout.splitlines()) == 2
    r = cli("info", tmp_path / "clf")
    assert r.exit_code == 0
    assert "labels      neg, pos" in r.stdout and str(lms["lstm"].resolve()) in r.stdout
    info = json.loads(cli("info", tmp_path / "clf", "--format", "json").stdout)
    assert [e["trainable_groups"] for e in info["classifier"]["epochs"]] == [1, 2, 3, 4, 4]


@pytest.mark.parametrize("every, epochs, groups", [
    # 0: as long as the default plan, whose stages are MIN_STAGE_STEPS (100) steps when
    # an epoch is shorter: 25 epochs of 4 steps here, 5 stage lengths.
    ("0", 125, [4] * 125), ("0.5", 2.5, [2, 4, 4]), ("2", 10, [1, 1, 2, 2, 3, 3] + [4] * 4)])
def test_cli_unfreeze_every(cli, lms, tmp_path, every, epochs, groups):
    """--unfreeze-every sets the period of gradual unfreezing and, without a limit, the
    run's length (a stage per group, the last twice as long); 0 trains every group from
    the first step, as long as the gradual plan. Each
    epoch's row counts the groups that trained in its last step."""
    train = write_tsv(tmp_path / "train.tsv", labelled_rows(32, seed=4))
    r = cli("finetune", "classifier", lms["lstm"], train, "-o", tmp_path / "clf",
            "--batch-size", "8", "--device", "cpu", "--unfreeze-every", every, "--format", "json")
    assert r.exit_code == 0, r.stderr
    history = json.loads(r.stdout)["history"]
    assert history[-1]["epoch"] == epochs
    assert [row["trainable_groups"] for row in history] == groups


def test_cli_bad_inputs(cli, lms, tmp_path):
    data = write_tsv(tmp_path / "train.tsv", labelled_rows(20))
    (tmp_path / "weird.dat").write_text("no header here\nat all\n")
    cases = [
        (["finetune", "classifier", lms["lstm"], tmp_path / "weird.dat", "-o", tmp_path / "x"],
         "cannot tell the format"),
        (["finetune", "classifier", lms["lstm"], data, "-o", tmp_path / "x",
          "--class-weights", "sometimes"], "sometimes"),
        (["classify", lms["lstm"], "-"], "is a language model, not a classifier"),
        (["finetune", "classifier", lms["lstm"], data, "-o", tmp_path / "x",
          "--unfreeze-every", "-1"], "--unfreeze-every must not be negative"),
    ]
    from clf_fixtures import make_classifier_run

    clf = make_classifier_run(tmp_path, "lstm")
    cases += [
        (["finetune", "lm", clf, data, "-o", tmp_path / "x"], "is a classifier, not a language"),
        (["finetune", "classifier", clf, data, "-o", tmp_path / "x"],
         "is a classifier, not a language"),
        (["evaluate", clf, data, "--split", "train"], None),  # fine: a classifier evaluates
    ]
    for args, message in cases:
        if message is None:
            assert cli(*args).exit_code == 0
            continue
        r = cli(*args, input="x\n")
        assert r.exit_code == 2, (args, r.stderr)
        assert message in r.stderr and r.stdout == ""
    assert not (tmp_path / "x").exists()


# --- the recipe works: a tiny end-to-end ULMFiT run on corpora/reviews ---------------------


def keyword_baselines(rows) -> dict[str, float]:
    """Accuracy of the majority class and of the keyword rules corpora/README.md
    describes ("positive iff a positive word occurs", "more positive than negative
    words"), on `rows`."""
    import re
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "corpora"
    sys.path.insert(0, str(root))
    try:
        import make_reviews
    finally:
        sys.path.remove(str(root))
    pos, neg = set(make_reviews.POS), set(make_reviews.NEG) | {"not", "never", "hardly"}

    def accuracy(rule) -> float:
        hits = sum(rule(re.findall(r"[a-z]+", text.lower())) == (label == "positive")
                   for label, text in rows)
        return hits / len(rows)

    labels = [label for label, _ in rows]
    return {
        "majority": max(labels.count(x) for x in set(labels)) / len(labels),
        "any positive word": accuracy(lambda ws: any(w in pos for w in ws)),
        "more positive words": accuracy(
            lambda ws: sum(w in pos for w in ws) > sum(w in neg for w in ws)),
    }


def test_tiny_ulmfit_beats_the_majority_and_keyword_baselines(tmp_path):
    """Stage 1 (pre-train a 2-layer, 32-wide Transformer on the unlabelled reviews),
    stage 3 (the classifier, ULMFiT's defaults), scored on the held-out test set, where
    no keyword rule does better than 0.56."""
    from pathlib import Path

    from lmtool.inference.evaluate import evaluate_classifier
    from lmtool.text.encode import encode_corpus
    from lmtool.text.labelled import iter_labelled
    from lmtool.text.tokenizer import save_tokenizer, train_tokenizer

    reviews = Path(__file__).resolve().parent.parent / "corpora" / "reviews"
    tok = tmp_path / "tok.json"
    save_tokenizer(train_tokenizer([reviews / "unlabelled.txt"], kind="bpe", vocab_size=1000),
                   tok)
    encode_corpus([reviews / "unlabelled.txt"], tok, tmp_path / "data", val_fraction=0.1,
                  seed=0)
    pretrain(tmp_path / "data", tmp_path / "lm", sample_chars=0, overrides=dict(
        layers=2, heads=2, dim=32, context=32, max_steps=300, eval_every=0, device="cpu"))
    finetune_classifier(tmp_path / "lm", reviews / "train.tsv", tmp_path / "clf",
                        overrides=dict(device="cpu"))
    test = [(e.label, e.text) for e in iter_labelled(reviews / "test.tsv")]
    accuracy = evaluate_classifier(tmp_path / "clf", reviews / "test.tsv",
                                   device="cpu")["accuracy"]
    baselines = keyword_baselines(test)
    assert max(baselines.values()) < 0.6
    assert accuracy > max(baselines.values()) + 0.05, (accuracy, baselines)


def test_class_weights_change_the_loss_and_the_predictions():
    """Balanced weights (n / (K n_c)) weigh each class the same in the loss: a model
    trained with them on a 9:1 set finds far more of the rare class than one without."""
    import torch.nn.functional as F

    from lmtool.training.classifier import class_weights
    from lmtool.training.objectives import Batch, ClassificationObjective

    gen = torch.Generator().manual_seed(0)
    labels = torch.tensor([0] * 900 + [1] * 100)
    x = torch.randn(1000, generator=gen) + labels.float()  # the rare class sits 1 sd higher
    batch = Batch(x[:, None], labels, torch.ones(1000, 1, dtype=torch.bool))
    weights = class_weights(labels.bincount().tolist())
    assert weights == pytest.approx([1000 / (2 * 900), 1000 / (2 * 100)])

    class OneFeature(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(1, 2)

        def forward(self, inputs, lengths):
            return self.linear(inputs.float())  # (B, 2)

    def train(objective) -> OneFeature:
        torch.manual_seed(0)
        model = OneFeature()
        opt = torch.optim.Adam(model.parameters(), lr=0.05)
        for _ in range(300):
            opt.zero_grad()
            objective.loss(model, batch)[0].backward()
            opt.step()
        return model

    plain = ClassificationObjective(["a", "b"])
    weighted = ClassificationObjective(["a", "b"], weights)
    model = train(plain)
    logits = model(batch.inputs, None).detach()
    w = torch.tensor(weights)[labels]
    ce = F.cross_entropy(logits, labels, reduction="none")
    assert plain.loss(model, batch)[0].item() == pytest.approx(ce.mean().item(), rel=1e-5)
    assert weighted.loss(model, batch)[0].item() == pytest.approx(
        (w * ce).sum().item() / w.sum().item(), rel=1e-5)
    assert weighted.loss(model, batch)[0].item() > plain.loss(model, batch)[0].item() + 0.05

    def rare_recall(model) -> float:
        predicted = model(batch.inputs, None).argmax(-1)
        return (predicted[labels == 1] == 1).float().mean().item()

    assert rare_recall(train(plain)) < 0.3
    assert rare_recall(train(weighted)) > 0.6


def test_cli_quiet_text_prints_the_best_epoch_and_stores_absolute_paths(
        cli, lms, tmp_path, monkeypatch):
    train = write_tsv(tmp_path / "train.tsv", labelled_rows(32, seed=5))
    err = cli("finetune", "classifier", lms["lstm"], train, "-o", lms["lstm"])
    assert err.exit_code == 2 and "-o must name a new run" in err.stderr
    monkeypatch.chdir(tmp_path)  # the data given relative to where training runs
    r = cli("finetune", "classifier", lms["lstm"], "train.tsv", "-o", "clf", "--batch-size",
            "8", "--device", "cpu", "--epochs", "1", "--quiet")
    assert r.exit_code == 0, r.stderr
    assert r.stderr == ""
    assert r.stdout.startswith("clf: best epoch 1 of 1: val accuracy ")  # the result
    data = json.loads((tmp_path / "clf" / "config.json").read_text())["data"]
    assert Path(data["path"]).is_absolute() and data["valid"] is None
    assert Path(data["path"]).resolve() == Path(train).resolve()


# --- the plan of stages (training/freezing.py) -----------------------------------------------


def test_each_stage_is_a_slanted_triangle_at_its_own_peak(lms, tmp_path):
    """The top group's rate restarts at each stage: peak/32, a short rise, a long fall,
    at fastai's peaks 2e-2, 1e-2, 5e-3, then 1e-3 for twice as long; every training row
    of metrics.jsonl names its stage, and config.json holds the plan."""
    from lmtool.training.schedules import stlr

    data = write_tsv(tmp_path / "train.tsv", labelled_rows(60, seed=6))
    finetune_classifier(lms["lstm"], data, tmp_path / "clf",
                        overrides=dict(batch_size=4, device="cpu", unfreeze_every=1.0))
    rows = [json.loads(line) for line in (tmp_path / "clf" / "metrics.jsonl").open()]
    rows = [r for r in rows if "loss" in r]
    config = json.loads((tmp_path / "clf" / "config.json").read_text())
    spe = config["data"]["steps_per_epoch"]
    plan = config["stages"]["stages"]
    assert [(s["steps"], s["trainable"]) for s in plan] == [(spe, 1), (spe, 2), (spe, 3),
                                                            (2 * spe, 4)]
    assert [s["peak"] for s in plan] == pytest.approx([2e-2, 1e-2, 5e-3, 1e-3])
    assert [r["step"] for r in rows] == list(range(1, 5 * spe + 1))
    for k, stage in enumerate(plan, start=1):
        rates = [r["lr"] for r in rows if r["stage"] == k]
        n = stage["steps"]
        assert rates == pytest.approx([stlr(t / (n - 1), stage["peak"]) for t in range(n)])
        top = rates.index(max(rates))
        assert rates[0] == pytest.approx(stage["peak"] / 32) and 0 < top < n / 4
        assert all(a < b for a, b in zip(rates[:top], rates[1 : top + 1], strict=True))
        assert all(a > b for a, b in zip(rates[top:], rates[top + 1 :], strict=False))


@pytest.mark.parametrize("epochs", [1, 2])
def test_every_group_trains_under_any_epochs(lms, tmp_path, epochs):
    """--epochs shorter than the plan compresses it: still every layer group trains,
    the embedding included (before: the head alone with --epochs 1)."""
    data = write_tsv(tmp_path / "train.tsv", labelled_rows(40, seed=7))
    result = finetune_classifier(lms["lstm"], data, tmp_path / "clf",
                                 overrides=dict(batch_size=8, device="cpu", epochs=epochs))
    assert result.history[-1]["trainable_groups"] == 4
    base = load_file(str(lms["lstm"] / "model.safetensors"))
    weights = load_file(str(tmp_path / "clf" / "model.safetensors"))
    backbone = {k.removeprefix("backbone."): v for k, v in weights.items()
                if k.startswith("backbone.")}
    assert backbone and all(not torch.equal(v, base[k]) for k, v in backbone.items())


class FirstStep(Callback):
    """The parameters before the first step and which of them moved in it."""

    def __init__(self):
        self.before: dict | None = None
        self.moved: dict = {}

    def on_start(self, trainer):
        self.before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}

    def on_step(self, trainer):
        if trainer.state.step == 1:
            self.moved = {n: not torch.equal(p.detach(), self.before[n])
                          for n, p in trainer.model.named_parameters()}


def test_from_scratch_every_group_trains_from_the_first_step(lms, tmp_path):
    """Random features are not worth a stage of training the head alone on them."""
    data = write_tsv(tmp_path / "train.tsv", labelled_rows(40, seed=8))
    seen = {}
    for name, scratch in (("scratch", True), ("ulmfit", False)):
        first = FirstStep()
        finetune_classifier(lms["lstm"], data, tmp_path / name, from_scratch=scratch,
                            callbacks=[first], overrides=dict(batch_size=8, device="cpu",
                                                              epochs=5))
        seen[name] = first.moved
        config = json.loads((tmp_path / name / "config.json").read_text())
        assert len(config["stages"]["stages"]) == (1 if scratch else 4)
    assert seen["scratch"] and all(seen["scratch"].values())
    assert all(seen["ulmfit"][n] == n.startswith("head.") for n in seen["ulmfit"])


def test_cli_prints_the_plan_and_what_the_limits_do_before_training(cli, lms, tmp_path):
    train = write_tsv(tmp_path / "train.tsv", labelled_rows(32, seed=9))
    r = cli("finetune", "classifier", lms["lstm"], train, "-o", tmp_path / "a",
            "--batch-size", "8", "--device", "cpu", "--max-steps", "2")
    assert r.exit_code == 0, r.stderr
    lines = r.stderr.splitlines()
    first_epoch = next(i for i, line in enumerate(lines) if line.startswith("epoch "))
    warned = next(i for i, line in enumerate(lines) if "unfreeze several at a time" in line)
    plan = next(i for i, line in enumerate(lines) if line.startswith("plan: 2 stage(s)"))
    assert warned < plan < first_epoch and lines[warned].startswith("lmtool: warning: ")
    assert "stage 2/2: steps 2-2" in lines[plan + 2] and "top 4/4 layer groups" in lines[
        plan + 2]
    assert r.stdout.count("\n") == 1 and "best epoch" in r.stdout  # the result alone
    # resumed with a longer limit: the plan stays; the log says what comes after it
    r = cli("finetune", "classifier", lms["lstm"], train, "-o", tmp_path / "a", "--resume",
            "--max-steps", "4")
    assert r.exit_code == 0, r.stderr
    assert "plan: 2 stage(s)" in r.stderr and "steps 3-4: after the plan" in r.stderr
    # a time limit cannot be planned in steps: it is said at the start, and at the end
    # which groups the clock left frozen
    r = cli("finetune", "classifier", lms["lstm"], train, "-o", tmp_path / "b",
            "--batch-size", "8", "--device", "cpu", "--max-time", "0.001")
    assert r.exit_code == 0, r.stderr
    assert "--max-time 0.001 s stops the plan early" in r.stderr
    assert re.search(r"warning: --max-time stopped the run at step \d+, before the plan's "
                     r"last stage: the lowest 3 of 4 layer groups never trained", r.stderr)


def test_epoch_counts_read_as_a_person_writes_them():
    from lmtool.cli.finetune_classifier import epoch_count

    assert [epoch_count(x) for x in (3.0, 2.5, 0.5263, 0.526316)] == ["3", "2.5", "0.53", "0.53"]


def test_cli_ar_tar_add_to_the_training_loss(cli, lms, tmp_path):
    """The LSTM classifier's AR/TAR (the base run's 2 and 1) add to the training loss;
    --ar 0 --tar 0 turn them off: the same first batch and weights, a lower loss."""
    train = write_tsv(tmp_path / "train.tsv", labelled_rows(32, seed=4))
    first = {}
    for name, extra in (("default", []), ("off", ["--ar", "0", "--tar", "0"])):
        r = cli("finetune", "classifier", lms["lstm"], train, "-o", tmp_path / name,
                "--batch-size", "8", "--device", "cpu", "--max-steps", "1", *extra)
        assert r.exit_code == 0, r.stderr
        rows = [json.loads(x) for x in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        first[name] = next(row["loss"] for row in rows if "loss" in row and "step" in row)
        model = json.loads((tmp_path / name / "config.json").read_text())["model"]
        assert (model["ar"], model["tar"]) == ((2.0, 1.0) if name == "default" else (0, 0))
    assert first["default"] > first["off"] + 1e-4


def test_a_new_classifier_reads_the_end_of_a_long_document(cli, lms, tmp_path):
    """The default is fastai's: the last --max-tokens tokens, in training as in classify."""
    from lmtool.checkpoint import load_checkpoint
    from lmtool.text.tokenizer import load_tokenizer

    train = write_tsv(tmp_path / "train.tsv", labelled_rows(24, seed=5))
    r = cli("finetune", "classifier", lms["lstm"], train, "-o", tmp_path / "clf",
            "--batch-size", "8", "--device", "cpu", "--max-steps", "2", "--max-tokens", "4")
    assert r.exit_code == 0, r.stderr
    clf = load_checkpoint(tmp_path / "clf", task="classifier").model
    assert clf.config.keep == "last"
    tok = load_tokenizer(tmp_path / "clf")
    ids = tok.encode("sun warm glad kind rain cold sad mean").ids
    (read, cut), = clf.encode_documents([ids])
    assert cut and read[1:] == ids[-3:]  # [EOS], then the last three tokens
