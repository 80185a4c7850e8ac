#!/usr/bin/env python3
"""Shares of a `perf record` profile by kind of work, for the BENCHMARKS.md profile table.

Reads `perf report --no-children --sort symbol` of each profile and adds up the self time of
the symbols in each category (first match wins); the rest is "other".

    perf record -e cpu-clock -F 200 -g -o train.data \\
        target/release/deps/t5-<hash> --bench --profile-time 15 train_step_bs8
    python3 scripts/perf_categories.py train.data [more.data ...]
"""

from __future__ import annotations

import re
import subprocess
import sys

CATEGORIES = [
    ("GEMM kernels and packing (gemm)", r"gemm_f32::microkernel|gemm_common|gemm::"),
    ("Burn's Bernoulli sampling (StdRng)", r"distribution::|TensorData::random|RngExt|chacha|rand::"),
    ("dropout masks (xoshiro256++)", r"scaled_keep_mask"),
    ("kernel (page zeroing, faults, scheduling)", None),  # every [k] symbol
    ("exp (libm expf)", r"expf"),
    ("strided copies (to_contiguous, StridedIter)", r"to_contiguous|StridedIter"),
    ("memcpy / memset", r"memmove|memset|memcpy"),
]

LINE = re.compile(r"^\s+([\d.]+)%\s+\[(.)\]\s+(.*)$")


def shares(profile: str) -> dict[str, float]:
    report = subprocess.run(
        ["perf", "report", "-i", profile, "--no-children", "--sort", "symbol", "--stdio", "-g", "none"],
        capture_output=True, text=True, check=True,
    ).stdout
    totals = {name: 0.0 for name, _ in CATEGORIES}
    totals["other"] = 0.0
    for line in report.splitlines():
        match = LINE.match(line)
        if not match:
            continue
        percent, space, symbol = float(match.group(1)), match.group(2), match.group(3)
        for name, pattern in CATEGORIES:
            if (pattern is None and space == "k") or (pattern and space != "k" and re.search(pattern, symbol)):
                totals[name] += percent
                break
        else:
            totals["other"] += percent
    return totals


def main() -> None:
    profiles = sys.argv[1:]
    if not profiles:
        sys.exit(__doc__)
    table = [shares(p) for p in profiles]
    print("| kind of work | " + " | ".join(profiles) + " |")
    print("| --- |" + " ---: |" * len(profiles))
    for name in table[0]:
        print(f"| {name} | " + " | ".join(f"{t[name]:.1f}%" for t in table) + " |")


if __name__ == "__main__":
    main()
