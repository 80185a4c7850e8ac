#!/usr/bin/env python3
"""Generate the PEFT adapter-directory fixtures used by the `lora-peft-io` tests.

Builds a tiny T5-shaped tree of bias-free ``nn.Linear`` layers, wraps it with
the real Hugging Face PEFT library and writes, under
``crates/lora-peft-io/tests/fixtures/``:

* ``base_model.safetensors``: ``Tiny().state_dict()`` (float32, PyTorch layout
  ``[out, in]``, keys such as ``encoder.block.0.layer.0.SelfAttention.q.weight``).
* ``input.safetensors``: the input ``x`` ``[2, 3, 8]`` and the base output ``y_base``.
* ``<case>/``: an adapter directory exactly as ``PeftModel.save_pretrained``
  writes it (``adapter_config.json`` + ``adapter_model.safetensors``; for a
  named adapter the files go to ``<case>/<adapter_name>/``), except for the
  hand-edited cases ``minimal``, ``old_peft`` and ``unknown_keys``.
* ``<case>/expected.safetensors``: ``y``, the PEFT model's float32 output on ``x``.
* ``<case>/targets.json``: the module paths PEFT wrapped and the rank and
  scaling it used for each of them.
* ``peft_io.json``: the keys, default values and byte-level format of the
  ``adapter_config.json`` PEFT writes, the tensor key names per case and the
  result (and warnings) of reloading every fixture with ``PeftModel.from_pretrained``.

Every case reseeds ``torch.manual_seed``, and the script re-executes itself
with ``PYTHONHASHSEED=0`` because PEFT stores ``target_modules`` as a Python
``set`` and writes it as ``list(set)``, whose order depends on string hashing.
Running it twice produces byte-identical files.

Before writing anything final, every case is reloaded with
``PeftModel.from_pretrained`` and recomputed with an independent closed-form
forward pass (plain LoRA / rsLoRA / DoRA) built only from the files on disk;
the script fails loudly if any of them disagrees with PEFT's output.

Usage (from the repository root, with a venv holding torch, transformers,
peft, safetensors and numpy):

    $VENV/bin/python scripts/gen_peft_io_fixtures.py [--out-dir DIR]

Reverse direction (adapters written by the Rust side):

    $VENV/bin/python scripts/gen_peft_io_fixtures.py --check-rust-output DIR

For each subdirectory of DIR holding ``adapter_config.json`` and a
``case.json`` of the form ``{"case": "<fixture case name>"}`` (optionally with
``"adapter_name"``; a named adapter may also sit in ``<subdirectory>/<adapter_name>/`` as
``save_pretrained`` lays it out), the adapter is loaded with ``PeftModel.from_pretrained``
on top of ``base_model.safetensors`` and its output on ``x`` is compared with
that fixture's ``expected.safetensors``. A summary goes to
``DIR/peft_check.json``; the exit status is non-zero if any check fails.
"""

from __future__ import annotations

import os
import sys

if os.environ.get("PYTHONHASHSEED") != "0":
    # `LoraConfig.target_modules` (and `exclude_modules`) are sets; `save_pretrained` writes `list(set)`, whose
    # order depends on the per-process string hash seed. Pin it so the written JSON is reproducible.
    env = dict(os.environ, PYTHONHASHSEED="0")
    os.execve(sys.executable, [sys.executable, *sys.argv], env)

import argparse  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import struct  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy  # noqa: E402
import peft  # noqa: E402
import safetensors  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from peft import LoraConfig, PeftModel, get_peft_model  # noqa: E402
from peft.tuners.lora import LoraLayer  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from torch import nn  # noqa: E402

D_MODEL = 8
D_FF = 16
OUT = 12
X_SHAPE = (2, 3, D_MODEL)  # batch 2, 3 tokens
BASE_SEED = 1234
INPUT_SEED = 4321

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT_DIR = REPO_ROOT / "crates" / "lora-peft-io" / "tests" / "fixtures"

CONFIG_NAME = "adapter_config.json"
SAFETENSORS_NAME = "adapter_model.safetensors"
BIN_NAME = "adapter_model.bin"

