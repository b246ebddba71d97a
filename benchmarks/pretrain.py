"""Training speed: lmtool against Hugging Face transformers, same model, same maths, one run.

Not a test. Every figure is measured in this one run: the rows take turns (round robin,
a few steps each), so a busy neighbour slows all of them alike and the ratios stay
meaningful; compare ratios, not milliseconds, across runs. Needs `transformers`
(pip install -e '.[bench]'); without it only lmtool's rows are printed.

    python benchmarks/pretrain.py                          # both configs, causal + masked
    python benchmarks/pretrain.py --configs baby --objectives causal --rounds 3 --steps 10
    python benchmarks/pretrain.py --data ../shared/corpora/tinyshakespeare/input.txt
    python benchmarks/pretrain.py --configs baby --objectives causal --nanogpt ../peers/nanoGPT

Rows, each library in fp32 and in bf16 autocast, each with plain (foreach) AdamW and with
fused AdamW, in the same bare loop: forward, the same cross-entropy, backward, gradient
clipping at 1.0, optimiser step. Then `lmtool pretrain`, one row per --optimizers, twice:
- "lmtool pretrain CLI": the command itself (`python -m lmtool pretrain`), its turn in
  each round a fresh run in a process of its own, --warmup + --steps steps with a log
  row after every step, timed from the trainer's own log after the warm-up (the whole
  step: batch, forward, backward, clipping, optimiser, callbacks), so the process
  start-up, the imports and the untimed warm-up are left out;
- "pretrain() in-process": the library call the command makes, in a thread of this
  process, timed from one step to the next.
Both run with the command's defaults (`--precision auto`, fused AdamW, clipping at 1.0)
but for the flags that make the work the bare rows' work: the config's shape and batch,
dropout 0, --positions, the optimizer (the tiny preset's own is Muon; --optimizers
adamw,muon adds it), steps as the budget, no evaluation or save between steps. Each
one's overhead per step is printed against the bare loop doing the same maths. Ratios
are speeds against HF in fp32 with plain AdamW (the reference) and against the fastest
HF row. MFU is model FLOPs/s (6N + 12LCT per token, the PaLM estimate, from the config,
so identical for both libraries) against a matmul peak measured here in the row's
precision. The header names the CPU's bf16 hardware (AMX, AVX512-BF16, or neither) and
what `--precision auto` chose from it.

The Hugging Face models get lmtool's config: exact GELU (GPT-2's default is a
tanh approximation written as Python arithmetic, ~25% of its step at the baby config),
learned positions, tied embeddings, dropout 0, no KV cache in training. What still
differs is printed under each table.

Data: char-level batches of --data (first 90% train, last 10% held out, as nanoGPT; the
loss column is then a held-out loss after the timed steps, same batches and seed for
every row), else random ids. The CLI row has no loss (nan): its runs are short, fresh
and in other processes. `lmtool pretrain` reads the same text through a char tokenizer
and token shards written to a temporary directory.
"""

from __future__ import annotations

import os
import sys

# Run as a script, Python puts benchmarks/ first on sys.path, where benchmarks/tokenize.py
# would shadow the standard `tokenize` module (imported by `inspect`, `dataclasses`...):
# put the repository root there instead, before anything else is imported.
sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import argparse  # noqa: E402
import contextlib  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import statistics  # noqa: E402
import string  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from benchmarks.cli_rows import run_lmtool, step_seconds  # noqa: E402
from lmtool.device import (  # noqa: E402
    autocast,
    describe_cpu,
    describe_precision,
    dtype_name,
    resolve_device,
    resolve_precision,
)
from lmtool.models import ModelConfig, build_model  # noqa: E402
from lmtool.training.objectives import Batch, make_objective  # noqa: E402
from lmtool.training.trainer import Callback  # noqa: E402

# name: (layers, heads, dim, context, batch); the vocabulary comes from the data.
CONFIGS = {
    "baby": (4, 4, 128, 64, 12),  # nanoGPT's CPU "baby" shakespeare_char run
    "shakespeare": (6, 6, 384, 256, 12),  # nanoGPT's train_shakespeare_char, batch 12
}
CLIP = 1.0  # max gradient norm, every row (lmtool pretrain's, nanoGPT's and HF Trainer's)

DIFFERENCES = {
    "causal": "still differs: HF GPT-2 has a bias on every linear layer (lmtool: none; "
              "LayerNorms keep theirs in both)",
    "masked": "still differs: HF BERT is post-norm with an embedding LayerNorm, token-type "
              "embeddings, biases on every linear layer, and runs its MLM head on every "
              "position (lmtool: pre-norm, no biases, the head on the masked positions only)",
}


