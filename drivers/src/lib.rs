//! Xen PV device drivers of pih-bridge: the console now, netfront next.
#![cfg_attr(not(test), no_std)]

pub mod console;
pub mod netfront;
pub mod netif;
pub mod ring;
