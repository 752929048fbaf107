//! Grant tables, version 1 (xen/include/public/grant_table.h).
//!
//! The table itself is `nr_frames` pages of 8-byte entries that Xen places
//! into our physical address space (XENMEM_add_to_physmap with
//! XENMAPSPACE_grant_table, the PVH/HVM way). `GrantTable` is the
//! bookkeeping over those entries and runs in host tests on ordinary memory.

use core::sync::atomic::{fence, AtomicU16, Ordering};

pub type GrantRef = u32;

const GTF_PERMIT_ACCESS: u16 = 1;
const GTF_READONLY: u16 = 1 << 2;
const GTF_READING: u16 = 1 << 3;
const GTF_WRITING: u16 = 1 << 4;
/// Entries the toolstack uses for the console and xenstore (grant_table.h:
/// GNTTAB_NR_RESERVED_ENTRIES).
pub const RESERVED_ENTRIES: u32 = 8;
pub const ENTRIES_PER_FRAME: u32 = 4096 / 8;

/// struct grant_entry_v1.
#[repr(C)]
pub struct GrantEntryV1 {
    pub flags: u16,
    pub domid: u16,
    pub frame: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrantError {
    /// Every entry is in use.
    Exhausted,
    /// The reference is not one we handed out.
    NotGranted(GrantRef),
    /// The remote domain still has the frame mapped or is copying.
    InUse(GrantRef),
}

impl core::fmt::Display for GrantError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            GrantError::Exhausted => write!(f, "grant table full"),
            GrantError::NotGranted(r) => write!(f, "grant {r} is not active"),
            GrantError::InUse(r) => write!(f, "grant {r} is still in use by the remote domain"),
        }
    }
}

/// Bookkeeping over the shared entries: which references are free, and the
/// grant/end protocol of grant_table.h.
pub struct GrantTable {
    entries: *mut GrantEntryV1,
    len: u32,
    /// One bit per entry: set when granted.
    used: alloc::vec::Vec<u64>,
    next: u32,
    active: u32,
}

// SAFETY: the entries are only reached through `&mut self`.
unsafe impl Send for GrantTable {}

impl GrantTable {
    /// # Safety
    /// `entries` must point to `len` grant entries shared with Xen, valid for
    /// the lifetime of the table, and no one else may hand out references.
    pub unsafe fn new(entries: *mut GrantEntryV1, len: u32) -> Self {
        let mut used = alloc::vec![0u64; len.div_ceil(64) as usize];
        for r in 0..RESERVED_ENTRIES.min(len) {
            used[(r / 64) as usize] |= 1 << (r % 64);
        }
        GrantTable { entries, len, used, next: RESERVED_ENTRIES, active: 0 }
    }

    pub fn capacity(&self) -> u32 {
        self.len.saturating_sub(RESERVED_ENTRIES)
    }

    /// References currently granted by us.
    pub fn active(&self) -> u32 {
        self.active
    }

    fn is_used(&self, r: GrantRef) -> bool {
        self.used[(r / 64) as usize] & (1 << (r % 64)) != 0
    }

    fn flags(&self, r: GrantRef) -> &AtomicU16 {
        // SAFETY: r < len (checked by callers); the flags field is shared
        // with Xen and accessed atomically only.
        unsafe { &*(core::ptr::addr_of_mut!((*self.entries.add(r as usize)).flags) as *const AtomicU16) }
    }

    /// Lets `domid` access guest frame `frame` (read-only if asked).
    pub fn grant(&mut self, domid: u16, frame: u64, readonly: bool) -> Result<GrantRef, GrantError> {
        let frame = u32::try_from(frame).map_err(|_| GrantError::Exhausted)?;
        let r = (0..self.len)
            .map(|i| RESERVED_ENTRIES + (self.next - RESERVED_ENTRIES + i) % self.capacity().max(1))
            .find(|&r| r < self.len && !self.is_used(r))
            .ok_or(GrantError::Exhausted)?;
        self.used[(r / 64) as usize] |= 1 << (r % 64);
        self.next = r + 1;
        self.active += 1;
        // SAFETY: r < len; frame and domid are ours to write while flags is 0.
        unsafe {
            let e = self.entries.add(r as usize);
            core::ptr::write_volatile(core::ptr::addr_of_mut!((*e).frame), frame);
            core::ptr::write_volatile(core::ptr::addr_of_mut!((*e).domid), domid);
        }
        // grant_table.h: write frame and domid, WMB, then flags.
        fence(Ordering::Release);
        let flags = GTF_PERMIT_ACCESS | if readonly { GTF_READONLY } else { 0 };
        self.flags(r).store(flags, Ordering::Release);
        Ok(r)
    }

