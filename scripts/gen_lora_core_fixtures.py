#!/usr/bin/env python3
"""Generate the PEFT reference fixtures used by the `lora-core` tests.

Runs the real Hugging Face PEFT implementation on tiny models and writes:

* ``crates/lora-core/tests/fixtures/peft_layer.safetensors``: float32 tensors,
  named ``<case>.<name>``; every weight is in PyTorch layout
  (Linear weight ``[out, in]``, ``lora_A`` ``[r, in]``, ``lora_B`` ``[out, r]``).
* ``crates/lora-core/tests/fixtures/peft_layer.json``: adapter configs, the
  scaling PEFT computed, parameter counts and other scalars/strings.

The output is deterministic (every case reseeds ``torch.manual_seed``).

Usage (from the repository root, with a venv holding torch, transformers,
peft, safetensors and numpy):

    $VENV/bin/python scripts/gen_lora_core_fixtures.py [--out-dir DIR]

Besides writing the files, the script cross-checks PEFT's outputs against
closed-form formulas (plain LoRA, rsLoRA, DoRA, mixed batches, weighted
adapters) and fails loudly if they disagree.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import sys
import warnings
from pathlib import Path

import numpy
import peft
import safetensors
import torch
import transformers
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file
from torch import nn

IN_FEATURES = 6
OUT_FEATURES = 5
X_SHAPE = (2, 3, IN_FEATURES)  # batch 2, 3 tokens
SEED = 1234

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT_DIR = REPO_ROOT / "crates" / "lora-core" / "tests" / "fixtures"

torch.set_default_dtype(torch.float32)
# PEFT warns that the adapter name "a" is a substring of the parameter prefix "lora_" (only relevant when
# loading saved adapters by name, which this script never does).
warnings.filterwarnings("ignore", message=r"Adapter name 'a' should not be contained in the prefix")


class Tiny(nn.Module):
    """A single `nn.Linear(6, 5, bias=True)` called `lin`."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(IN_FEATURES, OUT_FEATURES, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x)


class ThreeLayer(nn.Module):
    """`proj_in` (6 -> 8), `q` (8 -> 8, no bias), `out` (8 -> 4)."""

    def __init__(self) -> None:
        super().__init__()
        self.proj_in = nn.Linear(6, 8)
        self.q = nn.Linear(8, 8, bias=False)
        self.out = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.q(self.proj_in(x)))


TENSORS: dict[str, torch.Tensor] = {}
META: dict[str, object] = {}


def put(name: str, t: torch.Tensor) -> None:
    assert name not in TENSORS, f"duplicate tensor name {name}"
    TENSORS[name] = t.detach().to(torch.float32).clone().contiguous()


def close(a: torch.Tensor, b: torch.Tensor, what: str, atol: float = 1e-5, rtol: float = 1e-5) -> None:
    try:
        torch.testing.assert_close(a, b, atol=atol, rtol=rtol)
    except AssertionError as e:  # pragma: no cover - diagnostic path
        raise AssertionError(f"cross-check failed: {what}\n{e}") from None


def lora_layer(model):
    """The PEFT `lora.Linear` that wraps `lin` in a `Tiny` model."""
    layer = model.base_model.model.lin
    assert isinstance(layer, peft.tuners.lora.Linear), type(layer)
    return layer


def adapter_meta(layer, name: str) -> dict:
    return {
        "r": int(layer.r[name]),
        "lora_alpha": layer.lora_alpha[name],
        "use_rslora": bool(layer.use_rslora[name]),
        "use_dora": bool(layer.use_dora[name]),
        "scaling": float(layer.scaling[name]),
    }


def randomize_b(layer, name: str) -> None:
    with torch.no_grad():
        b = layer.lora_B[name].weight
        b.copy_(torch.randn(b.shape) * 0.5)


def store_base(case: str, layer, x: torch.Tensor) -> None:
    put(f"{case}.base_weight", layer.base_layer.weight)
    put(f"{case}.base_bias", layer.base_layer.bias)
    put(f"{case}.x", x)


def store_adapter(case: str, layer, name: str) -> None:
    put(f"{case}.{name}.lora_A", layer.lora_A[name].weight)
    put(f"{case}.{name}.lora_B", layer.lora_B[name].weight)
    if name in layer.lora_magnitude_vector:
        put(f"{case}.{name}.magnitude", layer.lora_magnitude_vector[name].weight)


def manual_lora(x, w, b, adapters):
    """y = x W^T + bias + sum_i s_i (x A_i^T) B_i^T."""
    y = x @ w.T + b
    for a, bb, s in adapters:
        y = y + s * (x @ a.T) @ bb.T
    return y


