"""The run directory: round trip, atomic replacement, and refusal of bad checkpoints."""

from __future__ import annotations

import json
import pickle
import shutil
import struct

import pytest
import torch
from lm_fixtures import make_shards

from lmtool import checkpoint, fsio
from lmtool.checkpoint import TrainerState, load_checkpoint, save_checkpoint
from lmtool.errors import BadInput
from lmtool.models import build_model
from lmtool.models.config import resolve_model_config
from lmtool.rundir import is_run


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return make_shards(tmp_path_factory.mktemp("ckpt"), kind="char", vocab_size=64)


@pytest.fixture(scope="module")
def trained(shards, tmp_path_factory):
    """A real run made by pretrain (transformer, tied embeddings, optimizer state)."""
    from lmtool.training import pretrain

    out = tmp_path_factory.mktemp("runs") / "run"
    pretrain(shards, out, overrides=dict(layers=2, heads=2, dim=32, context=32, batch_size=8,
                                         max_steps=6, eval_every=3, log_every=2),
             sample_chars=0)
    return out


@pytest.fixture
def run(trained, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    return copy


def tiny_model(vocab: int = 40, seed: int = 0):
    torch.manual_seed(seed)
    config = resolve_model_config("transformer", "causal", "tiny",
                                  dict(layers=2, heads=2, dim=16, context=16))
    config.vocab_size = vocab
    return build_model(config)


def save_tiny(run, model, step: int, tokenizer_json: str):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randint(0, 40, (2, 8))).sum().backward()
    opt.step()
    state = TrainerState(step=step, optimizer={"adamw": opt.state_dict()},
                         tensors={"stream.0": torch.arange(6.0).view(2, 3)})
    save_checkpoint(run, model=model, config={"model": model.config.to_dict()},
                    tokenizer_json=tokenizer_json, metrics=[{"step": step, "loss": 1.0}],
                    trainer=state)
    return opt


def test_round_trip_keeps_weights_and_optimizer(trained, tmp_path):
    ckpt = load_checkpoint(trained, trainer=True)
    assert ckpt.config["format"] == "lmtool-run"
    assert ckpt.config["tokenizer"]["sha256"]
    assert ckpt.trainer.step == 6 and ckpt.trainer.tokens_seen == 6 * 8 * 32
    optimizers = ckpt.trainer.optimizer
    assert set(optimizers) == {"muon", "adamw"}  # the tiny preset's optimiser
    for state in optimizers.values():
        assert set(state["state"]) and state["param_groups"]
    model = ckpt.model
    assert model.lm_head.weight is model.tok_emb.weight  # tying survives the round trip
    # save again and reload: identical tensors
    out = tmp_path / "again"
    save_checkpoint(out, model=model, config={k: v for k, v in ckpt.config.items()
                                              if k not in ("format", "version")},
                    tokenizer_json=(trained / "tokenizer.json").read_text(),
                    metrics=ckpt.metrics, trainer=ckpt.trainer)
    again = load_checkpoint(out, trainer=True)
    for (name, a), (_, b) in zip(model.state_dict().items(), again.model.state_dict().items(),
                                 strict=True):
        assert torch.equal(a, b), name
    for name, state in optimizers.items():
        for index, entry in state["state"].items():
            for k, v in entry.items():
                assert torch.equal(v, again.trainer.optimizer[name]["state"][index][k])
        assert state["param_groups"] == again.trainer.optimizer[name]["param_groups"]
    assert again.metrics == ckpt.metrics


def test_no_torch_load_anywhere():
    """Loading never unpickles: the package does not even call torch.load."""
    from pathlib import Path

    import lmtool

    root = Path(lmtool.__file__).parent
    for path in root.rglob("*.py"):
        text = path.read_text()
        assert "torch.load(" not in text and "pickle.load" not in text, path


