//! `T5ForConditionalGeneration::loss` with the head and the cross-entropy fused (the flex
//! backend under autodiff) gives the value and the adapters' gradients of the recorded loss
//! (`forward_with_labels`), for a tied head (scaled decoder output) and an untied one.

use burn::backend::{Autodiff, Flex};
use burn::tensor::{Int, Tensor, TensorData};
use lora_core::{
    linear_cross_entropy, mark_only_lora_as_trainable, HeadLayout, LoraBias, LoraConfig, LoraInit,
    LoraModule,
};
use lora_peft_io::{inject_adapter, AdapterConfig, ModuleSelector};
use lora_t5::{FeedForwardKind, T5Config, T5ForConditionalGeneration, IGNORE_INDEX};

type T = Autodiff<Flex>;

fn model(tied: bool) -> T5ForConditionalGeneration<T> {
    let config = T5Config {
        vocab_size: 3000,
        d_model: 32,
        d_kv: 8,
        num_heads: 4,
        d_ff: 48,
        num_layers: 2,
        num_decoder_layers: 2,
        relative_attention_num_buckets: 8,
        relative_attention_max_distance: 16,
        feed_forward: FeedForwardKind::GATED_GELU,
        tie_word_embeddings: Some(tied),
        scale_decoder_outputs: tied,
        dropout_rate: 0.0,
        ..T5Config::default()
    };
    let mut model = T5ForConditionalGeneration::<T>::new(&config, &Default::default());
    // Adapters that are not a no-op, so that every adapter weight has a gradient.
    let lora = LoraConfig::new(4, 8.0).with_init_lora_weights(LoraInit::Random);
    let targets = ModuleSelector::Names(vec!["q".into(), "v".into(), "wo".into()]);
    let adapter = AdapterConfig::from_lora_config(&lora, targets).unwrap();
    inject_adapter(&mut model, &adapter, "default").unwrap();
    mark_only_lora_as_trainable(model, LoraBias::None)
}

fn ints(values: Vec<i64>, shape: [usize; 2]) -> Tensor<T, 2, Int> {
    Tensor::from_data(TensorData::new(values, shape), &Default::default())
}

/// Every adapter weight's gradient, in visiting order.
fn adapter_gradients(
    model: &T5ForConditionalGeneration<T>,
    loss: Tensor<T, 1>,
) -> Vec<(String, Vec<f32>)> {
    let grads = loss.backward();
    let mut out = Vec::new();
    model.visit_lora("", &mut |path, layer| {
        for adapter in &layer.adapters {
            for (name, param) in [("A", &adapter.lora_a), ("B", &adapter.lora_b)] {
                let grad = param.val().grad(&grads).expect("an adapter gradient");
                out.push((format!("{path} {name}"), grad.into_data().to_vec().unwrap()));
            }
        }
    });
    out
}

fn check(tied: bool) {
    let model = model(tied);
    let input = ints((0..24).map(|i| 2 + (i * 37) % 2900).collect(), [2, 12]);
    let mask = ints(vec![1; 24], [2, 12]);
    let mut labels: Vec<i64> = (0..20).map(|i| 3 + (i * 53) % 2990).collect();
    labels[17] = IGNORE_INDEX;
    labels[18] = IGNORE_INDEX;
    // The fused path applies to this model's head (frozen, f32, contiguous).
    let (weight, layout) = match &model.lm_head {
        None => (model.shared.weight.val(), HeadLayout::VocabRows),
        Some(head) => (head.base.weight.val(), HeadLayout::VocabColumns),
    };
    let hidden = Tensor::<T, 2>::zeros([20, 32], &Default::default());
    assert!(
        linear_cross_entropy(hidden, &weight, layout, &labels, IGNORE_INDEX).is_some(),
        "the fused path does not apply"
    );
    let labels = ints(labels, [2, 10]);

    let recorded = model
        .forward_with_labels(input.clone(), mask.clone(), labels.clone())
        .unwrap()
        .loss;
    let fused = model.loss(input, mask, labels).unwrap();
    let (recorded_value, fused_value) =
        (recorded.clone().into_scalar(), fused.clone().into_scalar());
    assert!(
        (fused_value - recorded_value).abs() <= 1e-5 * recorded_value.abs(),
        "loss {fused_value} against {recorded_value}"
    );
    let expected = adapter_gradients(&model, recorded);
    let found = adapter_gradients(&model, fused);
    assert_eq!(expected.len(), found.len());
    assert!(!expected.is_empty());
    for ((path, e), (_, f)) in expected.iter().zip(&found) {
        let largest = e.iter().fold(0f32, |m, g| m.max(g.abs()));
        assert!(largest > 0.0, "{path}: no gradient");
        for (i, (f, e)) in f.iter().zip(e).enumerate() {
            assert!(
                (f - e).abs() <= 1e-4 * largest,
                "{path}, element {i}: {f} against {e} (largest {largest})"
            );
        }
    }
}

#[test]
fn tied_head_fused_loss_gives_the_recorded_loss_and_gradients() {
    check(true);
}

#[test]
fn untied_head_fused_loss_gives_the_recorded_loss_and_gradients() {
    check(false);
}
