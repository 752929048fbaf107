//! Translation throughput of the NAT (`cargo bench -p pih-nat`).
//!
//! - **established**: a full 65,536-flow table of established TCP
//!   connections (16,384 internal endpoints, four remotes each); 65,536
//!   prebuilt 60-byte segments, one per flow, in random order. Each packet
//!   goes out (`Nat::outbound`), is turned into its reply by swapping
//!   addresses and ports (which leaves every checksum valid), comes back in
//!   (`Nat::inbound`), and gets its TTL restored: the packets are back as
//!   they were, so the run can go on indefinitely. Two translations per
//!   packet; the swap and TTL fix-up are counted in the time.
//! - **established UDP**: the same with UDP datagrams.
//! - **new flows**: UDP flows opened back to back (8,192 new endpoints x 4
//!   remotes per round); each round starts 1000 s after the previous one,
//!   so the table is full of expired flows that opening new ones must
//!   reclaim (the steady state of a busy NAT).
//!
//! Besides criterion's report, a summary in Mpps and the heap allocations
//! counted during the timed loops (must be 0) are printed.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion, Throughput};
use pih_nat::checksum;
use pih_nat::host::Ipv4Cidr;
use pih_nat::table::Protocol;
use pih_nat::translate::{Nat, NatConfig, Verdict, BATCH};
use pih_nat::wire::{Ipv4Packet, TcpPacket, UdpPacket};
use pih_nat::NS_PER_SEC;

/// Counts heap allocations, to show the packet path makes none.
struct Counting;
static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
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

const FLOWS_DEFAULT: usize = 65_536;

