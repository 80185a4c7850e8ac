//! The backend of this build: its products use every core (on a machine with more than one
//! core, the CPU time of a large product and of a `LoraLinear` forward must not all be spent on
//! the calling thread; Linux only, it reads `/proc/self/task/*/stat`), and the same forward
//! pass gives bit-identical logits every time.

use burn::tensor::{Distribution, Int, Tensor, TensorData};
use lora_burn::backend::{Backend, BackendInfo, InferenceBackend};
use lora_burn::lora_core::{LoraConfig, LoraInit, LoraLinear};
use lora_burn::lora_t5::{Seq2SeqInput, T5ForConditionalGeneration};

type B = InferenceBackend;

/// CPU time (user + system, in clock ticks) of every thread of this process, by thread id.
#[cfg(target_os = "linux")]
fn thread_cpu_ticks() -> Vec<(u64, u64)> {
    let mut ticks = Vec::new();
    for entry in std::fs::read_dir("/proc/self/task").expect("/proc/self/task") {
        let entry = entry.expect("task entry");
        let Ok(tid) = entry.file_name().to_string_lossy().parse::<u64>() else {
            continue;
        };
        // A thread that ended between the listing and the read has no stat file any more.
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
        let after_name = &stat[stat.rfind(')').expect("stat has a command name") + 2..];
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        let utime: u64 = fields[11].parse().expect("utime");
        let stime: u64 = fields[12].parse().expect("stime");
        ticks.push((tid, utime + stime));
    }
    ticks
}

#[cfg(target_os = "linux")]
fn current_thread_id() -> u64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("/proc/thread-self/stat");
    stat.split_whitespace()
        .next()
        .and_then(|tid| tid.parse().ok())
        .expect("thread id")
}

/// Runs `work` and returns (CPU ticks of the calling thread, CPU ticks of all other threads).
#[cfg(target_os = "linux")]
fn split_cpu_time(work: impl FnOnce()) -> (u64, u64) {
    let me = current_thread_id();
    let before = thread_cpu_ticks();
    work();
    let after = thread_cpu_ticks();
    let (mut mine, mut others) = (0, 0);
    for (tid, ticks) in after {
        let start = before
            .iter()
            .find(|(id, _)| *id == tid)
            .map_or(0, |(_, t)| *t);
        let spent = ticks.saturating_sub(start);
        if tid == me {
            mine += spent;
        } else {
            others += spent;
        }
    }
    (mine, others)
}

/// Runs `product` once to start the thread pools, then 24 times, and fails when all that CPU
/// time was spent on the calling thread. Passes trivially on a one-core machine.
#[cfg(target_os = "linux")]
fn assert_spread_over_threads(what: &str, product: impl Fn() -> Tensor<B, 2>) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cores < 2 {
        eprintln!("one core: nothing to check");
        return;
    }
    let info = BackendInfo::current();
    assert!(info.threads >= 2, "{info} on {cores} cores");
    let _ = product().into_data();
    let (mine, others) = split_cpu_time(|| {
        for _ in 0..24 {
            let _ = product().into_data();
        }
        B::sync(&Default::default()).expect("sync");
    });
    let total = mine + others;
    assert!(
        total >= 20,
        "{what}: too little CPU time measured ({total} ticks)"
    );
    assert!(
        others * 4 >= total,
        "{what} ran single-threaded on {info} ({cores} cores): {mine} ticks on the calling \
         thread, {others} on the others"
    );
}

#[test]
#[cfg(target_os = "linux")]
fn large_products_use_more_than_one_thread() {
    let device = Default::default();
    let a = Tensor::<B, 2>::random([1024, 1024], Distribution::Default, &device);
    let b = Tensor::<B, 2>::random([1024, 1024], Distribution::Default, &device);
    assert_spread_over_threads("a 1024×1024×1024 matmul", || a.clone().matmul(b.clone()));
}

#[test]
#[cfg(target_os = "linux")]
fn lora_linear_forward_uses_more_than_one_thread() {
    let device = Default::default();
    let base = burn::nn::LinearConfig::new(1024, 1024).init::<B>(&device);
    let config = LoraConfig::new(16, 32.0).with_init_lora_weights(LoraInit::Random);
    let layer = LoraLinear::from_linear(base, &config).expect("valid config");
    let x = Tensor::<B, 2>::random([1024, 1024], Distribution::Default, &device);
    assert_spread_over_threads(
        "a LoraLinear forward (1024 tokens, 1024×1024, r 16)",
        || layer.forward(x.clone()),
    );
}

/// Eight padded rows of token ids in `1..vocab` (a fixed pattern) and their attention mask.
fn padded_batch(vocab: usize, length: usize) -> (Tensor<B, 2, Int>, Tensor<B, 2, Int>) {
    let device = Default::default();
    let mut ids = Vec::new();
    let mut mask = Vec::new();
    for row in 0..8 {
        let len = length - 3 * row;
        for col in 0..length {
            let real = col < len;
            ids.push(if real {
                (1 + (row * 131 + col * 17) % (vocab - 1)) as i64
            } else {
                0
            });
            mask.push(real as i64);
        }
    }
    (
        Tensor::from_data(TensorData::new(ids, [8, length]), &device),
        Tensor::from_data(TensorData::new(mask, [8, length]), &device),
    )
}

#[test]
fn the_same_forward_pass_gives_identical_logits() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/uidsl-t5-small");
    let device = Default::default();
    let model = T5ForConditionalGeneration::<B>::from_pretrained(&dir, &device).expect("model");
    let vocab = model.config.vocab_size;
    let (ids, mask) = padded_batch(vocab, 40);
    let (decoder, _) = padded_batch(vocab, 30);
    let run = |model: &T5ForConditionalGeneration<B>| {
        model
            .forward(Seq2SeqInput::new(ids.clone(), decoder.clone()).attention_mask(mask.clone()))
            .logits
            .into_data()
            .to_vec::<f32>()
            .expect("f32 logits")
    };
    let first = run(&model);
    let copy = model.clone();
    for attempt in 1..=3 {
        let again = run(if attempt % 2 == 0 { &copy } else { &model });
        let differing = first.iter().zip(&again).filter(|(a, b)| a != b).count();
        assert_eq!(
            differing,
            0,
            "run {attempt}: {differing} of {} logits differ on {}",
            first.len(),
            BackendInfo::current()
        );
    }
}
