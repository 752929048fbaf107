//! Feeds arbitrary IPv4 packets alternately to `Nat::outbound` and
//! `Nat::inbound` of a small NAT (with a static rule), plus replies and
//! ICMP errors synthesised from what it forwarded, so that inputs reach
//! established flows, state transitions, expiry and a full table.
//!
//! Checks: nothing panics; a forwarded packet still parses, leaves from
//! the external address (outbound) or goes to an internal host (inbound),
//! and keeps every checksum that was valid valid; a packet not forwarded
//! is untouched; the table never exceeds its capacity and its counters
//! agree with it.
//!
//! Input layout:
//!
//! ```text
//! ctl:u8  then records  op:u8 dt:u8 len:u8 bytes[len]
//! ```
//!
//! `ctl` picks the capacity (8 or 32 flows), the port range (2 or 64
//! ports) and whether a static rule exists. `op & 7`: 0-1 the bytes go
//! out, 2-3 they come in, 4 the reply to the last forwarded outbound
//! packet comes in (with TCP flags from the first byte), 5 an ICMP error
//! quoting the last outbound packet comes in, 6 an ICMP error quoting the
//! last inbound packet goes out, 7 the bytes go out and in as batches.
//! `dt` advances the clock (x 100 ms, or x 64 s with its top bit).
#![no_main]

use core::net::Ipv4Addr;

use libfuzzer_sys::fuzz_target;
use pih_nat::checksum;
use pih_nat::host::Ipv4Cidr;
use pih_nat::table::Protocol;
use pih_nat::translate::{Nat, NatConfig, Verdict};
use pih_nat::wire::{IcmpPacket, IpProtocol, Ipv4Packet, TcpPacket, UdpPacket};
use pih_nat::NS_PER_SEC;

const EXT: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const INT: Ipv4Addr = Ipv4Addr::new(192, 168, 252, 1);
const ROUTER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const SERVER: Ipv4Addr = Ipv4Addr::new(192, 168, 252, 5);

/// Which checksums of a packet verify: (IPv4 header, transport).
fn sums(p: &[u8]) -> (bool, Option<bool>) {
    let Ok(ip) = Ipv4Packet::new_checked(p) else {
        return (false, None);
    };
    let l4 = ip.payload();
    let transport = if ip.is_fragment() {
        None
    } else {
        match ip.protocol() {
            IpProtocol::Tcp => TcpPacket::new_checked(l4)
                .ok()
                .map(|t| t.verify_checksum(ip.src_addr(), ip.dst_addr())),
            IpProtocol::Udp => UdpPacket::new_checked(l4)
                .ok()
                .map(|u| u.verify_checksum(ip.src_addr(), ip.dst_addr())),
            IpProtocol::Icmp => IcmpPacket::new_checked(l4)
                .ok()
                .map(|i| i.verify_checksum()),
            IpProtocol::Unknown(_) => None,
        }
    };
    (ip.verify_checksum(), transport)
}

fn check(v: Verdict, before: &[u8], after: &[u8], outbound: bool, subnet: Ipv4Cidr) {
    if v != Verdict::Forward {
        assert_eq!(before, after, "a packet not forwarded is untouched");
        return;
    }
    let ip = Ipv4Packet::new_checked(after).expect("forwarded packet parses");
    if outbound {
        assert_eq!(ip.src_addr(), EXT);
    } else {
        assert!(subnet.is_host_addr(ip.dst_addr()) && ip.dst_addr() != INT);
        assert_eq!(ip.dst_addr() == EXT, false);
    }
    let (ip_ok, l4_ok) = sums(before);
    let (ip_now, l4_now) = sums(after);
    if ip_ok {
        assert!(ip_now, "IPv4 checksum broken by the rewrite");
        assert_eq!(ip.ttl().wrapping_add(1), before[8]);
    }
    if l4_ok == Some(true) {
        assert_eq!(
            l4_now,
            Some(true),
            "transport checksum broken by the rewrite"
        );
    }
}

/// The reply to a forwarded outbound packet: addresses (and TCP/UDP ports)
/// swapped, an echo request turned into a reply, TCP flags replaced.
fn reply(p: &mut [u8], flags: u8) -> bool {
    let Ok(ip) = Ipv4Packet::new_checked(&*p) else {
        return false;
    };
    let (hl, proto) = (usize::from(ip.header_len()), ip.protocol());
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    let mut ip = Ipv4Packet::new_unchecked(&mut *p);
    ip.set_src_addr(dst);
    ip.set_dst_addr(src);
    let l4 = &mut p[hl..];
    match proto {
        IpProtocol::Tcp | IpProtocol::Udp if l4.len() >= 8 => {
            let (a, b) = (
                u16::from_be_bytes([l4[0], l4[1]]),
                u16::from_be_bytes([l4[2], l4[3]]),
            );
            l4[0..2].copy_from_slice(&b.to_be_bytes());
            l4[2..4].copy_from_slice(&a.to_be_bytes());
            if proto == IpProtocol::Tcp && l4.len() >= 20 {
                let old = u16::from_be_bytes([l4[12], l4[13]]);
                l4[13] = flags;
                let new = u16::from_be_bytes([l4[12], l4[13]]);
                let c = checksum::update(u16::from_be_bytes([l4[16], l4[17]]), old, new);
                l4[16..18].copy_from_slice(&c.to_be_bytes());
            }
            true
        }
        IpProtocol::Icmp if l4.len() >= 8 && l4[0] == 8 => {
            let old = u16::from_be_bytes([l4[0], l4[1]]);
            l4[0] = 0;
            let new = u16::from_be_bytes([l4[0], l4[1]]);
            let c = checksum::update(u16::from_be_bytes([l4[2], l4[3]]), old, new);
            l4[2..4].copy_from_slice(&c.to_be_bytes());
            true
        }
        _ => false,
    }
}

