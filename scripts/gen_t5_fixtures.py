#!/usr/bin/env python3
"""Generate the T5 / FLAN-T5 reference fixtures used by the `lora-t5` tests.

Builds tiny random T5 models with the real Hugging Face ``transformers`` and
writes, under ``crates/lora-t5/tests/fixtures/``:

* ``<case>/``: a model directory as ``T5ForConditionalGeneration.save_pretrained``
  writes it (``config.json``, ``model.safetensors`` or shards plus
  ``model.safetensors.index.json``, ``generation_config.json``), except for the
  ``*_cfg4x`` cases whose ``config.json`` is written in the transformers 4.x
  layout (see ``config_4x``).
* ``<case>/expected.safetensors`` and ``<case>/expected.json``: inputs and the
  reference results (logits, encoder output, loss, greedy / beam ids) that
  transformers itself computes after loading ``<case>/`` fresh with
  ``T5ForConditionalGeneration.from_pretrained``.
* ``t5_v1_1_lora/adapter/``: a PEFT LoRA adapter for ``t5_v1_1`` written by
  ``PeftModel.save_pretrained``, with its own ``expected.*`` in ``t5_v1_1_lora/``.
* ``config_conventions.json``: what transformers does with every combination
  of ``tie_word_embeddings`` / ``scale_decoder_outputs`` in ``config.json``
  (4.x and 5.x conventions), checked against the rule
  ``scale = scale_decoder_outputs ?? tie_word_embeddings ?? true`` and
  "``lm_head.weight`` from the file if present, else ``shared.weight``".

Every stored number is recomputed before anything is written to the output
directory: each case directory is loaded back fresh, and logits, encoder
output, loss and greedy ids are recomputed by an independent float64 forward
pass (``ref_forward`` / ``ref_greedy``) that reads only the files on disk.
The script fails loudly on any disagreement.

Determinism: every model / input / adapter reseeds ``torch.manual_seed``, torch
runs single-threaded with deterministic algorithms, and the script re-executes
itself with ``PYTHONHASHSEED=0`` (PEFT writes ``target_modules`` as ``list(set)``).
Running it twice produces byte-identical files.

Weights: transformers' own initialisation, then layer-norm weights
``1 + 0.25*randn``, relative-attention tables ``2*randn``, attention ``o`` and
feed-forward ``wo`` times 4 and, for tied models, the embeddings times 0.5 (so
that greedy decoding does not merely repeat the previous token), then a bias
towards EOS on the EOS row of the output matrix (``bias_eos``) so that some
generated rows finish early and get padded.

Usage (from the repository root, with a venv holding torch, transformers,
peft, safetensors and numpy):

    $VENV/bin/python scripts/gen_t5_fixtures.py [--out-dir DIR]

Everything in the output directory except ``README.md`` is replaced. To only
reload an existing fixture tree and recompute every stored value:

    $VENV/bin/python scripts/gen_t5_fixtures.py --verify [--out-dir DIR]

To load an adapter trained by the Rust trainer with PEFT (the reverse direction
of the trainer test in ``crates/lora-train/tests/trainer.rs``, which exports its
tiny base model, its trained adapter and its logits when
``LORA_T5_EXPORT_TRAINED_ADAPTER`` names a directory):

    LORA_T5_EXPORT_TRAINED_ADAPTER=/tmp/trained cargo test --workspace --test trainer
    $VENV/bin/python scripts/gen_t5_fixtures.py --check-trained-adapter /tmp/trained

It loads ``base/`` with ``T5ForConditionalGeneration.from_pretrained``, the
adapter with ``PeftModel.from_pretrained``, and compares PEFT's logits (eval
mode) with the Rust ones (1e-4 relative); it also checks that the adapter
changes the logits. Exit status 1 on a mismatch.
"""

from __future__ import annotations

import os
import sys

if os.environ.get("PYTHONHASHSEED") != "0":
    env = dict(os.environ, PYTHONHASHSEED="0")
    os.execve(sys.executable, [sys.executable, *sys.argv], env)

import argparse  # noqa: E402
import copy  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import warnings  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import peft  # noqa: E402
import safetensors  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from peft import LoraConfig, PeftModel, get_peft_model  # noqa: E402
from peft.tuners.lora import LoraLayer  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from torch import nn  # noqa: E402
from transformers import T5Config, T5ForConditionalGeneration  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "crates" / "lora-t5" / "tests" / "fixtures"

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)
transformers.utils.logging.disable_progress_bar()
transformers.utils.logging.set_verbosity_warning()
transformers.utils.logging.disable_default_handler()  # warnings are collected by `load_model` instead
warnings.filterwarnings("ignore")

SPECIAL_TOKENS = {"decoder_start_token_id": 0, "pad_token_id": 0, "eos_token_id": 1}
PAD, EOS, START = 0, 1, 0

# Version string written into the hand-made 4.x-style config.json files (see `config_4x`).
CFG4X_VERSION = "4.46.3"

# ---------------------------------------------------------------------------------------------
# Model specifications
# ---------------------------------------------------------------------------------------------


@dataclass
class Spec:
    seed: int
    vocab_size: int
    d_model: int
    d_kv: int
    num_heads: int
    d_ff: int
    num_layers: int
    num_decoder_layers: int
    relative_attention_num_buckets: int
    relative_attention_max_distance: int
    feed_forward_proj: str
    tied: bool  # False: a separate, random `lm_head.weight` is stored in the file

    def config(self) -> T5Config:
        return T5Config(
            vocab_size=self.vocab_size,
            d_model=self.d_model,
            d_kv=self.d_kv,
            num_heads=self.num_heads,
            d_ff=self.d_ff,
            num_layers=self.num_layers,
            num_decoder_layers=self.num_decoder_layers,
            relative_attention_num_buckets=self.relative_attention_num_buckets,
            relative_attention_max_distance=self.relative_attention_max_distance,
            feed_forward_proj=self.feed_forward_proj,
            tie_word_embeddings=self.tied,
            **SPECIAL_TOKENS,
        )


