//! A simulated netback: the backend's side of a vif's tx and rx rings, run
//! on heap pages in the same process. Shared by the unit tests of
//! `netfront.rs` (included with `#[path]`), the benchmarks and the fuzzer.
//!
//! The includer must have the protocol modules in scope as `super::ring`
//! and `super::netif`.
//!
//! Grant references are resolved through a lookup table filled with
//! [`SimNetback::grant`]. The backend honours `req_event`/`rsp_event`
//! exactly like Linux netback: it sleeps only after
//! `RING_FINAL_CHECK_FOR_REQUESTS` found nothing, it notifies the front
//! when `RING_PUSH_RESPONSES_AND_CHECK_NOTIFY` says so, and it counts the
//! notifications both ways so tests can check that no wake-up is lost.
#![allow(dead_code)]

use std::collections::HashMap;

use super::netif::{
    GrantRef, NetifRxRequest, NetifRxResponse, NetifTxRequest, NetifTxResponse, NETIF_RSP_ERROR,
    NETIF_RSP_OKAY,
};
use super::ring::{BackRing, RawSharedRing, RingIdx, SharedRing};

pub type SimTxRing = RawSharedRing<NetifTxRequest, NetifTxResponse>;
pub type SimRxRing = RawSharedRing<NetifRxRequest, NetifRxResponse>;

/// One page-aligned 4 KiB page.
#[repr(C, align(4096))]
pub struct PageBuf(pub [u8; 4096]);

/// Heap pages with stable addresses, all freed on drop. Everything that
/// holds one of their addresses must be dropped first.
#[derive(Default)]
pub struct Pages {
    pages: Vec<*mut PageBuf>,
}

impl Pages {
    pub fn new() -> Self {
        Pages { pages: Vec::new() }
    }

    /// A new zeroed page.
    pub fn alloc(&mut self) -> *mut u8 {
        let p = Box::into_raw(Box::new(PageBuf([0; 4096])));
        self.pages.push(p);
        p.cast()
    }
}

impl Drop for Pages {
    fn drop(&mut self) {
        for &p in &self.pages {
            // SAFETY: each pointer came from Box::into_raw in `alloc` and is
            // freed exactly once, here.
            drop(unsafe { Box::from_raw(p) });
        }
    }
}

/// Reads `len` bytes at `off` of `page` into a vector (test helper).
///
/// # Safety
/// `page` must be a live 4096-byte page and `off + len <= 4096`.
pub unsafe fn page_bytes(page: *mut u8, off: usize, len: usize) -> Vec<u8> {
    // SAFETY: forwarded contract.
    unsafe { std::slice::from_raw_parts(page.add(off), len).to_vec() }
}

/// Prepares a shared ring page as the front end would, but with every
/// index at `start` (to exercise the 2^32 wrap).
pub fn init_ring_at<R: SharedRing>(r: &R, start: RingIdx) {
    r.init();
    r.set_req_prod(start);
    r.set_rsp_prod(start);
    r.set_req_event(start.wrapping_add(1));
    r.set_rsp_event(start.wrapping_add(1));
}

pub struct SimNetback {
    pub tx: BackRing<SimTxRing>,
    pub rx: BackRing<SimRxRing>,
    grants: HashMap<GrantRef, *mut u8>,
    /// Status written into tx responses.
    pub tx_status: i16,
    /// Offset at which received frames are placed in the rx page.
    pub rx_offset: u16,
    /// Flags set on rx responses.
    pub rx_flags: u16,
    /// The tx side ran its final check and sleeps until kicked.
    pub tx_asleep: bool,
    /// The rx side ran out of buffers, ran its final check and sleeps
    /// until kicked.
    pub rx_asleep: bool,
    /// Notifications received from the front (`kick`).
    pub kicks: u64,
    /// Notifications sent to the front.
    pub notifies_to_front: u64,
    /// Tx requests consumed.
    pub tx_seen: u64,
    /// Tx requests whose grant or bounds were invalid.
    pub tx_bad: u64,
}

impl SimNetback {
    /// Attaches to the two ring pages (already initialised by the front)
    /// at index `start`.
    ///
    /// # Safety
    /// Both pages must outlive the value.
    pub unsafe fn new(tx_ring: *mut u8, rx_ring: *mut u8, start: RingIdx) -> Self {
        // SAFETY: forwarded contract.
        let (tx, rx) = unsafe { (SimTxRing::new(tx_ring), SimRxRing::new(rx_ring)) };
        SimNetback {
            tx: BackRing::attach(tx, start),
            rx: BackRing::attach(rx, start),
            grants: HashMap::new(),
            tx_status: NETIF_RSP_OKAY,
            rx_offset: 0,
            rx_flags: 0,
            tx_asleep: false,
            rx_asleep: false,
            kicks: 0,
            notifies_to_front: 0,
            tx_seen: 0,
            tx_bad: 0,
        }
    }

    /// Makes `gref` resolve to `page` (the grant table of the test).
    pub fn grant(&mut self, gref: GrantRef, page: *mut u8) {
        self.grants.insert(gref, page);
    }

