//! A loaded checkpoint's linear weights are contiguous in Burn's `[in, out]` layout: PyTorch
//! stores `[out, in]`, and a transposed view of it would send every product of the flex fast
//! paths (training's frozen products, the merged forward, decoding's streamed products) through
//! a copy of the weight at each call, or through Burn's slower strided product.

use std::path::Path;

use burn::backend::Flex;
use burn::tensor::TensorPrimitive;
use lora_core::LoraModule;
use lora_t5::T5ForConditionalGeneration;

fn assert_contiguous_weights(case: &str) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(case);
    let model = T5ForConditionalGeneration::<Flex>::from_pretrained(&dir, &Default::default())
        .expect("the fixture loads");
    let mut layers = 0;
    model.visit_lora("", &mut |path, layer| {
        let TensorPrimitive::Float(weight) = layer.base.weight.val().into_primitive() else {
            panic!("{path}: an f32 weight");
        };
        assert!(weight.is_contiguous(), "{path}: a strided weight");
        layers += 1;
    });
    assert!(layers > 0, "{case}: no linear layer visited");
}

#[test]
fn a_tied_checkpoint_loads_contiguous_weights() {
    assert_contiguous_weights("t5_v1_1");
}

#[test]
fn an_untied_checkpoint_loads_a_contiguous_head_too() {
    assert_contiguous_weights("t5_untied_cfg4x");
}
