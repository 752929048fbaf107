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
//! ```text
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
    Own {
        buf: u16,
        len: u16,
    },
    /// A page granted by someone else is in flight.
    Foreign {
        cookie: u32,
        len: u16,
    },
    /// A foreign request completed; the id is released once the completion
    /// has been taken.
    Done {
        cookie: u32,
        status: i16,
    },
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
    /// Ids of completed foreign requests awaiting `take_tx_completion`.
    /// The ids in neither `tx_id_free` nor `tx_done` are the ones in
    /// flight.
    tx_done: Deque<u16, MAX_TX_IN_FLIGHT>,
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
            Self::with_front_rings(
                FrontRing::new(tx),
                FrontRing::new(rx),
                rx_buffers,
                tx_buffers,
            )
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
        if rx_buffers
            .iter()
            .chain(tx_buffers)
            .any(|(p, _)| p.is_null())
        {
            return Err(SetupError::NullPage);
        }
        let mut rx_bufs = Vec::new();
        let mut rx_free = Vec::new();
        for (i, &(page, gref)) in rx_buffers.iter().enumerate() {
            let _ = rx_bufs.push(RxBuf {
                page,
                gref,
                state: RxState::Free,
            });
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

    /// Rx buffers free (neither posted nor held).
    pub fn free_rx(&self) -> usize {
        self.rx_free.len()
    }

    /// Rx buffers held by the caller ([`RxFrame::hold`]).
    pub fn held_rx(&self) -> usize {
        self.rx_held
    }

    /// Tx requests queued or in flight (own and foreign), not yet answered.
    pub fn outstanding_tx(&self) -> usize {
        MAX_TX_IN_FLIGHT - self.tx_id_free.len() - self.tx_done.len()
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
            let req = NetifRxRequest {
                id: b,
                pad: 0,
                gref: buf.gref,
            };
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
        let pushed = self.rx_free.push(b);
        debug_assert!(pushed.is_ok());
    }

    /// Gives back a buffer kept with [`RxFrame::hold`]; it is posted again
    /// by the next [`NetfrontRings::fill_rx`] or `poll_rx`. Returns false
    /// if `buffer_id` is not held.
    pub fn release_rx(&mut self, buffer_id: u16) -> bool {
        match self.rx_bufs.get_mut(buffer_id as usize) {
            Some(buf) if buf.state == RxState::Held => {
                buf.state = RxState::Free;
                self.rx_held -= 1;
                let pushed = self.rx_free.push(buffer_id);
                debug_assert!(pushed.is_ok());
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
                let Some((idx, rsp)) = self.rx.take_response_at() else {
                    break;
                };
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
                    self.rx_parse = if then_frags {
                        RxParse::Frags
                    } else {
                        RxParse::Start
                    };
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
            self.rx_parse = if extra {
                RxParse::Extras { then_frags: true }
            } else {
                RxParse::Frags
            };
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
        let mut frame = RxFrame {
            data,
            flags: rsp.flags,
            buffer: b,
            gref,
            offset: rsp.offset,
            hold: false,
        };
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
        self.tx.free_requests() > 0
            && !self.tx_id_free.is_empty()
            && (!own || !self.tx_free.is_empty())
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
    pub fn transmit<F: FnOnce(&mut [u8]) -> usize>(
        &mut self,
        len: usize,
        fill: F,
    ) -> Result<(), TxError> {
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
        let req = NetifTxRequest {
            gref,
            offset: 0,
            flags: 0,
            id,
            size: n as u16,
        };
        if self.tx.push_request(req).is_err() {
            // Unreachable: a free slot was checked.
            let _ = self.tx_free.push(buf);
            let _ = self.tx_id_free.push(id);
            self.counters.tx_ring_full += 1;
            return Err(TxError::RingFull);
        }
        self.tx_slots[id as usize] = TxSlot::Own { buf, len: n as u16 };
        Ok(())
    }

    /// Queues a frame that lies in a page granted to the backend by someone
    /// else (zero-copy forwarding of another vif's rx buffer): `len` bytes
    /// at `offset` of the page `gref`. The page must stay granted and
    /// untouched until [`NetfrontRings::take_tx_completion`] returns
    /// `cookie`. Published by [`NetfrontRings::flush_tx`].
    pub fn transmit_granted(
        &mut self,
        gref: GrantRef,
        offset: u16,
        len: u16,
        cookie: u32,
    ) -> Result<(), TxError> {
        if len == 0
            || len as usize > MAX_FRAME_LEN
            || offset as usize + len as usize > XEN_PAGE_SIZE
        {
            self.counters.tx_drops += 1;
            return Err(TxError::BadLength);
        }
        self.ensure_tx_room(false)?;
        let Some(id) = self.tx_id_free.pop() else {
            return Err(TxError::RingFull); // unreachable: room was checked
        };
        let req = NetifTxRequest {
            gref,
            offset,
            flags: 0,
            id,
            size: len,
        };
        if self.tx.push_request(req).is_err() {
            let _ = self.tx_id_free.push(id);
            self.counters.tx_ring_full += 1;
            return Err(TxError::RingFull);
        }
        self.tx_slots[id as usize] = TxSlot::Foreign { cookie, len };
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
                let pushed = self.tx_free.push(buf).and(self.tx_id_free.push(rsp.id));
                debug_assert!(pushed.is_ok());
                self.tx_slots[id] = TxSlot::Free;
                len
            }
            Some(&TxSlot::Foreign { cookie, len }) => {
                self.tx_slots[id] = TxSlot::Done {
                    cookie,
                    status: rsp.status,
                };
                let pushed = self.tx_done.push_back(rsp.id); // ids are unique: fits
                debug_assert!(pushed.is_ok());
                len
            }
            _ => {
                // Out of range, or an id with nothing in flight.
                self.counters.protocol_errors += 1;
                return 0;
            }
        };
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
                let pushed = self.tx_id_free.push(id);
                debug_assert!(pushed.is_ok());
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

#[cfg(test)]
mod tests {
    use super::sim::{init_ring_at, page_bytes, Pages, SimNetback, SimRxRing};
    use super::*;
    use crate::netif::*;
    use crate::ring::testing::Hooked;
    use std::cell::RefCell;
    use std::rc::Rc;
    use std::vec::Vec;

    const RX_GREF: u32 = 1000;
    const TX_GREF: u32 = 2000;
    const FOREIGN_GREF: u32 = 3000;

    type Front = NetfrontRings<TxSharedRing, RxSharedRing>;

    /// A vif wired to the simulated backend. `pages` is dropped last.
    struct Vif {
        fe: Front,
        be: SimNetback,
        rx_pages: Vec<*mut u8>,
        /// The front's rx side armed `rsp_event` and saw nothing: the next
        /// response must be notified.
        fe_rx_asleep: bool,
        pages: Pages,
    }

    fn frame(len: usize, seed: u32) -> Vec<u8> {
        let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(len as u32) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect()
    }

    fn vif_at(n_rx: usize, n_tx: usize, start: u32) -> Vif {
        let mut pages = Pages::new();
        let tx_ring = pages.alloc();
        let rx_ring = pages.alloc();
        let rx_pages: Vec<_> = (0..n_rx).map(|_| pages.alloc()).collect();
        let tx_pages: Vec<_> = (0..n_tx).map(|_| pages.alloc()).collect();
        // SAFETY: the pages are freed only when `Vif::pages` drops, after
        // the front and the backend.
        let (txr, rxr) = unsafe { (TxSharedRing::new(tx_ring), RxSharedRing::new(rx_ring)) };
        init_ring_at(&txr, start);
        init_ring_at(&rxr, start);
        let rxb: Vec<_> = rx_pages
            .iter()
            .enumerate()
            .map(|(i, &p)| (p, RX_GREF + i as u32))
            .collect();
        let txb: Vec<_> = tx_pages
            .iter()
            .enumerate()
            .map(|(i, &p)| (p, TX_GREF + i as u32))
            .collect();
        // SAFETY: as above; every page is distinct and used by nobody else.
        let fe = unsafe {
            NetfrontRings::with_front_rings(
                FrontRing::attach(txr, start),
                FrontRing::attach(rxr, start),
                &rxb,
                &txb,
            )
        }
        .unwrap();
        // SAFETY: as above.
        let mut be = unsafe { SimNetback::new(tx_ring, rx_ring, start) };
        for &(p, g) in rxb.iter().chain(&txb) {
            be.grant(g, p);
        }
        Vif {
            fe,
            be,
            rx_pages,
            fe_rx_asleep: true,
            pages,
        }
    }

    fn vif(n_rx: usize, n_tx: usize) -> Vif {
        vif_at(n_rx, n_tx, 0)
    }

    impl Vif {
        fn send(&mut self, f: &[u8]) -> Result<(), TxError> {
            self.fe.transmit(f.len(), |buf| {
                buf.copy_from_slice(f);
                f.len()
            })
        }

        /// flush_tx, kicking the backend when told to; a sleeping backend
        /// with work must have been told to.
        fn flush(&mut self) -> bool {
            let n = self.fe.flush_tx();
            if n {
                self.be.kick();
            }
            assert!(!self.be.tx_needs_kick(), "lost tx wake-up");
            n
        }

        fn fill(&mut self) -> bool {
            let n = self.fe.fill_rx();
            if n {
                self.be.kick();
            }
            assert!(!self.be.rx_needs_kick(), "lost rx-buffer wake-up");
            n
        }

        /// The backend publishes its rx responses. It must notify exactly
        /// when the front went idle since its last notification.
        fn push_rx(&mut self) -> bool {
            let pushed = self.be.rx.shared().rsp_prod() != self.be.rx.rsp_prod_pvt();
            let n = self.be.push_rx();
            assert_eq!(n, self.fe_rx_asleep && pushed, "rx notification");
            if n {
                self.fe_rx_asleep = false;
            }
            n
        }

        fn poll(&mut self) -> (Vec<Vec<u8>>, RxPoll) {
            let mut got = Vec::new();
            let r = self.poll_with(|f| got.push(f.data().to_vec()));
            (got, r)
        }

        fn poll_with<F: FnMut(&mut RxFrame<'_>)>(&mut self, f: F) -> RxPoll {
            self.poll_budget_with(usize::MAX, f)
        }

        /// poll_rx_budget, kicking the backend when told to and tracking
        /// whether the front went idle (armed rsp_event).
        fn poll_budget_with<F: FnMut(&mut RxFrame<'_>)>(&mut self, budget: usize, f: F) -> RxPoll {
            let r = self.fe.poll_rx_budget(budget, f);
            if r.notify {
                self.be.kick();
            }
            assert!(!self.be.rx_needs_kick(), "lost rx-buffer wake-up");
            self.fe_rx_asleep = !r.more;
            r
        }

        fn backend_tx(&mut self) -> Vec<Vec<u8>> {
            let mut seen = Vec::new();
            self.be.process_tx(|f| seen.push(f.to_vec()));
            seen
        }
    }

    #[test]
    fn setup_checks_its_inputs() {
        let mut pages = Pages::new();
        let (t, r) = (pages.alloc(), pages.alloc());
        let p = pages.alloc();
        let many = vec![(p, 1u32); 257];
        // SAFETY: the pages outlive the attempts; nothing is built.
        unsafe {
            let e = Front::new(TxSharedRing::new(t), RxSharedRing::new(r), &many, &[]);
            assert_eq!(e.err(), Some(SetupError::TooManyRxBuffers));
            let e = Front::new(TxSharedRing::new(t), RxSharedRing::new(r), &[], &many);
            assert_eq!(e.err(), Some(SetupError::TooManyTxBuffers));
            let e = Front::new(
                TxSharedRing::new(t),
                RxSharedRing::new(r),
                &[(core::ptr::null_mut(), 1)],
                &[],
            );
            assert_eq!(e.err(), Some(SetupError::NullPage));
            let ok = Front::new(
                TxSharedRing::new(t),
                RxSharedRing::new(r),
                &many[..256],
                &many[..256],
            );
            let fe = ok.unwrap();
            assert_eq!(fe.tx_ring().shared().req_event(), 1, "rings initialised");
            assert!(core::mem::size_of::<Front>() < 16 * 1024);
        }
    }

    #[test]
    fn tx_frames_round_trip_byte_exact() {
        let mut v = vif(4, 16);
        let sizes = [1usize, 14, 60, 64, 65, 128, 999, 1500, 1513, 1514];
        let frames: Vec<_> = sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| frame(n, i as u32))
            .collect();
        for f in &frames {
            v.send(f).unwrap();
        }
        assert_eq!(v.fe.outstanding_tx(), sizes.len());
        assert!(v.flush(), "backend idle at start");
        let seen = v.backend_tx();
        assert_eq!(seen, frames);
        assert_eq!(v.be.tx_bad, 0, "every request named a granted page");
        assert_eq!(v.fe.reclaim_tx(), sizes.len());
        assert_eq!(v.fe.outstanding_tx(), 0);
        assert_eq!(v.fe.free_tx_buffers(), 16);
        let c = v.fe.counters();
        assert_eq!(c.tx_packets, sizes.len() as u64);
        assert_eq!(c.tx_bytes, sizes.iter().sum::<usize>() as u64);
        assert_eq!(
            (c.tx_errors, c.tx_drops, c.tx_ring_full, c.protocol_errors),
            (0, 0, 0, 0)
        );
    }

    #[test]
    fn tx_rejects_bad_lengths_without_leaking() {
        let mut v = vif(1, 2);
        assert_eq!(v.fe.transmit(0, |_| 0), Err(TxError::BadLength));
        assert_eq!(v.fe.transmit(1515, |_| 1515), Err(TxError::BadLength));
        assert_eq!(
            v.fe.transmit(100, |_| 0),
            Err(TxError::BadLength),
            "cancelled"
        );
        assert_eq!(
            v.fe.transmit(100, |_| 101),
            Err(TxError::BadLength),
            "overrun"
        );
        assert_eq!(
            v.fe.transmit_granted(FOREIGN_GREF, 4000, 200, 1),
            Err(TxError::BadLength)
        );
        assert_eq!(
            v.fe.transmit_granted(FOREIGN_GREF, 0, 0, 1),
            Err(TxError::BadLength)
        );
        assert_eq!(v.fe.counters().tx_drops, 6);
        assert_eq!(v.fe.free_tx_buffers(), 2);
        assert_eq!(v.fe.outstanding_tx(), 0);
        // The closure may write fewer bytes than offered.
        v.fe.transmit(1514, |b| {
            b[..3].copy_from_slice(b"abc");
            3
        })
        .unwrap();
        v.flush();
        assert_eq!(v.backend_tx(), vec![b"abc".to_vec()]);
    }

    #[test]
    fn rx_frames_round_trip_byte_exact() {
        let mut v = vif(8, 1);
        assert!(v.fill(), "backend waits for buffers from the start");
        assert_eq!(v.fe.posted_rx(), 8);
        assert!(!v.fill(), "nothing new to post");
        for (i, off) in [0u16, 2, 100, 4096 - 1514].into_iter().enumerate() {
            v.be.rx_offset = off;
            v.be.rx_flags = if i % 2 == 0 {
                NETRXF_DATA_VALIDATED
            } else {
                NETRXF_CSUM_BLANK
            };
            let f = frame(60 + i * 400, i as u32);
            assert!(v.be.deliver_rx(&f));
            v.push_rx();
            let mut got = Vec::new();
            let r = v.poll_with(|fr| {
                assert_eq!(fr.offset(), off);
                assert_eq!(fr.data_validated(), i % 2 == 0);
                assert_eq!(fr.checksum_blank(), i % 2 == 1);
                assert_eq!(fr.gref(), RX_GREF + fr.buffer_id() as u32);
                assert_eq!(fr.len(), fr.data().len());
                got.push(fr.data().to_vec());
            });
            assert_eq!(r.delivered, 1);
            assert_eq!(got, vec![f]);
        }
        let c = v.fe.counters();
        assert_eq!(c.rx_packets, 4);
        assert_eq!(c.rx_bytes, (60 + 460 + 860 + 1260) as u64);
        assert_eq!(v.fe.posted_rx(), 8, "buffers reposted");
        assert_eq!(c.protocol_errors + c.rx_drops + c.rx_errors, 0);
    }

    #[test]
    fn rx_frame_can_be_rewritten_in_place() {
        let mut v = vif(2, 1);
        v.fill();
        v.be.deliver_rx(&[1, 2, 3, 4]);
        v.push_rx();
        let mut buf = None;
        v.poll_with(|fr| {
            fr.data()[0] = 9;
            buf = Some(fr.buffer_id());
        });
        let b = buf.unwrap() as usize;
        // SAFETY: the page is live; the backend is not writing it.
        assert_eq!(unsafe { page_bytes(v.rx_pages[b], 0, 4) }, vec![9, 2, 3, 4]);
    }

    #[test]
    fn tx_ring_full_then_reclaim_frees_buffers() {
        let mut v = vif(1, 4);
        let f = frame(64, 1);
        for _ in 0..4 {
            v.send(&f).unwrap();
        }
        assert_eq!(v.send(&f), Err(TxError::RingFull));
        assert_eq!(v.fe.counters().tx_ring_full, 1);
        v.flush();
        // Still full: the backend has not answered; reclaim inside finds nothing.
        assert_eq!(v.send(&f), Err(TxError::RingFull));
        assert_eq!(v.fe.counters().tx_ring_full, 2);
        assert_eq!(v.backend_tx().len(), 4);
        // The backend answered: transmit reclaims by itself.
        assert_eq!(v.fe.free_tx_buffers(), 0);
        v.send(&f).unwrap();
        assert_eq!(v.fe.free_tx_buffers(), 3);
        assert_eq!(v.fe.outstanding_tx(), 1);
        assert_eq!(v.fe.counters().tx_packets, 4);
    }

    #[test]
    fn tx_ring_slots_and_ids_run_out_at_256() {
        let mut v = vif(1, 256);
        let f = frame(64, 2);
        for _ in 0..256 {
            v.send(&f).unwrap();
        }
        assert!(v.fe.tx_ring().is_full());
        assert_eq!(v.send(&f), Err(TxError::RingFull));
        assert_eq!(
            v.fe.transmit_granted(FOREIGN_GREF, 0, 64, 9),
            Err(TxError::RingFull)
        );
        v.flush();
        assert_eq!(v.backend_tx().len(), 256);
        v.fe.transmit_granted(FOREIGN_GREF, 0, 64, 9).unwrap();
        assert_eq!(v.fe.free_tx_buffers(), 256);
        assert_eq!(v.fe.counters().tx_ring_full, 2);
    }

    #[test]
    fn tx_error_statuses_are_counted_and_buffers_return() {
        let mut v = vif(1, 8);
        for (status, _) in [
            (NETIF_RSP_ERROR, 0),
            (NETIF_RSP_DROPPED, 0),
            (7, 0),
            (-9, 0),
        ] {
            v.be.tx_status = status;
            v.send(&frame(100, 3)).unwrap();
            v.flush();
            v.backend_tx();
            v.fe.reclaim_tx();
        }
        let c = v.fe.counters();
        assert_eq!((c.tx_errors, c.tx_drops, c.tx_packets), (3, 1, 0));
        assert_eq!(v.fe.free_tx_buffers(), 8);
        assert_eq!(v.fe.outstanding_tx(), 0);
    }

    #[test]
    fn wraparound_of_all_indices_with_thousands_of_frames() {
        let start = u32::MAX - 10;
        let mut v = vif_at(32, 64, start);
        v.fill();
        let (mut sent, mut received) = (0u32, 0u32);
        for round in 0..3000u32 {
            // tx: a batch of 1..=40 frames
            let batch = round % 40 + 1;
            let mut expect = Vec::new();
            for k in 0..batch {
                let f = frame(60 + ((round * 7 + k * 13) % 1455) as usize, sent);
                match v.send(&f) {
                    Ok(()) => {
                        expect.push(f);
                        sent += 1;
                    }
                    Err(e) => panic!("round {round}: {e:?}"),
                }
            }
            v.flush();
            assert_eq!(v.backend_tx(), expect);
            v.fe.reclaim_tx();
            // rx: a batch of 1..=32 frames (one ring's worth of buffers)
            let batch = round % 32 + 1;
            let mut expect = Vec::new();
            for k in 0..batch {
                v.be.rx_offset = ((round + k) % 3) as u16 * 2;
                let f = frame(60 + ((round * 11 + k) % 1400) as usize, received);
                assert!(v.be.deliver_rx(&f), "round {round}");
                expect.push(f);
                received += 1;
            }
            v.push_rx();
            let (got, r) = v.poll();
            assert_eq!(r.delivered, batch as usize);
            assert_eq!(got, expect);
        }
        let c = v.fe.counters();
        assert_eq!(c.tx_packets, sent as u64);
        assert_eq!(c.rx_packets, received as u64);
        assert_eq!(
            c.protocol_errors + c.rx_drops + c.rx_errors + c.tx_errors + c.tx_ring_full,
            0
        );
        assert!(
            v.fe.tx_ring().rsp_cons() < start && v.fe.rx_ring().rsp_cons() < start,
            "wrapped"
        );
        assert_eq!(v.fe.posted_rx(), 32);
        assert_eq!(v.fe.outstanding_tx(), 0);
    }

    #[test]
    fn tx_notifications_follow_the_backend_state() {
        let mut v = vif(1, 64);
        let f = frame(64, 4);
        v.send(&f).unwrap();
        assert!(v.flush(), "backend asleep from the start: notify");
        v.send(&f).unwrap();
        assert!(!v.flush(), "backend was kicked and has not slept since");
        // The backend handles one request and stays awake (busy).
        assert_eq!(v.be.process_tx_max(1, |_| ()), 1);
        v.send(&f).unwrap();
        assert!(!v.flush(), "busy backend will look again");
        // It finishes and goes to sleep after its final check.
        v.be.process_tx(|_| ());
        assert!(v.be.tx_asleep);
        assert!(!v.flush(), "nothing new: no notify");
        for _ in 0..5 {
            v.send(&f).unwrap();
        }
        assert!(v.flush(), "asleep: one notify for the batch");
        assert_eq!(v.be.kicks, 2);
        v.be.process_tx(|_| ());
        assert_eq!(v.fe.reclaim_tx(), 8);
    }

    #[test]
    fn tx_completion_notifications_follow_the_front_state() {
        let mut v = vif(1, 64);
        let f = frame(64, 5);
        // reclaim_tx ended with the final check: rsp_event armed.
        v.fe.reclaim_tx();
        v.send(&f).unwrap();
        v.flush();
        let before = v.be.notifies_to_front;
        v.be.process_tx(|_| ());
        assert_eq!(v.be.notifies_to_front, before + 1, "front idle: notified");
        // Front has not reclaimed: a further completion is not notified.
        v.send(&f).unwrap();
        v.flush();
        v.be.process_tx(|_| ());
        assert_eq!(
            v.be.notifies_to_front,
            before + 1,
            "front has an event pending"
        );
        assert_eq!(v.fe.reclaim_tx(), 2);
        v.send(&f).unwrap();
        v.flush();
        v.be.process_tx(|_| ());
        assert_eq!(v.be.notifies_to_front, before + 2);
    }

    #[test]
    fn rx_notifications_both_ways() {
        let mut v = vif(4, 1);
        // The backend has a frame but no buffer: it sleeps waiting.
        assert!(!v.be.deliver_rx(&[1; 60]));
        assert!(v.be.rx_asleep);
        assert!(v.fill(), "buffers for a sleeping backend: notify");
        assert!(v.be.deliver_rx(&[1; 60]));
        assert!(v.push_rx(), "front idle since start: notify");
        assert!(v.be.deliver_rx(&[2; 60]));
        assert!(!v.push_rx(), "front has an event pending");
        let (got, r) = v.poll();
        assert_eq!(got.len(), 2);
        assert!(
            !r.notify,
            "backend busy (not asleep): reposting needs no notify"
        );
        assert!(v.be.deliver_rx(&[3; 60]));
        assert!(v.push_rx(), "front went idle after the poll");
        // Use up all buffers without the front reposting them.
        assert!(v.be.deliver_rx(&[4; 60]));
        assert!(v.be.deliver_rx(&[5; 60]));
        assert!(v.be.deliver_rx(&[6; 60]));
        assert!(!v.be.deliver_rx(&[7; 60]), "out of buffers: backend sleeps");
        v.push_rx();
        let (got, r) = v.poll();
        assert_eq!(got.len(), 4);
        assert!(r.notify, "reposting to a backend waiting for buffers");
    }

    type Hook = Rc<RefCell<Option<Box<dyn FnMut()>>>>;

    #[test]
    fn frame_arriving_between_check_and_recheck_is_delivered() {
        let mut pages = Pages::new();
        let (t, r) = (pages.alloc(), pages.alloc());
        let bufs: Vec<_> = (0..4).map(|i| (pages.alloc(), RX_GREF + i)).collect();
        let hook: Hook = Rc::new(RefCell::new(None));
        // SAFETY: `pages` outlives the front and the backend (declared first,
        // dropped last).
        let mut fe = unsafe {
            NetfrontRings::new(
                TxSharedRing::new(t),
                Hooked {
                    inner: SimRxRing::new(r),
                    // Runs the hook once, right after the front writes
                    // `rsp_event`: between the check and the re-check.
                    on_rsp_event: {
                        let hook = hook.clone();
                        move || {
                            let h = hook.borrow_mut().take();
                            if let Some(mut h) = h {
                                h();
                            }
                        }
                    },
                },
                &bufs,
                &[],
            )
        }
        .unwrap();
        // SAFETY: as above.
        let be = Rc::new(RefCell::new(unsafe { SimNetback::new(t, r, 0) }));
        for &(p, g) in &bufs {
            be.borrow_mut().grant(g, p);
        }
        fe.fill_rx();
        {
            let mut b = be.borrow_mut();
            assert!(b.deliver_rx(b"first"));
            b.push_rx();
        }
        let late_notified = Rc::new(RefCell::new(None));
        {
            let (be, late) = (be.clone(), late_notified.clone());
            *hook.borrow_mut() = Some(Box::new(move || {
                let mut b = be.borrow_mut();
                assert!(b.deliver_rx(b"late"));
                *late.borrow_mut() = Some(b.push_rx());
            }));
        }
        let mut got = Vec::new();
        let r = fe.poll_rx(|f| got.push(f.data().to_vec()));
        assert_eq!(
            got,
            vec![b"first".to_vec(), b"late".to_vec()],
            "the late frame is not lost"
        );
        assert_eq!(r.delivered, 2);
        assert!(hook.borrow().is_none(), "the hook ran");
        // rsp_event had just been armed: the backend also notified, which
        // is harmless (the next poll finds nothing).
        assert_eq!(*late_notified.borrow(), Some(true));
        assert_eq!(fe.poll_rx(|_| panic!("nothing more")).delivered, 0);
        drop(fe);
        drop(be);
    }

    #[test]
    fn poll_budget_limits_the_work_per_call() {
        let mut v = vif(16, 1);
        v.fill();
        for i in 0..10u8 {
            assert!(v.be.deliver_rx(&[i; 64]));
        }
        v.push_rx();
        let mut got = Vec::new();
        let r = v.poll_budget_with(3, |f| got.push(f.data()[0]));
        assert_eq!((r.delivered, r.more), (3, true));
        let r = v.poll_budget_with(7, |f| got.push(f.data()[0]));
        // Exactly used up: the final check finds nothing more.
        assert_eq!((r.delivered, r.more), (7, false));
        assert_eq!(got, (0..10).collect::<Vec<u8>>());
        assert_eq!(v.fe.posted_rx(), 16);
    }

    #[test]
    fn held_rx_buffers_stay_out_until_released() {
        let mut v = vif(4, 1);
        v.fill();
        v.be.deliver_rx(&[1; 64]);
        v.be.deliver_rx(&[2; 64]);
        v.push_rx();
        let mut held = Vec::new();
        let r = v.poll_with(|f| {
            if f.data()[0] == 1 {
                f.hold();
                held.push((f.buffer_id(), f.gref()));
            }
        });
        assert_eq!(r.delivered, 2);
        assert_eq!((v.fe.posted_rx(), v.fe.held_rx()), (3, 1));
        let (b, _) = held[0];
        assert!(!v.fe.release_rx(b + 1), "not held");
        assert!(!v.fe.release_rx(999), "out of range");
        // A rogue response for the held buffer is refused.
        v.be.raw_rx_response(NetifRxResponse {
            id: b,
            offset: 0,
            flags: 0,
            status: 10,
        });
        v.push_rx();
        assert_eq!(
            v.poll_with(|_| panic!("held buffer delivered")).delivered,
            0
        );
        assert_eq!(v.fe.counters().protocol_errors, 1);
        assert!(v.fe.release_rx(b));
        assert!(!v.fe.release_rx(b), "released twice");
        v.fill();
        assert_eq!(v.fe.held_rx(), 0);
        // 4 buffers, one of them lost to the rogue response's slot.
        assert_eq!(v.fe.posted_rx(), 4);
    }

    #[test]
    fn zero_copy_foreign_tx_completes_with_its_cookie() {
        let mut v = vif(1, 4);
        let foreign = v.pages.alloc();
        v.be.grant(FOREIGN_GREF, foreign);
        let f = frame(300, 6);
        // SAFETY: the foreign page is live and not shared yet.
        unsafe { std::ptr::copy_nonoverlapping(f.as_ptr(), foreign.add(100), f.len()) };
        let own = frame(80, 7);
        v.fe.transmit_granted(FOREIGN_GREF, 100, 300, 0xC0FFEE)
            .unwrap();
        v.send(&own).unwrap();
        v.fe.transmit_granted(FOREIGN_GREF, 100, 300, 42).unwrap();
        assert_eq!(v.fe.outstanding_tx(), 3);
        assert_eq!(v.fe.take_tx_completion(), None, "nothing completed yet");
        v.flush();
        assert_eq!(v.backend_tx(), vec![f.clone(), own, f.clone()]);
        assert_eq!(v.fe.reclaim_tx(), 3);
        assert_eq!(v.fe.outstanding_tx(), 0);
        assert_eq!(
            v.fe.take_tx_completion(),
            Some(TxCompletion {
                cookie: 0xC0FFEE,
                status: 0
            })
        );
        let c = v.fe.take_tx_completion().unwrap();
        assert!(c.is_ok() && c.cookie == 42);
        assert_eq!(v.fe.take_tx_completion(), None);
        assert_eq!(v.fe.counters().tx_packets, 3);
        // A failed foreign transmission completes too, with its status.
        v.be.tx_status = NETIF_RSP_ERROR;
        v.fe.transmit_granted(FOREIGN_GREF, 0, 60, 5).unwrap();
        v.flush();
        v.backend_tx();
        v.fe.reclaim_tx();
        let c = v.fe.take_tx_completion().unwrap();
        assert_eq!((c.cookie, c.is_ok()), (5, false));
        assert_eq!(v.fe.counters().tx_errors, 1);
    }

    #[test]
    fn undrained_foreign_completions_keep_their_ids() {
        let mut v = vif(1, 1);
        let foreign = v.pages.alloc();
        v.be.grant(FOREIGN_GREF, foreign);
        for i in 0..256 {
            v.fe.transmit_granted(FOREIGN_GREF, 0, 64, i).unwrap();
        }
        v.flush();
        v.backend_tx();
        v.fe.reclaim_tx();
        assert_eq!(v.fe.outstanding_tx(), 0);
        // Ring empty, but every id waits for its completion to be taken.
        assert_eq!(
            v.fe.transmit_granted(FOREIGN_GREF, 0, 64, 999),
            Err(TxError::RingFull)
        );
        assert_eq!(v.send(&[1; 60]), Err(TxError::RingFull));
        for i in 0..256 {
            assert_eq!(v.fe.take_tx_completion().map(|c| c.cookie), Some(i));
        }
        v.fe.transmit_granted(FOREIGN_GREF, 0, 64, 999).unwrap();
        v.send(&[1; 60]).unwrap();
    }

    // ---- a rogue backend ------------------------------------------------

    /// The front still carries traffic both ways.
    fn still_works(v: &mut Vif) {
        let f = frame(64, 99);
        v.fe.reclaim_tx();
        v.send(&f).unwrap();
        v.flush();
        assert_eq!(v.backend_tx(), vec![f.clone()]);
        v.fill();
        assert!(v.be.deliver_rx(&f));
        v.push_rx();
        let mut got = Vec::new();
        v.poll_with(|fr| got.push(fr.data().to_vec()));
        assert_eq!(got, vec![f]);
    }

    fn rsp(id: u16, offset: u16, flags: u16, status: i16) -> NetifRxResponse {
        NetifRxResponse {
            id,
            offset,
            flags,
            status,
        }
    }

    #[test]
    fn rogue_rx_rsp_prod_ahead_is_refused() {
        let mut v = vif(8, 2);
        v.fill();
        let cons = v.fe.rx_ring().rsp_cons();
        for bogus in [
            cons.wrapping_add(9),
            cons.wrapping_add(0x7fff_ffff),
            cons.wrapping_sub(1),
        ] {
            v.be.rx.shared().set_rsp_prod(bogus);
            let r = v.poll_with(|_| panic!("garbage delivered"));
            assert_eq!(r.delivered, 0);
        }
        assert_eq!(v.fe.counters().protocol_errors, 3);
        assert_eq!(v.fe.rx_ring().rsp_cons(), cons);
        v.be.rx.shared().set_rsp_prod(cons);
        still_works(&mut v);
        assert_eq!(v.fe.counters().protocol_errors, 3);
    }

    #[test]
    fn rogue_tx_rsp_prod_ahead_is_refused() {
        let mut v = vif(2, 8);
        v.send(&frame(64, 1)).unwrap();
        v.flush();
        v.be.tx
            .shared()
            .set_rsp_prod(v.fe.tx_ring().rsp_cons().wrapping_add(2));
        assert_eq!(v.fe.reclaim_tx(), 0);
        assert_eq!(v.fe.counters().protocol_errors, 1);
        v.be.tx.shared().set_rsp_prod(v.fe.tx_ring().rsp_cons());
        v.backend_tx();
        assert_eq!(v.fe.reclaim_tx(), 1);
        still_works(&mut v);
    }

    #[test]
    fn rogue_rx_ids_lengths_and_statuses() {
        let mut v = vif(16, 2);
        v.fill();
        // Out-of-range id, then the same valid id twice.
        v.be.raw_rx_response(rsp(999, 0, 0, 60));
        v.be.raw_rx_response(rsp(3, 0, 0, 60));
        v.be.raw_rx_response(rsp(3, 0, 0, 60));
        // Frames outside their page.
        v.be.raw_rx_response(rsp(4, 4000, 0, 200));
        v.be.raw_rx_response(rsp(5, 0, 0, i16::MAX));
        v.be.raw_rx_response(rsp(6, u16::MAX, 0, 1));
        // Errors and an empty frame.
        v.be.raw_rx_response(rsp(7, 0, 0, NETIF_RSP_ERROR));
        v.be.raw_rx_response(rsp(8, 0, 0, NETIF_RSP_DROPPED));
        v.be.raw_rx_response(rsp(9, 0, 0, i16::MIN));
        v.be.raw_rx_response(rsp(10, 0, 0, 0));
        // Exactly up to the end of the page is fine.
        v.be.raw_rx_response(rsp(11, 4096 - 100, 0, 100));
        v.push_rx();
        let mut lens = Vec::new();
        let r = v.poll_with(|f| lens.push((f.offset(), f.len())));
        assert_eq!(lens, vec![(0, 60), (4096 - 100, 100)]);
        assert_eq!(r.delivered, 2);
        let c = v.fe.counters();
        assert_eq!(
            c.protocol_errors,
            2 + 3,
            "bad id, duplicate id, 3 frames outside the page"
        );
        assert_eq!(c.rx_drops, 3 + 4);
        assert_eq!(c.rx_errors, 0);
        still_works(&mut v);
    }

    #[test]
    fn multi_slot_frames_are_dropped_whole() {
        let mut v = vif(16, 1);
        v.fill();
        v.be.raw_rx_response(rsp(0, 0, NETRXF_MORE_DATA, 1000));
        v.be.raw_rx_response(rsp(1, 0, NETRXF_MORE_DATA, 1000));
        v.be.raw_rx_response(rsp(2, 0, 0, 500)); // last fragment
        assert!(v.be.deliver_rx(b"after"));
        v.push_rx();
        let mut got = Vec::new();
        v.poll_with(|f| got.push(f.data().to_vec()));
        assert_eq!(got, vec![b"after".to_vec()]);
        let c = v.fe.counters();
        assert_eq!((c.rx_errors, c.rx_packets, c.protocol_errors), (1, 1, 0));
        assert_eq!(v.fe.posted_rx(), 16, "every slot's buffer came back");
    }

    #[test]
    fn fragments_may_span_two_polls() {
        let mut v = vif(16, 1);
        v.fill();
        v.be.raw_rx_response(rsp(0, 0, NETRXF_MORE_DATA, 1000));
        v.push_rx();
        assert_eq!(v.poll_with(|_| panic!()).delivered, 0);
        v.be.raw_rx_response(rsp(1, 0, 0, 500));
        assert!(v.be.deliver_rx(b"next"));
        v.push_rx();
        let mut got = Vec::new();
        v.poll_with(|f| got.push(f.data().to_vec()));
        assert_eq!(got, vec![b"next".to_vec()]);
        assert_eq!(v.fe.counters().rx_errors, 1);
    }

    fn extra_slot(ty: u8, flags: u8) -> NetifRxResponse {
        // type and flags are the first two bytes of the slot; the rest is
        // type-specific data that we ignore.
        rsp(u16::from_ne_bytes([ty, flags]), 0xFFFF, 0xFFFF, -1)
    }

    #[test]
    fn extra_info_slots_are_skipped() {
        let mut v = vif(16, 1);
        v.fill();
        let f = frame(70, 8);
        // SAFETY: buffer 0 is posted; the "backend" writes it, as netback would.
        unsafe { std::ptr::copy_nonoverlapping(f.as_ptr(), v.rx_pages[0], 70) };
        v.be.raw_rx_response(rsp(0, 0, NETRXF_EXTRA_INFO, 70));
        v.be.raw_rx_response(extra_slot(
            XEN_NETIF_EXTRA_TYPE_GSO,
            XEN_NETIF_EXTRA_FLAG_MORE,
        ));
        v.be.raw_rx_response(extra_slot(XEN_NETIF_EXTRA_TYPE_HASH, 0));
        assert!(v.be.deliver_rx(b"plain"));
        // Extra info on a multi-slot frame: extras, then fragments.
        v.be.raw_rx_response(rsp(4, 0, NETRXF_EXTRA_INFO | NETRXF_MORE_DATA, 100));
        v.be.raw_rx_response(extra_slot(XEN_NETIF_EXTRA_TYPE_GSO, 0));
        v.be.raw_rx_response(rsp(6, 0, 0, 100));
        assert!(v.be.deliver_rx(b"end"));
        v.push_rx();
        let mut got = Vec::new();
        v.poll_with(|fr| got.push(fr.data().to_vec()));
        assert_eq!(got, vec![f, b"plain".to_vec(), b"end".to_vec()]);
        let c = v.fe.counters();
        assert_eq!((c.rx_extra_info, c.rx_errors, c.protocol_errors), (3, 1, 0));
        assert_eq!(v.fe.posted_rx(), 16, "the extra slots' buffers came back");
    }

    #[test]
    fn rogue_tx_responses() {
        let mut v = vif(2, 8);
        let f = frame(64, 1);
        for _ in 0..6 {
            v.send(&f).unwrap();
        }
        v.flush();
        // Responses naming nothing in flight consume the slots of real
        // requests, whose buffers are then lost (but nothing breaks).
        v.be.raw_tx_response(NetifTxResponse { id: 500, status: 0 });
        v.be.raw_tx_response(NetifTxResponse { id: 200, status: 0 }); // id free
        v.be.raw_tx_response(NetifTxResponse {
            id: 0,
            status: NETIF_RSP_NULL,
        });
        v.be.raw_tx_response(NetifTxResponse { id: 0, status: 0 });
        v.be.raw_tx_response(NetifTxResponse { id: 0, status: 0 }); // duplicate
        v.be.raw_tx_response(NetifTxResponse { id: 1, status: 0 });
        v.be.push_tx();
        assert_eq!(v.fe.reclaim_tx(), 2);
        let c = v.fe.counters();
        assert_eq!(c.protocol_errors, 4);
        assert_eq!(c.tx_packets, 2);
        assert_eq!(v.fe.outstanding_tx(), 4, "four requests never answered");
        assert_eq!(v.fe.free_tx_buffers(), 4);
        still_works(&mut v);
    }

    #[test]
    fn drops_cleanly_with_everything_outstanding() {
        let mut v = vif(8, 8);
        v.fill();
        for _ in 0..8 {
            v.send(&[0x55; 100]).unwrap();
        }
        v.fe.transmit_granted(FOREIGN_GREF, 0, 100, 1).unwrap();
        v.flush();
        assert_eq!((v.fe.posted_rx(), v.fe.outstanding_tx()), (8, 9));
        drop(v);
    }
}
