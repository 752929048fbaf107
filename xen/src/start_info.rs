//! The PVH start info (xen/include/public/arch-x86/hvm/start_info.h): where
//! Xen tells a PVH guest its command line and memory map.

use heapless::Vec;

pub const START_INFO_MAGIC: u32 = 0x336e_c578;
pub const MEMMAP_TYPE_RAM: u32 = 1;
pub const MAX_CMDLINE: usize = 2048;
pub const MAX_REGIONS: usize = 64;

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct HvmStartInfo {
    pub magic: u32,
    pub version: u32,
    pub flags: u32,
    pub nr_modules: u32,
    pub modlist_paddr: u64,
    pub cmdline_paddr: u64,
    pub rsdp_paddr: u64,
    // Version 1 and newer.
    pub memmap_paddr: u64,
    pub memmap_entries: u32,
    pub reserved: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemmapEntry {
    pub addr: u64,
    pub size: u64,
    pub kind: u32,
    pub reserved: u32,
}

const _: () = assert!(core::mem::size_of::<HvmStartInfo>() == 56);
const _: () = assert!(core::mem::size_of::<MemmapEntry>() == 24);

/// A RAM region, half-open `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    pub start: u64,
    pub end: u64,
}

impl Region {
    pub fn len(&self) -> u64 {
        self.end - self.start
    }
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }
}

/// What the kernel keeps of the start info: copied out early, before the
/// pages Xen put it in become heap.
#[derive(Debug)]
pub struct BootInfo {
    cmdline: Vec<u8, MAX_CMDLINE>,
    pub cmdline_truncated: bool,
    pub ram: Vec<Region, MAX_REGIONS>,
    /// Memory-map entries that did not fit in `ram`, or were malformed.
    pub regions_ignored: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartInfoError {
    BadMagic(u32),
}

impl core::fmt::Display for StartInfoError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            StartInfoError::BadMagic(m) => write!(f, "PVH start info magic is {m:#x}, not {START_INFO_MAGIC:#x}"),
        }
    }
}

impl BootInfo {
    /// Builds the kernel's view from the command-line bytes (up to the first
    /// NUL) and the raw memory map.
    pub fn new(cmdline: &[u8], memmap: &[MemmapEntry]) -> BootInfo {
        let text = cmdline.split(|&b| b == 0).next().unwrap_or(&[]);
        let keep = text.len().min(MAX_CMDLINE);
        let mut info = BootInfo {
            cmdline: Vec::from_slice(&text[..keep]).unwrap_or_default(),
            cmdline_truncated: keep < text.len(),
            ram: Vec::new(),
            regions_ignored: 0,
        };
        for e in memmap.iter().filter(|e| e.kind == MEMMAP_TYPE_RAM) {
            let region = e.addr.checked_add(e.size).map(|end| Region { start: e.addr, end });
            match region {
                Some(r) if !r.is_empty() && info.ram.push(r).is_ok() => {}
                _ => info.regions_ignored += 1,
            }
        }
        info.ram.sort_unstable_by_key(|r| r.start);
        info
    }

    /// The command line, or `None` when it is not UTF-8.
    pub fn cmdline(&self) -> Option<&str> {
        core::str::from_utf8(&self.cmdline).ok()
    }

    pub fn ram_bytes(&self) -> u64 {
        self.ram.iter().map(Region::len).sum()
    }

    /// Reads the start info Xen left at `paddr`.
    ///
    /// # Safety
    /// `paddr` must be the address handed over in %ebx at the PVH entry, and
    /// the memory it describes must be identity-mapped and not yet reused.
    #[cfg(target_os = "none")]
    pub unsafe fn from_phys(paddr: u64) -> Result<BootInfo, StartInfoError> {
        // SAFETY: per the contract, `paddr` points at a valid hvm_start_info.
        let si = unsafe { core::ptr::read_volatile(paddr as *const HvmStartInfo) };
        if si.magic != START_INFO_MAGIC {
            return Err(StartInfoError::BadMagic(si.magic));
        }
        let cmdline: &[u8] = if si.cmdline_paddr == 0 {
            &[]
        } else {
            // SAFETY: Xen guarantees a NUL-terminated string there; we read at
            // most MAX_CMDLINE + 1 bytes, which stay inside guest RAM.
            unsafe { core::slice::from_raw_parts(si.cmdline_paddr as *const u8, MAX_CMDLINE + 1) }
        };
        let memmap: &[MemmapEntry] = if si.version >= 1 && si.memmap_paddr != 0 {
            let n = (si.memmap_entries as usize).min(MAX_REGIONS * 2);
            // SAFETY: Xen provides `memmap_entries` entries at `memmap_paddr`.
            unsafe { core::slice::from_raw_parts(si.memmap_paddr as *const MemmapEntry, n) }
        } else {
            &[]
        };
        Ok(BootInfo::new(cmdline, memmap))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ram(addr: u64, size: u64) -> MemmapEntry {
        MemmapEntry { addr, size, kind: MEMMAP_TYPE_RAM, reserved: 0 }
    }

    #[test]
    fn keeps_ram_sorted_and_skips_other_types() {
        let map = [
            ram(0x10_0000, 0x1f0_0000),
            MemmapEntry { addr: 0xfc00_0000, size: 0x1000, kind: 2, reserved: 0 },
            ram(0, 0xa_0000),
        ];
        let info = BootInfo::new(b"ext=1.2.3.4/24\0garbage", &map);
        assert_eq!(info.cmdline(), Some("ext=1.2.3.4/24"));
        assert_eq!(info.ram.as_slice(), &[Region { start: 0, end: 0xa_0000 }, Region { start: 0x10_0000, end: 0x200_0000 }]);
        assert_eq!(info.ram_bytes(), 0xa_0000 + 0x1f0_0000);
    }

    #[test]
    fn malformed_entries_are_counted_not_trusted() {
        let info = BootInfo::new(b"", &[ram(u64::MAX - 10, 100), ram(0x1000, 0)]);
        assert!(info.ram.is_empty());
        assert_eq!(info.regions_ignored, 2);
    }

    #[test]
    fn long_or_binary_command_lines_are_flagged() {
        let long = [b'a'; MAX_CMDLINE + 1];
        let info = BootInfo::new(&long, &[]);
        assert!(info.cmdline_truncated);
        let info = BootInfo::new(&[0xff, 0xfe, 0], &[]);
        assert_eq!(info.cmdline(), None);
    }
}