/// An ICMP error from `src` to `dst` quoting `quoted` (up to 64 bytes).
fn icmp_error(buf: &mut [u8; 128], src: Ipv4Addr, dst: Ipv4Addr, kind: u8, quoted: &[u8]) -> usize {
    let q = quoted.len().min(64);
    let len = 28 + q;
    buf.fill(0);
    let mut ip = Ipv4Packet::new_unchecked(&mut buf[..len]);
    ip.set_version(4);
    ip.set_header_len(20);
    ip.set_total_len(len as u16);
    ip.set_ttl(64);
    ip.set_protocol(IpProtocol::Icmp);
    ip.set_src_addr(src);
    ip.set_dst_addr(dst);
    ip.fill_checksum();
    buf[20] = [3, 11, 12][usize::from(kind % 3)];
    buf[21] = kind >> 4;
    buf[28..len].copy_from_slice(&quoted[..q]);
    IcmpPacket::new_unchecked(&mut buf[20..len]).fill_checksum();
    len
}

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, mut rest)) = data.split_first() else {
        return;
    };
    let subnet = Ipv4Cidr::new(INT, 24).unwrap();
    let mut config = NatConfig::new(EXT, subnet);
    let capacity = if ctl & 1 != 0 { 32 } else { 8 };
    config.table.capacity = capacity;
    config.table.static_capacity = 2;
    config.table.ports = if ctl & 2 != 0 {
        1000..=1063
    } else {
        1000..=1001
    };
    config.external_mtu = if ctl & 8 != 0 { 576 } else { 1500 };
    let mut nat = Nat::new(&config, [u64::from(ctl), 1, 2, 3]).unwrap();
    if ctl & 4 != 0 {
        nat.insert_static(0, Protocol::Udp, 5000, CLIENT, SERVER, 53)
            .unwrap();
        nat.insert_static(0, Protocol::Tcp, 5000, CLIENT, SERVER, 22)
            .unwrap();
    }
    let mut now = 0u64;
    let mut last_out = [0u8; 128];
    let mut last_out_len = 0usize;
    let mut last_in = [0u8; 128];
    let mut last_in_len = 0usize;
    let mut buf = [0u8; 1600];
    while let [op, dt, len, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let (bytes, next) = tail.split_at(len);
        rest = next;
        now += if dt & 0x80 != 0 {
            u64::from(dt & 0x7f) * 64 * NS_PER_SEC
        } else {
            u64::from(*dt) * NS_PER_SEC / 10
        };
        match op & 7 {
            o @ (0..=3) => {
                let outbound = o < 2;
                let p = &mut buf[..len];
                p.copy_from_slice(bytes);
                let before = p.to_vec();
                let v = if outbound {
                    nat.outbound(now, p)
                } else {
                    nat.inbound(now, p)
                };
                check(v, &before, p, outbound, subnet);
                if v == Verdict::Forward {
                    let n = len.min(128);
                    if outbound {
                        last_out[..n].copy_from_slice(&p[..n]);
                        last_out_len = n;
                    } else {
                        last_in[..n].copy_from_slice(&p[..n]);
                        last_in_len = n;
                    }
                }
            }
            4 => {
                let n = last_out_len;
                let p = &mut buf[..n];
                p.copy_from_slice(&last_out[..n]);
                if reply(p, bytes.first().copied().unwrap_or(0x10)) {
                    let before = p.to_vec();
                    let v = nat.inbound(now, p);
                    check(v, &before, p, false, subnet);
                }
            }
            5 | 6 => {
                let outbound = op & 7 == 6;
                let mut e = [0u8; 128];
                let kind = bytes.first().copied().unwrap_or(0);
                let q = usize::from(bytes.get(1).copied().unwrap_or(255));
                let n = if outbound {
                    let d = Ipv4Packet::new_unchecked(&last_in[..]).src_addr();
                    icmp_error(&mut e, SERVER, d, kind, &last_in[..last_in_len.min(q)])
                } else {
                    icmp_error(&mut e, ROUTER, EXT, kind, &last_out[..last_out_len.min(q)])
                };
                let before = e[..n].to_vec();
                let v = if outbound {
                    nat.outbound(now, &mut e[..n])
                } else {
                    nat.inbound(now, &mut e[..n])
                };
                check(v, &before, &e[..n], outbound, subnet);
                if v == Verdict::Forward {
                    let icmp = IcmpPacket::new_checked(&e[20..n]).expect("translated error parses");
                    assert!(icmp.verify_checksum(), "ICMP error checksum");
                }
            }
            _ => {
                let mut batch = [[0u8; 64]; 4];
                for (i, p) in batch.iter_mut().enumerate() {
                    let b = bytes.get(i * 16..).unwrap_or(&[]);
                    let n = b.len().min(64);
                    p[..n].copy_from_slice(&b[..n]);
                }
                let mut v = [Verdict::Forward; 4];
                assert_eq!(nat.outbound_batch(now, &mut batch, &mut v), 4);
                assert_eq!(nat.inbound_batch(now, &mut batch, &mut v[..2]), 2);
                nat.expire(now);
            }
        }
        let t = nat.table();
        assert!(t.len() <= capacity);
        assert_eq!(t.stats().active_total(), t.len() as u64);
        assert_eq!(t.iter().count(), t.len());
    }
    if ctl & 16 != 0 {
        let _ = nat.remove_static(now, Protocol::Udp, 5000);
        nat.expire(now + 100_000 * NS_PER_SEC);
        nat.expire(now + 200_000 * NS_PER_SEC);
    }
});
