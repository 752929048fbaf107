//! Management-plane logic of pih-bridge, independent of Xen: configuration
//! parsing today; the management API and persistence later.
#![cfg_attr(not(test), no_std)]

pub mod config;
