//! Event channels (xen/include/public/event_channel.h) and the idle wait.
//!
//! We never take event upcalls: every port stays masked and the kernel
//! blocks in SCHEDOP_poll (sched.h), which a pending port wakes regardless
//! of its mask, then checks the pending bits itself.

use crate::hypercall::{self, XenError, DOMID_SELF};
use crate::shared_info;

pub type Port = u32;

const EVTCHNOP_CLOSE: u32 = 3;
const EVTCHNOP_SEND: u32 = 4;
const EVTCHNOP_ALLOC_UNBOUND: u32 = 6;
const SCHEDOP_POLL: u32 = 3;
/// sched.h: "Fairly arbitrary limit" on ports per poll.
pub const MAX_POLL_PORTS: usize = 128;

pub fn send(port: Port) -> Result<(), XenError> {
    let mut p = port;
    // SAFETY: EVTCHNOP_send takes struct evtchn_send { port }.
    unsafe { hypercall::event_channel_op(EVTCHNOP_SEND, &mut p)? };
    Ok(())
}

pub fn close(port: Port) -> Result<(), XenError> {
    let mut p = port;
    // SAFETY: EVTCHNOP_close takes struct evtchn_close { port }.
    unsafe { hypercall::event_channel_op(EVTCHNOP_CLOSE, &mut p)? };
    Ok(())
}

/// A fresh port that `remote` may bind to (for a device backend). Masked.
pub fn alloc_unbound(remote: u16) -> Result<Port, XenError> {
    #[repr(C)]
    struct AllocUnbound {
        dom: u16,
        remote_dom: u16,
        port: u32,
    }
    let mut a = AllocUnbound { dom: DOMID_SELF, remote_dom: remote, port: 0 };
    // SAFETY: EVTCHNOP_alloc_unbound takes struct evtchn_alloc_unbound.
    unsafe { hypercall::event_channel_op(EVTCHNOP_ALLOC_UNBOUND, &mut a)? };
    shared_info::mask(a.port);
    Ok(a.port)
}

/// Blocks until one of `ports` is pending or Xen system time reaches
/// `deadline_ns` (0: no timeout). Returns at once if one is already pending.
pub fn poll(ports: &[Port], deadline_ns: u64) -> Result<(), XenError> {
    #[repr(C)]
    struct SchedPoll {
        ports: *const Port,
        nr_ports: u32,
        timeout: u64,
    }
    let n = ports.len().min(MAX_POLL_PORTS);
    let mut p = SchedPoll { ports: ports.as_ptr(), nr_ports: n as u32, timeout: deadline_ns };
    // SAFETY: `p.ports` points at `n` valid ports for the duration of the call.
    unsafe { hypercall::sched_op(SCHEDOP_POLL, &mut p)? };
    Ok(())
}

/// Clears and reports the pending bit of `port`.
pub fn take_pending(port: Port) -> bool {
    shared_info::take_pending(port)
}
