#!/bin/sh
# Copies the PEFT fixture files into the fuzz corpora (fuzz/corpus/<target>/), as seeds.
# Run from the repository root: sh fuzz/seed_corpora.sh
set -eu
fixtures=crates/lora-peft-io/tests/fixtures
corpus=fuzz/corpus
mkdir -p "$corpus/adapter_config" "$corpus/safetensors_weights" "$corpus/torch_bin"
for file in $(find "$fixtures" -name 'adapter_config.json' -o -name 'targets.json' | sort); do
    name=$(echo "${file#$fixtures/}" | tr '/' '_')
    cp "$file" "$corpus/adapter_config/$name"
done
for file in $(find "$fixtures" -name '*.safetensors' | sort); do
    name=$(echo "${file#$fixtures/}" | tr '/' '_')
    cp "$file" "$corpus/safetensors_weights/$name"
done
for file in $(find "$fixtures" -name '*.bin' | sort); do
    name=$(echo "${file#$fixtures/}" | tr '/' '_')
    cp "$file" "$corpus/torch_bin/$name"
done
# The T5-side readers: config.json and tokenizer.json files of the committed models and the
# transformers fixtures; checkpoint inputs are a mode byte (0: model.safetensors, 1: index)
# and the file; trainer states and JSONL records from the committed data.
mkdir -p "$corpus/t5_config" "$corpus/tokenizer_json" "$corpus/t5_checkpoint" "$corpus/trainer_state" "$corpus/jsonl"
for file in $(find models crates/lora-t5/tests/fixtures -name 'config.json' | sort); do
    name=$(echo "$file" | tr '/' '_')
    cp "$file" "$corpus/t5_config/$name"
done
for file in $(find models crates/lora-t5/tests/fixtures -name 'tokenizer.json' | sort); do
    name=$(echo "$file" | tr '/' '_')
    cp "$file" "$corpus/tokenizer_json/$name"
done
for file in $(find crates/lora-t5/tests/fixtures -name 'model.safetensors' | sort); do
    name=$(echo "$file" | tr '/' '_')
    { printf '\000'; cat "$file"; } > "$corpus/t5_checkpoint/$name"
done
printf '\001{"metadata": {}, "weight_map": {"shared.weight": "model-00001-of-00001.safetensors"}}' \
    > "$corpus/t5_checkpoint/index"
printf '{"step": 4, "epoch": 0, "batch_in_epoch": 4, "micro_batches": 8, "best": [2.5, 4], "evals_without_improvement": 0, "param_ids": {"encoder.block.0.layer.0.SelfAttention.q": [1, 2]}, "history": [{"step": 2, "epoch": 0, "loss": 3.1, "learning_rate": 0.001, "grad_norm": 1.5, "tokens_per_second": 900.0, "eval_loss": null}], "window": {"loss_sum": 1.25, "batches": 1, "tokens": 40}, "settings": {"trainer": {"seed": 3}}}' \
    > "$corpus/trainer_state/state.json"
for file in data/uidsl/*.jsonl; do
    head -3 "$file" > "$corpus/jsonl/$(basename "$file")"
done
