//! Memory advice for the dataplane's large tables.
#![allow(unsafe_code)] // madvise(2); the block says why it is sound.

use std::io;

/// Asks the kernel to back the page-aligned parts of each `(address, length)` range with
/// transparent huge pages (`madvise(MADV_HUGEPAGE)`). At millions of flows the NAT engine's
/// tables span hundreds of megabytes; with 4 KiB pages nearly every lookup also misses the TLB.
///
/// Call it on ranges from `egw_engine::Engine::memory_regions` right after creating the engine,
/// before the tables fill: pages already faulted in stay small until khugepaged collapses them.
/// It only advises: contents are untouched, and a kernel without THP support returns an error
/// the caller may log and ignore.
pub fn advise_huge_pages(regions: &[(usize, usize)]) -> io::Result<()> {
    const HUGE_PAGE: usize = 2 << 20;
    for &(address, length) in regions {
        // Only whole huge pages inside the range: advice never reaches memory the caller does not
        // own, and smaller ranges gain nothing.
        let start = address.next_multiple_of(HUGE_PAGE);
        let end = (address + length) / HUGE_PAGE * HUGE_PAGE;
        if end <= start {
            continue;
        }
        // SAFETY: MADV_HUGEPAGE is advisory: it changes neither the mapping's contents nor its
        // permissions, so calling it on any range, even one this process does not own, cannot
        // break memory safety. The range is page aligned as madvise(2) requires.
        let rc =
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advises_a_large_allocation_and_skips_small_ones() {
        let big = vec![0u64; 1 << 20]; // 8 MiB: holds at least two whole huge pages
        let small = [0u8; 64];
        let regions = [
            (big.as_ptr() as usize, big.len() * 8),
            (small.as_ptr() as usize, small.len()),
        ];
        match advise_huge_pages(&regions) {
            Ok(()) => {}
            // A kernel built without THP refuses the advice; that is not a failure of ours.
            Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "{e}"),
        }
    }
}
