//! UDP headers (RFC 768), with the checksum over the IPv4 pseudo-header.
//!
//! Over IPv4 a zero checksum means "no checksum": [`UdpPacket::verify_checksum`]
//! accepts it, and [`UdpPacket::fill_checksum`] stores a computed zero as
//! `0xffff` (its other ones'-complement form).

use core::fmt;
use core::net::Ipv4Addr;

use super::{check_announced, field, read_u16, slice, write_u16, WireError};
use crate::checksum;

mod fields {
    use super::field::Field;
    pub const SRC_PORT: Field = 0..2;
    pub const DST_PORT: Field = 2..4;
    pub const LENGTH: Field = 4..6;
    pub const CHECKSUM: Field = 6..8;
}

/// The IP protocol number of UDP, for the pseudo-header.
const PROTOCOL: u8 = 17;

/// A view of a UDP datagram.
///
/// A checked view guarantees `8 <= length <= buffer length`; bytes beyond
/// `length` are excluded from the payload and the checksum. The checksum is
/// not checked by `new_checked`: call [`UdpPacket::verify_checksum`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    pub const HEADER_LEN: usize = fields::CHECKSUM.end;

    /// Offset of the checksum field inside the header.
    pub const CHECKSUM_OFFSET: usize = fields::CHECKSUM.start;

    pub const fn new_unchecked(buffer: T) -> Self {
        UdpPacket { buffer }
    }

    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// The structural checks of [`UdpPacket::new_checked`].
    pub fn check_len(&self) -> Result<(), WireError> {
        let len = self.buffer.as_ref().len();
        if len < Self::HEADER_LEN {
            return Err(WireError::Truncated);
        }
        check_announced(usize::from(self.len()), Self::HEADER_LEN, len)
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn src_port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), fields::SRC_PORT.start)
    }

    pub fn dst_port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), fields::DST_PORT.start)
    }

    /// The length field: header plus payload.
    pub fn len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), fields::LENGTH.start)
    }

    /// Whether the length field says there is no payload.
    pub fn is_empty(&self) -> bool {
        usize::from(self.len()) <= Self::HEADER_LEN
    }

    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), fields::CHECKSUM.start)
    }

    /// The payload, up to the length field.
    pub fn payload(&self) -> &[u8] {
        slice(
            self.buffer.as_ref(),
            Self::HEADER_LEN..usize::from(self.len()),
        )
    }

    /// Whether the checksum verifies (a zero checksum, "none", always
    /// does). A view whose length field does not fit the buffer fails.
    pub fn verify_checksum(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        if self.check_len().is_err() {
            return false;
        }
        if self.checksum() == 0 {
            return true;
        }
        let len = self.len();
        let data = slice(self.buffer.as_ref(), 0..usize::from(len));
        checksum::combine(&[
            checksum::pseudo_header_sum(src, dst, PROTOCOL, len),
            checksum::sum(data),
        ]) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    pub fn set_src_port(&mut self, port: u16) {
        write_u16(self.buffer.as_mut(), fields::SRC_PORT.start, port);
    }

    pub fn set_dst_port(&mut self, port: u16) {
        write_u16(self.buffer.as_mut(), fields::DST_PORT.start, port);
    }

    pub fn set_len(&mut self, len: u16) {
        write_u16(self.buffer.as_mut(), fields::LENGTH.start, len);
    }

    pub fn set_checksum(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), fields::CHECKSUM.start, value);
    }

    /// Computes and stores the checksum over the pseudo-header and the
    /// datagram (up to the length field); a computed zero is stored as
    /// `0xffff`. Nothing is written when the length field does not fit the
    /// buffer.
    pub fn fill_checksum(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        if self.check_len().is_err() {
            return;
        }
        self.set_checksum(0);
        let len = self.len();
        let data = slice(self.buffer.as_ref(), 0..usize::from(len));
        let c = !checksum::combine(&[
            checksum::pseudo_header_sum(src, dst, PROTOCOL, len),
            checksum::sum(data),
        ]);
        self.set_checksum(if c == 0 { 0xffff } else { c });
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for UdpPacket<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

impl<T: AsRef<[u8]>> fmt::Display for UdpPacket<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "UDP src={} dst={} len={}",
            self.src_port(),
            self.dst_port(),
            self.len()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::naive_checksum;

    const SRC: Ipv4Addr = Ipv4Addr::new(192, 168, 252, 7);
    const DST: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 9);

    fn datagram(payload: &[u8]) -> Vec<u8> {
        let len = 8 + payload.len();
        let mut b = vec![0x30, 0x39, 0x00, 0x35];
        b.extend_from_slice(&(len as u16).to_be_bytes());
        b.extend_from_slice(&[0, 0]);
        b.extend_from_slice(payload);
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&SRC.octets());
        pseudo.extend_from_slice(&DST.octets());
        pseudo.extend_from_slice(&[0, 17]);
        pseudo.extend_from_slice(&(len as u16).to_be_bytes());
        pseudo.extend_from_slice(&b);
        let c = naive_checksum(&pseudo);
        b[6..8].copy_from_slice(&c.to_be_bytes());
        b
    }

    #[test]
    fn parse() {
        let mut b = datagram(b"hello");
        b.extend_from_slice(&[0xee; 3]); // padding, ignored
        let p = UdpPacket::new_checked(&b[..]).unwrap();
        assert_eq!((p.src_port(), p.dst_port(), p.len()), (12345, 53, 13));
        assert_eq!(p.payload(), b"hello");
        assert!(!p.is_empty());
        assert!(p.verify_checksum(SRC, DST));
        assert!(!p.verify_checksum(SRC, Ipv4Addr::new(203, 0, 113, 10)));
        assert_eq!(p.to_string(), "UDP src=12345 dst=53 len=13");
    }

    #[test]
    fn zero_checksum_means_none() {
        let mut b = datagram(b"x");
        b[6] = 0;
        b[7] = 0;
        assert!(UdpPacket::new_checked(&b[..])
            .unwrap()
            .verify_checksum(SRC, DST));
    }

    #[test]
    fn fill_matches_naive_and_never_stores_zero() {
        let good = datagram(b"odd");
        let mut b = good.clone();
        b[6] = 1;
        UdpPacket::new_unchecked(&mut b[..]).fill_checksum(SRC, DST);
        assert_eq!(b, good);
        // Find a payload whose checksum computes to zero: it must be sent
        // as 0xffff.
        for x in 0..=u16::MAX {
            let mut b = datagram(&x.to_be_bytes());
            UdpPacket::new_unchecked(&mut b[..]).fill_checksum(SRC, DST);
            let p = UdpPacket::new_checked(&b[..]).unwrap();
            assert_ne!(p.checksum(), 0);
            assert!(p.verify_checksum(SRC, DST));
            if p.checksum() == 0xffff {
                return;
            }
        }
        panic!("no payload with a zero checksum found");
    }

    #[test]
    fn checks() {
        let b = datagram(b"hello");
        for len in 0..8 {
            assert_eq!(UdpPacket::new_checked(&b[..len]), Err(WireError::Truncated));
        }
        assert_eq!(UdpPacket::new_checked(&b[..12]), Err(WireError::Truncated));
        let mut m = b.clone();
        m[4] = 0;
        m[5] = 7;
        assert_eq!(UdpPacket::new_checked(&m[..]), Err(WireError::Malformed));
        let p = UdpPacket::new_unchecked(&m[..]);
        assert!(!p.verify_checksum(SRC, DST));
        assert!(p.payload().is_empty());
    }

    #[test]
    fn setters() {
        let mut b = [0u8; 10];
        let mut p = UdpPacket::new_unchecked(&mut b[..]);
        p.set_src_port(7);
        p.set_dst_port(9);
        p.set_len(10);
        p.fill_checksum(SRC, DST);
        assert!(p.verify_checksum(SRC, DST));
        assert_eq!((p.src_port(), p.dst_port(), p.len()), (7, 9, 10));
        assert_eq!(p.payload(), &[0, 0]);
    }
}
