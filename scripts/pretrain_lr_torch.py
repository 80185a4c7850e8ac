"""The learning-rate check behind the README's note on pretraining: transformers' T5 of the
embedded model's shape (3 + 3 layers, d_model 256, 4 heads, d_ff 768, gated GELU, tied head),
trained by PyTorch on data/uidsl/base_train.jsonl with AdamW (weight decay 0.01, 15 warm-up
steps, norm clipping at 1.0), 300 steps of 32 random records, printing the loss every 20 steps.

    $VENV/bin/python scripts/pretrain_lr_torch.py 2e-3   # 0.55 per token at step 240
    $VENV/bin/python scripts/pretrain_lr_torch.py 5e-4   # 0.20 at step 240, 0.19 at 260

The tokenizer and config come from the embedded model (models/uidsl-t5-small); the weights are
transformers' own initialisation. Needs torch, transformers and tokenizers (not CI).
"""
import json
import random
import sys
import time
from pathlib import Path

import torch
from tokenizers import Tokenizer
from transformers import T5Config, T5ForConditionalGeneration

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "models/uidsl-t5-small"

lr = float(sys.argv[1]) if len(sys.argv) > 1 else 2e-3
torch.manual_seed(0)
random.seed(0)
torch.set_num_threads(2)
tokenizer = Tokenizer.from_file(str(MODEL / "tokenizer.json"))
config = json.loads((MODEL / "config.json").read_text())
config.pop("architectures", None)
model = T5ForConditionalGeneration(T5Config(**config))
records = [json.loads(line) for line in open(ROOT / "data/uidsl/base_train.jsonl")]
data = [
    (tokenizer.encode(r["instruction"]).ids, tokenizer.encode(r["output_json_minified"]).ids)
    for r in records
]
optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min((s + 1) / 15, 1.0))
model.train()
started = time.time()
for step in range(300):
    batch = random.sample(data, 32)
    source_len = max(len(s) for s, _ in batch)
    target_len = max(len(t) for _, t in batch)
    ids = torch.tensor([s + [0] * (source_len - len(s)) for s, _ in batch])
    mask = torch.tensor([[1] * len(s) + [0] * (source_len - len(s)) for s, _ in batch])
    labels = torch.tensor([t + [-100] * (target_len - len(t)) for _, t in batch])
    loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    optimizer.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    schedule.step()
    if step % 20 == 0:
        print(step, round(loss.item(), 4), f"{time.time() - started:.0f} s", flush=True)
