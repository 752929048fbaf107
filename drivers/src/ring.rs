//! Shared producer/consumer rings of Xen PV devices (xen/include/public/io/ring.h).
//!
//! The layout of a shared ring page (`struct *_sring`):
//!
//! | offset | field |
//! |---|---|
//! | 0  | `req_prod`  |
//! | 4  | `req_event` |
//! | 8  | `rsp_prod`  |
//! | 12 | `rsp_event` |
//! | 16 | `pvt` (4 bytes, netif: `smartpoll_active`) |
//! | 20 | `__pad[44]` |
//! | 64 | `ring[nr_ents]`, each entry `union { req; rsp; }` |
//!
//! `nr_ents` is the largest power of two not above
//! `(page size - 64) / sizeof(union entry)`.
//!
//! [`SharedRing`] abstracts the shared page (so the ring logic can be tested
//! against a simulated backend and fuzzed), [`RawSharedRing`] is the one real
//! implementation, [`FrontRing`] is the front end's private half with the
//! `RING_*` macros as methods, and [`BackRing`] is the back end's half (used by
//! the simulated backend of the tests and benchmarks).
//!
//! Indices are free-running `u32` (`RING_IDX`), every computation on them is
//! wrapping. The other end is not trusted: whatever it writes into the
//! indices or the entries, the front never reads an entry that it did not
//! legitimately hand out a request for, never loops without bound and never
//! panics; an impossible producer index is counted as a protocol error.
//!
//! Memory barriers follow the header: `xen_wmb()` before publishing a
//! producer index ([`Ordering::Release`] fence), `xen_rmb()` after reading
//! the other end's producer index ([`Ordering::Acquire`] fence) and
//! `xen_mb()` between publishing and reading an event index
//! ([`Ordering::SeqCst`] fence). The four indices are accessed as
//! [`AtomicU32`] (relaxed), the entries with volatile copies.

use core::marker::PhantomData;
use core::ptr::NonNull;
use core::sync::atomic::{fence, AtomicU32, Ordering};

/// `RING_IDX`: a free-running index, wrapping at 2^32.
pub type RingIdx = u32;

/// Bytes before the first entry of a shared ring page (indices, `pvt`, pad).
pub const SRING_HEADER_SIZE: usize = 64;

const OFF_REQ_PROD: usize = 0;
const OFF_REQ_EVENT: usize = 4;
const OFF_RSP_PROD: usize = 8;
const OFF_RSP_EVENT: usize = 12;
const OFF_PVT: usize = 16;

/// A type that can be an entry of a shared ring.
///
/// # Safety
/// Every bit pattern of `size_of::<Self>()` bytes must be a valid value
/// (plain integers in a `#[repr(C)]` struct, for instance): the other end
/// writes the entries and may write anything.
pub unsafe trait RingEntry: Copy {}

// SAFETY: every bit pattern is a valid integer.
unsafe impl RingEntry for u32 {}
// SAFETY: every bit pattern is a valid integer.
unsafe impl RingEntry for u64 {}

const fn max(a: usize, b: usize) -> usize {
    if a > b {
        a
    } else {
        b
    }
}

/// `sizeof(union { Req req; Rsp rsp; })`.
pub const fn entry_size<Req, Rsp>() -> usize {
    let size = max(core::mem::size_of::<Req>(), core::mem::size_of::<Rsp>());
    let align = max(core::mem::align_of::<Req>(), core::mem::align_of::<Rsp>());
    size.div_ceil(align) * align
}

/// `__RD32`: rounds down to a power of two (0 stays 0).
pub const fn round_down_pow2(x: usize) -> usize {
    if x == 0 {
        0
    } else {
        1 << (usize::BITS - 1 - x.leading_zeros())
    }
}

/// `__CONST_RING_SIZE`: the number of entries of a ring of `Req`/`Rsp` in
/// `bytes` of shared memory.
pub const fn ring_entries<Req, Rsp>(bytes: usize) -> usize {
    if bytes <= SRING_HEADER_SIZE {
        return 0;
    }
    round_down_pow2((bytes - SRING_HEADER_SIZE) / entry_size::<Req, Rsp>())
}

/// The shared ring page as both ends see it.
///
/// Index arguments of the entry accessors are free-running ring indices;
/// implementations reduce them modulo [`SharedRing::size`]. The front end
/// uses the `req_prod`/`req_event` setters, `rsp_event` setter, `write_req`
/// and `read_rsp`; the rest exists for a back end (the simulated backend of
/// the tests).
pub trait SharedRing {
    /// The request type (written by the front end).
    type Req: RingEntry;
    /// The response type (written by the back end).
    type Rsp: RingEntry;

    /// Number of entries; a power of two, at least 1.
    fn size(&self) -> u32;
    /// `SHARED_RING_INIT`: producer indices 0, event indices 1, pads 0.
    fn init(&self);

    fn req_prod(&self) -> RingIdx;
    fn set_req_prod(&self, v: RingIdx);
    fn req_event(&self) -> RingIdx;
    fn set_req_event(&self, v: RingIdx);
    fn rsp_prod(&self) -> RingIdx;
    fn set_rsp_prod(&self, v: RingIdx);
    fn rsp_event(&self) -> RingIdx;
    fn set_rsp_event(&self, v: RingIdx);

    fn write_req(&self, idx: RingIdx, req: Self::Req);
    fn read_req(&self, idx: RingIdx) -> Self::Req;
    fn write_rsp(&self, idx: RingIdx, rsp: Self::Rsp);
    fn read_rsp(&self, idx: RingIdx) -> Self::Rsp;
}

