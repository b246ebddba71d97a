"""`lmtool import`: a tiny published checkpoint (made with transformers in the test)
becomes a run the other commands read, with its own tokenizer's ids."""

from __future__ import annotations

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

TEXTS = ["the cat sat on the mat", "a dog ran after the cat", "the mat was red and the dog"]


def bpe_tokenizer(specials: list[str], start: str | None):
    """A small byte-level BPE with `specials` first, adding `start` before every text as
    a Llama tokenizer adds <s> (None: nothing, as GPT-2's)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(TEXTS * 5, trainer=trainer)
    if start:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{start} $A", special_tokens=[(start, tok.token_to_id(start))])
    return tok


def llama_dir(tmp_path, tied: bool = True):
    tok = bpe_tokenizer(["<unk>", "<s>", "</s>"], "<s>")
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=tok.get_vocab_size(), max_position_embeddings=64,
        tie_word_embeddings=tied, bos_token_id=1, eos_token_id=2)
    model = transformers.LlamaForCausalLM(config).eval()
    folder = tmp_path / "llama-hf"
    model.save_pretrained(folder)
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>",
        "unk_token": "<unk>"}))
    return folder, model


def gpt2_dir(tmp_path):
    tok = bpe_tokenizer(["<|endoftext|>"], None)
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=4, n_positions=64,
                                     vocab_size=tok.get_vocab_size(), bos_token_id=0,
                                     eos_token_id=0)
    model = transformers.GPT2LMHeadModel(config).eval()
    folder = tmp_path / "gpt2-hf"
    model.save_pretrained(folder)
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|endoftext|>",
        "eos_token": "<|endoftext|>"}))
    return folder, model


def one_error_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("lmtool: error:")
    return lines[0]


@pytest.mark.parametrize("make", [llama_dir, gpt2_dir], ids=["llama", "gpt2"])
def test_imported_run_reads_the_ids_transformers_gives_and_generates_as_it_does(
        tmp_path, cli, make):
    from lmtool.checkpoint import load_checkpoint
    from lmtool.inference.generate import generate, prepare
    from lmtool.inference.runs import load_lm

    folder, hf = make(tmp_path)
    result = cli("import", folder, "-o", tmp_path / "run")
    assert result.exit_code == 0, result.stderr
    assert "imported" in result.stdout
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {
        p.name for p in (tmp_path / "run").iterdir()}
    ckpt = load_checkpoint(tmp_path / "run")
    hf_tok = transformers.AutoTokenizer.from_pretrained(folder)
    lm = load_lm(tmp_path / "run", device="cpu", precision="fp32")
    for text in ["the cat sat", "a red dog ran"]:
        want = hf_tok(text)["input_ids"]
        assert prepare(lm, text, 0, None).ids == want  # same text, same ids
        ids = torch.tensor([want])
        with torch.no_grad():
            torch.testing.assert_close(ckpt.model(ids), hf(ids).logits, atol=1e-4, rtol=0)
        # Greedy continuations: lmtool never writes a special token but the end of
        # text, so neither may transformers here.
        specials = lm.specials
        banned = [i for i in specials.never_generated()]
        with torch.no_grad():
            out = hf.generate(ids, max_new_tokens=6, do_sample=False, suppress_tokens=banned,
                              eos_token_id=specials.eos, pad_token_id=specials.eos)
        expected = out[0, ids.size(1):].tolist()
        if specials.eos in expected:
            expected = expected[: expected.index(specials.eos)]
        got = generate(lm, text, max_new_tokens=6, temperature=0)[0]
        assert got.tokens == expected


def test_info_and_evaluate_read_an_imported_run(tmp_path, cli):
    folder, _ = llama_dir(tmp_path)
    assert cli("import", folder, "-o", tmp_path / "run").exit_code == 0
    info = cli("info", tmp_path / "run", "--format", "json")
    assert info.exit_code == 0, info.stderr
    data = json.loads(info.stdout)
    assert data["model"]["norm"] == "rmsnorm" and data["model"]["kv_heads"] == 2


def test_import_refuses_an_existing_run_without_force(tmp_path, cli):
    folder, _ = gpt2_dir(tmp_path)
    assert cli("import", folder, "-o", tmp_path / "run").exit_code == 0
    again = cli("import", folder, "-o", tmp_path / "run")
    assert again.exit_code == 2 and "--force" in one_error_line(again)
    assert cli("import", folder, "-o", tmp_path / "run", "--force").exit_code == 0


@pytest.mark.parametrize("breakage", ["pickled", "no-tokenizer", "architecture", "contradiction"])
def test_refusals_are_one_line_exit_2_and_write_nothing(tmp_path, cli, breakage):
    folder, _ = gpt2_dir(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    if breakage == "pickled":
        (folder / "model.safetensors").unlink()
        (folder / "pytorch_model.bin").write_bytes(b"\x80\x04 never read")
        expect = "pickled weights"
    elif breakage == "no-tokenizer":
        (folder / "tokenizer.json").unlink()
        expect = "no tokenizer.json"
    elif breakage == "architecture":
        config["architectures"] = ["MambaForCausalLM"]
        expect = "MambaForCausalLM is not supported"
    else:
        config["n_layer"] = 3  # the weights have 2 blocks
        expect = "contradicts its weights"
    (folder / "config.json").write_text(json.dumps(config))
    result = cli("import", folder, "-o", tmp_path / "run")
    assert result.exit_code == 2
    assert expect in one_error_line(result)
    assert not (tmp_path / "run").exists()


def test_a_hub_id_offline_says_what_to_download(tmp_path, cli, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    result = cli("import", "nobody-here/no-such-model", "-o", tmp_path / "run")
    assert result.exit_code == 2
    line = one_error_line(result)
    assert "nobody-here/no-such-model" in line and "lmtool import DIR" in line
    assert not (tmp_path / "run").exists()


def bert_dir(tmp_path, padded: bool = False):
    """A tiny BertForMaskedLM with a WordPiece tokenizer whose template is [CLS] ... [SEP]
    (`padded`: the tokenizer pads and truncates to 16 ids, as sentence-transformers' do)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator(TEXTS * 5, trainer=trainers.WordPieceTrainer(
        vocab_size=120, special_tokens=specials))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    if padded:
        tok.enable_padding(length=16, pad_id=tok.token_to_id("[PAD]"), pad_token="[PAD]")
        tok.enable_truncation(max_length=16)
    torch.manual_seed(0)
    config = transformers.BertConfig(hidden_size=32, intermediate_size=48,
                                     num_hidden_layers=2, num_attention_heads=4,
                                     vocab_size=tok.get_vocab_size(),
                                     max_position_embeddings=64)
    model = transformers.BertForMaskedLM(config).eval()
    folder = tmp_path / "bert-hf"
    model.save_pretrained(folder)
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "cls_token": "[CLS]",
        "sep_token": "[SEP]", "mask_token": "[MASK]", "pad_token": "[PAD]",
        "unk_token": "[UNK]"}))
    return folder, model


