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
