#!/usr/bin/env python3
"""Shares of a `perf` profile spent under given functions, among the samples under a root.

Reads the text of `perf script` (DWARF call graphs) and prints, for each PATTERN, the share of
the samples whose stack contains ROOT that also contain PATTERN (plain substring matches on
the symbol names). Used for the profiles quoted in BENCHMARKS.md:

    perf script -i greedy.data > greedy.txt
    python3 scripts/perf_share.py greedy.txt 'T5ForConditionalGeneration<B>>::generate' \\
        'NdArrayOps<E>::reshape' 'matrixmultiply::packing' 'sgemm_kernel'
"""

from __future__ import annotations

import sys


def main() -> None:
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    path, root, *patterns = sys.argv[1:]
    with open(path, encoding="utf-8", errors="replace") as f:
        samples = f.read().split("\n\n")
    rooted = [s for s in samples if root in s]
    if not rooted:
        sys.exit(f"no sample has `{root}` on its stack ({len(samples)} samples)")
    print(f"{len(rooted)} of {len(samples)} samples under `{root}`")
    for pattern in patterns:
        share = sum(pattern in s for s in rooted) / len(rooted)
        print(f"{100 * share:5.1f}%  {pattern}")


if __name__ == "__main__":
    main()