def test_imported_bert_fills_masks_as_transformers_does(tmp_path, cli):
    from lmtool.inference.fill_mask import fill_mask

    folder, hf = bert_dir(tmp_path)
    assert cli("import", folder, "-o", tmp_path / "run").exit_code == 0
    hf_tok = transformers.AutoTokenizer.from_pretrained(folder)
    text = "the cat [MASK] on the mat"
    ids = hf_tok(text, return_tensors="pt")["input_ids"]  # [CLS] ... [SEP]
    assert ids[0, 0] == hf_tok.cls_token_id and ids[0, -1] == hf_tok.sep_token_id
    with torch.no_grad():
        logits = hf(ids).logits[0, (ids[0] == hf_tok.mask_token_id).nonzero()[0, 0]]
    logits[hf_tok.all_special_ids] = float("-inf")
    filled = fill_mask(tmp_path / "run", text, top_k=3, device="cpu")[0]
    assert [c.id for c in filled.masks[0]] == logits.topk(3).indices.tolist()


def test_an_imported_bert_becomes_a_classifier_reading_its_own_template(tmp_path, cli):
    from lmtool.checkpoint import load_checkpoint

    folder, _ = bert_dir(tmp_path)
    assert cli("import", folder, "-o", tmp_path / "run").exit_code == 0
    rows = [("pos" if i % 2 else "neg", TEXTS[i % 3]) for i in range(24)]
    train = tmp_path / "train.tsv"
    train.write_text("label\ttext\n" + "".join(f"{lab}\t{t}\n" for lab, t in rows))
    r = cli("finetune", "classifier", tmp_path / "run", train, "-o", tmp_path / "clf",
            "--batch-size", "8", "--device", "cpu", "--max-steps", "2")
    assert r.exit_code == 0, r.stderr
    clf = load_checkpoint(tmp_path / "clf", task="classifier").model
    hf_tok = transformers.AutoTokenizer.from_pretrained(folder)
    tokens = hf_tok(TEXTS[0], add_special_tokens=False)["input_ids"]
    assert clf.encode_documents([tokens])[0][0] == hf_tok(TEXTS[0])["input_ids"]
    out = cli("classify", tmp_path / "clf", "-", "--format", "jsonl", input=TEXTS[1] + "\n")
    assert out.exit_code == 0, out.stderr
    assert json.loads(out.stdout.splitlines()[0])["label"] in ("pos", "neg")


