"""Translation, Multi30k German→English (issue 17): quality table and speed against transformers.

    python benchmarks/translate.py --list                        # rows and what each trains
    python benchmarks/translate.py --threads 2                   # every row, default budgets
    python benchmarks/translate.py --rows transformer --max-steps 6000 --threads 2
    python benchmarks/translate.py --max-steps transformer=6000,lstm-bahdanau=4000
    python benchmarks/translate.py --table                       # the tables of what is done
    python benchmarks/translate.py --measure 12 --threads 2      # seconds per training step
    python benchmarks/translate.py --speed --threads 2           # lmtool vs transformers
    python benchmarks/translate.py --denoising --threads 2       # BART pre-training, 10% of pairs
    python benchmarks/translate.py --speed --run runs/translate/mt/transformer-4500
    python benchmarks/translate.py --out /tmp/mt --limit 300 --max-steps 5 --eval-every 5 \
        --threads 1                                              # a smoke test: minutes

Not a test: long runs, figures printed. Data: ../shared/corpora/multi30k (train.de/en,
val.de/en, test_2016_flickr.de/en; never committed). Every stage is one `lmtool`
command in a process of its own, written under --out (runs/translate):

1. data/: the pairs as TSVs (source = German, target = English; a header row) for
   train, val and test_2016_flickr, and train.de, train.en, test.de as plain text
   (--limit N keeps the first N lines of every split: smoke tests only).
2. `tokenize train data/train.de data/train.en --kind bpe --vocab-size 8000 -o tok.json`,
   the issue's command: one byte-level BPE for both sides.
3. `pretrain data/train.tsv --objective seq2seq` for each row (--list): the Transformer
   (--preset small: 3+3 layers, width 256, 8 heads, the PyTorch tutorials' size), the
   LSTM with Bahdanau attention and without attention (--preset small: 2 layers, hidden
   512), each for --max-steps steps (`--epochs 1000`: pretrain's plan is 10 epochs
   for these presets and --max-steps only cuts a plan short, so a large plan makes the
   steps the binding budget and the schedule spans exactly them), validated on val
   (all of it) every --eval-every steps. Into mt/ROW-STEPS.
4. `evaluate RUN data/test.tsv --format json`, greedy and with `--beams 5`: sacrebleu's
   BLEU and chrF (signatures kept in the records).
5. `generate RUN --file data/test.de --format jsonl`: the greedy translations again,
   scored here by sacrebleu in buckets of source length (German words: 1-10, 11-15,
   16-20, 21+), the comparison the issue asks of the LSTM with and without attention.
   Their corpus BLEU must equal step 4's greedy BLEU; --table says if it does not.

--denoising D,N (3000,1500): what denoising pre-training is worth with a tenth of the
pairs (every tenth of train, 2,900), on the tiny Transformer (2+2 layers, width 128), the
same BPE: `pretrain data/mono.txt --objective denoising` for D steps (mono.txt: the German
and the English side of every training pair as plain text, a caption to a paragraph, so
one document each; no pair is seen aligned), then `finetune seq2seq` on the few pairs for
N steps, against `pretrain --objective seq2seq` on them for N steps from random weights;
both evaluated as above, greedy and beam 5. Into mt/bart-D, mt/few-bartD-N,
mt/few-scratch-N.

The training time in the table is the run's own clock (the last `elapsed_s` of
RUN/metrics.jsonl: every step, validations and checkpoints included) and the CPU time
of its process (user + system, all threads; what a busy or paused machine does not
inflate, for the part last run when the run was resumed). Budgets are in steps, never
seconds, so the table is the same on any CPU and the stages can share a
busy one. Resumable: a stage whose output has a `.done.json` beside it is skipped (a
different command for the same output is refused); a run cut short is continued with
`--resume`.

--speed: lmtool's Transformer at the quality row's size (its preset, the BPE's
vocabulary; random weights, or a trained run's with --run) against transformers'
MarianMTModel of the same config (layers, width, heads, FFN width, vocabulary, shared
and tied embeddings, dropout, pad/BOS/EOS ids; Marian is post-norm with sinusoidal
positions and biases, lmtool pre-norm with rotary positions and none), in this one
process, on the same token ids (Multi30k test sources encoded with the BPE, 32 to a
batch, in file order):
- translation sentences/s, greedy and beam 5 (length penalty 1), both made to write
  exactly --new-tokens tokens per sentence (lmtool: stop_at_eos=False; transformers:
  min_new_tokens = max_new_tokens), since random weights would stop anywhere; both
  rule out the special tokens lmtool never writes;
- training tokens/s (source and target tokens, [EOS] included, no padding): forward,
  label-smoothed cross-entropy, backward, gradient clipping at 1 and a fused AdamW
  step (lmtool's own optimiser builder, for both), on the same length-sorted batches
  of --batch-size training pairs, dropout on.
At fp32 and at bf16 (translation: bf16 weights; training: bf16 autocast), the two
libraries taking turns, best of 2 (after a warm-up: one batch, two training steps).
Ratios are lmtool / transformers; the issue's goals are >= 2x (translation) and >= 1.3x
(training). Needs transformers (pip install -e '.[bench]'). --speed and --measure print
the CPU's bf16 hardware (AMX, AVX512-BF16, or neither) and what `--precision auto`
chose from it first; a training run logs them to stderr.

Cost, from a smoke test (300 pairs, 1 thread, nice 10, on this 2-core machine while it
ran other benchmarks; expect less alone at 2 threads: run --measure first): training
1.5 s/step (Transformer), 4.6 (LSTM + Bahdanau), 2.7 (LSTM, no attention), so the
default 4,500 steps a row are at most about 2, 6 and 3.5 hours; each row's evaluation
and generation stages take minutes. --speed at the defaults: about half an hour.
"""

