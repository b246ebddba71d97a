#!/usr/bin/env bash
# Remake the README's pictures (docs/*.png) from runs this script trains on the embedded
# corpora, in about five minutes on a 2-core CPU:
#   docs/loss-curves.png  the tiny Transformer pre-trained on corpora/demo for 300 steps,
#                         Muon against AdamW (lmtool plot)
#   docs/confusion.png    a classifier of corpora/demo's 8 genres (every 5th file held
#                         out) fine-tuned from the Muon run, reading each file's first 24
#                         tokens and stopped after 12 steps, so that it still makes
#                         mistakes to show (trained longer, it gets every file right)
#                         (lmtool evaluate --plot)
#   docs/attention.png    the Muon run's attention over a sentence (lmtool attention)
#   docs/seq2seq-attention.png  a tiny LSTM encoder–decoder with Bahdanau attention,
#                         trained on corpora/dates for 10 epochs (900 steps, about 2.5
#                         minutes),
#                         writing one date as an ISO date (lmtool attention)
# Needs lmtool[plot] (scripts/setup.sh installs it). The runs live in a temporary
# directory (or the one given as the first argument, kept).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
lmtool=${LMTOOL:-$repo/.venv/bin/lmtool}
if [ $# -ge 1 ]; then
  work=$1; mkdir -p "$work"
else
  work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
fi
cd "$work"  # run names in the legends are the paths given: keep them short
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

echo "== tokenizer and shards from corpora/demo" >&2
"$lmtool" tokenize train "$repo/corpora/demo" --kind bpe --vocab-size 2000 -o tok.json --force -q
"$lmtool" tokenize encode "$repo/corpora/demo" --tokenizer tok.json -o data --force -q

echo "== two tiny Transformers, 300 steps each: Muon and AdamW" >&2
for optimizer in muon adamw; do
  "$lmtool" pretrain data --preset tiny --optimizer "$optimizer" --lr 5e-3 --epochs 100 \
    --max-steps 300 --eval-every 25 --eval-batches 10 --log-every 5 --seed 0 \
    -o "tiny-$optimizer" --force -q
done
"$lmtool" plot tiny-muon tiny-adamw -o "$repo/docs/loss-curves.png" --force

echo "== a genre classifier: corpora/demo's folders, every 5th file held out" >&2
rm -rf genres && mkdir -p genres/train genres/test
for folder in "$repo"/corpora/demo/*/; do
  genre=$(basename "$folder"); mkdir -p "genres/train/$genre" "genres/test/$genre"
  i=0
  for file in "$folder"*.txt; do
    if (( i % 5 == 0 )); then cp "$file" "genres/test/$genre/"; else cp "$file" "genres/train/$genre/"; fi
    i=$((i + 1))
  done
done
"$lmtool" finetune classifier tiny-muon genres/train -o genre-clf --max-tokens 24 \
  --epochs 2 --max-steps 12 --seed 0 --force -q
"$lmtool" evaluate genre-clf genres/test --plot "$repo/docs/confusion.png" --force

echo "== attention over a sentence" >&2
"$lmtool" attention tiny-muon "The baker opened the shop before the rain came." \
  -o "$repo/docs/attention.png" --force

echo "== a date rewritten by an LSTM encoder–decoder, and where it looked" >&2
"$lmtool" tokenize train "$repo/corpora/dates/train.tsv" --kind char -o dates-tok.json --force -q
"$lmtool" pretrain "$repo/corpora/dates/train.tsv" --objective seq2seq --arch lstm \
  --attention bahdanau --preset tiny --tokenizer dates-tok.json --seed 0 \
  -o dates-lstm --force -q
"$lmtool" attention dates-lstm "the 3rd of March, 2021" -o "$repo/docs/seq2seq-attention.png" --force