# The base models. Derived cases (cfg4x, bf16, sharded, lora) reuse their weights. `seed` is the first seed
# tried: if `bias_eos` finds no usable EOS bias for it, the next seeds are tried (the seeds written here are the
# ones that search ended on, so it succeeds at once; expected.json records the seed used).
BASE_SPECS = {
    # T5 v1.0: relu, tied embeddings, output scaled by d_model**-0.5, heads*d_kv == d_model.
    "t5_v1_0": Spec(
        seed=1017, vocab_size=96, d_model=32, d_kv=8, num_heads=4, d_ff=64, num_layers=2, num_decoder_layers=2,
        relative_attention_num_buckets=8, relative_attention_max_distance=20, feed_forward_proj="relu", tied=True,
    ),
    # T5 v1.1 / FLAN-T5: gated-gelu (gelu_new), untied lm_head, heads*d_kv != d_model, more decoder layers.
    "t5_v1_1": Spec(
        seed=1104, vocab_size=80, d_model=24, d_kv=10, num_heads=3, d_ff=40, num_layers=2, num_decoder_layers=3,
        relative_attention_num_buckets=8, relative_attention_max_distance=20, feed_forward_proj="gated-gelu",
        tied=False,
    ),
    # gated-silu, untied, otherwise v1.0 dimensions (d_ff 48 to keep the file small).
    "t5_gated_silu": Spec(
        seed=1235, vocab_size=96, d_model=32, d_kv=8, num_heads=4, d_ff=48, num_layers=2, num_decoder_layers=2,
        relative_attention_num_buckets=8, relative_attention_max_distance=20, feed_forward_proj="gated-silu",
        tied=False,
    ),
    # Plain (erf) GELU, non-gated, tied. Small max_distance so that the bucket clamp is exercised.
    "t5_gelu": Spec(
        seed=1312, vocab_size=64, d_model=16, d_kv=4, num_heads=4, d_ff=32, num_layers=2, num_decoder_layers=2,
        relative_attention_num_buckets=10, relative_attention_max_distance=8, feed_forward_proj="gelu", tied=True,
    ),
    # relu, untied, heads*d_kv != d_model, fewer decoder than encoder layers; saved with a 4.x-style
    # config (tie_word_embeddings: false, no scale_decoder_outputs).
    "t5_untied_cfg4x": Spec(
        seed=1401, vocab_size=72, d_model=16, d_kv=4, num_heads=2, d_ff=32, num_layers=2, num_decoder_layers=1,
        relative_attention_num_buckets=8, relative_attention_max_distance=20, feed_forward_proj="relu", tied=False,
    ),
}

INPUT_SEED = 7
LORA_SEED = 2100
ENC_LENGTHS = (13, 9)  # including the final EOS
INPUT_ID_RANGE = (2, 64)  # every vocabulary has at least 64 entries

GEN_RUNS = {
    "greedy_ids": {"do_sample": False, "num_beams": 1, "max_new_tokens": 12},
    "beam_ids": {
        "do_sample": False, "num_beams": 3, "max_new_tokens": 10, "length_penalty": 1.0, "early_stopping": True,
        "num_return_sequences": 1,
    },
    "beam_ids_lp": {
        "do_sample": False, "num_beams": 3, "max_new_tokens": 10, "length_penalty": 0.6, "early_stopping": False,
        "num_return_sequences": 1,
    },
    "greedy_min_ids": {"do_sample": False, "num_beams": 1, "min_new_tokens": 8, "max_new_tokens": 10},
}
# Passed to every generate() call as well (so that nothing depends on generation_config.json).
GEN_COMMON = {
    "decoder_start_token_id": START, "pad_token_id": PAD, "eos_token_id": EOS,
    "repetition_penalty": 1.0, "no_repeat_ngram_size": 0,
}


# ---------------------------------------------------------------------------------------------
# Utilities
# ---------------------------------------------------------------------------------------------


class WarningCapture(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def load_model(path: Path, **kwargs) -> tuple[T5ForConditionalGeneration, list[str]]:
    """`from_pretrained`, returning the transformers warnings it logged."""
    cap = WarningCapture()
    lg = logging.getLogger("transformers")
    lg.addHandler(cap)
    try:
        model = T5ForConditionalGeneration.from_pretrained(str(path), **kwargs)
    finally:
        lg.removeHandler(cap)
    model.eval()
    return model, [m.replace(str(path), "<dir>") for m in cap.messages]


def out_matrix(model: T5ForConditionalGeneration) -> torch.Tensor:
    return model.lm_head.weight


def lm_head_is_shared(model: T5ForConditionalGeneration) -> bool:
    return model.lm_head.weight.data_ptr() == model.shared.weight.data_ptr()


def make_inputs() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(INPUT_SEED)
    lo, hi = INPUT_ID_RANGE
    n = max(ENC_LENGTHS)
    input_ids = torch.full((2, n), PAD, dtype=torch.long)
    attention_mask = torch.zeros((2, n), dtype=torch.long)
    for row, length in enumerate(ENC_LENGTHS):
        input_ids[row, : length - 1] = torch.randint(lo, hi, (length - 1,), generator=g)
        input_ids[row, length - 1] = EOS
        attention_mask[row, :length] = 1
    body = torch.randint(lo, hi, (2, 6), generator=g)
    labels = torch.tensor(
        [
            [body[0, 0], body[0, 1], -100, body[0, 2], body[0, 3], body[0, 4], EOS],
            [body[1, 0], body[1, 1], body[1, 2], body[1, 3], EOS, -100, -100],
        ],
        dtype=torch.long,
    )
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def shift_right(labels: torch.Tensor) -> torch.Tensor:
    out = torch.zeros_like(labels)
    out[:, 1:] = labels[:, :-1]
    out[:, 0] = START
    return out.masked_fill(out == -100, PAD)


def generate(model, inputs, run: str, use_cache: bool, with_scores: bool = False):
    with torch.no_grad():
        out = model.generate(
            input_ids=inputs["input_ids"],
            attention_mask=inputs["attention_mask"],
            use_cache=use_cache,
            return_dict_in_generate=with_scores,
            output_scores=with_scores,
            **GEN_RUNS[run],
            **GEN_COMMON,
        )
    return out


def eos_steps(ids: torch.Tensor) -> list[int | None]:
    """Per row: the number of generated tokens up to and including the first EOS (None: no EOS)."""
    out = []
    for row in ids.tolist():
        gen = row[1:]
        out.append(gen.index(EOS) + 1 if EOS in gen else None)
    return out


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n")


def fmax(t: torch.Tensor) -> float:
    return float(t.abs().max()) if t.numel() else 0.0


# ---------------------------------------------------------------------------------------------
# Independent float64 reference (reads only config.json + safetensors files)
# ---------------------------------------------------------------------------------------------


def read_weights(case_dir: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    index = case_dir / "model.safetensors.index.json"
    if index.exists():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    weights, dtypes = {}, {}
    for name in files:
        with safe_open(str(case_dir / name), "pt") as f:
            for key in f.keys():
                t = f.get_tensor(key)
                dtypes[key] = str(t.dtype).replace("torch.", "")
                weights[key] = t.to(torch.float64)
    return weights, dtypes


def rule_scale(cfg: dict) -> bool:
    """scale = scale_decoder_outputs ?? tie_word_embeddings ?? true"""
    for key in ("scale_decoder_outputs", "tie_word_embeddings"):
        if cfg.get(key) is not None:
            return bool(cfg[key])
    return True


def rel_bucket(rel: np.ndarray, bidirectional: bool, num_buckets: int, max_distance: int) -> np.ndarray:
    """T5's relative position bucket, in float32 arithmetic like the torch code."""
    buckets = np.zeros_like(rel)
    if bidirectional:
        num_buckets //= 2
        buckets += (rel > 0).astype(np.int64) * num_buckets
        n = np.abs(rel)
    else:
        n = -np.minimum(rel, 0)
    max_exact = num_buckets // 2
    with np.errstate(divide="ignore", invalid="ignore"):
        large = np.log(n.astype(np.float32) / np.float32(max_exact))
        large = large / np.float32(math.log(max_distance / max_exact)) * np.float32(num_buckets - max_exact)
        large = max_exact + np.where(n < max_exact, 0, large).astype(np.int64)
    large = np.minimum(large, num_buckets - 1)
    return buckets + np.where(n < max_exact, n, large)


def activation(cfg: dict):
    """As T5Config: derived from feed_forward_proj ('gated-gelu' -> gelu_new for backward compatibility), but an
    explicit `dense_act_fn` / `is_gated_act` key in config.json wins (transformers sets the JSON keys last)."""
    proj = cfg.get("feed_forward_proj", "relu")
    parts = proj.split("-")
    name = parts[-1]
    if proj == "gated-gelu":
        name = "gelu_new"
    name = cfg.get("dense_act_fn", name)
    gated = cfg.get("is_gated_act", parts[0] == "gated")
    return name, gated, {
        "relu": torch.relu,
        "gelu": lambda x: torch.nn.functional.gelu(x),  # erf
        "gelu_new": lambda x: 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3)))),
        "silu": torch.nn.functional.silu,
    }[name]