from __future__ import annotations

import os
import sys

# benchmarks/tokenize.py would shadow the standard `tokenize` module (see pretrain.py).
sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from functools import partial  # noqa: E402
from pathlib import Path  # noqa: E402

from benchmarks.cli_rows import machine_line  # noqa: E402
from benchmarks.stages import (  # noqa: E402
    StageFailed,
    Stages,
    log,
    pick,
    threads_used,
    write_atomic,
)

ROOT = Path(__file__).resolve().parent.parent
CORPORA = next((p for p in (ROOT.parent / "shared" / "corpora",
                            ROOT.parent.parent / "shared" / "corpora",
                            Path("/work/shared/corpora")) if p.exists()), Path("corpora"))
VOCAB = 8000
SPLITS = {"train": "train", "val": "val", "test": "test_2016_flickr"}  # ours: Multi30k's
BUCKETS = ((1, 10), (11, 15), (16, 20), (21, None))  # source words
BEAMS = 5
GOALS = {"transformer": 35.0, "lstm-bahdanau": 28.0}  # BLEU (issue 17, section 3)
GOAL_MINUTES = 60  # of training, for the Transformer's goal
GOAL_BEAM_GAIN = 0.5  # BLEU, beam 5 over greedy
GOAL_TRANSLATE, GOAL_TRAIN = 2.0, 1.3  # lmtool / transformers
FEW = 10  # --denoising: every FEW-th training pair is kept, a tenth of them
DENOISING_FLAGS = ("--arch", "transformer", "--preset", "tiny")  # 2+2 layers, 128 wide
DENOISING_STEPS = (3000, 1500)  # denoising pre-training, then training on the few pairs


@dataclass(frozen=True)
class Row:
    what: str
    flags: tuple[str, ...]
    steps: int  # the default budget (--max-steps changes it)


