"""ULMFiT on SST-2: does transfer learning work? Not a test: long runs, figures printed.

    python benchmarks/ulmfit.py --list                      # the rows and what each trains
    python benchmarks/ulmfit.py --wrap /work/tools/cpu-shared --threads 1   # every row
    python benchmarks/ulmfit.py --rows awd-10%,awd-all      # some rows (their stages first)
    python benchmarks/ulmfit.py --table                     # the table of the rows done
    python benchmarks/ulmfit.py --measure                   # seconds per step, for the budget

The pipeline, every stage one `lmtool` command in a process of its own (so an
exclusive benchmark of someone else can run between two stages), written under --out:

1. `tokenize train`: a lower-cased byte-level BPE (16,000) on WikiText-2 train + the
   text of SST-2 train (SST-2 is lower-cased; so the LM reads WikiText lower-cased too).
2. `tokenize encode` WikiText-2 train into shards (1% of its paragraphs held out).
3. `pretrain` each language model at the small preset for a number of steps (the
   budget: --pretrain-steps, about 25 minutes each on a quiet 2-core CPU, see
   --measure); then `evaluate` it on WikiText-2 valid.txt.
4. `finetune lm` on the text column of SST-2 train.tsv (ULMFiT stage 2, its defaults:
   discriminative rates and STLR; --lm-epochs).
5. `finetune classifier` (stage 3) on 100, 1,000, 10% or all of SST-2 train's labels
   (seeded samples), validated on SST-2 dev (the best epoch is the one kept).
6. `evaluate` on SST-2 dev and test (`--ensemble` for forward + backward).

What the classifier rows change (see ROWS): the recipe is lmtool's defaults (ULMFiT's:
gradual unfreezing from the head down, discriminative rates / 2.6, STLR, lr 0.01,
batch 32), with the length of a stage (epochs between unfreezing two layer groups)
set by the size of the labelled set, so that a stage is 40 to 1,000 steps: 10 epochs
for 100 labels, 2 for 1,000, 1 for 10% (the paper's), 0.5 for all 67,349. From-scratch
rows keep the architecture and tokenizer but not the weights (`--from-scratch`) and
train every layer at one rate from the start (--scratch-lr-*), as long as the full
recipe: freezing random layers or slowing them down helps nothing.

Resumable: a stage whose output has a `.done.json` beside it is skipped (the file holds
its command; a different command for the same output is refused: use another --out);
a stage cut short is continued with `--resume`; a finished row is `results/ROW.json`.
Seedable: --seed goes to every stage and to the label samples. Quality is bounded by
steps and epochs, never by time, so the stages can share a busy CPU.
"""

from __future__ import annotations

import os
import sys

# benchmarks/tokenize.py would shadow the standard `tokenize` module (see pretrain.py).
sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import argparse  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CORPORA = next((p for p in (ROOT.parent.parent / "shared" / "corpora",
                            Path("/work/shared/corpora")) if p.exists()), Path("corpora"))
VOCAB = 16000


@dataclass(frozen=True)
class LM:
    """A language model: how it is pre-trained, and its classifier's layer groups."""

    what: str
    flags: tuple[str, ...]
    groups: int  # embedding, blocks or LSTM layers, head


LMS = {
    "awd": LM("AWD-LSTM", ("--arch", "lstm"), 5),
    "awd-bwd": LM("AWD-LSTM, backward", ("--arch", "lstm", "--backward"), 5),
    # Batch 16 x 256 tokens: 64 (the preset's) would leave a few hundred steps in the budget.
    "causal": LM("causal Transformer", ("--objective", "causal", "--batch-size", "16"), 8),
    "masked": LM("masked Transformer", ("--objective", "masked", "--batch-size", "16"), 8),
}
PRETRAIN_STEPS = {"awd": 1700, "awd-bwd": 1700, "causal": 450, "masked": 850}
SUBSETS = {"100": 100, "1000": 1000, "10%": None, "all": None}  # None: a fraction
STAGE_EPOCHS = {"100": 10.0, "1000": 2.0, "10%": 1.0, "all": 0.5}
SCRATCH = ("--from-scratch", "--unfreeze-every", "0", "--discriminative", "1")


