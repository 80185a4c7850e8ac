//! `parse_safetensors` on arbitrary bytes: an error or tensors, never a panic. Tensors that were
//! read must survive writing and reading again unchanged.

#![no_main]

use libfuzzer_sys::fuzz_target;
use lora_hf::{parse_safetensors, serialize_safetensors, WeightDtype};

fuzz_target!(|data: &[u8]| {
    let path = "adapter_model.safetensors".as_ref();
    let Ok(tensors) = parse_safetensors(data, path) else {
        return;
    };
    for (key, tensor) in &tensors {
        let count = tensor
            .shape
            .iter()
            .try_fold(1usize, |n, d| n.checked_mul(*d));
        assert_eq!(count, Some(tensor.values.len()), "tensor `{key}`");
    }
    let bytes = serialize_safetensors(&tensors, WeightDtype::F32)
        .expect("tensors that were read serialise");
    let again = parse_safetensors(&bytes, path).expect("written tensors parse");
    assert_eq!(again, tensors);
});