# Default budgets: about 10 epochs of 29,000 pairs at 64 a batch (the presets' plan, and
# the tutorials' "10+ epochs"); see --measure for what a step costs here.
ROWS = {
    "transformer": Row("Transformer (small: 3+3 layers, 256 wide, 8 heads)",
                       ("--arch", "transformer", "--preset", "small"), 4500),
    "lstm-bahdanau": Row("LSTM + Bahdanau attention (small: 2 layers, hidden 512)",
                         ("--arch", "lstm", "--attention", "bahdanau", "--preset", "small"),
                         4500),
    "lstm-none": Row("LSTM, no attention (small: 2 layers, hidden 512)",
                     ("--arch", "lstm", "--attention", "none", "--preset", "small"), 4500),
}


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.out: Path = args.out.resolve()
        self.corpus: Path = args.corpora / "multi30k"
        self.seed: int = args.seed
        self.threads: int | None = args.threads
        self.limit: int | None = args.limit
        self.eval_every: int = args.eval_every
        self.stage = Stages(self.out, self.threads).run
        for sub in ("logs", "data", "mt"):
            (self.out / sub).mkdir(parents=True, exist_ok=True)

    # --- data ------------------------------------------------------------------------------

    def data(self) -> Path:
        """data/: the pairs TSVs and plain-text sides (written once per --limit)."""
        folder = self.out / "data"
        done = folder / "data.done.json"
        if done.exists():
            made = json.loads(done.read_text())["limit"]
            if made != self.limit:
                raise StageFailed(f"{folder} holds the data of --limit {made}; pass another "
                                  f"--out (or remove {folder})")
            return folder
        for ours, theirs in SPLITS.items():
            sides = [read_lines(self.corpus / f"{theirs}.{lang}", self.limit)
                     for lang in ("de", "en")]
            if len(sides[0]) != len(sides[1]):
                raise StageFailed(f"{self.corpus}/{theirs}.de and .en differ in length")
            # One training line holds a tab: a TSV field cannot.
            de, en = ([" ".join(s.split()) for s in side] for side in sides)
            write_atomic(folder / f"{ours}.tsv", "source\ttarget\n" + "".join(
                f"{s}\t{t}\n" for s, t in zip(de, en, strict=True)))
            if ours in ("train", "test"):
                write_atomic(folder / f"{ours}.de", "".join(s + "\n" for s in de))
            if ours == "train":
                write_atomic(folder / f"{ours}.en", "".join(t + "\n" for t in en))
        write_atomic(done, json.dumps({"limit": self.limit}))
        return folder

    def tokenizer(self) -> Path:
        data = self.data()
        path = self.out / "tok.json"
        self.stage(path, ["tokenize", "train", str(data / "train.de"), str(data / "train.en"),
                          "--kind", "bpe", "--vocab-size", str(VOCAB), "-o", str(path)],
                   resumable=False)
        return path

    # --- runs ------------------------------------------------------------------------------

    def run_path(self, row: str, steps: int) -> Path:
        return self.out / "mt" / f"{row}-{steps}"

    def train(self, row: str, steps: int) -> Path:
        tok, data = self.tokenizer(), self.data()
        path = self.run_path(row, steps)
        self.stage(path, ["pretrain", str(data / "train.tsv"), "--objective", "seq2seq",
                          *ROWS[row].flags, "--tokenizer", str(tok),
                          "--valid", str(data / "val.tsv"), *self.budget(steps, save=True),
                          "-o", str(path)])
        return path

    def budget(self, steps: int, *, save: bool = False) -> list[str]:
        """A training stage's flags: STEPS steps (`--epochs 1000`: --max-steps only cuts a
        plan short), validated on all of val every --eval-every steps, logged as JSON."""
        flags = ["--max-steps", str(steps), "--epochs", "1000",
                 "--eval-every", str(self.eval_every), "--eval-batches", "0"]
        if save:
            flags += ["--save-every", str(min(500, self.eval_every))]
        return flags + ["--log-every", "25", "--seed", str(self.seed), "--format", "json"]

    def evaluate(self, run: Path, beams: int) -> dict:
        test = self.data() / "test.tsv"
        record = self.stage(run.with_name(f"{run.name}-test-beam{beams}"),
                            ["evaluate", str(run), str(test), "--beams", str(beams),
                             "--format", "json"], resumable=False)
        return json.loads(record["stdout"])

    def translations(self, run: Path) -> list[dict]:
        """The greedy translations of test.de, in order, as `generate` writes them (up to
        the context, as `evaluate` lets them run)."""
        context = json.loads((run / "config.json").read_text())["model"]["context"]
        record = self.stage(run.with_name(f"{run.name}-test-greedy"),
                            ["generate", str(run), "--file", str(self.out / "data" / "test.de"),
                             "--max-new-tokens", str(context), "--format", "jsonl"],
                            resumable=False)
        return [json.loads(line) for line in record["stdout"].splitlines() if line.strip()]

    def row(self, row: str, steps: int) -> None:
        run = self.train(row, steps)
        greedy, beam = self.evaluate(run, 1), self.evaluate(run, BEAMS)
        self.translations(run)
        log(f"{row} ({steps} steps): BLEU greedy {greedy['bleu']:.2f}, beam {BEAMS} "
            f"{beam['bleu']:.2f}; chrF {greedy['chrf']:.2f} / {beam['chrf']:.2f}")

    # --- the budget ------------------------------------------------------------------------

    def measure(self, rows: list[str], steps: int) -> None:
        """Seconds per training step of each row (a few steps in a scratch directory)."""
        import tempfile

        tok, data = self.tokenizer(), self.data()
        env = dict(os.environ)
        if self.threads:
            env["OMP_NUM_THREADS"] = str(self.threads)
        for row in rows:
            with tempfile.TemporaryDirectory(dir=self.out) as tmp:
                run = Path(tmp) / row
                subprocess.run([sys.executable, "-m", "lmtool", "pretrain",
                                str(data / "train.tsv"), "--objective", "seq2seq",
                                *ROWS[row].flags, "--tokenizer", str(tok),
                                "--valid", str(data / "val.tsv"), "--max-steps", str(steps),
                                "--epochs", "1000", "--log-every", "2",
                                "--eval-every", "100000", "-q", "-o", str(run)],
                               check=True, env=env)
                rows_ = [r for r in read_metrics(run) if "loss" in r]
                first, last = rows_[0], rows_[-1]  # from step 2 on: no first-step warm-up
                per_step = ((last["elapsed_s"] - first["elapsed_s"])
                            / max(last["step"] - first["step"], 1))
                budget = ROWS[row].steps
                print(f"{row}: {per_step:.3f} s/step, {last['tokens_per_s']:,.0f} tokens/s "
                      f"({threads_used(self.threads)} threads); {budget:,} steps = "
                      f"{budget * per_step / 60:.1f} min", flush=True)

    # --- denoising pre-training with a tenth of the pairs ---------------------------------

    def few_data(self) -> tuple[Path, Path]:
        """data/few.tsv (every FEW-th training pair) and data/mono.txt (both sides of every
        training pair as plain text, a caption to a paragraph: one document each)."""
        data = self.data()
        few, mono = data / "few.tsv", data / "mono.txt"
        if not (few.exists() and mono.exists()):
            pairs = read_pairs(data / "train.tsv")
            write_atomic(few, "source\ttarget\n" + "".join(
                f"{s}\t{t}\n" for s, t in pairs[::FEW]))
            sides = [s for s, _ in pairs] + [t for _, t in pairs]  # German, then English
            write_atomic(mono, "".join(f"{line}\n\n" for line in sides))
        return few, mono

    def denoising(self, denoise_steps: int, steps: int) -> None:
        """The same tiny Transformer trained on the few pairs from random weights, and
        fine-tuned on them (`finetune seq2seq`) from a denoising run on mono.txt."""
        tok, (few, mono) = self.tokenizer(), self.few_data()
        val = str(self.data() / "val.tsv")
        bart = self.out / "mt" / f"bart-{denoise_steps}"
        self.stage(bart, ["pretrain", str(mono), "--objective", "denoising", *DENOISING_FLAGS,
                          "--tokenizer", str(tok), *self.budget(denoise_steps), "-o", str(bart)])
        scratch = self.out / "mt" / f"few-scratch-{steps}"
        self.stage(scratch, ["pretrain", str(few), "--objective", "seq2seq", *DENOISING_FLAGS,
                             "--tokenizer", str(tok), "--valid", val, *self.budget(steps),
                             "-o", str(scratch)])
        tuned = self.out / "mt" / f"few-bart{denoise_steps}-{steps}"
        self.stage(tuned, ["finetune", "seq2seq", str(bart), str(few), "--valid", val,
                           *self.budget(steps), "-o", str(tuned)])
        for run in (scratch, tuned):
            self.evaluate(run, 1)
            self.evaluate(run, BEAMS)

    def denoising_table(self) -> str:
        lines = [f"A tenth of the training pairs ({self.limit_note()}), the tiny Transformer "
                 f"(2+2 layers, width 128): from random weights, or fine-tuned from denoising "
                 f"pre-training on both sides of all the training pairs as plain text", "",
                 f"| start | pre-training steps | steps on the pairs | val ppl | BLEU greedy | "
                 f"BLEU beam {BEAMS} | chrF greedy | train CPU min |",
                 "|---|---:|---:|---:|---:|---:|---:|---:|"]
        found = sorted(self.out.glob("mt/few-*-test-beam1.done.json"))
        for done in found:
            run = self.out / "mt" / done.name.removesuffix("-test-beam1.done.json")
            start, steps = run.name.removeprefix("few-").rsplit("-", 1)
            if not run.with_name(f"{run.name}-test-beam{BEAMS}.done.json").exists():
                continue
            greedy, beam = self.record(run, "beam1"), self.record(run, f"beam{BEAMS}")
            val = [r for r in read_metrics(run) if "val_perplexity" in r]
            cpu_s = json.loads(run.with_name(run.name + ".done.json").read_text()).get("cpu_s", 0)
            base = start.removeprefix("bart")
            if base.isdigit():
                cpu_s += json.loads((self.out / "mt" / f"bart-{base}.done.json").read_text()
                                    ).get("cpu_s", 0)
            lines.append(f"| {'denoising' if base.isdigit() else 'random weights'} | "
                         f"{int(base) if base.isdigit() else 0:,} | {int(steps):,} | "
                         f"{val[-1]['val_perplexity'] if val else float('nan'):.2f} | "
                         f"{greedy['bleu']:.2f} | {beam['bleu']:.2f} | {greedy['chrf']:.2f} | "
                         f"{cpu_s / 60:.1f} |")
        return "\n".join(lines) if found else ""

    # --- reporting -------------------------------------------------------------------------

    def finished(self) -> list[tuple[str, int, Path]]:
        """(row, steps, run) of every run whose three test stages are done."""
        found = []
        for row in ROWS:
            for done in self.out.glob(f"mt/{row}-*-test-greedy.done.json"):
                steps = done.name.removeprefix(f"{row}-").split("-")[0]
                run = self.out / "mt" / f"{row}-{steps}"
                if steps.isdigit() and all(
                        run.with_name(f"{run.name}-test-{s}.done.json").exists()
                        for s in ("beam1", f"beam{BEAMS}")):
                    found.append((row, int(steps), run))
        return sorted(found, key=lambda f: (list(ROWS).index(f[0]), f[1]))

    def table(self) -> str:
        runs = self.finished()
        if not runs:
            return "no row is finished yet"
        lines = [f"Multi30k de→en, test_2016_flickr (sacrebleu), {self.limit_note()}", "",
                 f"| row | steps | train min | train CPU min | threads | precision | val ppl | "
                 f"BLEU greedy | BLEU beam {BEAMS} | chrF greedy | chrF beam {BEAMS} |",
                 "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|"]
        by_length = ["", "BLEU by source length (German words; greedy):", "",
                     "| row | steps | " + " | ".join(bucket_name(b) for b in BUCKETS) + " |",
                     "|---|---:|" + "---:|" * len(BUCKETS)]
        counts: list[int] = []
        notes: list[str] = []
        signature = ""
        for row, steps, run in runs:
            greedy = self.record(run, "beam1")
            beam = self.record(run, f"beam{BEAMS}")
            metrics = read_metrics(run)
            minutes = max((r.get("elapsed_s", 0) for r in metrics), default=0) / 60
            val = [r for r in metrics if "val_perplexity" in r]
            ppl = f"{val[-1]['val_perplexity']:.2f}" if val else ""
            trained = json.loads((run.with_name(run.name + ".done.json")).read_text())
            precision = json.loads(trained["stdout"]).get("precision", "").split(" ")[0]
            cpu = f"{trained['cpu_s'] / 60:.1f}" if "cpu_s" in trained else ""
            lines.append(f"| {row} | {steps:,} | {minutes:.1f} | {cpu} | {trained['threads']} | "
                         f"{precision} | {ppl} | "
                         f"{greedy['bleu']:.2f} | {beam['bleu']:.2f} | {greedy['chrf']:.2f} | "
                         f"{beam['chrf']:.2f} |")
            signature = greedy["bleu_signature"]
            outputs = [g["text"] for g in self.translations(run)]
            sources = read_lines(self.out / "data" / "test.de")
            references = [t for _, t in read_pairs(self.out / "data" / "test.tsv")]
            scores, counts = bucket_bleu(sources, outputs, references)
            by_length.append(f"| {row} | {steps:,} | "
                             + " | ".join(f"{s:.2f}" for s in scores) + " |")
            again = corpus_bleu(outputs, references)
            if abs(again - greedy["bleu"]) > 0.01:
                notes.append(f"{row}-{steps}: generate's greedy BLEU {again:.2f} differs "
                             f"from evaluate's {greedy['bleu']:.2f}")
            notes += goal_notes(row, steps, minutes, greedy["bleu"], beam["bleu"])
        by_length.append("| sentences | | " + " | ".join(f"{n:,}" for n in counts) + " |")
        return "\n".join([*lines, *by_length, "", f"BLEU: {signature}",
                          *(f"- {n}" for n in notes)])

    def record(self, run: Path, what: str) -> dict:
        done = run.with_name(f"{run.name}-test-{what}.done.json")
        return json.loads(json.loads(done.read_text())["stdout"])

    def limit_note(self) -> str:
        done = self.out / "data" / "data.done.json"
        limit = json.loads(done.read_text())["limit"] if done.exists() else None
        return f"SMOKE TEST: first {limit:,} lines of each split" if limit else "full splits"


