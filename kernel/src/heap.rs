//! The kernel heap: linked_list_allocator over free RAM from the memory map.

use linked_list_allocator::LockedHeap;
use pih_xen::start_info::Region;

#[global_allocator]
static HEAP: LockedHeap = LockedHeap::empty();

/// Gives the allocator the largest stretch of RAM above the kernel image
/// (Xen's start info and command line also sit there: copy them first).
/// Returns the region used.
pub fn init(ram: &[Region], kernel_end: u64) -> Option<Region> {
    let start_floor = (kernel_end + 4095) & !4095;
    let best = ram
        .iter()
        .filter(|r| r.end > start_floor)
        .map(|r| Region { start: r.start.max(start_floor), end: r.end & !4095 })
        .filter(|r| r.end > r.start)
        .max_by_key(|r| r.len())?;
    // SAFETY: the region is RAM from the memory map, identity mapped, above
    // the kernel image and unused: the only earlier users (start info,
    // command line, memory map) have been copied out by now.
    unsafe { HEAP.lock().init(best.start as *mut u8, best.len() as usize) };
    Some(best)
}

pub fn stats() -> (usize, usize) {
    let h = HEAP.lock();
    (h.used(), h.size())
}