def ref_forward(case_dir: Path, input_ids, attention_mask, decoder_input_ids, lora: dict | None = None):
    cfg = json.loads((case_dir / "config.json").read_text())
    W, _ = read_weights(case_dir)
    if lora is not None:  # merged LoRA deltas: W += scaling * B @ A
        for key, delta in lora.items():
            W[key] = W[key] + delta
    d_kv, n_heads, eps = cfg["d_kv"], cfg["num_heads"], cfg.get("layer_norm_epsilon", 1e-6)
    nb, md = cfg.get("relative_attention_num_buckets", 32), cfg.get("relative_attention_max_distance", 128)
    n_enc = cfg["num_layers"]
    n_dec = cfg.get("num_decoder_layers") or n_enc
    _, gated, act = activation(cfg)
    shared = W["shared.weight"]
    lm_head = W.get("lm_head.weight", shared)
    scale = rule_scale(cfg)

    def ln(x, w):
        return w * x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps)

    def lin(x, key):
        return x @ W[key].T

    def attn(prefix, x, kv, bias, mask):
        b, tq, _ = x.shape
        tk = kv.shape[1]
        q = lin(x, prefix + ".q.weight").view(b, tq, n_heads, d_kv).transpose(1, 2)
        k = lin(kv, prefix + ".k.weight").view(b, tk, n_heads, d_kv).transpose(1, 2)
        v = lin(kv, prefix + ".v.weight").view(b, tk, n_heads, d_kv).transpose(1, 2)
        s = q @ k.transpose(-1, -2)  # no 1/sqrt(d) scaling in T5
        if bias is not None:
            s = s + bias
        s = s.masked_fill(~mask, float("-inf"))
        p = torch.softmax(s, dim=-1)
        o = (p @ v).transpose(1, 2).reshape(b, tq, n_heads * d_kv)
        return lin(o, prefix + ".o.weight")

    def ff(prefix, x):
        if gated:
            h = act(lin(x, prefix + ".wi_0.weight")) * lin(x, prefix + ".wi_1.weight")
        else:
            h = act(lin(x, prefix + ".wi.weight"))
        return lin(h, prefix + ".wo.weight")

    def bias(stack, tq, tk, bidirectional):
        rel = np.arange(tk)[None, :] - np.arange(tq)[:, None]
        bucket = torch.from_numpy(rel_bucket(rel, bidirectional, nb, md))
        table = W[f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"]
        return table[bucket].permute(2, 0, 1).unsqueeze(0)  # [1, heads, tq, tk]

    enc_mask = attention_mask.bool()[:, None, None, :]
    h = shared[input_ids]
    t = input_ids.shape[1]
    eb = bias("encoder", t, t, True)
    for i in range(n_enc):
        p = f"encoder.block.{i}.layer"
        x = ln(h, W[p + ".0.layer_norm.weight"])
        h = h + attn(p + ".0.SelfAttention", x, x, eb, enc_mask)
        h = h + ff(p + ".1.DenseReluDense", ln(h, W[p + ".1.layer_norm.weight"]))
    enc = ln(h, W["encoder.final_layer_norm.weight"])

    td = decoder_input_ids.shape[1]
    causal = torch.ones(td, td, dtype=torch.bool).tril()[None, None]
    db = bias("decoder", td, td, False)
    h = shared[decoder_input_ids]
    for i in range(n_dec):
        p = f"decoder.block.{i}.layer"
        x = ln(h, W[p + ".0.layer_norm.weight"])
        h = h + attn(p + ".0.SelfAttention", x, x, db, causal)
        h = h + attn(p + ".1.EncDecAttention", ln(h, W[p + ".1.layer_norm.weight"]), enc, None, enc_mask)
        h = h + ff(p + ".2.DenseReluDense", ln(h, W[p + ".2.layer_norm.weight"]))
    h = ln(h, W["decoder.final_layer_norm.weight"])
    if scale:
        h = h * cfg["d_model"] ** -0.5
    return h @ lm_head.T, enc


def ref_loss(logits, labels) -> float:
    return float(torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                                   ignore_index=-100))


def ref_greedy(case_dir, inputs, max_new, min_new=0, lora=None) -> torch.Tensor:
    """Greedy decoding as transformers does it: finished rows continue with pad, stop when all are done."""
    ids = torch.full((2, 1), START, dtype=torch.long)
    done = torch.zeros(2, dtype=torch.bool)
    for step in range(max_new):
        logits, _ = ref_forward(case_dir, inputs["input_ids"], inputs["attention_mask"], ids, lora)
        last = logits[:, -1].clone()
        if step < min_new:
            last[:, EOS] = float("-inf")
        nxt = last.argmax(-1)
        nxt = torch.where(done, torch.full_like(nxt, PAD), nxt)
        ids = torch.cat([ids, nxt[:, None]], 1)
        done = done | (nxt == EOS)
        if bool(done.all()):
            break
    return ids


