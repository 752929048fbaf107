//! Frame parsing, ARP, the bridge's own presence on a vif, and (next) IPv4
//! forwarding and the translation table.
//!
//! The crate follows smoltcp's split between *wire* and *policy*:
//!
//! - [`wire`]: zero-copy typed views over byte buffers (`EthernetFrame`,
//!   `ArpPacket`, `Ipv4Packet`, `IcmpPacket`). `new_checked` validates a
//!   buffer once; getters and setters then read and write fields in place.
//! - [`checksum`]: the Internet checksum (RFC 1071) and its incremental
//!   update (RFC 1624), for verification and for NAT rewriting.
//! - [`neighbor`]: the fixed-capacity IPv4 -> MAC cache with ARP request rate
//!   limiting, and the bounded queue of frames waiting for resolution.
//! - [`host`]: [`host::Interface`], the bridge's own address on one vif:
//!   answers ARP and ping, resolves next hops for the frames it sends, and
//!   classifies every other frame ([`host::Disposition`]) for the forwarding
//!   path.
//!
//! Everything is `no_std`, allocation-free (fixed arrays and `heapless`),
//! free of `unsafe`, and never panics on any input: non-test builds deny
//! indexing, unchecked arithmetic, `unwrap` and friends (the clippy lints
//! below), and `nat/fuzz` feeds arbitrary frames to the whole receive path.
//! Time is a `u64` count of nanoseconds supplied by the caller (any monotonic
//! clock; only differences matter).
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::unreachable,
        clippy::todo,
        clippy::unimplemented,
        clippy::arithmetic_side_effects
    )
)]

extern crate alloc;

pub mod checksum;
pub mod fragment;
pub mod icmp_reply;
pub mod host;
pub mod neighbor;
pub mod table;
pub mod translate;
pub mod wire;

#[cfg(test)]
mod testutil;

pub use host::{
    Counters, Disposition, DropReason, Interface, Ipv4Cidr, NextHop, SendStatus, Transmit, TxFn,
};
pub use neighbor::{NeighborCache, PendingQueue};
pub use wire::{
    ArpOperation, ArpPacket, ArpRepr, EtherType, EthernetAddress, EthernetFrame, IcmpPacket,
    IcmpType, IpProtocol, Ipv4Packet, WireError,
};

/// Nanoseconds per second, for the time constants of this crate.
pub const NS_PER_SEC: u64 = 1_000_000_000;
