//! Zero-copy typed views over packet buffers.
//!
//! Each view wraps any `T: AsRef<[u8]>` (a `&[u8]`, a `&mut [u8]`, an
//! array...). `new_checked` validates the buffer once and returns
//! [`WireError`] when it cannot be read as that packet; `new_unchecked`
//! wraps without checking (for buffers being built). Getters read fields in
//! place; setters, available when `T: AsMut<[u8]>`, write them in place.
//!
//! Accessors never panic, even on a buffer that did not pass `new_checked`:
//! a field beyond the end of the buffer reads as zero (or an empty slice)
//! and writing it does nothing. Only a checked view gives meaningful values.
//!
//! Checksums are verified and filled by explicit methods
//! (`verify_checksum`, `fill_checksum`), never implicitly, so that a
//! forwarding path can choose what it pays for.

use core::fmt;

mod arp;
mod ethernet;
mod icmp;
mod icmp_error;
mod ipv4;
mod tcp;
mod udp;

pub use arp::{ArpOperation, ArpPacket, ArpRepr};
pub use ethernet::{EtherType, EthernetAddress, EthernetFrame};
pub use icmp::{IcmpPacket, IcmpType};
pub use icmp_error::{IcmpErrorPacket, QUOTED_TRANSPORT_MIN};
pub use ipv4::{IpProtocol, Ipv4Packet};
pub use tcp::TcpPacket;
pub use udp::UdpPacket;

/// Why a buffer cannot be read as a given packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WireError {
    /// The buffer is shorter than the headers (or lengths) it announces.
    Truncated,
    /// A field holds a value the protocol forbids (bad version, IHL below
    /// five, total length shorter than the header, a malformed address...).
    Malformed,
    /// A well-formed packet of a kind this crate does not handle (an ARP
    /// packet for another hardware or protocol type, ...).
    Unsupported,
    /// A checksum does not verify.
    BadChecksum,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WireError::Truncated => "truncated packet",
            WireError::Malformed => "malformed packet",
            WireError::Unsupported => "unsupported packet",
            WireError::BadChecksum => "bad checksum",
        })
    }
}

impl core::error::Error for WireError {}

/// Byte ranges of header fields.
pub(crate) mod field {
    pub type Field = core::ops::Range<usize>;
    pub type Rest = core::ops::RangeFrom<usize>;
}

/// `N` bytes at `at`, or zeros when the buffer is too short.
#[inline]
pub(crate) fn read<const N: usize>(buf: &[u8], at: usize) -> [u8; N] {
    buf.get(at..)
        .and_then(|b| b.get(..N))
        .and_then(|b| <[u8; N]>::try_from(b).ok())
        .unwrap_or([0; N])
}

/// The byte at `at`, or zero when the buffer is too short.
#[inline]
pub(crate) fn read_u8(buf: &[u8], at: usize) -> u8 {
    buf.get(at).copied().unwrap_or(0)
}

#[inline]
pub(crate) fn read_u16(buf: &[u8], at: usize) -> u16 {
    u16::from_be_bytes(read(buf, at))
}

/// Writes `bytes` at `at`; does nothing when the buffer is too short.
#[inline]
pub(crate) fn write<const N: usize>(buf: &mut [u8], at: usize, bytes: [u8; N]) {
    if let Some(dst) = buf.get_mut(at..).and_then(|b| b.get_mut(..N)) {
        dst.copy_from_slice(&bytes);
    }
}

#[inline]
pub(crate) fn write_u8(buf: &mut [u8], at: usize, value: u8) {
    if let Some(b) = buf.get_mut(at) {
        *b = value;
    }
}

#[inline]
pub(crate) fn write_u16(buf: &mut [u8], at: usize, value: u16) {
    write(buf, at, value.to_be_bytes());
}

/// Checks a length a header announces against its smallest legal value and
/// the bytes there are: `Malformed` below `min`, `Truncated` beyond
/// `available`.
#[inline]
pub(crate) fn check_announced(
    announced: usize,
    min: usize,
    available: usize,
) -> Result<(), WireError> {
    if announced < min {
        return Err(WireError::Malformed);
    }
    if announced > available {
        return Err(WireError::Truncated);
    }
    Ok(())
}

/// `buf[range]`, or an empty slice when the range does not fit.
#[inline]
pub(crate) fn slice(buf: &[u8], range: core::ops::Range<usize>) -> &[u8] {
    buf.get(range).unwrap_or(&[])
}

#[inline]
pub(crate) fn slice_mut(buf: &mut [u8], range: core::ops::Range<usize>) -> &mut [u8] {
    buf.get_mut(range).unwrap_or(&mut [])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accessors_are_total() {
        let buf = [1u8, 2, 3];
        assert_eq!(read::<2>(&buf, 1), [2, 3]);
        assert_eq!(read::<2>(&buf, 2), [0, 0]);
        assert_eq!(read::<4>(&buf, usize::MAX), [0; 4]);
        assert_eq!(read_u8(&buf, 3), 0);
        assert_eq!(read_u16(&buf, 0), 0x0102);
        assert_eq!(slice(&buf, 2..5), &[] as &[u8]);
        let mut m = [0u8; 3];
        write(&mut m, 2, [9, 9]);
        assert_eq!(m, [0, 0, 0]);
        write_u16(&mut m, 1, 0xabcd);
        assert_eq!(m, [0, 0xab, 0xcd]);
        write_u8(&mut m, usize::MAX, 1);
        let (start, end) = (4, 2);
        assert!(slice_mut(&mut m, start..end).is_empty());
    }

    #[test]
    fn errors_print() {
        assert_eq!(WireError::Truncated.to_string(), "truncated packet");
        assert_eq!(WireError::BadChecksum.to_string(), "bad checksum");
    }
}