/// The number of established flows (`NAT_BENCH_FLOWS` overrides 65,536, to
/// see how the table size matters).
fn flows() -> usize {
    std::env::var("NAT_BENCH_FLOWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(FLOWS_DEFAULT)
}
const EXT: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const PKT: usize = 64;
const NOW: u64 = 1000 * NS_PER_SEC;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn nat() -> Nat {
    let mut c = NatConfig::new(
        EXT,
        Ipv4Cidr::new(Ipv4Addr::new(172, 16, 0, 1), 16).unwrap(),
    );
    c.table.capacity = FLOWS_DEFAULT;
    Nat::new(&c, [0x1234, 0x5678, 0x9abc, 0xdef0]).unwrap()
}

/// An IPv4 packet of `PKT` bytes (60 used) with a TCP or UDP header and
/// valid checksums.
fn packet(
    p: Protocol,
    src: Ipv4Addr,
    sport: u16,
    dst: Ipv4Addr,
    dport: u16,
    flags: u8,
) -> [u8; PKT] {
    let mut b = [0u8; PKT];
    let len = 60u16;
    {
        let mut ip = Ipv4Packet::new_unchecked(&mut b[..]);
        ip.set_version(4);
        ip.set_header_len(20);
        ip.set_total_len(len);
        ip.set_ident(1);
        ip.set_dont_frag(true);
        ip.set_ttl(64);
        ip.set_protocol(p.into());
        ip.set_src_addr(src);
        ip.set_dst_addr(dst);
        ip.fill_checksum();
    }
    let l4 = &mut b[20..60];
    match p {
        Protocol::Tcp => {
            let mut t = TcpPacket::new_unchecked(l4);
            t.set_src_port(sport);
            t.set_dst_port(dport);
            t.set_seq_number(1);
            t.set_header_len(20);
            t.set_flags(flags);
            t.set_window_len(1000);
            t.fill_checksum(src, dst);
        }
        _ => {
            let mut u = UdpPacket::new_unchecked(l4);
            u.set_src_port(sport);
            u.set_dst_port(dport);
            u.set_len(40);
            u.fill_checksum(src, dst);
        }
    }
    b
}

/// Turns a translated packet into its reply: addresses and ports swapped
/// (checksums unchanged: the sums are the same).
#[inline]
fn swap(b: &mut [u8; PKT]) {
    // Whole words (byte-wise swaps would defeat store forwarding when the
    // NAT reads the addresses right after).
    let src = u32::from_ne_bytes([b[12], b[13], b[14], b[15]]);
    let dst = u32::from_ne_bytes([b[16], b[17], b[18], b[19]]);
    b[12..16].copy_from_slice(&dst.to_ne_bytes());
    b[16..20].copy_from_slice(&src.to_ne_bytes());
    let ports = u32::from_ne_bytes([b[20], b[21], b[22], b[23]]).rotate_left(16);
    b[20..24].copy_from_slice(&ports.to_ne_bytes());
}

/// Sets the TTL back to 64 after two hops.
#[inline]
fn restore_ttl(b: &mut [u8; PKT]) {
    let old = u16::from_be_bytes([b[8], b[9]]);
    let new = u16::from_be_bytes([64, b[9]]);
    let c = checksum::update(u16::from_be_bytes([b[10], b[11]]), old, new);
    b[8] = 64;
    b[10..12].copy_from_slice(&c.to_be_bytes());
}

/// A table full of established flows of protocol `p`, and one packet per
/// flow (from the inside) in random order.
fn established(p: Protocol) -> (Nat, Vec<[u8; PKT]>) {
    let mut n = nat();
    let flows = flows();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut pkts = Vec::with_capacity(flows);
    for i in 0..flows {
        let endpoint = i / 4;
        let host = Ipv4Addr::new(172, 16, (endpoint >> 6) as u8, 2 + (endpoint & 63) as u8);
        let remote = Ipv4Addr::from(0x6440_0000u32 + (rng.next() as u32 % 0x0040_0000));
        let dport = 1 + (rng.next() % 65_000) as u16;
        let sport = 10_000 + (endpoint % 7) as u16 * 10;
        if p == Protocol::Tcp {
            let mut syn = packet(p, host, sport, remote, dport, 0x02);
            assert_eq!(n.outbound(0, &mut syn), Verdict::Forward);
            let ext_port = u16::from_be_bytes([syn[20], syn[21]]);
            let mut synack = packet(p, remote, dport, EXT, ext_port, 0x12);
            assert_eq!(n.inbound(0, &mut synack), Verdict::Forward);
            let mut ack = packet(p, host, sport, remote, dport, 0x10);
            assert_eq!(n.outbound(0, &mut ack), Verdict::Forward);
        } else {
            let mut first = packet(p, host, sport, remote, dport, 0);
            assert_eq!(n.outbound(0, &mut first), Verdict::Forward);
        }
        pkts.push(packet(p, host, sport, remote, dport, 0x10));
    }
    assert_eq!(n.table().len(), flows);
    // Fisher-Yates.
    for i in (1..pkts.len()).rev() {
        let j = (rng.next() % (i as u64 + 1)) as usize;
        pkts.swap(i, j);
    }
    (n, pkts)
}

/// One pass over every packet: out, swap, in, swap, TTL. Returns the
/// translations done.
#[inline(never)]
fn round_trip(n: &mut Nat, pkts: &mut [[u8; PKT]]) -> u64 {
    let mut ok = 0u64;
    for b in pkts.iter_mut() {
        ok += u64::from(n.outbound(NOW, &mut b[..]) == Verdict::Forward);
        swap(b);
        ok += u64::from(n.inbound(NOW, &mut b[..]) == Verdict::Forward);
        swap(b);
        restore_ttl(b);
    }
    ok
}

/// The same pass through the batch interface, [`BATCH`] packets at a time.
#[inline(never)]
fn round_trip_batched(n: &mut Nat, pkts: &mut [[u8; PKT]]) -> u64 {
    let mut ok = 0u64;
    let mut v = [Verdict::Forward; BATCH];
    for chunk in pkts.chunks_mut(BATCH) {
        n.outbound_batch(NOW, chunk, &mut v);
        ok += v
            .iter()
            .take(chunk.len())
            .filter(|&&v| v == Verdict::Forward)
            .count() as u64;
        chunk.iter_mut().for_each(swap);
        n.inbound_batch(NOW, chunk, &mut v);
        ok += v
            .iter()
            .take(chunk.len())
            .filter(|&&v| v == Verdict::Forward)
            .count() as u64;
        for b in chunk.iter_mut() {
            swap(b);
            restore_ttl(b);
        }
    }
    ok
}

/// New UDP flows: one round at `now` over `pkts` (copied into a scratch
/// buffer first, as they are rewritten).
#[inline(never)]
fn new_flows(n: &mut Nat, pkts: &[[u8; PKT]], now: u64) -> u64 {
    let mut ok = 0u64;
    let mut buf = [0u8; PKT];
    for b in pkts {
        buf = *b;
        ok += u64::from(n.outbound(now, &mut buf[..]) == Verdict::Forward);
    }
    black_box(buf);
    ok
}

const NEW_PER_ROUND: usize = 32_768;

fn new_flow_packets() -> Vec<[u8; PKT]> {
    let mut rng = Rng(77);
    (0..NEW_PER_ROUND)
        .map(|i| {
            let endpoint = i / 4;
            let host = Ipv4Addr::new(172, 16, (endpoint >> 6) as u8, 2 + (endpoint & 63) as u8);
            let remote = Ipv4Addr::from(0x6440_0000u32 + (rng.next() as u32 % 0x0040_0000));
            packet(Protocol::Udp, host, 20_000, remote, 53, 0)
        })
        .collect()
}

fn benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("nat");
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(8));
    g.throughput(Throughput::Elements(2 * flows() as u64));
    for p in [Protocol::Tcp, Protocol::Udp] {
        let (mut n, mut pkts) = established(p);
        g.bench_function(format!("established {p}, batches of {BATCH}"), |b| {
            b.iter(|| round_trip_batched(&mut n, &mut pkts))
        });
        g.bench_function(format!("established {p}, one by one"), |b| {
            b.iter(|| round_trip(&mut n, &mut pkts))
        });
    }
    g.throughput(Throughput::Elements(NEW_PER_ROUND as u64));
    let mut n = nat();
    let pkts = new_flow_packets();
    let mut now = 0u64;
    g.bench_function("new udp flows, reclaiming expired ones", |b| {
        b.iter(|| {
            now += 1000 * NS_PER_SEC;
            new_flows(&mut n, &pkts, now)
        })
    });
    g.finish();
}

