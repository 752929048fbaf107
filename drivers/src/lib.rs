//! Xen PV device drivers of pih-bridge: the PV console and netfront
//! (xenbus handshake in `netfront_xs`, rings and data path in `netfront`).
#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod console;
pub mod netfront;
pub mod netfront_xs;
pub mod netif;
pub mod ring;
