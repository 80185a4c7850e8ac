//! Peak memory of LoRA training steps on a t5-small-sized model (the `train_step_bs8` case of
//! `benches/t5.rs`): random weights, d_model 512, 6 + 6 layers, 8 heads, d_ff 2048, vocabulary
//! 32128, LoRA r = 16, alpha = 32 on `q` and `v`, batch 8, source 64, target 128, AdamW.
//!
//! Prints the process's peak resident set (`VmHWM` of `/proc/self/status`, Linux only) after
//! building the model and after the training steps, and the wall time of each step with its
//! forward pass, backward pass and optimizer step. With `flan` after the step count, the model
//! is FLAN-T5-small's shape instead (d_model 512, 8 + 8 layers, 6 heads, gated-gelu d_ff 1024,
//! untied head), saved as a Hugging Face checkpoint and loaded back with `from_pretrained`.
//!
//! ```sh
//! cargo run --release --example t5_train_step_memory            # 3 steps, flex (default)
//! cargo run --release --example t5_train_step_memory -- 5       # 5 steps
//! cargo run --release --example t5_train_step_memory -- 5 flan  # 5 steps of FLAN-T5-small
//! cargo run --release --example t5_train_step_memory --features ndarray
//! ```

use std::time::Instant;

use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use lora_burn::backend::TrainBackend;
use lora_burn::lora_core::{count_parameters, mark_only_lora_as_trainable, LoraBias, LoraConfig};
use lora_burn::lora_peft_io::{inject_adapter, AdapterConfig, ModuleSelector};
use lora_burn::lora_t5::{T5Config, T5ForConditionalGeneration};

const BATCH: usize = 8;
const SOURCE: usize = 64;
const TARGET: usize = 128;

/// `VmHWM` and `VmRSS` of this process in MiB (None where `/proc` is unavailable).
/// google/flan-t5-small's `config.json`, its dimensions and layout.
const FLAN_T5_SMALL: &str = r#"{"d_model": 512, "d_ff": 1024, "d_kv": 64, "num_heads": 6,
    "num_layers": 8, "num_decoder_layers": 8, "feed_forward_proj": "gated-gelu",
    "tie_word_embeddings": false, "vocab_size": 32128}"#;

fn memory_mib() -> Option<(f64, f64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| -> Option<f64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib / 1024.0)
    };
    Some((field("VmHWM:")?, field("VmRSS:")?))
}

fn report(when: &str) {
    match memory_mib() {
        Some((hwm, rss)) => println!("{when}: VmHWM {hwm:.0} MiB, VmRSS {rss:.0} MiB"),
        None => println!("{when}: /proc/self/status is not available"),
    }
}

/// Deterministic token ids in `2..30000`, as in `benches/t5.rs`.
fn ids<B: Backend>(rows: usize, cols: usize, seed: u64, device: &B::Device) -> Tensor<B, 2, Int> {
    let mut state = seed;
    let values: Vec<i64> = (0..rows * cols)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            2 + ((state >> 33) % 29998) as i64
        })
        .collect();
    Tensor::from_data(TensorData::new(values, [rows, cols]), device)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    type T = TrainBackend;
    let steps: usize = match std::env::args().nth(1) {
        Some(arg) => arg.parse()?,
        None => 3,
    };
    let device = Default::default();
    let flan = std::env::args().nth(2).is_some_and(|a| a == "flan");
    let mut model = if flan {
        // FLAN-T5-small's shape (gated-gelu, untied head), saved as a Hugging Face checkpoint
        // and loaded back, the way a user's model arrives.
        let config = T5Config::from_json_str(FLAN_T5_SMALL, "config.json".as_ref())?;
        let model = T5ForConditionalGeneration::<T>::new(&config, &device);
        let dir = std::env::temp_dir().join(format!("t5-train-step-{}", std::process::id()));
        model.save_pretrained(&dir)?;
        let model = T5ForConditionalGeneration::<T>::from_pretrained(&dir, &device)?;
        std::fs::remove_dir_all(&dir)?;
        model
    } else {
        // `T5Config`'s defaults are t5-small's dimensions; its head is tied.
        let config = T5Config {
            tie_word_embeddings: Some(true),
            ..T5Config::default()
        };
        T5ForConditionalGeneration::<T>::new(&config, &device)
    };
    let targets = ModuleSelector::Names(vec!["q".into(), "v".into()]);
    let adapter = AdapterConfig::from_lora_config(&LoraConfig::new(16, 32.0), targets)?;
    inject_adapter(&mut model, &adapter, "default")?;
    let mut model = mark_only_lora_as_trainable(model, LoraBias::None);
    println!("{}", count_parameters(&model));

    let input_ids = ids::<T>(BATCH, SOURCE, 3, &device);
    let mask = Tensor::<T, 2, Int>::ones([BATCH, SOURCE], &device);
    let labels = ids::<T>(BATCH, TARGET, 4, &device);
    // Materialise the lazily initialised parameters before the first reading (`valid` reads
    // every parameter of the model).
    let _ = burn::module::AutodiffModule::valid(&model);
    report("after building the model");

    let mut optimizer = AdamWConfig::new().init::<T, T5ForConditionalGeneration<T>>();
    for step in 1..=steps {
        let start = Instant::now();
        let loss_tensor = model.loss(input_ids.clone(), mask.clone(), labels.clone())?;
        let loss: f32 = loss_tensor.clone().into_scalar();
        let forward = start.elapsed().as_secs_f64();
        let grads = GradientsParams::from_grads(loss_tensor.backward(), &model);
        T::sync(&device)?;
        let backward = start.elapsed().as_secs_f64() - forward;
        model = optimizer.step(1e-4, model, grads);
        T::sync(&device)?;
        let total = start.elapsed().as_secs_f64();
        println!(
            "step {step}: loss {loss:.4}, {total:.3} s (forward {forward:.3} s, backward \
             {backward:.3} s, optimizer {:.3} s)",
            total - forward - backward
        );
    }
    report(&format!("after {steps} training steps"));
    Ok(())
}