/// A shared ring laid out exactly as `struct *_sring` in a 4096-byte page
/// at a raw address (the page granted to, or mapped from, the other domain).
pub struct RawSharedRing<Req, Rsp> {
    page: NonNull<u8>,
    _entries: PhantomData<fn() -> (Req, Rsp)>,
}

// SAFETY: the handle is an address plus the promise of `new` that the page
// stays valid and is shared only with the other end of the protocol (whose
// accesses are concurrent anyway). Moving the handle to another thread adds
// no access that the protocol does not already synchronise.
unsafe impl<Req, Rsp> Send for RawSharedRing<Req, Rsp> {}

impl<Req: RingEntry, Rsp: RingEntry> RawSharedRing<Req, Rsp> {
    /// Size of the shared page.
    pub const PAGE_SIZE: usize = 4096;
    /// Size of one entry slot (`sizeof(union entry)`).
    pub const ENTRY_SIZE: usize = entry_size::<Req, Rsp>();
    /// Number of entries of the ring on one page.
    pub const NR_ENTS: usize = ring_entries::<Req, Rsp>(Self::PAGE_SIZE);

    /// Wraps the shared ring page at `page`. Does not initialise it (see
    /// [`SharedRing::init`], which [`FrontRing::new`] calls).
    ///
    /// # Safety
    /// `page` must be non-null, aligned to at least 8 bytes (a page is),
    /// valid for reads and writes of 4096 bytes for as long as this value
    /// (and every other handle of the same page) lives, and touched only
    /// through handles of this type on our side and by the other end of the
    /// ring protocol. At most one front (or back) end may drive it.
    pub unsafe fn new(page: *mut u8) -> Self {
        const { assert!(Self::NR_ENTS >= 1, "ring entry does not fit a page") };
        debug_assert!(!page.is_null() && (page as usize).is_multiple_of(8));
        RawSharedRing {
            // SAFETY: non-null per the contract of `new`.
            page: unsafe { NonNull::new_unchecked(page) },
            _entries: PhantomData,
        }
    }

    /// The raw page address.
    pub fn page(&self) -> *mut u8 {
        self.page.as_ptr()
    }

    fn index(&self, off: usize) -> &AtomicU32 {
        // SAFETY: `off` is one of the four index offsets (< 16, 4-aligned);
        // the page is valid and 8-aligned per `new`. The other end accesses
        // the indices with atomic 32-bit loads and stores as well (on x86 a
        // plain aligned mov), so viewing them as AtomicU32 is sound.
        unsafe { AtomicU32::from_ptr(self.page.as_ptr().add(off).cast::<u32>()) }
    }

    fn slot(&self, idx: RingIdx) -> *mut u8 {
        let i = (idx & (Self::NR_ENTS as u32 - 1)) as usize;
        // In bounds: 64 + i * ENTRY_SIZE + ENTRY_SIZE <= 4096 by NR_ENTS.
        self.page
            .as_ptr()
            .wrapping_add(SRING_HEADER_SIZE + i * Self::ENTRY_SIZE)
    }
}

impl<Req: RingEntry, Rsp: RingEntry> SharedRing for RawSharedRing<Req, Rsp> {
    type Req = Req;
    type Rsp = Rsp;

    fn size(&self) -> u32 {
        Self::NR_ENTS as u32
    }

    fn init(&self) {
        self.index(OFF_REQ_PROD).store(0, Ordering::Relaxed);
        self.index(OFF_RSP_PROD).store(0, Ordering::Relaxed);
        self.index(OFF_REQ_EVENT).store(1, Ordering::Relaxed);
        self.index(OFF_RSP_EVENT).store(1, Ordering::Relaxed);
        // SAFETY: bytes 16..64 (pvt and __pad) lie within the page, valid per
        // `new`; the ring is not yet shared while it is being initialised.
        unsafe {
            core::ptr::write_bytes(
                self.page.as_ptr().add(OFF_PVT),
                0,
                SRING_HEADER_SIZE - OFF_PVT,
            )
        };
    }

    fn req_prod(&self) -> RingIdx {
        self.index(OFF_REQ_PROD).load(Ordering::Relaxed)
    }
    fn set_req_prod(&self, v: RingIdx) {
        self.index(OFF_REQ_PROD).store(v, Ordering::Relaxed)
    }
    fn req_event(&self) -> RingIdx {
        self.index(OFF_REQ_EVENT).load(Ordering::Relaxed)
    }
    fn set_req_event(&self, v: RingIdx) {
        self.index(OFF_REQ_EVENT).store(v, Ordering::Relaxed)
    }
    fn rsp_prod(&self) -> RingIdx {
        self.index(OFF_RSP_PROD).load(Ordering::Relaxed)
    }
    fn set_rsp_prod(&self, v: RingIdx) {
        self.index(OFF_RSP_PROD).store(v, Ordering::Relaxed)
    }
    fn rsp_event(&self) -> RingIdx {
        self.index(OFF_RSP_EVENT).load(Ordering::Relaxed)
    }
    fn set_rsp_event(&self, v: RingIdx) {
        self.index(OFF_RSP_EVENT).store(v, Ordering::Relaxed)
    }

    fn write_req(&self, idx: RingIdx, req: Req) {
        // SAFETY: `slot` is in bounds of the page and aligned for Req (64 and
        // ENTRY_SIZE are multiples of its alignment); volatile because the
        // other end reads it concurrently.
        unsafe { core::ptr::write_volatile(self.slot(idx).cast::<Req>(), req) }
    }
    fn read_req(&self, idx: RingIdx) -> Req {
        // SAFETY: as in `write_req`; any bit pattern is a valid Req
        // (RingEntry), and the volatile copy is what we work on afterwards.
        unsafe { core::ptr::read_volatile(self.slot(idx).cast::<Req>()) }
    }
    fn write_rsp(&self, idx: RingIdx, rsp: Rsp) {
        // SAFETY: as in `write_req`, for Rsp.
        unsafe { core::ptr::write_volatile(self.slot(idx).cast::<Rsp>(), rsp) }
    }
    fn read_rsp(&self, idx: RingIdx) -> Rsp {
        // SAFETY: as in `read_req`, for Rsp.
        unsafe { core::ptr::read_volatile(self.slot(idx).cast::<Rsp>()) }
    }
}

