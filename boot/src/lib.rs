//! Getting a PVH guest from Xen's 32-bit entry to Rust in long mode, and
//! the CPU state it keeps: descriptor tables, exception reporting, page
//! tables. Only meaningful on the kernel target.
#![no_std]

#[cfg(target_os = "none")]
pub mod cpu;
#[cfg(target_os = "none")]
mod entry;
#[cfg(target_os = "none")]
pub mod paging;

#[cfg(target_os = "none")]
extern "C" {
    static __kernel_start: u8;
    static __kernel_end: u8;
    static __stack_guard: u8;
    static __stack_bottom: u8;
    static __stack_top: u8;
}

/// Addresses the linker script fixed.
#[cfg(target_os = "none")]
pub mod layout {
    macro_rules! symbol_address {
        ($name:ident, $sym:ident) => {
            pub fn $name() -> u64 {
                core::ptr::addr_of!(super::$sym) as u64
            }
        };
    }
    symbol_address!(kernel_start, __kernel_start);
    symbol_address!(kernel_end, __kernel_end);
    symbol_address!(stack_guard, __stack_guard);
    symbol_address!(stack_bottom, __stack_bottom);
    symbol_address!(stack_top, __stack_top);
}