def greedy_margin(case_dir, inputs, ids, min_new=0, lora=None) -> float:
    """Smallest top-1 minus top-2 logit gap along the greedy path (only up to each row's EOS)."""
    logits, _ = ref_forward(case_dir, inputs["input_ids"], inputs["attention_mask"], ids[:, :-1], lora)
    steps = eos_steps(ids)
    best = float("inf")
    for row in range(ids.shape[0]):
        n = steps[row] or (ids.shape[1] - 1)
        for t in range(n):
            lg = logits[row, t].clone()
            if t < min_new:
                lg[EOS] = float("-inf")
            top = torch.topk(lg, 2).values
            best = min(best, float(top[0] - top[1]))
    return best


# ---------------------------------------------------------------------------------------------
# Building the base models
# ---------------------------------------------------------------------------------------------


def build_model(spec: Spec) -> T5ForConditionalGeneration:
    torch.manual_seed(spec.seed)
    model = T5ForConditionalGeneration(spec.config()).eval()
    with torch.no_grad():
        # Non-trivial layer-norm weights, large position biases and stronger residual updates (attention `o`
        # and feed-forward `wo` x4; tied models: embeddings x0.5), so that every weight matters numerically and
        # greedy decoding does not just echo the previous token (what a tied random T5 does by default).
        for name, p in model.named_parameters():
            if name.endswith("layer_norm.weight"):
                p.copy_(1.0 + 0.25 * torch.randn(p.shape))
            elif name.endswith("relative_attention_bias.weight"):
                p.copy_(2.0 * torch.randn(p.shape))
            elif name.endswith(".o.weight") or name.endswith(".wo.weight"):
                p.mul_(4.0)
        if spec.tied:
            model.shared.weight.mul_(0.5)
        if not spec.tied:
            # transformers 5.x ties lm_head to shared even with tie_word_embeddings=False (the config forces
            # tie_word_embeddings=True); give the head its own storage so save_pretrained writes lm_head.weight.
            model.lm_head.weight = nn.Parameter(torch.randn(spec.vocab_size, spec.d_model) * spec.d_model**-0.5)
            model.all_tied_weights_keys.pop("lm_head.weight", None)
    return model


def greedy_ok(ids: torch.Tensor, max_new: int) -> bool:
    """At least one row ends with EOS at step 3..max_new-2, and the rows end at different steps (so that the
    row that ends first is padded)."""
    s = eos_steps(ids)
    early = any(x is not None and 3 <= x <= max_new - 2 for x in s)
    long = any(x is None or x >= 6 for x in s)
    return early and long and s[0] != s[1] and all(x is None or x >= 2 for x in s)


def beams_ok(beam: torch.Tensor, beam_lp: torch.Tensor) -> bool:
    """Some beam row ends with EOS, and no beam row is just [start, EOS]."""
    sb, sl = eos_steps(beam), eos_steps(beam_lp)
    return any(x is not None for x in sb) and all(x is None or x >= 2 for x in sb + sl)


