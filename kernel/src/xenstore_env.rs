//! The xenstore client wired to the real ring: HVM parameters give the
//! ring's frame and event channel; waiting blocks in SCHEDOP_poll.

use pih_xen::xenstore::{XenStore, XenStoreEnv, XenstoreDomainInterface};
use pih_xen::{clock, events, hvm};

pub struct XsEnv {
    port: events::Port,
}

impl XenStoreEnv for XsEnv {
    fn notify(&mut self) {
        let _ = events::send(self.port);
    }

    fn wait(&mut self, deadline_ns: u64) {
        let _ = events::poll(&[self.port], deadline_ns);
        events::take_pending(self.port);
    }

    fn now_ns(&self) -> u64 {
        clock::system_time_ns()
    }
}

impl XsEnv {
    pub fn port(&self) -> events::Port {
        self.port
    }
}

pub type Xs = XenStore<XsEnv>;

pub fn connect() -> Result<Xs, &'static str> {
    let pfn = hvm::get_param(hvm::PARAM_STORE_PFN).map_err(|_| "no ring frame (HVM_PARAM_STORE_PFN)")?;
    let port = hvm::get_param(hvm::PARAM_STORE_EVTCHN).map_err(|_| "no event channel (HVM_PARAM_STORE_EVTCHN)")?;
    if pfn == 0 || port == 0 {
        return Err("the toolstack gave no xenstore ring");
    }
    pih_boot::paging::map_identity(pfn << 12, 4096).map_err(|_| "cannot map the ring")?;
    let env = XsEnv { port: port as events::Port };
    // SAFETY: Xen gave us this frame as the xenstore ring and it is now
    // identity mapped; nothing else in the kernel touches it.
    Ok(unsafe { XenStore::new((pfn << 12) as *mut XenstoreDomainInterface, env) })
}
