use super::*;
use crate::table::{TcpState, Timeouts};
use crate::testutil::{naive_checksum, naive_verify, XorShift};
use crate::NS_PER_SEC;

const S: u64 = NS_PER_SEC;
const EXT: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const INT_NET: Ipv4Addr = Ipv4Addr::new(192, 168, 252, 1);
const HOST: Ipv4Addr = Ipv4Addr::new(192, 168, 252, 7);
const HOST2: Ipv4Addr = Ipv4Addr::new(192, 168, 252, 8);
const REMOTE: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 9);
const REMOTE2: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 20);
const ROUTER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const ACK: u8 = 0x10;

fn config(capacity: usize) -> NatConfig {
    let mut c = NatConfig::new(EXT, Ipv4Cidr::new(INT_NET, 24).unwrap());
    c.table.capacity = capacity;
    c
}

fn nat(capacity: usize) -> Nat {
    Nat::new(&config(capacity), [7, 7, 7, 7]).unwrap()
}

// ------------------------------------------------------------ builders

/// An IPv4 header (20 bytes, DF, TTL 64) followed by `payload`, header
/// checksum by the naive implementation.
fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, payload: &[u8]) -> Vec<u8> {
    let total = 20 + payload.len();
    let mut p = vec![
        0x45,
        0,
        (total >> 8) as u8,
        total as u8,
        0x12,
        0x34,
        0x40,
        0,
        64,
        proto,
        0,
        0,
    ];
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    let c = naive_checksum(&p);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// The transport checksum over the pseudo-header, naively.
fn l4_checksum(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, l4: &[u8]) -> u16 {
    let mut b = Vec::new();
    b.extend_from_slice(&src.octets());
    b.extend_from_slice(&dst.octets());
    b.extend_from_slice(&[0, proto]);
    b.extend_from_slice(&(l4.len() as u16).to_be_bytes());
    b.extend_from_slice(l4);
    naive_checksum(&b)
}

fn tcp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, flags: u8, data: &[u8]) -> Vec<u8> {
    let mut l4 = Vec::new();
    l4.extend_from_slice(&sport.to_be_bytes());
    l4.extend_from_slice(&dport.to_be_bytes());
    l4.extend_from_slice(&0x1000_0000u32.to_be_bytes());
    l4.extend_from_slice(&0x2000_0000u32.to_be_bytes());
    l4.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    l4.extend_from_slice(data);
    let c = l4_checksum(src, dst, 6, &l4);
    l4[16..18].copy_from_slice(&c.to_be_bytes());
    ipv4(src, dst, 6, &l4)
}

fn udp(
    src: Ipv4Addr,
    sport: u16,
    dst: Ipv4Addr,
    dport: u16,
    data: &[u8],
    with_sum: bool,
) -> Vec<u8> {
    let mut l4 = Vec::new();
    l4.extend_from_slice(&sport.to_be_bytes());
    l4.extend_from_slice(&dport.to_be_bytes());
    l4.extend_from_slice(&((8 + data.len()) as u16).to_be_bytes());
    l4.extend_from_slice(&[0, 0]);
    l4.extend_from_slice(data);
    if with_sum {
        let mut c = l4_checksum(src, dst, 17, &l4);
        if c == 0 {
            c = 0xffff;
        }
        l4[6..8].copy_from_slice(&c.to_be_bytes());
    }
    ipv4(src, dst, 17, &l4)
}

fn icmp_echo(src: Ipv4Addr, dst: Ipv4Addr, reply: bool, id: u16, data: &[u8]) -> Vec<u8> {
    let mut l4 = vec![if reply { 0 } else { 8 }, 0, 0, 0];
    l4.extend_from_slice(&id.to_be_bytes());
    l4.extend_from_slice(&[0, 1]);
    l4.extend_from_slice(data);
    let c = naive_checksum(&l4);
    l4[2..4].copy_from_slice(&c.to_be_bytes());
    ipv4(src, dst, 1, &l4)
}

/// An ICMP error of `kind` from `src` to `dst` quoting the first
/// `header + quote` bytes of `offending`.
fn icmp_error(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    kind: u8,
    code: u8,
    offending: &[u8],
    quote: usize,
) -> Vec<u8> {
    let hl = usize::from(offending[0] & 0x0f) * 4;
    let n = (hl + quote).min(offending.len());
    let mut l4 = vec![kind, code, 0, 0, 0, 0, 0, 0];
    l4.extend_from_slice(&offending[..n]);
    let c = naive_checksum(&l4);
    l4[2..4].copy_from_slice(&c.to_be_bytes());
    ipv4(src, dst, 1, &l4)
}

// ------------------------------------------------------------ readers

fn src_of(p: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(p[12], p[13], p[14], p[15])
}

fn dst_of(p: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(p[16], p[17], p[18], p[19])
}

fn hl(p: &[u8]) -> usize {
    usize::from(p[0] & 0x0f) * 4
}

fn total(p: &[u8]) -> usize {
    usize::from(u16::from_be_bytes([p[2], p[3]]))
}

fn l4(p: &[u8]) -> &[u8] {
    &p[hl(p)..total(p)]
}

fn sport(p: &[u8]) -> u16 {
    u16::from_be_bytes([l4(p)[0], l4(p)[1]])
}

fn dport(p: &[u8]) -> u16 {
    u16::from_be_bytes([l4(p)[2], l4(p)[3]])
}

fn icmp_id(p: &[u8]) -> u16 {
    u16::from_be_bytes([l4(p)[4], l4(p)[5]])
}

/// Full recomputation of every checksum of a whole (unfragmented) packet:
/// the IPv4 header, the transport (TCP, UDP unless zero, ICMP), and for
/// ICMP errors the quoted IPv4 header (and the quoted UDP or TCP checksum
/// when the whole quoted datagram is there).
fn checksums_valid(p: &[u8]) -> bool {
    if !naive_verify(&p[..hl(p)]) {
        return false;
    }
    let seg = l4(p);
    match p[9] {
        6 => l4_checksum(src_of(p), dst_of(p), 6, seg) == 0,
        17 => {
            let c = u16::from_be_bytes([seg[6], seg[7]]);
            c == 0 || l4_checksum(src_of(p), dst_of(p), 17, seg) == 0
        }
        1 => {
            if !naive_verify(seg) {
                return false;
            }
            if matches!(seg[0], 3 | 11 | 12) {
                let q = &seg[8..];
                if !naive_verify(&q[..hl(q)]) {
                    return false;
                }
                if total(q) <= q.len() {
                    return checksums_valid(&q[..total(q)]);
                }
            }
            true
        }
        _ => true,
    }
}