def bias_eos(model: T5ForConditionalGeneration, inputs, use_cache: bool) -> dict | None:
    """Raise the logit of EOS (token 1) by adding alpha * |row| * u to the EOS row of the output matrix, u being
    the decoder's mean output direction, so that a greedy row stops early (EOS handling and pad-filling of
    finished rows get exercised). alpha is the middle of the first run of 5+ grid values over which
    `greedy_ok` holds and none of the four generate() results changes (away from argmax ties).
    Returns None if there is no such run."""
    w = out_matrix(model)
    row0 = w[EOS].detach().clone()
    with torch.no_grad():
        g = generate(model, inputs, "greedy_ids", use_cache)
        enc = model.encoder(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).last_hidden_state
        dec = model.decoder(input_ids=g, encoder_hidden_states=enc,
                            encoder_attention_mask=inputs["attention_mask"]).last_hidden_state
    u = dec[:, 2:].reshape(-1, dec.shape[-1]).mean(0)  # states from the third position on
    u = u / u.norm()
    max_new = GEN_RUNS["greedy_ids"]["max_new_tokens"]

    def set_alpha(alpha):
        with torch.no_grad():
            w[EOS].copy_(row0 + alpha * row0.norm() * u)

    run: list[float] = []
    last_sig = None
    for k in range(0, 151):
        alpha = round(0.02 * k, 2)
        set_alpha(alpha)
        g = generate(model, inputs, "greedy_ids", use_cache)
        sig = None
        if greedy_ok(g, max_new):
            outs = [generate(model, inputs, r, use_cache) for r in GEN_RUNS]
            if beams_ok(outs[1], outs[2]):
                sig = tuple(tuple(map(tuple, o.tolist())) for o in outs)
        if sig is not None and sig == last_sig:
            run.append(alpha)
        else:
            if len(run) >= 5:
                break
            run = [alpha] if sig is not None else []
        last_sig = sig
    if len(run) < 5:
        set_alpha(0.0)
        return None
    alpha = run[len(run) // 2]
    set_alpha(alpha)
    return {"alpha": alpha, "stable_alpha_range": [run[0], run[-1]],
            "greedy_eos_steps": eos_steps(generate(model, inputs, "greedy_ids", use_cache))}


# ---------------------------------------------------------------------------------------------
# Configs in the transformers 4.x layout
# ---------------------------------------------------------------------------------------------

CFG4X_KEYS = [
    "architectures", "d_ff", "d_kv", "d_model", "decoder_start_token_id", "dense_act_fn", "dropout_rate",
    "eos_token_id", "feed_forward_proj", "initializer_factor", "is_encoder_decoder", "is_gated_act",
    "layer_norm_epsilon", "model_type", "num_decoder_layers", "num_heads", "num_layers", "pad_token_id",
    "relative_attention_max_distance", "relative_attention_num_buckets", "tie_word_embeddings", "torch_dtype",
    "transformers_version", "use_cache", "vocab_size",
]


def config_4x(cfg5: dict, tie: bool | None) -> dict:
    """The key set of a config.json written by transformers 4.x save_pretrained for T5 (as in the FLAN-T5
    hub repositories): no `scale_decoder_outputs`, `torch_dtype` instead of `dtype`, and
    `tie_word_embeddings` as given (None: key absent)."""
    src = dict(cfg5, torch_dtype=cfg5.get("dtype", "float32"), transformers_version=CFG4X_VERSION,
               tie_word_embeddings=tie)
    return {k: src[k] for k in CFG4X_KEYS if src.get(k) is not None}


# ---------------------------------------------------------------------------------------------
# Expected values of one case directory
# ---------------------------------------------------------------------------------------------

TOL_REF = 2e-4  # float32 transformers vs float64 reference (relative to max |value|, at least 1)


def close(a: torch.Tensor, b: torch.Tensor, tol: float) -> float:
    diff = fmax(a.double() - b.double())
    bound = tol * max(1.0, fmax(b.double()))
    if not diff <= bound:
        raise AssertionError(f"max |diff| {diff} > {bound}")
    return diff


def compute_case(model, case_dir: Path, inputs, gen_use_cache: bool, lora_ref: dict | None = None):
    """Reference values of a loaded model (eval mode), checked against the float64 reference.
    Returns (tensors for expected.safetensors, per-run generation info, check results)."""
    dec_in = shift_right(inputs["labels"])
    t5 = model.get_base_model() if isinstance(model, PeftModel) else model
    assert torch.equal(dec_in, t5._shift_right(inputs["labels"]))
    with torch.no_grad():
        out = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                    decoder_input_ids=dec_in)
        loss = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                     labels=inputs["labels"]).loss
    tensors = {
        "input_ids": inputs["input_ids"],
        "attention_mask": inputs["attention_mask"],
        "labels": inputs["labels"],
        "decoder_input_ids": dec_in,
        "logits": out.logits.float(),
        "encoder_last_hidden_state": out.encoder_last_hidden_state.float(),
        "loss": loss.float().reshape(1),
    }
    gen_info = {}
    model64 = copy.deepcopy(model).double()
    for run in GEN_RUNS:
        res = generate(model, inputs, run, gen_use_cache, with_scores=True)
        ids = res.sequences
        entry = {"use_cache": gen_use_cache}
        if GEN_RUNS[run]["num_beams"] > 1:
            tensors[run.removesuffix("_ids") + "_scores"] = res.sequences_scores.float()
        # Not an argmax tie: the float64 model decodes the same ids.
        ids64 = generate(model64, inputs, run, gen_use_cache)
        assert torch.equal(ids, ids64), f"{run}: float32 {ids.tolist()} != float64 {ids64.tolist()}"
        entry["same_ids_in_float64"] = True
        if gen_use_cache:
            other = generate(model, inputs, run, False)
            assert torch.equal(ids, other), f"{run}: use_cache=True and False disagree"
            entry["equal_with_use_cache_false"] = True
        else:
            try:
                generate(model, inputs, run, True)
                entry["use_cache_true"] = "ran"
            except Exception as e:  # noqa: BLE001
                entry["use_cache_true"] = f"fails: {type(e).__name__}: {e}"
        tensors[run] = ids
        entry["eos_steps"] = eos_steps(ids)
        gen_info[run] = entry

    # Independent recomputation from the files on disk.
    ref_logits, ref_enc = ref_forward(case_dir, inputs["input_ids"], inputs["attention_mask"], dec_in, lora_ref)
    checks = {
        "logits_vs_reference": close(tensors["logits"], ref_logits, TOL_REF),
        # All positions, padded ones included (their queries still attend to the unpadded keys).
        "encoder_vs_reference": close(tensors["encoder_last_hidden_state"], ref_enc, TOL_REF),
    }
    rl = ref_loss(ref_logits, inputs["labels"])
    checks["loss_vs_reference"] = abs(rl - float(loss))
    assert checks["loss_vs_reference"] < 1e-4 * max(1.0, abs(rl)), (rl, float(loss))
    for run in ("greedy_ids", "greedy_min_ids"):
        kw = GEN_RUNS[run]
        ref_ids = ref_greedy(case_dir, inputs, kw["max_new_tokens"], kw.get("min_new_tokens", 0), lora_ref)
        assert torch.equal(ref_ids, tensors[run]), f"{run}: reference {ref_ids} != transformers {tensors[run]}"
        margin = greedy_margin(case_dir, inputs, tensors[run], kw.get("min_new_tokens", 0), lora_ref)
        assert margin > 1e-3, f"{run}: top-2 logit margin {margin} too small"
        gen_info[run]["min_top2_margin"] = round(margin, 6)
        gen_info[run]["matches_reference_greedy"] = True
    return tensors, gen_info, checks


def describe_tensors(tensors: dict) -> dict:
    return {k: {"dtype": {torch.float32: "F32", torch.int64: "I64"}[v.dtype], "shape": list(v.shape)}
            for k, v in tensors.items()}


def effective_config(model) -> dict:
    c = model.config
    return {
        "scale_decoder_outputs": bool(c.scale_decoder_outputs),
        "tie_word_embeddings": bool(c.tie_word_embeddings),
        "lm_head_tied_to_shared": lm_head_is_shared(model),
        "dense_act_fn": c.dense_act_fn,
        "is_gated_act": bool(c.is_gated_act),
        "num_layers": c.num_layers,
        "num_decoder_layers": c.num_decoder_layers,
        "attn_implementation": c._attn_implementation,
    }


def write_expected(case_dir: Path, case: str, description: str, tensors: dict, gen_info: dict, checks: dict,
                   extra: dict) -> None:
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(case_dir / "expected.safetensors"),
              metadata={"format": "pt"})
    info = {
        "case": case,
        "description": description,
        **extra,
        "tensors": describe_tensors(tensors),
        "inputs": {k: tensors[k].tolist() for k in ("input_ids", "attention_mask", "labels", "decoder_input_ids")},
        "loss": float(tensors["loss"][0]),
        "beam_sequences_scores": {k: tensors[k].tolist() for k in tensors if k.endswith("_scores")},
        "generation": {
            run: {"kwargs": {**GEN_RUNS[run], **GEN_COMMON, "use_cache": gen_info[run]["use_cache"]},
                  "ids": tensors[run].tolist(), **{k: v for k, v in gen_info[run].items() if k != "use_cache"}}
            for run in GEN_RUNS
        },
        "checks": {k: float(f"{v:.3g}") for k, v in checks.items()},
    }
    write_json(case_dir / "expected.json", info)


# ---------------------------------------------------------------------------------------------
# config_conventions.json
# ---------------------------------------------------------------------------------------------

CONVENTION_VARIANTS = [
    # name, tie_word_embeddings, scale_decoder_outputs (None: key absent)
    ("4x_tied_key_absent", None, None),
    ("4x_tied", True, None),
    ("4x_untied", False, None),
    ("5x_tied", True, True),
    ("5x_untied", True, False),
    ("tie_false_scale_true", False, True),
    ("tie_absent_scale_false", None, False),
]