def matmul_peak(dtype: torch.dtype, device: torch.device, n: int = 1024, secs: float = 1.0):
    """Best GFLOP/s of an n x n matrix product in `dtype`."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    best = 0.0
    deadline = time.perf_counter() + secs
    while time.perf_counter() < deadline:
        sync(device)
        t0 = time.perf_counter()
        for _ in range(4):
            a @ b
        sync(device)
        best = max(best, 4 * 2 * n**3 / (time.perf_counter() - t0) / 1e9)
    return best


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def flops_per_step(layers: int, dim: int, context: int, batch: int, vocab: int) -> float:
    """Training FLOPs of one step: (6N + 12 L C T) per token, N = blocks + output matmul."""
    n = 12 * layers * dim * dim + dim * vocab
    return (6 * n + 12 * layers * dim * context) * context * batch


class Batches:
    """Deterministic batches: random ids, or windows of a char-encoded text."""

    def __init__(self, objective: str, vocab: int, context: int, batch: int, data=None):
        self.objective, self.vocab, self.context, self.batch = objective, vocab, context, batch
        self.data = data  # 1-D LongTensor of char ids, or None
        self.gen = torch.Generator().manual_seed(1337)

    def next(self, device: torch.device):
        B, T, V = self.batch, self.context, self.vocab
        if self.data is None:
            seq = torch.randint(0, V, (B, T + 1), generator=self.gen)  # (B, T+1)
        else:
            starts = torch.randint(0, len(self.data) - T - 1, (B,), generator=self.gen)
            seq = torch.stack([self.data[s : s + T + 1] for s in starts.tolist()])  # (B, T+1)
        if self.objective == "causal":
            return seq[:, :-1].to(device), seq[:, 1:].to(device)  # inputs, next tokens
        # Masked: 15% of positions become the last id (our stand-in [MASK]); only they
        # carry a label.
        x, labels = seq[:, :-1].clone(), seq[:, :-1].clone()  # (B, T)
        chosen = torch.rand(B, T, generator=self.gen) < 0.15
        x[chosen] = V - 1
        labels[~chosen] = -100
        return x.to(device), labels.to(device)


@dataclass
class Row:
    name: str
    model: torch.nn.Module
    loss: Callable  # (model, Batch) -> mean loss over the scored tokens
    optimizer: torch.optim.Optimizer | None
    batches: Batches | None
    dtype: torch.dtype | None
    times: list = field(default_factory=list)
    losses: list = field(default_factory=list)
    twin: str | None = None  # the bare row doing the same maths (for `lmtool pretrain`)


def lmtool_model(objective, layers, heads, dim, context, vocab, positions="learned"):
    cfg = ModelConfig(
        objective=objective, layers=layers, heads=heads, dim=dim, context=context,
        vocab_size=vocab, dropout=0.0, positions=positions,  # learned: as GPT-2 and BERT
    )
    return build_model(cfg)


def lmtool_loss(model) -> Callable:
    """lmtool's own training loss: what `lmtool pretrain` runs (the masked objective
    runs the MLM head on the scored positions only)."""
    loss = make_objective(model.config).loss
    return lambda model, batch: loss(model, batch)[0]


def hf_loss(model, batch: Batch) -> torch.Tensor:
    """The same cross-entropy as lmtool's causal objective, over every position's logits
    (-100: no target). HF's own `labels=` loss computes the same (measured: no faster)."""
    logits = model(input_ids=batch.inputs).logits  # (B, T, V)
    return F.cross_entropy(logits.float().flatten(0, 1), batch.targets.flatten())


def hf_model(objective, layers, heads, dim, context, vocab):
    import transformers

    if objective == "causal":
        cfg = transformers.GPT2Config(
            vocab_size=vocab, n_positions=context, n_embd=dim, n_layer=layers, n_head=heads,
            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
            activation_function="gelu",  # exact, as lmtool (GPT-2's own: "gelu_new", tanh)
            use_cache=False,  # a training step needs no KV cache
            bos_token_id=None, eos_token_id=None,  # GPT-2's 50256 is outside this vocabulary
        )
        return transformers.GPT2LMHeadModel(cfg)
    cfg = transformers.BertConfig(
        vocab_size=vocab, hidden_size=dim, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=4 * dim, max_position_embeddings=context, hidden_act="gelu",
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )
    return transformers.BertForMaskedLM(cfg)