def test_a_failed_save_leaves_the_old_checkpoint(run, monkeypatch):
    before = load_checkpoint(run, trainer=True)
    old_weights = {k: v.clone() for k, v in before.model.state_dict().items()}
    model = before.model
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)  # a visibly different model

    def broken_save_file(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("safetensors.torch.save_file", broken_save_file)  # mid-save
    with pytest.raises(OSError):
        save_checkpoint(run, model=model, config={"model": before.config["model"]},
                        tokenizer_json="{}", metrics=[], trainer=before.trainer)
    after = load_checkpoint(run, trainer=True)
    assert after.trainer.step == before.trainer.step
    for k, v in after.model.state_dict().items():
        assert torch.equal(v, old_weights[k]), k
    assert sorted(p.name for p in run.parent.iterdir()) == ["run"]  # no temporary left


def test_fallback_swap_and_recovery_of_its_window(tmp_path, monkeypatch):
    tok = '{"not": "used"}'
    run = tmp_path / "run"
    save_tiny(run, tiny_model(seed=0), 1, tok)
    monkeypatch.setattr(fsio, "exchange", lambda a, b: False)  # no renameat2
    save_tiny(run, tiny_model(seed=1), 2, tok)
    assert checkpoint.read_trainer_state(run).step == 2
    assert not (tmp_path / ".run.aside").exists()
    # A crash between "rename RUN aside" and "rename new in": only the aside copy exists.
    (tmp_path / "run").rename(tmp_path / ".run.aside")
    assert is_run(run)  # recovers
    assert checkpoint.read_trainer_state(run).step == 2


def test_atomic_exchange_is_used_on_linux(tmp_path, monkeypatch):
    calls = []
    real = fsio.exchange
    monkeypatch.setattr(fsio, "exchange", lambda a, b: calls.append(1) or real(a, b))
    run = tmp_path / "run"
    save_tiny(run, tiny_model(seed=0), 1, "{}")
    save_tiny(run, tiny_model(seed=1), 2, "{}")
    assert calls == [1]  # the first save has nothing to swap with
    assert checkpoint.read_trainer_state(run).step == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


# --- bad checkpoints ------------------------------------------------------------------


def test_not_a_run(tmp_path):
    with pytest.raises(BadInput, match="not an lmtool run"):
        load_checkpoint(tmp_path)
    with pytest.raises(BadInput, match="not a directory"):
        load_checkpoint(tmp_path / "nothing")


@pytest.mark.parametrize("name", ["model.safetensors", "tokenizer.json", "config.json"])
def test_missing_file(run, name):
    (run / name).unlink()
    with pytest.raises(BadInput, match="missing|not an lmtool run"):
        load_checkpoint(run)


def test_missing_trainer_state_only_matters_for_resume(run):
    shutil.rmtree(run / "trainer")
    load_checkpoint(run)
    with pytest.raises(BadInput, match="trainer"):
        load_checkpoint(run, trainer=True)


def test_corrupt_files(run):
    data = (run / "model.safetensors").read_bytes()
    (run / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(BadInput, match="model.safetensors"):
        load_checkpoint(run)


def test_corrupt_json(run):
    (run / "config.json").write_text('{"format": "lmtool-run", "model": ')
    with pytest.raises(BadInput, match="corrupt"):
        load_checkpoint(run)


def test_corrupt_optimizer_state(run):
    (run / "trainer" / "optimizer.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(BadInput, match="optimizer.safetensors"):
        load_checkpoint(run, trainer=True)


def test_optimizer_state_not_keyed_by_optimizer_is_corrupt(run):
    path = run / "trainer" / "state.json"
    state = json.loads(path.read_text())
    state["optimizer"] = state["optimizer"]["adamw"]  # one bare state_dict, no names
    path.write_text(json.dumps(state))
    with pytest.raises(BadInput, match="corrupt"):
        load_checkpoint(run, trainer=True)


def test_wrong_shapes(run):
    config = json.loads((run / "config.json").read_text())
    config["model"]["dim"] = 48
    (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(BadInput, match="does not match"):
        load_checkpoint(run)


class Boom:
    """Unpickling this would run code: the test fails if it ever does."""

    def __reduce__(self):
        return (pytest.fail, ("a pickle was loaded",))


def test_pickle_weights_are_refused(run):
    (run / "model.safetensors").write_bytes(pickle.dumps({"w": Boom()}, protocol=4))
    with pytest.raises(BadInput, match="not a readable safetensors file.*never loads pickles"):
        load_checkpoint(run)


def test_weights_whose_header_length_starts_with_0x80_load(run):
    """A header length whose first byte is pickle's 0x80 is still safetensors (a byte
    sniffer once refused one such file in 256)."""
    path = run / "model.safetensors"
    blob = path.read_bytes()
    (length,) = struct.unpack("<Q", blob[:8])
    header, body = blob[8 : 8 + length].rstrip(b" "), blob[8 + length :]
    padded = len(header) + (0x80 - len(header)) % 256  # spaces are valid header padding
    path.write_bytes(struct.pack("<Q", padded) + header.ljust(padded, b" ") + body)
    assert path.read_bytes()[0] == 0x80
    assert load_checkpoint(run).model is not None


def test_torch_save_zip_is_refused(run):
    import io

    buf = io.BytesIO()
    torch.save({"w": torch.zeros(2)}, buf)  # writing is fine; lmtool must never read it
    (run / "model.safetensors").write_bytes(buf.getvalue())
    with pytest.raises(BadInput, match="pickle"):
        load_checkpoint(run)


def test_stray_pickle_file_is_never_read(run):
    """Only the files of the format are read, each by safetensors or json: Boom stays."""
    (run / "trainer" / "extra.bin").write_bytes(pickle.dumps(Boom()))
    (run / "model.pt").write_bytes(pickle.dumps(Boom()))
    assert load_checkpoint(run, trainer=True).trainer.step == 6


def test_cli_reports_bad_checkpoints_in_one_line(run, cli):
    (run / "model.safetensors").write_bytes(pickle.dumps(Boom()))
    for args in (("info", run), ("evaluate", run, run / "tokenizer.json")):
        result = cli(*args)
        assert result.exit_code == 2
        assert result.stderr.count("\n") == 1 and "pickle" in result.stderr
        assert result.stdout == ""


def test_run_files_follow_the_umask(tmp_path):
    import os
    import stat

    old = os.umask(0o002)
    try:
        save_tiny(tmp_path / "run", tiny_model(), 1, "{}")
    finally:
        os.umask(old)
    for path in [tmp_path / "run", *(tmp_path / "run").rglob("*")]:
        want = 0o775 if path.is_dir() else 0o664  # safetensors alone would make 0600
        assert stat.S_IMODE(path.stat().st_mode) == want, path
