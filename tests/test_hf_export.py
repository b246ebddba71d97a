"""`lmtool export`: runs as transformers model directories, loaded with no custom code,
giving the same logits and ids; lmtool -> HF -> lmtool is bitwise."""

from __future__ import annotations

import json

import pytest
import torch
from gen_fixtures import save_run, tiny_lm, word_tokenizer

transformers = pytest.importorskip("transformers")

from test_hf_cli import bert_dir, gpt2_dir, llama_dir  # noqa: E402

from lmtool.checkpoint import load_checkpoint  # noqa: E402

V = 37


def randomise(model):
    """Random norms and biases too, so a lost or misplaced one shows."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.normal_(1.0 if name.endswith("weight") else 0.0, 0.3)
    return model


def own_run(tmp_path, objective, positions):
    lm = tiny_lm(positions=positions, objective=objective, vocab=V, context=16)
    randomise(lm.model)
    return save_run(lm, tmp_path / f"{objective}-{positions}")


def hf_logits(folder, ids, masked):
    auto = transformers.AutoModelForMaskedLM if masked else transformers.AutoModelForCausalLM
    model = auto.from_pretrained(folder).eval()
    with torch.no_grad():
        return model, model(ids).logits


@pytest.mark.parametrize("objective,positions,architecture", [
    ("causal", "rotary", "Starcoder2ForCausalLM"),
    ("causal", "learned", "GPT2LMHeadModel"),
    ("masked", "learned", "MegatronBertForMaskedLM"),
])
def test_own_runs_export_exactly_and_come_back_bitwise(tmp_path, cli, objective, positions,
                                                       architecture):
    run = own_run(tmp_path, objective, positions)
    r = cli("export", run, "-o", tmp_path / "hf")
    assert r.exit_code == 0, r.stderr
    assert architecture in r.stdout
    ours = load_checkpoint(run).model
    ids = torch.randint(7, V, (2, 12), generator=torch.Generator().manual_seed(0))
    hf, want = hf_logits(tmp_path / "hf", ids, objective == "masked")
    assert type(hf).__name__ == architecture
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), want, atol=1e-4, rtol=0)
    # Same text, same ids.
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    text = "t9 t10 t11 t30"
    assert tok(text)["input_ids"] == word_tokenizer(V).encode(text).ids

    # Back again: the same config and bitwise the same weights.
    back = cli("import", tmp_path / "hf", "-o", tmp_path / "back")
    assert back.exit_code == 0, back.stderr
    again = load_checkpoint(tmp_path / "back").model
    for field in ("norm", "norm_place", "mlp", "bias", "positions", "token_types", "layers",
                  "heads", "dim", "tie_embeddings", "gelu"):
        assert getattr(again.config, field) == getattr(ours.config, field), field
    a, b = ours.state_dict(), again.state_dict()
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


@pytest.mark.parametrize("make,architecture", [
    (llama_dir, "LlamaForCausalLM"),
    (lambda p: llama_dir(p, tied=False), "LlamaForCausalLM"),
    (gpt2_dir, "GPT2LMHeadModel"),
    (bert_dir, "BertForMaskedLM"),
], ids=["llama-tied", "llama-untied", "gpt2", "bert"])
def test_imported_runs_export_to_their_own_family(tmp_path, cli, make, architecture):
    folder, original = make(tmp_path)
    assert cli("import", folder, "-o", tmp_path / "run").exit_code == 0
    r = cli("export", tmp_path / "run", "-o", tmp_path / "hf", "--format", "json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["architecture"] == architecture
    masked = architecture == "BertForMaskedLM"
    ids = torch.randint(5, original.config.vocab_size, (2, 10),
                        generator=torch.Generator().manual_seed(1))
    hf, got = hf_logits(tmp_path / "hf", ids, masked)
    with torch.no_grad():
        torch.testing.assert_close(got, original(ids).logits, atol=1e-4, rtol=0)
    before = transformers.AutoTokenizer.from_pretrained(folder)
    after = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    for text in ("the cat sat", "a red dog ran after the mat"):
        assert after(text)["input_ids"] == before(text)["input_ids"]


def test_an_awd_lstm_is_refused_with_the_reason(tmp_path, cli):
    run = save_run(tiny_lm(arch="lstm", vocab=V), tmp_path / "lstm")
    r = cli("export", run, "-o", tmp_path / "hf")
    assert r.exit_code == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "AWD-LSTM" in lines[0] and "no class" in lines[0]
    assert not (tmp_path / "hf").exists()


def test_an_earlier_export_needs_force_and_other_files_are_never_replaced(tmp_path, cli):
    run = own_run(tmp_path, "causal", "rotary")
    assert cli("export", run, "-o", tmp_path / "hf").exit_code == 0
    again = cli("export", run, "-o", tmp_path / "hf")
    assert again.exit_code == 2 and "--force" in again.stderr
    assert cli("export", run, "-o", tmp_path / "hf", "--force").exit_code == 0
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    refused = cli("export", run, "-o", tmp_path / "mine", "--force")
    assert refused.exit_code == 2
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"


def test_a_masked_run_with_rotary_positions_is_refused(tmp_path, cli):
    run = own_run(tmp_path, "masked", "rotary")
    r = cli("export", run, "-o", tmp_path / "hf")
    assert r.exit_code == 2
    assert "no transformers class" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "hf").exists()