def step(row: Row, device: torch.device) -> float:
    """One training step of a bare-loop row; returns its wall time in seconds."""
    x, y = row.batches.next(device)
    sync(device)
    t0 = time.perf_counter()
    with autocast(device, row.dtype):
        loss = row.loss(row.model, Batch(x, y))
    loss.backward()
    torch.nn.utils.clip_grad_norm_(row.model.parameters(), CLIP)
    row.optimizer.step()
    row.optimizer.zero_grad(set_to_none=True)
    sync(device)
    row.losses.append(loss.item())
    return time.perf_counter() - t0


@torch.no_grad()
def val_loss(row: Row, batches: Batches, device: torch.device, count: int = 20) -> float:
    """Mean loss over `count` fixed validation batches, in the row's own precision."""
    row.model.eval()
    losses = []
    for _ in range(count):
        x, y = batches.next(device)
        with autocast(device, row.dtype):
            losses.append(row.loss(row.model, Batch(x, y)).item())
    row.model.train()
    return statistics.mean(losses)


# --- lmtool pretrain, taking turns with the bare rows --------------------------------------


def write_shards(text: str, work: Path) -> Path:
    """`text` as lmtool token shards (char tokenizer, one document, no validation split)."""
    from lmtool.text.encode import encode_corpus
    from lmtool.text.tokenizer import save_tokenizer, train_tokenizer

    source = work / "train.txt"
    source.write_text(text, encoding="utf-8")
    tok = train_tokenizer([source], kind="char", vocab_size=512, min_frequency=1,
                          document="file")
    save_tokenizer(tok, work / "tokenizer.json")
    encode_corpus([source], work / "tokenizer.json", work / "shards", val_fraction=0,
                  document="file")
    return work / "shards"


class Baton:
    """Whose turn it is in the round robin: the bare rows (turn 0, the main thread) or one
    of the `lmtool pretrain` runs (each in a thread of its own, as `pretrain` runs its
    own loop). Exactly one runs at a time; the others wait."""

    def __init__(self, players: int):
        self.cond = threading.Condition()
        self.turn = 0
        self.playing = list(range(players))

    def wait(self, me: int) -> None:
        with self.cond:
            self.cond.wait_for(lambda: self.turn == me)

    def pass_on(self, me: int, leave: bool = False) -> None:
        with self.cond:
            after = self.playing[(self.playing.index(me) + 1) % len(self.playing)]
            if leave:
                self.playing.remove(me)
            self.turn = after if self.playing else -1
            self.cond.notify_all()


class TakeTurns(Callback):
    """A `lmtool pretrain` callback: times each step (from the end of one step's callback
    to the next), and hands the turn on after the warm-up and after every `steps` timed
    steps but the last (the run then ends, saves, and leaves the round robin)."""

    def __init__(self, row: Row, me: int, baton: Baton, args):
        self.row, self.me, self.baton, self.args = row, me, baton, args
        self.count = 0  # steps done
        self.last = 0.0

    def on_step(self, trainer) -> None:
        now = time.perf_counter()
        self.row.model = trainer.model
        if self.count > self.args.warmup:
            self.row.times.append(now - self.last)
        timed, total = len(self.row.times), self.args.rounds * self.args.steps
        if self.count == self.args.warmup or (timed % self.args.steps == 0 and 0 < timed < total):
            self.baton.pass_on(self.me)
            self.baton.wait(self.me)
        self.count += 1
        self.last = time.perf_counter()

    def on_train_row(self, trainer, row: dict) -> None:
        self.row.losses.append(row["loss"])


def pretrain_rows(args, shape, batch: int, shards: Path, work: Path, default_dtype,
                  baton: Baton) -> tuple[list[Row], list[threading.Thread], list]:
    """One `lmtool pretrain` run per --optimizers, each in a thread waiting for its turn."""
    from lmtool.training.pretrain import pretrain

    objective, layers, heads, dim, context, _ = shape
    rows, threads, failures = [], [], []
    for me, optimizer in enumerate(args.optimizers.split(","), start=1):
        name = f"pretrain() in-process ({dtype_name(default_dtype)}, {optimizer})"
        row = Row(name, None, None, None, None, default_dtype, twin=twin_of(optimizer,
                                                                          default_dtype))
        turns = TakeTurns(row, me, baton, args)
        overrides = dict(layers=layers, heads=heads, dim=dim, context=context, dropout=0.0,
                         positions=args.positions, batch_size=batch, lr=args.lr,
                         optimizer=optimizer, eval_every=0, save_every=0, device=args.device,
                         max_steps=args.warmup + 1 + args.rounds * args.steps,
                         epochs=1000)  # steps are the budget; --max-steps only caps

        def run(me=me, turns=turns, overrides=overrides, optimizer=optimizer):
            baton.wait(me)
            try:
                pretrain(shards, work / f"run-{objective}-{dim}-{optimizer}",
                         objective=objective, arch="transformer", overrides=overrides,
                         force=True, callbacks=[turns], sample_chars=0)
            except BaseException as e:  # reported by the main thread
                failures.append(e)
            finally:
                baton.pass_on(me, leave=True)

        rows.append(row)
        threads.append(threading.Thread(target=run, daemon=True))
    return rows, threads, failures


