//! A monotonic clock from Xen's pvclock (xen.h: struct vcpu_time_info).

use core::sync::atomic::{AtomicU64, Ordering};

use crate::arch::rdtsc;
use crate::shared_info;

static BOOT_SYSTEM_TIME: AtomicU64 = AtomicU64::new(0);
static LAST: AtomicU64 = AtomicU64::new(0);

/// Scales a TSC delta to nanoseconds as xen.h prescribes:
/// `((delta << shift) or (delta >> -shift)) * mul >> 32`.
pub fn scale_delta(delta: u64, mul: u32, shift: i8) -> u64 {
    let d = if shift >= 0 { delta << shift } else { delta >> (-shift) };
    ((u128::from(d) * u128::from(mul)) >> 32) as u64
}

/// Xen system time (ns since the host booted): the time base of
/// SCHEDOP_poll timeouts and timers. Never goes backwards.
pub fn system_time_ns() -> u64 {
    let r = shared_info::time_record();
    let now = r.system_time + scale_delta(rdtsc().wrapping_sub(r.tsc_timestamp), r.tsc_to_system_mul, r.tsc_shift);
    let prev = LAST.fetch_max(now, Ordering::AcqRel);
    now.max(prev)
}

/// Call once the shared info is mapped.
pub fn init() {
    BOOT_SYSTEM_TIME.store(system_time_ns(), Ordering::Relaxed);
}

/// Nanoseconds since [`init`].
pub fn uptime_ns() -> u64 {
    system_time_ns().saturating_sub(BOOT_SYSTEM_TIME.load(Ordering::Relaxed))
}
