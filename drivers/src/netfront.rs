//! The data path of one netfront vif: the tx and rx rings of
//! xen/include/public/io/netif.h over pages granted once at setup.
//!
//! The xenbus handshake and the grant table live elsewhere; whoever does
//! the handshake allocates the two ring pages and the buffer pages, grants
//! them to the backend domain (rx buffers read-write, tx buffers read-only)
//! and hands the addresses and grant references to [`NetfrontRings`]. From
//! then on no allocation and no grant operation happens per packet: rx
//! pages are reposted and tx pages reused with their standing grants.
//!
//! Feature set: one slot per frame both ways (no `feature-sg`, no GSO, no
//! checksum offload requested). The backend is not trusted: every index,
//! id, offset, length and flag it writes is checked; a violation is counted
//! in [`VifCounters::protocol_errors`] and never causes a panic, an
//! out-of-page access or an endless loop. The caller may decide to tear the
//! vif down when that counter moves.
//!
//! Usage per event-channel notification (or poll):
//!
//! ```ignore
//! let rx = vif.poll_rx(|frame| handle(frame.data()));
//! if rx.notify { evtchn_notify(port) }
//! vif.reclaim_tx();
//! while let Some(done) = vif.take_tx_completion() { /* foreign page free */ }
//! vif.transmit(len, |buf| { /* write the frame */ len })?;
//! if vif.flush_tx() { evtchn_notify(port) }
//! ```

use heapless::{Deque, Vec};

use crate::netif::{
    GrantRef, NetifExtraInfoHeader, NetifRxRequest, NetifRxResponse, NetifTxRequest,
    NetifTxResponse, NETIF_RSP_DROPPED, NETIF_RSP_NULL, NETIF_RSP_OKAY, NETRXF_CSUM_BLANK,
    NETRXF_DATA_VALIDATED, NETRXF_EXTRA_INFO, NETRXF_MORE_DATA, XEN_PAGE_SIZE,
};
use crate::ring::{self, FrontRing, RingIdx, SharedRing};

/// Largest number of rx buffers (one rx ring's worth).
pub const MAX_RX_BUFFERS: usize = 256;
/// Largest number of tx buffers (one tx ring's worth).
pub const MAX_TX_BUFFERS: usize = 256;
/// Tx requests that can be in flight at once (own and foreign pages), and
/// the range of tx request ids.
pub const MAX_TX_IN_FLIGHT: usize = 256;
/// Largest frame we send: an untagged Ethernet frame without FCS.
pub const MAX_FRAME_LEN: usize = 1514;

/// The rx ring on a 4 KiB page, as used by the xenbus side.
pub type RxSharedRing = ring::RawSharedRing<NetifRxRequest, NetifRxResponse>;
/// The tx ring on a 4 KiB page, as used by the xenbus side.
pub type TxSharedRing = ring::RawSharedRing<NetifTxRequest, NetifTxResponse>;

/// Per-vif statistics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VifCounters {
    /// Frames delivered to the caller.
    pub rx_packets: u64,
    /// Bytes of the delivered frames.
    pub rx_bytes: u64,
    /// Frames not delivered: backend error status, zero length, or a
    /// length/offset outside the page (the latter also a protocol error).
    pub rx_drops: u64,
    /// Multi-slot frames (`NETRXF_more_data`; we negotiate no
    /// scatter-gather): dropped with all their slots.
    pub rx_errors: u64,
    /// Extra-info slots skipped (`NETRXF_extra_info`).
    pub rx_extra_info: u64,
    /// Frames the backend acknowledged as sent.
    pub tx_packets: u64,
    /// Bytes of those frames.
    pub tx_bytes: u64,
    /// Frames the backend dropped (`NETIF_RSP_DROPPED`) or that the caller
    /// offered with an invalid length.
    pub tx_drops: u64,
    /// Frames the backend failed (`NETIF_RSP_ERROR` or an unknown status).
    pub tx_errors: u64,
    /// Transmit attempts refused for want of a tx buffer, ring slot or id.
    pub tx_ring_full: u64,
    /// Backend misbehaviour: implausible producer index, unknown or stale
    /// id, frame outside its page, unexpected tx NULL response.
    pub protocol_errors: u64,
}