def twin_of(optimizer: str, dtype) -> str | None:
    """The bare row doing the same maths as a pretrain row with `optimizer`."""
    return f"lmtool {dtype_name(dtype)} fused AdamW" if optimizer == "adamw" else None


class CliPretrain:
    """The `lmtool pretrain` command itself, taking its turn in the round robin: each turn
    a fresh run in a process of its own, --warmup + --steps steps logged after every
    step; its --steps timed steps come from the trainer's own log (see
    benchmarks/cli_rows.py), so the process start-up and the untimed warm-up are left
    out. The flags are the defaults but for what makes the work the bare rows' work:
    the model's shape, batch, dropout 0, positions, the optimizer, steps (not epochs) as
    the budget, and no evaluation or save between the steps."""

    def __init__(self, args, shape, batch: int, shards: Path, work: Path, optimizer: str,
                 default_dtype):
        objective, layers, heads, dim, context, _ = shape
        self.run = work / f"cli-{objective}-{dim}-{optimizer}"
        self.args = args
        self.argv = ["pretrain", str(shards), "-o", str(self.run), "--objective", objective,
                     "--layers", str(layers), "--heads", str(heads), "--dim", str(dim),
                     "--context", str(context), "--batch-size", str(batch),
                     "--dropout", "0", "--positions", args.positions, "--optimizer", optimizer,
                     "--device", args.device, "--max-steps", str(args.warmup + args.steps),
                     "--epochs", "1000", "--log-every", "1", "--eval-every", "0",
                     "--save-every", "0", "--force", "--quiet"]
        self.row = Row(f"lmtool pretrain CLI ({dtype_name(default_dtype)}, {optimizer})",
                       None, None, None, None, default_dtype,
                       twin=twin_of(optimizer, default_dtype))

    def turn(self) -> None:
        run_lmtool(self.argv, threads=torch.get_num_threads())
        self.row.times.extend(step_seconds(self.run, skip=self.args.warmup))


def round_robin(args, rows: list[Row], shape, batch, shards, work, default_dtype,
                device) -> list[Row]:
    """Warm-up, then `rounds` rounds: each bare row `steps` steps, each `lmtool pretrain`
    CLI row a run of warm-up + `steps` steps, then each in-process `pretrain` run `steps`
    steps. Returns the pretrain rows."""
    optimizers = args.optimizers.split(",")
    players = 1 if args.no_pretrain else 1 + len(optimizers)
    baton = Baton(players)
    extra, threads, failures = [], [], []
    if not args.no_pretrain:
        extra, threads, failures = pretrain_rows(args, shape, batch, shards, work,
                                                 default_dtype, baton)
    clis = [] if args.no_cli else [CliPretrain(args, shape, batch, shards, work, o,
                                               default_dtype) for o in optimizers]
    for thread in threads:
        thread.start()
    for row in rows:
        for _ in range(args.warmup):
            step(row, device)
    baton.pass_on(0)
    for r in range(args.rounds):
        baton.wait(0)
        for row in rows:
            row.times.extend(step(row, device) for _ in range(args.steps))
        for cli in clis:
            cli.turn()
        baton.pass_on(0, leave=r == args.rounds - 1)
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]
    for row in extra:
        row.loss = lmtool_loss(row.model)
    return [c.row for c in clis] + extra


# --- nanoGPT's own train.py, beside the rows ----------------------------------------------


