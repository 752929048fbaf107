//! The packet path never allocates: a counting global allocator watches
//! translation of every kind of packet, flow creation up to a full table,
//! refusals, expiry, reclaim, ICMP errors, fragments and static mappings,
//! after the NAT has been built (its only allocation).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::Ipv4Addr;

use pih_nat::host::Ipv4Cidr;
use pih_nat::table::Protocol;
use pih_nat::translate::{Nat, NatConfig, Verdict};
use pih_nat::wire::{IcmpPacket, IpProtocol, Ipv4Packet, TcpPacket, UdpPacket};
use pih_nat::NS_PER_SEC;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

/// Counts the allocations of the current thread while `COUNTING` is set.
struct Counting;

// SAFETY: forwards to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let _ = COUNTING.try_with(|on| {
            if on.get() {
                let _ = ALLOCS.try_with(|n| n.set(n.get() + 1));
            }
        });
        // SAFETY: forwarded contract.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: forwarded contract.
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made by `f` on this thread.
fn allocations<R>(f: impl FnOnce() -> R) -> (R, u64) {
    ALLOCS.with(|n| n.set(0));
    COUNTING.with(|on| on.set(true));
    let r = f();
    COUNTING.with(|on| on.set(false));
    (r, ALLOCS.with(|n| n.get()))
}

const S: u64 = NS_PER_SEC;
const EXT: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const REMOTE: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 9);

fn host(i: u32) -> Ipv4Addr {
    Ipv4Addr::new(172, 16, (i >> 7) as u8, 2 + (i & 0x7f) as u8)
}

/// Writes an IPv4 packet with a TCP, UDP or ICMP echo header into `b`;
/// returns its length.
fn build(
    b: &mut [u8; 128],
    proto: IpProtocol,
    src: Ipv4Addr,
    sp: u16,
    dst: Ipv4Addr,
    dp: u16,
    flags: u8,
) -> usize {
    b.fill(0);
    let l4_len = match proto {
        IpProtocol::Tcp => 20,
        _ => 8,
    } + 12;
    let len = 20 + l4_len;
    {
        let mut ip = Ipv4Packet::new_unchecked(&mut b[..len]);
        ip.set_version(4);
        ip.set_header_len(20);
        ip.set_total_len(len as u16);
        ip.set_ttl(64);
        ip.set_protocol(proto);
        ip.set_src_addr(src);
        ip.set_dst_addr(dst);
        ip.fill_checksum();
    }
    let l4 = &mut b[20..len];
    match proto {
        IpProtocol::Tcp => {
            let mut t = TcpPacket::new_unchecked(l4);
            t.set_src_port(sp);
            t.set_dst_port(dp);
            t.set_header_len(20);
            t.set_flags(flags);
            t.fill_checksum(src, dst);
        }
        IpProtocol::Udp => {
            let mut u = UdpPacket::new_unchecked(l4);
            u.set_src_port(sp);
            u.set_dst_port(dp);
            u.set_len(l4_len as u16);
            u.fill_checksum(src, dst);
        }
        _ => {
            let mut i = IcmpPacket::new_unchecked(l4);
            i.set_msg_type(if flags == 0 {
                pih_nat::wire::IcmpType::EchoRequest
            } else {
                pih_nat::wire::IcmpType::EchoReply
            });
            i.set_echo_ident(sp);
            i.fill_checksum();
        }
    }
    len
}

/// An ICMP error from `src` to `dst` quoting `quoted` (header + 8 bytes).
fn error(b: &mut [u8; 128], src: Ipv4Addr, dst: Ipv4Addr, quoted: &[u8]) -> usize {
    let q = quoted.len().min(28);
    let len = 20 + 8 + q;
    let mut tmp = [0u8; 28];
    tmp[..q].copy_from_slice(&quoted[..q]);
    b.fill(0);
    {
        let mut ip = Ipv4Packet::new_unchecked(&mut b[..len]);
        ip.set_version(4);
        ip.set_header_len(20);
        ip.set_total_len(len as u16);
        ip.set_ttl(64);
        ip.set_protocol(IpProtocol::Icmp);
        ip.set_src_addr(src);
        ip.set_dst_addr(dst);
        ip.fill_checksum();
    }
    b[20] = 3;
    b[21] = 3;
    b[28..len].copy_from_slice(&tmp[..q]);
    IcmpPacket::new_unchecked(&mut b[20..len]).fill_checksum();
    len
}