@dataclass(frozen=True)
class Clf:
    """A classifier: its language model (fine-tuned on SST-2 text or not), its labels,
    and what it changes in the recipe."""

    lm: str
    labels: str
    finetuned: bool = True
    flags: tuple[str, ...] = ()


@dataclass(frozen=True)
class Row:
    what: str
    classifiers: tuple[str, ...]  # one, or several whose probabilities are averaged


CLASSIFIERS = {
    "awd-100": Clf("awd", "100"),
    "awd-1000": Clf("awd", "1000"),
    "awd-10%": Clf("awd", "10%"),
    "awd-all": Clf("awd", "all"),
    "awd-scratch-10%": Clf("awd", "10%", False, SCRATCH),
    "awd-scratch-all": Clf("awd", "all", False, SCRATCH),
    "awd-no-lm-ft-10%": Clf("awd", "10%", False),
    "awd-no-gu-10%": Clf("awd", "10%", True, ("--unfreeze-every", "0")),
    "awd-no-disc-10%": Clf("awd", "10%", True, ("--discriminative", "1")),
    "awd-bwd-10%": Clf("awd-bwd", "10%"),
    "causal-all": Clf("causal", "all"),
    "causal-scratch-all": Clf("causal", "all", False, SCRATCH),
    "masked-all": Clf("masked", "all"),
    "masked-scratch-all": Clf("masked", "all", False, SCRATCH),
}
ROWS = {
    "awd-100": Row("AWD-LSTM, full recipe", ("awd-100",)),
    "awd-1000": Row("AWD-LSTM, full recipe", ("awd-1000",)),
    "awd-10%": Row("AWD-LSTM, full recipe (forward only)", ("awd-10%",)),
    "awd-all": Row("AWD-LSTM, full recipe", ("awd-all",)),
    "awd-scratch-10%": Row("AWD-LSTM from random weights", ("awd-scratch-10%",)),
    "awd-scratch-all": Row("AWD-LSTM from random weights", ("awd-scratch-all",)),
    "awd-no-lm-ft-10%": Row("AWD-LSTM, without LM fine-tuning", ("awd-no-lm-ft-10%",)),
    "awd-no-gu-10%": Row("AWD-LSTM, without gradual unfreezing", ("awd-no-gu-10%",)),
    "awd-no-disc-10%": Row("AWD-LSTM, without discriminative rates", ("awd-no-disc-10%",)),
    "awd-bwd-10%": Row("AWD-LSTM, backward only", ("awd-bwd-10%",)),
    "awd-fwd+bwd-10%": Row("AWD-LSTM, forward + backward (classify --ensemble)",
                           ("awd-10%", "awd-bwd-10%")),
    "causal-all": Row("causal Transformer, full recipe", ("causal-all",)),
    "causal-scratch-all": Row("causal Transformer from random weights",
                              ("causal-scratch-all",)),
    "masked-all": Row("masked Transformer, full recipe", ("masked-all",)),
    "masked-scratch-all": Row("masked Transformer from random weights",
                              ("masked-scratch-all",)),
}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class StageFailed(Exception):
    pass


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.out: Path = args.out.resolve()
        self.wt2, self.sst2 = args.corpora / "wikitext-2", args.corpora / "sst2"
        self.seed: int = args.seed
        self.wrap: list[str] = args.wrap.split() if args.wrap else []
        self.threads: int | None = args.threads
        self.steps = {**PRETRAIN_STEPS, **parse_steps(args.pretrain_steps)}
        self.lm_epochs: float = args.lm_epochs
        self.scratch_lr = {"awd": args.scratch_lr_lstm, "causal": args.scratch_lr_transformer,
                           "masked": args.scratch_lr_transformer}
        for sub in ("logs", "lm", "clf", "labels", "results"):
            (self.out / sub).mkdir(parents=True, exist_ok=True)

    # --- running one stage ---------------------------------------------------------------

    def stage(self, output: Path, argv: list[str], *, resumable: bool = True) -> dict:
        """Run `lmtool ARGV` unless `output` is done; return its record (with stdout)."""
        done = output.with_name(output.name + ".done.json")
        if done.exists():
            record = json.loads(done.read_text())
            if record["argv"] != argv:
                raise StageFailed(f"{output} was made by another command:\n  "
                                  f"{' '.join(record['argv'])}\nremove it (and what was "
                                  f"made from it) or pass another --out")
            return record
        again = output.exists() and (output / "config.json").exists()
        extra = ["--resume"] if resumable and again else (["--force"] if output.exists() else [])
        env = dict(os.environ)
        if self.threads:
            env["OMP_NUM_THREADS"] = str(self.threads)
        command = [*self.wrap, sys.executable, "-m", "lmtool", *argv, *extra]
        log(f"{'resuming' if '--resume' in extra else 'running'}: lmtool {' '.join(argv)}")
        start = time.time()
        with open(self.out / "logs" / f"{output.name}.log", "a") as err:
            err.write(f"$ lmtool {' '.join(argv + extra)}\n")
            err.flush()
            proc = subprocess.run(command, stdout=subprocess.PIPE, stderr=err, text=True,
                                  env=env)
        if proc.returncode != 0:
            raise StageFailed(f"lmtool {argv[0]} exited {proc.returncode}; see "
                              f"{self.out / 'logs' / (output.name + '.log')}")
        record = {"argv": argv, "stdout": proc.stdout, "wall_s": round(time.time() - start),
                  "threads": self.threads, "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
        tmp = done.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=1))
        tmp.replace(done)
        return record

    # --- data ------------------------------------------------------------------------------

    def tokenizer(self) -> Path:
        text = self.out / "sst2-train.txt"  # the text column of train.tsv, a line each
        if not text.exists():
            lines = (self.sst2 / "train.tsv").read_text("utf-8").splitlines()[1:]
            write_atomic(text, "".join(line.split("\t", 1)[1] + "\n" for line in lines))
        path = self.out / "tok.json"
        self.stage(path, ["tokenize", "train", str(self.wt2 / "train.txt"), str(text),
                          "--lowercase", "--vocab-size", str(VOCAB), "-o", str(path)],
                   resumable=False)
        return path

    def shards(self) -> Path:
        path = self.out / "wt2"
        self.stage(path, ["tokenize", "encode", str(self.wt2 / "train.txt"), "-t",
                          str(self.tokenizer()), "-o", str(path), "--val-fraction", "0.01",
                          "--seed", str(self.seed)], resumable=False)
        return path

    def labels(self, subset: str) -> Path:
        """SST-2 train, or a seeded sample of its rows."""
        if subset == "all":
            return self.sst2 / "train.tsv"
        path = self.out / "labels" / f"train-{subset.replace('%', 'pct')}-seed{self.seed}.tsv"
        if not path.exists():
            header, *rows = (self.sst2 / "train.tsv").read_text("utf-8").splitlines()
            n = SUBSETS[subset] or len(rows) // 10
            sample = random.Random(self.seed).sample(rows, n)
            write_atomic(path, header + "\n" + "".join(r + "\n" for r in sample))
        return path

    # --- language models -------------------------------------------------------------------

    def pretrained(self, name: str) -> Path:
        path = self.out / "lm" / name
        self.stage(path, ["pretrain", str(self.shards()), "-o", str(path), "--preset", "small",
                          *LMS[name].flags, "--max-steps", str(self.steps[name]),
                          "--epochs", "1000",  # a budget in steps: --max-steps is a cap
                          "--seed", str(self.seed), "--eval-every", "250",
                          "--save-every", "100", "--log-every", "25"])
        self.stage(path.with_name(name + "-wt2-valid"),
                   ["evaluate", str(path), str(self.wt2 / "valid.txt"), "--format", "json"],
                   resumable=False)
        return path

    def finetuned(self, name: str) -> Path:
        path = self.out / "lm" / f"{name}-sst2"
        self.stage(path, ["finetune", "lm", str(self.pretrained(name)),
                          str(self.sst2 / "train.tsv"), "-o", str(path), "--epochs",
                          f"{self.lm_epochs:g}", "--seed", str(self.seed), "--save-every",
                          "100", "--json"])
        return path

    # --- classifiers and rows --------------------------------------------------------------

    def classifier(self, name: str) -> Path:
        spec = CLASSIFIERS[name]
        lm = self.finetuned(spec.lm) if spec.finetuned else self.pretrained(spec.lm)
        stage = STAGE_EPOCHS[spec.labels]
        flags = list(spec.flags)
        if "--unfreeze-every" not in flags:
            flags += ["--unfreeze-every", f"{stage:g}"]
        if spec.flags == SCRATCH:
            flags += ["--lr", f"{self.scratch_lr[spec.lm]:g}"]
        path = self.out / "clf" / name.replace("%", "pct")
        self.stage(path, ["finetune", "classifier", str(lm), str(self.labels(spec.labels)),
                          "-o", str(path), "--valid", str(self.sst2 / "dev.tsv"),
                          "--epochs", f"{LMS[spec.lm].groups * stage:g}", *flags,
                          "--seed", str(self.seed), "--json"])
        return path

    def row(self, name: str) -> dict:
        result_path = self.out / "results" / f"{name.replace('%', 'pct')}.json"
        if result_path.exists():
            return json.loads(result_path.read_text())
        row = ROWS[name]
        clfs = [self.classifier(c) for c in row.classifiers]
        result = {"row": name, "what": row.what, "labels": CLASSIFIERS[row.classifiers[0]].labels,
                  "classifiers": [str(c) for c in clfs]}
        ensemble = [a for c in clfs[1:] for a in ("--ensemble", str(c))]
        for split in ("dev", "test"):
            scored = self.stage(clfs[0].with_name(f"{clfs[0].name}{'-ens' if ensemble else ''}"
                                                  f"-{split}"),
                                ["evaluate", str(clfs[0]), str(self.sst2 / f"{split}.tsv"),
                                 *ensemble, "--format", "json"], resumable=False)
            scores = json.loads(scored["stdout"])
            result[split] = {"accuracy": scores["accuracy"], "macro_f1": scores["macro_f1"]}
        configs = [json.loads((c / "config.json").read_text()) for c in clfs]
        result["train_documents"] = configs[0]["data"]["train_documents"]
        result["best_epochs"] = [(c.get("best") or {}).get("epoch") for c in configs]
        result["epochs"] = [c["training"]["epochs"] for c in configs]
        write_atomic(result_path, json.dumps(result, indent=1))
        log(f"{name}: dev {result['dev']['accuracy']:.4f}, test {result['test']['accuracy']:.4f}")
        return result

    # --- reporting -------------------------------------------------------------------------

    def table(self) -> str:
        lines = ["| row | classifier | labels | SST-2 dev acc | test acc | best epoch / epochs |",
                 "|---|---|---:|---:|---:|---|"]
        for name, row in ROWS.items():
            path = self.out / "results" / f"{name.replace('%', 'pct')}.json"
            if not path.exists():
                lines.append(f"| {name} | {row.what} | | not run | | |")
                continue
            r = json.loads(path.read_text())
            epochs = ", ".join(f"{b:g} / {e:g}" for b, e in zip(r["best_epochs"], r["epochs"],
                                                                 strict=True))
            lines.append(f"| {name} | {row.what} | {r['labels']} ({r['train_documents']:,}) | "
                         f"{r['dev']['accuracy']:.4f} | {r['test']['accuracy']:.4f} | "
                         f"{epochs} |")
        return "\n".join(lines)

    def lm_table(self) -> str:
        """What each language model reached: WikiText-2 valid, SST-2 held-out before/after."""
        lines = ["| language model | pre-training steps | WikiText-2 valid | "
                 "SST-2 held-out before LM fine-tuning | after |", "|---|---:|---:|---:|---:|"]
        for name, lm in LMS.items():
            wiki = self.out / "lm" / f"{name}-wt2-valid.done.json"
            ft = self.out / "lm" / f"{name}-sst2.done.json"
            if not wiki.exists():
                continue
            w = json.loads(json.loads(wiki.read_text())["stdout"])
            cells = [figure(w)]
            if ft.exists():
                f = json.loads(json.loads(ft.read_text())["stdout"])
                cells += [figure(f["before"]), figure(f["after"])]
            else:
                cells += ["", ""]
            lines.append(f"| {lm.what} | {self.steps[name]:,} | " + " | ".join(cells) + " |")
        return "\n".join(lines)

    # --- the budget ------------------------------------------------------------------------

    def measure(self, steps: int) -> None:
        """Seconds per step of each pre-training, as the runs train (a few steps in a
        scratch directory; run under the exclusive lock for figures worth stating)."""
        import tempfile

        data = self.shards()
        with tempfile.TemporaryDirectory(dir=self.out) as tmp:
            for name, lm in LMS.items():
                if name == "awd-bwd":
                    continue  # the same model and cost as "awd"
                run = Path(tmp) / name
                subprocess.run([sys.executable, "-m", "lmtool", "pretrain", str(data), "-o",
                                str(run), "--preset", "small", *lm.flags, "--max-steps",
                                str(steps), "--epochs", "1000", "--log-every", "2",
                                "--eval-every", "100000",
                                "--seed", str(self.seed), "-q"], check=True)
                rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
                rows = [r for r in rows if "loss" in r]
                first, last = rows[0], rows[-1]  # from step 2 on: no first-step warm-up
                per_step = (last["elapsed_s"] - first["elapsed_s"]) / (last["step"] - first["step"])
                budget = self.steps[name] * per_step / 60
                print(f"{lm.what}: {per_step:.2f} s/step, {last['tokens_per_s']:,.0f} tokens/s; "
                      f"{self.steps[name]:,} steps = {budget:.1f} min")


