#!/usr/bin/env bash
# Alternates two builds of `examples/t5_decode_profile.rs` on one decoding case, run by run, for
# the before/after ratios in BENCHMARKS.md on a machine whose speed drifts from one minute to
# the next: each round runs A then B (5 timed runs each) and prints both medians and B / A; the
# last line is the median of the per-round ratios.
#
#   git worktree add /tmp/before <revision>
#   (cd /tmp/before && CARGO_TARGET_DIR=/tmp/before-target \
#      cargo build --release --example t5_decode_profile)
#   cargo build --release --example t5_decode_profile
#   scripts/ab_decode.sh /tmp/before-target/release/examples/t5_decode_profile \
#      target/release/examples/t5_decode_profile greedy 8
#
# CASE is `greedy` or `beam`; a fifth argument passes `int8` (int8 base weights), `untied` (a
# head of its own, FLAN-T5's layout) or both, quoted together, to the example.
set -euo pipefail
A="${1:?first build}"
B="${2:?second build}"
CASE="${3:-greedy}"
ROUNDS="${4:-8}"
EXTRA="${5:-}"
median() { "$1" "$CASE" 5 $EXTRA | awk '{print $3}'; }
RATIOS="$(mktemp)"
trap 'rm -f "$RATIOS"' EXIT
for round in $(seq "$ROUNDS"); do
  a=$(median "$A")
  b=$(median "$B")
  ratio=$(awk -v a="$a" -v b="$b" 'BEGIN {printf "%.3f", b / a}')
  echo "round $round (load $(cut -d' ' -f1 /proc/loadavg)): A $a s, B $b s, B / A $ratio"
  echo "$ratio" >> "$RATIOS"
done
sort -n "$RATIOS" | awk '{r[NR] = $1} END {
  m = (NR % 2) ? r[(NR + 1) / 2] : (r[NR / 2] + r[NR / 2 + 1]) / 2
  printf "median B / A over %d rounds: %.3f\n", NR, m }'
