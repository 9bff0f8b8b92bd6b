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

/// A zeroed `T` on the heap whose whole 2 MiB pages are advised to be huge
/// pages (see the module docs); call it before anything writes to the value,
/// as the advice only affects pages not yet faulted in. `None` if the
/// allocation fails. Whether the advice was taken is in the second field
/// (false: no THP here, or `T` spans no whole huge page).
pub fn new_box_zeroed_huge<T: FromZeros>() -> Option<(Box<T>, bool)> {
    let b = T::new_box_zeroed().ok()?;
    let advised = advise_huge(
        (&*b as *const T).cast::<u8>() as usize,
        core::mem::size_of::<T>(),
    );
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
        assert!(b.iter().all(|&x| x == 0));
        b[12345] = 7;
        assert_eq!(b.iter().sum::<u64>(), 7);
    }
}
