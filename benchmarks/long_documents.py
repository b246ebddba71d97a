"""Which end of a document too long for the classifier to read should it keep?

    python benchmarks/long_documents.py --out runs/ulmfit          # after ulmfit.py's LMs

fastai's classifier pools over a document's last `max_len` tokens; lmtool's first read
the first `--max-tokens`. Concatenating unrelated labelled texts into long documents
cannot answer the question, since it puts the signal wherever the concatenation does;
what matters is where real texts put it. So this keeps real documents and makes them
too long for the classifier instead: `--max-tokens` 8 (the [EOS] and 7 tokens) cuts
nearly every SST-2 sentence and BANKING77 query, and the same classifier is trained
keeping the first 7 tokens or the last 7, from the same fine-tuned language model
(benchmarks/ulmfit.py's `lm/awd-1000-DATASET`), on the same 1,000 labels, with the
recipe's defaults otherwise. Accuracy on SST-2 dev and BANKING77 test is printed.
"""

from __future__ import annotations

import os
import sys

sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import argparse  # noqa: E402
import json  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
EVAL = {"sst2": "dev", "banking77": "test"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "ulmfit")
    parser.add_argument("--corpora", type=Path, default=Path("/work/shared/corpora"))
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--seeds", default="0")
    args = parser.parse_args()

    from lmtool.inference.evaluate import evaluate_classifier
    from lmtool.training.classifier import finetune_classifier

    for dataset, split in EVAL.items():
        labels = args.out / "labels" / f"{dataset}-1000-seed0.tsv"
        lm = args.out / "lm" / f"awd-1000-{dataset}"
        for seed in [int(s) for s in args.seeds.split(",")]:
            scores = {}
            for keep in ("first", "last"):
                run = args.out / "long" / f"{dataset}-{keep}-{args.max_tokens}-seed{seed}"
                if not (run / "scores.json").exists():
                    finetune_classifier(lm, labels, run, max_tokens=args.max_tokens, keep=keep,
                                        overrides={"seed": seed}, force=True)
                    result = evaluate_classifier(run, args.corpora / dataset / f"{split}.tsv")
                    (run / "scores.json").write_text(json.dumps(result))
                scores[keep] = json.loads((run / "scores.json").read_text())["accuracy"]
            print(f"{dataset} {split}, seed {seed}, max-tokens {args.max_tokens}: first "
                  f"{scores['first']:.4f}, last {scores['last']:.4f}", flush=True)


if __name__ == "__main__":
    main()
