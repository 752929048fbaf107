//! IPv4 headers (RFC 791).

use core::fmt;
use core::net::Ipv4Addr;

use super::{
    check_announced, field, read, read_u16, read_u8, slice, slice_mut, write, write_u16, write_u8,
    WireError,
};
use crate::checksum;

/// The IPv4 protocol field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpProtocol {
    Icmp,
    Tcp,
    Udp,
    Unknown(u8),
}

impl From<u8> for IpProtocol {
    fn from(v: u8) -> Self {
        match v {
            1 => IpProtocol::Icmp,
            6 => IpProtocol::Tcp,
            17 => IpProtocol::Udp,
            other => IpProtocol::Unknown(other),
        }
    }
}

impl From<IpProtocol> for u8 {
    fn from(p: IpProtocol) -> u8 {
        match p {
            IpProtocol::Icmp => 1,
            IpProtocol::Tcp => 6,
            IpProtocol::Udp => 17,
            IpProtocol::Unknown(v) => v,
        }
    }
}

impl fmt::Display for IpProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IpProtocol::Icmp => f.write_str("ICMP"),
            IpProtocol::Tcp => f.write_str("TCP"),
            IpProtocol::Udp => f.write_str("UDP"),
            IpProtocol::Unknown(v) => write!(f, "proto {v}"),
        }
    }
}

mod fields {
    use super::field::Field;
    pub const VER_IHL: usize = 0;
    pub const DSCP_ECN: usize = 1;
    pub const LENGTH: Field = 2..4;
    pub const IDENT: Field = 4..6;
    pub const FLG_OFF: Field = 6..8;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: Field = 10..12;
    pub const SRC: Field = 12..16;
    pub const DST: Field = 16..20;
}

const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const OFFSET_MASK: u16 = 0x1fff;

