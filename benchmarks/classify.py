"""Classification speed: `lmtool classify` against Hugging Face BertForSequenceClassification.

Not a test. Every figure is measured in this one run: the contenders take turns (round
robin, one pass over the documents each), so a busy neighbour slows all alike and the
ratios stay meaningful. Needs `transformers` (pip install -e '.[bench]').

    python benchmarks/classify.py                        # tiny and small, reviews + SST-2 dev
    python benchmarks/classify.py --presets small --rounds 5
    python benchmarks/classify.py --docs my_docs.tsv     # any labelled file (text column)
    python benchmarks/classify.py --epoch-time lstm      # a training epoch, small preset, SST-2

The models: a masked Transformer classifier built by lmtool (learned positions, GELU,
the preset's layers/heads/width/context) and BertForSequenceClassification with the
same layers, heads, width, MLP width, vocabulary and positions, dropout off (eval).
What BERT cannot match: it is post-norm with biases on every linear layer, adds token
type embeddings and an embedding LayerNorm, and classifies from a tanh pooler on the
first token; lmtool is pre-norm without biases and pools [first, max, mean] into two
batch-norm blocks. Both get random weights: speed does not depend on them.

The work, timed end to end for each: tokenize the texts (the same `tokenizers` BPE
tokenizer), make the ids each model reads (the same for both: [EOS] + the text's
tokens, cut to the context), pad, run the model, softmax. lmtool's rows go through
`Scorer.predict`, what `lmtool classify` runs: batches sorted by length, then the
predictions in input order. HF runs batches in input order ("HF"), as a plain loop
would, and sorted by length like lmtool ("HF sorted"), to show what bucketing is worth.
Where lmtool's default precision is bf16 (CPUs with native bf16), HF also runs under
bf16 autocast. Ratios are documents/s against HF in input order, in fp32.

"lmtool classify CLI" is the command itself, `lmtool classify RUN - --per-line`, in a
process of its own taking its turn with the others: the same saved run (the same random
weights), the documents on stdin one a line, its defaults (--precision auto, device
auto, text output) with --batch-size as the other rows'. The command prints no timing,
so the whole command is timed, and so is its start-up, the same command given no
documents (imports, loading the run); "less start-up" is the documents over the
difference (it still pays a fresh process's cold first batches, as a person running
the command does). The header names the CPU's bf16 hardware (AMX, AVX512-BF16, or neither) and
what `--precision auto` chose from it.
"""

from __future__ import annotations

import os
import sys

# benchmarks/tokenize.py would shadow the standard `tokenize` module (see pretrain.py).
sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import argparse  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.cli_rows import machine_line, run_lmtool  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SST2_DEV = ROOT.parent.parent / "shared" / "corpora" / "sst2" / "dev.tsv"
DOC_SETS = {
    "reviews": ROOT / "corpora" / "reviews" / "test.tsv",
    "sst2-dev": SST2_DEV if SST2_DEV.exists() else Path("/work/shared/corpora/sst2/dev.tsv"),
}
STARTUP = "lmtool classify CLI start-up (no documents)"
PRESETS = {  # name: (layers, heads, dim, context), as the Transformer presets
    "tiny": (4, 4, 128, 64),
    "small": (6, 6, 384, 256),
}


def load_texts(path: Path) -> list[str]:
    from lmtool.text.labelled import iter_texts

    return list(iter_texts(path))


def train_tokenizer(texts: list[str], vocab: int, root: Path) -> Path:
    from lmtool.text.tokenizer import save_tokenizer
    from lmtool.text.tokenizer import train_tokenizer as train

    corpus = root / "corpus.txt"
    corpus.write_text("\n\n".join(texts))
    extra = sorted((ROOT / "corpora" / "demo").rglob("*.txt"))
    tok = train([corpus, *extra], kind="bpe", vocab_size=vocab)
    path = root / "tok.json"
    save_tokenizer(tok, path)
    return path