def run_nanogpt(path: Path, layers, heads, dim, context, batch, iters: int) -> list[float]:
    """ms per iteration of nanoGPT's train.py at this config on the CPU (no compile, no
    dropout), from its own log lines; the first iterations (warm-up) are dropped."""
    cmd = [sys.executable, "train.py", "config/train_shakespeare_char.py", "--device=cpu",
           "--compile=False", f"--n_layer={layers}", f"--n_head={heads}", f"--n_embd={dim}",
           f"--block_size={context}", f"--batch_size={batch}", "--dropout=0.0",
           f"--max_iters={iters}", f"--lr_decay_iters={iters}", "--eval_interval=100000",
           "--eval_iters=1", "--log_interval=1", "--always_save_checkpoint=False",
           f"--out_dir={tempfile.mkdtemp(prefix='nanogpt-')}"]
    done = subprocess.run(cmd, cwd=path, capture_output=True, text=True, check=True)
    times = [float(t) for t in re.findall(r"^iter \d+: loss [\d.]+, time ([\d.]+)ms",
                                          done.stdout, re.MULTILINE)]
    return times[5:]


# --- main -----------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", default="baby,shakespeare")
    ap.add_argument("--objectives", default="causal,masked")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--data", type=Path, help="a text file: char-level batches from it")
    ap.add_argument("--rounds", type=int, default=5, help="round-robin rounds")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per row per round")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps per row first")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--no-hf", action="store_true", help="lmtool rows only")
    ap.add_argument("--no-bf16", action="store_true", help="skip the bf16 rows")
    ap.add_argument("--no-pretrain", action="store_true",
                    help="skip the in-process `pretrain()` rows")
    ap.add_argument("--no-cli", action="store_true", help="skip the `lmtool pretrain` CLI rows")
    ap.add_argument("--optimizers", default="adamw",
                    help="`lmtool pretrain` rows (CLI and in-process), one per --optimizer "
                         "(adamw,muon)")
    ap.add_argument("--positions", default="learned", choices=("learned", "rotary"),
                    help="lmtool's positions (HF's stay learned: rotary is not identical)")
    ap.add_argument("--profile", type=int, default=0, metavar="STEPS",
                    help="then profile each bare row for STEPS steps: its costliest ops")
    ap.add_argument("--nanogpt", type=Path,
                    help="a nanoGPT checkout with data/shakespeare_char prepared: run its "
                         "train.py at the baby config, causal (not round robin: after the rows)")
    args = ap.parse_args()

    device = resolve_device(args.device)
    default_dtype = resolve_precision("auto", device)
    try:
        import transformers

        have_hf = not args.no_hf
        transformers.logging.set_verbosity_error()
    except ImportError:
        have_hf = False
        print("transformers is not installed: lmtool rows only", file=sys.stderr)

    if args.data:
        text = args.data.read_text(encoding="utf-8")
    else:  # random characters: the same speed as any text, and no corpus needed
        rng = random.Random(0)
        chars = string.ascii_letters + " .,;:!?'\n-&$3"  # 65, as tinyshakespeare
        text = "".join(rng.choice(chars) for _ in range(300_000))
    work = Path(tempfile.mkdtemp(prefix="lmtool-bench-"))
    shards = write_shards(text[: int(0.9 * len(text))], work)
    from lmtool.text.tokenizer import load_tokenizer

    tok = load_tokenizer(shards / "tokenizer.json")
    vocab = tok.get_vocab_size()  # the chars + lmtool's 7 special tokens
    data = None
    if args.data:
        ids = torch.tensor(tok.encode(text).ids, dtype=torch.long)
        split = int(0.9 * len(ids))  # nanoGPT's split: first 90% train, last 10% validation
        data = (ids[:split], ids[split:])

    low = default_dtype or torch.bfloat16
    peaks = {d: max(matmul_peak(d, device, n) for n in (1024, 2048)) for d in (torch.float32, low)}
    print(
        f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}; "
        f"CPU {describe_cpu()}; "
        f"--precision auto here: {describe_precision('auto', device)}; matmul peak "
        + ", ".join(f"{dtype_name(d)} {g:.0f} GFLOP/s" for d, g in peaks.items())
    )
    try:
        for cname in args.configs.split(","):
            layers, heads, dim, context, batch = CONFIGS[cname]
            for objective in args.objectives.split(","):
                run_one(args, device, default_dtype, have_hf, peaks, data, vocab, shards, work,
                        cname, objective, layers, heads, dim, context, batch)
    finally:
        import shutil

        shutil.rmtree(work, ignore_errors=True)


