#!/usr/bin/env python3
"""Generate PEFT adapters on T5's embedding-like layers for the `lora-t5` tests.

With the real ``peft`` and ``transformers``, on the tiny fixture models ``t5_v1_0`` (head tied
to ``shared``) and ``t5_v1_1`` (untied head), writes under
``crates/lora-t5/tests/fixtures/peft_tied_layers/``:

* ``tied_head/``: r 4 on ``q``, ``v`` and ``lm_head`` of the tied model. PEFT wraps the tied
  head and, under ``save_embedding_layers="auto"``, writes its full base weight
  (``lm_head.base_layer.weight``) into the adapter file;
* ``untied_head/``: the same on the untied model;
* ``embed_tokens/``: r 4 on ``q`` and ``embed_tokens`` of the tied model (PEFT's
  ``lora_embedding_A`` / ``_B`` on ``encoder.embed_tokens`` and ``decoder.embed_tokens``,
  separate modules sharing ``shared``'s weight);
* ``embeddings_rslora/``: rsLoRA r 2 on ``embed_tokens``, ``lm_head`` and ``wo`` of the untied
  model;
* ``changed_head_base/``: like ``untied_head``, with a base head weight in the file that differs
  from the model's (as after resizing or training the head): loading applies it;
* ``saved_head/``, ``saved_tied_head/`` and ``saved_lookups/``: r 4 on ``q`` and ``v`` with
  ``modules_to_save`` ``["lm_head"]`` (untied and tied) or ``["embed_tokens"]``: PEFT trains a
  full copy of each such module, written under the module's own keys (``lm_head.weight``);
  the copies here are moved off the base by random steps, as training would;
* ``expected.json``: the prompts, decoder ids and the logits of
  ``PeftModel.from_pretrained(base, case)`` for every case.

Every LoRA factor is random (PEFT starts ``lora_B`` / ``lora_embedding_A`` at zero), so each
adapter changes the logits. With ``--check-rust-output DIR``, the script instead loads the
adapters the Rust tests wrote under ``DIR/<case>`` with PEFT and checks their logits against
``expected.json`` (1e-5 relative to the largest logit).

Usage, from the repository root, with a venv holding torch, transformers and peft:

    $VENV/bin/python scripts/gen_tied_layer_fixtures.py
    $VENV/bin/python scripts/gen_tied_layer_fixtures.py --check-rust-output DIR
"""

import argparse
import json
import os
import shutil
import sys
import warnings
from pathlib import Path

import peft
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import T5ForConditionalGeneration

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "crates" / "lora-t5" / "tests" / "fixtures"
OUT = FIXTURES / "peft_tied_layers"

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

CASES = {
    "tied_head": ("t5_v1_0", dict(r=4, lora_alpha=8, target_modules=["q", "v", "lm_head"])),
    "untied_head": ("t5_v1_1", dict(r=4, lora_alpha=8, target_modules=["q", "v", "lm_head"])),
    "embed_tokens": ("t5_v1_0", dict(r=4, lora_alpha=8, target_modules=["q", "embed_tokens"])),
    "embeddings_rslora": (
        "t5_v1_1",
        dict(r=2, lora_alpha=6, use_rslora=True, target_modules=["embed_tokens", "lm_head", "wo"]),
    ),
    "changed_head_base": ("t5_v1_1", dict(r=4, lora_alpha=8, target_modules=["q", "v", "lm_head"])),
    "saved_head": ("t5_v1_1", dict(r=4, lora_alpha=8, target_modules=["q", "v"], modules_to_save=["lm_head"])),
    "saved_tied_head": (
        "t5_v1_0",
        dict(r=4, lora_alpha=8, target_modules=["q", "v"], modules_to_save=["lm_head"]),
    ),
    "saved_lookups": (
        "t5_v1_0",
        dict(r=4, lora_alpha=8, target_modules=["q", "v"], modules_to_save=["embed_tokens"]),
    ),
}


def base(name: str) -> T5ForConditionalGeneration:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return T5ForConditionalGeneration.from_pretrained(str(FIXTURES / name)).eval()


def write_case(case: str, seed: int) -> None:
    model_name, settings = CASES[case]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = get_peft_model(
            base(model_name), LoraConfig(lora_dropout=0.0, task_type="SEQ_2_SEQ_LM", **settings)
        )
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape) * 0.3)
            elif "modules_to_save" in name:
                param.add_(torch.randn(param.shape) * 0.3)
        if case == "changed_head_base":
            head = model.base_model.model.lm_head.base_layer.weight
            head.add_(torch.randn(head.shape) * 0.5)
    model.peft_config["default"].base_model_name_or_path = model_name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.save_pretrained(str(OUT / case))
    (OUT / case / "README.md").unlink(missing_ok=True)


def inputs():
    g = torch.Generator().manual_seed(11)
    input_ids = torch.randint(2, 80, (2, 7), generator=g)
    input_ids[:, -1] = 1
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 5:] = 0
    decoder_input_ids = torch.randint(2, 80, (2, 5), generator=g)
    decoder_input_ids[:, 0] = 0
    return input_ids, attention_mask, decoder_input_ids


def logits(case: str, adapter_dir: Path) -> torch.Tensor:
    input_ids, attention_mask, decoder_input_ids = inputs()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = PeftModel.from_pretrained(base(CASES[case][0]), str(adapter_dir)).eval()
    with torch.no_grad():
        return model(
            input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids
        ).logits


def check_rust_output(root: Path) -> None:
    expected = json.loads((OUT / "expected.json").read_text())
    for case in CASES:
        got = logits(case, root / case)
        want = torch.tensor(expected["logits"][case])
        diff = (got - want).abs().max().item()
        scale = want.abs().max().item()
        print(f"{case}: largest difference {diff:.3g} (largest logit {scale:.3g})")
        assert diff <= 1e-5 * scale, case
    print("every adapter written by the Rust side loads in PEFT with the expected logits")


def main() -> None:
    # PEFT keeps `target_modules` as a set and writes `list(set)`: fix the string hashing so
    # that two runs write identical files.
    if os.environ.get("PYTHONHASHSEED") != "0":
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "PYTHONHASHSEED": "0"})
    parser = argparse.ArgumentParser()
    parser.add_argument("--check-rust-output", type=Path)
    args = parser.parse_args()
    if args.check_rust_output:
        check_rust_output(args.check_rust_output)
        return
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    for seed, case in enumerate(CASES):
        write_case(case, 200 + seed)
    input_ids, attention_mask, decoder_input_ids = inputs()
    expected = {
        "peft_version": peft.__version__,
        "input_ids": input_ids.tolist(),
        "attention_mask": attention_mask.tolist(),
        "decoder_input_ids": decoder_input_ids.tolist(),
        "logits": {},
    }
    for case in CASES:
        out = logits(case, OUT / case)
        plain = base(CASES[case][0])
        with torch.no_grad():
            unadapted = plain(
                input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids
            ).logits
        # Each adapter must change the output, or its test could not fail.
        assert (out - unadapted).abs().max() > 1e-2, case
        expected["logits"][case] = [
            [[float(f"{v:.9g}") for v in row] for row in seq] for seq in out.tolist()
        ]
    (OUT / "expected.json").write_text(json.dumps(expected, separators=(",", ":")) + "\n")
    for case in CASES:
        keys = sorted(
            k for k in __import__("safetensors.torch", fromlist=["load_file"])
            .load_file(str(OUT / case / "adapter_model.safetensors")) if "block" not in k
        )
        print(case, keys)


if __name__ == "__main__":
    main()