def lmtool_run(root: Path, tok_path: Path, preset: str) -> Path:
    """A masked-Transformer classifier with random weights, saved as a run."""
    from lmtool.checkpoint import save_checkpoint
    from lmtool.models import build_model
    from lmtool.models.classifier import Classifier, ClassifierConfig
    from lmtool.models.config import ModelConfig
    from lmtool.text.tokenizer import load_tokenizer

    layers, heads, dim, context = PRESETS[preset]
    vocab = load_tokenizer(tok_path).get_vocab_size()
    mc = ModelConfig(arch="transformer", objective="masked", vocab_size=vocab, layers=layers,
                     heads=heads, dim=dim, context=context, positions="learned", dropout=0.0)
    cc = ClassifierConfig(labels=["negative", "positive"], max_tokens=context)
    torch.manual_seed(0)
    clf = Classifier(build_model(mc), cc)
    out = root / f"clf-{preset}"
    save_checkpoint(out, model=clf, tokenizer_json=tok_path.read_text("utf-8"), metrics=[],
                    config={"task": "classifier", "arch": mc.arch, "objective": mc.objective,
                            "model": mc.to_dict(), "classifier": cc.to_dict(),
                            "tokenizer": {"vocab_size": vocab, "kind": "bpe"}})
    return out


def hf_model(preset: str, vocab: int):
    from transformers import BertConfig, BertForSequenceClassification

    layers, heads, dim, context = PRESETS[preset]
    config = BertConfig(
        vocab_size=vocab, hidden_size=dim, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=4 * dim, max_position_embeddings=context, type_vocab_size=1,
        hidden_act="gelu", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        num_labels=2, pad_token_id=0, attn_implementation="sdpa",
    )
    torch.manual_seed(0)
    return BertForSequenceClassification(config).eval()


class HF:
    """HF's loop: the same tokenizer and ids, batches in input order or sorted."""

    def __init__(self, model, tok, context: int, batch_size: int, sort: bool,
                 dtype: torch.dtype | None = None):
        from lmtool.text.encode import batch_encoder

        self.model, self.encode = model, batch_encoder(tok)
        self.context, self.batch_size, self.sort, self.dtype = context, batch_size, sort, dtype

    @torch.inference_mode()
    def run(self, texts: list[str]) -> np.ndarray:
        from lmtool.text.specials import SPECIAL_IDS

        rows = [[SPECIAL_IDS.eos, *e.ids[: self.context - 1]]
                for e in self.encode([t.strip() for t in texts])]
        order = (np.argsort([-len(r) for r in rows], kind="stable") if self.sort
                 else np.arange(len(rows)))
        probs = np.zeros((len(rows), 2))
        for start in range(0, len(rows), self.batch_size):
            idx = order[start : start + self.batch_size]
            width = max(len(rows[i]) for i in idx)
            ids = torch.zeros(len(idx), width, dtype=torch.long)
            mask = torch.zeros(len(idx), width, dtype=torch.long)
            for j, i in enumerate(idx):
                ids[j, : len(rows[i])] = torch.tensor(rows[i])
                mask[j, : len(rows[i])] = 1
            with torch.autocast("cpu", dtype=self.dtype, enabled=self.dtype is not None):
                logits = self.model(input_ids=ids, attention_mask=mask).logits
            probs[idx] = torch.softmax(logits.float(), -1).numpy()
        return probs


class CLI:
    """`lmtool classify RUN - --per-line` in a process of its own, the texts on stdin."""

    def __init__(self, run: Path, batch_size: int, threads: int):
        self.argv = ["classify", str(run), "-", "--per-line", "--batch-size", str(batch_size)]
        self.threads = threads

    def run(self, texts: list[str]) -> None:
        stdin = "".join(t.replace("\n", " ") + "\n" for t in texts)
        out, _ = run_lmtool(self.argv, threads=self.threads, stdin=stdin)
        if len(out.splitlines()) != len(texts):  # one result line per document
            raise SystemExit(f"lmtool classify printed {len(out.splitlines())} lines for "
                             f"{len(texts)} documents")