/// The reply to a translated outbound packet: addresses and ports swapped
/// (echo request -> reply), TTL 64, checksums recomputed.
fn reply_to(p: &[u8], data: &[u8]) -> Vec<u8> {
    match p[9] {
        6 => tcp(dst_of(p), dport(p), src_of(p), sport(p), ACK, data),
        17 => udp(dst_of(p), dport(p), src_of(p), sport(p), data, true),
        _ => icmp_echo(dst_of(p), src_of(p), true, icmp_id(p), data),
    }
}

// ------------------------------------------------------------ tests

#[test]
fn tcp_there_and_back() {
    let mut n = nat(64);
    let mut syn = tcp(HOST, 40000, REMOTE, 80, SYN, b"");
    let orig = syn.clone();
    assert_eq!(n.outbound(0, &mut syn), Verdict::Forward);
    assert_eq!(src_of(&syn), EXT);
    assert_eq!(dst_of(&syn), REMOTE);
    assert_eq!(dport(&syn), 80);
    assert_eq!(syn[8], 63, "TTL decremented");
    assert!(checksums_valid(&syn));
    // Everything else is untouched.
    assert_eq!(&syn[..8], &orig[..8]);
    assert_eq!(&syn[20 + 2..20 + 16], &orig[20 + 2..20 + 16]);
    let p = sport(&syn);

    let mut synack = tcp(REMOTE, 80, EXT, p, SYN | ACK, b"");
    assert_eq!(n.inbound(0, &mut synack), Verdict::Forward);
    assert_eq!(dst_of(&synack), HOST);
    assert_eq!(dport(&synack), 40000);
    assert_eq!(src_of(&synack), REMOTE);
    assert_eq!(sport(&synack), 80);
    assert!(checksums_valid(&synack));

    let mut ack = tcp(HOST, 40000, REMOTE, 80, ACK, b"GET / HTTP/1.0\r\n\r\n");
    assert_eq!(n.outbound(S, &mut ack), Verdict::Forward);
    assert_eq!(sport(&ack), p);
    assert!(checksums_valid(&ack));
    let f = n
        .table()
        .flow(
            n.table()
                .find_outbound(
                    S,
                    &OutboundKey {
                        protocol: Protocol::Tcp,
                        int_addr: HOST,
                        int_port: 40000,
                        remote_addr: REMOTE,
                        remote_port: 80,
                    },
                )
                .unwrap(),
        )
        .unwrap();
    assert_eq!(f.tcp_state, Some(TcpState::Established));
    assert_eq!(n.counters().outbound, 2);
    assert_eq!(n.counters().inbound, 1);
}

/// Property: for random protocols, endpoints and payloads, the reply to a
/// translated packet comes back to exactly the original endpoint, and
/// every checksum is right on both legs.
#[test]
fn property_there_and_back_is_identity_on_the_inside() {
    let mut n = nat(4096);
    let mut rng = XorShift(0x5eed_1234_abcd_ef01);
    let mut now = 0u64;
    for i in 0..5000 {
        now += rng.below(1000) as u64 * 1_000_000;
        let host = Ipv4Addr::new(192, 168, 252, 2 + rng.below(250) as u8);
        let remote = Ipv4Addr::new(
            1 + rng.below(126) as u8,
            rng.next() as u8,
            rng.next() as u8,
            1 + rng.below(250) as u8,
        );
        let sp = 1 + rng.below(65535) as u16;
        let dp = 1 + rng.below(65535) as u16;
        let len = rng.below(64);
        let data = rng.bytes(len);
        let kind = rng.below(4);
        let mut out = match kind {
            0 => tcp(host, sp, remote, dp, SYN, &data),
            1 => udp(host, sp, remote, dp, &data, true),
            2 => udp(host, sp, remote, dp, &data, false),
            _ => icmp_echo(host, remote, false, sp, &data),
        };
        let before = out.clone();
        assert_eq!(n.outbound(now, &mut out), Verdict::Forward, "packet {i}");
        assert!(checksums_valid(&out), "outbound checksums, packet {i}");
        assert_eq!(src_of(&out), EXT);
        assert_eq!(dst_of(&out), remote);
        assert_eq!(out.len(), before.len());
        if kind == 2 {
            assert_eq!(&l4(&out)[6..8], &[0, 0], "no UDP checksum stays none");
        }
        if kind < 3 {
            assert_eq!(dport(&out), dp);
        }
        // Payload untouched.
        let skip = [20, 8, 8, 8][kind];
        assert_eq!(&l4(&out)[skip..], &l4(&before)[skip..]);

        let len = rng.below(64);
        let reply_data = rng.bytes(len);
        let mut back = reply_to(&out, &reply_data);
        assert_eq!(n.inbound(now, &mut back), Verdict::Forward, "reply {i}");
        assert!(checksums_valid(&back), "inbound checksums, reply {i}");
        assert_eq!(src_of(&back), remote);
        assert_eq!(dst_of(&back), host);
        if kind < 3 {
            assert_eq!(sport(&back), dp);
            assert_eq!(dport(&back), sp);
        } else {
            assert_eq!(icmp_id(&back), sp);
        }
        n.expire(now);
    }
}

