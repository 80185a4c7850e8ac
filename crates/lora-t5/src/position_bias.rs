//! T5's relative position buckets.

/// The bucket of a relative position (`key position − query position`), as transformers'
/// `T5Attention._relative_position_bucket` computes it (in f32, like PyTorch).
///
/// Bidirectional (encoder): half the buckets for each sign. Causal (decoder): only past
/// positions, future ones fall in bucket 0. Distances below `num_buckets / 2` (per half) get
/// one bucket each; larger ones share logarithmically wider buckets up to `max_distance`.
///
/// ```
/// use lora_t5::relative_position_bucket;
///
/// assert_eq!(relative_position_bucket(0, true, 32, 128), 0);
/// assert_eq!(relative_position_bucket(3, true, 32, 128), 19);
/// assert_eq!(relative_position_bucket(-3, false, 32, 128), 3);
/// assert_eq!(relative_position_bucket(3, false, 32, 128), 0);
/// assert_eq!(relative_position_bucket(-1000, false, 32, 128), 31);
/// ```
pub fn relative_position_bucket(
    relative_position: i64,
    bidirectional: bool,
    num_buckets: usize,
    max_distance: usize,
) -> usize {
    let mut buckets = num_buckets as i64;
    let mut bucket = 0i64;
    let distance = if bidirectional {
        buckets /= 2;
        if relative_position > 0 {
            bucket += buckets;
        }
        relative_position.abs()
    } else {
        -relative_position.min(0)
    };
    let max_exact = buckets / 2;
    if distance < max_exact {
        bucket += distance;
    } else {
        let ratio = (distance as f32 / max_exact as f32).ln();
        let range = (max_distance as f64 / max_exact as f64).ln() as f32;
        let large = max_exact + (ratio / range * (buckets - max_exact) as f32) as i64;
        bucket += large.min(buckets - 1);
    }
    bucket as usize
}

/// The buckets of a `[query_len, key_len]` grid with queries starting at `query_offset`, in
/// row-major order.
pub(crate) fn bucket_grid(
    query_len: usize,
    key_len: usize,
    query_offset: usize,
    bidirectional: bool,
    num_buckets: usize,
    max_distance: usize,
) -> Vec<i64> {
    let mut grid = Vec::with_capacity(query_len * key_len);
    for q in 0..query_len {
        for k in 0..key_len {
            let relative = k as i64 - (q + query_offset) as i64;
            grid.push(
                relative_position_bucket(relative, bidirectional, num_buckets, max_distance) as i64,
            );
        }
    }
    grid
}