def test_a_tokenizer_that_pads_is_imported_reading_unpadded_ids(tmp_path, cli):
    from lmtool.text.tokenizer import load_tokenizer

    folder, _ = bert_dir(tmp_path, padded=True)
    assert cli("import", folder, "-o", tmp_path / "run").exit_code == 0
    specials = json.loads((tmp_path / "run" / "config.json").read_text())["model"]["specials"]
    hf_tok = transformers.AutoTokenizer.from_pretrained(folder)
    assert specials["start"] == [hf_tok.cls_token_id] and specials["end"] == [hf_tok.sep_token_id]
    tok = load_tokenizer(tmp_path / "run", lmtool_specials=False)
    long_text = " ".join(TEXTS * 3)
    assert tok.encode(long_text).ids == hf_tok(long_text)["input_ids"]  # neither padded nor cut
    assert len(tok.encode(long_text).ids) > 16


def test_evaluate_and_finetune_lm_read_an_imported_run(tmp_path, cli):
    folder, _ = gpt2_dir(tmp_path)
    assert cli("import", folder, "-o", tmp_path / "run").exit_code == 0
    text = tmp_path / "text.txt"
    text.write_text("\n\n".join(TEXTS * 30) + "\n")
    ev = cli("evaluate", tmp_path / "run", text, "--device", "cpu", "--format", "json")
    assert ev.exit_code == 0, ev.stderr
    assert json.loads(ev.stdout)["perplexity"] > 1
    ft = cli("finetune", "lm", tmp_path / "run", text, "-o", tmp_path / "ft",
             "--max-steps", "2", "--device", "cpu", "--batch-size", "2")
    assert ft.exit_code == 0, ft.stderr
    gen = cli("generate", tmp_path / "ft", "the cat", "--max-new-tokens", "3",
              "--temperature", "0", "--device", "cpu")
    assert gen.exit_code == 0, gen.stderr


def test_an_imported_run_trains_on_windows_shorter_than_its_context(tmp_path, cli,
                                                                    monkeypatch):
    # A published context (SmolLM2: 8,192) at a training batch would not fit in memory:
    # the import records a shorter window, which finetune lm and evaluate read.
    monkeypatch.setattr("lmtool.hub.run.IMPORT_WINDOW", 16)
    folder, _ = llama_dir(tmp_path)  # context 64
    assert cli("import", folder, "-o", tmp_path / "run").exit_code == 0
    training = json.loads((tmp_path / "run" / "config.json").read_text())["training"]
    assert training["window"] == 16
    text = tmp_path / "text.txt"
    text.write_text("\n\n".join(TEXTS * 30) + "\n")
    ft = cli("finetune", "lm", tmp_path / "run", text, "-o", tmp_path / "ft",
             "--max-steps", "2", "--device", "cpu", "--batch-size", "2", "--format", "json")
    assert ft.exit_code == 0, ft.stderr
    assert json.loads(ft.stdout)["tokens_seen"] == 2 * 2 * 16  # steps x batch x window
    ev = cli("evaluate", tmp_path / "ft", text, "--device", "cpu", "--format", "json")
    assert ev.exit_code == 0, ev.stderr


def test_attention_maps_of_a_grouped_query_model_are_transformers_own(tmp_path, cli):
    # Llama shares each key/value head among query heads: the drawn weights must be
    # per query head, as transformers' eager attention returns them.
    from lmtool.inference.attention import attention_maps, reading_ids
    from lmtool.inference.runs import load_lm

    folder, _ = llama_dir(tmp_path)
    assert cli("import", folder, "-o", tmp_path / "run").exit_code == 0
    hf = transformers.AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager")
    lm = load_lm(tmp_path / "run", device="cpu", precision="fp32")
    maps = attention_maps(lm, "the cat sat on a red mat")
    ids = torch.tensor([reading_ids(lm, "the cat sat on a red mat")])
    with torch.no_grad():
        want = torch.stack([a[0] for a in hf(ids, output_attentions=True).attentions])
    assert maps.weights.shape == tuple(want.shape)  # (layers, query heads, T, T)
    torch.testing.assert_close(torch.from_numpy(maps.weights), want, atol=1e-5, rtol=0)