/// The ring has no free request slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Full;

/// The front end's half of a ring (`struct *_front_ring` and the front-side
/// `RING_*` macros).
///
/// Besides the header's `req_prod_pvt` and `rsp_cons` it remembers the
/// producer index it last published (so a backend that rewrites `req_prod`
/// cannot confuse it) and the last validated `rsp_prod`.
pub struct FrontRing<R: SharedRing> {
    sring: R,
    size: u32,
    req_prod_pvt: RingIdx,
    req_prod_pub: RingIdx,
    rsp_cons: RingIdx,
    /// Last `rsp_prod` read and found plausible; responses up to it may be
    /// consumed without reading `rsp_prod` again.
    rsp_prod_seen: RingIdx,
    /// The last implausible `rsp_prod`, so a stuck bad value counts once.
    bad_rsp_prod: Option<RingIdx>,
    protocol_errors: u64,
}

impl<R: SharedRing> FrontRing<R> {
    /// `XEN_FRONT_RING_INIT`: initialises the shared ring and attaches at 0.
    pub fn new(sring: R) -> Self {
        sring.init();
        Self::attach(sring, 0)
    }

    /// `FRONT_RING_ATTACH`: attaches to a shared ring whose producer indices
    /// both are `idx` (nothing outstanding). Does not touch the shared page.
    pub fn attach(sring: R, idx: RingIdx) -> Self {
        let size = sring.size();
        debug_assert!(size.is_power_of_two());
        FrontRing {
            sring,
            size,
            req_prod_pvt: idx,
            req_prod_pub: idx,
            rsp_cons: idx,
            rsp_prod_seen: idx,
            bad_rsp_prod: None,
            protocol_errors: 0,
        }
    }

    /// The shared ring.
    pub fn shared(&self) -> &R {
        &self.sring
    }

    /// `RING_SIZE`.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// Next request index to be written (`req_prod_pvt`).
    pub fn req_prod_pvt(&self) -> RingIdx {
        self.req_prod_pvt
    }

    /// Next response index to be consumed (`rsp_cons`).
    pub fn rsp_cons(&self) -> RingIdx {
        self.rsp_cons
    }

    /// Requests written (published or not) whose response is not consumed.
    pub fn outstanding(&self) -> u32 {
        self.req_prod_pvt.wrapping_sub(self.rsp_cons)
    }

    /// Requests written but not yet published with a push.
    pub fn unpublished(&self) -> u32 {
        self.req_prod_pvt.wrapping_sub(self.req_prod_pub)
    }

    /// `RING_FREE_REQUESTS`.
    pub fn free_requests(&self) -> u32 {
        self.size - self.outstanding()
    }

    /// `RING_FULL`.
    pub fn is_full(&self) -> bool {
        self.free_requests() == 0
    }

    /// Implausible producer indices seen from the other end so far.
    pub fn protocol_errors(&self) -> u64 {
        self.protocol_errors
    }

    /// Writes `req` into the next free slot (`RING_GET_REQUEST` at
    /// `req_prod_pvt++`). It is not visible to the back end until a push.
    pub fn push_request(&mut self, req: R::Req) -> Result<(), Full> {
        if self.is_full() {
            return Err(Full);
        }
        self.sring.write_req(self.req_prod_pvt, req);
        self.req_prod_pvt = self.req_prod_pvt.wrapping_add(1);
        Ok(())
    }

    /// `RING_PUSH_REQUESTS`: publishes the written requests, no notification
    /// check.
    pub fn push_requests(&mut self) {
        fence(Ordering::Release); // xen_wmb: requests before the index.
        self.sring.set_req_prod(self.req_prod_pvt);
        self.req_prod_pub = self.req_prod_pvt;
    }

    /// `RING_PUSH_REQUESTS_AND_CHECK_NOTIFY`: publishes the written requests
    /// and returns whether the back end must be notified, i.e. whether its
    /// `req_event` lies in `(old, new]`:
    /// `(new - req_event) < (new - old)` in wrapping arithmetic.
    ///
    /// `old` is the index we published last (the header re-reads
    /// `sring->req_prod`, which only we write; an honest back end makes the
    /// two identical, a dishonest one cannot influence us through it).
    pub fn push_requests_and_check_notify(&mut self) -> bool {
        let old = self.req_prod_pub;
        let new = self.req_prod_pvt;
        fence(Ordering::Release); // xen_wmb: back sees requests before the index.
        self.sring.set_req_prod(new);
        self.req_prod_pub = new;
        fence(Ordering::SeqCst); // xen_mb: index visible before we read req_event.
        let event = self.sring.req_event();
        new.wrapping_sub(event) < new.wrapping_sub(old)
    }

    /// Reads `rsp_prod` (with the read barrier) and returns how many
    /// responses may be consumed. A producer index claiming responses to
    /// requests we never published is a protocol error: counted once per
    /// bad value, and nothing is consumable while it stands.
    fn refresh_rsp_prod(&mut self) -> u32 {
        let prod = self.sring.rsp_prod();
        fence(Ordering::Acquire); // xen_rmb: responses read after rsp_prod.
        let avail = prod.wrapping_sub(self.rsp_cons);
        let limit = self.req_prod_pub.wrapping_sub(self.rsp_cons);
        if avail > limit {
            if self.bad_rsp_prod != Some(prod) {
                self.bad_rsp_prod = Some(prod);
                self.protocol_errors += 1;
            }
            return 0;
        }
        self.bad_rsp_prod = None;
        self.rsp_prod_seen = prod;
        avail
    }

