//! Management-plane logic of pih-bridge, independent of Xen: configuration
//! parsing, the management API (HTTP, authentication, rules, JSON) and the
//! persistence of the rules in Irmin.
#![cfg_attr(not(test), no_std)]

// The Irmin persistence logic uses the heap (the kernel has a global
// allocator); everything else here works on fixed buffers.
extern crate alloc;

pub mod api;
pub mod auth;
pub mod config;
pub mod http;
pub mod irmin;
pub mod json;
pub mod rules;
#[cfg(test)]
mod test_util;
