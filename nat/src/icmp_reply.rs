//! Emitting the ICMP errors a forwarding NAT owes the sender (RFC 792,
//! RFC 1812 section 4.3.2): time exceeded when a packet's TTL runs out here,
//! fragmentation needed when a DF packet is larger than the next link.
//!
//! The error quotes the offending IPv4 header and the first 8 bytes of its
//! payload (RFC 792's minimum, enough for ports and ICMP identifiers). The
//! translator only asks for errors where RFC 1812 allows one (never about
//! an ICMP error, a later fragment or a broadcast).

use core::net::Ipv4Addr;

use crate::checksum;

/// Which error to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IcmpErrorKind {
    /// Type 11 code 0: TTL exceeded in transit.
    TimeExceeded,
    /// Type 3 code 4: fragmentation needed and DF set, with the next-hop
    /// MTU (RFC 1191).
    FragmentationNeeded { mtu: u16 },
}

const IP_HEADER: usize = 20;
const ICMP_HEADER: usize = 8;
const QUOTED_PAYLOAD: usize = 8;
const TTL: u8 = 64;

/// Writes into `buf` an IPv4 packet from `src` to the source of
/// `offending` carrying the ICMP error `kind`; returns its length, or 0
/// when `offending` is not an IPv4 packet or `buf` is too small.
pub fn emit(buf: &mut [u8], src: Ipv4Addr, ident: u16, kind: IcmpErrorKind, offending: &[u8]) -> usize {
    let Some(&ver_ihl) = offending.first() else { return 0 };
    let ihl = usize::from(ver_ihl & 0x0f).saturating_mul(4);
    if ver_ihl >> 4 != 4 || ihl < IP_HEADER {
        return 0;
    }
    let quoted_len = offending.len().min(ihl.saturating_add(QUOTED_PAYLOAD));
    let (Some(quoted), Some(dst)) = (offending.get(..quoted_len), offending.get(12..16)) else { return 0 };
    if quoted_len < ihl {
        return 0;
    }
    let icmp_len = ICMP_HEADER.saturating_add(quoted_len);
    let total = IP_HEADER.saturating_add(icmp_len);
    let Some(out) = buf.get_mut(..total) else { return 0 };
    let Ok(total16) = u16::try_from(total) else { return 0 };
    out.fill(0);
    let (ip, icmp) = out.split_at_mut(IP_HEADER);

    let (icmp_type, icmp_code, rest) = match kind {
        IcmpErrorKind::TimeExceeded => (11u8, 0u8, [0u8; 4]),
        IcmpErrorKind::FragmentationNeeded { mtu } => {
            let m = mtu.to_be_bytes();
            (3, 4, [0, 0, m[0], m[1]])
        }
    };
    let header: [u8; 8] = [icmp_type, icmp_code, 0, 0, rest[0], rest[1], rest[2], rest[3]];
    let (icmp_head, icmp_body) = icmp.split_at_mut(ICMP_HEADER);
    icmp_head.copy_from_slice(&header);
    icmp_body.copy_from_slice(quoted);
    let c = checksum::checksum(icmp).to_be_bytes();
    if let Some(field) = icmp.get_mut(2..4) {
        field.copy_from_slice(&c);
    }

    let t = total16.to_be_bytes();
    let id = ident.to_be_bytes();
    let s = src.octets();
    let ip_header: [u8; IP_HEADER] = [
        0x45, 0, t[0], t[1], id[0], id[1], 0, 0, TTL, 1, 0, 0,
        s[0], s[1], s[2], s[3], 0, 0, 0, 0,
    ];
    ip.copy_from_slice(&ip_header);
    if let Some(d) = ip.get_mut(16..20) {
        d.copy_from_slice(dst);
    }
    let c = checksum::checksum(ip).to_be_bytes();
    if let Some(field) = ip.get_mut(10..12) {
        field.copy_from_slice(&c);
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{IcmpPacket, Ipv4Packet};

    fn udp_packet(ttl: u8) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 36, 0x12, 0x34, 0x40, 0, ttl, 17, 0, 0, 192, 168, 252, 10, 10, 0, 0, 1];
        p.extend_from_slice(&[0x30, 0x39, 0, 53, 0, 16, 0, 0]);
        p.extend_from_slice(b"payload!");
        let c = checksum::checksum(&p[..20]).to_be_bytes();
        p[10] = c[0];
        p[11] = c[1];
        p
    }

    #[test]
    fn time_exceeded_quotes_header_and_8_bytes() {
        let offending = udp_packet(1);
        let mut buf = [0u8; 1500];
        let n = emit(&mut buf, Ipv4Addr::new(192, 168, 252, 1), 7, IcmpErrorKind::TimeExceeded, &offending);
        assert_eq!(n, 20 + 8 + 28);
        let ip = Ipv4Packet::new_checked(&buf[..n]).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!(ip.src_addr(), Ipv4Addr::new(192, 168, 252, 1));
        assert_eq!(ip.dst_addr(), Ipv4Addr::new(192, 168, 252, 10));
        let icmp = IcmpPacket::new_checked(ip.payload()).unwrap();
        assert!(icmp.verify_checksum());
        assert_eq!((buf[20], icmp.msg_code()), (11, 0));
        assert_eq!(&buf[28..n], &offending[..28]);
    }

    #[test]
    fn fragmentation_needed_carries_the_mtu() {
        let offending = udp_packet(64);
        let mut buf = [0u8; 100];
        let n = emit(&mut buf, Ipv4Addr::new(10, 0, 0, 2), 1, IcmpErrorKind::FragmentationNeeded { mtu: 1400 }, &offending);
        assert!(n > 0);
        assert_eq!((buf[20], buf[21]), (3, 4));
        assert_eq!(u16::from_be_bytes([buf[26], buf[27]]), 1400);
        assert_eq!(checksum::checksum(&buf[20..n]), 0);
    }

    #[test]
    fn garbage_and_small_buffers_give_nothing() {
        let mut buf = [0u8; 1500];
        assert_eq!(emit(&mut buf, Ipv4Addr::LOCALHOST, 0, IcmpErrorKind::TimeExceeded, &[]), 0);
        assert_eq!(emit(&mut buf, Ipv4Addr::LOCALHOST, 0, IcmpErrorKind::TimeExceeded, &[0x65; 40]), 0);
        assert_eq!(emit(&mut buf, Ipv4Addr::LOCALHOST, 0, IcmpErrorKind::TimeExceeded, &[0x4f; 10]), 0);
        let mut small = [0u8; 30];
        assert_eq!(emit(&mut small, Ipv4Addr::LOCALHOST, 0, IcmpErrorKind::TimeExceeded, &udp_packet(1)), 0);
        for len in 0..40 {
            let p = udp_packet(1);
            let _ = emit(&mut buf, Ipv4Addr::LOCALHOST, 0, IcmpErrorKind::TimeExceeded, &p[..len.min(p.len())]);
        }
    }
}