def goal_notes(row: str, steps: int, minutes: float, greedy: float, beam: float) -> list[str]:
    """The issue's goals this row is measured against, met or not."""
    notes = []
    if row in GOALS:
        best = max(greedy, beam)
        within = row != "transformer" or minutes <= GOAL_MINUTES
        time_note = (f" in {minutes:.0f} min (goal <= {GOAL_MINUTES})"
                     if row == "transformer" else "")
        met = "met" if best >= GOALS[row] and within else "not met"
        notes.append(f"{row}-{steps}: BLEU {best:.2f}{time_note}, goal >= {GOALS[row]:g}: {met}")
    gain = beam - greedy
    notes.append(f"{row}-{steps}: beam {BEAMS} - greedy = {gain:+.2f} BLEU, goal >= "
                 f"+{GOAL_BEAM_GAIN}: {'met' if gain >= GOAL_BEAM_GAIN else 'not met'}")
    return notes


# --- BLEU by source length ---------------------------------------------------------------


def bucket_name(bucket: tuple[int, int | None]) -> str:
    low, high = bucket
    return f"{low}-{high} words" if high else f"{low}+ words"


def bucket_of(words: int) -> int:
    return next(i for i, (low, high) in enumerate(BUCKETS)
                if words >= low and (high is None or words <= high))


