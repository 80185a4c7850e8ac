//! The order in which an epoch visits the training examples.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;

/// The example order of `epoch` for a run seeded with `seed`: a Fisher–Yates shuffle
/// ([`SliceRandom::shuffle`]) driven by xoshiro256++ seeded from `seed` and `epoch`, so a
/// resumed run recomputes exactly the order the interrupted one used.
///
/// ```
/// let order = lora_train::epoch_order(5, 42, 0);
/// let mut sorted = order.clone();
/// sorted.sort();
/// assert_eq!(sorted, [0, 1, 2, 3, 4]);
/// assert_eq!(lora_train::epoch_order(5, 42, 0), order);
/// assert_ne!(lora_train::epoch_order(50, 42, 1), lora_train::epoch_order(50, 42, 0));
/// ```
pub fn epoch_order(count: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..count).collect();
    let stream = seed ^ (epoch as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(stream);
    order.shuffle(&mut rng);
    order
}