    /// `RING_HAS_UNCONSUMED_RESPONSES`, validated: the number of responses
    /// that may be taken now.
    pub fn unconsumed_responses(&mut self) -> u32 {
        let cached = self.rsp_prod_seen.wrapping_sub(self.rsp_cons);
        if cached != 0 {
            return cached;
        }
        self.refresh_rsp_prod()
    }

    /// Takes the next response (`RING_COPY_RESPONSE` at `rsp_cons++`), or
    /// `None` when the back end has produced none (or an implausible
    /// producer index, see [`FrontRing::protocol_errors`]).
    pub fn take_response(&mut self) -> Option<R::Rsp> {
        self.take_response_at().map(|(_, rsp)| rsp)
    }

    /// As [`FrontRing::take_response`], with the ring index of the slot.
    pub fn take_response_at(&mut self) -> Option<(RingIdx, R::Rsp)> {
        if self.unconsumed_responses() == 0 {
            return None;
        }
        let idx = self.rsp_cons;
        let rsp = self.sring.read_rsp(idx);
        self.rsp_cons = idx.wrapping_add(1);
        Some((idx, rsp))
    }

    /// `RING_FINAL_CHECK_FOR_RESPONSES`: before going idle, asks for a
    /// notification on the very next response (`rsp_event = rsp_cons + 1`)
    /// and checks again after a full barrier, so a response that arrived in
    /// between is not lost. Returns whether responses are pending.
    pub fn final_check_for_responses(&mut self) -> bool {
        if self.unconsumed_responses() != 0 {
            return true;
        }
        self.sring.set_rsp_event(self.rsp_cons.wrapping_add(1));
        fence(Ordering::SeqCst); // xen_mb: rsp_event visible before re-reading rsp_prod.
        self.unconsumed_responses() != 0
    }
}

/// The back end's half of a ring (`struct *_back_ring` and the back-side
/// macros). Our guest is never a back end; this serves the simulated
/// backend of the tests, benchmarks and fuzzer.
pub struct BackRing<R: SharedRing> {
    sring: R,
    size: u32,
    rsp_prod_pvt: RingIdx,
    req_cons: RingIdx,
    rsp_prod_pub: RingIdx,
    protocol_errors: u64,
}

impl<R: SharedRing> BackRing<R> {
    /// `BACK_RING_ATTACH`.
    pub fn attach(sring: R, idx: RingIdx) -> Self {
        let size = sring.size();
        BackRing {
            sring,
            size,
            rsp_prod_pvt: idx,
            req_cons: idx,
            rsp_prod_pub: idx,
            protocol_errors: 0,
        }
    }

    /// The shared ring.
    pub fn shared(&self) -> &R {
        &self.sring
    }

    /// `RING_SIZE`.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// Next request index to consume.
    pub fn req_cons(&self) -> RingIdx {
        self.req_cons
    }

    /// Next response index to write.
    pub fn rsp_prod_pvt(&self) -> RingIdx {
        self.rsp_prod_pvt
    }

    /// Front ends seen claiming more requests than the ring holds.
    pub fn protocol_errors(&self) -> u64 {
        self.protocol_errors
    }

    /// `RING_HAS_UNCONSUMED_REQUESTS`, bounded by the free response slots
    /// (so a front end's bogus `req_prod` cannot make us overrun).
    pub fn unconsumed_requests(&mut self) -> u32 {
        let prod = self.sring.req_prod();
        fence(Ordering::Acquire); // xen_rmb: requests read after req_prod.
        let req = prod.wrapping_sub(self.req_cons);
        let rsp = self.size - self.req_cons.wrapping_sub(self.rsp_prod_pvt);
        if req > self.size {
            self.protocol_errors += 1;
        }
        req.min(rsp)
    }

    /// Consumes the next request (`RING_COPY_REQUEST` at `req_cons++`).
    pub fn take_request(&mut self) -> Option<R::Req> {
        if self.unconsumed_requests() == 0 {
            return None;
        }
        let req = self.sring.read_req(self.req_cons);
        self.req_cons = self.req_cons.wrapping_add(1);
        Some(req)
    }

    /// Writes a response into the next response slot; fails when every
    /// consumed request already has its response.
    pub fn push_response(&mut self, rsp: R::Rsp) -> Result<(), Full> {
        if self.rsp_prod_pvt == self.req_cons {
            return Err(Full);
        }
        self.sring.write_rsp(self.rsp_prod_pvt, rsp);
        self.rsp_prod_pvt = self.rsp_prod_pvt.wrapping_add(1);
        Ok(())
    }

    /// `RING_PUSH_RESPONSES`.
    pub fn push_responses(&mut self) {
        fence(Ordering::Release);
        self.sring.set_rsp_prod(self.rsp_prod_pvt);
        self.rsp_prod_pub = self.rsp_prod_pvt;
    }

    /// `RING_PUSH_RESPONSES_AND_CHECK_NOTIFY`.
    pub fn push_responses_and_check_notify(&mut self) -> bool {
        let old = self.rsp_prod_pub;
        let new = self.rsp_prod_pvt;
        fence(Ordering::Release);
        self.sring.set_rsp_prod(new);
        self.rsp_prod_pub = new;
        fence(Ordering::SeqCst);
        let event = self.sring.rsp_event();
        new.wrapping_sub(event) < new.wrapping_sub(old)
    }

