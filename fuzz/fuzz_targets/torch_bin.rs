//! `parse_torch_bytes` (the legacy `adapter_model.bin`) on arbitrary bytes: an error or tensors,
//! never a panic, and every tensor holds as many values as its shape says.

#![no_main]

use libfuzzer_sys::fuzz_target;
use lora_peft_io::parse_torch_bytes;

fuzz_target!(|data: &[u8]| {
    let Ok(tensors) = parse_torch_bytes(data) else {
        return;
    };
    for (key, tensor) in &tensors {
        let count = tensor
            .shape
            .iter()
            .try_fold(1usize, |n, d| n.checked_mul(*d));
        assert_eq!(count, Some(tensor.values.len()), "tensor `{key}`");
    }
});
