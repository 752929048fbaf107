//! ICMP error messages and the datagram they quote (RFC 792, RFC 1812
//! section 4.3.2.3, RFC 5508).
//!
//! Destination unreachable, time exceeded and parameter problem quote the
//! IPv4 header of the offending datagram and at least the first eight bytes
//! of its payload: for TCP and UDP the ports (and, for UDP, the checksum),
//! for ICMP queries the type, code, checksum and identifier. The quoted
//! datagram is usually truncated, so its total length generally exceeds
//! what is there: [`IcmpErrorPacket`] gives unchecked [`Ipv4Packet`]
//! access to the quoted header and a plain slice for the quoted transport
//! bytes.

use core::fmt;
use core::net::Ipv4Addr;

use super::{read_u16, read_u8, slice, slice_mut, IcmpType, IpProtocol, Ipv4Packet, WireError};
use crate::checksum;

/// Length of the ICMP header in front of the quoted datagram.
const ICMP_HEADER_LEN: usize = 8;
/// Transport bytes an error must quote (RFC 792).
pub const QUOTED_TRANSPORT_MIN: usize = 8;

/// A view of an ICMP error message whose quoted datagram can be read.
///
/// A checked view guarantees: the type is destination unreachable, time
/// exceeded or parameter problem; the quoted IPv4 header has version 4 and
/// IHL >= 5, and it and [`QUOTED_TRANSPORT_MIN`] bytes after it are inside
/// the buffer. The whole buffer is the ICMP message (the IPv4 payload).
/// Neither checksum is checked by `new_checked`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IcmpErrorPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> IcmpErrorPacket<T> {
    /// The shortest checked message: ICMP header, quoted IPv4 header
    /// without options, eight transport bytes.
    pub const MIN_LEN: usize =
        ICMP_HEADER_LEN + Ipv4Packet::<&[u8]>::MIN_HEADER_LEN + QUOTED_TRANSPORT_MIN;

    pub const fn new_unchecked(buffer: T) -> Self {
        IcmpErrorPacket { buffer }
    }

    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let p = Self::new_unchecked(buffer);
        p.check()?;
        Ok(p)
    }

    /// The checks of [`IcmpErrorPacket::new_checked`]:
    /// [`WireError::Unsupported`] for other ICMP types.
    pub fn check(&self) -> Result<(), WireError> {
        let len = self.buffer.as_ref().len();
        if len < ICMP_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if !Self::is_translatable_error(self.msg_type()) {
            return Err(WireError::Unsupported);
        }
        if len < Self::MIN_LEN {
            return Err(WireError::Truncated);
        }
        let quoted = self.quoted_packet();
        if quoted.version() != 4 || usize::from(quoted.header_len()) < 20 {
            return Err(WireError::Malformed);
        }
        if self.transport_offset().saturating_add(QUOTED_TRANSPORT_MIN) > len {
            return Err(WireError::Truncated);
        }
        Ok(())
    }

    /// Whether `t` is one of the error types this view (and a NAT, per
    /// RFC 5508) handles: destination unreachable, time exceeded,
    /// parameter problem. Redirects are not.
    pub fn is_translatable_error(t: IcmpType) -> bool {
        matches!(
            t,
            IcmpType::DestinationUnreachable | IcmpType::TimeExceeded | IcmpType::ParameterProblem
        )
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn msg_type(&self) -> IcmpType {
        IcmpType::from(read_u8(self.buffer.as_ref(), 0))
    }

    pub fn msg_code(&self) -> u8 {
        read_u8(self.buffer.as_ref(), 1)
    }

    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), 2)
    }

    /// The next-hop MTU of a "fragmentation needed" message (type 3,
    /// code 4; RFC 1191), zero otherwise or when not given.
    pub fn next_hop_mtu(&self) -> u16 {
        if self.msg_type() == IcmpType::DestinationUnreachable && self.msg_code() == 4 {
            read_u16(self.buffer.as_ref(), 6)
        } else {
            0
        }
    }

    /// Whether the checksum over the whole message verifies.
    pub fn verify_checksum(&self) -> bool {
        let b = self.buffer.as_ref();
        b.len() >= ICMP_HEADER_LEN && checksum::verify(b)
    }

    /// Offset of the quoted IPv4 header in the message.
    pub const fn quoted_offset(&self) -> usize {
        ICMP_HEADER_LEN
    }

    /// Offset of the quoted transport header in the message.
    pub fn transport_offset(&self) -> usize {
        ICMP_HEADER_LEN.saturating_add(usize::from(self.quoted_packet().header_len()))
    }

    /// The quoted IPv4 datagram as an unchecked view: its header fields are
    /// meaningful on a checked message, its payload accessors are not (use
    /// [`IcmpErrorPacket::quoted_transport`]).
    pub fn quoted_packet(&self) -> Ipv4Packet<&[u8]> {
        let b = self.buffer.as_ref();
        Ipv4Packet::new_unchecked(slice(b, ICMP_HEADER_LEN..b.len()))
    }

    pub fn quoted_protocol(&self) -> IpProtocol {
        self.quoted_packet().protocol()
    }

    pub fn quoted_src_addr(&self) -> Ipv4Addr {
        self.quoted_packet().src_addr()
    }

    pub fn quoted_dst_addr(&self) -> Ipv4Addr {
        self.quoted_packet().dst_addr()
    }

    /// Whether the quoted datagram is a fragment other than the first (its
    /// transport header is not there).
    pub fn quoted_is_later_fragment(&self) -> bool {
        self.quoted_packet().frag_offset() != 0
    }

    /// The quoted transport bytes (at least eight on a checked message).
    pub fn quoted_transport(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        slice(b, self.transport_offset()..b.len())
    }

    /// The first two transport bytes: the source port of TCP and UDP, the
    /// type and code of ICMP.
    pub fn quoted_src_port(&self) -> u16 {
        read_u16(self.quoted_transport(), 0)
    }

    /// Bytes 2..4 of the transport header: the destination port of TCP and
    /// UDP.
    pub fn quoted_dst_port(&self) -> u16 {
        read_u16(self.quoted_transport(), 2)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> IcmpErrorPacket<T> {
    /// The quoted datagram as a writable unchecked view.
    pub fn quoted_packet_mut(&mut self) -> Ipv4Packet<&mut [u8]> {
        let b = self.buffer.as_mut();
        let len = b.len();
        Ipv4Packet::new_unchecked(slice_mut(b, ICMP_HEADER_LEN..len))
    }

    /// The quoted transport bytes, writable.
    pub fn quoted_transport_mut(&mut self) -> &mut [u8] {
        let at = self.transport_offset();
        let b = self.buffer.as_mut();
        let len = b.len();
        slice_mut(b, at..len)
    }

    pub fn set_checksum(&mut self, value: u16) {
        super::write_u16(self.buffer.as_mut(), 2, value);
    }

    /// Computes and stores the checksum over the whole message.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum::checksum(self.buffer.as_ref());
        self.set_checksum(c);
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for IcmpErrorPacket<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

impl<T: AsRef<[u8]>> fmt::Display for IcmpErrorPacket<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ICMP {:?} code={} quoting {} {}:{} -> {}:{}",
            self.msg_type(),
            self.msg_code(),
            self.quoted_protocol(),
            self.quoted_src_addr(),
            self.quoted_src_port(),
            self.quoted_dst_addr(),
            self.quoted_dst_port()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::naive_verify;

    /// Port unreachable from 203.0.113.9 quoting UDP 10.0.0.2:40000 ->
    /// 203.0.113.9:53 (header + 8 bytes).
    fn port_unreachable() -> Vec<u8> {
        let mut quoted = vec![
            0x45, 0, 0, 40, 0, 1, 0, 0, 63, 17, 0, 0, 10, 0, 0, 2, 203, 0, 113, 9,
        ];
        let c = crate::checksum::checksum(&quoted);
        quoted[10..12].copy_from_slice(&c.to_be_bytes());
        quoted.extend_from_slice(&[0x9c, 0x40, 0x00, 0x35, 0x00, 0x14, 0xab, 0xcd]);
        let mut m = vec![3, 3, 0, 0, 0, 0, 0, 0];
        m.extend_from_slice(&quoted);
        let mut p = IcmpErrorPacket::new_unchecked(&mut m[..]);
        p.fill_checksum();
        m
    }

    #[test]
    fn parse() {
        let m = port_unreachable();
        let p = IcmpErrorPacket::new_checked(&m[..]).unwrap();
        assert!(p.verify_checksum());
        assert!(naive_verify(&m));
        assert_eq!(p.msg_type(), IcmpType::DestinationUnreachable);
        assert_eq!(p.msg_code(), 3);
        assert_eq!(p.next_hop_mtu(), 0);
        assert_eq!(p.quoted_protocol(), IpProtocol::Udp);
        assert_eq!(p.quoted_src_addr(), Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(p.quoted_dst_addr(), Ipv4Addr::new(203, 0, 113, 9));
        assert_eq!((p.quoted_src_port(), p.quoted_dst_port()), (40000, 53));
        assert_eq!(p.transport_offset(), 28);
        assert_eq!(p.quoted_transport().len(), 8);
        assert!(p.quoted_packet().verify_checksum());
        assert!(!p.quoted_is_later_fragment());
        assert_eq!(
            p.to_string(),
            "ICMP DestinationUnreachable code=3 quoting UDP 10.0.0.2:40000 -> 203.0.113.9:53"
        );
    }

    #[test]
    fn frag_needed_mtu() {
        let mut m = port_unreachable();
        m[1] = 4;
        m[6..8].copy_from_slice(&1400u16.to_be_bytes());
        let p = IcmpErrorPacket::new_checked(&m[..]).unwrap();
        assert_eq!(p.next_hop_mtu(), 1400);
    }

    #[test]
    fn checks() {
        let m = port_unreachable();
        for len in 0..8 {
            assert_eq!(
                IcmpErrorPacket::new_checked(&m[..len]),
                Err(WireError::Truncated)
            );
        }
        for len in 8..m.len() {
            assert_eq!(
                IcmpErrorPacket::new_checked(&m[..len]),
                Err(WireError::Truncated),
                "len {len}"
            );
        }
        for t in [0u8, 5, 8, 13, 255] {
            let mut x = m.clone();
            x[0] = t;
            assert_eq!(
                IcmpErrorPacket::new_checked(&x[..]),
                Err(WireError::Unsupported)
            );
        }
        for t in [3u8, 11, 12] {
            let mut x = m.clone();
            x[0] = t;
            assert!(IcmpErrorPacket::new_checked(&x[..]).is_ok());
        }
        let mut x = m.clone();
        x[8] = 0x65;
        assert_eq!(
            IcmpErrorPacket::new_checked(&x[..]),
            Err(WireError::Malformed)
        );
        x[8] = 0x44;
        assert_eq!(
            IcmpErrorPacket::new_checked(&x[..]),
            Err(WireError::Malformed)
        );
        // IHL 6: the quoted header grows, the 8 transport bytes no longer fit.
        x[8] = 0x46;
        assert_eq!(
            IcmpErrorPacket::new_checked(&x[..]),
            Err(WireError::Truncated)
        );
    }

    #[test]
    fn rewrite_in_place() {
        let mut m = port_unreachable();
        let mut p = IcmpErrorPacket::new_unchecked(&mut m[..]);
        p.quoted_packet_mut()
            .set_src_addr(Ipv4Addr::new(192, 168, 252, 7));
        p.quoted_packet_mut().fill_checksum();
        p.quoted_transport_mut()[0..2].copy_from_slice(&1234u16.to_be_bytes());
        p.fill_checksum();
        let p = IcmpErrorPacket::new_checked(&m[..]).unwrap();
        assert!(p.verify_checksum());
        assert!(p.quoted_packet().verify_checksum());
        assert_eq!(p.quoted_src_addr(), Ipv4Addr::new(192, 168, 252, 7));
        assert_eq!(p.quoted_src_port(), 1234);
    }

    #[test]
    fn garbage_is_harmless() {
        let p = IcmpErrorPacket::new_unchecked(&[3u8, 0, 0][..]);
        assert!(p.quoted_transport().is_empty());
        assert_eq!(p.quoted_dst_port(), 0);
        assert!(!p.verify_checksum());
        let mut b = [0u8; 4];
        let mut p = IcmpErrorPacket::new_unchecked(&mut b[..]);
        assert!(p.quoted_transport_mut().is_empty());
        p.quoted_packet_mut().set_ttl(1);
        p.fill_checksum();
    }
}
