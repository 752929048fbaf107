//! Hypercalls through the hypercall page (xen/include/public/arch-x86/xen-x86_64.h).
//!
//! xen-sys supplies the call sequences for one to four arguments and the
//! operation numbers; it expects the page under the symbol `HYPERCALL_PAGE`,
//! which we reserve here and which `arch::init_hypercall_page` asks Xen to
//! fill. (xen-sys' five-argument call passes the fifth in r9 instead of r8,
//! so we do not use it.)

use xen_sys::{hypercall_1, hypercall_2, hypercall_3};

core::arch::global_asm!(
    ".pushsection .bss.hypercall_page, \"aw\", @nobits",
    ".balign 4096",
    ".globl HYPERCALL_PAGE",
    "HYPERCALL_PAGE:",
    ".skip 4096",
    ".popsection",
);

extern "C" {
    static HYPERCALL_PAGE: [u8; 4096];
}

pub const DOMID_SELF: u16 = 0x7ff0;

// Operation numbers from xen/include/public/xen.h.
const HYPERVISOR_MEMORY_OP: u32 = 12;
const HYPERVISOR_XEN_VERSION: u32 = 17;
const HYPERVISOR_GRANT_TABLE_OP: u32 = 20;
const HYPERVISOR_VCPU_OP: u32 = 24;
const HYPERVISOR_SCHED_OP: u32 = 29;
const HYPERVISOR_EVENT_CHANNEL_OP: u32 = 32;
const HYPERVISOR_HVM_OP: u32 = 34;

/// Guest-physical address of the hypercall page.
pub fn page_address() -> u64 {
    core::ptr::addr_of!(HYPERCALL_PAGE) as u64
}

/// A negative Xen errno (xen/include/public/errno.h) as returned in rax.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XenError(pub i64);

impl XenError {
    pub const EAGAIN: XenError = XenError(-11);
}

impl core::fmt::Display for XenError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "xen error {}", self.0)
    }
}

fn result(ret: i64) -> Result<i64, XenError> {
    if ret < 0 {
        Err(XenError(ret))
    } else {
        Ok(ret)
    }
}

/// `HYPERVISOR_sched_op(cmd, arg)`.
///
/// # Safety
/// `arg` must point to the structure `cmd` expects, valid for the call.
pub unsafe fn sched_op<T>(cmd: u32, arg: *mut T) -> Result<i64, XenError> {
    // SAFETY: the caller guarantees `arg` matches `cmd`; the page is filled.
    result(unsafe { hypercall_2(HYPERVISOR_SCHED_OP, cmd as u64, arg as u64) })
}

/// `HYPERVISOR_memory_op(cmd, arg)`.
///
/// # Safety
/// As for [`sched_op`].
pub unsafe fn memory_op<T>(cmd: u32, arg: *mut T) -> Result<i64, XenError> {
    // SAFETY: see the function contract.
    result(unsafe { hypercall_2(HYPERVISOR_MEMORY_OP, cmd as u64, arg as u64) })
}

/// `HYPERVISOR_hvm_op(cmd, arg)`.
///
/// # Safety
/// As for [`sched_op`].
pub unsafe fn hvm_op<T>(cmd: u32, arg: *mut T) -> Result<i64, XenError> {
    // SAFETY: see the function contract.
    result(unsafe { hypercall_2(HYPERVISOR_HVM_OP, cmd as u64, arg as u64) })
}

/// `HYPERVISOR_event_channel_op(cmd, arg)`.
///
/// # Safety
/// As for [`sched_op`].
pub unsafe fn event_channel_op<T>(cmd: u32, arg: *mut T) -> Result<i64, XenError> {
    // SAFETY: see the function contract.
    result(unsafe { hypercall_2(HYPERVISOR_EVENT_CHANNEL_OP, cmd as u64, arg as u64) })
}

/// `HYPERVISOR_grant_table_op(cmd, arg, count)`.
///
/// # Safety
/// `arg` must point to `count` structures of the type `cmd` expects.
pub unsafe fn grant_table_op<T>(cmd: u32, arg: *mut T, count: u32) -> Result<i64, XenError> {
    // SAFETY: see the function contract.
    result(unsafe { hypercall_3(HYPERVISOR_GRANT_TABLE_OP, cmd as u64, arg as u64, count as u64) })
}

/// `HYPERVISOR_vcpu_op(cmd, vcpu, arg)`.
///
/// # Safety
/// As for [`sched_op`].
pub unsafe fn vcpu_op<T>(cmd: u32, vcpu: u32, arg: *mut T) -> Result<i64, XenError> {
    // SAFETY: see the function contract.
    result(unsafe { hypercall_3(HYPERVISOR_VCPU_OP, cmd as u64, vcpu as u64, arg as u64) })
}

/// `XENVER_version`: (major, minor) of the running hypervisor.
pub fn xen_version() -> (u16, u16) {
    // SAFETY: XENVER_version (0) takes no argument buffer.
    let v = unsafe { hypercall_1(HYPERVISOR_XEN_VERSION, 0) } as u32;
    ((v >> 16) as u16, v as u16)
}