def corpus_bleu(hypotheses: list[str], references: list[str]) -> float:
    from sacrebleu.metrics import BLEU

    return BLEU().corpus_score(hypotheses, [references]).score


def bucket_bleu(sources: list[str], hypotheses: list[str], references: list[str]
                ) -> tuple[list[float], list[int]]:
    """sacrebleu's corpus BLEU of the sentences in each source-length bucket, and how
    many sentences each holds."""
    if not len(sources) == len(hypotheses) == len(references):
        raise StageFailed(f"{len(sources)} sources, {len(hypotheses)} translations and "
                          f"{len(references)} references")
    groups: list[tuple[list[str], list[str]]] = [([], []) for _ in BUCKETS]
    for source, hyp, ref in zip(sources, hypotheses, references, strict=True):
        hyps, refs = groups[bucket_of(max(1, len(source.split())))]
        hyps.append(hyp)
        refs.append(ref)
    scores = [corpus_bleu(h, r) if h else float("nan") for h, r in groups]
    return scores, [len(h) for h, _ in groups]


# --- files -------------------------------------------------------------------------------


def read_lines(path: Path, limit: int | None = None) -> list[str]:
    lines = path.read_text("utf-8").splitlines()
    return lines[:limit] if limit else lines


def read_pairs(path: Path) -> list[tuple[str, str]]:
    rows = path.read_text("utf-8").splitlines()[1:]
    return [tuple(r.split("\t")) for r in rows]  # type: ignore[misc]


def read_metrics(run: Path) -> list[dict]:
    path = run / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


# --- --speed: lmtool against transformers, in this process --------------------------------


