"""ULMFiT quality on SST-2: pre-train on WikiText-2, fine-tune the LM on SST-2's training
text, train classifiers, score them on SST-2 dev and test. Not a test.

    python benchmarks/ulmfit.py --out ulmfit-runs --budget 25      # every row (hours)
    python benchmarks/ulmfit.py --out ulmfit-runs --rows awd-10%     # one row at a time
    python benchmarks/ulmfit.py --out ulmfit-runs --table            # the table so far

Resumable: every stage writes into --out (tokenizer, shards, language models, label
subsets, classifiers) and is skipped when its output is there; every finished row is a
line of --out/results.jsonl, and a row already there is not run again. So the table can
be rebuilt a row at a time, in as many sittings as the machine allows. Quality runs are
bounded by time (--budget minutes of pre-training per language model, at the small
preset) and by epochs, not by the machine being quiet: they can share the CPU.

Rows (the issue's table): the AWD-LSTM with the full recipe on 100, 1,000, 10% and all
training labels; the same classifier from random weights on 10% and all labels; at 10%:
without LM fine-tuning, without gradual unfreezing, without discriminative rates, and the
forward model alone vs forward + backward; the causal and the masked Transformer, full
recipe and from random weights, all labels. "From random weights" is a language model
trained for one step (the classifier's own training is the same as the full recipe's).
"""

from __future__ import annotations

import os
import sys

sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import argparse  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CORPORA = next((p for p in (ROOT.parent.parent / "shared" / "corpora",
                            Path("/work/shared/corpora")) if p.exists()), Path("corpora"))
WT2, SST2 = CORPORA / "wikitext-2", CORPORA / "sst2"

