//! Packets per second of 64-byte frames through the netfront rings against
//! the simulated backend (`cargo bench -p pih-drivers`).
//!
//! Four figures: tx and rx, each end-to-end (front + simulated backend on
//! one core, as the per-packet work of both sides adds up) and front-only
//! (only the time spent in the front's calls is measured). Besides
//! criterion's own report, a summary with Mpps and the number of heap
//! allocations per packet (must be 0) is printed.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion, Throughput};
use pih_drivers::netfront::{NetfrontRings, RxSharedRing, TxSharedRing};
use pih_drivers::{netif, ring};

#[path = "support/netback.rs"]
mod sim;

use sim::{Pages, SimNetback};

/// Counts heap allocations, to show the data path makes none.
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

const FRAME: usize = 64;
const BATCH: usize = 64;

type Front = NetfrontRings<TxSharedRing, RxSharedRing>;

struct Bench {
    fe: Front,
    be: SimNetback,
    _pages: Pages,
}

fn setup() -> Bench {
    let mut pages = Pages::new();
    let (t, r) = (pages.alloc(), pages.alloc());
    let rx: Vec<_> = (0..256u32).map(|i| (pages.alloc(), 1000 + i)).collect();
    let tx: Vec<_> = (0..256u32).map(|i| (pages.alloc(), 2000 + i)).collect();
    // SAFETY: the pages live in `_pages`, dropped after the front and the
    // backend (field order).
    let fe = unsafe { Front::new(TxSharedRing::new(t), RxSharedRing::new(r), &rx, &tx) }.unwrap();
    // SAFETY: as above.
    let mut be = unsafe { SimNetback::new(t, r, 0) };
    for &(p, g) in rx.iter().chain(&tx) {
        be.grant(g, p);
    }
    let mut b = Bench {
        fe,
        be,
        _pages: pages,
    };
    b.fe.fill_rx();
    b
}

impl Bench {
    fn front_tx(&mut self) {
        for i in 0..BATCH {
            self.fe
                .transmit(FRAME, |buf| {
                    buf.fill(i as u8);
                    FRAME
                })
                .unwrap();
        }
        if self.fe.flush_tx() {
            self.be.kick();
        }
    }

    fn backend_tx(&mut self) {
        let mut sum = 0u64;
        self.be.process_tx(|f| sum += f[0] as u64);
        black_box(sum);
    }

    fn front_reclaim(&mut self) {
        black_box(self.fe.reclaim_tx());
    }

    fn backend_rx(&mut self, frame: &[u8]) {
        for _ in 0..BATCH {
            assert!(self.be.deliver_rx(frame));
        }
        self.be.push_rx();
    }

    fn front_rx(&mut self) {
        let mut sum = 0u64;
        let r = self
            .fe
            .poll_rx(|f| sum += f.data()[0] as u64 + f.len() as u64);
        assert_eq!(r.delivered, BATCH);
        if r.notify {
            self.be.kick();
        }
        black_box(sum);
    }
}

/// Runs `batches` batches; returns (time in the front, total time).
fn run_tx(b: &mut Bench, batches: u64) -> (Duration, Duration) {
    let mut front = Duration::ZERO;
    let t0 = Instant::now();
    for _ in 0..batches {
        let s = Instant::now();
        b.front_tx();
        front += s.elapsed();
        b.backend_tx();
        let s = Instant::now();
        b.front_reclaim();
        front += s.elapsed();
    }
    (front, t0.elapsed())
}

fn run_rx(b: &mut Bench, batches: u64) -> (Duration, Duration) {
    let frame = [0x5au8; FRAME];
    let mut front = Duration::ZERO;
    let t0 = Instant::now();
    for _ in 0..batches {
        b.backend_rx(&frame);
        let s = Instant::now();
        b.front_rx();
        front += s.elapsed();
    }
    (front, t0.elapsed())
}

fn benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("netfront-64B");
    g.throughput(Throughput::Elements(BATCH as u64));
    let mut b = setup();
    g.bench_function("tx front+backend", |bch| {
        bch.iter(|| run_tx(&mut b, 1));
    });
    g.bench_function("tx front only", |bch| {
        bch.iter_custom(|iters| run_tx(&mut b, iters).0);
    });
    g.bench_function("rx front+backend", |bch| {
        bch.iter(|| run_rx(&mut b, 1));
    });
    g.bench_function("rx front only", |bch| {
        bch.iter_custom(|iters| run_rx(&mut b, iters).0);
    });
    g.finish();
}

/// A plain timed run, printed as Mpps, with the allocation count of the
/// front's calls.
fn summary() {
    let mut b = setup();
    let batches = 100_000u64;
    let pkts = (batches * BATCH as u64) as f64;
    run_tx(&mut b, 1000); // warm up
    let (tx_front, tx_total) = run_tx(&mut b, batches);
    run_rx(&mut b, 1000);
    let (rx_front, rx_total) = run_rx(&mut b, batches);
    // Allocations by the front alone over 10 000 packets each way.
    let frame = [1u8; FRAME];
    let mut front_allocs = 0;
    for _ in 0..(10_000 / BATCH) {
        let a = ALLOCS.load(Ordering::Relaxed);
        b.front_tx();
        front_allocs += ALLOCS.load(Ordering::Relaxed) - a;
        b.backend_tx();
        let a = ALLOCS.load(Ordering::Relaxed);
        b.front_reclaim();
        front_allocs += ALLOCS.load(Ordering::Relaxed) - a;
        b.backend_rx(&frame);
        let a = ALLOCS.load(Ordering::Relaxed);
        b.front_rx();
        front_allocs += ALLOCS.load(Ordering::Relaxed) - a;
    }
    let mpps = |d: Duration| pkts / d.as_secs_f64() / 1e6;
    println!(
        "netfront 64-byte frames, batches of {BATCH}, {} packets each way:",
        pkts as u64
    );
    println!(
        "  tx: {:6.2} Mpps front+backend, {:6.2} Mpps front only",
        mpps(tx_total),
        mpps(tx_front)
    );
    println!(
        "  rx: {:6.2} Mpps front+backend, {:6.2} Mpps front only",
        mpps(rx_total),
        mpps(rx_front)
    );
    println!("  heap allocations by the front: {front_allocs} for 2 x 9984 packets");
    let c = b.fe.counters();
    assert_eq!(
        c.protocol_errors + c.rx_drops + c.tx_errors + c.tx_ring_full,
        0
    );
    assert_eq!(front_allocs, 0, "the data path must not allocate");
    // Keep the protocol modules referenced (the simulated backend uses them).
    black_box((ring::SRING_HEADER_SIZE, netif::NET_RX_RING_SIZE));
}

criterion_group!(group, benches);

fn main() {
    summary();
    group();
    Criterion::default().configure_from_args().final_summary();
}
