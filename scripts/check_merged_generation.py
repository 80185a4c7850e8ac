#!/usr/bin/env python3
"""Check that transformers generates, from a checkpoint written by `lora-t5 merge`, the same
text as `lora-t5 generate` with the unmerged adapter.

Greedy decoding (96 new tokens at most) with ``T5ForConditionalGeneration.generate`` on the
merged directory, the prompts encoded and the outputs decoded with its ``tokenizer.json``
(``tokenizers``), compared string by string with the Rust outputs (one line per prompt).
Prints every difference and ``N of M identical``; exit status 1 unless all are identical.

Usage (from the repository root, after `cargo run --release --bin lora-t5 -- demo`):

    head -20 data/uidsl/heldout_test.jsonl > /tmp/prompts.jsonl
    target/release/lora-t5 merge --model models/uidsl-t5-small --adapter runs/demo/final --out /tmp/merged
    target/release/lora-t5 generate --model models/uidsl-t5-small --adapter runs/demo/final \\
        --input /tmp/prompts.jsonl > /tmp/rust.txt
    $VENV/bin/python scripts/check_merged_generation.py /tmp/merged /tmp/prompts.jsonl /tmp/rust.txt
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from tokenizers import Tokenizer
from transformers import T5ForConditionalGeneration


def main() -> None:
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    merged_dir, prompts_file, rust_file = (Path(a) for a in sys.argv[1:])
    tokenizer = Tokenizer.from_file(str(merged_dir / "tokenizer.json"))
    model = T5ForConditionalGeneration.from_pretrained(merged_dir).eval()
    prompts = [json.loads(line)["instruction"] for line in prompts_file.read_text().splitlines() if line.strip()]
    rust = rust_file.read_text().splitlines()
    if len(rust) != len(prompts):
        sys.exit(f"{len(prompts)} prompts but {len(rust)} Rust outputs")
    same = 0
    for prompt, expected in zip(prompts, rust):
        ids = torch.tensor([tokenizer.encode(prompt).ids])
        with torch.no_grad():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=96,
                                 do_sample=False, num_beams=1)
        text = tokenizer.decode(out[0].tolist(), skip_special_tokens=True)
        if text == expected:
            same += 1
        else:
            print(f"DIFF\n  transformers: {text}\n  lora-t5:      {expected}")
    print(f"{same} of {len(prompts)} identical")
    sys.exit(0 if same == len(prompts) else 1)


if __name__ == "__main__":
    main()