/// Why a frame could not be queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxError {
    /// No free tx buffer, ring slot or request id, even after reclaiming.
    RingFull,
    /// Length 0, above [`MAX_FRAME_LEN`], beyond the page, or the fill
    /// closure returned 0 or more than it was given.
    BadLength,
}

/// Why [`NetfrontRings`] could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetupError {
    /// More than [`MAX_RX_BUFFERS`] rx buffers.
    TooManyRxBuffers,
    /// More than [`MAX_TX_BUFFERS`] tx buffers.
    TooManyTxBuffers,
    /// A buffer page address is null.
    NullPage,
}

/// Outcome of [`NetfrontRings::poll_rx`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RxPoll {
    /// Frames handed to the visitor.
    pub delivered: usize,
    /// Buffers were reposted and the backend waits for them: notify its
    /// event channel.
    pub notify: bool,
    /// The budget ran out with responses left: poll again (no notification
    /// will come for those).
    pub more: bool,
}

/// A foreign tx request ([`NetfrontRings::transmit_granted`]) completed:
/// the backend no longer reads the page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxCompletion {
    /// The caller's id given to `transmit_granted`.
    pub cookie: u32,
    /// `NETIF_RSP_*` from the backend.
    pub status: i16,
}

impl TxCompletion {
    /// The backend sent the frame.
    pub fn is_ok(&self) -> bool {
        self.status == NETIF_RSP_OKAY
    }
}

/// One received frame, lent to the [`NetfrontRings::poll_rx`] visitor.
pub struct RxFrame<'a> {
    data: &'a mut [u8],
    flags: u16,
    buffer: u16,
    gref: GrantRef,
    offset: u16,
    hold: bool,
}

