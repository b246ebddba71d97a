"""Generation speed: lmtool against Hugging Face transformers' GPT2LMHeadModel, same config.

Not a test. Every ratio compares two figures measured in this one run: the two
libraries take turns (lmtool, HF, lmtool, HF, ...) and each figure is the median of
--repeats runs, so a busy neighbour slows both alike. Run it alone (under
/work/tools/cpu-exclusive on the shared machine). Needs `transformers`
(pip install -e '.[bench]') for the HF rows.

    python benchmarks/generate.py                     # everything (about 8 minutes here)
    python benchmarks/generate.py --only batch1 --sizes tiny
    python benchmarks/generate.py --only complete

What is compared (batch 1 unless said; greedy; 200 new tokens after a 32-token prompt):
- batch1: tokens/s at the tiny (4 layers, width 128) and small (6 layers, width 384)
  sizes. Both models have context 256 here (the tiny preset's is 64, but HF's learned
  positions cannot go past n_positions and 32 + 200 tokens need 232), learned
  positions (GPT-2 has no rotary), exact GELU, tied embeddings, vocabulary --vocab.
  lmtool's weights are copied into HF (zero biases: lmtool's linears have none), so both
  write the same tokens; the run checks and prints whether they do. HF also gets
  suppress_tokens for the six special ids lmtool never writes ([EOS] is allowed).
  Rows: lmtool fp32, lmtool at its default precision (bf16 weights when the CPU has
  native bf16 and the fp32 weights outgrow the last-level cache), HF fp32, HF bf16.
  Then the command itself, `lmtool generate RUN PROMPT --max-new-tokens N --format
  jsonl` on the same model saved as a run, in a process of its own, taking its turn
  with the others: with its defaults (--precision auto, device auto, sampling at
  temperature 0.8, stopping at [EOS]; --seed 0 so every repeat writes the same tokens,
  jsonl to count them), and with --temperature 0 (greedy, as the other rows). The
  prompt is the same 32 ids written as words (the command adds the [EOS] that starts a
  document). The command prints no timing, so the whole command is timed, and so is its
  start-up, the same command writing 1 token (imports, loading the run, the prompt's
  forward pass), beside it in every turn; "less start-up" is the other tokens over the
  median difference. At the tiny size the start-up is most of the command.
- batched: 32 prompts of 16-48 tokens (left-padded for both), tokens/s over all rows.
- beam: 4 beams, length penalty 1, tokens/s of the returned text.
- complete: the autocomplete engine (as `lmtool complete` runs it, without the
  terminal) on the small preset with rotary positions and a byte-level BPE of --vocab
  tokens trained on tinyshakespeare: a scripted typing session of 200 keystrokes at 8
  keys/s (typos and backspaces included), latency from keystroke to suggestion, p50 and
  p95; suggestions of up to 8 new tokens. Random weights: the suggestions are nonsense
  but cost what real ones cost.
- lstm: the AWD-LSTM small preset, batch 1 tokens/s (no peer to compare with).

The header names the CPU's bf16 hardware (AMX, AVX512-BF16, or neither) and what
`--precision auto` trains in; for generation it chooses the weights' dtype per model
(lmtool/inference/runs.py), named in each table's title.
"""

from __future__ import annotations

import os
import sys

sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # see pretrain.py

import argparse  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from functools import partial  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from benchmarks import cli_rows  # noqa: E402
from lmtool.inference.generate import GenerateOptions, generate_prompts  # noqa: E402
from lmtool.inference.runs import LoadedLM, inference_dtype  # noqa: E402
from lmtool.inference.text import Prompt  # noqa: E402
from lmtool.models import ModelConfig, build_model, resolve_model_config  # noqa: E402
from lmtool.text.specials import SPECIAL_TOKENS  # noqa: E402

