//! A rogue backend against one netfront vif: the input is a program of
//! operations of the front (fill, poll, transmit, reclaim, ...) interleaved
//! with arbitrary backend writes into the shared rings (response slots,
//! producer and event indices) and honest backend work. After every step
//! the front's bookkeeping must stay consistent; it must never panic, read
//! outside a page or loop without end.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pih_drivers::netfront::{NetfrontRings, RxSharedRing, TxSharedRing, MAX_FRAME_LEN};
use pih_drivers::netif::{self, NetifRxResponse, NetifTxResponse};
use pih_drivers::ring::{self, SharedRing};

#[path = "../../benches/support/netback.rs"]
mod sim;

use sim::{init_ring_at, Pages, SimNetback};

type Front = NetfrontRings<TxSharedRing, RxSharedRing>;

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes([self.u8()?, self.u8()?]))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes([
            self.u8()?,
            self.u8()?,
            self.u8()?,
            self.u8()?,
        ]))
    }
}

const FOREIGN_GREF: u32 = 3000;

fn check(fe: &Front, n_rx: usize, n_tx: usize) {
    assert_eq!(fe.posted_rx() + fe.held_rx() + fe.free_rx(), n_rx);
    assert!(fe.free_tx_buffers() <= n_tx);
    assert!(fe.outstanding_tx() <= 256);
    assert!(fe.rx_ring().outstanding() <= fe.rx_ring().size());
    assert!(fe.tx_ring().outstanding() <= fe.tx_ring().size());
    assert!(fe.tx_ring().outstanding() as usize <= fe.outstanding_tx());
}