fn summary() {
    let mpps = |pkts: u64, d: Duration| pkts as f64 / d.as_secs_f64() / 1e6;
    for p in [Protocol::Tcp, Protocol::Udp] {
        let (mut n, mut pkts) = established(p);
        let flows = pkts.len();
        for (how, f) in [
            (
                "batches of 32",
                round_trip_batched as fn(&mut Nat, &mut [[u8; PKT]]) -> u64,
            ),
            ("one by one", round_trip),
        ] {
            f(&mut n, &mut pkts); // warm up
                                  // Best of 5 runs of 10 passes (the machine may be shared).
            let mut best = Duration::MAX;
            let mut allocs = 0;
            let mut ok = 0;
            for _ in 0..5 {
                let a = ALLOCS.load(Ordering::Relaxed);
                let t = Instant::now();
                ok = 0;
                for _ in 0..10 {
                    ok += f(&mut n, &mut pkts);
                }
                best = best.min(t.elapsed());
                allocs += ALLOCS.load(Ordering::Relaxed) - a;
            }
            assert_eq!(ok, 10 * 2 * flows as u64, "every packet forwarded");
            println!(
                "established {p}, {flows} flows, random order, {how}: {:6.2} Mpps ({:.1} ns/packet), {allocs} allocations",
                mpps(ok, best),
                best.as_nanos() as f64 / ok as f64,
            );
            assert_eq!(allocs, 0, "the fast path must not allocate");
        }
    }
    let mut n = nat();
    let pkts = new_flow_packets();
    let mut now = 0;
    for _ in 0..3 {
        now += 1000 * NS_PER_SEC;
        new_flows(&mut n, &pkts, now);
    }
    let rounds = 20u64;
    let a = ALLOCS.load(Ordering::Relaxed);
    let t = Instant::now();
    let mut ok = 0;
    for _ in 0..rounds {
        now += 1000 * NS_PER_SEC;
        ok += new_flows(&mut n, &pkts, now);
    }
    let d = t.elapsed();
    let allocs = ALLOCS.load(Ordering::Relaxed) - a;
    assert_eq!(ok, rounds * NEW_PER_ROUND as u64);
    println!(
        "new udp flows (reclaiming expired ones): {:6.2} M flows/s ({:.1} ns/flow), {allocs} allocations",
        mpps(ok, d),
        d.as_nanos() as f64 / ok as f64
    );
    assert_eq!(allocs, 0);
    println!(
        "table stats after the new-flow runs: {:?}",
        n.table().stats()
    );
}

criterion_group!(group, benches);

fn main() {
    summary();
    group();
    Criterion::default().configure_from_args().final_summary();
}