/// A view of an IPv4 packet.
///
/// A checked view guarantees: version 4, IHL >= 5, the header (options
/// included) inside the buffer, and `header_len <= total_len <= buffer
/// length`. Bytes beyond `total_len` (Ethernet padding of short frames) are
/// tolerated and excluded from [`Ipv4Packet::payload`]. The header checksum
/// is *not* checked by `new_checked`: call [`Ipv4Packet::verify_checksum`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Length of a header without options.
    pub const MIN_HEADER_LEN: usize = fields::DST.end;
    /// Length of the longest header (IHL 15).
    pub const MAX_HEADER_LEN: usize = 60;

    pub const fn new_unchecked(buffer: T) -> Self {
        Ipv4Packet { buffer }
    }

    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// The structural checks of [`Ipv4Packet::new_checked`].
    pub fn check_len(&self) -> Result<(), WireError> {
        let len = self.buffer.as_ref().len();
        if len < Self::MIN_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if self.version() != 4 {
            return Err(WireError::Malformed);
        }
        let header_len = usize::from(self.header_len());
        check_announced(header_len, Self::MIN_HEADER_LEN, len)?;
        check_announced(usize::from(self.total_len()), header_len, len)
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn version(&self) -> u8 {
        read_u8(self.buffer.as_ref(), fields::VER_IHL) >> 4
    }

    /// Header length in bytes (IHL * 4, 0..=60).
    pub fn header_len(&self) -> u8 {
        (read_u8(self.buffer.as_ref(), fields::VER_IHL) & 0x0f).wrapping_mul(4)
    }

    pub fn dscp(&self) -> u8 {
        read_u8(self.buffer.as_ref(), fields::DSCP_ECN) >> 2
    }

    pub fn ecn(&self) -> u8 {
        read_u8(self.buffer.as_ref(), fields::DSCP_ECN) & 0x03
    }

    /// The total length field: header plus payload.
    pub fn total_len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), fields::LENGTH.start)
    }

    pub fn ident(&self) -> u16 {
        read_u16(self.buffer.as_ref(), fields::IDENT.start)
    }

    fn flags_offset(&self) -> u16 {
        read_u16(self.buffer.as_ref(), fields::FLG_OFF.start)
    }

    pub fn dont_frag(&self) -> bool {
        self.flags_offset() & FLAG_DF != 0
    }

    pub fn more_frags(&self) -> bool {
        self.flags_offset() & FLAG_MF != 0
    }

    /// Fragment offset in bytes (the field times eight).
    pub fn frag_offset(&self) -> u16 {
        (self.flags_offset() & OFFSET_MASK).wrapping_mul(8)
    }

    /// Whether this is a fragment of a larger datagram (MF set or a
    /// non-zero offset).
    pub fn is_fragment(&self) -> bool {
        self.flags_offset() & (FLAG_MF | OFFSET_MASK) != 0
    }

    pub fn ttl(&self) -> u8 {
        read_u8(self.buffer.as_ref(), fields::TTL)
    }

    pub fn protocol(&self) -> IpProtocol {
        IpProtocol::from(read_u8(self.buffer.as_ref(), fields::PROTOCOL))
    }

    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), fields::CHECKSUM.start)
    }

    pub fn src_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(read::<4>(self.buffer.as_ref(), fields::SRC.start))
    }

    pub fn dst_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(read::<4>(self.buffer.as_ref(), fields::DST.start))
    }

    /// The whole header, options included.
    pub fn header(&self) -> &[u8] {
        slice(self.buffer.as_ref(), 0..usize::from(self.header_len()))
    }

    /// The options (empty when IHL is 5).
    pub fn options(&self) -> &[u8] {
        slice(
            self.buffer.as_ref(),
            Self::MIN_HEADER_LEN..usize::from(self.header_len()),
        )
    }

    /// Whether the header checksum verifies.
    pub fn verify_checksum(&self) -> bool {
        let h = self.header();
        !h.is_empty() && checksum::verify(h)
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Ipv4Packet<&'a T> {
    /// The payload: from the end of the header to `total_len` (Ethernet
    /// padding excluded), borrowed for as long as the underlying buffer.
    pub fn payload(&self) -> &'a [u8] {
        let b: &'a [u8] = T::as_ref(self.buffer);
        slice(
            b,
            usize::from(self.header_len())..usize::from(self.total_len()),
        )
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    pub fn set_version(&mut self, version: u8) {
        let b = self.buffer.as_mut();
        let v = read_u8(b, fields::VER_IHL);
        write_u8(b, fields::VER_IHL, (v & 0x0f) | (version << 4));
    }

    /// Sets the header length in bytes (a multiple of four, 20..=60).
    pub fn set_header_len(&mut self, len: u8) {
        let b = self.buffer.as_mut();
        let v = read_u8(b, fields::VER_IHL);
        write_u8(b, fields::VER_IHL, (v & 0xf0) | ((len / 4) & 0x0f));
    }

    pub fn set_dscp(&mut self, dscp: u8) {
        let b = self.buffer.as_mut();
        let v = read_u8(b, fields::DSCP_ECN);
        write_u8(b, fields::DSCP_ECN, (v & 0x03) | (dscp << 2));
    }

    pub fn set_ecn(&mut self, ecn: u8) {
        let b = self.buffer.as_mut();
        let v = read_u8(b, fields::DSCP_ECN);
        write_u8(b, fields::DSCP_ECN, (v & 0xfc) | (ecn & 0x03));
    }

    pub fn set_total_len(&mut self, len: u16) {
        write_u16(self.buffer.as_mut(), fields::LENGTH.start, len);
    }

    pub fn set_ident(&mut self, ident: u16) {
        write_u16(self.buffer.as_mut(), fields::IDENT.start, ident);
    }

    fn set_flags_offset(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), fields::FLG_OFF.start, value);
    }

    /// Clears the flags and the fragment offset.
    pub fn clear_flags(&mut self) {
        self.set_flags_offset(0);
    }

    pub fn set_dont_frag(&mut self, value: bool) {
        let f = self.flags_offset() & !FLAG_DF;
        self.set_flags_offset(if value { f | FLAG_DF } else { f });
    }

    pub fn set_more_frags(&mut self, value: bool) {
        let f = self.flags_offset() & !FLAG_MF;
        self.set_flags_offset(if value { f | FLAG_MF } else { f });
    }

    /// Sets the fragment offset in bytes (a multiple of eight).
    pub fn set_frag_offset(&mut self, offset: u16) {
        let f = self.flags_offset() & !OFFSET_MASK;
        self.set_flags_offset(f | ((offset / 8) & OFFSET_MASK));
    }

    pub fn set_ttl(&mut self, ttl: u8) {
        write_u8(self.buffer.as_mut(), fields::TTL, ttl);
    }

    pub fn set_protocol(&mut self, protocol: IpProtocol) {
        write_u8(self.buffer.as_mut(), fields::PROTOCOL, protocol.into());
    }

    pub fn set_checksum(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), fields::CHECKSUM.start, value);
    }

    pub fn set_src_addr(&mut self, addr: Ipv4Addr) {
        write(self.buffer.as_mut(), fields::SRC.start, addr.octets());
    }

    pub fn set_dst_addr(&mut self, addr: Ipv4Addr) {
        write(self.buffer.as_mut(), fields::DST.start, addr.octets());
    }

    /// Computes and stores the header checksum.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum::checksum(self.header());
        self.set_checksum(c);
    }

    /// The options, writable.
    pub fn options_mut(&mut self) -> &mut [u8] {
        let end = usize::from(self.header_len());
        slice_mut(self.buffer.as_mut(), Self::MIN_HEADER_LEN..end)
    }

    /// The payload (up to `total_len`), writable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let range = usize::from(self.header_len())..usize::from(self.total_len());
        slice_mut(self.buffer.as_mut(), range)
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Ipv4Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