def new_tiny(seed: int):
    torch.manual_seed(seed)
    base = Tiny()
    x = torch.randn(X_SHAPE)
    return base, x


# --------------------------------------------------------------------------- cases


def case_plain(case: str, seed: int, *, use_rslora: bool) -> None:
    base, x = new_tiny(seed)
    w0 = base.lin.weight.detach().clone()
    b0 = base.lin.bias.detach().clone()
    cfg = LoraConfig(target_modules=["lin"], r=4, lora_alpha=8, lora_dropout=0.0, use_rslora=use_rslora)
    model = get_peft_model(base, cfg)
    model.eval()
    layer = lora_layer(model)
    randomize_b(layer, "default")

    store_base(case, layer, x)
    store_adapter(case, layer, "default")
    meta = {"adapters": {"default": adapter_meta(layer, "default")}}

    with torch.no_grad():
        y = model(x)
    put(f"{case}.y", y)
    s = layer.scaling["default"]
    expected_s = 8 / math.sqrt(4) if use_rslora else 8 / 4
    assert abs(s - expected_s) < 1e-12, (s, expected_s)
    a = layer.lora_A["default"].weight.detach()
    bb = layer.lora_B["default"].weight.detach()
    close(y, manual_lora(x, w0, b0, [(a, bb, s)]), f"{case}.y")

    model.merge_adapter()
    assert layer.merged
    merged_w = layer.base_layer.weight.detach().clone()
    put(f"{case}.merged_weight", merged_w)
    close(merged_w, w0 + s * bb @ a, f"{case}.merged_weight")
    with torch.no_grad():
        y_merged = model(x)
    close(y_merged, y, f"{case}.y_merged vs y")
    if case == "default":
        put(f"{case}.y_merged", y_merged)
    META[case] = meta


def case_dora(seed: int) -> None:
    case = "dora"
    base, x = new_tiny(seed)
    w0 = base.lin.weight.detach().clone()
    b0 = base.lin.bias.detach().clone()
    cfg = LoraConfig(target_modules=["lin"], r=3, lora_alpha=6, lora_dropout=0.0, use_dora=True)
    model = get_peft_model(base, cfg)
    model.eval()
    layer = lora_layer(model)
    # magnitude is computed at init from ||W + s B A|| with B == 0; override both afterwards.
    randomize_b(layer, "default")
    with torch.no_grad():
        m = layer.lora_magnitude_vector["default"].weight
        m.copy_(torch.rand(m.shape) + 0.5)

    store_base(case, layer, x)
    store_adapter(case, layer, "default")
    META[case] = {"adapters": {"default": adapter_meta(layer, "default")}}

    with torch.no_grad():
        y = model(x)
    put(f"{case}.y", y)

    s = layer.scaling["default"]
    a = layer.lora_A["default"].weight.detach()
    bb = layer.lora_B["default"].weight.detach()
    mag = layer.lora_magnitude_vector["default"].weight.detach()
    w_adapted = w0 + s * bb @ a
    norm = torch.linalg.norm(w_adapted, dim=1)  # per output row
    w_dora = (mag / norm).unsqueeze(1) * w_adapted
    close(y, x @ w_dora.T + b0, "dora.y (bias must not be rescaled)")

    model.merge_adapter()
    merged_w = layer.base_layer.weight.detach().clone()
    put(f"{case}.merged_weight", merged_w)
    close(merged_w, w_dora, "dora.merged_weight")
    close(layer.base_layer.bias.detach(), b0, "dora bias unchanged by merge", atol=0, rtol=0)
    with torch.no_grad():
        y_merged = model(x)
    put(f"{case}.y_merged", y_merged)
    close(y_merged, y, "dora.y_merged vs y")


def case_dora_init(seed: int) -> None:
    case = "dora_init"
    base, x = new_tiny(seed)
    cfg = LoraConfig(target_modules=["lin"], r=3, lora_alpha=6, lora_dropout=0.0, use_dora=True)
    model = get_peft_model(base, cfg)
    model.eval()
    layer = lora_layer(model)
    assert torch.count_nonzero(layer.lora_B["default"].weight) == 0
    store_base(case, layer, x)
    store_adapter(case, layer, "default")
    mag = layer.lora_magnitude_vector["default"].weight.detach()
    close(mag, torch.linalg.norm(layer.base_layer.weight.detach(), dim=1), "dora_init magnitude == row norms")
    with torch.no_grad():
        y = model(x)
    put(f"{case}.y", y)
    close(y, layer.base_layer(x), "dora_init is a no-op")
    META[case] = {"adapters": {"default": adapter_meta(layer, "default")}}


