//! Identity page tables built from the memory map.
//!
//! Below 4 GiB, every 2 MiB that holds RAM is mapped with a large page;
//! the 2 MiB regions holding page 0 (null guard) and the stack guard page
//! are split into 4 KiB pages with those pages left out. Frames Xen hands
//! out outside RAM (console and xenstore rings, grant frames) are mapped on
//! demand with [`map_identity`].

use core::arch::asm;

use pih_xen::start_info::Region;

const PRESENT: u64 = 1;
const WRITABLE: u64 = 2;
const LARGE: u64 = 0x80;
const TWO_MIB: u64 = 2 << 20;
const FOUR_GIB: u64 = 4 << 30;
const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
const PT_POOL: usize = 8;

#[derive(Clone, Copy)]
#[repr(C, align(4096))]
struct Table([u64; 512]);

const EMPTY: Table = Table([0; 512]);

struct Tables {
    pml4: Table,
    pdpt: Table,
    pd: [Table; 4],
    pts: [Table; PT_POOL],
    pts_used: usize,
}

static TABLES: spin::Mutex<Tables> =
    spin::Mutex::new(Tables { pml4: EMPTY, pdpt: EMPTY, pd: [EMPTY; 4], pts: [EMPTY; PT_POOL], pts_used: 0 });

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PagingError {
    /// Only the first 4 GiB are mapped.
    AboveFourGib(u64),
    /// No page table left to split a large page.
    OutOfPageTables,
}

impl core::fmt::Display for PagingError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            PagingError::AboveFourGib(a) => write!(f, "address {a:#x} is above 4 GiB"),
            PagingError::OutOfPageTables => write!(f, "page table pool exhausted"),
        }
    }
}

impl Tables {
    fn pd_entry(&mut self, addr: u64) -> &mut u64 {
        let i = (addr / TWO_MIB) as usize;
        &mut self.pd[i / 512].0[i % 512]
    }

    fn map_large(&mut self, addr: u64) -> Result<(), PagingError> {
        if addr >= FOUR_GIB {
            return Err(PagingError::AboveFourGib(addr));
        }
        let base = addr & !(TWO_MIB - 1);
        let e = self.pd_entry(base);
        if *e & PRESENT == 0 {
            *e = base | PRESENT | WRITABLE | LARGE;
        }
        Ok(())
    }

    /// Turns the large page at `addr` into a 4 KiB table (same mappings).
    fn split(&mut self, addr: u64) -> Result<&mut Table, PagingError> {
        if addr >= FOUR_GIB {
            return Err(PagingError::AboveFourGib(addr));
        }
        let base = addr & !(TWO_MIB - 1);
        let entry = *self.pd_entry(base);
        if entry & PRESENT != 0 && entry & LARGE == 0 {
            let idx = self.pts.iter().position(|t| t as *const Table as u64 == entry & ADDR_MASK);
            return idx.map(|i| &mut self.pts[i]).ok_or(PagingError::OutOfPageTables);
        }
        if self.pts_used == PT_POOL {
            return Err(PagingError::OutOfPageTables);
        }
        let i = self.pts_used;
        self.pts_used += 1;
        let present = entry & PRESENT != 0;
        for (n, e) in self.pts[i].0.iter_mut().enumerate() {
            *e = if present { (base + n as u64 * 4096) | PRESENT | WRITABLE } else { 0 };
        }
        let pt_addr = &self.pts[i] as *const Table as u64;
        *self.pd_entry(base) = pt_addr | PRESENT | WRITABLE;
        Ok(&mut self.pts[i])
    }

    fn set_4k(&mut self, addr: u64, present: bool) -> Result<(), PagingError> {
        let pt = self.split(addr)?;
        let page = addr & !0xfff;
        pt.0[((addr >> 12) & 511) as usize] = if present { page | PRESENT | WRITABLE } else { 0 };
        Ok(())
    }
}

fn reload(tables: &Tables) {
    // SAFETY: the tables identity-map the running kernel (image, stack,
    // statics), so switching to them keeps every live address valid.
    unsafe { asm!("mov cr3, {}", in(reg) &tables.pml4 as *const Table as u64, options(nostack)) };
}

/// Builds the kernel's page tables from the RAM regions and switches to
/// them. Returns how many bytes of RAM lie above 4 GiB and stay unmapped.
pub fn init(ram: &[Region]) -> Result<u64, PagingError> {
    let mut t = TABLES.lock();
    let pdpt = &t.pdpt as *const Table as u64;
    t.pml4.0[0] = pdpt | PRESENT | WRITABLE;
    for i in 0..4 {
        let pd = &t.pd[i] as *const Table as u64;
        t.pdpt.0[i] = pd | PRESENT | WRITABLE;
    }
    let mut above = 0;
    for r in ram {
        let mut a = r.start & !(TWO_MIB - 1);
        while a < r.end {
            if a >= FOUR_GIB {
                above += r.end - a.max(r.start);
                break;
            }
            t.map_large(a)?;
            a += TWO_MIB;
        }
    }
    // The image is RAM too, but make sure even if the map left it out.
    let mut a = crate::layout::kernel_start() & !(TWO_MIB - 1);
    while a < crate::layout::kernel_end() {
        t.map_large(a)?;
        a += TWO_MIB;
    }
    t.set_4k(0, false)?;
    t.set_4k(crate::layout::stack_guard(), false)?;
    reload(&t);
    Ok(above)
}

/// Identity-maps `[addr, addr + len)` with 4 KiB pages (frames outside RAM
/// that Xen gives us).
pub fn map_identity(addr: u64, len: u64) -> Result<(), PagingError> {
    let mut t = TABLES.lock();
    let end = addr.checked_add(len).ok_or(PagingError::AboveFourGib(u64::MAX))?;
    let mut a = addr & !0xfff;
    while a < end {
        t.set_4k(a, true)?;
        a += 4096;
    }
    reload(&t);
    Ok(())
}
