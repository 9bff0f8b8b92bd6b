//! Memory for the flow table: transparent huge pages where the kernel has them.
//!
//! A worker's flow table is megabytes of buckets read at random, one per
//! packet. On 4 KiB pages almost every lookup also misses the TLB, and the
//! page walk costs about as much as the bucket itself; on 2 MiB pages a
//! 4 MiB table is two TLB entries. Neither host gets huge pages for it
//! otherwise: dp-dpdk runs `--no-huge` here and allocates its workers from
//! the heap, VPP's plugins allocate from the heap. So the hosts allocate the
//! zeroed worker as usual and, before its first write, advise the kernel to
//! back it with transparent huge pages (`madvise(MADV_HUGEPAGE)`; Debian's
//! default `transparent_hugepage=madvise` honours exactly this). Where the
//! kernel has no THP the advice fails and nothing changes.

use zerocopy::FromZeros;

/// Huge-page size the advice is aligned to.
const HUGE: usize = 2 << 20;

/// A `T` that starts on a huge-page boundary, so that every 2 MiB of it is
/// one huge page (see [`new_box_zeroed_huge`]). Dereferences to the `T`.
///
/// Without the alignment a heap block starts anywhere in a huge page, and
/// the part of it before the first boundary (up to 2 MiB, in a worker the
/// first buckets of the flow table: a third of them for the VPP plugin's
/// 4 MiB table) stays on 4 KiB pages.
#[derive(Debug)]
#[repr(C, align(2097152))]
pub struct HugeAligned<T>(pub T);

const _: () = assert!(core::mem::align_of::<HugeAligned<u8>>() == HUGE);

impl<T> core::ops::Deref for HugeAligned<T> {
    type Target = T;
    #[inline(always)]
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> core::ops::DerefMut for HugeAligned<T> {
    #[inline(always)]
    fn deref_mut(&mut self) -> &mut T {
        &mut self.0
    }
}

/// A zeroed `T` on the heap, starting on a huge-page boundary, whose pages
/// are advised to be huge pages before they are first written (see the
/// module docs). `None` if the allocation fails. Whether the advice was taken
/// is in the second field (false: no THP here).
#[allow(unsafe_code)]
pub fn new_box_zeroed_huge<T: FromZeros>() -> Option<(Box<HugeAligned<T>>, bool)> {
    let layout = std::alloc::Layout::new::<HugeAligned<T>>();
    if layout.size() == 0 {
        return None;
    }
    // SAFETY: `layout` has a non-zero size (checked above).
    let p = unsafe { std::alloc::alloc(layout) }.cast::<HugeAligned<T>>();
    if p.is_null() {
        return None;
    }
    // The block is fresh from the allocator and nothing has written to it
    // yet (a block this large is a new mapping): advised now, its pages are
    // faulted in as huge pages by the zeroing below.
    let advised = advise_huge(p as usize, layout.size());
    // SAFETY: `p` is a live allocation of `layout`, so its first
    // `size_of::<T>()` bytes are writable; all-zero bytes are a valid `T`
    // (`FromZeros`), and `HugeAligned<T>` is `repr(C)` around the `T` (its
    // trailing padding need not be initialised). The `Box` frees it with the
    // same layout, `Layout::new::<HugeAligned<T>>()`.
    let b = unsafe {
        p.cast::<u8>().write_bytes(0, core::mem::size_of::<T>());
        Box::from_raw(p)
    };
    Some((b, advised))
}

/// `madvise(MADV_HUGEPAGE)` over the whole 2 MiB pages inside
/// `[start, start + len)`; true when there was such a page and the kernel
/// accepted the advice.
fn advise_huge(start: usize, len: usize) -> bool {
    let Some(end) = start.checked_add(len) else {
        return false;
    };
    let first = start.div_ceil(HUGE) * HUGE;
    let last = end / HUGE * HUGE;
    if last <= first {
        return false;
    }
    #[allow(unsafe_code)]
    // SAFETY: `[first, last)` lies inside one live allocation the caller owns
    // (a `Box<T>` just created, `first >= start`, `last <= start + len`), and
    // MADV_HUGEPAGE only changes how the kernel backs its pages, never their
    // contents or the mapping's validity.
    let r = unsafe {
        rustix::mm::madvise(
            first as *mut core::ffi::c_void,
            last - first,
            rustix::mm::Advice::LinuxHugepage,
        )
    };
    r.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_advice_covers_only_whole_huge_pages_inside() {
        assert!(!advise_huge(HUGE + 1, HUGE), "no whole huge page inside");
        assert!(!advise_huge(usize::MAX - 10, 100), "overflow refused");
    }

    #[test]
    fn a_large_value_is_zeroed_and_usable_whatever_the_advice() {
        let (mut b, _advised) = new_box_zeroed_huge::<[u64; 1 << 20]>().expect("8 MiB");
        assert_eq!(
            (&*b as *const HugeAligned<_> as usize) % HUGE,
            0,
            "on a huge-page boundary"
        );
        assert!(b.iter().all(|&x| x == 0));
        b[12345] = 7;
        assert_eq!(b.iter().sum::<u64>(), 7);
    }
}