    /// Revokes a grant; fails with `InUse` while the remote side has it
    /// mapped (try again after the backend has disconnected).
    pub fn end(&mut self, r: GrantRef) -> Result<(), GrantError> {
        if r < RESERVED_ENTRIES || r >= self.len || !self.is_used(r) {
            return Err(GrantError::NotGranted(r));
        }
        let flags = self.flags(r);
        let current = flags.load(Ordering::Acquire);
        if current & (GTF_READING | GTF_WRITING) != 0 {
            return Err(GrantError::InUse(r));
        }
        flags.compare_exchange(current, 0, Ordering::AcqRel, Ordering::Acquire).map_err(|_| GrantError::InUse(r))?;
        self.used[(r / 64) as usize] &= !(1 << (r % 64));
        self.active -= 1;
        Ok(())
    }
}

#[cfg(target_os = "none")]
pub use setup::init;

#[cfg(target_os = "none")]
mod setup {
    use super::*;
    use crate::hvm;
    use crate::hypercall::{self, XenError, DOMID_SELF};

    /// Grant frames we ask for: 4 frames = 2048 entries, enough for three
    /// vifs with 2 x 256 buffers each plus rings.
    pub const FRAMES: usize = 4;

    #[repr(C, align(4096))]
    struct Frames([[u8; 4096]; FRAMES]);
    static mut GRANT_FRAMES: Frames = Frames([[0; 4096]; FRAMES]);

    #[repr(C)]
    struct QuerySize {
        dom: u16,
        nr_frames: u32,
        max_nr_frames: u32,
        status: i16,
    }

    /// Maps the grant table over our reserved frames and returns its
    /// bookkeeping. Call once.
    pub fn init() -> Result<GrantTable, XenError> {
        let mut q = QuerySize { dom: DOMID_SELF, nr_frames: 0, max_nr_frames: 0, status: 0 };
        // SAFETY: GNTTABOP_query_size (6) takes one gnttab_query_size.
        unsafe { hypercall::grant_table_op(6, &mut q, 1)? };
        if q.status != 0 {
            return Err(XenError(i64::from(q.status)));
        }
        let frames = FRAMES.min(q.max_nr_frames as usize);
        let base = core::ptr::addr_of_mut!(GRANT_FRAMES) as *mut u8;
        for i in 0..frames {
            let gpfn = (base as u64 >> 12) + i as u64;
            // SAFETY: the frames are a page-aligned static used for nothing
            // else; Xen replaces them with the grant table's frames.
            unsafe { hvm::add_to_physmap(hvm::MAPSPACE_GRANT_TABLE, i as u64, gpfn)? };
        }
        // SAFETY: the frames now hold the grant entries and stay mapped.
        Ok(unsafe { GrantTable::new(base as *mut GrantEntryV1, frames as u32 * ENTRIES_PER_FRAME) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(n: u32) -> (Vec<GrantEntryV1>, GrantTable) {
        let mut mem: Vec<GrantEntryV1> = (0..n).map(|_| GrantEntryV1 { flags: 0, domid: 0, frame: 0 }).collect();
        let t = unsafe { GrantTable::new(mem.as_mut_ptr(), n) };
        (mem, t)
    }

    #[test]
    fn grant_writes_entry_and_end_clears_it() {
        let (mem, mut t) = table(16);
        let r = t.grant(0, 0x1234, true).unwrap();
        assert!(r >= RESERVED_ENTRIES);
        let e = &mem[r as usize];
        assert_eq!((e.flags, e.domid, e.frame), (GTF_PERMIT_ACCESS | GTF_READONLY, 0, 0x1234));
        t.end(r).unwrap();
        assert_eq!(mem[r as usize].flags, 0);
        assert_eq!(t.active(), 0);
        assert_eq!(t.end(r), Err(GrantError::NotGranted(r)));
    }

    #[test]
    fn exhaustion_and_reuse() {
        let (_mem, mut t) = table(12);
        let refs: Vec<_> = (0..4).map(|i| t.grant(1, i, false).unwrap()).collect();
        assert_eq!(t.grant(1, 9, false), Err(GrantError::Exhausted));
        t.end(refs[2]).unwrap();
        assert_eq!(t.grant(1, 9, false), Ok(refs[2]));
    }

    #[test]
    fn in_use_grants_are_not_revoked() {
        let (mut mem, mut t) = table(16);
        let r = t.grant(0, 1, false).unwrap();
        mem[r as usize].flags |= GTF_WRITING;
        assert_eq!(t.end(r), Err(GrantError::InUse(r)));
        mem[r as usize].flags &= !GTF_WRITING;
        t.end(r).unwrap();
    }

    #[test]
    fn reserved_and_foreign_refs_are_rejected() {
        let (_mem, mut t) = table(16);
        assert_eq!(t.end(0), Err(GrantError::NotGranted(0)));
        assert_eq!(t.end(99), Err(GrantError::NotGranted(99)));
    }
}
