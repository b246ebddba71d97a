#!/usr/bin/env bash
# Model quality in a fixed time budget: nanoGPT's character-level Shakespeare run,
# done with lmtool's own commands. Not a test.
#
#   bash benchmarks/shakespeare.sh [CORPUS] [SECONDS] [extra pretrain flags...]
#
# nanoGPT's split: the first 90% of the characters train, the last 10% are held out.
# The tokenizer is a char tokenizer trained on the training part; each part is one
# document (--document file), so the model sees the text exactly as it is. Prints the
# held-out loss measured with `lmtool evaluate` (nanoGPT's "baby" config reaches 1.886
# after 2,000 iterations).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
corpus=${1:-$here/../shared/corpora/tinyshakespeare/input.txt}
seconds=${2:-60}
shift $(( $# < 2 ? $# : 2 ))
lmtool=$here/.venv/bin/lmtool
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

python3 - "$corpus" "$work" <<'PY'
import sys
text = open(sys.argv[1], encoding="utf-8").read()
cut = int(len(text) * 0.9)
open(f"{sys.argv[2]}/train.txt", "w", encoding="utf-8").write(text[:cut])
open(f"{sys.argv[2]}/val.txt", "w", encoding="utf-8").write(text[cut:])
PY
$lmtool tokenize train "$work/train.txt" --kind char --vocab-size 256 --min-frequency 1 \
  --document file -o "$work/tok.json" --quiet
$lmtool tokenize encode "$work/train.txt" -t "$work/tok.json" --document file \
  --val-fraction 0 -o "$work/data" --quiet
$lmtool pretrain "$work/data" --objective causal --preset tiny --epochs 1000 --max-time "$seconds" \
  -o "$work/run" --quiet "$@"
steps=$(python3 -c "import json,sys; print(json.loads(open(sys.argv[1]).readlines()[-1])['step'])" \
  "$work/run/metrics.jsonl")
echo "tinyshakespeare, tiny preset, $seconds s of training, $steps steps:"
$lmtool evaluate "$work/run" "$work/val.txt" --document file