def run_one(args, device, default_dtype, have_hf, peaks, data, vocab, shards, work,
            cname, objective, layers, heads, dim, context, batch) -> None:
    shape = (objective, layers, heads, dim, context, vocab)
    hf_name = "HF GPT-2" if objective == "causal" else "HF BERT"
    dtypes = [None] if args.no_bf16 else [None, default_dtype or torch.bfloat16]
    if args.no_bf16 and default_dtype is not None:
        dtypes.append(default_dtype)  # the pretrain row's twin
    rows = []
    for lib, label in [("lmtool", "lmtool")] + ([("hf", hf_name)] if have_hf else []):
        for dtype in dtypes:
            for fused in (False, True):
                torch.manual_seed(0)
                model = (lmtool_model(*shape, args.positions) if lib == "lmtool"
                         else hf_model(*shape)).to(device).train()
                loss = lmtool_loss(model) if lib == "lmtool" else hf_loss
                opt = torch.optim.AdamW(model.parameters(), lr=args.lr, fused=fused or None)
                name = f"{label} {dtype_name(dtype)} {'fused AdamW' if fused else 'AdamW'}"
                batches = Batches(objective, vocab, context, batch, data and data[0])
                rows.append(Row(name, model, loss, opt, batches, dtype))

    bare = list(rows)
    rows += round_robin(args, rows, shape, batch, shards, work, default_dtype, device)
    if args.nanogpt and cname == "baby" and objective == "causal":
        times = run_nanogpt(args.nanogpt, layers, heads, dim, context, batch,
                            iters=args.warmup + args.rounds * args.steps + 5)
        rows.append(Row("nanoGPT train.py fp32 (vocab 65, AdamW)", None, None, None, None,
                        None, [t / 1e3 for t in times]))

    flops = flops_per_step(layers, dim, context, batch, vocab)
    tokens = batch * context
    ms = {r.name: statistics.median(r.times) * 1e3 for r in rows}
    base = f"{hf_name} fp32 AdamW" if have_hf else rows[0].name
    best_hf = min((v for k, v in ms.items() if k.startswith("HF")), default=ms[base])
    print(f"\n{cname} ({layers} layers, {heads} heads, width {dim}, context {context}, "
          f"batch {batch}, vocab {vocab}), {objective}: {args.rounds} x {args.steps} timed "
          f"steps per row, speed ratios vs {base} and vs the fastest HF row")
    loss_name = "val loss" if data else "loss"
    print(f"{'':44} {'ms/step':>8} {'tokens/s':>9} {'vs ref':>6} {'vs HF*':>6} {'MFU':>5} "
          f"{loss_name:>8}")
    for r in rows:
        peak = peaks.get(r.dtype or torch.float32, peaks[torch.float32])
        mfu = flops / (ms[r.name] / 1e3) / (peak * 1e9)
        if r.model is None or not (data or r.losses):
            loss = float("nan")
        elif data:
            loss = val_loss(r, Batches(objective, vocab, context, batch, data[1]), device)
        else:  # random ids: the last train losses only show that nothing diverged
            loss = statistics.mean(r.losses[-3:])
        print(f"{r.name:44} {ms[r.name]:8.1f} {tokens / ms[r.name] * 1e3:9.0f} "
              f"{ms[base] / ms[r.name]:6.2f} {best_hf / ms[r.name]:6.2f} {mfu:5.0%} {loss:8.4f}")
    for r in rows:
        if r.twin in ms:
            print(f"{r.name} costs {ms[r.name] / ms[r.twin] - 1:+.1%} per step against "
                  f"the bare loop doing the same maths ({r.twin})")
    if have_hf:
        print(DIFFERENCES[objective])
    if args.profile:
        profile_rows(bare, device, args.profile)


def short_op(name: str) -> str:
    return (name.removeprefix("aten::")
            .replace("_scaled_dot_product_flash_attention_for_cpu", "flash_attention"))


def profile_rows(rows: list[Row], device: torch.device, steps: int) -> None:
    """Each bare row's costliest ops under torch.profiler: share of the row's op time and
    calls a step (where two libraries doing the same maths spend it differently)."""
    from torch.profiler import profile

    print(f"\nprofile, {steps} steps per row: op, share of the step's op time, calls a step")
    for row in rows:
        with profile() as prof:
            for _ in range(steps):
                step(row, device)
        events = prof.key_averages()
        total = sum(e.self_cpu_time_total for e in events)
        top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:7]
        print(f"{row.name}: " + ", ".join(
            f"{short_op(e.key)} {e.self_cpu_time_total / total:.0%} "
            f"({e.count // steps})" for e in top))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