SIZES = {"tiny": (4, 4, 128), "small": (6, 6, 384)}  # layers, heads, width
SUPPRESSED = [0, 1, 2, 4, 5, 6]  # lmtool's specials except [EOS]
STARTUP = "lmtool generate CLI start-up"  # the command writing 1 token
# ../shared/corpora beside the repository (or beside the worktrees' directory).
_ROOT = Path(__file__).resolve().parents[1]
CORPUS = next((p for p in (_ROOT.parent / "shared", _ROOT.parents[1] / "shared")
               if (p / "corpora/tinyshakespeare/input.txt").is_file()),
              _ROOT.parent / "shared") / "corpora/tinyshakespeare/input.txt"


def word_tokenizer(vocab: int):
    """Any tokenizer of the right size does for decoding random ids."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    words = {t: i for i, t in enumerate(SPECIAL_TOKENS)}
    words.update({f"w{i}": i for i in range(len(SPECIAL_TOKENS), vocab)})
    tok = Tokenizer(models.WordLevel(words, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece()
    return tok


def lmtool_model(size: str, vocab: int, positions="learned", seed=0):
    layers, heads, dim = SIZES[size]
    config = ModelConfig(vocab_size=vocab, layers=layers, heads=heads, dim=dim, context=256,
                         dropout=0.0, positions=positions)
    torch.manual_seed(seed)
    return build_model(config).eval()


def hf_copy(model):
    """GPT2LMHeadModel of the same config holding `model`'s weights (biases zero)."""
    import transformers

    c = model.config
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=c.vocab_size, n_positions=c.context, n_embd=c.dim, n_layer=c.layers,
        n_head=c.heads, activation_function="gelu", resid_pdrop=0.0, embd_pdrop=0.0,
        attn_pdrop=0.0, layer_norm_epsilon=1e-5, bos_token_id=None, eos_token_id=None,
        pad_token_id=0,
    )).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.zero_()
        t = hf.transformer
        t.wte.weight.copy_(model.tok_emb.weight)
        t.wpe.weight.copy_(model.pos_emb.weight)
        for mine, theirs in zip(model.blocks, t.h, strict=True):
            theirs.attn.c_attn.weight.copy_(mine.attn.qkv.weight.T)  # Conv1D: (in, out)
            theirs.attn.c_proj.weight.copy_(mine.attn.proj.weight.T)
            theirs.mlp.c_fc.weight.copy_(mine.mlp.fc.weight.T)
            theirs.mlp.c_proj.weight.copy_(mine.mlp.proj.weight.T)
            for a, b in ((mine.ln1, theirs.ln_1), (mine.ln2, theirs.ln_2)):
                b.weight.copy_(a.weight)
                b.bias.copy_(a.bias)
        t.ln_f.weight.copy_(model.ln_f.weight)
        t.ln_f.bias.copy_(model.ln_f.bias)
    hf.generation_config.eos_token_id = None
    hf.generation_config.pad_token_id = 0
    return hf


def loaded(model, dtype) -> LoadedLM:
    copy = type(model)(model.config)
    copy.load_state_dict(model.state_dict())
    copy = copy.to(dtype).eval()
    return LoadedLM(copy, word_tokenizer(model.config.vocab_size), torch.device("cpu"), dtype)


def prompts_of(lengths: list[int], vocab: int, seed=1) -> list[list[int]]:
    g = random.Random(seed)
    return [[g.randrange(7, vocab) for _ in range(n)] for n in lengths]


def run_lmtool(lm: LoadedLM, rows: list[list[int]], new: int, beams: int = 1):
    prompts = [Prompt("", ids, ids, 0, i) for i, ids in enumerate(rows)]
    options = GenerateOptions(max_new_tokens=new, temperature=0 if beams == 1 else None,
                              beams=beams, stop_at_eos=False).resolved()
    return generate_prompts(lm, prompts, options)