    pub fn page(&self, gref: GrantRef) -> Option<*mut u8> {
        self.grants.get(&gref).copied()
    }

    /// The front notified our event channel.
    pub fn kick(&mut self) {
        self.kicks += 1;
        self.tx_asleep = false;
        self.rx_asleep = false;
    }

    /// The tx side sleeps although requests wait: a wake-up was lost.
    pub fn tx_needs_kick(&mut self) -> bool {
        self.tx_asleep && self.tx.unconsumed_requests() != 0
    }

    /// The rx side sleeps for buffers although buffers wait.
    pub fn rx_needs_kick(&mut self) -> bool {
        self.rx_asleep && self.rx.unconsumed_requests() != 0
    }

    /// Consumes every tx request, hands each frame to `f`, answers with
    /// `tx_status`, notifies as the ring says, and goes to sleep after the
    /// final check. Returns the number of requests processed.
    pub fn process_tx<F: FnMut(&[u8])>(&mut self, f: F) -> usize {
        self.process_tx_max(usize::MAX, f)
    }

    /// As `process_tx`, at most `max` requests (then stays awake).
    pub fn process_tx_max<F: FnMut(&[u8])>(&mut self, max: usize, mut f: F) -> usize {
        let mut n = 0;
        loop {
            while n < max {
                let Some(req) = self.tx.take_request() else {
                    break;
                };
                n += 1;
                self.tx_seen += 1;
                let (off, len) = (req.offset as usize, req.size as usize);
                let status = match self.grants.get(&req.gref) {
                    Some(&page) if off + len <= 4096 => {
                        // SAFETY: granted pages are live 4 KiB pages of the
                        // test; bounds checked.
                        let frame = unsafe { std::slice::from_raw_parts(page.add(off), len) };
                        f(frame);
                        self.tx_status
                    }
                    _ => {
                        self.tx_bad += 1;
                        NETIF_RSP_ERROR
                    }
                };
                self.tx
                    .push_response(NetifTxResponse { id: req.id, status })
                    .expect("one response per request");
            }
            if self.tx.push_responses_and_check_notify() {
                self.notifies_to_front += 1;
            }
            if n >= max {
                return n;
            }
            if !self.tx.final_check_for_requests() {
                self.tx_asleep = true;
                return n;
            }
        }
    }

    /// Places `frame` into the next posted rx buffer and writes its
    /// response (not yet published: see `push_rx`). Returns false when no
    /// buffer is posted (after the final check; the rx side then sleeps).
    pub fn deliver_rx(&mut self, frame: &[u8]) -> bool {
        let Some(req) = self.take_rx_request() else {
            return false;
        };
        let off = self.rx_offset as usize;
        assert!(off + frame.len() <= 4096);
        let Some(&page) = self.grants.get(&req.gref) else {
            // Not a page granted to us: netback answers with an error.
            let rsp = NetifRxResponse {
                id: req.id,
                offset: 0,
                flags: 0,
                status: NETIF_RSP_ERROR,
            };
            self.rx
                .push_response(rsp)
                .expect("one response per request");
            return true;
        };
        // SAFETY: granted rx pages are live 4 KiB pages; bounds asserted;
        // the front posted this buffer, so it does not touch it now.
        unsafe { std::ptr::copy_nonoverlapping(frame.as_ptr(), page.add(off), frame.len()) };
        let rsp = NetifRxResponse {
            id: req.id,
            offset: self.rx_offset,
            flags: self.rx_flags,
            status: frame.len() as i16,
        };
        self.rx
            .push_response(rsp)
            .expect("one response per request");
        true
    }

    /// The next posted rx request, or None after a final check (sleeping).
    pub fn take_rx_request(&mut self) -> Option<NetifRxRequest> {
        if let Some(r) = self.rx.take_request() {
            return Some(r);
        }
        if self.rx.final_check_for_requests() {
            return self.rx.take_request();
        }
        self.rx_asleep = true;
        None
    }

    /// Consumes one rx request and answers with an arbitrary response
    /// (rogue backend). Returns the request, or None if none was posted.
    pub fn raw_rx_response(&mut self, rsp: NetifRxResponse) -> Option<NetifRxRequest> {
        let req = self.rx.take_request()?;
        self.rx
            .push_response(rsp)
            .expect("one response per request");
        Some(req)
    }

    /// Consumes one tx request and answers with an arbitrary response.
    pub fn raw_tx_response(&mut self, rsp: NetifTxResponse) -> Option<NetifTxRequest> {
        let req = self.tx.take_request()?;
        self.tx
            .push_response(rsp)
            .expect("one response per request");
        Some(req)
    }

    /// Publishes the rx responses; returns (and counts) whether the front
    /// must be notified.
    pub fn push_rx(&mut self) -> bool {
        let n = self.rx.push_responses_and_check_notify();
        if n {
            self.notifies_to_front += 1;
        }
        n
    }

    /// Publishes the tx responses written with `raw_tx_response`.
    pub fn push_tx(&mut self) -> bool {
        let n = self.tx.push_responses_and_check_notify();
        if n {
            self.notifies_to_front += 1;
        }
        n
    }
}
