//! Xen platform services for a PVH guest.
//!
//! The protocol logic (xenstore wire format, ring bookkeeping) is plain Rust
//! that runs in host tests; everything that executes a hypercall or touches
//! guest-physical memory handed out by Xen is compiled only for the kernel
//! target (`target_os = "none"`).
#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod grant_table;
pub mod log;
pub mod start_info;
pub mod xenstore;

#[cfg(target_os = "none")]
pub mod arch;
#[cfg(target_os = "none")]
pub mod clock;
#[cfg(target_os = "none")]
pub mod events;
#[cfg(target_os = "none")]
pub mod hvm;
#[cfg(target_os = "none")]
pub mod hypercall;
#[cfg(target_os = "none")]
pub mod sched;
#[cfg(target_os = "none")]
pub mod shared_info;
