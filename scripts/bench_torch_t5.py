#!/usr/bin/env python3
"""PyTorch + transformers + PEFT reference timings for the `t5` criterion benchmarks.

Times, in float32 on the CPU, the cases of ``benches/t5.rs`` (same ids) on a
t5-small-sized ``T5ForConditionalGeneration`` with random weights (d_model 512,
6 + 6 layers, 8 heads, d_kv 64, d_ff 2048, vocabulary 32128, ReLU, tied head,
dropout 0.1) wrapped by ``get_peft_model`` with ``LoraConfig(r=16,
lora_alpha=32, target_modules=["q", "v"])`` (PEFT's default init: lora_B is
zero):

* ``greedy_64``       one 64-token prompt, ``generate(max_new_tokens=64,
                      min_new_tokens=64, do_sample=False)``: exactly 64 new tokens
* ``beam4_32``        the same prompt, ``num_beams=4, max_new_tokens=32,
                      min_new_tokens=32``
* ``train_step_bs8``  one training step in ``train()`` mode: batch 8, source 64,
                      target 128 (random ids), ``model(input_ids, attention_mask,
                      labels).loss.backward()``, ``torch.optim.AdamW`` (lr 1e-4)
                      over the LoRA parameters, ``zero_grad``

The prompt and the ids are the same deterministic sequences as the Rust
benchmark's. Each case runs in its own child process, so that its peak resident
set (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) is its own: the peak is read
once after building the model (and one warm-up call) and once after the timed
repetitions. Reported: the median wall time over the repetitions, tokens/s from
the median (new tokens for generation; 8 x (64 + 128) = 1536 source + target
tokens for the training step) and the peak RSS in MiB.

Usage (from the repository root):

    $VENV/bin/python scripts/bench_torch_t5.py                  # full run
    $VENV/bin/python scripts/bench_torch_t5.py --quick          # smoke test
    $VENV/bin/python scripts/bench_torch_t5.py --json torch_t5.json

Options: ``--quick`` (one warm-up-free repetition per case), ``--repeats N``
(default 5), ``--warmup N`` (default 1), ``--threads N`` (``torch.set_num_threads``;
default: leave as is), ``--filter SUBSTRING`` (only run ids containing it),
``--json PATH`` (write ``{id: {median_s, tokens_per_s, peak_rss_mib, ...}}``), ``--flan``
(google/flan-t5-small's shape: d_model 512, 8 + 8 layers, 6 heads, gated-gelu d_ff 1024,
untied head; ``examples/t5_train_step_memory.rs`` takes ``flan`` for the same model).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

CASES = ["greedy_64", "beam4_32", "train_step_bs8"]
PROMPT_LEN = 64
GREEDY_NEW = 64
BEAM_NEW = 32
BEAMS = 4
BATCH, SOURCE, TARGET = 8, 64, 128


def token_ids(count: int, seed: int) -> list[int]:
    """The deterministic ids of ``benches/t5.rs``: an LCG, ids in 2..30000."""
    mask = (1 << 64) - 1
    state = seed
    out = []
    for _ in range(count):
        state = (state * 6364136223846793005 + 1442695040888963407) & mask
        out.append(2 + ((state >> 33) % 29998))
    return out


def peak_rss_mib() -> float:
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def build_model(flan: bool = False):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import T5Config, T5ForConditionalGeneration

    # t5-small's dimensions, or with ``flan`` google/flan-t5-small's (gated-gelu, untied head).
    layers = 8 if flan else 6
    config = T5Config(
        vocab_size=32128,
        d_model=512,
        d_kv=64,
        d_ff=1024 if flan else 2048,
        num_layers=layers,
        num_decoder_layers=layers,
        num_heads=6 if flan else 8,
        feed_forward_proj="gated-gelu" if flan else "relu",
        tie_word_embeddings=not flan,
        dropout_rate=0.1,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(config)
    lora = LoraConfig(r=16, lora_alpha=32, target_modules=["q", "v"], lora_dropout=0.0)
    model = get_peft_model(model, lora)
    targeted = [n for n, _ in model.named_modules() if n.endswith((".q", ".v"))]
    assert len(targeted) == layers * 2 + layers * 2 * 2, len(targeted)
    return model


def run_case(case: str, repeats: int, warmup: int, flan: bool = False) -> dict:
    """Runs one case in this process and returns its measurements."""
    import torch

    model = build_model(flan)
    device = torch.device("cpu")
    prompt = torch.tensor([token_ids(PROMPT_LEN, 1)], dtype=torch.long, device=device)
    prompt_mask = torch.ones_like(prompt)

    if case in ("greedy_64", "beam4_32"):
        model.eval()
        beams, new = (1, GREEDY_NEW) if case == "greedy_64" else (BEAMS, BEAM_NEW)

        def call() -> None:
            with torch.no_grad():
                out = model.generate(
                    input_ids=prompt,
                    attention_mask=prompt_mask,
                    max_new_tokens=new,
                    min_new_tokens=new,
                    do_sample=False,
                    num_beams=beams,
                )
            assert out.shape == (1, 1 + new), out.shape

        tokens = new
    elif case == "train_step_bs8":
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        assert all("lora_" in n for n, p in model.named_parameters() if p.requires_grad)
        optimizer = torch.optim.AdamW(params, lr=1e-4)
        input_ids = torch.tensor(token_ids(BATCH * SOURCE, 3), dtype=torch.long).reshape(BATCH, SOURCE)
        mask = torch.ones_like(input_ids)
        labels = torch.tensor(token_ids(BATCH * TARGET, 4), dtype=torch.long).reshape(BATCH, TARGET)

        def call() -> None:
            out = model(input_ids=input_ids, attention_mask=mask, labels=labels)
            out.loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        tokens = BATCH * (SOURCE + TARGET)
    else:
        raise ValueError(f"unknown case {case}")

    for _ in range(warmup):
        call()
    rss_built = peak_rss_mib()
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        call()
        samples.append(time.perf_counter() - t0)
    median = statistics.median(samples)
    return {
        "median_s": median,
        "min_s": min(samples),
        "max_s": max(samples),
        "samples": len(samples),
        "tokens": tokens,
        "tokens_per_s": tokens / median,
        "peak_rss_mib_after_warmup": rss_built,
        "peak_rss_mib": peak_rss_mib(),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke test: one repetition, no warm-up")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: leave as is)")
    ap.add_argument("--filter", default=None, help="only run ids containing this substring")
    ap.add_argument("--json", type=Path, default=None, help="also write the results to this file")
    ap.add_argument("--flan", action="store_true", help="google/flan-t5-small's shape instead of t5-small's")
    ap.add_argument("--case", default=None, help=argparse.SUPPRESS)  # child process: run one case
    args = ap.parse_args()
    if args.quick:
        args.repeats, args.warmup = 1, 0

    if args.case is not None:
        import torch

        if args.threads is not None:
            torch.set_num_threads(args.threads)
        print(json.dumps(run_case(args.case, args.repeats, args.warmup, args.flan)))
        return 0

    import peft
    import torch
    import transformers

    threads = args.threads if args.threads is not None else torch.get_num_threads()
    print(
        f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}, "
        f"python {platform.python_version()}, {platform.machine()}, torch threads {threads}, float32 CPU"
    )
    print(f"repeats={args.repeats} warmup={args.warmup}, one child process per case\n")
    print("| benchmark | median s | tokens/s | peak RSS MiB | samples |")
    print("| --- | ---: | ---: | ---: | ---: |")
    results: dict[str, dict] = {}
    for case in CASES:
        if args.filter and args.filter not in case:
            continue
        cmd = [sys.executable, __file__, "--case", case, "--repeats", str(args.repeats), "--warmup", str(args.warmup)]
        if args.threads is not None:
            cmd += ["--threads", str(args.threads)]
        if args.flan:
            cmd.append("--flan")
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr)
            print(f"| {case} | failed (exit {proc.returncode}) | | | |")
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        results[case] = r
        print(
            f"| {case} | {r['median_s']:.3f} | {r['tokens_per_s']:.1f} | {r['peak_rss_mib']:.0f} | {r['samples']} |",
            flush=True,
        )
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        print(f"\nwrote {args.json}")
    return 0 if len(results) == len([c for c in CASES if not args.filter or args.filter in c]) else 1


if __name__ == "__main__":
    sys.exit(main())
