//! The few x86 instructions the platform layer needs: CPUID, MSR, TSC and
//! port I/O.

use core::arch::asm;
use core::arch::x86_64::{CpuidResult, __cpuid};

/// What CPUID tells about the hypervisor underneath.
#[derive(Clone, Copy, Debug)]
pub struct XenCpuid {
    /// First leaf of Xen's CPUID range (0x4000_0000 or a multiple of 0x100 above
    /// when Xen also offers a Viridian interface).
    pub base: u32,
    pub version: (u16, u16),
    pub hypercall_msr: u32,
}

/// Looks for Xen's signature "XenVMMXenVMM" in the hypervisor CPUID leaves
/// (xen/include/public/arch-x86/cpuid.h).
pub fn detect_xen() -> Option<XenCpuid> {
    // Leaf 1 ECX bit 31: running under a hypervisor at all.
    if cpuid(1).ecx & (1 << 31) == 0 {
        return None;
    }
    for base in (0x4000_0000u32..0x4001_0000).step_by(0x100) {
        let r = cpuid(base);
        let mut sig = [0u8; 12];
        sig[0..4].copy_from_slice(&r.ebx.to_le_bytes());
        sig[4..8].copy_from_slice(&r.ecx.to_le_bytes());
        sig[8..12].copy_from_slice(&r.edx.to_le_bytes());
        if &sig == b"XenVMMXenVMM" && r.eax >= base + 2 {
            let v = cpuid(base + 1).eax;
            let pages = cpuid(base + 2);
            return Some(XenCpuid {
                base,
                version: ((v >> 16) as u16, v as u16),
                hypercall_msr: pages.ebx,
            });
        }
    }
    None
}

fn cpuid(leaf: u32) -> CpuidResult {
    __cpuid(leaf)
}

/// Asks Xen to write the hypercall trampolines into our hypercall page.
pub fn init_hypercall_page(info: &XenCpuid) {
    let page = crate::hypercall::page_address();
    // SAFETY: writing Xen's hypercall MSR with the address of a page we own
    // is the documented way to install the hypercall page (cpuid.h, leaf 2).
    unsafe { wrmsr(info.hypercall_msr, page) };
}

/// # Safety
/// Writing an MSR can change CPU behaviour arbitrarily; callers pass only
/// MSRs whose effect they own.
pub unsafe fn wrmsr(msr: u32, value: u64) {
    // SAFETY: see the function contract.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32,
             options(nostack, preserves_flags));
    }
}

pub fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: RDTSC only reads the time-stamp counter.
    unsafe { asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags)) };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Writes one byte to Xen's (or QEMU's) debug console port 0xe9.
pub fn debugcon_write(bytes: &[u8]) {
    for &b in bytes {
        // SAFETY: port 0xe9 is the hypervisor debug console; writing it has
        // no effect on guest memory.
        unsafe { asm!("out dx, al", in("dx") 0xe9u16, in("al") b, options(nomem, nostack, preserves_flags)) };
    }
}

/// Stops this CPU for good (used when there is no hypervisor to shut us down).
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: halting with interrupts disabled only stops the CPU.
        unsafe { asm!("cli; hlt", options(nomem, nostack)) };
    }
}