/// Property: checksums stay right for random packets, including those
/// whose checksum computes to zero before or after the rewrite (a UDP
/// checksum of zero must then be sent as 0xffff).
#[test]
fn property_checksums_always_valid_after_rewriting() {
    let mut n = nat(65_536);
    let mut rng = XorShift(42);
    let (mut zero_after, mut zero_before) = (0, 0);
    for i in 0..20_000u32 {
        let host = Ipv4Addr::new(192, 168, 252, 2 + (i % 250) as u8);
        let sp = (i / 250) as u16 + 1;
        let len = 2 * rng.below(20);
        let mut data = rng.bytes(len);
        data.extend_from_slice(&[0, 0]);
        if i % 3 != 0 {
            // Learn the external port, then choose the last payload word
            // so that the checksum computes to zero on one side.
            let mut probe = udp(host, sp, REMOTE, 53, b"", true);
            assert_eq!(n.outbound(0, &mut probe), Verdict::Forward);
            let (src, port) = if i % 3 == 1 {
                (EXT, sport(&probe))
            } else {
                (host, sp)
            };
            let p = udp(src, port, REMOTE, 53, &data, false);
            let c = l4_checksum(src, REMOTE, 17, l4(&p));
            let at = data.len() - 2;
            data[at..].copy_from_slice(&c.to_be_bytes());
        }
        let mut p = udp(host, sp, REMOTE, 53, &data, true);
        assert!(checksums_valid(&p));
        if u16::from_be_bytes([p[26], p[27]]) == 0xffff {
            zero_before += 1;
        }
        assert_eq!(n.outbound(0, &mut p), Verdict::Forward);
        assert!(checksums_valid(&p), "packet {i}");
        let c = u16::from_be_bytes([p[26], p[27]]);
        assert_ne!(c, 0, "a computed zero is sent as 0xffff");
        if c == 0xffff {
            zero_after += 1;
        }
    }
    assert!(
        zero_before > 1000 && zero_after > 1000,
        "{zero_before} {zero_after}"
    );
    // TCP with random headers, odd lengths.
    for i in 0..5000u32 {
        let len = rng.below(100);
        let data = rng.bytes(len);
        let mut p = tcp(HOST2, 1 + (i % 60000) as u16, REMOTE2, 443, SYN, &data);
        // Random seq/ack/window, checksum refilled.
        for b in &mut p[24..36] {
            *b = rng.next() as u8;
        }
        p[33] = SYN;
        let mut seg = p[20..].to_vec();
        seg[16] = 0;
        seg[17] = 0;
        let c = l4_checksum(HOST2, REMOTE2, 6, &seg);
        p[36..38].copy_from_slice(&c.to_be_bytes());
        assert!(checksums_valid(&p));
        assert_eq!(n.outbound(0, &mut p), Verdict::Forward);
        assert!(checksums_valid(&p), "tcp packet {i}");
    }
}

#[test]
fn endpoint_independent_mapping_through_packets() {
    let mut n = nat(64);
    let mut a = udp(HOST, 5000, REMOTE, 53, b"a", true);
    let mut b = udp(HOST, 5000, REMOTE2, 123, b"b", true);
    let mut c = tcp(HOST, 5000, REMOTE2, 123, SYN, b"");
    assert_eq!(n.outbound(0, &mut a), Verdict::Forward);
    assert_eq!(n.outbound(0, &mut b), Verdict::Forward);
    assert_eq!(n.outbound(0, &mut c), Verdict::Forward);
    assert_eq!(
        sport(&a),
        sport(&b),
        "same internal endpoint, same external port"
    );
    assert_eq!(n.table().stats().mappings, 2, "one per protocol");
    let mut d = udp(HOST2, 5000, REMOTE, 53, b"d", true);
    assert_eq!(n.outbound(0, &mut d), Verdict::Forward);
    assert_ne!(sport(&a), sport(&d));
}

#[test]
fn address_and_port_dependent_filtering_through_packets() {
    let mut n = nat(64);
    let mut a = udp(HOST, 5000, REMOTE, 53, b"a", true);
    assert_eq!(n.outbound(0, &mut a), Verdict::Forward);
    let p = sport(&a);
    // An unrelated remote, the right remote from another port, and an
    // unsolicited SYN to the same port: all dropped silently.
    let mut x = udp(REMOTE2, 53, EXT, p, b"x", true);
    assert_eq!(n.inbound(0, &mut x), Verdict::Drop(DropReason::Filtered));
    let mut y = udp(REMOTE, 54, EXT, p, b"y", true);
    assert_eq!(n.inbound(0, &mut y), Verdict::Drop(DropReason::Filtered));
    let mut z = tcp(REMOTE, 53, EXT, p, SYN, b"");
    assert_eq!(n.inbound(0, &mut z), Verdict::Drop(DropReason::NoMapping));
    let mut w = udp(REMOTE, 53, EXT, p.wrapping_add(1), b"w", true);
    assert_eq!(n.inbound(0, &mut w), Verdict::Drop(DropReason::NoMapping));
    let mut e = icmp_echo(REMOTE, EXT, true, 77, b"");
    assert_eq!(n.inbound(0, &mut e), Verdict::Drop(DropReason::NoMapping));
    // An echo *request* to the external address never reaches inside.
    let mut e = icmp_echo(REMOTE, EXT, false, 77, b"");
    assert_eq!(n.inbound(0, &mut e), Verdict::Drop(DropReason::Unsupported));
    assert_eq!(n.counters().dropped(DropReason::Filtered), 2);
    assert_eq!(n.counters().dropped(DropReason::NoMapping), 3);
    assert_eq!(n.counters().inbound, 0);
    assert_eq!(n.table().len(), 1);
    // Dropped packets are untouched.
    assert_eq!(x, udp(REMOTE2, 53, EXT, p, b"x", true));
}