# name: (language model, labels, classifier overrides, ensemble with the backward LM)
LMS = {  # name: (arch, objective, backward)
    "awd": ("lstm", "causal", False),
    "awd-bwd": ("lstm", "causal", True),
    "tf-causal": ("transformer", "causal", False),
    "tf-masked": ("transformer", "masked", False),
}
ROWS = {
    "awd-100": ("awd:ft", "100", {}, False),
    "awd-1000": ("awd:ft", "1000", {}, False),
    "awd-10%": ("awd:ft", "10%", {}, False),
    "awd-all": ("awd:ft", "all", {}, False),
    "awd-random-10%": ("awd:random", "10%", {}, False),
    "awd-random-all": ("awd:random", "all", {}, False),
    "awd-10%-no-lm-finetune": ("awd:pre", "10%", {}, False),
    "awd-10%-no-gradual-unfreezing": ("awd:ft", "10%", {"unfreeze_start": 0}, False),
    "awd-10%-no-discriminative": ("awd:ft", "10%", {"discriminative": 1.0}, False),
    "awd-10%-fwd+bwd": ("awd:ft", "10%", {}, True),
    "tf-causal-all": ("tf-causal:ft", "all", {}, False),
    "tf-causal-random-all": ("tf-causal:random", "all", {}, False),
    "tf-masked-all": ("tf-masked:ft", "all", {}, False),
    "tf-masked-random-all": ("tf-masked:random", "all", {}, False),
}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Bench:
    def __init__(self, out: Path, budget_min: float, lm_epochs: float, vocab: int, seed: int):
        self.out, self.budget, self.lm_epochs = out, budget_min, lm_epochs
        self.vocab, self.seed = vocab, seed
        out.mkdir(parents=True, exist_ok=True)

    # --- data ------------------------------------------------------------------------

    def tokenizer(self) -> Path:
        from lmtool.text.labelled import iter_texts
        from lmtool.text.tokenizer import save_tokenizer, train_tokenizer

        path = self.out / "tok.json"
        if not path.exists():
            log("training the tokenizer on WikiText-2 train + SST-2 train text")
            sst = self.out / "sst2-train.txt"
            sst.write_text("\n\n".join(iter_texts(SST2 / "train.tsv")) + "\n")
            tok = train_tokenizer([WT2 / "train.txt", sst], kind="bpe", vocab_size=self.vocab)
            save_tokenizer(tok, path)
        return path

    def shards(self, name: str, text: Path) -> Path:
        from lmtool.text.encode import encode_corpus

        path = self.out / f"data-{name}"
        if not path.exists():
            log(f"encoding {text}")
            encode_corpus([text], self.tokenizer(), path, val_fraction=0.05, seed=self.seed)
        return path

    def labels(self, subset: str) -> Path:
        """SST-2 train, or a seeded subset of it: "100", "1000", "10%"."""
        from lmtool.text.labelled import iter_labelled

        if subset == "all":
            return SST2 / "train.tsv"
        path = self.out / f"sst2-train-{subset.replace('%', 'pct')}.tsv"
        if not path.exists():
            rows = [(e.label, e.text) for e in iter_labelled(SST2 / "train.tsv")]
            n = len(rows) // 10 if subset.endswith("%") else int(subset)
            rows = random.Random(self.seed).sample(rows, n)
            path.write_text("label\ttext\n" + "".join(f"{a}\t{b}\n" for a, b in rows))
        return path

    # --- language models ---------------------------------------------------------------

    def lm(self, spec: str) -> Path:
        """"NAME:pre" pre-trained on WikiText-2, "NAME:ft" then fine-tuned on SST-2's
        text, "NAME:random" one step of training (random weights)."""
        from lmtool.training import finetune_lm, pretrain

        name, stage = spec.split(":")
        arch, objective, backward = LMS[name]
        path = self.out / f"lm-{name}-{stage}"
        exists = (path / "model.safetensors").exists()
        if stage == "ft":
            if not exists:
                base = self.lm(f"{name}:pre")
                log(f"fine-tuning {name} on SST-2's training text ({self.lm_epochs} epochs)")
                finetune_lm(base, [self.out / "sst2-train.txt"], path, force=True,
                            overrides=dict(epochs=self.lm_epochs))
            return path
        if stage == "random":
            if not exists:
                pretrain(self.shards("wt2", WT2 / "train.txt"), path, arch=arch,
                         objective=objective, preset="small", sample_chars=0, force=True,
                         overrides=dict(backward=backward, max_steps=1, eval_every=0))
            return path
        # Pre-training resumes until its time budget is spent (done: nothing to do).
        log(f"pre-training {name} for {self.budget} minutes in all")
        if exists:
            pretrain(self.shards("wt2", WT2 / "train.txt"), path, resume=True, sample_chars=0,
                     overrides=dict(max_time=self.budget * 60.0))
        else:
            pretrain(self.shards("wt2", WT2 / "train.txt"), path, arch=arch,
                     objective=objective, preset="small", sample_chars=0, force=True,
                     overrides=dict(backward=backward, max_time=self.budget * 60.0))
        return path

    # --- rows ----------------------------------------------------------------------------

    def done(self) -> dict[str, dict]:
        path = self.out / "results.jsonl"
        if not path.exists():
            return {}
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return {r["row"]: r for r in rows}

    def run_row(self, row: str) -> dict:
        from lmtool.inference.classify import evaluate_classifier

        if row in self.done():
            return self.done()[row]
        spec, subset, overrides, ensemble = ROWS[row]
        self.tokenizer()
        lm = self.lm(spec)
        labels = self.labels(subset)
        clf = self.out / f"clf-{row}"
        t0 = time.perf_counter()
        log(f"row {row}: classifier from {lm.name} on {labels.name}")
        self.classifier(lm, labels, clf, overrides)
        others = []
        if ensemble:
            others.append(self.classifier(self.lm("awd-bwd:ft"), labels,
                                          self.out / f"clf-{row}-bwd", overrides))
        result = {"row": row, "lm": spec, "labels": subset, "overrides": overrides,
                  "ensemble": ensemble, "minutes": round((time.perf_counter() - t0) / 60, 1)}
        for split in ("dev", "test"):
            scored = evaluate_classifier(clf, SST2 / f"{split}.tsv", ensemble=others)
            result[split] = round(scored["accuracy"], 4)
        config = json.loads((clf / "config.json").read_text())
        result["train_documents"] = config["data"]["train_documents"]
        result["best_epoch"] = (config.get("best") or {}).get("epoch")
        with open(self.out / "results.jsonl", "a") as f:
            f.write(json.dumps(result) + "\n")
        log(f"row {row}: dev {result['dev']}, test {result['test']}")
        return result

    def classifier(self, lm: Path, labels: Path, out: Path, overrides: dict) -> Path:
        """Train (or go on training, after an interruption) a classifier."""
        from lmtool.training import finetune_classifier

        resume = (out / "trainer").exists()
        finetune_classifier(lm, labels, out, valid=SST2 / "dev.tsv", resume=resume,
                            force=not resume, overrides={} if resume else overrides)
        return out

    def table(self) -> str:
        done = self.done()
        lines = ["| row | labels | dev | test |", "|---|---:|---:|---:|"]
        for row in ROWS:
            if row in done:
                r = done[row]
                lines.append(f"| {row} | {r['labels']} ({r['train_documents']:,}) | "
                             f"{r['dev']:.4f} | {r['test']:.4f} |")
            else:
                lines.append(f"| {row} | | not run | |")
        return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("ulmfit-runs"))
    parser.add_argument("--rows", default=",".join(ROWS), help="comma-separated: " +
                        ", ".join(ROWS))
    parser.add_argument("--budget", type=float, default=25.0,
                        help="minutes of pre-training per language model (small preset)")
    parser.add_argument("--lm-epochs", type=float, default=2.0,
                        help="epochs of LM fine-tuning on SST-2's training text")
    parser.add_argument("--vocab", type=int, default=16000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--table", action="store_true", help="print the table and stop")
    args = parser.parse_args()
    bench = Bench(args.out, args.budget, args.lm_epochs, args.vocab, args.seed)
    if not args.table:
        for row in args.rows.split(","):
            bench.run_row(row.strip())
    print(bench.table())


if __name__ == "__main__":
    main()
