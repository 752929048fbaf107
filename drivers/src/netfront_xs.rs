//! The xenbus side of a netfront vif (io/netif.h "Feature and Parameter
//! Negotiation", io/xenbus.h states): discovering the backend, granting
//! the rings and buffers, switching states, and following the backend as it
//! goes away and comes back. The data path lives in `netfront`.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use pih_xen::grant_table::{GrantError, GrantRef};
use pih_xen::xenstore::{XenStore, XenStoreEnv, XenbusState, XsError};
use pih_xen::{info, warn};

use crate::netfront::{NetfrontRings, RxSharedRing, TxSharedRing};

/// An event channel port.
pub type Port = u32;

/// Buffers per vif and direction (both rings hold 256 slots; we post
/// fewer to keep a 16 MiB domain possible with three vifs).
pub const RX_BUFFERS: usize = 128;
pub const TX_BUFFERS: usize = 128;

/// What the kernel provides to set a vif up and tear it down.
pub trait VifPlatform {
    /// A zeroed, identity-mapped 4 KiB page.
    fn alloc_page(&mut self) -> Option<*mut u8>;
    /// # Safety
    /// `page` came from `alloc_page` and is no longer granted or used.
    unsafe fn free_page(&mut self, page: *mut u8);
    fn grant(&mut self, domid: u16, page: *mut u8, readonly: bool) -> Result<GrantRef, GrantError>;
    fn end_grant(&mut self, gref: GrantRef) -> Result<(), GrantError>;
    fn alloc_evtchn(&mut self, remote: u16) -> Option<Port>;
    fn close_evtchn(&mut self, port: Port);
}

pub type Rings = NetfrontRings<TxSharedRing, RxSharedRing>;

/// Everything granted to one backend connection.
pub struct Connection {
    pub port: Port,
    pub rings: Rings,
    /// (page, grant) of the two ring pages and every buffer.
    held: Vec<(*mut u8, GrantRef)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// No resources; waiting for the backend to reach InitWait.
    Idle,
    /// Rings granted and published; waiting for the backend to connect.
    Connecting,
    Connected,
    /// The backend left; grants are ended once it has unmapped them.
    Closing,
}

pub struct Vif {
    pub devid: u32,
    pub frontend: String,
    pub backend: String,
    pub backend_id: u16,
    pub mac: [u8; 6],
    pub phase: Phase,
    pub conn: Option<Connection>,
    /// Grants the backend still had mapped at teardown, with their pages:
    /// retried on every state change, never reused before they end.
    lingering: Vec<(*mut u8, GrantRef)>,
    pub reconnects: u32,
}

#[derive(Debug)]
pub enum VifError {
    Xenstore(&'static str, XsError),
    BadMac(String),
    BadBackendId(String),
    OutOfMemory,
    Grant(GrantError),
    NoEventChannel,
}

impl core::fmt::Display for VifError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            VifError::Xenstore(what, e) => write!(f, "xenstore {what}: {e}"),
            VifError::BadMac(m) => write!(f, "malformed mac {m:?}"),
            VifError::BadBackendId(m) => write!(f, "malformed backend-id {m:?}"),
            VifError::OutOfMemory => write!(f, "out of memory for ring buffers"),
            VifError::Grant(e) => write!(f, "{e}"),
            VifError::NoEventChannel => write!(f, "cannot allocate an event channel"),
        }
    }
}

pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.trim().split(':');
    for b in mac.iter_mut() {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

pub fn watch_token(devid: u32) -> String {
    format!("vif-backend-{devid}")
}

fn xs<T>(what: &'static str, r: Result<T, XsError>) -> Result<T, VifError> {
    r.map_err(|e| VifError::Xenstore(what, e))
}

impl Vif {
    /// Reads `device/vif/<devid>` and watches the backend's state.
    pub fn probe<E: XenStoreEnv>(store: &mut XenStore<E>, devid: u32) -> Result<Vif, VifError> {
        let frontend = format!("device/vif/{devid}");
        let backend = xs("backend", store.read(&format!("{frontend}/backend")))?;
        let id = xs("backend-id", store.read(&format!("{frontend}/backend-id")))?;
        let backend_id = id.trim().parse::<u16>().map_err(|_| VifError::BadBackendId(id.clone()))?;
        let mac_s = xs("mac", store.read(&format!("{frontend}/mac")))?;
        let mac = parse_mac(&mac_s).ok_or(VifError::BadMac(mac_s))?;
        xs("watch", store.watch(&format!("{backend}/state"), &watch_token(devid)))?;
        Ok(Vif { devid, frontend, backend, backend_id, mac, phase: Phase::Idle, conn: None, lingering: Vec::new(), reconnects: 0 })
    }

    /// Stops following the backend (the device is gone from xenstore).
    pub fn forget<E: XenStoreEnv>(&mut self, store: &mut XenStore<E>, plat: &mut impl VifPlatform) {
        let _ = store.unwatch(&format!("{}/state", self.backend), &watch_token(self.devid));
        self.release(plat);
    }

    fn backend_state<E: XenStoreEnv>(&self, store: &mut XenStore<E>) -> XenbusState {
        match store.read_state(&format!("{}/state", self.backend)) {
            Ok(s) => s,
            // A vanished backend directory means the device was detached.
            Err(_) => XenbusState::Closed,
        }
    }

    /// Drives the state machine after the backend's state may have
    /// changed. Returns true when the vif has just become connected.
    pub fn on_backend_change<E: XenStoreEnv>(
        &mut self,
        store: &mut XenStore<E>,
        plat: &mut impl VifPlatform,
    ) -> Result<bool, VifError> {
        self.retry_lingering(plat);
        let state = self.backend_state(store);
        match (self.phase, state) {
            (Phase::Idle, XenbusState::InitWait) => {
                self.connect(store, plat)?;
                self.phase = Phase::Connecting;
                // The backend may have connected already.
                if self.backend_state(store) == XenbusState::Connected {
                    return self.on_backend_change(store, plat);
                }
                Ok(false)
            }
            (Phase::Connecting, XenbusState::Connected) => {
                self.phase = Phase::Connected;
                info!("vif {}: connected to backend {} (domain {})", self.devid, self.backend, self.backend_id);
                Ok(true)
            }
            (Phase::Connecting | Phase::Connected, XenbusState::Closing) => {
                // io/xenbus.h: answer the backend's Closing with Closed; it
                // unmaps the rings and then reaches Closed itself.
                info!("vif {}: backend closing", self.devid);
                self.phase = Phase::Closing;
                let _ = store.write_state(&format!("{}/state", self.frontend), XenbusState::Closed);
                Ok(false)
            }
            (Phase::Connecting | Phase::Connected | Phase::Closing, XenbusState::Closed | XenbusState::Unknown | XenbusState::Initialising)
            | (Phase::Connected, XenbusState::InitWait) => {
                info!("vif {}: backend gone ({:?}); releasing the connection", self.devid, state);
                self.release(plat);
                self.phase = Phase::Idle;
                self.reconnects += 1;
                // Ready for a returning backend: Initialising is where a
                // fresh frontend starts. Unless the toolstack is removing
                // the device: then writing would resurrect its directory.
                if store.read(&format!("{}/backend", self.frontend)).is_ok() {
                    let _ = store.write_state(&format!("{}/state", self.frontend), XenbusState::Initialising);
                }
                if self.backend_state(store) == XenbusState::InitWait {
                    return self.on_backend_change(store, plat);
                }
                Ok(false)
            }
            _ => Ok(false),
        }
    }

    fn grant_page(&mut self, plat: &mut impl VifPlatform, held: &mut Vec<(*mut u8, GrantRef)>, readonly: bool) -> Result<(*mut u8, GrantRef), VifError> {
        let page = plat.alloc_page().ok_or(VifError::OutOfMemory)?;
        match plat.grant(self.backend_id, page, readonly) {
            Ok(g) => {
                held.push((page, g));
                Ok((page, g))
            }
            Err(e) => {
                // SAFETY: the page was never granted.
                unsafe { plat.free_page(page) };
                Err(VifError::Grant(e))
            }
        }
    }

    fn connect<E: XenStoreEnv>(&mut self, store: &mut XenStore<E>, plat: &mut impl VifPlatform) -> Result<(), VifError> {
        let mut held = Vec::with_capacity(2 + RX_BUFFERS + TX_BUFFERS);
        let result = self.build(store, plat, &mut held);
        if result.is_err() {
            for (page, gref) in held {
                self.end_and_free(plat, page, gref);
            }
        }
        result
    }

    fn build<E: XenStoreEnv>(&mut self, store: &mut XenStore<E>, plat: &mut impl VifPlatform, held: &mut Vec<(*mut u8, GrantRef)>) -> Result<(), VifError> {
        let (tx_page, tx_ref) = self.grant_page(plat, held, false)?;
        let (rx_page, rx_ref) = self.grant_page(plat, held, false)?;
        let mut rx_bufs = Vec::with_capacity(RX_BUFFERS);
        for _ in 0..RX_BUFFERS {
            rx_bufs.push(self.grant_page(plat, held, false)?);
        }
        let mut tx_bufs = Vec::with_capacity(TX_BUFFERS);
        for _ in 0..TX_BUFFERS {
            tx_bufs.push(self.grant_page(plat, held, true)?);
        }
        let port = plat.alloc_evtchn(self.backend_id).ok_or(VifError::NoEventChannel)?;
        // SAFETY: every page is fresh, zeroed, exclusively ours and granted
        // to the backend only (buffers rx read-write, tx read-only), for as
        // long as the connection holds them in `held`.
        let rings = unsafe {
            NetfrontRings::new(TxSharedRing::new(tx_page), RxSharedRing::new(rx_page), &rx_bufs, &tx_bufs)
        };
        let Ok(rings) = rings else {
            plat.close_evtchn(port);
            return Err(VifError::OutOfMemory);
        };

        let fe = self.frontend.clone();
        let written = store.transaction(8, |s, tx| {
            s.write_tx(tx, &format!("{fe}/tx-ring-ref"), &format!("{tx_ref}"))?;
            s.write_tx(tx, &format!("{fe}/rx-ring-ref"), &format!("{rx_ref}"))?;
            s.write_tx(tx, &format!("{fe}/event-channel"), &format!("{port}"))?;
            // Linux netback refuses frontends that cannot take copies.
            s.write_tx(tx, &format!("{fe}/request-rx-copy"), "1")?;
            s.write_tx(tx, &format!("{fe}/feature-rx-notify"), "1")?;
            // We complete no partial checksums: ask for full ones (see the
            // closing note of issue 3 and docs/DESIGN-NOTES.md).
            s.write_tx(tx, &format!("{fe}/feature-no-csum-offload"), "1")?;
            s.write_tx(tx, &format!("{fe}/feature-sg"), "0")?;
            s.write_tx(tx, &format!("{fe}/feature-gso-tcpv4"), "0")?;
            s.write_tx(tx, &format!("{fe}/feature-gso-tcpv6"), "0")?;
            s.write_tx(tx, &format!("{fe}/feature-ipv6-csum-offload"), "0")?;
            s.write_tx(tx, &format!("{fe}/state"), &format!("{}", XenbusState::Connected as u32))
        });
        if let Err(e) = written {
            plat.close_evtchn(port);
            return Err(VifError::Xenstore("publishing ring references", e));
        }
        self.conn = Some(Connection { port, rings, held: core::mem::take(held) });
        Ok(())
    }

    fn end_and_free(&mut self, plat: &mut impl VifPlatform, page: *mut u8, gref: GrantRef) {
        match plat.end_grant(gref) {
            // SAFETY: the grant has ended: the backend can no longer reach it.
            Ok(()) => unsafe { plat.free_page(page) },
            Err(GrantError::InUse(_)) => self.lingering.push((page, gref)),
            Err(e) => warn!("vif {}: {e}", self.devid),
        }
    }

    fn release(&mut self, plat: &mut impl VifPlatform) {
        if let Some(conn) = self.conn.take() {
            plat.close_evtchn(conn.port);
            drop(conn.rings);
            for (page, gref) in conn.held {
                self.end_and_free(plat, page, gref);
            }
        }
        if !self.lingering.is_empty() {
            warn!("vif {}: {} grants still mapped by the backend; retrying later", self.devid, self.lingering.len());
        }
    }

    fn retry_lingering(&mut self, plat: &mut impl VifPlatform) {
        let pending = core::mem::take(&mut self.lingering);
        for (page, gref) in pending {
            self.end_and_free(plat, page, gref);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_mac;

    #[test]
    fn mac_parsing() {
        assert_eq!(parse_mac("00:16:3e:0a:bb:FF"), Some([0, 0x16, 0x3e, 0x0a, 0xbb, 0xff]));
        assert_eq!(parse_mac("00:16:3e:0a:bb"), None);
        assert_eq!(parse_mac("00:16:3e:0a:bb:ff:00"), None);
        assert_eq!(parse_mac("0:16:3e:0a:bb:ff"), None);
        assert_eq!(parse_mac("zz:16:3e:0a:bb:ff"), None);
    }
}