fn run(data: &[u8]) -> Option<()> {
    let mut inp = Input(data);
    let n_rx = match inp.u8()? {
        0 => 256,
        b => (b % 40) as usize + 1,
    };
    let n_tx = (inp.u8()? % 20) as usize + 1;
    let start = match inp.u8()? % 4 {
        0 => 0,
        1 => u32::MAX - 5,
        2 => 0x8000_0000,
        _ => inp.u32()?,
    };

    let mut pages = Pages::new();
    let (t, r) = (pages.alloc(), pages.alloc());
    let rx: Vec<_> = (0..n_rx as u32)
        .map(|i| (pages.alloc(), 1000 + i))
        .collect();
    let tx: Vec<_> = (0..n_tx as u32)
        .map(|i| (pages.alloc(), 2000 + i))
        .collect();
    let foreign = pages.alloc();
    // SAFETY: the pages outlive the rings, the front and the backend, which
    // are all dropped at the end of this function before `pages`.
    let (txr, rxr) = unsafe { (TxSharedRing::new(t), RxSharedRing::new(r)) };
    init_ring_at(&txr, start);
    init_ring_at(&rxr, start);
    // SAFETY: as above; distinct pages used by nobody else.
    let mut fe = unsafe {
        Front::with_front_rings(
            ring::FrontRing::attach(txr, start),
            ring::FrontRing::attach(rxr, start),
            &rx,
            &tx,
        )
    }
    .unwrap();
    // SAFETY: as above.
    let mut be = unsafe { SimNetback::new(t, r, start) };
    // The rogue's own handles on the shared pages.
    // SAFETY: as above.
    let (rogue_tx, rogue_rx) = unsafe { (TxSharedRing::new(t), RxSharedRing::new(r)) };
    for &(p, g) in rx.iter().chain(&tx) {
        be.grant(g, p);
    }
    be.grant(FOREIGN_GREF, foreign);
    let mut held: Vec<u16> = Vec::new();
    let mut cookie = 0u32;

    while let Some(op) = inp.u8() {
        match op % 16 {
            0 => {
                fe.fill_rx();
            }
            1 => {
                let budget = match inp.u8()? {
                    0 => usize::MAX,
                    b => b as usize,
                };
                let hold_mask = inp.u8()?;
                let mut k = 0u32;
                let res = fe.poll_rx_budget(budget, |f| {
                    let (off, len) = (f.offset() as usize, f.len());
                    assert!(len >= 1 && off + len <= netif::XEN_PAGE_SIZE);
                    let d = f.data();
                    d[0] ^= 1;
                    d[len - 1] ^= 1;
                    if hold_mask & (1 << (k % 8)) != 0 {
                        f.hold();
                        held.push(f.buffer_id());
                    }
                    k += 1;
                });
                assert!(res.delivered <= budget);
            }
            2 => {
                if let Some(id) = held.pop() {
                    assert!(fe.release_rx(id));
                } else {
                    assert!(!fe.release_rx(inp.u16()?));
                }
            }
            3 => {
                let len = inp.u16()? as usize % (MAX_FRAME_LEN + 8);
                let ret = inp.u16()? as usize % (MAX_FRAME_LEN + 8);
                let _ = fe.transmit(len, |b| {
                    assert_eq!(b.len(), len);
                    b.fill(0x33);
                    ret
                });
            }
            4 => {
                let gref = if inp.u8()? & 1 == 0 {
                    FOREIGN_GREF
                } else {
                    inp.u32()?
                };
                let (off, len) = (inp.u16()?, inp.u16()?);
                cookie += 1;
                let _ = fe.transmit_granted(gref, off % 4200, len % 1600, cookie);
            }
            5 => {
                if fe.flush_tx() {
                    be.kick();
                }
            }
            6 => {
                fe.reclaim_tx();
            }
            7 => {
                if let Some(c) = fe.take_tx_completion() {
                    assert!(c.cookie >= 1 && c.cookie <= cookie);
                }
            }
            8 => {
                // Rogue rx responses in the consumable window, published.
                let cons = fe.rx_ring().rsp_cons();
                let k = inp.u8()? as u32 % (fe.rx_ring().outstanding() + 2);
                for i in 0..k {
                    let rsp = NetifRxResponse {
                        id: inp.u16()? % 300,
                        offset: inp.u16()?,
                        flags: inp.u8()? as u16,
                        status: inp.u16()? as i16,
                    };
                    rogue_rx.write_rsp(cons.wrapping_add(i), rsp);
                }
                rogue_rx.set_rsp_prod(cons.wrapping_add(k));
            }
            9 => rogue_rx.set_rsp_prod(inp.u32()?),
            10 => {
                let cons = fe.tx_ring().rsp_cons();
                let k = inp.u8()? as u32 % (fe.tx_ring().outstanding() + 2);
                for i in 0..k {
                    let rsp = NetifTxResponse {
                        id: inp.u16()? % 300,
                        status: inp.u8()? as i8 as i16,
                    };
                    rogue_tx.write_rsp(cons.wrapping_add(i), rsp);
                }
                rogue_tx.set_rsp_prod(cons.wrapping_add(k));
            }
            11 => rogue_tx.set_rsp_prod(inp.u32()?),
            12 => {
                // Honest backend delivering frames (after any rogue writes,
                // its own indices win again).
                let n = inp.u8()? % 8;
                for _ in 0..n {
                    let len = (inp.u16()? as usize % MAX_FRAME_LEN) + 1;
                    be.rx_offset = inp.u8()? as u16 % 64;
                    be.rx_flags = inp.u8()? as u16 & 0x1f;
                    if !be.deliver_rx(&vec![0xAB; len]) {
                        break;
                    }
                }
                be.push_rx();
            }
            13 => {
                let v = inp.u32()?;
                match inp.u8()? % 4 {
                    0 => rogue_rx.set_req_event(v),
                    1 => rogue_rx.set_rsp_event(v),
                    2 => rogue_tx.set_req_event(v),
                    _ => rogue_tx.set_req_prod(v),
                }
            }
            14 => {
                be.tx_status = match inp.u8()? % 4 {
                    0 => netif::NETIF_RSP_OKAY,
                    1 => netif::NETIF_RSP_ERROR,
                    2 => netif::NETIF_RSP_DROPPED,
                    _ => netif::NETIF_RSP_NULL,
                };
                let max = inp.u8()? as usize;
                be.process_tx_max(max, |f| assert!(f.len() <= 4096));
            }
            _ => {
                // Rogue rx slots written without touching rsp_prod (only
                // visible if the front wrongly reads unpublished slots).
                let idx = inp.u32()?;
                rogue_rx.write_rsp(
                    idx,
                    NetifRxResponse {
                        id: 0,
                        offset: 0xFFFF,
                        flags: 0xFFFF,
                        status: -1,
                    },
                );
            }
        }
        check(&fe, n_rx, n_tx);
    }
    let _ = fe.counters();
    drop(fe);
    drop(be);
    Some(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(data);
});
