//! Running a sequence of small operations on the CPU backend's compute threads.
//!
//! Burn's CPU backends, and this crate's fast paths, split their larger operations between the
//! threads of rayon's global pool. Started from a thread outside the pool, an operation hands its
//! work to the pool and sleeps until it is done: two thread wake-ups per operation. Between two
//! operations the idle threads fall asleep, and waking one takes longer (tens of microseconds on
//! a virtual machine) than a decoding step's products of a few rows last, so their second half
//! is usually done by the thread that split them. [`on_compute_threads`] runs a sequence of
//! operations on a thread of the pool while the other threads stay awake, spinning on rayon's
//! queues, and take their share the moment it is offered. A single operation called from
//! outside the pool splits its work with `map_tasks`, where the calling thread works too instead
//! of sleeping while the pool wakes.

#[cfg(feature = "flex")]
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
#[cfg(feature = "flex")]
use std::sync::{Arc, OnceLock};

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

/// `task(i)` for every `i < count`, in index order, computed on the compute threads.
///
/// On a thread of a pool the tasks are split the usual rayon way. Called from outside the
/// pools, where rayon would hand all the work to a pool thread and sleep until it is done (two
/// wake-ups, which cost about what a one-token product does), the calling thread takes tasks
/// itself while one pool thread wakes up and takes the others as it can: each task goes to
/// whichever thread claims it first, and the results are the same whoever computes them.
#[cfg(feature = "flex")]
pub(crate) fn map_tasks<T: Send + Sync>(
    count: usize,
    task: impl Fn(usize) -> T + Sync + Send,
) -> Vec<T> {
    use rayon::prelude::*;
    if count <= 1 || rayon::current_thread_index().is_some() || rayon::current_num_threads() < 2 {
        return (0..count).into_par_iter().map(task).collect();
    }
    let slots: Vec<OnceLock<T>> = (0..count).map(|_| OnceLock::new()).collect();
    let run = |i: usize| {
        let _ = slots[i].set(task(i));
    };
    let claims = Arc::new(Claims {
        count,
        next: AtomicUsize::new(0),
        in_flight: AtomicUsize::new(0),
    });
    let run: &(dyn Fn(usize) + Sync) = &run;
    // The helper job must be `'static`, so it gets `run` as a raw pointer, which it dereferences
    // only for an index it claimed while counted in `in_flight`. `wait_for_helper` (also dropped
    // on unwinding) closes the claims and waits until `in_flight` is zero before `run` and what
    // it borrows go out of scope, so no call through the pointer outlives them; a job that runs
    // later claims nothing and never dereferences it.
    let pointer: *const (dyn Fn(usize) + Sync + '_) = run;
    // SAFETY: only the trait object's lifetime bound changes (same layout); see above for why
    // the pointer is never dereferenced after `run` is gone.
    let shared_run = TaskPointer(unsafe {
        std::mem::transmute::<
            *const (dyn Fn(usize) + Sync + '_),
            *const (dyn Fn(usize) + Sync + 'static),
        >(pointer)
    });
    let helper_claims = Arc::clone(&claims);
    let wait_for_helper = CloseClaims(&claims);
    rayon::spawn(move || {
        // The whole wrapper, not its (non-`Send`) field alone, moves into the job.
        let shared_run = shared_run;
        // SAFETY: called only for a claimed index, while `run` is alive (see above).
        helper_claims.take_tasks(&|i| unsafe { shared_run.call(i) });
    });
    claims.take_tasks(run);
    drop(wait_for_helper);
    slots
        .into_iter()
        .map(|slot| slot.into_inner().expect("every task was claimed and ran"))
        .collect()
}

/// [`map_tasks`]'s task for its helper job: a pointer that job may send to a pool thread.
#[cfg(feature = "flex")]
struct TaskPointer(*const (dyn Fn(usize) + Sync + 'static));

// SAFETY (both): the pointee is `Sync`, and `map_tasks` keeps it alive while it is called.
#[cfg(feature = "flex")]
unsafe impl Send for TaskPointer {}
#[cfg(feature = "flex")]
unsafe impl Sync for TaskPointer {}

#[cfg(feature = "flex")]
impl TaskPointer {
    /// Runs the task for `index`.
    ///
    /// # Safety
    /// The task must still be alive.
    unsafe fn call(&self, index: usize) {
        // SAFETY: passed on from the caller.
        unsafe { (*self.0)(index) }
    }
}

/// The tasks of one [`map_tasks`] call: the next unclaimed index, and the threads between
/// counting themselves in and finishing their task.
#[cfg(feature = "flex")]
struct Claims {
    count: usize,
    next: AtomicUsize,
    in_flight: AtomicUsize,
}

#[cfg(feature = "flex")]
impl Claims {
    /// Claims and runs tasks until none is left.
    fn take_tasks(&self, run: &(dyn Fn(usize) + Sync)) {
        loop {
            // Counted in before claiming, so that `CloseClaims` sees every claim it must wait for.
            self.in_flight.fetch_add(1, Ordering::SeqCst);
            let _leave = CountOut(&self.in_flight);
            let index = self.next.fetch_add(1, Ordering::SeqCst);
            if index >= self.count {
                return;
            }
            run(index);
        }
    }
}

/// Decrements its counter when dropped (also on unwinding).
#[cfg(feature = "flex")]
struct CountOut<'a>(&'a AtomicUsize);

#[cfg(feature = "flex")]
impl Drop for CountOut<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// When dropped: no task can be claimed any more, and every claimed one has finished.
#[cfg(feature = "flex")]
struct CloseClaims<'a>(&'a Claims);

#[cfg(feature = "flex")]
impl Drop for CloseClaims<'_> {
    fn drop(&mut self) {
        self.0.next.fetch_max(self.0.count, Ordering::SeqCst);
        while self.0.in_flight.load(Ordering::SeqCst) != 0 {
            std::hint::spin_loop();
        }
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use rayon::prelude::*;

    use super::{map_tasks, on_compute_threads};

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

    #[test]
    fn tasks_from_outside_the_pool_come_back_in_order_whoever_ran_them() {
        for count in [0, 1, 2, 7, 64] {
            let squares = map_tasks(count, |i| {
                // Uneven tasks, so that both threads claim some.
                std::thread::sleep(std::time::Duration::from_micros((i % 3) as u64 * 50));
                (i * i, rayon::current_thread_index().is_some())
            });
            let values: Vec<usize> = squares.iter().map(|(v, _)| *v).collect();
            assert_eq!(values, (0..count).map(|i| i * i).collect::<Vec<_>>());
        }
        let inside = on_compute_threads(|| map_tasks(5, |i| i + 1));
        assert_eq!(inside, [1, 2, 3, 4, 5]);
    }

    #[test]
    fn a_panicking_task_outside_the_pool_reaches_the_caller() {
        let caught = std::panic::catch_unwind(|| {
            map_tasks(4, |i| {
                if rayon::current_thread_index().is_none() {
                    panic!("task {i} on the calling thread");
                }
                i
            })
        });
        assert!(caught.is_err());
        assert_eq!(map_tasks(3, |i| i), [0, 1, 2]);
    }
}
