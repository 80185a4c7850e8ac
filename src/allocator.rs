//! The global allocator of the `mimalloc` feature.
//!
//! Tensors are large and short-lived: an allocator that hands freed pages back to the kernel
//! gets them back zeroed, one page fault at a time, on the next tensor of the same size. mimalloc
//! reuses freed memory, and with its purge delay set to "never" it also keeps what it has freed
//! instead of decommitting it after 10 ms. The process's resident memory then stays at its peak,
//! as with PyTorch's caching allocators.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicBool, Ordering};

use mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc's `mi_option_t` (`mimalloc.h`: after
/// `mi_option_deprecated_eager_commit_delay` = 14, before `mi_option_use_numa_nodes` = 16).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

static CONFIGURED: AtomicBool = AtomicBool::new(false);

/// mimalloc with purging off: freed memory stays mapped for the next allocation.
pub(crate) struct RetainingMiMalloc;

impl RetainingMiMalloc {
    /// Sets the purge delay once, before the first allocation it serves (mimalloc reads its
    /// options when it first purges, so setting one then is in time).
    #[inline]
    fn configure() {
        if !CONFIGURED.load(Ordering::Relaxed) && !CONFIGURED.swap(true, Ordering::AcqRel) {
            // SAFETY: `mi_option_set` stores a number in mimalloc's option table; it does not
            // allocate, so it cannot re-enter this allocator.
            unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
        }
    }
}

// SAFETY: every call is forwarded unchanged to `MiMalloc`, which upholds `GlobalAlloc`'s
// contract; `configure` only sets an option.
unsafe impl GlobalAlloc for RetainingMiMalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::configure();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { MiMalloc.alloc(layout) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Self::configure();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { MiMalloc.alloc_zeroed(layout) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { MiMalloc.dealloc(ptr, layout) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { MiMalloc.realloc(ptr, layout, new_size) }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_purge_delay_is_off_once_something_was_allocated() {
        let _ = vec![0u8; 1 << 20];
        // SAFETY: reads mimalloc's option table.
        let delay = unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY) };
        assert_eq!(delay, -1);
    }
}
