#!/usr/bin/env python3
"""Generate PEFT's SVD combinations with a default rank and with `svd_clamp`, for the
`lora-core` tests (`tests/weighted_svd.rs`).

With the real ``peft`` and ``torch``: one linear layer ``q`` (6 -> 5) with two adapters of
different ranks (``one``: r 2, ``two``: r 3, random factors), combined by PEFT's
``add_weighted_adapter`` with weights 0.7 and -0.4:

* ``svd_default_rank``: ``svd`` without ``svd_rank`` (PEFT takes the largest source rank, 3);
* ``ties_svd_default_rank``: ``ties_svd``, density 0.6, without ``svd_rank``;
* ``svd_clamp``: ``svd`` with ``svd_rank=2`` and ``svd_clamp=0.8``;
* ``magnitude_prune_svd_clamp``: ``magnitude_prune_svd``, density 0.5, ``svd_rank=3``,
  ``svd_clamp=0.6``.

PEFT clamps the factors ``U·S`` and ``Vh`` of ``torch.linalg.svd`` to the ``svd_clamp``
quantile of their entries; singular vectors are defined up to a sign per pair, and LAPACK picks
one, so the clamped factors depend on that choice. ``lora-core`` orients each pair so that the
entry of largest magnitude of each column of ``U`` is positive; this script draws the layer
until PEFT's factors follow the same orientation (it checks them), so that the clamped results
must agree. Writes ``crates/lora-core/tests/fixtures/weighted_svd.json`` with the base weight,
the sources' factors (PyTorch layout) and each result's ``lora_A``, ``lora_B`` and update.

Usage, from the repository root, with a venv holding torch and peft:

    $VENV/bin/python scripts/gen_weighted_svd_fixtures.py
"""

import json
from pathlib import Path

import peft
import torch
from peft import LoraConfig, get_peft_model
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "crates" / "lora-core" / "tests" / "fixtures" / "weighted_svd.json"
WEIGHTS = [0.7, -0.4]

torch.set_num_threads(1)
torch.set_default_dtype(torch.float32)

# (name, combination_type, svd_rank, svd_clamp, density)
CASES = [
    ("svd_default_rank", "svd", None, None, None),
    ("ties_svd_default_rank", "ties_svd", None, None, 0.6),
    ("svd_clamp", "svd", 2, 0.8, None),
    ("magnitude_prune_svd_clamp", "magnitude_prune_svd", 3, 0.6, 0.5),
]


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.q = nn.Linear(6, 5, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.q(x)


def rounded(t: torch.Tensor) -> list:
    return [[float(f"{v:.9g}") for v in row] for row in t.tolist()]


def build(seed: int):
    torch.manual_seed(seed)
    model = get_peft_model(Tiny(), LoraConfig(r=2, lora_alpha=4, target_modules=["q"]), adapter_name="one")
    model.add_adapter("two", LoraConfig(r=3, lora_alpha=3, target_modules=["q"]))
    layer = model.base_model.model.q
    with torch.no_grad():
        for name in ["one", "two"]:
            layer.lora_A[name].weight.copy_(torch.randn(layer.lora_A[name].weight.shape))
            layer.lora_B[name].weight.copy_(torch.randn(layer.lora_B[name].weight.shape))
    return model, layer


def follows_orientation(layer, ctype: str, rank: int, density) -> bool:
    """Whether LAPACK's singular vectors of the merged update have the largest-magnitude entry
    of every kept column of U positive (the orientation lora-core uses)."""
    from peft.utils.merge_utils import magnitude_prune, task_arithmetic, ties

    deltas = [layer.get_delta_weight(n) for n in ["one", "two"]]
    w = torch.tensor(WEIGHTS)
    if ctype == "svd":
        delta = task_arithmetic(deltas, w)
    elif ctype == "ties_svd":
        delta = ties(deltas, w, density, "total")
    else:
        delta = magnitude_prune(deltas, w, density)
    u, _, _ = torch.linalg.svd(delta, full_matrices=True)
    for k in range(rank):
        column = u[:, k]
        if column[column.abs().argmax()] <= 0:
            return False
    return True


def main() -> None:
    for seed in range(1000):
        model, layer = build(seed)
        if all(
            follows_orientation(layer, ctype, rank, density)
            for _, ctype, rank, clamp, density in CASES
            if clamp is not None
        ):
            break
    else:
        raise SystemExit("no seed gives LAPACK's orientation")
    out = {
        "peft_version": peft.__version__,
        "seed": seed,
        "weights": WEIGHTS,
        "base": rounded(layer.base_layer.weight),
        "sources": {
            name: {
                "r": layer.r[name],
                "lora_alpha": layer.lora_alpha[name],
                "lora_A": rounded(layer.lora_A[name].weight),
                "lora_B": rounded(layer.lora_B[name].weight),
            }
            for name in ["one", "two"]
        },
        "cases": {},
    }
    for name, ctype, rank, clamp, density in CASES:
        kwargs = {}
        if rank is not None:
            kwargs["svd_rank"] = rank
        if clamp is not None:
            kwargs["svd_clamp"] = clamp
        if density is not None:
            kwargs["density"] = density
        model.add_weighted_adapter(["one", "two"], WEIGHTS, name, combination_type=ctype, **kwargs)
        with torch.no_grad():
            out["cases"][name] = {
                "combination_type": ctype,
                "svd_rank": rank,
                "svd_clamp": clamp,
                "density": density,
                "r": layer.r[name],
                "lora_A": rounded(layer.lora_A[name].weight),
                "lora_B": rounded(layer.lora_B[name].weight),
                "delta": rounded(layer.get_delta_weight(name)),
            }
    OUT.write_text(json.dumps(out, indent=1) + "\n")
    print(f"seed {seed}; ranks", {k: v["r"] for k, v in out["cases"].items()})


if __name__ == "__main__":
    main()