def speed(bench: Bench, args: argparse.Namespace) -> None:
    import torch

    from lmtool.device import describe_cpu
    from lmtool.inference.runs import LoadedLM, inference_dtype
    from lmtool.inference.translate import encode_source, load_seq2seq
    from lmtool.models import build_seq2seq
    from lmtool.models.seq2seq_config import resolve_seq2seq_config
    from lmtool.text.tokenizer import load_tokenizer

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        import transformers  # noqa: F401
    except ImportError:
        raise SystemExit("translate.py --speed needs transformers (pip install -e "
                         "'.[bench]')") from None
    cpu = torch.device("cpu")
    if args.run:
        from lmtool.errors import BadInput

        try:
            trained = load_seq2seq(args.run, device="cpu", precision="fp32")
        except BadInput as e:
            raise SystemExit(f"translate.py: {e}") from None
        if trained.config.arch != "transformer":
            raise SystemExit(f"translate.py: {args.run} is not a Transformer run")
        config, tokenizer, weights = trained.config, trained.tokenizer, trained.model
        origin = f"{args.run}'s trained weights"
    else:
        tokenizer = load_tokenizer(bench.tokenizer())
        preset = ROWS["transformer"].flags[ROWS["transformer"].flags.index("--preset") + 1]
        config = resolve_seq2seq_config("transformer", preset,
                                        {"vocab_size": tokenizer.get_vocab_size()})
        torch.manual_seed(0)
        weights = build_seq2seq(config)
        origin = "random weights"
    sources = read_lines(bench.data() / "test.de")[: args.sentences]
    probe = LoadedLM(weights, tokenizer, cpu, torch.float32)
    prompts = [encode_source(probe, s, i) for i, s in enumerate(sources)]
    hf = marian_like(config)
    ours_n = sum(p.numel() for p in weights.parameters())
    theirs_n = sum(p.numel() for p in hf.parameters())
    c = config
    print(f"torch {torch.__version__}, transformers {transformers_version()}; "
          f"{torch.get_num_threads()} threads; CPU {describe_cpu()}")
    print(f"model: {c.layers}+{c.layers} layers, width {c.dim}, {c.heads} heads, FFN "
          f"{c.mlp_ratio * c.dim}, vocab {c.vocab_size}, context {c.context}; lmtool "
          f"{ours_n / 1e6:.2f}M parameters ({origin}, {c.positions} positions, pre-norm), "
          f"MarianMTModel {theirs_n / 1e6:.2f}M (random, sinusoidal, post-norm, "
          f"{hf.config._attn_implementation} attention)")
    print(f"lmtool's --precision auto here: inference "
          f"{dtype_label(inference_dtype('auto', cpu, weights))} weights, training "
          f"{training_precision()}")
    print(f"{len(prompts):,} Multi30k test sources, {args.batch_size} to a batch, "
          f"{sum(len(p.ids) for p in prompts) / len(prompts):.1f} tokens each ([EOS] "
          f"included); {args.new_tokens} new tokens per sentence; best of 2, taking turns",
          flush=True)
    ratios: dict[str, dict[str, float]] = {}
    for precision in args.precisions:
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[precision]
        lm = LoadedLM(copy_model(weights, dtype), tokenizer, cpu, dtype)
        peer = copy_model(hf, dtype)
        ratios[precision] = {}
        for beams in (1, BEAMS):
            entries, warmups = {}, {}
            for rows, into in ((prompts, entries), (prompts[: args.batch_size], warmups)):
                into["lmtool"] = partial(lmtool_translate, lm, rows, args, beams)
                into["transformers"] = partial(hf_translate, peer, rows, args, beams)
            best = race(entries, warmups)
            what = "greedy" if beams == 1 else f"beam {beams}"
            rates = {name: len(prompts) / s for name, s in best.items()}
            ratio = rates["lmtool"] / rates["transformers"]
            ratios[precision][what] = ratio
            print(f"  {precision} {what:7} sentences/s: lmtool {rates['lmtool']:8.1f}, "
                  f"transformers {rates['transformers']:8.1f}; {ratio:.2f}x", flush=True)
    batches = training_batches(bench, tokenizer, config, args)
    tokens = sum(batch_tokens(b) for b in batches)
    print(f"training: {len(batches)} batches of {args.train_batch} pairs, {tokens:,} tokens "
          f"(source + target, [EOS] included, no padding), per turn")
    for precision in args.precisions:
        autocast = {"fp32": None, "bf16": torch.bfloat16}[precision]
        torch.manual_seed(0)
        ours = build_seq2seq(config).train()
        theirs = marian_like(config).train()
        entries = {
            "lmtool": trainer_of(ours, batches, autocast, lmtool_loss),
            "transformers": trainer_of(theirs, batches, autocast, hf_loss),
        }
        warmups = {
            "lmtool": trainer_of(ours, batches[:2], autocast, lmtool_loss),
            "transformers": trainer_of(theirs, batches[:2], autocast, hf_loss),
        }
        best = race(entries, warmups)
        rates = {name: tokens / s for name, s in best.items()}
        ratio = rates["lmtool"] / rates["transformers"]
        ratios[precision]["training"] = ratio
        print(f"  {precision} training tokens/s: lmtool {rates['lmtool']:8.0f}, "
              f"transformers {rates['transformers']:8.0f}; {ratio:.2f}x", flush=True)
    print("\n| precision | greedy | beam 5 | training |\n|---|---:|---:|---:|")
    for precision, r in ratios.items():
        print(f"| {precision} | " + " | ".join(f"{r[k]:.2f}x" for k in
                                               ("greedy", f"beam {BEAMS}", "training")) + " |")
    print(f"lmtool / transformers; goals: translation >= {GOAL_TRANSLATE:g}x, training >= "
          f"{GOAL_TRAIN:g}x")


def transformers_version() -> str:
    import transformers

    return transformers.__version__


def dtype_label(dtype) -> str:
    import torch

    return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


def training_precision() -> str:
    import torch

    from lmtool.device import describe_precision

    return describe_precision("auto", torch.device("cpu"))


