#!/usr/bin/env bash
# Set up (if needed) and run the main job end to end on the embedded demo corpus:
# train a tokenizer, encode the corpus into token shards, pre-train the tiny causal
# transformer for two minutes, evaluate it and show what it learned; then ULMFiT on the
# embedded review set: fine-tune that language model on unlabelled reviews, train a
# classifier on the labelled ones and print its accuracy on the held-out test set;
# last, a sample of text the language model writes through `lmtool generate`.
# Runs on a GPU when there is one, on the CPU otherwise. Output goes to ./demo-out
# (or the directory given as the first argument); re-running starts afresh.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
out=${1:-demo-out}
lmtool=.venv/bin/lmtool
minutes=${LMTOOL_DEMO_MINUTES:-2}

echo "== 1. train a byte-level BPE tokenizer on corpora/demo (and the unlabelled reviews)" >&2
# 2,293: every merge these texts offer (no pair beyond them occurs twice); a larger size
# gives the same tokenizer with a warning that it cannot be filled.
$lmtool tokenize train corpora/demo corpora/reviews/unlabelled.txt --kind bpe --vocab-size 2293 \
  -o "$out/tokenizer.json" --force
$lmtool tokenize stats --tokenizer "$out/tokenizer.json" corpora/demo

echo "== 2. encode the corpus into token shards (10% of documents held out)" >&2
$lmtool tokenize encode corpora/demo --tokenizer "$out/tokenizer.json" -o "$out/data" --force

unit=minutes; [ "$minutes" = 1 ] && unit=minute
echo "== 3. pre-train the tiny causal transformer for $minutes $unit" >&2
# --max-time only cuts the epochs short: ask for more epochs than the minutes allow.
$lmtool pretrain "$out/data" --objective causal --arch transformer --preset tiny \
  --epochs 1000 --max-time $((minutes * 60)) -o "$out/lm" --force

echo "== 4. evaluate on the held-out documents" >&2
$lmtool evaluate "$out/lm" "$out/data"
$lmtool info "$out/lm"

echo "== 5. ULMFiT stage 2: fine-tune the language model on unlabelled reviews for 1 minute" >&2
$lmtool finetune lm "$out/lm" corpora/reviews/unlabelled.txt -o "$out/lm-reviews" \
  --epochs 1000 --max-time 60 --force

echo "== 6. ULMFiT stage 3: train a classifier on corpora/reviews/train.tsv" >&2
$lmtool finetune classifier "$out/lm-reviews" corpora/reviews/train.tsv -o "$out/clf" --force

echo "== 7. its accuracy on the held-out reviews (keyword rules score 0.51-0.56 there)" >&2
$lmtool evaluate "$out/clf" corpora/reviews/test.tsv
echo "== 8. three test reviews: true label, then what the classifier says" >&2
# sed, not tail | head: under pipefail, head closing the pipe early would fail the script.
sed -n '2,4p' corpora/reviews/test.tsv | cut -f2 > "$out/three.txt"
paste <(sed -n '2,4p' corpora/reviews/test.tsv | cut -f1) \
  <($lmtool classify "$out/clf" "$out/three.txt" --per-line | cut -f2,3) "$out/three.txt"

echo "== 9. and what the language model writes, through lmtool generate" >&2
$lmtool generate "$out/lm" "The" --max-new-tokens 60 --top-p 0.9 --seed 1