def case_multi(seed: int) -> None:
    case = "multi"
    base, x = new_tiny(seed)
    w0 = base.lin.weight.detach().clone()
    b0 = base.lin.bias.detach().clone()
    cfg_a = LoraConfig(target_modules=["lin"], r=2, lora_alpha=4, lora_dropout=0.0)
    cfg_b = LoraConfig(target_modules=["lin"], r=3, lora_alpha=3, lora_dropout=0.0)
    model = get_peft_model(base, cfg_a, adapter_name="a")
    model.add_adapter("b", cfg_b)
    model.eval()
    layer = lora_layer(model)
    for name in ("a", "b"):
        randomize_b(layer, name)

    store_base(case, layer, x)
    store_adapter(case, layer, "a")
    store_adapter(case, layer, "b")

    ab = {
        n: (layer.lora_A[n].weight.detach(), layer.lora_B[n].weight.detach(), layer.scaling[n]) for n in ("a", "b")
    }

    model.set_adapter("a")
    assert layer.active_adapters == ["a"], layer.active_adapters
    with torch.no_grad():
        y_a = model(x)
    put(f"{case}.y_a", y_a)
    close(y_a, manual_lora(x, w0, b0, [ab["a"]]), "multi.y_a")

    model.set_adapter("b")
    assert layer.active_adapters == ["b"], layer.active_adapters
    with torch.no_grad():
        y_b = model(x)
    put(f"{case}.y_b", y_b)
    close(y_b, manual_lora(x, w0, b0, [ab["b"]]), "multi.y_b")

    # PeftModel.set_adapter only takes a single name; the tuner model accepts a list.
    model.base_model.set_adapter(["a", "b"])
    assert layer.active_adapters == ["a", "b"], layer.active_adapters
    with torch.no_grad():
        y_ab = model(x)
    put(f"{case}.y_ab", y_ab)
    close(y_ab, manual_lora(x, w0, b0, [ab["a"], ab["b"]]), "multi.y_ab")

    # Mixed-batch inference: one adapter name per sample. The active adapters are ignored.
    model.set_adapter("a")
    mixed = {"y_mixed": ["a", "__base__"], "y_mixed2": ["b", "a"]}
    for key, names in mixed.items():
        with torch.no_grad():
            y_model = model(x, adapter_names=names)
            y_layer = layer(x, adapter_names=names)
        close(y_model, y_layer, f"multi.{key} model vs layer", atol=0, rtol=0)
        expected = torch.stack(
            [
                manual_lora(x[i], w0, b0, [] if n == "__base__" else [ab[n]])
                for i, n in enumerate(names)
            ]
        )
        close(y_model, expected, f"multi.{key}")
        put(f"{case}.{key}", y_model)

    META[case] = {
        "adapters": {n: adapter_meta(layer, n) for n in ("a", "b")},
        "mixed_adapter_names": mixed["y_mixed"],
        "mixed2_adapter_names": mixed["y_mixed2"],
    }