def conventions(out: Path, inputs) -> dict:
    dec_in = shift_right(inputs["labels"])
    weight_sources = {"no_lm_head_in_file": out / "t5_v1_0", "lm_head_in_file": out / "t5_untied_cfg4x"}
    rows = []
    for wname, src in weight_sources.items():
        base_cfg = json.loads((src / "config.json").read_text())
        base_cfg.pop("scale_decoder_outputs", None)
        base_cfg.pop("tie_word_embeddings", None)
        for vname, tie, scale in CONVENTION_VARIANTS:
            cfg = dict(base_cfg)
            if tie is not None:
                cfg["tie_word_embeddings"] = tie
            if scale is not None:
                cfg["scale_decoder_outputs"] = scale
            with tempfile.TemporaryDirectory() as tmp:
                tmp = Path(tmp)
                shutil.copy(src / "model.safetensors", tmp / "model.safetensors")
                write_json(tmp / "config.json", cfg)
                model, warns = load_model(tmp)
                with torch.no_grad():
                    logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                                   decoder_input_ids=dec_in).logits
                ref, _ = ref_forward(tmp, inputs["input_ids"], inputs["attention_mask"], dec_in)
                # The same with the opposite scaling, to show the comparison discriminates.
                flipped = dict(cfg, scale_decoder_outputs=not rule_scale(cfg))
                write_json(tmp / "config.json", flipped)
                ref_flipped, _ = ref_forward(tmp, inputs["input_ids"], inputs["attention_mask"], dec_in)
            diff = fmax(logits.double() - ref)
            diff_flipped = fmax(logits.double() - ref_flipped)
            agrees = diff <= TOL_REF * max(1.0, fmax(ref))
            rows.append({
                "weights": wname,
                "variant": vname,
                "config_keys": {"tie_word_embeddings": tie, "scale_decoder_outputs": scale},
                "transformers": {
                    "scale_decoder_outputs": bool(model.config.scale_decoder_outputs),
                    "tie_word_embeddings": bool(model.config.tie_word_embeddings),
                    "lm_head_tied_to_shared": lm_head_is_shared(model),
                },
                "rule": {"scale": rule_scale(cfg),
                         "lm_head": "lm_head.weight" if wname == "lm_head_in_file" else "shared.weight"},
                "rule_matches_transformers_logits": bool(agrees),
                "max_abs_diff_vs_rule": float(f"{diff:.3g}"),
                "max_abs_diff_vs_opposite_scaling": float(f"{diff_flipped:.3g}"),
                "load_warnings": [w.splitlines()[0] for w in warns],
            })
            assert agrees, rows[-1]
    # What decides the activation: feed_forward_proj, or an explicit dense_act_fn key in config.json?
    acts = []
    act_cases = [
        ({"feed_forward_proj": "relu"}, None),
        ({"feed_forward_proj": "gelu"}, None),
        ({"feed_forward_proj": "gated-gelu"}, None),
        ({"feed_forward_proj": "gated-silu"}, None),
        ({"feed_forward_proj": "gated-gelu", "dense_act_fn": "gelu"}, "t5_v1_1"),
        ({"feed_forward_proj": "gated-gelu", "dense_act_fn": "gelu_new"}, "t5_v1_1"),
        ({"feed_forward_proj": "gelu", "dense_act_fn": "gelu_new"}, "t5_gelu"),
        ({"feed_forward_proj": "relu", "is_gated_act": True}, None),
    ]
    for kw, weights in act_cases:
        entry = {"config_json": kw}
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            write_json(tmp / "config.json", {"model_type": "t5", **kw})
            c = T5Config.from_pretrained(str(tmp))
            entry.update({"dense_act_fn": c.dense_act_fn, "is_gated_act": bool(c.is_gated_act)})
            if weights is not None:
                # Numerically: transformers on that weights file with the key added, vs the reference that
                # honours the key and vs the activation feed_forward_proj alone would give.
                cfg = json.loads((out / weights / "config.json").read_text())
                cfg.pop("dense_act_fn", None)
                shutil.copy(out / weights / "model.safetensors", tmp / "model.safetensors")
                write_json(tmp / "config.json", {**cfg, **kw})
                model, _ = load_model(tmp)
                with torch.no_grad():
                    logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                                   decoder_input_ids=dec_in).logits.double()
                ref, _ = ref_forward(tmp, inputs["input_ids"], inputs["attention_mask"], dec_in)
                write_json(tmp / "config.json", cfg)
                ref_derived, _ = ref_forward(tmp, inputs["input_ids"], inputs["attention_mask"], dec_in)
                entry["weights"] = weights
                entry["model_act_module"] = type(model.encoder.block[0].layer[-1].DenseReluDense.act).__name__
                entry["max_abs_diff_vs_reference_with_key"] = float(f"{fmax(logits - ref):.3g}")
                entry["max_abs_diff_vs_reference_from_feed_forward_proj"] = float(f"{fmax(logits - ref_derived):.3g}")
                assert fmax(logits - ref) <= TOL_REF * max(1.0, fmax(ref)), entry
        acts.append(entry)
    return {
        "transformers_version": transformers.__version__,
        "rule": "scale = scale_decoder_outputs ?? tie_word_embeddings ?? true; "
                "lm_head = lm_head.weight if present in the weights file else shared.weight",
        "variants": rows,
        "activations": acts,
    }


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------


def check_buckets() -> None:
    """Check the float32 bucket formula of `rel_bucket` against transformers for the settings used here."""
    from transformers.models.t5.modeling_t5 import T5Attention

    for nb, md in [(8, 20), (10, 8), (32, 128)]:
        rel = np.arange(-64, 65)[None, :]
        for bidi in (True, False):
            ours = rel_bucket(rel, bidi, nb, md)
            theirs = T5Attention._relative_position_bucket(torch.from_numpy(rel), bidi, nb, md).numpy()
            assert (ours == theirs).all(), (nb, md, bidi)


def check_trained_adapter(export_dir: Path) -> None:
    """Load the base model and the adapter the Rust trainer test exported, with transformers + PEFT."""
    expected = json.loads((export_dir / "expected.json").read_text())
    base = T5ForConditionalGeneration.from_pretrained(export_dir / "base").eval()
    model = PeftModel.from_pretrained(base, export_dir / "adapter").eval()
    inputs = {
        key: torch.tensor(expected[key], dtype=torch.long)
        for key in ("input_ids", "attention_mask", "decoder_input_ids")
    }
    want = torch.tensor(expected["logits"], dtype=torch.float32).reshape(expected["logits_shape"])
    with torch.no_grad():
        got = model(**inputs).logits
        with model.disable_adapter():
            without = model(**inputs).logits
    error = fmax((got - want).abs()) / fmax(want.abs())
    effect = fmax((without - want).abs()) / fmax(want.abs())
    wrapped = sorted(name for name, module in model.named_modules() if isinstance(module, LoraLayer))
    print(f"PEFT {peft.__version__}, transformers {transformers.__version__}: "
          f"{len(wrapped)} LoRA layers, r={model.peft_config['default'].r}")
    print(f"logits: max |PEFT - Rust| / max |Rust| = {error:.3e} (tolerance 1e-4)")
    print(f"adapter effect: max |base - Rust| / max |Rust| = {effect:.3e}")
    if error > 1e-4 or effect < 1e-3:
        print("FAIL")
        sys.exit(1)
    print("PASS")


