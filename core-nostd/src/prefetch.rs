//! Cache prefetch hints, the one place in the core that needs `unsafe`.
//!
//! A prefetch never faults and never changes memory, whatever the address; it is a
//! hint the CPU may ignore. On targets without a prefetch instruction the functions
//! do nothing.
#![allow(unsafe_code)]

/// Hints that the cache line at `p` will be read soon.
#[inline(always)]
pub fn read<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `_mm_prefetch` is an SSE instruction (baseline on x86_64) that only
    // hints the cache; it does not dereference `p` in the language sense, cannot
    // fault on any address (null and unmapped included) and has no side effect on
    // memory, so any pointer value is sound.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}
