#!/usr/bin/env python3
"""Generate the fixtures of PEFT's `hotswap_adapter` for the `lora-peft-io` hot-swap tests.

With the real ``peft`` and ``transformers``, on the tiny ``t5_v1_1`` fixture model, writes
under ``crates/lora-t5/tests/fixtures/hotswap/``:

* ``a/``: the adapter loaded first (r 4, alpha 8, on ``q`` and ``v``);
* ``smaller/``: r 2, alpha 16, on ``q`` only (PEFT zeroes the loaded adapter's ``v`` layers);
* ``larger/``: r 6, alpha 3, on ``q`` and ``v``;
* ``rslora/`` and ``extra_target/``: adapters PEFT refuses to hot-swap over ``a`` (another
  ``use_rslora``; a target, ``k``, that ``a`` leaves out);
* ``expected.json``: prompts, decoder ids and the logits of ``PeftModel.from_pretrained(a)``
  after ``hotswap_adapter(model, smaller | larger, "default")``, and PEFT's refusal messages.

Usage, from the repository root, with a venv holding torch, transformers and peft:

    $VENV/bin/python scripts/gen_hotswap_fixtures.py
"""

import copy
import json
import shutil
from pathlib import Path

import peft
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora import LoraLayer
from peft.utils.hotswap import hotswap_adapter
from transformers import T5ForConditionalGeneration

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "crates" / "lora-t5" / "tests" / "fixtures"
OUT = FIXTURES / "hotswap"

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

ADAPTERS = {
    "a": dict(r=4, lora_alpha=8, target_modules=["q", "v"]),
    "smaller": dict(r=2, lora_alpha=16, target_modules=["q"]),
    "larger": dict(r=6, lora_alpha=3, target_modules=["q", "v"]),
    "rslora": dict(r=4, lora_alpha=8, target_modules=["q", "v"], use_rslora=True),
    "extra_target": dict(r=4, lora_alpha=8, target_modules=["q", "v", "k"]),
}


def base() -> T5ForConditionalGeneration:
    return T5ForConditionalGeneration.from_pretrained(str(FIXTURES / "t5_v1_1")).eval()


def write_adapter(name: str, seed: int, settings: dict) -> None:
    model = get_peft_model(base(), LoraConfig(lora_dropout=0.0, task_type="SEQ_2_SEQ_LM", **settings))
    torch.manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, LoraLayer):
                weight = module.lora_B["default"].weight
                weight.copy_(torch.randn(weight.shape) * 0.3)
    model.peft_config["default"].base_model_name_or_path = "t5_v1_1"
    model.save_pretrained(str(OUT / name))
    (OUT / name / "README.md").unlink(missing_ok=True)


def main() -> None:
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    for seed, (name, settings) in enumerate(ADAPTERS.items()):
        write_adapter(name, 100 + seed, settings)
    g = torch.Generator().manual_seed(5)
    input_ids = torch.randint(2, 80, (2, 7), generator=g)
    input_ids[:, -1] = 1
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 5:] = 0
    decoder_input_ids = torch.randint(2, 80, (2, 5), generator=g)
    decoder_input_ids[:, 0] = 0
    expected = {
        "peft_version": peft.__version__,
        "input_ids": input_ids.tolist(),
        "attention_mask": attention_mask.tolist(),
        "decoder_input_ids": decoder_input_ids.tolist(),
        "logits": {},
        "refused": {},
    }

    def logits(model):
        with torch.no_grad():
            out = model(input_ids=input_ids, attention_mask=attention_mask,
                        decoder_input_ids=decoder_input_ids)
        return out.logits

    for name in ["smaller", "larger"]:
        model = PeftModel.from_pretrained(base(), str(OUT / "a")).eval()
        hotswap_adapter(model, str(OUT / name), adapter_name="default", torch_device="cpu")
        swapped = logits(model)
        direct = logits(PeftModel.from_pretrained(base(), str(OUT / name)).eval())
        # A swapped adapter computes what the new adapter loaded on its own computes (up to
        # the rounding of the zero-padded products).
        assert (swapped - direct).abs().max() <= 1e-5 * direct.abs().max(), name
        expected["logits"][name] = [[[float(f"{v:.9g}") for v in row] for row in seq] for seq in swapped.tolist()]
    for name in ["rslora", "extra_target"]:
        model = PeftModel.from_pretrained(base(), str(OUT / "a")).eval()
        try:
            hotswap_adapter(model, str(OUT / name), adapter_name="default", torch_device="cpu")
        except (ValueError, RuntimeError) as err:
            expected["refused"][name] = str(err)
        else:
            raise AssertionError(f"PEFT hot-swapped {name}")
    (OUT / "expected.json").write_text(json.dumps(expected, separators=(",", ":")) + "\n")
    print(json.dumps(expected["refused"], indent=1))


if __name__ == "__main__":
    main()