def figure(metrics: dict) -> str:
    if "perplexity" in metrics:
        return f"perplexity {metrics['perplexity']:.1f}"
    return f"masked accuracy {metrics['accuracy']:.3f}"


def parse_steps(text: str | None) -> dict[str, int]:
    if not text:
        return {}
    out = {}
    for item in text.split(","):
        name, _, steps = item.partition("=")
        if name not in LMS:
            raise SystemExit(f"ulmfit.py: --pretrain-steps: unknown model {name!r} "
                             f"(choose from {', '.join(LMS)})")
        out[name] = int(steps)
    return out


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, "utf-8")
    tmp.replace(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "ulmfit",
                        help="where every stage writes (default: runs/ulmfit)")
    parser.add_argument("--rows", default=",".join(ROWS),
                        help="comma-separated rows (default: all); see --list")
    parser.add_argument("--corpora", type=Path, default=CORPORA,
                        help="holding wikitext-2/ and sst2/ (default: the shared corpora)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--wrap", help="a command to run each stage under, e.g. "
                                       "/work/tools/cpu-shared")
    parser.add_argument("--threads", type=int, help="OMP_NUM_THREADS for each stage")
    parser.add_argument("--pretrain-steps", help="override budgets, e.g. awd=1500,causal=400 "
                                                 f"(default {PRETRAIN_STEPS})")
    parser.add_argument("--lm-epochs", type=float, default=1.0,
                        help="epochs of LM fine-tuning on SST-2's training text (1)")
    # At 0.01 (the full recipe's) the random AWD-LSTM never left the majority class on
    # SST-2's 10% (train loss 0.687 after 5 epochs); at 0.001 it reached 0.74 in 300 steps.
    parser.add_argument("--scratch-lr-lstm", type=float, default=1e-3,
                        help="lr of the AWD-LSTM classifiers from random weights (0.001)")
    parser.add_argument("--scratch-lr-transformer", type=float, default=1e-3,
                        help="lr of the Transformer classifiers from random weights (0.001)")
    parser.add_argument("--list", action="store_true", help="list the rows and stop")
    parser.add_argument("--table", action="store_true", help="print the tables and stop")
    parser.add_argument("--measure", type=int, nargs="?", const=12, metavar="STEPS",
                        help="time STEPS (12) pre-training steps of each model and stop")
    args = parser.parse_args()
    bench = Bench(args)
    if args.list:
        for name, row in ROWS.items():
            specs = [CLASSIFIERS[c] for c in row.classifiers]
            print(f"{name:22} {row.what}; labels {specs[0].labels}; "
                  + "; ".join(f"{s.lm}{' fine-tuned' if s.finetuned else ''} "
                              f"{' '.join(s.flags)}".strip() for s in specs))
        return
    if args.measure:
        bench.measure(args.measure)
        return
    if not args.table:
        rows = [r.strip() for r in args.rows.split(",") if r.strip()]
        unknown = [r for r in rows if r not in ROWS]
        if unknown:
            raise SystemExit(f"ulmfit.py: unknown row(s) {', '.join(unknown)}; see --list")
        try:
            for name in rows:
                bench.row(name)
        except StageFailed as e:
            raise SystemExit(f"ulmfit.py: {e}") from None
    print(bench.lm_table() + "\n\n" + bench.table())


if __name__ == "__main__":
    main()