def verify(out: Path) -> None:
    """Reload every case directory of an existing fixture tree and recompute what expected.safetensors holds."""
    from safetensors.torch import load_file

    failures = 0
    for exp_path in sorted(out.glob("*/expected.safetensors")):
        case_dir = exp_path.parent
        exp = load_file(str(exp_path))
        info = json.loads((case_dir / "expected.json").read_text())
        if (case_dir / "adapter").is_dir():
            base, _ = load_model(out / info["base_model_dir"])
            model = PeftModel.from_pretrained(base, str(case_dir / "adapter")).eval()
        else:
            model, _ = load_model(case_dir)
            model = model.float()
        inputs = {k: exp[k] for k in ("input_ids", "attention_mask", "labels")}
        with torch.no_grad():
            o = model(input_ids=exp["input_ids"], attention_mask=exp["attention_mask"],
                      decoder_input_ids=exp["decoder_input_ids"])
            loss = model(input_ids=exp["input_ids"], attention_mask=exp["attention_mask"], labels=exp["labels"]).loss
        diffs = {
            "logits": fmax(o.logits - exp["logits"]),
            "encoder_last_hidden_state": fmax(o.encoder_last_hidden_state - exp["encoder_last_hidden_state"]),
            "loss": abs(float(loss) - float(exp["loss"][0])),
        }
        ok = all(v <= 1e-5 for v in diffs.values())
        for run in GEN_RUNS:
            use_cache = info["generation"][run]["kwargs"]["use_cache"]
            ids = generate(model, inputs, run, use_cache)
            same = torch.equal(ids, exp[run])
            ok &= same
            diffs[run] = "same" if same else f"DIFFERENT {ids.tolist()}"
        if "logits_merged" in exp:
            merged = model.merge_and_unload().eval()
            with torch.no_grad():
                lm = merged(input_ids=exp["input_ids"], attention_mask=exp["attention_mask"],
                            decoder_input_ids=exp["decoder_input_ids"]).logits
            diffs["logits_merged"] = fmax(lm - exp["logits_merged"])
            ok &= diffs["logits_merged"] <= 1e-5
        failures += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {case_dir.name}: {diffs}")
    if failures:
        sys.exit(f"{failures} case(s) failed")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out-dir", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--verify", action="store_true",
                    help="only reload the fixtures in --out-dir and recompute them; writes nothing")
    ap.add_argument("--check-trained-adapter", type=Path, metavar="DIR",
                    help="load the adapter exported by the Rust trainer test with PEFT and compare logits")
    args = ap.parse_args()
    out: Path = args.out_dir
    if args.check_trained_adapter:
        check_trained_adapter(args.check_trained_adapter)
        return
    if args.verify:
        verify(out)
        return
    check_buckets()

    with tempfile.TemporaryDirectory() as staging_root:
        stage = Path(staging_root) / "fixtures"
        stage.mkdir()
        inputs = make_inputs()
        summary = {}

        def finish_case(case, description, gen_use_cache, extra, model_kwargs=None, to_float=False):
            case_dir = stage / case
            model, warns = load_model(case_dir, **(model_kwargs or {}))
            loaded_dtypes = sorted({str(p.dtype).replace("torch.", "") for p in model.parameters()})
            if to_float:
                model = model.float()
            tensors, gen_info, checks = compute_case(model, case_dir, inputs, gen_use_cache)
            _, file_dtypes = read_weights(case_dir)
            extra = {
                **extra,
                "config_effective": effective_config(model),
                "weights_file_dtypes": sorted(set(file_dtypes.values())),
                "lm_head_weight_in_file": "lm_head.weight" in file_dtypes,
                "load_warnings": [w.splitlines()[0] for w in warns],
            }
            if to_float:
                extra["dtypes_after_from_pretrained"] = loaded_dtypes
            write_expected(case_dir, case, description, tensors, gen_info, checks, extra)
            summary[case] = tensors
            return model, tensors

        # ---- base models ---------------------------------------------------------------------
        eos_bias = {}
        for case, spec in BASE_SPECS.items():
            use_cache = spec.num_decoder_layers <= spec.num_layers
            for seed in range(spec.seed, spec.seed + 50):
                spec.seed = seed
                model = build_model(spec)
                eos_bias[case] = bias_eos(model, inputs, use_cache)
                if eos_bias[case] is not None:
                    break
            else:
                raise RuntimeError(f"{case}: no seed with a usable EOS bias")
            case_dir = stage / case
            model.save_pretrained(str(case_dir))
            if case == "t5_untied_cfg4x":
                cfg5 = json.loads((case_dir / "config.json").read_text())
                write_json(case_dir / "config.json", config_4x(cfg5, tie=False))
                (case_dir / "generation_config.json").unlink()
            with safe_open(str(case_dir / "model.safetensors"), "pt") as f:
                assert ("lm_head.weight" in f.keys()) == (not spec.tied), case

        descriptions = {
            "t5_v1_0": "T5 v1.0 style: relu, tied embeddings (no lm_head.weight in the file), decoder output "
                       "scaled by d_model**-0.5.",
            "t5_v1_1": "FLAN-T5 / v1.1 style: gated-gelu (gelu_new), untied lm_head, num_heads*d_kv != d_model, "
                       "3 decoder vs 2 encoder layers; no output scaling.",
            "t5_gated_silu": "gated-silu, untied lm_head, no output scaling.",
            "t5_gelu": "plain erf GELU (non-gated), tied, scaled; relative_attention_max_distance 8 so that the "
                       "last bucket is clamped.",
            "t5_untied_cfg4x": "relu, untied lm_head, num_heads*d_kv != d_model, 1 decoder vs 2 encoder layers; "
                               "config.json in the transformers 4.x layout with tie_word_embeddings: false.",
        }
        base_info = {}
        for case, spec in BASE_SPECS.items():
            use_cache = spec.num_decoder_layers <= spec.num_layers
            extra = {"spec": spec.__dict__, "eos_bias": eos_bias[case],
                     "config_style": "4.x" if case.endswith("cfg4x") else "5.x (save_pretrained)"}
            _, base_info[case] = finish_case(case, descriptions[case], use_cache, extra)

        # ---- t5_v1_0_cfg4x: same weights, 4.x-style config with tie_word_embeddings: true ---------------
        case = "t5_v1_0_cfg4x"
        (stage / case).mkdir()
        shutil.copy(stage / "t5_v1_0" / "model.safetensors", stage / case / "model.safetensors")
        cfg5 = json.loads((stage / "t5_v1_0" / "config.json").read_text())
        write_json(stage / case / "config.json", config_4x(cfg5, tie=True))
        _, t = finish_case(case, "t5_v1_0's model.safetensors with a config.json in the transformers 4.x layout "
                           "(tie_word_embeddings: true, no scale_decoder_outputs).", True,
                           {"weights_from": "t5_v1_0", "config_style": "4.x"})
        assert torch.equal(t["logits"], base_info["t5_v1_0"]["logits"])

        # ---- t5_bf16: v1_0 in bfloat16 ----------------------------------------------------------------
        case = "t5_bf16"
        m, _ = load_model(stage / "t5_v1_0")
        m = m.to(torch.bfloat16)
        m.save_pretrained(str(stage / case))
        _, t = finish_case(case, "t5_v1_0 saved after model.to(torch.bfloat16): every tensor in model.safetensors "
                           "is BF16. Expected values: from_pretrained (default dtype) then .float().", True,
                           {"weights_from": "t5_v1_0", "config_style": "5.x (save_pretrained)"}, to_float=True)
        m32, _ = load_model(stage / case, dtype=torch.float32)
        tf32, _, _ = compute_case(m32, stage / case, inputs, True)
        assert torch.equal(tf32["logits"], t["logits"]), "bf16: dtype=float32 load differs from .float()"
        bf16_vs_f32 = fmax(t["logits"] - base_info["t5_v1_0"]["logits"])

        # ---- t5_sharded: v1_1 split into shards --------------------------------------------------------
        case = "t5_sharded"
        m, _ = load_model(stage / "t5_v1_1")
        m.save_pretrained(str(stage / case), max_shard_size="40KB")
        assert (stage / case / "model.safetensors.index.json").exists()
        _, t = finish_case(case, "t5_v1_1 saved with save_pretrained(max_shard_size='40KB'): "
                           "model.safetensors.index.json plus shards.", False,
                           {"weights_from": "t5_v1_1", "config_style": "5.x (save_pretrained)",
                            "shards": sorted(p.name for p in (stage / case).glob("model-*.safetensors"))})
        assert torch.equal(t["logits"], base_info["t5_v1_1"]["logits"])

        # ---- t5_v1_1_lora -----------------------------------------------------------------------------
        case = "t5_v1_1_lora"
        lora_dir = stage / case
        adapter_dir = lora_dir / "adapter"
        base, _ = load_model(stage / "t5_v1_1")
        lcfg = LoraConfig(r=4, lora_alpha=8, target_modules=["q", "v", "wi_0"], use_rslora=False,
                          lora_dropout=0.0, task_type="SEQ_2_SEQ_LM")
        pm = get_peft_model(base, lcfg)
        torch.manual_seed(LORA_SEED)
        targets = []
        with torch.no_grad():
            for name, mod in pm.named_modules():
                if isinstance(mod, LoraLayer):
                    mod.lora_B["default"].weight.copy_(torch.randn(mod.lora_B["default"].weight.shape) * 0.2)
                    targets.append(name.removeprefix("base_model.model."))
        pm.peft_config["default"].base_model_name_or_path = "t5_v1_1"
        pm.save_pretrained(str(adapter_dir))
        (adapter_dir / "README.md").unlink(missing_ok=True)

        base2, _ = load_model(stage / "t5_v1_1")
        pm2 = PeftModel.from_pretrained(base2, str(adapter_dir)).eval()
        # Merged deltas for the reference forward, read from the adapter file.
        acfg = json.loads((adapter_dir / "adapter_config.json").read_text())
        scaling = acfg["lora_alpha"] / acfg["r"]
        lora_ref = {}
        with safe_open(str(adapter_dir / "adapter_model.safetensors"), "pt") as f:
            for key in f.keys():
                if key.endswith("lora_A.weight"):
                    mod = key.removeprefix("base_model.model.").removesuffix(".lora_A.weight")
                    a = f.get_tensor(key).double()
                    b = f.get_tensor(key.replace("lora_A", "lora_B")).double()
                    lora_ref[mod + ".weight"] = scaling * b @ a
        tensors, gen_info, checks = compute_case(pm2, stage / "t5_v1_1", inputs, False, lora_ref)
        merged = pm2.merge_and_unload().eval()
        with torch.no_grad():
            tensors["logits_merged"] = merged(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                                              decoder_input_ids=tensors["decoder_input_ids"]).logits.float()
        checks["logits_merged_vs_adapter"] = fmax(tensors["logits_merged"] - tensors["logits"])
        assert checks["logits_merged_vs_adapter"] < 1e-5
        checks["logits_vs_base_model"] = fmax(tensors["logits"] - base_info["t5_v1_1"]["logits"])
        assert checks["logits_vs_base_model"] > 0.1, "adapter is (almost) a no-op"
        write_expected(lora_dir, case, "PEFT LoRA (r=4, lora_alpha=8, q/v/wi_0, lora_B = randn*0.2) on t5_v1_1, "
                       "saved with PeftModel.save_pretrained into adapter/. Values with the adapter active; "
                       "logits_merged after merge_and_unload().", tensors, gen_info, checks,
                       {"base_model_dir": "t5_v1_1", "adapter_dir": "adapter", "lora_scaling": scaling,
                        "lora_targets": sorted(targets)})
        summary[case] = tensors

        # ---- config conventions ------------------------------------------------------------------------
        conv = conventions(stage, inputs)
        conv["bf16_vs_f32_max_abs_logit_diff"] = float(f"{bf16_vs_f32:.3g}")
        conv["versions"] = {"torch": torch.__version__, "transformers": transformers.__version__,
                            "peft": peft.__version__, "safetensors": safetensors.__version__,
                            "numpy": np.__version__}
        write_json(stage / "config_conventions.json", conv)

        # ---- install ------------------------------------------------------------------------------------
        out.mkdir(parents=True, exist_ok=True)
        keep = {"README.md"}
        for p in out.iterdir():
            if p.name not in keep:
                shutil.rmtree(p) if p.is_dir() else p.unlink()
        for p in stage.iterdir():
            shutil.move(str(p), str(out / p.name))

    total = 0
    for p in sorted(out.rglob("*")):
        if p.is_file():
            total += p.stat().st_size
            print(f"{p.stat().st_size:8d}  {sha256(p)[:16]}  {p.relative_to(out)}")
    print(f"total {total} bytes")


if __name__ == "__main__":
    main()