def run_hf(hf, rows: list[list[int]], new: int, beams: int = 1) -> torch.Tensor:
    longest = max(len(r) for r in rows)
    ids = torch.tensor([[0] * (longest - len(r)) + r for r in rows])  # left padding
    mask = torch.tensor([[0] * (longest - len(r)) + [1] * len(r) for r in rows])
    with torch.inference_mode():
        out = hf.generate(ids, attention_mask=mask, max_new_tokens=new, min_new_tokens=new,
                          do_sample=False, num_beams=beams, use_cache=True,
                          suppress_tokens=SUPPRESSED)
    return out[:, longest:]


def save_run(model, path: Path) -> Path:
    """`model` as a run directory (what `lmtool pretrain` leaves), for the CLI rows."""
    from lmtool.checkpoint import save_checkpoint

    save_checkpoint(path, model=model, config={"model": model.config.to_dict()},
                    tokenizer_json=word_tokenizer(model.config.vocab_size).to_str(),
                    metrics=[])
    return path


class CLI:
    """`lmtool generate RUN PROMPT` in a process of its own; counts the tokens it wrote."""

    def __init__(self, run: Path, ids: list[int], new: int, *flags: str):
        prompt = " ".join(f"w{i}" for i in ids)  # the word tokenizer's words for the ids
        self.argv = ["generate", str(run), prompt, "--max-new-tokens", str(new),
                     "--format", "jsonl", *flags]
        self.tokens = new

    def __call__(self) -> None:
        out, _ = cli_rows.run_lmtool(self.argv, threads=torch.get_num_threads())
        self.tokens = len(json.loads(out.splitlines()[-1])["tokens"])  # the ids written


def cli_entries(model, rows: list[list[int]], new: int, work: Path) -> dict[str, CLI]:
    """The `lmtool generate` rows for one prompt (see the module doc)."""
    run = save_run(model, work / "run")
    return {
        "lmtool generate CLI (defaults)": CLI(run, rows[0], new, "--seed", "0"),
        "lmtool generate CLI --temperature 0": CLI(run, rows[0], new, "--temperature", "0"),
        STARTUP: CLI(run, rows[0], 1, "--seed", "0"),
    }


def less_startup(times: dict[str, list[float]], seconds: dict[str, float],
                 tokens: dict[str, int], clis: dict[str, CLI]) -> list[str]:
    """Take the start-up row out of `seconds`; add each CLI row less its start-up (the
    median over the turns of the two's difference, as they ran side by side) and less
    its first token, which the start-up wrote. Returns the lines to print after the
    table."""
    seconds.pop(STARTUP)
    notes = [f"{STARTUP} (the command writing 1 token: imports, loading the run, the "
             f"prompt): {statistics.median(times[STARTUP]):.2f} s"]
    for name, cli in clis.items():
        if name == STARTUP:
            continue
        tokens[name] = cli.tokens
        rest = statistics.median(a - b for a, b in zip(times[name], times[STARTUP],
                                                        strict=True))
        if rest > 0:
            seconds[f"{name} less start-up"] = rest
            tokens[f"{name} less start-up"] = cli.tokens - 1
        else:
            notes.append(f"{name}: no longer than its start-up (noise); raise --new")
    return notes


def timed(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def race(entries: dict, repeats: int) -> dict[str, float]:
    """Median seconds of each entry's function, run in turns after one warm-up each."""
    return {name: statistics.median(t) for name, t in race_times(entries, repeats).items()}


def race_times(entries: dict, repeats: int) -> dict[str, list[float]]:
    """Seconds of each entry's function in each of `repeats` turns, after one warm-up."""
    for fn in entries.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in entries}
    for _ in range(repeats):
        for name, fn in entries.items():
            times[name] += timed(fn, 1)
    return times


def have_hf() -> bool:
    try:
        import transformers  # noqa: F401
    except ImportError:
        print("transformers is not installed: lmtool rows only", file=sys.stderr)
        return False
    return True