impl<T: AsRef<[u8]>> fmt::Display for Ipv4Packet<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "IPv4 src={} dst={} proto={} len={} ttl={}",
            self.src_addr(),
            self.dst_addr(),
            self.protocol(),
            self.total_len(),
            self.ttl()
        )?;
        if self.is_fragment() {
            write!(
                f,
                " frag off={} mf={}",
                self.frag_offset(),
                self.more_frags()
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::naive_checksum;

    /// 10.0.0.1 -> 10.0.0.2, ICMP, 4 bytes of payload, DF, ttl 64, id 0x1234.
    const PACKET: [u8; 24] = [
        0x45, 0x00, 0x00, 0x18, 0x12, 0x34, 0x40, 0x00, 0x40, 0x01, 0x14, 0xaf, 10, 0, 0, 1, 10, 0,
        0, 2, 0xaa, 0xbb, 0xcc, 0xdd,
    ];

    #[test]
    fn fixture_checksum_is_right() {
        let mut h = PACKET[..20].to_vec();
        h[10] = 0;
        h[11] = 0;
        assert_eq!(naive_checksum(&h), 0x14af);
    }

    #[test]
    fn parse() {
        let p = Ipv4Packet::new_checked(&PACKET[..]).unwrap();
        assert_eq!(p.version(), 4);
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.dscp(), 0);
        assert_eq!(p.ecn(), 0);
        assert_eq!(p.total_len(), 24);
        assert_eq!(p.ident(), 0x1234);
        assert!(p.dont_frag());
        assert!(!p.more_frags());
        assert_eq!(p.frag_offset(), 0);
        assert!(!p.is_fragment());
        assert_eq!(p.ttl(), 64);
        assert_eq!(p.protocol(), IpProtocol::Icmp);
        assert_eq!(p.src_addr(), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(p.dst_addr(), Ipv4Addr::new(10, 0, 0, 2));
        assert!(p.options().is_empty());
        assert_eq!(p.payload(), &[0xaa, 0xbb, 0xcc, 0xdd]);
        assert!(p.verify_checksum());
        assert_eq!(
            p.to_string(),
            "IPv4 src=10.0.0.1 dst=10.0.0.2 proto=ICMP len=24 ttl=64"
        );
    }

    #[test]
    fn bad_checksum_is_detected_not_rejected() {
        let mut b = PACKET;
        b[11] ^= 1;
        let p = Ipv4Packet::new_checked(&b[..]).unwrap();
        assert!(!p.verify_checksum());
    }

    #[test]
    fn truncated() {
        for len in 0..24 {
            assert_eq!(
                Ipv4Packet::new_checked(&PACKET[..len]),
                Err(WireError::Truncated),
                "len {len}"
            );
        }
    }

    #[test]
    fn bad_version_and_ihl() {
        let mut b = PACKET;
        b[0] = 0x65;
        assert_eq!(Ipv4Packet::new_checked(&b[..]), Err(WireError::Malformed));
        for ihl in 0..5 {
            b[0] = 0x40 | ihl;
            assert_eq!(
                Ipv4Packet::new_checked(&b[..]),
                Err(WireError::Malformed),
                "ihl {ihl}"
            );
        }
        // IHL 6 with total length 24: header fits, payload empty.
        b[0] = 0x46;
        let p = Ipv4Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.options(), &[0xaa, 0xbb, 0xcc, 0xdd]);
        assert!(p.payload().is_empty());
        // IHL 7: header beyond the buffer.
        b[0] = 0x47;
        assert_eq!(Ipv4Packet::new_checked(&b[..]), Err(WireError::Truncated));
    }

    #[test]
    fn total_length_checks() {
        let mut b = PACKET;
        b[3] = 25; // beyond the buffer
        assert_eq!(Ipv4Packet::new_checked(&b[..]), Err(WireError::Truncated));
        b[2] = 0xff;
        b[3] = 0xff;
        assert_eq!(Ipv4Packet::new_checked(&b[..]), Err(WireError::Truncated));
        b[2] = 0;
        b[3] = 19; // shorter than the header
        assert_eq!(Ipv4Packet::new_checked(&b[..]), Err(WireError::Malformed));
        b[3] = 20; // header only
        assert!(Ipv4Packet::new_checked(&b[..])
            .unwrap()
            .payload()
            .is_empty());
    }

    #[test]
    fn padding_is_sliced_off() {
        let mut frame = [0u8; 46]; // minimum Ethernet payload
        frame[..24].copy_from_slice(&PACKET);
        let p = Ipv4Packet::new_checked(&frame[..]).unwrap();
        assert_eq!(p.payload(), &[0xaa, 0xbb, 0xcc, 0xdd]);
        assert!(p.verify_checksum());
    }

    #[test]
    fn options_present() {
        // IHL 6 with a 4-byte option (router alert: 94 04 00 00), 2 bytes payload.
        let mut b = [
            0x46, 0x00, 0x00, 0x1a, 0x00, 0x01, 0x00, 0x00, 0x01, 0x11, 0, 0, 192, 168, 252, 9,
            192, 168, 252, 1, 0x94, 0x04, 0x00, 0x00, 0x01, 0x02,
        ];
        let c = naive_checksum(&b[..24]);
        b[10..12].copy_from_slice(&c.to_be_bytes());
        let p = Ipv4Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.header_len(), 24);
        assert_eq!(p.options(), &[0x94, 0x04, 0x00, 0x00]);
        assert_eq!(p.payload(), &[0x01, 0x02]);
        assert_eq!(p.protocol(), IpProtocol::Udp);
        assert!(p.verify_checksum());
        let mut m = b;
        let mut p = Ipv4Packet::new_unchecked(&mut m[..]);
        p.options_mut()[0] = 0x01;
        assert!(!p.verify_checksum());
        p.fill_checksum();
        assert!(p.verify_checksum());
    }

    #[test]
    fn fragments() {
        let mut b = PACKET;
        b[6] = 0x20; // MF
        b[7] = 0x00;
        let p = Ipv4Packet::new_checked(&b[..]).unwrap();
        assert!(p.more_frags() && p.is_fragment() && !p.dont_frag());
        b[6] = 0x00;
        b[7] = 0xb9; // offset 185 * 8 = 1480
        let p = Ipv4Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.frag_offset(), 1480);
        assert!(p.is_fragment() && !p.more_frags());
        b[6] = 0x1f;
        b[7] = 0xff;
        assert_eq!(
            Ipv4Packet::new_checked(&b[..]).unwrap().frag_offset(),
            65528
        );
    }

    #[test]
    fn emit_matches_fixture() {
        let mut b = [0u8; 24];
        let mut p = Ipv4Packet::new_unchecked(&mut b[..]);
        p.set_version(4);
        p.set_header_len(20);
        p.set_dscp(0);
        p.set_ecn(0);
        p.set_total_len(24);
        p.set_ident(0x1234);
        p.clear_flags();
        p.set_dont_frag(true);
        p.set_more_frags(false);
        p.set_frag_offset(0);
        p.set_ttl(64);
        p.set_protocol(IpProtocol::Icmp);
        p.set_src_addr(Ipv4Addr::new(10, 0, 0, 1));
        p.set_dst_addr(Ipv4Addr::new(10, 0, 0, 2));
        p.payload_mut().copy_from_slice(&[0xaa, 0xbb, 0xcc, 0xdd]);
        p.fill_checksum();
        assert_eq!(b, PACKET);
    }

    #[test]
    fn setters_round_trip() {
        let mut b = PACKET;
        let mut p = Ipv4Packet::new_unchecked(&mut b[..]);
        p.set_dscp(46);
        p.set_ecn(3);
        p.set_more_frags(true);
        p.set_frag_offset(1480);
        p.set_dont_frag(false);
        assert_eq!((p.dscp(), p.ecn()), (46, 3));
        assert!(p.more_frags() && !p.dont_frag());
        assert_eq!(p.frag_offset(), 1480);
        assert_eq!(p.protocol(), IpProtocol::Icmp);
        p.set_protocol(IpProtocol::Unknown(132));
        assert_eq!(p.protocol(), IpProtocol::Unknown(132));
    }

    #[test]
    fn payload_outlives_the_views() {
        let mut frame = [0u8; 14 + 24];
        frame[12] = 0x08;
        frame[14..].copy_from_slice(&PACKET);
        let payload = {
            let eth = crate::wire::EthernetFrame::new_checked(&frame[..]).unwrap();
            Ipv4Packet::new_checked(eth.payload()).unwrap().payload()
        };
        assert_eq!(payload, &[0xaa, 0xbb, 0xcc, 0xdd]);
    }

    #[test]
    fn unchecked_garbage_is_harmless() {
        let p = Ipv4Packet::new_unchecked(&[0x4f, 0, 0xff, 0xff][..]);
        assert!(p.payload().is_empty());
        assert!(p.header().is_empty());
        assert!(!p.verify_checksum());
        assert_eq!(p.dst_addr(), Ipv4Addr::UNSPECIFIED);
    }
}