#[test]
fn the_packet_path_never_allocates() {
    // The counter works.
    let (_, n) = allocations(|| vec![1u8; 10]);
    assert!(n >= 1);

    let mut c = NatConfig::new(
        EXT,
        Ipv4Cidr::new(Ipv4Addr::new(172, 16, 0, 1), 16).unwrap(),
    );
    c.table.capacity = 4096;
    c.table.ports = 2000..=5999;
    let mut nat = Nat::new(&c, [1, 2, 3, 4]).unwrap();
    let mut b = [0u8; 128];
    let mut q = [0u8; 128];

    let ((), n) = allocations(|| {
        // Fill the table: TCP handshakes, UDP, ICMP echo.
        let mut ports = [0u16; 1024];
        for i in 0..1024u32 {
            let len = build(&mut b, IpProtocol::Tcp, host(i), 1000, REMOTE, 80, 0x02);
            assert_eq!(nat.outbound(0, &mut b[..len]), Verdict::Forward);
            let p = u16::from_be_bytes([b[20], b[21]]);
            ports[i as usize] = p;
            let len = build(&mut b, IpProtocol::Tcp, REMOTE, 80, EXT, p, 0x12);
            assert_eq!(nat.inbound(0, &mut b[..len]), Verdict::Forward);
            let len = build(&mut b, IpProtocol::Tcp, host(i), 1000, REMOTE, 80, 0x10);
            assert_eq!(nat.outbound(0, &mut b[..len]), Verdict::Forward);
        }
        for i in 0..1536u32 {
            let len = build(
                &mut b,
                IpProtocol::Udp,
                host(i % 512),
                53,
                REMOTE,
                1 + i as u16,
                0,
            );
            assert_eq!(nat.outbound(S, &mut b[..len]), Verdict::Forward);
            let len = build(
                &mut b,
                IpProtocol::Icmp,
                host(i % 1024),
                i as u16,
                REMOTE,
                0,
                0,
            );
            assert_eq!(nat.outbound(S, &mut b[..len]), Verdict::Forward);
        }
        assert_eq!(nat.table().len(), 4096);
        // Refusals when full, unsolicited packets, batches.
        for i in 0..100u32 {
            let len = build(
                &mut b,
                IpProtocol::Tcp,
                host(2000 + i),
                1000,
                REMOTE,
                80,
                0x02,
            );
            assert!(matches!(
                nat.outbound(2 * S, &mut b[..len]),
                Verdict::Drop(_)
            ));
            let len = build(&mut b, IpProtocol::Udp, REMOTE, 9, EXT, 2000 + i as u16, 0);
            assert!(matches!(
                nat.inbound(2 * S, &mut b[..len]),
                Verdict::Drop(_)
            ));
        }
        let mut batch = [[0u8; 128]; 32];
        for (i, p) in batch.iter_mut().enumerate() {
            build(p, IpProtocol::Tcp, host(i as u32), 1000, REMOTE, 80, 0x10);
        }
        let mut verdicts = [Verdict::Forward; 32];
        // The buffers are longer than the packets: padding is ignored.
        nat.outbound_batch(3 * S, &mut batch, &mut verdicts);
        assert!(verdicts.iter().all(|&v| v == Verdict::Forward));
        // ICMP errors both ways.
        let len = build(&mut q, IpProtocol::Tcp, EXT, ports[5], REMOTE, 80, 0x10);
        let elen = error(&mut b, REMOTE, EXT, &q[..len]);
        assert_eq!(nat.inbound(3 * S, &mut b[..elen]), Verdict::Forward);
        nat.table_mut().reserve_port(3 * S, Protocol::Udp, 7000);
        nat.insert_static(3 * S, Protocol::Udp, 7000, REMOTE, host(1), 53)
            .unwrap();
        nat.expire(100 * S);
        let len = build(&mut q, IpProtocol::Udp, REMOTE, 4444, EXT, 7000, 0);
        assert_eq!(nat.inbound(100 * S, &mut q[..len]), Verdict::Forward);
        let elen = error(&mut b, host(1), REMOTE, &q[..len]);
        assert_eq!(nat.outbound(100 * S, &mut b[..elen]), Verdict::Forward);
        // Fragments.
        let len = build(&mut b, IpProtocol::Udp, host(7), 99, REMOTE, 99, 0);
        b[6] = 0x20; // MF
        Ipv4Packet::new_unchecked(&mut b[..len]).fill_checksum();
        assert_eq!(nat.outbound(100 * S, &mut b[..len]), Verdict::Forward);
        let len = build(&mut b, IpProtocol::Udp, host(7), 99, REMOTE, 99, 0);
        b[7] = 0x10; // offset 128
        Ipv4Packet::new_unchecked(&mut b[..len]).fill_checksum();
        assert_eq!(nat.outbound(100 * S, &mut b[..len]), Verdict::Forward);
        // Expiry, reclaim of expired flows by new ones, rule removal.
        nat.expire(200 * S);
        for i in 0..2048u32 {
            let len = build(&mut b, IpProtocol::Udp, host(i), 1234, REMOTE, 53, 0);
            let _ = nat.outbound(10_000 * S, &mut b[..len]);
        }
        nat.remove_static(10_000 * S, Protocol::Udp, 7000).unwrap();
        for _ in 0..10 {
            nat.expire(20_000 * S);
        }
    });
    assert_eq!(n, 0, "allocations on the packet path");
    assert!(nat.counters().outbound > 7000);
}
