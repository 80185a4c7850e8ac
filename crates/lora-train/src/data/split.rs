//! A deterministic train/validation split.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::TrainError;

/// Splits `items` into `(train, validation)`: `round(len × valid_ratio)` items, chosen by a
/// shuffle ([`SliceRandom::shuffle`] on xoshiro256++) seeded with `seed`, go to validation. Both parts keep the input order, and
/// the same items, ratio and seed always give the same split.
///
/// ```
/// use lora_train::data::train_valid_split;
///
/// let (train, valid) = train_valid_split((0..10).collect(), 0.2, 7).unwrap();
/// assert_eq!((train.len(), valid.len()), (8, 2));
/// assert_eq!(train_valid_split((0..10).collect(), 0.2, 7).unwrap().1, valid);
/// assert!(train_valid_split(vec![1], 1.5, 7).is_err());
/// ```
///
/// # Errors
/// [`TrainError::InvalidDataConfig`] for a `valid_ratio` outside `[0, 1]`.
pub fn train_valid_split<T>(
    items: Vec<T>,
    valid_ratio: f64,
    seed: u64,
) -> Result<(Vec<T>, Vec<T>), TrainError> {
    if !(0.0..=1.0).contains(&valid_ratio) {
        return Err(TrainError::InvalidDataConfig {
            reason: format!("validation ratio must be in [0, 1], found {valid_ratio}"),
        });
    }
    let valid_count = ((items.len() as f64) * valid_ratio).round() as usize;
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.shuffle(&mut Xoshiro256PlusPlus::seed_from_u64(seed));
    let mut is_valid = vec![false; items.len()];
    for &i in order.iter().take(valid_count) {
        is_valid[i] = true;
    }
    let mut train = Vec::with_capacity(items.len() - valid_count);
    let mut valid = Vec::with_capacity(valid_count);
    for (item, to_valid) in items.into_iter().zip(is_valid) {
        if to_valid {
            valid.push(item);
        } else {
            train.push(item);
        }
    }
    Ok((train, valid))
}
