#!/usr/bin/env python3
"""Generate the fixture of mixed-adapter batches (PEFT's `adapter_names`) through T5.

With the real ``peft`` and ``transformers``, on the tiny ``t5_v1_1`` fixture model with the
hot-swap fixture's adapters ``a`` (r 4 on q, v) and ``larger`` (r 6 on q, v) loaded as ``a``
and ``b``, writes ``crates/lora-t5/tests/fixtures/mixed_adapters.json``: three prompts routed
to ``a``, ``__base__`` and ``b``, the forward logits for fixed decoder ids, and the greedy and
4-beam ids of ``generate(..., adapter_names=...)``. Each routed row must equal the same prompt
run alone with its adapter (checked here before writing).

Usage, from the repository root, after ``scripts/gen_hotswap_fixtures.py``:

    $VENV/bin/python scripts/gen_mixed_adapter_fixtures.py
"""

import json
from pathlib import Path

import peft
import torch
from peft import PeftModel
from transformers import T5ForConditionalGeneration

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "crates" / "lora-t5" / "tests" / "fixtures"
NAMES = ["a", "__base__", "b"]

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)


def f32(v: float) -> float:
    return float(f"{v:.9g}")


def main() -> None:
    base = T5ForConditionalGeneration.from_pretrained(str(FIXTURES / "t5_v1_1")).eval()
    model = PeftModel.from_pretrained(base, str(FIXTURES / "hotswap" / "a"), adapter_name="a")
    model.load_adapter(str(FIXTURES / "hotswap" / "larger"), adapter_name="b")
    model.eval()
    g = torch.Generator().manual_seed(11)
    input_ids = torch.randint(2, 80, (3, 8), generator=g)
    input_ids[:, -1] = 1
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 6:] = 0
    input_ids[1, 6:] = 0
    decoder_input_ids = torch.randint(2, 80, (3, 5), generator=g)
    decoder_input_ids[:, 0] = 0
    inputs = dict(input_ids=input_ids, attention_mask=attention_mask)
    runs = {
        "greedy": dict(max_new_tokens=8, num_beams=1, do_sample=False),
        "beam": dict(max_new_tokens=8, num_beams=4, do_sample=False),
    }
    with torch.no_grad():
        logits = model(**inputs, decoder_input_ids=decoder_input_ids, adapter_names=NAMES).logits
        out = {name: model.generate(**inputs, adapter_names=NAMES, use_cache=False, **kw)
               for name, kw in runs.items()}
        # Each row alone with its adapter gives the same.
        for row, name in enumerate(NAMES):
            one = {k: v[row:row + 1] for k, v in inputs.items()}
            if name == "__base__":
                with model.disable_adapter():
                    alone = model(**one, decoder_input_ids=decoder_input_ids[row:row + 1]).logits
            else:
                model.set_adapter(name)
                alone = model(**one, decoder_input_ids=decoder_input_ids[row:row + 1]).logits
            assert (alone[0] - logits[row]).abs().max() <= 1e-5 * logits.abs().max(), name
    fixture = {
        "peft_version": peft.__version__,
        "adapter_names": NAMES,
        "input_ids": input_ids.tolist(),
        "attention_mask": attention_mask.tolist(),
        "decoder_input_ids": decoder_input_ids.tolist(),
        "logits": [[[f32(v) for v in pos] for pos in seq] for seq in logits.tolist()],
        "generate": {name: {"kwargs": runs[name], "sequences": ids.tolist()} for name, ids in out.items()},
    }
    (FIXTURES / "mixed_adapters.json").write_text(json.dumps(fixture, separators=(",", ":")) + "\n")
    print({k: v["sequences"] for k, v in fixture["generate"].items()})


if __name__ == "__main__":
    main()