impl<'a> RxFrame<'a> {
    /// The frame bytes (`page[offset..offset + status]`), writable so the
    /// frame can be rewritten in place (NAT) before being forwarded.
    pub fn data(&mut self) -> &mut [u8] {
        self.data
    }
    /// Length of the frame.
    pub fn len(&self) -> usize {
        self.data.len()
    }
    /// Never true (empty frames are dropped), for API symmetry.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
    /// `NETRXF_*` flags of the response.
    pub fn flags(&self) -> u16 {
        self.flags
    }
    /// `NETRXF_csum_blank`: the L4 checksum was not computed.
    pub fn checksum_blank(&self) -> bool {
        self.flags & NETRXF_CSUM_BLANK != 0
    }
    /// `NETRXF_data_validated`: the backend validated the checksum.
    pub fn data_validated(&self) -> bool {
        self.flags & NETRXF_DATA_VALIDATED != 0
    }
    /// Index of the rx buffer holding the frame.
    pub fn buffer_id(&self) -> u16 {
        self.buffer
    }
    /// Grant reference of the page holding the frame (for zero-copy
    /// forwarding through another vif's [`NetfrontRings::transmit_granted`]).
    pub fn gref(&self) -> GrantRef {
        self.gref
    }
    /// Offset of the frame within its page.
    pub fn offset(&self) -> u16 {
        self.offset
    }
    /// Keeps the buffer out of the rx ring after the visitor returns (for
    /// zero-copy forwarding); give it back with
    /// [`NetfrontRings::release_rx`].
    pub fn hold(&mut self) {
        self.hold = true;
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum RxState {
    Free,
    Posted,
    Held,
}

#[derive(Clone, Copy)]
struct RxBuf {
    page: *mut u8,
    gref: GrantRef,
    state: RxState,
}

#[derive(Clone, Copy)]
struct TxBuf {
    page: *mut u8,
    gref: GrantRef,
}

#[derive(Clone, Copy, Debug)]
enum TxSlot {
    Free,
    /// One of our tx buffers is in flight.
    Own { buf: u16, len: u16 },
    /// A page granted by someone else is in flight.
    Foreign { cookie: u32, len: u16 },
    /// A foreign request completed; the id is released once the completion
    /// has been taken.
    Done { cookie: u32, status: i16 },
}

/// Where the rx parser is within a (possibly multi-slot) frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RxParse {
    /// Expecting the first slot of a frame.
    Start,
    /// Expecting extra-info slots; then fragments of a dropped multi-slot
    /// frame (`then_frags`) or a new frame.
    Extras { then_frags: bool },
    /// Expecting further fragments of a dropped multi-slot frame.
    Frags,
}

/// The rings and buffers of one vif.
///
/// All storage is inline and fixed (about 12 KiB); nothing allocates after
/// construction.
pub struct NetfrontRings<TX, RX>
where
    TX: SharedRing<Req = NetifTxRequest, Rsp = NetifTxResponse>,
    RX: SharedRing<Req = NetifRxRequest, Rsp = NetifRxResponse>,
{
    tx: FrontRing<TX>,
    rx: FrontRing<RX>,
    rx_bufs: Vec<RxBuf, MAX_RX_BUFFERS>,
    /// Rx buffers in state `Free`, as a stack (recently used pages first).
    rx_free: Vec<u16, MAX_RX_BUFFERS>,
    /// The buffer posted at each rx ring slot (ring index mod 256): an
    /// extra-info response occupies the slot of the request it consumed.
    rx_slot_buf: [u16; MAX_RX_BUFFERS],
    rx_parse: RxParse,
    rx_posted: usize,
    rx_held: usize,
    tx_bufs: Vec<TxBuf, MAX_TX_BUFFERS>,
    tx_free: Vec<u16, MAX_TX_BUFFERS>,
    tx_slots: [TxSlot; MAX_TX_IN_FLIGHT],
    tx_id_free: Vec<u16, MAX_TX_IN_FLIGHT>,
    tx_done: Deque<u16, MAX_TX_IN_FLIGHT>,
    tx_in_flight: usize,
    counters: VifCounters,
}

// SAFETY: the buffer page pointers are owned by this value on our side (the
// contract of `new`); nothing else in this domain touches those pages while
// it lives, so moving it to another CPU moves the only user with it.
unsafe impl<TX, RX> Send for NetfrontRings<TX, RX>
where
    TX: SharedRing<Req = NetifTxRequest, Rsp = NetifTxResponse> + Send,
    RX: SharedRing<Req = NetifRxRequest, Rsp = NetifRxResponse> + Send,
{
}

impl<TX, RX> NetfrontRings<TX, RX>
where
    TX: SharedRing<Req = NetifTxRequest, Rsp = NetifTxResponse>,
    RX: SharedRing<Req = NetifRxRequest, Rsp = NetifRxResponse>,
{
    /// Initialises both shared rings (`SHARED_RING_INIT`) and takes the
    /// buffers. Nothing is posted yet: call [`NetfrontRings::fill_rx`]
    /// before (or right after) switching the device to Connected.
    ///
    /// # Safety
    /// Each page address in `rx_buffers` and `tx_buffers` must be valid for
    /// reads and writes of 4096 bytes, distinct, and used by nobody else in
    /// this domain for as long as the returned value lives; the grant
    /// references must grant those pages to the backend (rx read-write, tx
    /// at least read-only) for as long as the rings are connected.
    pub unsafe fn new(
        tx: TX,
        rx: RX,
        rx_buffers: &[(*mut u8, GrantRef)],
        tx_buffers: &[(*mut u8, GrantRef)],
    ) -> Result<Self, SetupError> {
        // SAFETY: forwarded contract.
        unsafe {
            Self::with_front_rings(FrontRing::new(tx), FrontRing::new(rx), rx_buffers, tx_buffers)
        }
    }

    /// As [`NetfrontRings::new`], over front rings already initialised or
    /// attached (for instance at a given index).
    ///
    /// # Safety
    /// As for [`NetfrontRings::new`].
    pub unsafe fn with_front_rings(
        tx: FrontRing<TX>,
        rx: FrontRing<RX>,
        rx_buffers: &[(*mut u8, GrantRef)],
        tx_buffers: &[(*mut u8, GrantRef)],
    ) -> Result<Self, SetupError> {
        if rx_buffers.len() > MAX_RX_BUFFERS {
            return Err(SetupError::TooManyRxBuffers);
        }
        if tx_buffers.len() > MAX_TX_BUFFERS {
            return Err(SetupError::TooManyTxBuffers);
        }
        if rx_buffers.iter().chain(tx_buffers).any(|(p, _)| p.is_null()) {
            return Err(SetupError::NullPage);
        }
        let mut rx_bufs = Vec::new();
        let mut rx_free = Vec::new();
        for (i, &(page, gref)) in rx_buffers.iter().enumerate() {
            let _ = rx_bufs.push(RxBuf { page, gref, state: RxState::Free });
            let _ = rx_free.push(i as u16); // fits: len <= capacity checked
        }
        rx_free.reverse(); // buffer 0 is posted first
        let mut tx_bufs = Vec::new();
        let mut tx_free = Vec::new();
        for (i, &(page, gref)) in tx_buffers.iter().enumerate() {
            let _ = tx_bufs.push(TxBuf { page, gref });
            let _ = tx_free.push(i as u16);
        }
        tx_free.reverse();
        let mut tx_id_free = Vec::new();
        for id in (0..MAX_TX_IN_FLIGHT as u16).rev() {
            let _ = tx_id_free.push(id);
        }
        Ok(NetfrontRings {
            tx,
            rx,
            rx_bufs,
            rx_free,
            rx_slot_buf: [0; MAX_RX_BUFFERS],
            rx_parse: RxParse::Start,
            rx_posted: 0,
            rx_held: 0,
            tx_bufs,
            tx_free,
            tx_slots: [TxSlot::Free; MAX_TX_IN_FLIGHT],
            tx_id_free,
            tx_done: Deque::new(),
            tx_in_flight: 0,
            counters: VifCounters::default(),
        })
    }

    /// Statistics, including the protocol errors seen by both rings.
    pub fn counters(&self) -> VifCounters {
        let mut c = self.counters;
        c.protocol_errors += self.tx.protocol_errors() + self.rx.protocol_errors();
        c
    }

    /// Rx buffers currently posted to the backend.
    pub fn posted_rx(&self) -> usize {
        self.rx_posted
    }

    /// Rx buffers held by the caller ([`RxFrame::hold`]).
    pub fn held_rx(&self) -> usize {
        self.rx_held
    }

    /// Tx requests queued or in flight (own and foreign), not yet answered.
    pub fn outstanding_tx(&self) -> usize {
        self.tx_in_flight
    }

    /// Tx buffers free for [`NetfrontRings::transmit`].
    pub fn free_tx_buffers(&self) -> usize {
        self.tx_free.len()
    }

    /// The tx front ring (indices, for debugging).
    pub fn tx_ring(&self) -> &FrontRing<TX> {
        &self.tx
    }

    /// The rx front ring (indices, for debugging).
    pub fn rx_ring(&self) -> &FrontRing<RX> {
        &self.rx
    }

    // ---- rx -------------------------------------------------------------

    /// Posts every free rx buffer the ring has room for, then publishes.
    /// Returns whether the backend's event channel must be notified.
    pub fn fill_rx(&mut self) -> bool {
        self.post_free_rx();
        self.rx.push_requests_and_check_notify()
    }

    fn post_free_rx(&mut self) {
        // At most MAX_RX_BUFFERS outstanding, so `rx_slot_buf` (indexed by
        // ring index mod 256) never aliases two outstanding slots, whatever
        // the ring size and whatever the backend answered.
        while self.rx.free_requests() > 0 && (self.rx.outstanding() as usize) < MAX_RX_BUFFERS {
            let Some(b) = self.rx_free.pop() else { break };
            let buf = &mut self.rx_bufs[b as usize];
            let slot = self.rx.req_prod_pvt();
            let req = NetifRxRequest { id: b, pad: 0, gref: buf.gref };
            if self.rx.push_request(req).is_err() {
                let _ = self.rx_free.push(b);
                break;
            }
            buf.state = RxState::Posted;
            self.rx_posted += 1;
            self.rx_slot_buf[slot as usize % MAX_RX_BUFFERS] = b;
        }
    }

    /// A response names buffer `id`: it must be one we posted.
    fn rx_claim(&mut self, id: u16) -> Option<u16> {
        match self.rx_bufs.get(id as usize) {
            Some(b) if b.state == RxState::Posted => Some(id),
            _ => {
                self.counters.protocol_errors += 1;
                None
            }
        }
    }

    /// Returns a posted buffer to the free list (`Posted -> Free`).
    fn rx_recycle(&mut self, b: u16) {
        let buf = &mut self.rx_bufs[b as usize];
        debug_assert_eq!(buf.state, RxState::Posted);
        buf.state = RxState::Free;
        self.rx_posted -= 1;
        // Cannot fail: each buffer is on the free list at most once (only
        // on the Posted -> Free transition) and the list holds them all.
        let _ = self.rx_free.push(b);
    }

    /// Gives back a buffer kept with [`RxFrame::hold`]; it is posted again
    /// by the next [`NetfrontRings::fill_rx`] or `poll_rx`. Returns false
    /// if `buffer_id` is not held.
    pub fn release_rx(&mut self, buffer_id: u16) -> bool {
        match self.rx_bufs.get_mut(buffer_id as usize) {
            Some(buf) if buf.state == RxState::Held => {
                buf.state = RxState::Free;
                self.rx_held -= 1;
                let _ = self.rx_free.push(buffer_id);
                true
            }
            _ => false,
        }
    }

    /// Delivers every received frame to `visit`, reposts the buffers and
    /// ends with `RING_FINAL_CHECK_FOR_RESPONSES`, so that a frame arriving
    /// meanwhile is either seen here or announced by a notification.
    pub fn poll_rx<F: FnMut(&mut RxFrame<'_>)>(&mut self, visit: F) -> RxPoll {
        self.poll_rx_budget(usize::MAX, visit)
    }

    /// As [`NetfrontRings::poll_rx`], consuming at most `budget` response
    /// slots (so one busy vif cannot starve the others). When the budget
    /// runs out, [`RxPoll::more`] is set and no final check is done.
    pub fn poll_rx_budget<F: FnMut(&mut RxFrame<'_>)>(
        &mut self,
        budget: usize,
        mut visit: F,
    ) -> RxPoll {
        let mut out = RxPoll::default();
        let mut slots = 0usize;
        loop {
            while slots < budget {
                let Some((idx, rsp)) = self.rx.take_response_at() else { break };
                slots += 1;
                self.rx_slot(idx, rsp, &mut visit, &mut out.delivered);
            }
            out.notify |= self.fill_rx();
            if slots >= budget {
                out.more = self.rx.unconsumed_responses() != 0;
                if out.more {
                    break;
                }
            }
            if !self.rx.final_check_for_responses() {
                break;
            }
        }
        out
    }

    fn rx_slot<F: FnMut(&mut RxFrame<'_>)>(
        &mut self,
        idx: RingIdx,
        rsp: NetifRxResponse,
        visit: &mut F,
        delivered: &mut usize,
    ) {
        match self.rx_parse {
            RxParse::Start => self.rx_first_slot(rsp, visit, delivered),
            RxParse::Extras { then_frags } => {
                // The extra overlays the slot of the request it consumed.
                self.counters.rx_extra_info += 1;
                let b = self.rx_slot_buf[idx as usize % MAX_RX_BUFFERS];
                if self.rx_bufs.get(b as usize).map(|x| x.state) == Some(RxState::Posted) {
                    self.rx_recycle(b);
                } else {
                    self.counters.protocol_errors += 1;
                }
                if !NetifExtraInfoHeader::from_rx_slot(&rsp).more() {
                    self.rx_parse = if then_frags { RxParse::Frags } else { RxParse::Start };
                }
            }
            RxParse::Frags => {
                if let Some(b) = self.rx_claim(rsp.id) {
                    self.rx_recycle(b);
                }
                if rsp.flags & NETRXF_MORE_DATA == 0 {
                    self.rx_parse = RxParse::Start;
                }
            }
        }
    }

    fn rx_first_slot<F: FnMut(&mut RxFrame<'_>)>(
        &mut self,
        rsp: NetifRxResponse,
        visit: &mut F,
        delivered: &mut usize,
    ) {
        let extra = rsp.flags & NETRXF_EXTRA_INFO != 0;
        let buf = self.rx_claim(rsp.id);
        if rsp.flags & NETRXF_MORE_DATA != 0 {
            // A multi-slot frame although we offered no scatter-gather:
            // drop it with all its slots.
            self.counters.rx_errors += 1;
            if let Some(b) = buf {
                self.rx_recycle(b);
            }
            self.rx_parse = if extra { RxParse::Extras { then_frags: true } } else { RxParse::Frags };
            return;
        }
        if extra {
            self.rx_parse = RxParse::Extras { then_frags: false };
        }
        let Some(b) = buf else { return };
        if rsp.status <= 0 {
            // NETIF_RSP_ERROR / DROPPED / another error, or an empty frame.
            self.counters.rx_drops += 1;
            self.rx_recycle(b);
            return;
        }
        let offset = rsp.offset as usize;
        let len = rsp.status as usize;
        if offset + len > XEN_PAGE_SIZE {
            self.counters.protocol_errors += 1;
            self.counters.rx_drops += 1;
            self.rx_recycle(b);
            return;
        }
        let RxBuf { page, gref, .. } = self.rx_bufs[b as usize];
        // SAFETY: `page` is valid for 4096 bytes (contract of `new`) and
        // offset + len <= 4096 was checked. The backend answered for this
        // buffer, so it has finished writing it (an honest one never writes
        // it again before we repost it), and no other reference to the page
        // exists on our side while the visitor runs (`&mut self`).
        let data = unsafe { core::slice::from_raw_parts_mut(page.add(offset), len) };
        let mut frame =
            RxFrame { data, flags: rsp.flags, buffer: b, gref, offset: rsp.offset, hold: false };
        visit(&mut frame);
        let hold = frame.hold;
        self.counters.rx_packets += 1;
        self.counters.rx_bytes += len as u64;
        *delivered += 1;
        if hold {
            self.rx_bufs[b as usize].state = RxState::Held;
            self.rx_posted -= 1;
            self.rx_held += 1;
        } else {
            self.rx_recycle(b);
        }
    }

    // ---- tx -------------------------------------------------------------

    /// Whether a tx request (with one of our buffers if `own`) can be queued.
    fn tx_room(&self, own: bool) -> bool {
        self.tx.free_requests() > 0 && !self.tx_id_free.is_empty() && (!own || !self.tx_free.is_empty())
    }

    /// Makes room (reclaiming completed requests if needed) or counts a
    /// ring-full refusal.
    fn ensure_tx_room(&mut self, own: bool) -> Result<(), TxError> {
        if self.tx_room(own) {
            return Ok(());
        }
        self.reclaim_tx();
        if self.tx_room(own) {
            return Ok(());
        }
        self.counters.tx_ring_full += 1;
        Err(TxError::RingFull)
    }

    /// Queues one frame of at most `len` bytes in a free tx buffer: `fill`
    /// gets `len` bytes of the buffer, writes the frame and returns its
    /// length (1..=len; 0 cancels). The request is published by
    /// [`NetfrontRings::flush_tx`]. No checksum offload: the frame must be
    /// complete.
    pub fn transmit<F: FnOnce(&mut [u8]) -> usize>(&mut self, len: usize, fill: F) -> Result<(), TxError> {
        if len == 0 || len > MAX_FRAME_LEN {
            self.counters.tx_drops += 1;
            return Err(TxError::BadLength);
        }
        self.ensure_tx_room(true)?;
        let (Some(buf), Some(id)) = (self.tx_free.pop(), self.tx_id_free.pop()) else {
            return Err(TxError::RingFull); // unreachable: room was checked
        };
        let TxBuf { page, gref } = self.tx_bufs[buf as usize];
        // SAFETY: `page` is valid for 4096 bytes (contract of `new`) and
        // len <= MAX_FRAME_LEN < 4096. The buffer was on the free list, so
        // no request references it: the backend has stopped reading it and
        // nothing else on our side uses it.
        let data = unsafe { core::slice::from_raw_parts_mut(page, len) };
        let n = fill(data);
        if n == 0 || n > len {
            let _ = self.tx_free.push(buf);
            let _ = self.tx_id_free.push(id);
            self.counters.tx_drops += 1;
            return Err(TxError::BadLength);
        }
        let req = NetifTxRequest { gref, offset: 0, flags: 0, id, size: n as u16 };
        if self.tx.push_request(req).is_err() {
            // Unreachable: a free slot was checked.
            let _ = self.tx_free.push(buf);
            let _ = self.tx_id_free.push(id);
            self.counters.tx_ring_full += 1;
            return Err(TxError::RingFull);
        }
        self.tx_slots[id as usize] = TxSlot::Own { buf, len: n as u16 };
        self.tx_in_flight += 1;
        Ok(())
    }

    /// Queues a frame that lies in a page granted to the backend by someone
    /// else (zero-copy forwarding of another vif's rx buffer): `len` bytes
    /// at `offset` of the page `gref`. The page must stay granted and
    /// untouched until [`NetfrontRings::take_tx_completion`] returns
    /// `cookie`. Published by [`NetfrontRings::flush_tx`].
    pub fn transmit_granted(&mut self, gref: GrantRef, offset: u16, len: u16, cookie: u32) -> Result<(), TxError> {
        if len == 0 || len as usize > MAX_FRAME_LEN || offset as usize + len as usize > XEN_PAGE_SIZE {
            self.counters.tx_drops += 1;
            return Err(TxError::BadLength);
        }
        self.ensure_tx_room(false)?;
        let Some(id) = self.tx_id_free.pop() else {
            return Err(TxError::RingFull); // unreachable: room was checked
        };
        let req = NetifTxRequest { gref, offset, flags: 0, id, size: len };
        if self.tx.push_request(req).is_err() {
            let _ = self.tx_id_free.push(id);
            self.counters.tx_ring_full += 1;
            return Err(TxError::RingFull);
        }
        self.tx_slots[id as usize] = TxSlot::Foreign { cookie, len };
        self.tx_in_flight += 1;
        Ok(())
    }

    /// Publishes the queued tx requests (`RING_PUSH_REQUESTS_AND_CHECK_NOTIFY`).
    /// Returns whether the backend's event channel must be notified.
    pub fn flush_tx(&mut self) -> bool {
        self.tx.push_requests_and_check_notify()
    }

    /// Consumes the tx responses: own buffers return to the free list,
    /// foreign completions queue for [`NetfrontRings::take_tx_completion`].
    /// Ends with the final check (asking for a notification on the next
    /// response). Returns the number of requests completed.
    pub fn reclaim_tx(&mut self) -> usize {
        let mut n = 0;
        loop {
            // Bounded: the backend cannot answer more than we published.
            while let Some(rsp) = self.tx.take_response() {
                n += self.tx_complete(rsp);
            }
            if !self.tx.final_check_for_responses() {
                break;
            }
        }
        n
    }

    fn tx_complete(&mut self, rsp: NetifTxResponse) -> usize {
        if rsp.status == NETIF_RSP_NULL {
            // Only follows an extra-info request, and we send none.
            self.counters.protocol_errors += 1;
            return 0;
        }
        let id = rsp.id as usize;
        let len = match self.tx_slots.get(id) {
            Some(&TxSlot::Own { buf, len }) => {
                let _ = self.tx_free.push(buf);
                let _ = self.tx_id_free.push(rsp.id);
                self.tx_slots[id] = TxSlot::Free;
                len
            }
            Some(&TxSlot::Foreign { cookie, len }) => {
                self.tx_slots[id] = TxSlot::Done { cookie, status: rsp.status };
                let _ = self.tx_done.push_back(rsp.id); // ids are unique: fits
                len
            }
            _ => {
                // Out of range, or an id with nothing in flight.
                self.counters.protocol_errors += 1;
                return 0;
            }
        };
        self.tx_in_flight -= 1;
        match rsp.status {
            NETIF_RSP_OKAY => {
                self.counters.tx_packets += 1;
                self.counters.tx_bytes += len as u64;
            }
            NETIF_RSP_DROPPED => self.counters.tx_drops += 1,
            _ => self.counters.tx_errors += 1,
        }
        1
    }

    /// The next completed foreign tx request, oldest first. Its page is no
    /// longer read by this vif's backend.
    pub fn take_tx_completion(&mut self) -> Option<TxCompletion> {
        let id = self.tx_done.pop_front()?;
        match self.tx_slots[id as usize] {
            TxSlot::Done { cookie, status } => {
                self.tx_slots[id as usize] = TxSlot::Free;
                let _ = self.tx_id_free.push(id);
                Some(TxCompletion { cookie, status })
            }
            _ => None, // unreachable: only Done ids are queued
        }
    }
}

// The simulated backend shared with the benchmarks and the fuzzer; it names
// the protocol modules as `super::ring` and `super::netif` (imported above).
#[cfg(test)]
use crate::netif;
#[cfg(test)]
#[path = "../benches/support/netback.rs"]
mod sim;