def table(title: str, tokens: int, seconds: dict[str, float], reference: str | None,
          counts: dict[str, int] | None = None):
    """tokens/s of each row (`tokens` each, or `counts[name]`) and its ratio to the
    reference's tokens/s."""
    print(f"\n{title}")
    print(f"  {'':50} {'tokens/s':>9} {'ms/token':>9} {'ratio':>7}")
    counts = counts or {}
    ref = tokens / seconds[reference] if reference else None
    for name, s in seconds.items():
        n = counts.get(name, tokens)
        ratio = f"{n / s / ref:6.2f}x" if ref else ""
        print(f"  {name:50} {n / s:9.0f} {s / n * 1e3:9.3f} {ratio:>7}")


def bench_generation(args, kind: str, work: Path):
    hf_ok = have_hf()
    for size in args.sizes:
        model = lmtool_model(size, args.vocab)
        auto = inference_dtype("auto", torch.device("cpu"), model)
        lm32, lm_auto = loaded(model, torch.float32), loaded(model, auto)
        if kind == "batch1":
            rows, beams = prompts_of([args.prompt], args.vocab), 1
        elif kind == "batched":
            g = random.Random(2)
            rows, beams = prompts_of([g.randint(16, 48) for _ in range(32)], args.vocab), 1
        else:
            rows, beams = prompts_of([args.prompt], args.vocab), 4
        entries = {"lmtool fp32": partial(run_lmtool, lm32, rows, args.new, beams)}
        if auto != torch.float32:
            entries[f"lmtool default ({_name(auto)} weights)"] = partial(
                run_lmtool, lm_auto, rows, args.new, beams)
        same = ""
        if hf_ok:
            hf = hf_copy(model)
            hf16 = hf_copy(model).to(torch.bfloat16)
            entries["HF GPT2LMHeadModel fp32"] = partial(run_hf, hf, rows, args.new, beams)
            entries["HF GPT2LMHeadModel bf16"] = partial(run_hf, hf16, rows, args.new, beams)
            ours = [g.tokens for g in run_lmtool(lm32, rows, args.new, beams)]
            theirs = run_hf(hf, rows, args.new, beams).tolist()
            agree = sum(a == b for x, y in zip(ours, theirs, strict=True)
                        for a, b in zip(x, y, strict=False))
            total = sum(len(x) for x in theirs)
            same = f"; fp32 tokens identical to HF's: {agree}/{total}"
        clis = (cli_entries(model, rows, args.new, work / size)
                if kind == "batch1" and not args.no_cli else {})
        times = race_times({**entries, **clis}, args.repeats)
        seconds = {name: statistics.median(t) for name, t in times.items()}
        counts: dict[str, int] = {}
        notes = less_startup(times, seconds, counts, clis) if clis else []
        n = args.new * len(rows)
        what = {"batch1": "batch 1, greedy", "batched": "32 prompts of 16-48 tokens, greedy",
                "beam": "batch 1, 4 beams"}[kind]
        table(f"{size} ({'/'.join(map(str, SIZES[size]))} layers/heads/width, vocab "
              f"{args.vocab}), {what}, {args.new} new tokens{same}; --precision auto: "
              f"{_name(auto)} weights", n, seconds,
              "HF GPT2LMHeadModel fp32" if hf_ok else None, counts)
        for line in notes:
            print(f"  {line}")


def _name(dtype) -> str:
    return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


def typing_script(text: str, keys: int, seed=3) -> list[str]:
    """The line after each of `keys` keystrokes typing `text`; now and then a wrong key
    and a backspace."""
    g = random.Random(seed)
    lines, typed, i = [], "", 0
    while len(lines) < keys:
        if g.random() < 0.04 and typed:
            lines.append(typed + "q")  # a typo ...
            lines.append(typed)  # ... and its backspace
            continue
        typed += text[i % len(text)]
        i += 1
        lines.append(typed)
    return lines[:keys]


