#!/usr/bin/env bash
# Alternating runs of two builds of `examples/t5_train_step_memory.rs`, for a before/after
# comparison of the LoRA training step in one sitting. Steps 1 and 2 of every run are left out
# (warm-up); prints, per build, the median step time and its forward and backward passes.
#
#   cargo build --release --example t5_train_step_memory   # on each commit, then copy it:
#   cp target/release/examples/t5_train_step_memory /tmp/step_before   # (and /tmp/step_after)
#   scripts/ab_train_step.sh 3 7 /tmp/step_before /tmp/step_after     # 3 rounds of 7 steps
set -euo pipefail
ROUNDS="${1:?rounds}"; STEPS="${2:?steps per run}"; A="${3:?first binary}"; B="${4:?second binary}"
OUT="$(mktemp)"
trap 'rm -f "$OUT"' EXIT
for _ in $(seq "$ROUNDS"); do
  for bin in "$A" "$B"; do
    "$bin" "$STEPS" | grep "^step" | tail -n +3 | sed "s|^|$bin |"
  done
done > "$OUT"
python3 - "$OUT" <<'PY'
import collections, re, statistics, sys
runs = collections.defaultdict(list)
pattern = r"(\S+) step \d+: loss \S+ ([\d.]+) s \(forward ([\d.]+) s, backward ([\d.]+)"
for line in open(sys.argv[1]):
    match = re.match(pattern, line)
    if match:
        runs[match.group(1)].append(tuple(map(float, match.groups()[1:])))
for binary, steps in runs.items():
    total, forward, backward = (statistics.median(s[i] for s in steps) for i in range(3))
    print(f"{binary}: {len(steps)} steps, median {total:.3f} s "
          f"(forward {forward:.3f} s, backward {backward:.3f} s)")
PY