def case_weighted(seed: int) -> None:
    base, x = new_tiny(seed)
    w0 = base.lin.weight.detach().clone()
    b0 = base.lin.bias.detach().clone()
    cfgs = {
        "a": LoraConfig(target_modules=["lin"], r=2, lora_alpha=4, lora_dropout=0.0),
        "b": LoraConfig(target_modules=["lin"], r=3, lora_alpha=3, lora_dropout=0.0),
        "b2": LoraConfig(target_modules=["lin"], r=2, lora_alpha=3, lora_dropout=0.0),
    }
    model = get_peft_model(base, cfgs["a"], adapter_name="a")
    model.add_adapter("b", cfgs["b"])
    model.add_adapter("b2", cfgs["b2"])
    model.eval()
    layer = lora_layer(model)
    for name in cfgs:
        randomize_b(layer, name)

    store_base("weighted", layer, x)
    for name in cfgs:
        store_adapter("weighted", layer, name)

    weights = [0.7, -0.4]
    META["weighted"] = {
        "adapters": {n: adapter_meta(layer, n) for n in cfgs},
        "weights": weights,
    }

    def delta(name: str) -> torch.Tensor:
        return layer.scaling[name] * layer.lora_B[name].weight.detach() @ layer.lora_A[name].weight.detach()

    # (name, sources, combination_type, svd_rank, density, majority_sign_method). DARE draws its
    # masks from torch's generator, which no other implementation reproduces: it is recorded at
    # density 1, where PEFT prunes nothing.
    specs = [
        ("weighted_cat", ["a", "b"], "cat", None, None, None),
        ("weighted_linear", ["a", "b2"], "linear", None, None, None),
        ("weighted_svd", ["a", "b"], "svd", 2, None, None),
        ("weighted_svd_full", ["a", "b"], "svd", 5, None, None),
        ("weighted_ties", ["a", "b2"], "ties", None, 0.5, "total"),
        ("weighted_ties_frequency", ["a", "b2"], "ties", None, 0.5, "frequency"),
        ("weighted_magnitude_prune", ["a", "b2"], "magnitude_prune", None, 0.5, None),
        ("weighted_dare_linear", ["a", "b2"], "dare_linear", None, 1.0, None),
        ("weighted_dare_ties", ["a", "b2"], "dare_ties", None, 1.0, "frequency"),
        ("weighted_ties_svd", ["a", "b"], "ties_svd", 2, 0.6, "total"),
        ("weighted_magnitude_prune_svd", ["a", "b"], "magnitude_prune_svd", 3, 0.4, None),
        ("weighted_dare_linear_svd", ["a", "b"], "dare_linear_svd", 2, 1.0, None),
        ("weighted_dare_ties_svd", ["a", "b"], "dare_ties_svd", 3, 1.0, "total"),
    ]
    for new_name, sources, ctype, svd_rank, density, sign_method in specs:
        kwargs = {"svd_rank": svd_rank} if svd_rank is not None else {}
        if density is not None:
            kwargs["density"] = density
        if sign_method is not None:
            kwargs["majority_sign_method"] = sign_method
        model.add_weighted_adapter(
            adapters=sources, weights=weights, adapter_name=new_name, combination_type=ctype, **kwargs
        )
        assert new_name in layer.lora_A, new_name
        a_new = layer.lora_A[new_name].weight.detach()
        b_new = layer.lora_B[new_name].weight.detach()
        s_new = layer.scaling[new_name]
        d_new = s_new * b_new @ a_new
        exact = sum(w * delta(n) for w, n in zip(weights, sources))

        if ctype.endswith("svd") and ctype != "svd":
            # Merged full updates, then the SVD: compare the update (singular vectors are defined
            # up to sign).
            put(f"{new_name}.delta", d_new)
        elif ctype in ("ties", "magnitude_prune", "dare_linear", "dare_ties"):
            put(f"{new_name}.lora_A", a_new)
            put(f"{new_name}.lora_B", b_new)
            if ctype == "dare_linear":
                close(a_new, layer.lora_A["weighted_linear"].weight.detach(), "dare_linear at density 1 is linear")
        elif ctype == "svd":
            put(f"{new_name}.delta", d_new)
            if new_name == "weighted_svd_full":
                put(f"{new_name}.exact", exact)
                close(d_new, exact, f"{new_name} equals exact weighted sum", atol=1e-5, rtol=1e-4)
            else:
                u, sv, vh = torch.linalg.svd(exact)
                best = u[:, :svd_rank] @ torch.diag(sv[:svd_rank]) @ vh[:svd_rank]
                close(d_new, best, f"{new_name} is the best rank-{svd_rank} approximation", atol=1e-5, rtol=1e-4)
        else:
            put(f"{new_name}.lora_A", a_new)
            put(f"{new_name}.lora_B", b_new)
            if ctype == "cat":
                close(d_new, exact, "cat is exact")
            else:
                # linear: A' = sum_i sign(w_i s_i) sqrt|w_i s_i| A_i, B' = sum_i sqrt|w_i s_i| B_i
                ca = [math.copysign(math.sqrt(abs(w * layer.scaling[n])), w * layer.scaling[n]) for w, n in zip(weights, sources)]
                cb = [math.sqrt(abs(w * layer.scaling[n])) for w, n in zip(weights, sources)]
                a_exp = sum(c * layer.lora_A[n].weight.detach() for c, n in zip(ca, sources))
                b_exp = sum(c * layer.lora_B[n].weight.detach() for c, n in zip(cb, sources))
                close(a_new, a_exp, "linear A")
                close(b_new, b_exp, "linear B")

        model.set_adapter(new_name)
        with torch.no_grad():
            y = model(x)
        put(f"{new_name}.y", y)
        close(y, x @ (w0 + d_new).T + b0, f"{new_name}.y")

        meta = adapter_meta(layer, new_name)
        meta.update(
            {
                "sources": sources,
                "weights": weights,
                "combination_type": ctype,
                "svd_rank": svd_rank,
                "density": density,
                "majority_sign_method": sign_method,
            }
        )
        META[new_name] = meta

    # Record what PEFT does when linear merging is asked for unequal ranks.
    try:
        model.add_weighted_adapter(adapters=["a", "b"], weights=weights, adapter_name="bad", combination_type="linear")
        META["weighted"]["linear_unequal_ranks_error"] = None
    except ValueError as e:
        META["weighted"]["linear_unequal_ranks_error"] = str(e)