# Cases whose adapter weights are stored in half precision; the reverse check uses a looser tolerance for them.
LOW_PRECISION_CASES = {"rslora_bf16", "fp16"}

LORA_B_STD = 0.3
# rsLoRA on q, k, v and o (scaling alpha / sqrt(r) = 4) in all four blocks amplifies the residual stream to
# |y| ~ 460 with std 0.3, where float32 rounding alone reaches ~1e-4; a smaller lora_B keeps |y| moderate.
LORA_B_STD_OVERRIDE = {"rslora_bf16": 0.1}

torch.set_default_dtype(torch.float32)


# ---------------------------------------------------------------------------------------------------------------------
# The model. The Rust tests rebuild exactly this structure, so keep it unchanged.
# ---------------------------------------------------------------------------------------------------------------------


class Attn(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.q = nn.Linear(D_MODEL, D_MODEL, bias=False)
        self.k = nn.Linear(D_MODEL, D_MODEL, bias=False)
        self.v = nn.Linear(D_MODEL, D_MODEL, bias=False)
        self.o = nn.Linear(D_MODEL, D_MODEL, bias=False)


class SelfLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.SelfAttention = Attn()


class FF(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.wi = nn.Linear(D_MODEL, D_FF, bias=False)
        self.wo = nn.Linear(D_FF, D_MODEL, bias=False)


class FFLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.DenseReluDense = FF()


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.ModuleList([SelfLayer(), FFLayer()])


class Stack(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block = nn.ModuleList([Block(), Block()])


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = Stack()
        self.decoder = Stack()
        self.lm_head = nn.Linear(D_MODEL, OUT, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [batch, tokens, 8]
        h = x
        for stack in (self.encoder, self.decoder):
            for block in stack.block:
                a = block.layer[0].SelfAttention
                h = h + a.o(a.q(h) + a.k(h) + a.v(h))
                f = block.layer[1].DenseReluDense
                h = h + f.wo(torch.relu(f.wi(h)))
        return self.lm_head(h)


# ---------------------------------------------------------------------------------------------------------------------
# Cases
# ---------------------------------------------------------------------------------------------------------------------

# name -> (seed, LoraConfig kwargs, adapter name, weight dtype written to disk)
# Every lora_B is set to randn * LORA_B_STD (DoRA magnitudes to rand + 0.5) so that no adapter is a no-op.
PEFT_CASES: dict[str, tuple[int, dict, str, torch.dtype]] = {
    "list_qv": (101, dict(target_modules=["q", "v"], r=4, lora_alpha=8), "default", torch.float32),
    "regex": (102, dict(target_modules=r".*decoder.*\.(k|wi)", r=2, lora_alpha=4), "default", torch.float32),
    "patterns": (
        103,
        dict(
            target_modules=["q", "v", "wo"],
            r=4,
            lora_alpha=8,
            rank_pattern={"encoder.block.1.layer.0.SelfAttention.q": 2, "wo": 3},
            alpha_pattern={"v": 16},
        ),
        "default",
        torch.float32,
    ),
    "rslora_bf16": (
        104,
        dict(target_modules=["q", "k", "v", "o"], r=4, lora_alpha=8, use_rslora=True),
        "default",
        torch.bfloat16,
    ),
    "fp16": (105, dict(target_modules=["q", "v"], r=4, lora_alpha=8), "default", torch.float16),
    "named": (106, dict(target_modules=["q", "v"], r=4, lora_alpha=8), "style", torch.float32),
    "dora": (107, dict(target_modules=["q", "v"], r=2, lora_alpha=4, use_dora=True), "default", torch.float32),
    "layers": (
        108,
        dict(target_modules=["q", "v"], layers_to_transform=[1], layers_pattern="block", r=4, lora_alpha=8),
        "default",
        torch.float32,
    ),
    "exclude": (
        109,
        dict(target_modules=["q", "k", "v", "o"], exclude_modules=["k"], r=2, lora_alpha=2),
        "default",
        torch.float32,
    ),
    "lm_head_all_linear": (
        110,
        dict(target_modules=["lm_head", "wi"], r=2, lora_alpha=4),
        "default",
        torch.float32,
    ),
    # Generated with a real r=8 / alpha=8 model (the LoraConfig defaults), then the config is replaced by a two-key one.
    "minimal": (111, dict(target_modules=["q", "v"], r=8, lora_alpha=8), "default", torch.float32),
}

# Cases derived from `list_qv`'s weights with a hand-written / edited config.
DERIVED_CASES = ["old_peft", "unknown_keys"]

ALL_CASES = [*PEFT_CASES, *DERIVED_CASES]

MINIMAL_CONFIG_TEXT = '{"peft_type": "LORA", "target_modules": ["q", "v"]}\n'

# adapter_config.json in the style of PEFT 0.2.x / 0.3.0 (`enable_lora` and `merge_weights` were removed later).
OLD_PEFT_CONFIG = {
    "base_model_name_or_path": None,
    "bias": "none",
    "enable_lora": None,
    "fan_in_fan_out": False,
    "inference_mode": True,
    "lora_alpha": 8,
    "lora_dropout": 0.05,
    "merge_weights": False,
    "modules_to_save": None,
    "peft_type": "LORA",
    "r": 4,
    "target_modules": ["q", "v"],
    "task_type": None,
}

UNKNOWN_EXTRA_KEYS = {"future_option": {"nested": [1, 2.5, "x"]}, "zeta_flag": True}

# Keep the model card PEFT writes (README.md in the save directory) only here, to show an untouched directory.
KEEP_MODEL_CARD = {"list_qv"}


# ---------------------------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------------------------


def fail(msg: str) -> None:
    raise SystemExit(f"FIXTURE CHECK FAILED: {msg}")


def close(a: torch.Tensor, b: torch.Tensor, what: str, atol: float = 1e-6, rtol: float = 1e-5) -> float:
    err = (a.double() - b.double()).abs().max().item()
    if not torch.allclose(a.double(), b.double(), atol=atol, rtol=rtol):
        fail(f"{what}: max abs err {err:.3e}")
    return err


def base_model(base_sd: dict[str, torch.Tensor]) -> Tiny:
    model = Tiny()
    model.load_state_dict(base_sd)
    model.eval()
    return model


def lora_modules(model) -> dict[str, LoraLayer]:
    """Module path (relative to the base model) -> LoRA layer."""
    base = model.get_base_model()
    return {name: m for name, m in base.named_modules() if isinstance(m, LoraLayer)}


def json_roundtrip(obj):
    def default(o):
        if isinstance(o, set):
            return sorted(o)
        return str(o)

    return json.loads(json.dumps(obj, default=default))


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_peft_style_json(path: Path, obj) -> None:
    """The byte format of `PeftConfig.save_pretrained`: indent 2, sorted keys, no trailing newline."""
    path.write_text(json.dumps(obj, indent=2, sort_keys=True))


def safetensors_header(path: Path) -> dict:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + n])


def tensor_summary(path: Path) -> dict:
    header = safetensors_header(path)
    meta = header.pop("__metadata__", None)
    return {
        "metadata": meta,
        "tensors": {k: {"dtype": v["dtype"], "shape": v["shape"]} for k, v in sorted(header.items())},
    }


class Recorder:
    """Collects warnings and replaces machine-specific paths so the recorded text is reproducible."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir

    def clean(self, text: str) -> str:
        text = text.replace(str(self.out_dir.resolve()), "<fixtures>").replace(str(self.out_dir), "<fixtures>")
        return re.sub(r"/tmp/[^\s'\"]*", "<tmp>", text)

    def run(self, fn):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = fn()
        msgs = []
        for w in caught:
            msg = f"{w.category.__name__}: {self.clean(str(w.message))}"
            if msg not in msgs:
                msgs.append(msg)
        return result, msgs


# ---------------------------------------------------------------------------------------------------------------------
# Independent closed-form forward pass built from the files on disk
# ---------------------------------------------------------------------------------------------------------------------


def manual_forward(
    base_sd: dict[str, torch.Tensor],
    adapter_sd: dict[str, torch.Tensor],
    targets: dict,
    x: torch.Tensor,
) -> torch.Tensor:
    """Recompute the adapted model output from base weights, adapter tensors and per-module scaling (float64)."""
    prefix = "base_model.model."
    used = set()

    def lin(path: str, h: torch.Tensor) -> torch.Tensor:
        w = base_sd[f"{path}.weight"].double()
        if path not in targets["scaling"]:
            return h @ w.T
        s = targets["scaling"][path]
        a_key, b_key = f"{prefix}{path}.lora_A.weight", f"{prefix}{path}.lora_B.weight"
        a = adapter_sd[a_key].double()
        b = adapter_sd[b_key].double()
        used.update([a_key, b_key])
        if a.shape[0] != targets["r"][path]:
            fail(f"{path}: lora_A rank {a.shape[0]} != {targets['r'][path]}")
        m_key = f"{prefix}{path}.lora_magnitude_vector"
        if m_key in adapter_sd:
            used.add(m_key)
            m = adapter_sd[m_key].double()
            # DoRA (eval): y = m / ||W + s B A||_row * (W x + s B A x)
            norm = (w + s * (b @ a)).norm(p=2, dim=1)
            return (m / norm) * (h @ w.T + s * (h @ a.T @ b.T))
        return h @ w.T + s * (h @ a.T @ b.T)

    h = x.double()
    for stack in ("encoder", "decoder"):
        for i in range(2):
            att = f"{stack}.block.{i}.layer.0.SelfAttention"
            h = h + lin(f"{att}.o", lin(f"{att}.q", h) + lin(f"{att}.k", h) + lin(f"{att}.v", h))
            ff = f"{stack}.block.{i}.layer.1.DenseReluDense"
            h = h + lin(f"{ff}.wo", torch.relu(lin(f"{ff}.wi", h)))
    y = lin("lm_head", h)
    unused = set(adapter_sd) - used
    if unused:
        fail(f"adapter tensors not used by the closed-form forward: {sorted(unused)}")
    return y


def load_adapter_weights(adapter_dir: Path) -> dict[str, torch.Tensor]:
    st = adapter_dir / SAFETENSORS_NAME
    if st.exists():
        return load_file(str(st))
    return torch.load(adapter_dir / BIN_NAME, map_location="cpu", weights_only=True)


# ---------------------------------------------------------------------------------------------------------------------
# Generation
# ---------------------------------------------------------------------------------------------------------------------


def build_case(name: str, base_sd, x, out_dir: Path) -> dict:
    seed, kwargs, adapter_name, dtype = PEFT_CASES[name]
    case_dir = out_dir / name
    torch.manual_seed(seed)
    model = base_model(base_sd)
    peft_model = get_peft_model(model, LoraConfig(**kwargs), adapter_name=adapter_name)

    layers = lora_modules(peft_model)
    with torch.no_grad():
        for path in sorted(layers):
            layer = layers[path]
            b = layer.lora_B[adapter_name].weight
            b.copy_(torch.randn(b.shape) * LORA_B_STD_OVERRIDE.get(name, LORA_B_STD))
            if adapter_name in layer.lora_magnitude_vector:
                m = layer.lora_magnitude_vector[adapter_name].weight
                m.copy_(torch.rand(m.shape) + 0.5)
            if dtype != torch.float32:
                # Round the adapter to the storage precision so that y matches what a reader of the file computes.
                for p in (layer.lora_A[adapter_name].weight, layer.lora_B[adapter_name].weight):
                    p.copy_(p.to(dtype).to(torch.float32))
    peft_model.eval()

    with torch.no_grad():
        y = peft_model(x).detach().to(torch.float32).contiguous()

    targeted = sorted(peft_model.base_model.targeted_module_names)
    if targeted != sorted(layers):
        fail(f"{name}: targeted_module_names {targeted} != LoRA layers {sorted(layers)}")
    targets = {
        "targets": targeted,
        "r": {p: int(layers[p].r[adapter_name]) for p in targeted},
        "scaling": {p: float(layers[p].scaling[adapter_name]) for p in targeted},
        "adapter_name": adapter_name,
        "adapter_dir": "." if adapter_name == "default" else adapter_name,
        "weights_file": SAFETENSORS_NAME,
        "weights_dtype": {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16"}[dtype],
        "use_dora": bool(kwargs.get("use_dora", False)),
    }

    if dtype != torch.float32:
        with torch.no_grad():
            for layer in layers.values():
                for mod in (layer.lora_A[adapter_name], layer.lora_B[adapter_name]):
                    mod.weight.data = mod.weight.data.to(dtype)

    if case_dir.exists():
        shutil.rmtree(case_dir)
    peft_model.save_pretrained(str(case_dir))
    if name not in KEEP_MODEL_CARD:
        (case_dir / "README.md").unlink()

    save_file({"y": y}, str(case_dir / "expected.safetensors"), metadata={"format": "pt"})
    write_json(case_dir / "targets.json", targets)
    return targets


def derive_cases(out_dir: Path) -> dict[str, dict]:
    src = out_dir / "list_qv"
    list_qv_targets = json.loads((src / "targets.json").read_text())
    derived = {}

    # old_peft: PEFT 0.3.0-style config, weights only as legacy torch.save pickle.
    d = out_dir / "old_peft"
    if d.exists():
        shutil.rmtree(d)
    d.mkdir()
    write_peft_style_json(d / CONFIG_NAME, OLD_PEFT_CONFIG)
    sd = load_file(str(src / SAFETENSORS_NAME))
    torch.save(sd, d / BIN_NAME)
    shutil.copyfile(src / "expected.safetensors", d / "expected.safetensors")
    derived["old_peft"] = dict(list_qv_targets, weights_file=BIN_NAME)

    # unknown_keys: save_pretrained's config plus keys a future PEFT might add.
    d = out_dir / "unknown_keys"
    if d.exists():
        shutil.rmtree(d)
    d.mkdir()
    cfg = json.loads((src / CONFIG_NAME).read_text())
    cfg.update(UNKNOWN_EXTRA_KEYS)
    write_peft_style_json(d / CONFIG_NAME, cfg)
    shutil.copyfile(src / SAFETENSORS_NAME, d / SAFETENSORS_NAME)
    shutil.copyfile(src / "expected.safetensors", d / "expected.safetensors")
    derived["unknown_keys"] = dict(list_qv_targets)

    for name, t in derived.items():
        write_json(out_dir / name / "targets.json", t)

    # minimal: replace save_pretrained's config with the two-key one.
    (out_dir / "minimal" / CONFIG_NAME).write_text(MINIMAL_CONFIG_TEXT)
    return derived


def reload_check(name: str, base_sd, x, out_dir: Path, targets: dict, rec: Recorder) -> dict:
    """Load the fixture with PeftModel.from_pretrained and with the closed-form forward; compare with expected y."""
    case_dir = out_dir / name
    adapter_dir = case_dir / targets["adapter_dir"]
    y_expected = load_file(str(case_dir / "expected.safetensors"))["y"]

    def load():
        model = base_model(base_sd)
        return PeftModel.from_pretrained(model, str(adapter_dir), adapter_name=targets["adapter_name"])

    peft_model, msgs = rec.run(load)
    peft_model.eval()
    with torch.no_grad():
        y = peft_model(x)
    err_peft = close(y, y_expected, f"{name}: PeftModel.from_pretrained output")

    layers = lora_modules(peft_model)
    loaded = {
        "targets": sorted(layers),
        "r": {p: int(m.r[targets["adapter_name"]]) for p, m in sorted(layers.items())},
        "scaling": {p: float(m.scaling[targets["adapter_name"]]) for p, m in sorted(layers.items())},
    }
    for key in ("targets", "r", "scaling"):
        if loaded[key] != targets[key]:
            fail(f"{name}: reloaded {key} {loaded[key]} != {targets[key]}")

    adapter_sd = load_adapter_weights(adapter_dir)
    y_manual = manual_forward(base_sd, adapter_sd, targets, x)
    err_manual = close(y_manual, y_expected, f"{name}: closed-form forward", atol=1e-5)

    max_y = y_expected.abs().max().item()
    print(f"  {name:20s} from_pretrained err {err_peft:.2e}  closed-form err {err_manual:.2e}  max|y| {max_y:.3f}")
    return {"loaded_by_peft": True, "warnings": msgs}


def generate(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    rec = Recorder(out_dir)

    torch.manual_seed(BASE_SEED)
    base = Tiny()
    base_sd = {k: v.detach().clone().contiguous() for k, v in base.state_dict().items()}
    save_file(base_sd, str(out_dir / "base_model.safetensors"), metadata={"format": "pt"})

    torch.manual_seed(INPUT_SEED)
    x = torch.randn(X_SHAPE)
    with torch.no_grad():
        y_base = base_model(base_sd)(x).contiguous()
    save_file({"x": x, "y_base": y_base}, str(out_dir / "input.safetensors"), metadata={"format": "pt"})

    all_targets: dict[str, dict] = {}
    for name in PEFT_CASES:
        all_targets[name], msgs = rec.run(lambda name=name: build_case(name, base_sd, x, out_dir))
        for m in msgs:
            print(f"  [{name}] save warning: {m}")
    all_targets.update(derive_cases(out_dir))

    print("reloading every fixture:")
    load_checks = {name: reload_check(name, base_sd, x, out_dir, all_targets[name], rec) for name in ALL_CASES}

    # Byte format of the config PEFT writes.
    cfg_text = (out_dir / "list_qv" / CONFIG_NAME).read_text()
    cfg = json.loads(cfg_text)
    if json.dumps(cfg, indent=2, sort_keys=True) != cfg_text:
        fail("list_qv adapter_config.json is not json.dumps(indent=2, sort_keys=True)")
    defaults = json_roundtrip(LoraConfig().to_dict())

    tensor_keys = {}
    for name in ALL_CASES:
        t = all_targets[name]
        adapter_dir = out_dir / name / t["adapter_dir"]
        if t["weights_file"] == SAFETENSORS_NAME:
            tensor_keys[name] = tensor_summary(adapter_dir / SAFETENSORS_NAME)
        else:
            sd = torch.load(adapter_dir / BIN_NAME, map_location="cpu", weights_only=True)
            tensor_keys[name] = {
                "metadata": None,
                "tensors": {k: {"dtype": str(v.dtype), "shape": list(v.shape)} for k, v in sorted(sd.items())},
            }

    peft_io = {
        "versions": versions(),
        "config_file": CONFIG_NAME,
        "weights_file": SAFETENSORS_NAME,
        "legacy_weights_file": BIN_NAME,
        "config_keys": list(cfg.keys()),
        "config_key_count": len(cfg),
        "list_qv_config": cfg,
        "lora_config_defaults": defaults,
        "lora_config_defaults_note": (
            "LoraConfig().to_dict() (sets written as sorted lists). save_pretrained additionally sets "
            "inference_mode=true, fills base_model_name_or_path from the base model's name_or_path (null here) and, "
            "when task_type is null, adds auto_mapping={base_model_class, parent_library}."
        ),
        "config_format": {
            "python": "json.dumps(config, indent=2, sort_keys=True)",
            "indent": 2,
            "sort_keys": True,
            "item_separator": ",",
            "key_separator": ": ",
            "layout": "every non-empty object member / array element on its own line, indented 2 spaces per level",
            "ensure_ascii": True,
            "trailing_newline": cfg_text.endswith("\n"),
            "empty_dict": "{}",
            "empty_list": "[]",
            "set_fields_written_in_set_order": ["target_modules", "exclude_modules"],
        },
        "safetensors_metadata": tensor_keys["list_qv"]["metadata"],
        "tensor_key_format": {
            "lora_A": "base_model.model.<module path>.lora_A.weight",
            "lora_B": "base_model.model.<module path>.lora_B.weight",
            "dora_magnitude": "base_model.model.<module path>.lora_magnitude_vector",
            "adapter_name_in_keys": False,
            "named_adapter_subdir": "<save dir>/<adapter_name>/ (only when adapter_name != 'default')",
        },
        "tensor_keys": tensor_keys,
        "load_checks": load_checks,
    }
    write_json(out_dir / "peft_io.json", peft_io)

    total = sum(p.stat().st_size for p in out_dir.rglob("*") if p.is_file())
    print(f"wrote {out_dir} ({total} bytes)")


def versions() -> dict:
    return {
        "peft": peft.__version__,
        "torch": torch.__version__.split("+")[0],
        "transformers": transformers.__version__,
        "safetensors": safetensors.__version__,
        "numpy": numpy.__version__,
    }


# ---------------------------------------------------------------------------------------------------------------------
# Reverse check: adapters written by the Rust side
# ---------------------------------------------------------------------------------------------------------------------


def check_rust_output(rust_dir: Path, fixtures: Path) -> int:
    # Clone: tensors loaded from safetensors can sit at unaligned addresses, which makes PyTorch's CPU kernels
    # take a different path and changes float32 results in the last bits (~1e-7 relative).
    base_sd = {k: v.clone() for k, v in load_file(str(fixtures / "base_model.safetensors")).items()}
    x = load_file(str(fixtures / "input.safetensors"))["x"].clone()
    rec = Recorder(rust_dir)
    results = {}
    all_pass = True
    for sub in sorted(p for p in rust_dir.iterdir() if p.is_dir()):
        if not (sub / "case.json").is_file():
            continue
        entry: dict = {"dir": sub.name}
        try:
            case_info = json.loads((sub / "case.json").read_text())
            adapter_name = case_info.get("adapter_name", "default")
            # The adapter files sit in the subdirectory itself or, as save_pretrained lays out a named adapter,
            # in <subdirectory>/<adapter_name>/.
            adapter_dir = sub
            if not (sub / CONFIG_NAME).is_file() and adapter_name != "default":
                adapter_dir = sub / adapter_name
            if not (adapter_dir / CONFIG_NAME).is_file():
                continue
            case = case_info["case"]
            entry["case"] = case
            expected_path = fixtures / case / "expected.safetensors"
            if not expected_path.is_file():
                raise ValueError(f"unknown fixture case {case!r}")
            y_expected = load_file(str(expected_path))["y"]

            def load(adapter_dir=adapter_dir, adapter_name=adapter_name):
                return PeftModel.from_pretrained(base_model(base_sd), str(adapter_dir), adapter_name=adapter_name)

            peft_model, msgs = rec.run(load)
            entry["warnings"] = msgs
            peft_model.eval()
            with torch.no_grad():
                y = peft_model(x).to(torch.float32)

            weights = load_adapter_weights(adapter_dir)
            half = any(t.dtype in (torch.float16, torch.bfloat16) for t in weights.values())
            tol = 1e-3 if (case in LOW_PRECISION_CASES or half) else 1e-5
            max_abs = (y.double() - y_expected.double()).abs().max().item()
            max_y = y_expected.abs().max().item()
            rel = max_abs / max_y
            entry.update(
                max_abs_err=max_abs,
                max_abs_y=max_y,
                rel_err=rel,
                tolerance=tol,
                n_lora_layers=len(lora_modules(peft_model)),
                passed=bool(rel < tol),
            )
        except Exception as exc:  # a failed load is a failed check, reported alongside the others
            entry.update(passed=False, error=f"{type(exc).__name__}: {rec.clean(str(exc))}")
        all_pass &= entry["passed"]
        status = "PASS" if entry["passed"] else "FAIL"
        detail = (
            f"max abs err {entry['max_abs_err']:.3e} (rel {entry['rel_err']:.3e}, tol {entry['tolerance']:.0e})"
            if "max_abs_err" in entry
            else entry.get("error", "")
        )
        print(f"{status} {sub.name} [{entry.get('case', '?')}]: {detail}")
        results[sub.name] = entry

    summary = {"all_passed": all_pass and bool(results), "checked": len(results), "results": results}
    summary["versions"] = versions()
    write_json(rust_dir / "peft_check.json", summary)
    if not results:
        print(f"no subdirectory of {rust_dir} holds both {CONFIG_NAME} and case.json")
    return 0 if summary["all_passed"] else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR, help="fixtures directory")
    parser.add_argument(
        "--check-rust-output",
        type=Path,
        metavar="DIR",
        help="instead of generating, check adapters written by the Rust side against the fixtures in --out-dir",
    )
    args = parser.parse_args()
    if args.check_rust_output is not None:
        return check_rust_output(args.check_rust_output, args.out_dir)
    generate(args.out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
