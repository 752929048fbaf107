//! The shared info page (xen/include/public/xen.h: struct shared_info):
//! vcpu time records and the 2-level event channel bitmaps.

use core::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

use crate::hvm;
use crate::hypercall::XenError;

#[repr(C, align(4096))]
struct Page([u8; 4096]);

/// The frame Xen's shared info replaces. Ours, in .bss, identity mapped.
static mut SHARED_INFO_FRAME: Page = Page([0; 4096]);
static SHARED: AtomicPtr<u8> = AtomicPtr::new(core::ptr::null_mut());

// Offsets in struct shared_info for x86_64: 32 vcpu_info of 64 bytes, then
// evtchn_pending[64] and evtchn_mask[64] of unsigned long.
const VCPU_INFO_SIZE: usize = 64;
const VCPU_TIME_OFFSET: usize = 32;
const EVTCHN_PENDING_OFFSET: usize = 32 * VCPU_INFO_SIZE;
const EVTCHN_MASK_OFFSET: usize = EVTCHN_PENDING_OFFSET + 64 * 8;
/// 2-level ABI: 64 words of 64 bits.
pub const MAX_PORTS: u32 = 64 * 64;

/// Asks Xen to put the shared info page over our reserved frame.
pub fn map() -> Result<(), XenError> {
    let frame = core::ptr::addr_of_mut!(SHARED_INFO_FRAME) as *mut u8;
    // SAFETY: the frame is a page-aligned static that nothing else uses.
    unsafe { hvm::add_to_physmap(hvm::MAPSPACE_SHARED_INFO, 0, frame as u64 >> 12)? };
    SHARED.store(frame, Ordering::Release);
    Ok(())
}

fn base() -> *mut u8 {
    let p = SHARED.load(Ordering::Acquire);
    assert!(!p.is_null(), "shared info used before it was mapped");
    p
}

/// A consistent snapshot of vcpu 0's `struct vcpu_time_info`.
#[derive(Clone, Copy, Debug, Default)]
pub struct TimeRecord {
    pub tsc_timestamp: u64,
    pub system_time: u64,
    pub tsc_to_system_mul: u32,
    pub tsc_shift: i8,
}

pub fn time_record() -> TimeRecord {
    // SAFETY: the page is mapped (base() checks) and vcpu_time_info sits at
    // this offset; Xen updates it concurrently, hence the version protocol.
    unsafe {
        let t = base().add(VCPU_TIME_OFFSET);
        loop {
            let version = core::ptr::read_volatile(t as *const u32);
            core::sync::atomic::fence(Ordering::Acquire);
            let rec = TimeRecord {
                tsc_timestamp: core::ptr::read_volatile(t.add(8) as *const u64),
                system_time: core::ptr::read_volatile(t.add(16) as *const u64),
                tsc_to_system_mul: core::ptr::read_volatile(t.add(24) as *const u32),
                tsc_shift: core::ptr::read_volatile(t.add(28) as *const i8),
            };
            core::sync::atomic::fence(Ordering::Acquire);
            // An odd version means Xen is in the middle of an update.
            if version & 1 == 0 && core::ptr::read_volatile(t as *const u32) == version {
                return rec;
            }
        }
    }
}

const WC_VERSION_OFFSET: usize = EVTCHN_MASK_OFFSET + 64 * 8;

/// Seconds of the Unix wall clock at Xen system time 0 (xen.h: wc_sec;
/// the toolstack sets it from dom0's clock). Add system time to get now.
pub fn wallclock_base_s() -> u64 {
    // SAFETY: wc_version, wc_sec, wc_nsec are u32 fields at these offsets
    // of the mapped page; the version protocol guards concurrent updates.
    unsafe {
        let w = base().add(WC_VERSION_OFFSET);
        loop {
            let v = core::ptr::read_volatile(w as *const u32);
            core::sync::atomic::fence(Ordering::Acquire);
            let sec = core::ptr::read_volatile(w.add(4) as *const u32);
            core::sync::atomic::fence(Ordering::Acquire);
            if v & 1 == 0 && core::ptr::read_volatile(w as *const u32) == v {
                return u64::from(sec);
            }
        }
    }
}

fn bitmap_word(offset: usize, port: u32) -> &'static AtomicU64 {
    assert!(port < MAX_PORTS);
    // SAFETY: the word lies inside the mapped shared info page and is only
    // accessed atomically by us and by Xen.
    unsafe { &*(base().add(offset + (port as usize / 64) * 8) as *const AtomicU64) }
}

/// Clears the pending bit of `port`; true if it was set.
pub fn take_pending(port: u32) -> bool {
    let bit = 1u64 << (port % 64);
    bitmap_word(EVTCHN_PENDING_OFFSET, port).fetch_and(!bit, Ordering::AcqRel) & bit != 0
}

pub fn is_pending(port: u32) -> bool {
    bitmap_word(EVTCHN_PENDING_OFFSET, port).load(Ordering::Acquire) & (1u64 << (port % 64)) != 0
}

/// Masks `port`: it can still wake SCHEDOP_poll, but never raises an upcall.
pub fn mask(port: u32) {
    bitmap_word(EVTCHN_MASK_OFFSET, port).fetch_or(1u64 << (port % 64), Ordering::AcqRel);
}