def epoch_time(arch: str, train: Path, vocab: int, batch_size: int, epochs: float) -> None:
    """One classifier training epoch at the small preset on `train` (every layer group
    training, the costliest epoch of gradual unfreezing), from an LM of random weights:
    the time does not depend on them."""
    from lmtool.text.encode import encode_corpus
    from lmtool.training import finetune_classifier, pretrain

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        texts = load_texts(train)
        tok = train_tokenizer(texts, vocab, root)
        (root / "text.txt").write_text("\n\n".join(texts[:20000]))
        encode_corpus([root / "text.txt"], tok, root / "data", val_fraction=0.1, seed=0)
        pretrain(root / "data", root / "lm", arch=arch, preset="small", sample_chars=0,
                 overrides=dict(max_steps=1, eval_every=0))
        t0 = time.perf_counter()
        result = finetune_classifier(root / "lm", train, root / "clf", overrides=dict(
            epochs=epochs, unfreeze_start=0, batch_size=batch_size))
        seconds = time.perf_counter() - t0
        per_epoch = result.elapsed_s / epochs
        print(f"{arch} small, {train.name}: {result.train_documents:,} training documents, "
              f"batch {batch_size}, {result.step} steps; {per_epoch:.0f} s per epoch of "
              f"training ({result.train_documents / per_epoch:.0f} documents/s), "
              f"{seconds:.0f} s in all with tokenizing and the held-out scoring")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", default="tiny,small")
    parser.add_argument("--docs", default="reviews,sst2-dev",
                        help="reviews, sst2-dev, or paths of labelled files, comma-separated")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--epoch-time", metavar="ARCH",
                        help="instead: time classifier training at the small preset (lstm or "
                             "transformer) on --train")
    parser.add_argument("--train", type=Path, default=SST2_DEV.parent / "train.tsv")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="threads for every row, the CLI's too (default: the CPUs)")
    args = parser.parse_args()
    if args.epoch_time:
        epoch_time(args.epoch_time, args.train, args.vocab, 32, args.epochs)
        return

    from lmtool.device import resolve_precision
    from lmtool.inference.classify import load_scorer
    from lmtool.text.tokenizer import load_tokenizer

    torch.set_num_threads(args.threads)
    sets = {name: load_texts(DOC_SETS.get(name, Path(name))) for name in args.docs.split(",")}
    auto = resolve_precision("auto", torch.device("cpu"))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {machine_line()}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        tok_path = train_tokenizer([t for texts in sets.values() for t in texts], args.vocab,
                                   root)
        tok = load_tokenizer(tok_path)
        for preset in args.presets.split(","):
            context = PRESETS[preset][3]
            run = lmtool_run(root, tok_path, preset)
            hf = hf_model(preset, tok.get_vocab_size())
            contenders = {
                "lmtool fp32": load_scorer(run, batch_size=args.batch_size, device="cpu",
                                           precision="fp32"),
                "HF fp32": HF(hf, tok, context, args.batch_size, sort=False),
                "HF fp32 sorted": HF(hf, tok, context, args.batch_size, sort=True),
            }
            if auto is not None:
                contenders["lmtool default (bf16)"] = load_scorer(
                    run, batch_size=args.batch_size, device="cpu", precision="auto")
                contenders["HF bf16"] = HF(hf, tok, context, args.batch_size, sort=False,
                                           dtype=auto)
                contenders["HF bf16 sorted"] = HF(hf, tok, context, args.batch_size, sort=True,
                                                  dtype=auto)
            cli = CLI(run, args.batch_size, args.threads)
            contenders["lmtool classify CLI"] = cli
            contenders[STARTUP] = cli  # given no documents
            for name, texts in sets.items():
                lengths = [len(e.ids) + 1 for e in tok.encode_batch(texts)]
                print(f"\n{preset} ({'/'.join(map(str, PRESETS[preset]))} layers/heads/"
                      f"width/context), {name}: {len(texts)} documents, tokens per document "
                      f"mean {np.mean(lengths):.1f}, max {max(lengths)} (cut to {context})")
                times: dict[str, list[float]] = {k: [] for k in contenders}
                for _ in range(args.rounds + 1):  # the first round warms up, not counted
                    for key, c in contenders.items():
                        t0 = time.perf_counter()
                        if key == STARTUP:
                            c.run([])
                        elif key.startswith("lmtool") and "CLI" not in key:
                            for _ in c.predict(texts):
                                pass
                        else:
                            c.run(texts)
                        times[key].append(time.perf_counter() - t0)
                seconds = {key: statistics.median(ts[1:]) for key, ts in times.items()}
                startup = seconds.pop(STARTUP)
                if seconds["lmtool classify CLI"] > startup:  # else within the noise
                    seconds["lmtool classify CLI less start-up"] = (
                        seconds["lmtool classify CLI"] - startup)
                base = len(texts) / seconds["HF fp32"]
                for key, s in seconds.items():
                    rate = len(texts) / s
                    print(f"  {key:<34} {rate:9.1f} docs/s   {rate / base:5.2f}x")
                print(f"  {STARTUP}: {startup:.2f} s")


if __name__ == "__main__":
    main()
