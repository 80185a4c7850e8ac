//! Running a sequence of small operations on the CPU backend's compute threads.
//!
//! Burn's CPU backends, and this crate's fast paths, split their larger operations between the
//! threads of rayon's global pool. Started from a thread outside the pool, an operation hands its
//! work to the pool and sleeps until it is done: two thread wake-ups per operation. Between two
//! operations the idle threads fall asleep, and waking one takes longer (tens of microseconds on
//! a virtual machine) than a decoding step's products of a few rows last, so their second half
//! is usually done by the thread that split them. [`on_compute_threads`] runs a sequence of
//! operations on a thread of the pool while the other threads stay awake, spinning on rayon's
//! queues, and take their share the moment it is offered.

#[cfg(feature = "flex")]
use std::sync::atomic::{AtomicBool, Ordering};

/// Runs `work` on a thread of the CPU backend's compute pool (rayon's global pool, which the
/// flex and ndarray backends use), with the pool's other threads kept awake to take a share of
/// every operation it splits; returns its result. Directly when already on one of the pool's
/// threads, or without the crate feature `flex`. The result is the same either way.
///
/// Meant for sequences of small operations such as a decoding step: while `work` runs, the other
/// threads spin instead of sleeping, so they occupy their cores.
///
/// ```
/// let sum = lora_core::on_compute_threads(|| (1..=4).sum::<u32>());
/// assert_eq!(sum, 10);
/// ```
pub fn on_compute_threads<R: Send>(work: impl FnOnce() -> R + Send) -> R {
    #[cfg(feature = "flex")]
    if rayon::current_thread_index().is_none() {
        let done = AtomicBool::new(false);
        return rayon::scope(|scope| {
            for _ in 1..rayon::current_num_threads() {
                scope.spawn(|_| help_until(&done));
            }
            // Set when `work` returns or unwinds, so that a panic reaches the caller instead of
            // leaving the helpers spinning.
            let _release = SetOnDrop(&done);
            work()
        });
    }
    work()
}

/// Sets its flag when dropped.
#[cfg(feature = "flex")]
struct SetOnDrop<'a>(&'a AtomicBool);

#[cfg(feature = "flex")]
impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Runs the pool's pending work until `done`.
#[cfg(feature = "flex")]
fn help_until(done: &AtomicBool) {
    while !done.load(Ordering::Acquire) {
        if rayon::yield_now() != Some(rayon::Yield::Executed) {
            std::hint::spin_loop();
        }
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use rayon::prelude::*;

    use super::on_compute_threads;

    #[test]
    fn work_runs_on_the_pool_and_splits_as_it_would_outside() {
        let outside: Vec<u64> = (0..10_000u64).into_par_iter().map(|i| i * i).collect();
        let (inside, on_pool) = on_compute_threads(|| {
            let inside: Vec<u64> = (0..10_000u64).into_par_iter().map(|i| i * i).collect();
            (inside, rayon::current_thread_index().is_some())
        });
        assert_eq!(inside, outside);
        assert!(on_pool);
    }

    #[test]
    fn a_panic_in_the_work_reaches_the_caller() {
        let caught = std::panic::catch_unwind(|| on_compute_threads(|| panic!("inside")));
        assert!(caught.is_err());
        // The pool is still usable afterwards.
        assert_eq!(on_compute_threads(|| 2 + 2), 4);
    }

    #[test]
    fn nested_calls_run_directly() {
        let value = on_compute_threads(|| {
            let index = rayon::current_thread_index();
            on_compute_threads(|| rayon::current_thread_index() == index)
        });
        assert!(value);
    }

    #[test]
    fn a_pool_of_one_thread_does_not_wait_on_itself() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .expect("a pool");
        // Outside the global pool, from a thread of another one: the work runs directly.
        let sum = pool.install(|| on_compute_threads(|| (0..100u32).into_par_iter().sum::<u32>()));
        assert_eq!(sum, 4950);
    }
}
