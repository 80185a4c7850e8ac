#!/usr/bin/env python3
"""PyTorch + PEFT reference timings for the `LoraLinear` criterion benchmarks.

Times, in float32 on the CPU, the same cases (with the same ids) as the
criterion benchmark of this workspace:

* ``plain_fwd/T×I×O``          plain ``nn.Linear(I, O)`` forward (no grad)
* ``lora_fwd/T×I×O/rR``        PEFT ``lora.Linear`` forward, adapter unmerged (no grad)
* ``merged_fwd/T×I×O/rR``      the same layer after ``merge_adapter()`` (no grad)
* ``lora_fwd_bwd/T×I×O/rR``    forward + backward of ``y.sum()``; only lora_A / lora_B
                               require grad, the input does not
* ``full_fwd_bwd/T×I×O``       plain ``nn.Linear`` with weight and bias trainable,
                               forward + backward of ``y.sum()``

for (T tokens, I in, O out, R rank) in (512, 768, 768, 16), (512, 768, 3072, 16),
(2048, 1024, 1024, 64), (1, 768, 768, 16). The input is ``[T, I]``. The LoRA
layer is called directly (``peft_model.base_model.model.lin``), so the numbers
exclude PeftModel's forward-hook wrapper. ``lora_B`` is set to random non-zero
values so the adapter does real work. ``torch.set_num_threads`` is left at its
default unless ``--threads`` is given.

Each case is warmed up, then sampled until it has at least ``--min-samples``
samples and ``--min-time`` seconds (capped at ``--max-time`` seconds); the
median wall time per call is reported in milliseconds, followed by the ratios
lora_fwd/plain_fwd, merged_fwd/plain_fwd and lora_fwd_bwd/full_fwd_bwd.

Usage (from the repository root):

    $VENV/bin/python scripts/bench_torch_lora.py                   # full run
    $VENV/bin/python scripts/bench_torch_lora.py --quick           # smoke test
    $VENV/bin/python scripts/bench_torch_lora.py --json torch.json # also write {id: median_ms}
    $VENV/bin/python scripts/bench_torch_lora.py --filter 512×768×768

Options: ``--quick`` (few samples, short budget), ``--min-samples N``
(default 20), ``--min-time S`` (default 2.0), ``--max-time S`` (default 20),
``--warmup N`` (default 3), ``--threads N``, ``--filter SUBSTRING`` (only run
ids containing it), ``--json PATH``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import peft
import torch
from peft import LoraConfig, get_peft_model
from torch import nn

SHAPES = [
    (512, 768, 768, 16),
    (512, 768, 3072, 16),
    (2048, 1024, 1024, 64),
    (1, 768, 768, 16),
]


class Holder(nn.Module):
    def __init__(self, lin: nn.Linear) -> None:
        super().__init__()
        self.lin = lin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x)


def time_case(fn: Callable[[], None], *, warmup: int, min_samples: int, min_time: float, max_time: float) -> list[float]:
    for _ in range(warmup):
        fn()
    samples: list[float] = []
    start = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
        elapsed = time.perf_counter() - start
        if len(samples) >= min_samples and elapsed >= min_time:
            break
        if elapsed >= max_time and len(samples) >= 3:
            break
    return samples


def make_lora(t_in: int, t_out: int, rank: int) -> tuple[nn.Module, nn.Module]:
    """A PEFT model around one Linear and its `lora.Linear` layer, lora_B random."""
    base = Holder(nn.Linear(t_in, t_out))
    cfg = LoraConfig(target_modules=["lin"], r=rank, lora_alpha=2 * rank, lora_dropout=0.0)
    model = get_peft_model(base, cfg)
    layer = model.base_model.model.lin
    with torch.no_grad():
        w = layer.lora_B["default"].weight
        w.copy_(torch.randn(w.shape) * 0.02)
    return model, layer


def cases_for(shape: tuple[int, int, int, int]):
    """Yield (id, setup) pairs; setup() returns the callable to time."""
    t, i, o, r = shape
    dims = f"{t}×{i}×{o}"

    def plain_fwd():
        lin = nn.Linear(i, o).eval()
        x = torch.randn(t, i)

        def run():
            with torch.no_grad():
                lin(x)

        return run

    def lora_fwd():
        model, layer = make_lora(i, o, r)
        model.eval()
        x = torch.randn(t, i)

        def run():
            with torch.no_grad():
                layer(x)

        return run

    def merged_fwd():
        model, layer = make_lora(i, o, r)
        model.eval()
        model.merge_adapter()
        assert layer.merged
        x = torch.randn(t, i)

        def run():
            with torch.no_grad():
                layer(x)

        return run

    def lora_fwd_bwd():
        model, layer = make_lora(i, o, r)
        model.train()
        params = [p for p in layer.parameters() if p.requires_grad]
        names = sorted(n for n, p in layer.named_parameters() if p.requires_grad)
        assert names == ["lora_A.default.weight", "lora_B.default.weight"], names
        x = torch.randn(t, i)

        def run():
            for p in params:
                p.grad = None
            layer(x).sum().backward()

        return run

    def full_fwd_bwd():
        lin = nn.Linear(i, o).train()
        params = list(lin.parameters())
        x = torch.randn(t, i)

        def run():
            for p in params:
                p.grad = None
            lin(x).sum().backward()

        return run

    yield f"plain_fwd/{dims}", plain_fwd
    yield f"lora_fwd/{dims}/r{r}", lora_fwd
    yield f"merged_fwd/{dims}/r{r}", merged_fwd
    yield f"lora_fwd_bwd/{dims}/r{r}", lora_fwd_bwd
    yield f"full_fwd_bwd/{dims}", full_fwd_bwd


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke test: few samples, short time budget")
    ap.add_argument("--min-samples", type=int, default=20)
    ap.add_argument("--min-time", type=float, default=2.0)
    ap.add_argument("--max-time", type=float, default=20.0)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: leave as is)")
    ap.add_argument("--filter", default=None, help="only run ids containing this substring")
    ap.add_argument("--json", type=Path, default=None, help="also write {id: median_ms} to this file")
    args = ap.parse_args()
    if args.quick:
        args.min_samples, args.min_time, args.max_time, args.warmup = 3, 0.05, 1.0, 1
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    print(
        f"torch {torch.__version__}, peft {peft.__version__}, python {platform.python_version()}, "
        f"{platform.machine()}, torch threads {torch.get_num_threads()}, float32 CPU"
    )
    print(
        f"min_samples={args.min_samples} min_time={args.min_time}s max_time={args.max_time}s warmup={args.warmup}\n"
    )

    medians: dict[str, float] = {}
    counts: dict[str, int] = {}
    print("| benchmark | median ms | samples |")
    print("| --- | ---: | ---: |")
    for shape in SHAPES:
        for bench_id, setup in cases_for(shape):
            if args.filter and args.filter not in bench_id:
                continue
            run = setup()
            samples = time_case(
                run, warmup=args.warmup, min_samples=args.min_samples, min_time=args.min_time, max_time=args.max_time
            )
            medians[bench_id] = statistics.median(samples) * 1e3
            counts[bench_id] = len(samples)
            print(f"| {bench_id} | {medians[bench_id]:.4f} | {counts[bench_id]} |", flush=True)

    print("\n| shape | rank | lora_fwd/plain_fwd | merged_fwd/plain_fwd | lora_fwd_bwd/full_fwd_bwd |")
    print("| --- | ---: | ---: | ---: | ---: |")

    def ratio(a: str, b: str) -> str:
        if a in medians and b in medians and medians[b] > 0:
            return f"{medians[a] / medians[b]:.3f}"
        return "n/a"

    for t, i, o, r in SHAPES:
        dims = f"{t}×{i}×{o}"
        row = [
            ratio(f"lora_fwd/{dims}/r{r}", f"plain_fwd/{dims}"),
            ratio(f"merged_fwd/{dims}/r{r}", f"plain_fwd/{dims}"),
            ratio(f"lora_fwd_bwd/{dims}/r{r}", f"full_fwd_bwd/{dims}"),
        ]
        if all(v == "n/a" for v in row):
            continue
        print(f"| {dims} | {r} | " + " | ".join(row) + " |")

    if args.json is not None:
        args.json.write_text(json.dumps(medians, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