def marian_like(config):
    """A MarianMTModel of `config`'s size and lmtool's special ids (random weights)."""
    import transformers

    from lmtool.text.specials import SPECIAL_IDS

    c = config
    hf_config = transformers.MarianConfig(
        vocab_size=c.vocab_size, decoder_vocab_size=c.vocab_size,
        max_position_embeddings=c.context, d_model=c.dim,
        encoder_layers=c.layers, decoder_layers=c.layers,
        encoder_attention_heads=c.heads, decoder_attention_heads=c.heads,
        encoder_ffn_dim=c.mlp_ratio * c.dim, decoder_ffn_dim=c.mlp_ratio * c.dim,
        activation_function="gelu", dropout=c.dropout, attention_dropout=c.dropout,
        activation_dropout=0.0, scale_embedding=True,
        pad_token_id=SPECIAL_IDS.pad, bos_token_id=SPECIAL_IDS.bos,
        eos_token_id=SPECIAL_IDS.eos, decoder_start_token_id=SPECIAL_IDS.bos,
        forced_eos_token_id=None, share_encoder_decoder_embeddings=True,
        tie_word_embeddings=c.tie_embeddings)
    import torch

    torch.manual_seed(1)
    model = transformers.MarianMTModel(hf_config)
    g = model.generation_config
    g.bos_token_id, g.eos_token_id, g.pad_token_id = (SPECIAL_IDS.bos, SPECIAL_IDS.eos,
                                                      SPECIAL_IDS.pad)
    g.decoder_start_token_id, g.forced_eos_token_id = SPECIAL_IDS.bos, None
    g.max_length = None
    return model


def copy_model(model, dtype):
    """An eval-mode copy of `model` in `dtype`, gradients off (as load_seq2seq does)."""
    import copy

    twin = copy.deepcopy(model).to(dtype).eval()
    twin.requires_grad_(False)
    return twin


def lmtool_translate(lm, prompts, args, beams: int) -> None:
    """lmtool's translate() after tokenizing: the same batches, exactly N tokens each."""
    from lmtool.inference.generate import generate_prompts
    from lmtool.inference.generation import GenerateOptions

    options = GenerateOptions(max_new_tokens=args.new_tokens, temperature=0.0, beams=beams,
                              stop_at_eos=False).resolved()
    for start in range(0, len(prompts), args.batch_size):
        out = generate_prompts(lm, prompts[start : start + args.batch_size], options)
        if any(len(g.tokens) != args.new_tokens for g in out):
            raise SystemExit("translate.py: lmtool wrote other than --new-tokens tokens")


def hf_translate(model, prompts, args, beams: int) -> None:
    import torch

    from lmtool.models.seq2seq import pad_rows
    from lmtool.text.specials import SPECIAL_IDS

    never = list(SPECIAL_IDS.never_generated())
    for start in range(0, len(prompts), args.batch_size):
        ids, mask = pad_rows([p.ids for p in prompts[start : start + args.batch_size]])
        with torch.inference_mode():
            out = model.generate(ids, attention_mask=mask.long(),
                                 max_new_tokens=args.new_tokens,
                                 min_new_tokens=args.new_tokens, num_beams=beams,
                                 do_sample=False, length_penalty=1.0, use_cache=True,
                                 suppress_tokens=never)
        if out.size(1) - 1 != args.new_tokens:  # the decoder's start token, then the text
            raise SystemExit("translate.py: transformers wrote other than --new-tokens tokens")


def race(entries: dict, warmups: dict) -> dict[str, float]:
    """Best seconds of each entry, run in turns (A, B, A, B) after its warm-up (a batch)."""
    for fn in warmups.values():
        fn()
    best = {name: float("inf") for name in entries}
    for _ in range(2):
        for name, fn in entries.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def training_batches(bench: Bench, tokenizer, config, args) -> list:
    """--train-steps batches of training pairs, as pretrain makes them (length-sorted)."""
    from lmtool.text.pairs import iter_pairs
    from lmtool.training.pairs import PairBatches, encode_pairs

    pairs = encode_pairs(iter_pairs(bench.data() / "train.tsv"), tokenizer,
                         max_tokens=config.context)
    source = PairBatches(pairs, args.train_batch, seed=0)
    count = min(args.train_steps, source.batches_per_epoch)
    return [source.batch(0, i) for i in range(count)]


def batch_tokens(batch) -> int:
    from lmtool.training.objectives import IGNORE

    return int(batch.source_mask.sum()) + int((batch.targets != IGNORE).sum())


def lmtool_loss(model, batch):
    from lmtool.training.objectives import Seq2SeqObjective

    return Seq2SeqObjective(model.config.label_smoothing).loss(model, batch)[0]


def hf_loss(model, batch):
    import torch.nn.functional as F

    from lmtool.training.objectives import IGNORE

    logits = model(input_ids=batch.source, attention_mask=batch.source_mask.long(),
                   decoder_input_ids=batch.inputs).logits.float()  # (B, T, V)
    return F.cross_entropy(logits.flatten(0, 1), batch.targets.flatten(), ignore_index=IGNORE,
                           label_smoothing=0.1)


