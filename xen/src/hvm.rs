//! HVM operations a PVH guest needs: parameters (hvm/params.h, hvm/hvm_op.h)
//! and placing Xen-owned frames into its physical address space (memory.h).

use crate::hypercall::{self, XenError, DOMID_SELF};

pub const PARAM_CALLBACK_IRQ: u32 = 0;
pub const PARAM_STORE_PFN: u32 = 1;
pub const PARAM_STORE_EVTCHN: u32 = 2;
pub const PARAM_CONSOLE_PFN: u32 = 17;
pub const PARAM_CONSOLE_EVTCHN: u32 = 18;

const HVMOP_SET_PARAM: u32 = 0;
const HVMOP_GET_PARAM: u32 = 1;

#[repr(C)]
struct HvmParam {
    domid: u16,
    _pad: u16,
    index: u32,
    value: u64,
}

pub fn get_param(index: u32) -> Result<u64, XenError> {
    let mut p = HvmParam { domid: DOMID_SELF, _pad: 0, index, value: 0 };
    // SAFETY: HVMOP_get_param takes a xen_hvm_param_t, which `p` is.
    unsafe { hypercall::hvm_op(HVMOP_GET_PARAM, &mut p)? };
    Ok(p.value)
}

pub fn set_param(index: u32, value: u64) -> Result<(), XenError> {
    let mut p = HvmParam { domid: DOMID_SELF, _pad: 0, index, value };
    // SAFETY: HVMOP_set_param takes a xen_hvm_param_t, which `p` is.
    unsafe { hypercall::hvm_op(HVMOP_SET_PARAM, &mut p)? };
    Ok(())
}

/// HVM_PARAM_CALLBACK_IRQ "type 2": events are delivered as this vector.
/// libxl only offers `xl shutdown` through xenstore to HVM-style guests
/// that have set this parameter (libxl__domain_pvcontrol_available).
pub fn set_callback_vector(vector: u8) -> Result<(), XenError> {
    set_param(PARAM_CALLBACK_IRQ, (2u64 << 56) | u64::from(vector))
}

pub const MAPSPACE_SHARED_INFO: u32 = 0;
pub const MAPSPACE_GRANT_TABLE: u32 = 1;
const XENMEM_ADD_TO_PHYSMAP: u32 = 7;

#[repr(C)]
struct AddToPhysmap {
    domid: u16,
    size: u16,
    space: u32,
    idx: u64,
    gpfn: u64,
}

/// Puts frame `idx` of `space` at guest frame `gpfn`.
///
/// # Safety
/// Whatever RAM was at `gpfn` is replaced; the caller must own that frame
/// and expect its contents to change.
pub unsafe fn add_to_physmap(space: u32, idx: u64, gpfn: u64) -> Result<(), XenError> {
    let mut a = AddToPhysmap { domid: DOMID_SELF, size: 0, space, idx, gpfn };
    // SAFETY: XENMEM_add_to_physmap takes a xen_add_to_physmap; the caller
    // owns `gpfn` per the contract.
    unsafe { hypercall::memory_op(XENMEM_ADD_TO_PHYSMAP, &mut a)? };
    Ok(())
}
