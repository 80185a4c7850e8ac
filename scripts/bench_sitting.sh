#!/usr/bin/env bash
# One benchmark sitting for BENCHMARKS.md: the machine's peak, the criterion benches on flex
# (default) and ndarray, PyTorch + PEFT on the same cases, and the training step's peak memory,
# back to back. Each step's output goes to OUT/<step>.txt with the 1-minute load average before it.
#
#   VENV=$HOME/.cache/torchvenv OUT=/tmp/sitting scripts/bench_sitting.sh
#
# SKIP_NDARRAY=1 leaves out the ndarray builds and benches (about half of the sitting's time).
#
# VENV holds torch, transformers and peft (see scripts/bench_torch_t5.py); CARGO_TARGET_DIR is
# honoured.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-bench-sitting}"
VENV="${VENV:?set VENV to a Python venv with torch, transformers and peft}"
mkdir -p "$OUT"

run() {
  local name="$1"
  shift
  echo "== $name: $* (load $(cut -d' ' -f1 /proc/loadavg), $(date -u +%H:%M:%S))" | tee "$OUT/$name.txt"
  "$@" 2>&1 | tee -a "$OUT/$name.txt" | grep -E "time:|GFLOP|MiB|ms|^\|" || true
}

{ grep -m1 "model name" /proc/cpuinfo; grep -m1 -E "^cpu family" /proc/cpuinfo; grep -m1 -E "^model\s" /proc/cpuinfo
  grep -o -w -E "avx512f|avx2|fma" /proc/cpuinfo | sort -u | tr '\n' ' '; echo; nproc; } > "$OUT/machine.txt"

cargo build --release --example gemm_peak --example t5_train_step_memory
cargo bench --no-run --bench lora_linear --bench t5
[ -n "${SKIP_NDARRAY:-}" ] || cargo bench --no-run --features ndarray --bench lora_linear --bench t5

run gemm_peak cargo run -q --release --example gemm_peak
run lora_linear_flex cargo bench -q --bench lora_linear
[ -n "${SKIP_NDARRAY:-}" ] || run lora_linear_ndarray cargo bench -q --features ndarray --bench lora_linear
run lora_linear_torch "$VENV/bin/python" scripts/bench_torch_lora.py --threads 2
run t5_flex cargo bench -q --bench t5 -- "greedy_64|beam4_32|train_step_bs8"
# ndarray without the int8 cases: Burn's quantized product there takes about 50 s per greedy run.
[ -n "${SKIP_NDARRAY:-}" ] || run t5_ndarray cargo bench -q --features ndarray --bench t5 -- "greedy_64$|beam4_32$|train_step_bs8"
run t5_torch "$VENV/bin/python" scripts/bench_torch_t5.py --threads 2
run memory_flex cargo run -q --release --example t5_train_step_memory