    /// `RING_FINAL_CHECK_FOR_REQUESTS`.
    pub fn final_check_for_requests(&mut self) -> bool {
        if self.unconsumed_requests() != 0 {
            return true;
        }
        self.sring.set_req_event(self.req_cons.wrapping_add(1));
        fence(Ordering::SeqCst);
        self.unconsumed_requests() != 0
    }
}

/// Test support shared by the ring and netfront tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::{RingIdx, SharedRing};

    /// A shared ring that runs `on_rsp_event` right after the front writes
    /// `rsp_event`, i.e. between the check and the re-check of
    /// `RING_FINAL_CHECK_FOR_RESPONSES`, so that a test can act as the
    /// other end at that precise moment. Everything else goes to `inner`.
    pub(crate) struct Hooked<R, H: Fn()> {
        pub(crate) inner: R,
        pub(crate) on_rsp_event: H,
    }

    impl<R: SharedRing, H: Fn()> SharedRing for Hooked<R, H> {
        type Req = R::Req;
        type Rsp = R::Rsp;
        fn size(&self) -> u32 {
            self.inner.size()
        }
        fn init(&self) {
            self.inner.init()
        }
        fn req_prod(&self) -> RingIdx {
            self.inner.req_prod()
        }
        fn set_req_prod(&self, v: RingIdx) {
            self.inner.set_req_prod(v)
        }
        fn req_event(&self) -> RingIdx {
            self.inner.req_event()
        }
        fn set_req_event(&self, v: RingIdx) {
            self.inner.set_req_event(v)
        }
        fn rsp_prod(&self) -> RingIdx {
            self.inner.rsp_prod()
        }
        fn set_rsp_prod(&self, v: RingIdx) {
            self.inner.set_rsp_prod(v)
        }
        fn rsp_event(&self) -> RingIdx {
            self.inner.rsp_event()
        }
        fn set_rsp_event(&self, v: RingIdx) {
            self.inner.set_rsp_event(v);
            (self.on_rsp_event)();
        }
        fn write_req(&self, i: RingIdx, r: R::Req) {
            self.inner.write_req(i, r)
        }
        fn read_req(&self, i: RingIdx) -> R::Req {
            self.inner.read_req(i)
        }
        fn write_rsp(&self, i: RingIdx, r: R::Rsp) {
            self.inner.write_rsp(i, r)
        }
        fn read_rsp(&self, i: RingIdx) -> R::Rsp {
            self.inner.read_rsp(i)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::Hooked;
    use super::*;
    use std::cell::RefCell;

    /// A 4096-byte, page-aligned heap page, freed on drop.
    #[repr(C, align(4096))]
    struct PageBuf([u8; 4096]);

    struct Page(*mut PageBuf);
    impl Page {
        fn new() -> Self {
            Page(Box::into_raw(Box::new(PageBuf([0xAA; 4096]))))
        }
        fn ptr(&self) -> *mut u8 {
            self.0.cast()
        }
        fn bytes(&self) -> [u8; 4096] {
            // SAFETY: the page is alive and not being written right now.
            unsafe { (*self.0).0 }
        }
    }
    impl Drop for Page {
        fn drop(&mut self) {
            // SAFETY: allocated by Box::into_raw in `new`, freed once.
            drop(unsafe { Box::from_raw(self.0) });
        }
    }

    type U64Ring = RawSharedRing<u64, u64>;

    fn pair(page: &Page, start: RingIdx) -> (FrontRing<U64Ring>, BackRing<U64Ring>) {
        // SAFETY: the page outlives both handles in every test.
        let (f, b) = unsafe { (U64Ring::new(page.ptr()), U64Ring::new(page.ptr())) };
        f.init();
        f.set_req_prod(start);
        f.set_rsp_prod(start);
        f.set_req_event(start.wrapping_add(1));
        f.set_rsp_event(start.wrapping_add(1));
        (FrontRing::attach(f, start), BackRing::attach(b, start))
    }

    #[test]
    fn entry_sizes_and_ring_sizes() {
        assert_eq!(entry_size::<u64, u32>(), 8);
        assert_eq!(entry_size::<[u16; 3], u32>(), 8);
        assert_eq!(round_down_pow2(0), 0);
        assert_eq!(round_down_pow2(1), 1);
        assert_eq!(round_down_pow2(336), 256);
        assert_eq!(round_down_pow2(504), 256);
        assert_eq!(round_down_pow2(256), 256);
        assert_eq!(ring_entries::<u64, u64>(4096), 256);
        assert_eq!(ring_entries::<[u32; 16], u32>(4096), 32); // 63 -> 32
        assert_eq!(ring_entries::<u8, u8>(64), 0);
        assert_eq!(U64Ring::NR_ENTS, 256);
    }

    #[test]
    fn layout_matches_struct_sring() {
        let page = Page::new();
        // SAFETY: the page outlives the handle.
        let r = unsafe { U64Ring::new(page.ptr()) };
        r.init();
        let b = page.bytes();
        assert_eq!(&b[0..4], &0u32.to_ne_bytes()); // req_prod
        assert_eq!(&b[4..8], &1u32.to_ne_bytes()); // req_event
        assert_eq!(&b[8..12], &0u32.to_ne_bytes()); // rsp_prod
        assert_eq!(&b[12..16], &1u32.to_ne_bytes()); // rsp_event
        assert!(b[16..64].iter().all(|&x| x == 0)); // pvt + __pad
        assert!(b[64..].iter().all(|&x| x == 0xAA)); // entries untouched

        r.set_req_prod(0x0102_0304);
        r.set_req_event(5);
        r.set_rsp_prod(6);
        r.set_rsp_event(7);
        r.write_req(0, 0x1111_1111_1111_1111);
        r.write_req(255, 0x2222_2222_2222_2222);
        r.write_rsp(257, 0x3333_3333_3333_3333); // slot 1
        let b = page.bytes();
        assert_eq!(&b[0..4], &0x0102_0304u32.to_ne_bytes());
        assert_eq!(&b[4..8], &5u32.to_ne_bytes());
        assert_eq!(&b[8..12], &6u32.to_ne_bytes());
        assert_eq!(&b[12..16], &7u32.to_ne_bytes());
        assert_eq!(&b[64..72], &0x1111_1111_1111_1111u64.to_ne_bytes());
        assert_eq!(&b[72..80], &0x3333_3333_3333_3333u64.to_ne_bytes());
        assert_eq!(
            &b[64 + 255 * 8..64 + 256 * 8],
            &0x2222_2222_2222_2222u64.to_ne_bytes()
        );
        assert!(b[64 + 256 * 8..].iter().all(|&x| x == 0xAA)); // beyond the ring
        assert_eq!(r.read_rsp(1), 0x3333_3333_3333_3333);
        assert_eq!(r.read_req(256), 0x1111_1111_1111_1111);
    }

    #[test]
    fn front_ring_new_initialises_the_shared_page() {
        let page = Page::new();
        // SAFETY: the page outlives the handle.
        let f = FrontRing::new(unsafe { U64Ring::new(page.ptr()) });
        assert_eq!(f.size(), 256);
        assert_eq!(f.free_requests(), 256);
        assert_eq!(f.shared().req_event(), 1);
        assert_eq!(f.shared().rsp_event(), 1);
        assert_eq!(f.shared().req_prod(), 0);
    }

    #[test]
    fn push_until_full_and_free_again() {
        let page = Page::new();
        let (mut f, mut b) = pair(&page, 0);
        for i in 0..256u64 {
            assert_eq!(f.push_request(i), Ok(()));
        }
        assert!(f.is_full());
        assert_eq!(f.push_request(999), Err(Full));
        assert_eq!(f.outstanding(), 256);
        assert_eq!(f.unpublished(), 256);
        f.push_requests();
        assert_eq!(f.unpublished(), 0);
        for i in 0..256u64 {
            assert_eq!(b.take_request(), Some(i));
            b.push_response(i + 1000).unwrap();
        }
        assert_eq!(b.take_request(), None);
        b.push_responses();
        for i in 0..256u64 {
            assert_eq!(f.take_response(), Some(i + 1000));
        }
        assert_eq!(f.take_response(), None);
        assert_eq!(f.free_requests(), 256);
        assert_eq!(f.protocol_errors(), 0);
    }

    /// `(new - event) < (new - old)` for every position of the event index
    /// relative to the batch `(old, new]`, also across the 2^32 wrap.
    #[test]
    fn push_and_check_notify_edge_cases() {
        for start in [0u32, 1000, u32::MAX - 2, u32::MAX] {
            // Published: `start`; then a batch of 4, so old = start,
            // new = start + 4.
            let cases = [
                (start.wrapping_add(1), true),            // first of the batch
                (start.wrapping_add(2), true),            // inside
                (start.wrapping_add(4), true),            // last of the batch
                (start.wrapping_add(5), false),           // beyond: not yet wanted
                (start, false),                           // == old: seen already
                (start.wrapping_sub(100), false),         // long behind
                (start.wrapping_add(0x8000_0000), false), // far away
            ];
            for (event, expect) in cases {
                let page = Page::new();
                let (mut f, _b) = pair(&page, start);
                for _ in 0..4 {
                    f.push_request(4).unwrap();
                }
                f.shared().set_req_event(event);
                assert_eq!(
                    f.push_requests_and_check_notify(),
                    expect,
                    "start {start:#x} event {event:#x}"
                );
                assert_eq!(f.shared().req_prod(), start.wrapping_add(4));
                // Nothing new: an empty push never notifies.
                assert!(!f.push_requests_and_check_notify());
            }
        }
    }

    #[test]
    fn fresh_ring_notifies_on_the_first_push_only() {
        let page = Page::new();
        // SAFETY: the page outlives the handle.
        let mut f = FrontRing::new(unsafe { U64Ring::new(page.ptr()) });
        assert!(!f.push_requests_and_check_notify(), "nothing pushed");
        f.push_request(1).unwrap();
        assert!(f.push_requests_and_check_notify(), "req_event = 1");
        f.push_request(2).unwrap();
        assert!(!f.push_requests_and_check_notify(), "back end not re-armed");
    }

    /// Back end asleep (it ran its final check) needs a notification; a
    /// back end that is already past the event index does not.
    #[test]
    fn notify_follows_the_backend_state() {
        let page = Page::new();
        let (mut f, mut b) = pair(&page, u32::MAX - 1);
        f.push_request(1).unwrap();
        assert!(f.push_requests_and_check_notify());
        assert_eq!(b.take_request(), Some(1));
        // Back end goes to sleep: req_event = req_cons + 1.
        assert!(!b.final_check_for_requests());
        f.push_request(2).unwrap();
        f.push_request(3).unwrap();
        assert!(f.push_requests_and_check_notify(), "asleep: notify");
        // Back end woken, takes one, still busy (no final check yet).
        assert_eq!(b.take_request(), Some(2));
        f.push_request(4).unwrap();
        assert!(!f.push_requests_and_check_notify(), "busy: no notify");
        // Back end takes the rest; its final check finds 4 is there.
        assert_eq!(b.take_request(), Some(3));
        assert_eq!(b.take_request(), Some(4));
        assert!(!b.final_check_for_requests());
        for i in 0..3 {
            b.push_response(i).unwrap();
        }
        // Front never asked for responses yet: rsp_event = initial + 1 is
        // behind, but the first push crosses it.
        assert!(b.push_responses_and_check_notify());
    }

    #[test]
    fn final_check_sets_rsp_event_and_sees_pending_work() {
        let page = Page::new();
        let (mut f, mut b) = pair(&page, u32::MAX);
        // Nothing outstanding: arms rsp_event = rsp_cons + 1, returns false.
        assert!(!f.final_check_for_responses());
        assert_eq!(f.shared().rsp_event(), 0); // u32::MAX + 1
        f.push_request(7).unwrap();
        f.push_requests();
        b.take_request().unwrap();
        b.push_response(70).unwrap();
        // The back end publishes: rsp_event == new, so it notifies.
        assert!(b.push_responses_and_check_notify());
        // Pending responses: true without re-arming.
        f.shared().set_rsp_event(12345);
        assert!(f.final_check_for_responses());
        assert_eq!(f.shared().rsp_event(), 12345);
        assert_eq!(f.take_response(), Some(70));
        assert!(!f.final_check_for_responses());
        assert_eq!(f.shared().rsp_event(), 1);
        // Front idle with rsp_event armed: the next response notifies.
        f.push_request(8).unwrap();
        f.push_requests();
        b.take_request().unwrap();
        b.push_response(80).unwrap();
        assert!(b.push_responses_and_check_notify());
        // Front did not re-arm (it is busy): a further response does not
        // notify.
        f.push_request(9).unwrap();
        f.push_requests();
        b.take_request().unwrap();
        b.push_response(90).unwrap();
        assert!(!b.push_responses_and_check_notify());
        assert_eq!(f.take_response(), Some(80));
        assert_eq!(f.take_response(), Some(90));
    }

    #[test]
    fn response_between_check_and_recheck_is_not_lost() {
        let page = Page::new();
        // SAFETY: the page outlives all handles.
        let back = RefCell::new(BackRing::attach(unsafe { U64Ring::new(page.ptr()) }, 0));
        let notified = RefCell::new(Vec::new());
        let on_rsp_event: RefCell<Option<Box<dyn FnMut()>>> = RefCell::new(None);
        let hooked = Hooked {
            // SAFETY: as above.
            inner: unsafe { U64Ring::new(page.ptr()) },
            on_rsp_event: || {
                if let Some(hook) = on_rsp_event.borrow_mut().as_mut() {
                    hook();
                }
            },
        };
        let mut f = FrontRing::new(hooked);
        f.push_request(1).unwrap();
        f.push_request(2).unwrap();
        assert!(f.push_requests_and_check_notify());
        {
            let mut b = back.borrow_mut();
            assert_eq!(b.take_request(), Some(1));
            assert_eq!(b.take_request(), Some(2));
            b.push_response(10).unwrap();
            b.push_responses();
        }
        assert_eq!(f.take_response(), Some(10));
        // The back end publishes response 20 exactly after the front wrote
        // rsp_event but before it re-reads rsp_prod.
        *on_rsp_event.borrow_mut() = Some(Box::new(|| {
            let mut b = back.borrow_mut();
            b.push_response(20).unwrap();
            notified
                .borrow_mut()
                .push(b.push_responses_and_check_notify());
        }));
        assert!(f.final_check_for_responses(), "re-check sees the response");
        *on_rsp_event.borrow_mut() = None;
        // The back end also notified (rsp_event was already armed), and the
        // front will not go to sleep: both sides agree, nothing is lost.
        assert_eq!(*notified.borrow(), vec![true]);
        assert_eq!(f.take_response(), Some(20));
        assert!(!f.final_check_for_responses());
    }

    /// If the back end publishes just *before* the front arms rsp_event, it
    /// does not notify (event behind), and the front's re-check must find
    /// the response.
    #[test]
    fn response_just_before_arming_is_found_by_the_recheck() {
        let page = Page::new();
        let (mut f, mut b) = pair(&page, 100);
        f.push_request(1).unwrap();
        f.push_request(2).unwrap();
        f.push_requests();
        b.take_request();
        b.take_request();
        b.push_response(1).unwrap();
        assert!(b.push_responses_and_check_notify()); // event 101 crossed
        assert_eq!(f.take_response(), Some(1));
        // The first check of final_check would see nothing; then the back
        // end publishes with the stale event (101): no notification.
        assert_eq!(f.unconsumed_responses(), 0);
        b.push_response(2).unwrap();
        assert!(!b.push_responses_and_check_notify());
        // The final check must therefore report pending work.
        assert!(f.final_check_for_responses());
        assert_eq!(f.take_response(), Some(2));
    }

    #[test]
    fn bogus_rsp_prod_is_a_counted_protocol_error() {
        let page = Page::new();
        let (mut f, mut b) = pair(&page, u32::MAX - 3);
        // SAFETY: the page outlives the handle; it plays the rogue back end.
        let sr = unsafe { U64Ring::new(page.ptr()) };
        for i in 0..4 {
            f.push_request(i).unwrap();
        }
        f.push_requests();
        f.push_request(99).unwrap(); // written but not published
                                     // Responses to every published request: fine.
        for _ in 0..4 {
            b.take_request().unwrap();
        }
        // The back end claims 5 responses (one to an unpublished request).
        sr.set_rsp_prod(f.rsp_cons().wrapping_add(5));
        assert_eq!(f.take_response(), None);
        assert_eq!(f.protocol_errors(), 1);
        assert!(!f.final_check_for_responses(), "no endless loop");
        assert_eq!(f.protocol_errors(), 1, "a stuck bad value counts once");
        // Far ahead, and backwards.
        sr.set_rsp_prod(f.rsp_cons().wrapping_add(0x8000_0000));
        assert_eq!(f.take_response(), None);
        sr.set_rsp_prod(f.rsp_cons().wrapping_sub(1));
        assert_eq!(f.take_response(), None);
        assert_eq!(f.protocol_errors(), 3);
        assert_eq!(f.rsp_cons(), u32::MAX - 3, "nothing consumed");
        // The back end behaves again: everything works.
        sr.set_rsp_prod(f.rsp_cons());
        for i in 0..4 {
            b.push_response(i + 40).unwrap();
        }
        b.push_responses();
        for i in 0..4 {
            assert_eq!(f.take_response(), Some(i + 40));
        }
        assert_eq!(f.take_response(), None);
        f.push_requests();
        b.take_request().unwrap();
        b.push_response(990).unwrap();
        b.push_responses();
        assert_eq!(f.take_response(), Some(990));
        assert_eq!(f.protocol_errors(), 3);
    }

    #[test]
    fn wraparound_of_the_32_bit_indices() {
        let page = Page::new();
        let start = u32::MAX - 10;
        let (mut f, mut b) = pair(&page, start);
        let mut next = 0u64;
        let mut expect = 0u64;
        let mut front_notifies = 0;
        for round in 0..5000u64 {
            let n = (round % 7 + 1) as usize;
            for _ in 0..n {
                if f.push_request(next).is_ok() {
                    next += 1;
                }
            }
            if f.push_requests_and_check_notify() {
                front_notifies += 1;
            }
            while let Some(r) = b.take_request() {
                b.push_response(r ^ 0xFFFF).unwrap();
            }
            b.final_check_for_requests();
            b.push_responses_and_check_notify();
            while let Some(r) = f.take_response() {
                assert_eq!(r, expect ^ 0xFFFF);
                expect += 1;
            }
            assert!(!f.final_check_for_responses());
        }
        assert_eq!(expect, next);
        assert!(f.rsp_cons() < start, "indices wrapped");
        assert_eq!(f.protocol_errors(), 0);
        assert_eq!(b.protocol_errors(), 0);
        // The back end always went to sleep, so every push notified.
        assert_eq!(front_notifies, 5000);
    }

    /// Real concurrency: a back-end thread and the front on the test thread,
    /// each going to sleep only after its final check and woken by a
    /// simulated event channel. A lost wake-up shows as a timeout.
    #[test]
    fn threaded_ping_pong_loses_no_wakeup() {
        use std::sync::atomic::{AtomicBool, Ordering as O};
        use std::sync::Arc;
        use std::thread;
        use std::time::Duration;

        struct Evtchn {
            pending: AtomicBool,
            waiter: thread::Thread,
        }
        impl Evtchn {
            fn notify(&self) {
                self.pending.store(true, O::SeqCst);
                self.waiter.unpark();
            }
            fn wait(&self, what: &str) {
                let deadline = std::time::Instant::now() + Duration::from_secs(20);
                while !self.pending.swap(false, O::SeqCst) {
                    assert!(std::time::Instant::now() < deadline, "lost wakeup: {what}");
                    thread::park_timeout(Duration::from_millis(100));
                }
            }
        }

        const N: u64 = 200_000;
        let page = Page::new();
        // SAFETY: the page outlives both threads (the back end is joined
        // below before `page` is dropped).
        let front_sr = unsafe { U64Ring::new(page.ptr()) };
        // SAFETY: as above.
        let back_sr = unsafe { U64Ring::new(page.ptr()) };
        let mut f = FrontRing::new(front_sr);
        let to_front = Arc::new(Evtchn {
            pending: AtomicBool::new(false),
            waiter: thread::current(),
        });
        let (tx_back_chan, rx_back_chan) = std::sync::mpsc::channel::<Arc<Evtchn>>();
        let tf = to_front.clone();
        let backend = thread::spawn(move || {
            let to_back = Arc::new(Evtchn {
                pending: AtomicBool::new(false),
                waiter: thread::current(),
            });
            tx_back_chan.send(to_back.clone()).unwrap();
            let mut b = BackRing::attach(back_sr, 0);
            let mut done = 0u64;
            let mut sleeps = 0u64;
            while done < N {
                while let Some(r) = b.take_request() {
                    b.push_response(r * 3).unwrap();
                    done += 1;
                    if done.is_multiple_of(16) && b.push_responses_and_check_notify() {
                        tf.notify();
                    }
                }
                if b.push_responses_and_check_notify() {
                    tf.notify();
                }
                if !b.final_check_for_requests() && done < N {
                    sleeps += 1;
                    to_back.wait("backend");
                }
            }
            sleeps
        });
        let to_back = rx_back_chan.recv().unwrap();
        let (mut sent, mut got) = (0u64, 0u64);
        let mut front_sleeps = 0u64;
        while got < N {
            while sent < N && f.push_request(sent).is_ok() {
                sent += 1;
                if sent.is_multiple_of(32) && f.push_requests_and_check_notify() {
                    to_back.notify();
                }
            }
            if f.push_requests_and_check_notify() {
                to_back.notify();
            }
            let mut took = false;
            while let Some(r) = f.take_response() {
                assert_eq!(r, got * 3);
                got += 1;
                took = true;
            }
            if took {
                continue; // refill the freed slots before thinking of sleep
            }
            if !f.final_check_for_responses() && got < N {
                front_sleeps += 1;
                to_front.wait("frontend");
            }
        }
        let back_sleeps = backend.join().unwrap();
        assert_eq!(f.protocol_errors(), 0);
        eprintln!("threaded ping-pong: front slept {front_sleeps}x, back slept {back_sleeps}x");
    }
}