#[test]
fn addressing_rules() {
    let mut n = nat(64);
    let mut to_self = udp(HOST, 5000, EXT, 53, b"", true);
    assert_eq!(
        n.outbound(0, &mut to_self),
        Verdict::Drop(DropReason::ToSelf)
    );
    let mut foreign = udp(REMOTE2, 5000, REMOTE, 53, b"", true);
    assert_eq!(
        n.outbound(0, &mut foreign),
        Verdict::Drop(DropReason::NotInternal)
    );
    let mut from_bridge = udp(INT_NET, 5000, REMOTE, 53, b"", true);
    assert_eq!(
        n.outbound(0, &mut from_bridge),
        Verdict::Drop(DropReason::NotInternal)
    );
    for dst in [
        Ipv4Addr::new(192, 168, 252, 9),
        Ipv4Addr::BROADCAST,
        Ipv4Addr::new(224, 0, 0, 1),
        Ipv4Addr::new(127, 0, 0, 1),
        Ipv4Addr::UNSPECIFIED,
    ] {
        let mut p = udp(HOST, 5000, dst, 53, b"", true);
        assert_eq!(
            n.outbound(0, &mut p),
            Verdict::Drop(DropReason::Martian),
            "{dst}"
        );
    }
    let mut not_ours = udp(REMOTE, 53, Ipv4Addr::new(10, 0, 0, 3), 5000, b"", true);
    assert_eq!(
        n.inbound(0, &mut not_ours),
        Verdict::Drop(DropReason::NotForUs)
    );
    let mut spoofed = udp(HOST2, 53, EXT, 5000, b"", true);
    assert_eq!(
        n.inbound(0, &mut spoofed),
        Verdict::Drop(DropReason::Martian)
    );
    let mut gre = ipv4(HOST, REMOTE, 47, &[0; 8]);
    assert_eq!(
        n.outbound(0, &mut gre),
        Verdict::Drop(DropReason::Unsupported)
    );
    let mut garbage = vec![0x45, 0, 0];
    assert_eq!(
        n.outbound(0, &mut garbage),
        Verdict::Drop(DropReason::Malformed)
    );
    assert_eq!(
        n.inbound(0, &mut garbage),
        Verdict::Drop(DropReason::Malformed)
    );
    let mut short_tcp = ipv4(HOST, REMOTE, 6, &[0; 19]);
    assert_eq!(
        n.outbound(0, &mut short_tcp),
        Verdict::Drop(DropReason::Malformed)
    );
    let mut timestamp = ipv4(HOST, REMOTE, 1, &[13, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(
        n.outbound(0, &mut timestamp),
        Verdict::Drop(DropReason::Unsupported)
    );
    // A TCP packet other than a SYN opens nothing.
    let mut ack = tcp(HOST, 5000, REMOTE, 80, ACK, b"");
    assert_eq!(n.outbound(0, &mut ack), Verdict::Drop(DropReason::NoFlow));
    assert_eq!(n.counters().dropped(DropReason::ToSelf), 1);
    assert_eq!(n.counters().dropped(DropReason::Martian), 6);
    assert_eq!(n.counters().dropped_total(), 16);
    assert!(n.table().is_empty());
    // Ethernet padding after the packet is ignored and left alone.
    let mut padded = udp(HOST, 5000, REMOTE, 53, b"", true);
    padded.extend_from_slice(&[0xee; 18]);
    assert_eq!(n.outbound(0, &mut padded), Verdict::Forward);
    assert!(checksums_valid(&padded));
    assert_eq!(&padded[28..], &[0xee; 18]);
}

#[test]
fn ttl_expiry() {
    let mut n = nat(64);
    let mut p = udp(HOST, 5000, REMOTE, 53, b"x", true);
    p[8] = 1;
    let c = naive_checksum(&{
        let mut h = p[..20].to_vec();
        h[10] = 0;
        h[11] = 0;
        h
    });
    p[10..12].copy_from_slice(&c.to_be_bytes());
    let orig = p.clone();
    assert_eq!(n.outbound(0, &mut p), Verdict::TimeExceeded);
    assert_eq!(p, orig, "untouched");
    assert!(
        n.table().is_empty(),
        "no flow for a packet that goes nowhere"
    );
    assert_eq!(n.counters().time_exceeded, 1);

    // Inbound: only a packet of a flow learns about it.
    let mut ok = udp(HOST, 5000, REMOTE, 53, b"x", true);
    assert_eq!(n.outbound(0, &mut ok), Verdict::Forward);
    let mut back = reply_to(&ok, b"y");
    set_ttl(&mut back, 1);
    let orig = back.clone();
    assert_eq!(n.inbound(0, &mut back), Verdict::TimeExceeded);
    assert_eq!(back, orig);
    let mut stray = udp(REMOTE2, 53, EXT, sport(&ok), b"y", true);
    set_ttl(&mut stray, 1);
    assert_eq!(
        n.inbound(0, &mut stray),
        Verdict::Drop(DropReason::NoMapping)
    );
    set_ttl(&mut back, 0);
    assert_eq!(n.inbound(0, &mut back), Verdict::TimeExceeded);
    set_ttl(&mut back, 2);
    assert_eq!(n.inbound(0, &mut back), Verdict::Forward);
    assert_eq!(back[8], 1);
    assert!(checksums_valid(&back));
    // ICMP errors never cause ICMP errors.
    let mut err = icmp_error(HOST, REMOTE, 3, 3, &reply_to(&ok, b""), 8);
    set_ttl(&mut err, 1);
    assert_eq!(
        n.outbound(0, &mut err),
        Verdict::Drop(DropReason::TtlExpired)
    );
}

fn set_ttl(p: &mut [u8], ttl: u8) {
    p[8] = ttl;
    p[10] = 0;
    p[11] = 0;
    let c = naive_checksum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
}

fn set_frag(p: &mut [u8], df: bool, mf: bool, offset: u16) {
    let v = (u16::from(df) << 14) | (u16::from(mf) << 13) | (offset / 8);
    p[6..8].copy_from_slice(&v.to_be_bytes());
    p[10] = 0;
    p[11] = 0;
    let c = naive_checksum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
}

#[test]
fn mtu_and_dont_fragment() {
    let mut c = config(64);
    c.external_mtu = 576;
    c.internal_mtu = 1000;
    let mut n = Nat::new(&c, [1, 2, 3, 4]).unwrap();
    let mut big = udp(HOST, 5000, REMOTE, 53, &[0; 600], true);
    let orig = big.clone();
    assert_eq!(n.outbound(0, &mut big), Verdict::NeedFrag { mtu: 576 });
    assert_eq!(big, orig);
    set_frag(&mut big, false, false, 0);
    assert_eq!(n.outbound(0, &mut big), Verdict::Drop(DropReason::TooBig));
    assert!(n.table().is_empty());
    let mut fits = udp(HOST, 5000, REMOTE, 53, &[0; 548], true);
    assert_eq!(n.outbound(0, &mut fits), Verdict::Forward);
    let mut back = reply_to(&fits, &[1; 1200]);
    assert_eq!(n.inbound(0, &mut back), Verdict::NeedFrag { mtu: 1000 });
    let mut back = reply_to(&fits, &[1; 900]);
    assert_eq!(n.inbound(0, &mut back), Verdict::Forward);
    assert_eq!(n.counters().need_frag, 2);
}

#[test]
fn icmp_echo_round_trip() {
    let mut n = nat(64);
    let mut a = icmp_echo(HOST, REMOTE, false, 0x1234, b"ping");
    let mut b = icmp_echo(HOST2, REMOTE, false, 0x1234, b"ping");
    assert_eq!(n.outbound(0, &mut a), Verdict::Forward);
    assert_eq!(n.outbound(0, &mut b), Verdict::Forward);
    assert!(checksums_valid(&a) && checksums_valid(&b));
    assert_ne!(
        icmp_id(&a),
        icmp_id(&b),
        "same id from two hosts: two external ids"
    );
    let mut ra = reply_to(&a, b"ping");
    let mut rb = reply_to(&b, b"ping");
    assert_eq!(n.inbound(0, &mut rb), Verdict::Forward);
    assert_eq!(n.inbound(0, &mut ra), Verdict::Forward);
    assert_eq!((dst_of(&ra), icmp_id(&ra)), (HOST, 0x1234));
    assert_eq!((dst_of(&rb), icmp_id(&rb)), (HOST2, 0x1234));
    assert!(checksums_valid(&ra) && checksums_valid(&rb));
    // ICMP flows last 30 s.
    let mut late = reply_to(&a, b"late");
    assert_eq!(
        n.inbound(30 * S, &mut late),
        Verdict::Drop(DropReason::NoMapping)
    );
    assert_eq!(n.table().stats().active[Protocol::Icmp.index()], 1);
}

/// RFC 5508: errors about packets that left through a flow come back to
/// the internal host with the quoted packet translated back.
#[test]
fn inbound_icmp_errors_are_translated_back() {
    let mut n = nat(64);
    // UDP, an error quoting header + 8 bytes from a router on the path.
    let orig = udp(HOST, 5000, REMOTE, 53, b"query", true);
    let mut out = orig.clone();
    assert_eq!(n.outbound(0, &mut out), Verdict::Forward);
    let expires = |n: &Nat| {
        let id = n
            .table()
            .find_outbound(
                0,
                &OutboundKey {
                    protocol: Protocol::Udp,
                    int_addr: HOST,
                    int_port: 5000,
                    remote_addr: REMOTE,
                    remote_port: 53,
                },
            )
            .unwrap();
        n.table().flow(id).unwrap().expires_s
    };
    let deadline = expires(&n);
    for (kind, code, from, quote) in [
        (11, 0, ROUTER, 8),
        (3, 3, REMOTE, 8),
        (3, 4, ROUTER, 100),
        (12, 0, ROUTER, 8),
    ] {
        let mut err = icmp_error(from, EXT, kind, code, &out, quote);
        assert!(checksums_valid(&err));
        assert_eq!(n.inbound(10 * S, &mut err), Verdict::Forward, "type {kind}");
        assert!(checksums_valid(&err), "type {kind}: checksums");
        assert_eq!(dst_of(&err), HOST);
        assert_eq!(src_of(&err), from);
        let q = &l4(&err)[8..];
        assert_eq!(src_of(q), HOST);
        assert_eq!(dst_of(q), REMOTE);
        assert_eq!(u16::from_be_bytes([q[20], q[21]]), 5000);
        assert_eq!(u16::from_be_bytes([q[22], q[23]]), 53);
        // The quoted packet is what the host sent, but for the TTL our
        // forwarding took (and the header checksum that follows it).
        let mut expect = orig.clone();
        set_ttl(&mut expect, 63);
        assert_eq!(&q[..q.len()], &expect[..q.len()]);
    }
    assert_eq!(expires(&n), deadline, "errors do not refresh flows");
    assert_eq!(n.counters().icmp_errors_in, 4);

    // TCP with the whole segment quoted: the quoted checksum is fixed too.
    let orig = tcp(HOST, 6000, REMOTE, 80, SYN, b"");
    let mut out = orig.clone();
    assert_eq!(n.outbound(0, &mut out), Verdict::Forward);
    let mut err = icmp_error(REMOTE, EXT, 3, 1, &out, 20);
    assert_eq!(n.inbound(0, &mut err), Verdict::Forward);
    assert!(checksums_valid(&err));
    let q = &l4(&err)[8..];
    assert_eq!(l4_checksum(HOST, REMOTE, 6, &q[20..40]), 0);
    // Header + 8 only (no TCP checksum quoted): still translated.
    let mut err = icmp_error(REMOTE, EXT, 3, 1, &out, 8);
    assert_eq!(n.inbound(0, &mut err), Verdict::Forward);
    assert!(checksums_valid(&err));
    assert_eq!(u16::from_be_bytes([err[48], err[49]]), 6000);

    // An echo request that timed out on the way.
    let mut ping = icmp_echo(HOST, REMOTE, false, 99, b"abc");
    assert_eq!(n.outbound(0, &mut ping), Verdict::Forward);
    let mut err = icmp_error(ROUTER, EXT, 11, 0, &ping, 8);
    assert_eq!(n.inbound(0, &mut err), Verdict::Forward);
    assert!(checksums_valid(&err));
    let q = &l4(&err)[8..];
    assert_eq!(src_of(q), HOST);
    assert_eq!(u16::from_be_bytes([q[24], q[25]]), 99);

    // Errors about nothing we sent, with bad checksums, or redirects.
    let other = udp(EXT, 1, REMOTE, 53, b"", true);
    let mut err = icmp_error(REMOTE, EXT, 3, 3, &other, 8);
    assert_eq!(n.inbound(0, &mut err), Verdict::Drop(DropReason::NoMapping));
    let not_ours = udp(Ipv4Addr::new(10, 0, 0, 3), 5000, REMOTE, 53, b"", true);
    let mut err = icmp_error(REMOTE, EXT, 3, 3, &not_ours, 8);
    assert_eq!(n.inbound(0, &mut err), Verdict::Drop(DropReason::NoMapping));
    let mut err = icmp_error(REMOTE, EXT, 3, 3, &out, 8);
    let last = err.len() - 1;
    err[last] ^= 1;
    assert_eq!(
        n.inbound(0, &mut err),
        Verdict::Drop(DropReason::BadChecksum)
    );
    let mut err = icmp_error(REMOTE, EXT, 5, 0, &out, 8);
    assert_eq!(
        n.inbound(0, &mut err),
        Verdict::Drop(DropReason::Unsupported)
    );
    let mut err = icmp_error(REMOTE, EXT, 3, 3, &out, 4);
    assert_eq!(n.inbound(0, &mut err), Verdict::Drop(DropReason::Malformed));
}

/// RFC 5508 the other way: an internal host's error about a packet that
/// came in through a flow leaves with the quoted packet as the remote sent
/// it (to the external address and port).
#[test]
fn outbound_icmp_errors_are_translated() {
    let mut n = nat(64);
    let client = REMOTE2;
    n.insert_static(0, Protocol::Udp, 7000, client, HOST, 53)
        .unwrap();
    let sent = udp(client, 4444, EXT, 7000, b"question", true);
    let mut inside = sent.clone();
    assert_eq!(n.inbound(0, &mut inside), Verdict::Forward);
    assert_eq!((dst_of(&inside), dport(&inside)), (HOST, 53));
    // The host answers with port unreachable, quoting what it received.
    let mut err = icmp_error(HOST, client, 3, 3, &inside, 100);
    assert_eq!(n.outbound(S, &mut err), Verdict::Forward);
    assert!(checksums_valid(&err));
    assert_eq!(src_of(&err), EXT);
    assert_eq!(dst_of(&err), client);
    let q = &l4(&err)[8..];
    let mut expect = sent.clone();
    set_ttl(&mut expect, 63);
    assert_eq!(q, &expect[..], "the client sees its own packet quoted");
    assert_eq!(n.counters().icmp_errors_out, 1);
    // Unknown flows are dropped.
    let stray = udp(client, 4445, HOST, 53, b"", true);
    let mut err = icmp_error(HOST, client, 3, 3, &stray, 8);
    assert_eq!(
        n.outbound(S, &mut err),
        Verdict::Drop(DropReason::NoMapping)
    );
}

#[test]
fn fragments_follow_their_first_fragment() {
    let mut n = nat(64);
    // A 1000-byte UDP datagram from HOST, in three fragments.
    let payload: Vec<u8> = (0..992u32).map(|i| (i * 7) as u8).collect();
    let whole = udp(HOST, 5000, REMOTE, 53, &payload, true);
    let datagram = &whole[20..];
    let pieces = [
        (0usize, 400usize, true),
        (400, 400, true),
        (800, 200, false),
    ];
    let frag = |off: usize, len: usize, mf: bool, src: Ipv4Addr, dst: Ipv4Addr, data: &[u8]| {
        let mut p = ipv4(src, dst, 17, &data[off..off + len]);
        set_frag(&mut p, false, mf, off as u16);
        p
    };
    let mut translated = Vec::new();
    // The first fragment must come first: a later one alone is dropped.
    let (off, len, mf) = pieces[1];
    let mut early = frag(off, len, mf, HOST, REMOTE, datagram);
    assert_eq!(
        n.outbound(0, &mut early),
        Verdict::Drop(DropReason::FragmentNoFirst)
    );
    for (off, len, mf) in pieces {
        let mut p = frag(off, len, mf, HOST, REMOTE, datagram);
        assert_eq!(n.outbound(0, &mut p), Verdict::Forward, "fragment at {off}");
        assert!(naive_verify(&p[..20]));
        assert_eq!(src_of(&p), EXT);
        translated.extend_from_slice(&p[20..]);
    }
    assert_eq!(n.counters().fragments_out, 2);
    // Reassembled, the datagram carries a right checksum for ext -> remote.
    assert_eq!(l4_checksum(EXT, REMOTE, 17, &translated), 0);
    let ext_port = u16::from_be_bytes([translated[0], translated[1]]);

    // The reply, fragmented the other way, in any order after the first.
    let answer: Vec<u8> = (0..1192u32).map(|i| (i * 13) as u8).collect();
    let whole = udp(REMOTE, 53, EXT, ext_port, &answer, true);
    let datagram = whole[20..].to_vec();
    let mut back = vec![Vec::new(); 3];
    for (i, (off, len, mf)) in [(0, 600, true), (1000, 200, false), (600, 400, true)]
        .into_iter()
        .enumerate()
    {
        let mut p = frag(off, len, mf, REMOTE, EXT, &datagram);
        assert_eq!(n.inbound(0, &mut p), Verdict::Forward);
        assert_eq!(dst_of(&p), HOST);
        assert!(naive_verify(&p[..20]));
        back[i] = p[20..].to_vec();
    }
    let reassembled = [back[0].clone(), back[2].clone(), back[1].clone()].concat();
    assert_eq!(l4_checksum(REMOTE, HOST, 17, &reassembled), 0);
    assert_eq!(u16::from_be_bytes([reassembled[2], reassembled[3]]), 5000);
    assert_eq!(n.counters().fragments_in, 2);

    // Fragments from an unrelated remote, or too late, are dropped.
    let mut stray = frag(600, 400, true, REMOTE2, EXT, &datagram);
    assert_eq!(
        n.inbound(0, &mut stray),
        Verdict::Drop(DropReason::FragmentNoFirst)
    );
    let mut late = frag(600, 400, true, REMOTE, EXT, &datagram);
    assert_eq!(
        n.inbound(11 * S, &mut late),
        Verdict::Drop(DropReason::FragmentNoFirst)
    );
    assert_eq!(n.counters().dropped(DropReason::FragmentNoFirst), 3);
    // An unsolicited first fragment creates nothing.
    let mut first = frag(0, 600, true, REMOTE2, EXT, &datagram);
    assert_eq!(
        n.inbound(0, &mut first),
        Verdict::Drop(DropReason::Filtered)
    );
    let mut second = frag(600, 400, true, REMOTE2, EXT, &datagram);
    assert_eq!(
        n.inbound(0, &mut second),
        Verdict::Drop(DropReason::FragmentNoFirst)
    );

    // RFC 1858: a TCP fragment at offset 8 is refused; so is a first
    // fragment too short for the ports.
    let t = tcp(HOST, 6000, REMOTE, 80, SYN, &[0; 40]);
    let mut tiny = ipv4(HOST, REMOTE, 6, &t[20..28]);
    set_frag(&mut tiny, false, true, 0);
    assert_eq!(
        n.outbound(0, &mut tiny),
        Verdict::Drop(DropReason::Malformed)
    );
    let mut overlap = ipv4(HOST, REMOTE, 6, &t[28..60]);
    set_frag(&mut overlap, false, false, 8);
    assert_eq!(
        n.outbound(0, &mut overlap),
        Verdict::Drop(DropReason::Malformed)
    );
}

#[test]
fn table_full_through_packets() {
    let mut c = config(64);
    c.table.timeouts = Timeouts::DEFAULT;
    let mut n = Nat::new(&c, [9, 9, 9, 9]).unwrap();
    // 60 established TCP connections and 4 UDP flows fill the table.
    let mut ports = Vec::new();
    for i in 0..60u16 {
        let mut syn = tcp(HOST, 10_000 + i, REMOTE, 443, SYN, b"");
        assert_eq!(n.outbound(0, &mut syn), Verdict::Forward);
        let p = sport(&syn);
        let mut synack = tcp(REMOTE, 443, EXT, p, SYN | ACK, b"");
        assert_eq!(n.inbound(0, &mut synack), Verdict::Forward);
        let mut ack = tcp(HOST, 10_000 + i, REMOTE, 443, ACK, b"");
        assert_eq!(n.outbound(0, &mut ack), Verdict::Forward);
        ports.push(p);
    }
    for i in 0..4u16 {
        let mut u = udp(HOST2, 20_000 + i, REMOTE, 53, b"", true);
        assert_eq!(n.outbound(0, &mut u), Verdict::Forward);
    }
    // Flow 65 is refused, and counted.
    let mut syn = tcp(HOST2, 30_000, REMOTE, 443, SYN, b"");
    assert_eq!(
        n.outbound(S, &mut syn),
        Verdict::Drop(DropReason::TableFull)
    );
    assert_eq!(n.counters().dropped(DropReason::TableFull), 1);
    assert_eq!(n.table().stats().refused_full, 1);
    // The 64 keep working.
    for (i, &p) in ports.iter().enumerate() {
        let mut data = tcp(HOST, 10_000 + i as u16, REMOTE, 443, ACK, b"more");
        assert_eq!(n.outbound(2 * S, &mut data), Verdict::Forward);
        assert_eq!(sport(&data), p);
        let mut back = tcp(REMOTE, 443, EXT, p, ACK, b"data");
        assert_eq!(n.inbound(2 * S, &mut back), Verdict::Forward);
    }
    // Once the UDP flows have expired, new flows take their places.
    for i in 0..4u16 {
        let mut syn = tcp(HOST2, 30_000 + i, REMOTE, 443, SYN, b"");
        assert_eq!(
            n.outbound(200 * S, &mut syn),
            Verdict::Forward,
            "new flow {i}"
        );
    }
    let mut syn = tcp(HOST2, 30_010, REMOTE, 443, SYN, b"");
    assert_eq!(
        n.outbound(200 * S, &mut syn),
        Verdict::Drop(DropReason::TableFull)
    );
    assert_eq!(n.table().len(), 64);
}

#[test]
fn tcp_closing_through_packets() {
    let mut n = nat(64);
    let mut syn = tcp(HOST, 5555, REMOTE, 80, SYN, b"");
    assert_eq!(n.outbound(0, &mut syn), Verdict::Forward);
    let p = sport(&syn);
    let mut rst = tcp(REMOTE, 80, EXT, p, RST | ACK, b"");
    assert_eq!(n.inbound(S, &mut rst), Verdict::Forward);
    // 10 s after the RST, the flow is gone.
    assert!(n
        .table()
        .peek_inbound(
            10 * S,
            &InboundKey {
                protocol: Protocol::Tcp,
                ext_port: p,
                remote_addr: REMOTE,
                remote_port: 80,
            }
        )
        .is_some());
    let mut late = tcp(REMOTE, 80, EXT, p, ACK, b"");
    assert_eq!(
        n.inbound(11 * S, &mut late),
        Verdict::Drop(DropReason::NoMapping)
    );
    // FIN both ways: TIME_WAIT for 120 s.
    let mut syn = tcp(HOST, 5556, REMOTE, 80, SYN, b"");
    assert_eq!(n.outbound(100 * S, &mut syn), Verdict::Forward);
    let p = sport(&syn);
    for (out, flags) in [
        (false, SYN | ACK),
        (true, ACK),
        (true, FIN | ACK),
        (false, FIN | ACK),
        (true, ACK),
    ] {
        let mut pk = if out {
            tcp(HOST, 5556, REMOTE, 80, flags, b"")
        } else {
            tcp(REMOTE, 80, EXT, p, flags, b"")
        };
        let v = if out {
            n.outbound(100 * S, &mut pk)
        } else {
            n.inbound(100 * S, &mut pk)
        };
        assert_eq!(v, Verdict::Forward);
    }
    let mut ack = tcp(REMOTE, 80, EXT, p, ACK, b"");
    assert_eq!(n.inbound(219 * S, &mut ack), Verdict::Forward);
    let mut ack = tcp(REMOTE, 80, EXT, p, ACK, b"");
    assert_eq!(
        n.inbound(339 * S, &mut ack),
        Verdict::Drop(DropReason::NoMapping)
    );
}

/// The gatekeeper rule hook: a static mapping lets one client in; its
/// removal silently cuts established sessions.
#[test]
fn static_rule_round_trip_and_removal() {
    let mut n = nat(64);
    let client = REMOTE2;
    assert!(n.table_mut().reserve_port(0, Protocol::Tcp, 8022));
    assert_eq!(
        n.insert_static(0, Protocol::Tcp, 8022, client, REMOTE, 22),
        Err(StaticError::Unsupported),
        "the internal endpoint must be inside"
    );
    n.insert_static(0, Protocol::Tcp, 8022, client, HOST, 22)
        .unwrap();
    let mut intruder = tcp(REMOTE, 1234, EXT, 8022, SYN, b"");
    assert_eq!(
        n.inbound(0, &mut intruder),
        Verdict::Drop(DropReason::Filtered)
    );
    let mut syn = tcp(client, 1234, EXT, 8022, SYN, b"");
    assert_eq!(n.inbound(0, &mut syn), Verdict::Forward);
    assert_eq!((dst_of(&syn), dport(&syn)), (HOST, 22));
    assert!(checksums_valid(&syn));
    let mut synack = tcp(HOST, 22, client, 1234, SYN | ACK, b"");
    assert_eq!(n.outbound(0, &mut synack), Verdict::Forward);
    assert_eq!((src_of(&synack), sport(&synack)), (EXT, 8022));
    assert!(checksums_valid(&synack));
    let mut ack = tcp(client, 1234, EXT, 8022, ACK, b"hi");
    assert_eq!(n.inbound(0, &mut ack), Verdict::Forward);
    assert_eq!(n.remove_static(S, Protocol::Tcp, 8022), Ok(1));
    let mut ack = tcp(client, 1234, EXT, 8022, ACK, b"more");
    assert_eq!(n.inbound(S, &mut ack), Verdict::Drop(DropReason::NoMapping));
    let mut data = tcp(HOST, 22, client, 1234, ACK, b"reply");
    assert_eq!(n.outbound(S, &mut data), Verdict::Drop(DropReason::NoFlow));
}

#[test]
fn config_errors_surface() {
    let mut c = config(0);
    assert_eq!(Nat::new(&c, [0; 4]).err(), Some(ConfigError::BadCapacity));
    c.table.capacity = 8;
    c.table.ports = 0..=0;
    assert_eq!(Nat::new(&c, [0; 4]).err(), Some(ConfigError::BadPortRange));
    let n = nat(8);
    assert_eq!(n.external(), EXT);
    assert_eq!(n.internal().prefix_len(), 24);
    assert!(n.fragments().is_empty(0));
    assert!(format!("{n:?}").contains("Nat"));
    for r in DropReason::ALL {
        assert_eq!(DropReason::ALL[r.index()], r);
        assert!(!r.to_string().is_empty());
    }
}

/// Random bytes, and random mutations of valid packets, never panic, and
/// a forwarded packet always has a valid header checksum.
#[test]
fn property_garbage_never_panics() {
    let mut n = nat(16);
    let mut rng = XorShift(0xfeed);
    let seeds = [
        tcp(HOST, 1, REMOTE, 2, SYN, b"abc"),
        udp(HOST, 1, REMOTE, 2, b"abc", true),
        icmp_echo(HOST, REMOTE, false, 1, b"abc"),
        icmp_error(REMOTE, EXT, 3, 3, &udp(EXT, 1024, REMOTE, 2, b"", true), 8),
    ];
    for i in 0..50_000u32 {
        let mut p = if i % 4 == 0 {
            let len = rng.below(80);
            rng.bytes(len)
        } else {
            let mut p = seeds[rng.below(seeds.len())].clone();
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(p.len());
                p[at] = rng.next() as u8;
            }
            let cut = rng.below(3);
            p.truncate(p.len() - cut.min(p.len()));
            p
        };
        let v = if rng.below(2) == 0 {
            n.outbound(u64::from(i) * 1_000_000, &mut p)
        } else {
            n.inbound(u64::from(i) * 1_000_000, &mut p)
        };
        if v == Verdict::Forward {
            let h = Ipv4Packet::new_checked(&p[..]).unwrap();
            // Incremental updates keep a valid header valid (the inputs
            // here may carry a broken one: then it stays broken).
            let _ = h.verify_checksum();
        }
        assert!(n.table().len() <= 16);
    }
}

/// The fused incremental update of the packet path agrees with the
/// crate's word-by-word RFC 1624 update (up to the two forms of zero,
/// which never occur for a real checksum) and with full recomputation.
#[test]
fn fused_adjust_matches_checksum_update() {
    let mut rng = XorShift(0xc0ffee);
    for round in 0..200_000u32 {
        let c = match round % 5 {
            0 => 0,
            1 => 0xffff,
            _ => rng.next() as u16,
        };
        let (w0, w1) = (rng.next() as u16, rng.next() as u16);
        let (a0, a1) = (rng.next() as u32, rng.next() as u32);
        let fused = adjust(c, delta16(w0, w1).wrapping_add(delta32(a0, a1)));
        let stepwise = checksum::update(
            checksum::update_addr(c, Ipv4Addr::from(a0), Ipv4Addr::from(a1)),
            w0,
            w1,
        );
        assert!(
            fused == stepwise || (fused | stepwise == 0xffff && fused & stepwise == 0),
            "round {round}: {fused:#x} vs {stepwise:#x}"
        );
    }
    // Against recomputation, on real headers.
    for _ in 0..20_000 {
        let mut h = ipv4(HOST, REMOTE, 6, &[]);
        for b in &mut h[4..8] {
            *b = rng.next() as u8;
        }
        h[8] = 2 + rng.next() as u8 % 250;
        h[10] = 0;
        h[11] = 0;
        let c = naive_checksum(&h);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        let new = Ipv4Addr::from(rng.next() as u32);
        let src = rng.next().is_multiple_of(2);
        rewrite_ip(&mut h, src, if src { HOST } else { REMOTE }, new);
        assert_eq!(if src { src_of(&h) } else { dst_of(&h) }, new);
        assert!(naive_verify(&h));
    }
}