def trainer_of(model, batches, autocast_dtype, loss_fn):
    """A function training `model` one step on each batch, as lmtool's trainer does
    (autocast forward, backward, clip at 1, lmtool's fused AdamW)."""
    import torch

    from lmtool.device import autocast
    from lmtool.training.optimizers import build_optimizer

    cpu = torch.device("cpu")
    optimizer = build_optimizer(model, "adamw", lr=1e-3, weight_decay=0.01, betas=(0.9, 0.98),
                                device=cpu)

    def steps() -> None:
        for batch in batches:
            optimizer.zero_grad()
            with autocast(cpu, autocast_dtype):
                loss = loss_fn(model, batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()

    return steps


# --- the command line --------------------------------------------------------------------


def budgets(text: str | None, rows: list[str]) -> dict[str, int]:
    """--max-steps: N for every row, or ROW=N,... (others keep their default)."""
    steps = {row: ROWS[row].steps for row in rows}
    if not text:
        return steps
    if text.isdigit():
        return dict.fromkeys(rows, int(text))
    for item in text.split(","):
        row, _, n = item.partition("=")
        if row.strip() not in ROWS or not n.strip().isdigit():
            raise SystemExit(f"translate.py: --max-steps takes N or ROW=N,... with ROW one of "
                             f"{', '.join(ROWS)}, not {item!r}")
        steps[row.strip()] = int(n)
    return steps


def denoising_budget(value: str) -> tuple[int, int]:
    parts = [p.strip() for p in value.split(",")]
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise SystemExit(f"translate.py: --denoising takes D,N (two step counts), not {value!r}")
    return int(parts[0]), int(parts[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "translate",
                        help="where every stage writes (default: runs/translate)")
    parser.add_argument("--rows", default=",".join(ROWS), help="comma-separated; see --list")
    parser.add_argument("--max-steps", help="training steps: N for every row, or "
                        "ROW=N,... (default " + ", ".join(f"{r} {v.steps}"
                                                          for r, v in ROWS.items()) + ")")
    parser.add_argument("--eval-every", type=int, default=500,
                        help="steps between validations on val (default 500)")
    parser.add_argument("--corpora", type=Path, default=CORPORA, help="holding multi30k/")
    parser.add_argument("--limit", type=int, help="first N lines of every split (smoke tests)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, help="OMP_NUM_THREADS for each stage; "
                        "torch threads for --speed")
    parser.add_argument("--list", action="store_true", help="list the rows and stop")
    parser.add_argument("--table", action="store_true", help="print the tables and stop")
    parser.add_argument("--measure", type=int, nargs="?", const=12, metavar="STEPS",
                        help="time STEPS (12) training steps of each row and stop")
    parser.add_argument("--denoising", nargs="?", const=",".join(map(str, DENOISING_STEPS)),
                        metavar="D,N", help="what denoising pre-training (D steps) is worth "
                        "with a tenth of the pairs (N steps on them); default "
                        + ",".join(map(str, DENOISING_STEPS)))
    speed_group = parser.add_argument_group("--speed")
    speed_group.add_argument("--speed", action="store_true",
                             help="lmtool against transformers, in this process, and stop")
    speed_group.add_argument("--run", type=Path, help="a trained Transformer run to take "
                             "the config, tokenizer and weights from")
    speed_group.add_argument("--sentences", type=int, default=1000,
                             help="test sources translated per turn (1000: all)")
    speed_group.add_argument("--new-tokens", type=int, default=16,
                             help="tokens written per sentence (16: the English test "
                             "references average 14.6 tokens of the BPE, then [EOS])")
    speed_group.add_argument("--batch-size", type=int, default=32,
                             help="sentences per translation batch (32)")
    speed_group.add_argument("--train-batch", type=int, default=64,
                             help="pairs per training batch (64, the small preset's)")
    speed_group.add_argument("--train-steps", type=int, default=20,
                             help="training steps per turn (20)")
    speed_group.add_argument("--precisions", default="fp32,bf16",
                             help="of fp32 and bf16 (default both)")
    args = parser.parse_args()
    rows = pick(args.rows, ROWS, "row", "translate.py")
    args.precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    if not set(args.precisions) <= {"fp32", "bf16"} or not args.precisions:
        raise SystemExit("translate.py: --precisions takes fp32, bf16 or both")
    if args.list:
        for name, row in ROWS.items():
            print(f"{name:14} {row.what}: pretrain --objective seq2seq {' '.join(row.flags)} "
                  f"--max-steps {row.steps}")
        return
    bench = Bench(args)
    try:
        if args.speed:
            speed(bench, args)
            return
        if (args.measure or not args.table) and args.threads:
            import torch  # the precision choice is made (and cached) per thread count

            torch.set_num_threads(args.threads)
        if args.measure:
            print(machine_line(), flush=True)
            bench.measure(rows, args.measure)
            return
        if args.denoising and not args.table:
            log(machine_line())
            denoise_steps, steps = denoising_budget(args.denoising)
            bench.denoising(denoise_steps, steps)
            print(bench.denoising_table())
            return
        if not args.table:  # the stages' log: on which CPU these runs trained
            log(machine_line())
            for row, steps in budgets(args.max_steps, rows).items():
                bench.row(row, steps)
        print(bench.table())
        if few := bench.denoising_table():
            print("\n" + few)
    except StageFailed as e:
        raise SystemExit(f"translate.py: {e}") from None


if __name__ == "__main__":
    main()