def case_param_count(seed: int) -> None:
    for case, bias in (
        ("param_count", "none"),
        ("param_count_bias_all", "all"),
        ("param_count_bias_lora_only", "lora_only"),
    ):
        torch.manual_seed(seed)
        base = ThreeLayer()
        cfg = LoraConfig(target_modules=["q", "out"], r=2, lora_alpha=4, lora_dropout=0.0, bias=bias)
        model = get_peft_model(base, cfg)
        trainable, total = model.get_nb_trainable_parameters()
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            model.print_trainable_parameters()
        line = buf.getvalue().rstrip("\n")
        trainable_names = sorted(n for n, p in model.named_parameters() if p.requires_grad)
        META[case] = {
            "model": "proj_in=Linear(6,8,bias=True), q=Linear(8,8,bias=False), out=Linear(8,4,bias=True)",
            "target_modules": ["out", "q"],
            "r": 2,
            "lora_alpha": 4,
            "bias": bias,
            "trainable": int(trainable),
            "total": int(total),
            "printed": line,
            "trainable_parameter_names": trainable_names,
        }


def case_gaussian(seed: int) -> None:
    torch.manual_seed(seed)
    r, fan_in = 8, 512
    holder = Tiny()
    holder.lin = nn.Linear(fan_in, 16)
    cfg = LoraConfig(target_modules=["lin"], r=r, lora_alpha=16, init_lora_weights="gaussian")
    model = get_peft_model(holder, cfg)
    layer = model.base_model.model.lin
    a = layer.lora_A["default"].weight.detach()
    assert torch.count_nonzero(layer.lora_B["default"].weight) == 0
    META["gaussian_init"] = {
        "std_formula": "lora_A ~ Normal(mean=0, std=1/r) (nn.init.normal_(lora_A.weight, std=1 / r)); lora_B = 0",
        "r": r,
        "in_features": fan_in,
        "expected_std": 1.0 / r,
        "empirical_std": float(a.std()),
        "empirical_mean": float(a.mean()),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR)
    args = ap.parse_args()

    case_plain("default", SEED + 1, use_rslora=False)
    case_plain("rslora", SEED + 2, use_rslora=True)
    case_dora(SEED + 3)
    case_dora_init(SEED + 4)
    case_multi(SEED + 5)
    case_weighted(SEED + 6)
    case_param_count(SEED + 7)
    case_gaussian(SEED + 8)

    META["_meta"] = {
        "generator": "scripts/gen_lora_core_fixtures.py",
        "seed": SEED,
        "in_features": IN_FEATURES,
        "out_features": OUT_FEATURES,
        "x_shape": list(X_SHAPE),
        "layout": "PyTorch: weight [out, in], lora_A [r, in], lora_B [out, r]",
        "versions": {
            "peft": peft.__version__,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "safetensors": safetensors.__version__,
            "numpy": numpy.__version__,
        },
    }

    args.out_dir.mkdir(parents=True, exist_ok=True)
    st_path = args.out_dir / "peft_layer.safetensors"
    js_path = args.out_dir / "peft_layer.json"
    save_file(dict(sorted(TENSORS.items())), str(st_path), metadata={"format": "pt"})
    js_path.write_text(json.dumps(META, indent=2, sort_keys=True) + "\n")

    print(f"wrote {st_path} ({st_path.stat().st_size} bytes, {len(TENSORS)} tensors)")
    print(f"wrote {js_path} ({js_path.stat().st_size} bytes)")
    for name, t in sorted(TENSORS.items()):
        print(f"  {name:40s} {list(t.shape)}")
    for case, m in sorted(META.items()):
        if isinstance(m, dict) and "adapters" in m:
            for an, am in sorted(m["adapters"].items()):
                print(f"  scaling {case}.{an} = {am['scaling']}")
        elif isinstance(m, dict) and "scaling" in m:
            print(f"  scaling {case} = {m['scaling']} (r={m['r']}, alpha={m['lora_alpha']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
