#!/usr/bin/env bash
# Rounds that alternate this project's and PyTorch + PEFT's runs of the same t5 case, for the
# ratios in BENCHMARKS.md on a machine whose timings drift: the training step
# (`examples/t5_train_step_memory.rs`, the median of steps 3..=7: forward, backward and AdamW)
# against `scripts/bench_torch_t5.py --filter train_step_bs8`, and greedy decoding
# (`examples/t5_decode_profile.rs greedy 5`) against `--filter greedy_64`.
#
#   VENV=$HOME/.cache/fixtures-venv scripts/interleaved_rounds.sh 3
#
# Prints one line per run with the 1-minute load average before the round, then each case's
# per-round ratios and their median.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${1:-3}"
VENV="${VENV:?set VENV to a Python venv with torch, transformers and peft}"
cargo build -q --release --example t5_train_step_memory --example t5_decode_profile
TARGET="${CARGO_TARGET_DIR:-target}/release/examples"
OUT="$(mktemp)"
trap 'rm -f "$OUT"' EXIT
for round in $(seq "$ROUNDS"); do
  echo "round $round, load $(cut -d' ' -f1 /proc/loadavg)"
  ours_train=$("$TARGET/t5_train_step_memory" 7 | grep "^step" | tail -n +3 |
    awk '{print $5}' | sort -n | sed -n 3p)
  torch_train=$("$VENV/bin/python" scripts/bench_torch_t5.py --threads 2 --filter train_step_bs8 |
    awk -F'|' '/^\| train_step_bs8/ {gsub(/ /, "", $3); print $3}')
  ours_greedy=$("$TARGET/t5_decode_profile" greedy 5 | awk '{print $3}')
  torch_greedy=$("$VENV/bin/python" scripts/bench_torch_t5.py --threads 2 --filter greedy_64 |
    awk -F'|' '/^\| greedy_64/ {gsub(/ /, "", $3); print $3}')
  echo "  train_step_bs8: ours $ours_train s, PyTorch $torch_train s"
  echo "  greedy_64: ours $ours_greedy s, PyTorch $torch_greedy s"
  echo "$ours_train $torch_train $ours_greedy $torch_greedy" >> "$OUT"
done
python3 - "$OUT" <<'PY'
import statistics, sys
rows = [list(map(float, line.split())) for line in open(sys.argv[1])]
for name, ours, torch in (("train_step_bs8", 0, 1), ("greedy_64", 2, 3)):
    ratios = [r[torch] / r[ours] for r in rows]
    print(f"{name}: PyTorch / ours per round {', '.join(f'{x:.2f}' for x in ratios)}; "
          f"median {statistics.median(ratios):.2f}x")
PY
