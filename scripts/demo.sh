#!/usr/bin/env bash
# Set up (if needed) and run the main job end to end on the embedded demo corpus:
# train a tokenizer, encode the corpus into token shards, pre-train the tiny causal
# transformer for two minutes, evaluate it and show what it learned.
# Runs on a GPU when there is one, on the CPU otherwise. Output goes to ./demo-out
# (or the directory given as the first argument); re-running starts afresh.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
out=${1:-demo-out}
lmtool=.venv/bin/lmtool
minutes=${LMTOOL_DEMO_MINUTES:-2}

echo "== 1. train a byte-level BPE tokenizer on corpora/demo" >&2
$lmtool tokenize train corpora/demo --kind bpe --vocab-size 4000 -o "$out/tokenizer.json" --force
$lmtool tokenize stats --tokenizer "$out/tokenizer.json" corpora/demo

echo "== 2. encode the corpus into token shards (10% of documents held out)" >&2
$lmtool tokenize encode corpora/demo --tokenizer "$out/tokenizer.json" -o "$out/data" --force

echo "== 3. pre-train the tiny causal transformer for $minutes minute(s)" >&2
$lmtool pretrain "$out/data" --objective causal --arch transformer --preset tiny \
  --max-time $((minutes * 60)) -o "$out/lm" --force

echo "== 4. evaluate on the held-out documents" >&2
$lmtool evaluate "$out/lm" "$out/data"
$lmtool info "$out/lm"
