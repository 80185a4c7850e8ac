#!/usr/bin/env bash
# The `sweep --concurrent` figures of BENCHMARKS.md: the same 4-configuration sweep one run
# after another and concurrently, wall time and peak RSS by /usr/bin/time -v. MODEL is the
# embedded base with its dropout set to 0 (so that the two modes can agree), written to a
# scratch copy; DROPOUT=0.1 keeps the committed model's own dropout.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$(mktemp -d)}"
DROPOUT="${DROPOUT:-0.0}"
STEPS="${STEPS:-100}"
cargo build --release --bin lora-t5
model="$OUT/model"
rm -rf "$model" && cp -r models/uidsl-t5-small "$model"
sed -i "s/\"dropout_rate\": [0-9.]*/\"dropout_rate\": $DROPOUT/" "$model/config.json"
for mode in sequential concurrent; do
  flag=""
  [ "$mode" = concurrent ] && flag="--concurrent"
  echo "== $mode (load $(cut -d' ' -f1 /proc/loadavg))"
  /usr/bin/time -v target/release/lora-t5 sweep $flag --model "$model" \
    --train data/uidsl/heldout_train.jsonl --valid data/uidsl/heldout_valid.jsonl \
    --out "$OUT/$mode" --max-steps "$STEPS" --eval-every $((STEPS / 2)) --batch-size 8 \
    --ranks 8,16 --learning-rates 1e-3,3e-3 --dropouts 0 --eval-limit 0 2>&1 |
    grep -E '^\| [0-9]|Elapsed|Maximum resident'
done
