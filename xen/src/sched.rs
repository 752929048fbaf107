//! Leaving the domain (sched.h: SCHEDOP_shutdown).

use crate::hypercall;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ShutdownReason {
    Poweroff = 0,
    Reboot = 1,
    Crash = 3,
}

/// Asks Xen to shut the domain down; does not return.
pub fn shutdown(reason: ShutdownReason) -> ! {
    let mut r = reason as u32;
    loop {
        // SAFETY: SCHEDOP_shutdown takes struct sched_shutdown { reason }.
        let _ = unsafe { hypercall::sched_op(2, &mut r) };
        // Only reached if Xen refused; crash is always accepted.
        r = ShutdownReason::Crash as u32;
    }
}