def bench_complete(args):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from lmtool.inference.complete import CompletionEngine

    text = CORPUS.read_text(encoding="utf-8") if CORPUS.is_file() else (
        "First Citizen: Before we proceed any further, hear me speak. " * 50)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([text], trainers.BpeTrainer(
        vocab_size=args.vocab, special_tokens=SPECIAL_TOKENS, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    config = resolve_model_config("transformer", "causal", "small",
                                  {"vocab_size": tok.get_vocab_size(), "dropout": 0.0})
    torch.manual_seed(0)
    model = build_model(config).eval()
    dtype = inference_dtype("auto", torch.device("cpu"), model)
    lm = LoadedLM(model.to(dtype), tok, torch.device("cpu"), dtype)
    passage = " ".join(text[len(text) // 2 :][:3000].split())  # from the middle
    script = typing_script(passage, args.keys)
    print(f"\nautocomplete: small preset (6/6/384, context 256, rotary), BPE vocab "
          f"{tok.get_vocab_size()}, {_name(dtype)} weights; {len(script)} keystrokes at "
          f"{args.keys_per_s:g} keys/s; suggestions of up to 8 tokens")
    print(f"  {'':44} {'p50 ms':>7} {'p95 ms':>7} {'max ms':>7}")
    for label, max_words, follow in (
        ("default (5 words, typing through kept)", 5, True),
        ("always 8 tokens, every keystroke computed", 1000, False),
    ):
        engine = CompletionEngine(lm, max_words=max_words, max_tokens=8, follow=follow)
        engine.suggest(script[0][:1])  # warm-up
        engine = CompletionEngine(lm, max_words=max_words, max_tokens=8, follow=follow)
        latencies = []
        start = time.perf_counter()
        for i, line in enumerate(script):
            wait = start + i / args.keys_per_s - time.perf_counter()
            if wait > 0:
                time.sleep(wait)  # the next key arrives
            t0 = time.perf_counter()
            engine.suggest(line)
            latencies.append((time.perf_counter() - t0) * 1e3)
        q = statistics.quantiles(latencies, n=100)
        print(f"  {label:44} {q[49]:7.1f} {q[94]:7.1f} {max(latencies):7.1f}")


def bench_lstm(args):
    config = resolve_model_config("lstm", "causal", "small", {"vocab_size": args.vocab})
    torch.manual_seed(0)
    model = build_model(config).eval()
    auto = inference_dtype("auto", torch.device("cpu"), model)
    rows = prompts_of([args.prompt], args.vocab)
    entries = {"AWD-LSTM fp32": partial(run_lmtool, loaded(model, torch.float32), rows,
                                         args.new)}
    if auto != torch.float32:
        entries[f"AWD-LSTM default ({_name(auto)} weights)"] = partial(
            run_lmtool, loaded(model, auto), rows, args.new)
    seconds = race(entries, args.repeats)
    table(f"AWD-LSTM small preset (3 layers, 256/768), vocab {args.vocab}, batch 1, greedy, "
          f"{args.new} new tokens", args.new, seconds, None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="+", default=["batch1", "batched", "beam", "complete",
                                                      "lstm"],
                        choices=["batch1", "batched", "beam", "complete", "lstm"])
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--vocab", type=int, default=4000, help="Vocabulary size (the "
                        "demo's tokenizer has 4,000 tokens).")
    parser.add_argument("--prompt", type=int, default=32, help="Prompt tokens.")
    parser.add_argument("--new", type=int, default=200, help="New tokens per text.")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--keys", type=int, default=200)
    parser.add_argument("--keys-per-s", type=float, default=8.0)
    parser.add_argument("--no-cli", action="store_true",
                        help="skip the `lmtool generate` command's rows (batch1)")
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} CPUs; {cli_rows.machine_line()}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="lmtool-bench-generate-"))
    try:
        run_all(args, work)
    finally:
        import shutil

        shutil.rmtree(work, ignore_errors=True)


def run_all(args, work: Path) -> None:
    for kind in args.only:
        if kind in ("batch1", "batched", "beam"):
            bench_generation(args, kind, work / kind)
        elif kind == "complete":
            bench_complete(args)
        else:
            bench_lstm(args)
        sys.stdout.flush()


if __name__ == "__main__":
    main()
