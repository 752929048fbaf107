//! The network side of the kernel: the three vifs (netfront connections
//! that come and go with their backends) and the bridge's own address on
//! each (ARP, ping). Forwarding plugs in where frames are classified.

use alloc::alloc::{alloc_zeroed, dealloc, Layout};
use alloc::boxed::Box;
use alloc::vec::Vec;
use core::net::Ipv4Addr;

use pih_control::config::{Config, Role};
use pih_drivers::netfront_xs::{self, Rings, Vif, VifPlatform};
use pih_nat::host::{Interface, Ipv4Cidr, Transmit};
use pih_nat::wire::EthernetAddress;
use pih_xen::grant_table::{GrantError, GrantRef, GrantTable};
use pih_xen::{events, info, warn};

use crate::xenstore_env::Xs;

const PAGE: Layout = match Layout::from_size_align(4096, 4096) {
    Ok(l) => l,
    Err(_) => panic!("page layout"),
};
/// Largest Ethernet frame we handle (no jumbo frames, no offloads).
const MAX_FRAME: usize = 1514;
/// Rx slots handled per vif per round, so one busy vif cannot starve others.
const RX_BUDGET: usize = 64;
pub const VIF_LIST_TOKEN: &str = "vif-list";

struct KernelPlatform<'a> {
    gnt: &'a mut GrantTable,
}

impl VifPlatform for KernelPlatform<'_> {
    fn alloc_page(&mut self) -> Option<*mut u8> {
        // SAFETY: PAGE has non-zero size.
        let p = unsafe { alloc_zeroed(PAGE) };
        (!p.is_null()).then_some(p)
    }

    unsafe fn free_page(&mut self, page: *mut u8) {
        // SAFETY: the caller guarantees the page came from alloc_page.
        unsafe { dealloc(page, PAGE) }
    }

    fn grant(&mut self, domid: u16, page: *mut u8, readonly: bool) -> Result<GrantRef, GrantError> {
        // Identity mapping: the frame number is the address over 4096.
        self.gnt.grant(domid, page as u64 >> 12, readonly)
    }

    fn end_grant(&mut self, gref: GrantRef) -> Result<(), GrantError> {
        self.gnt.end(gref)
    }

    fn alloc_evtchn(&mut self, remote: u16) -> Option<u32> {
        events::alloc_unbound(remote).ok()
    }

    fn close_evtchn(&mut self, port: u32) {
        let _ = events::close(port);
    }
}

/// `Transmit` over a vif's tx ring: frames are built straight into a
/// granted tx buffer.
struct RingTx<'a>(&'a mut Rings);

impl Transmit for RingTx<'_> {
    fn transmit<F: FnOnce(&mut [u8]) -> usize>(&mut self, build: F) -> bool {
        let mut sent = false;
        let r = self.0.transmit(MAX_FRAME, |buf| {
            let n = build(buf);
            sent = n > 0;
            n
        });
        r.is_ok() && sent
    }
}

struct NetVif {
    devid: u32,
    role: Role,
    vif: Option<Vif>,
    iface: Interface,
    scratch: [u8; MAX_FRAME],
}

pub struct Net {
    gnt: GrantTable,
    vifs: Vec<Box<NetVif>>,
}

fn role_name(r: Role) -> &'static str {
    match r {
        Role::External => "external",
        Role::Internal => "internal",
        Role::Management => "management",
    }
}

impl Net {
    pub fn new(gnt: GrantTable, config: &Config) -> Net {
        let mut vifs = Vec::new();
        for role in [Role::External, Role::Internal, Role::Management] {
            let c = config.cidr(role);
            let cidr = Ipv4Cidr::new(c.addr, c.prefix_len).unwrap_or(Ipv4Cidr::new(Ipv4Addr::UNSPECIFIED, 0).unwrap());
            let gw = (role == Role::External).then_some(config.gw);
            vifs.push(Box::new(NetVif {
                devid: config.roles.devid(role),
                role,
                vif: None,
                iface: Interface::new(EthernetAddress([0; 6]), cidr, gw),
                scratch: [0; MAX_FRAME],
            }));
        }
        Net { gnt, vifs }
    }

    /// Finds the vifs in xenstore and starts following them; also watches
    /// `device/vif` so detached and re-attached vifs are noticed.
    pub fn start(&mut self, xs: &mut Xs) {
        if let Err(e) = xs.watch("device/vif", VIF_LIST_TOKEN) {
            warn!("net: cannot watch device/vif: {e}");
        }
        self.rescan(xs);
    }

    /// Probes vifs that appeared and forgets those that vanished.
    pub fn rescan(&mut self, xs: &mut Xs) {
        let present: Vec<u32> = match xs.directory("device/vif") {
            Ok(v) => v.iter().filter_map(|s| s.parse().ok()).collect(),
            Err(_) => Vec::new(),
        };
        for i in 0..self.vifs.len() {
            let devid = self.vifs[i].devid;
            let here = present.contains(&devid);
            let known = self.vifs[i].vif.is_some();
            if known && !here {
                info!("vif {devid}: device removed");
                let mut plat = KernelPlatform { gnt: &mut self.gnt };
                if let Some(mut v) = self.vifs[i].vif.take() {
                    v.forget(xs, &mut plat);
                }
            } else if !known && here {
                match Vif::probe(xs, devid) {
                    Ok(v) => {
                        let nv = &mut self.vifs[i];
                        nv.iface = Interface::new(EthernetAddress(v.mac), nv.iface.cidr(), nv.iface.gateway());
                        info!("vif {devid}: {} role, mac {}, address {}/{}, backend {}",
                            role_name(nv.role), EthernetAddress(v.mac), nv.iface.ip(), nv.iface.cidr().prefix_len(), v.backend);
                        nv.vif = Some(v);
                        self.backend_changed(xs, i);
                    }
                    // The toolstack writes the nodes one by one: a partial
                    // device is retried on the next change.
                    Err(e) => info!("vif {devid}: not ready yet ({e})"),
                }
            }
        }
    }

    fn backend_changed(&mut self, xs: &mut Xs, i: usize) {
        let mut plat = KernelPlatform { gnt: &mut self.gnt };
        let nv = &mut self.vifs[i];
        let Some(vif) = nv.vif.as_mut() else { return };
        match vif.on_backend_change(xs, &mut plat) {
            Ok(true) => {
                info!("net: {} grants active, vif {} reconnects {}", plat.gnt.active(), nv.devid, vif.reconnects);
                if let Some(conn) = vif.conn.as_mut() {
                    let notify = conn.rings.fill_rx();
                    let port = conn.port;
                    // Tell the segment where we are (gratuitous ARP).
                    nv.iface.announce(&mut RingTx(&mut conn.rings));
                    if conn.rings.flush_tx() || notify {
                        let _ = events::send(port);
                    }
                }
            }
            Ok(false) => {}
            Err(e) => warn!("vif {}: {e}", nv.devid),
        }
    }

    /// Handles a xenstore watch event meant for the network.
    pub fn on_watch(&mut self, xs: &mut Xs, token: &str) -> bool {
        if token == VIF_LIST_TOKEN {
            self.rescan(xs);
            return true;
        }
        for i in 0..self.vifs.len() {
            if token == netfront_xs::watch_token(self.vifs[i].devid) {
                self.backend_changed(xs, i);
                return true;
            }
        }
        false
    }

    /// Event channels to wait on.
    pub fn ports(&self, out: &mut heapless::Vec<u32, 8>) {
        for nv in &self.vifs {
            if let Some(conn) = nv.vif.as_ref().and_then(|v| v.conn.as_ref()) {
                let _ = out.push(conn.port);
            }
        }
    }

    /// Services every connected vif: completed transmissions, received
    /// frames, timers. Returns true if work remains (budget exhausted).
    pub fn poll(&mut self, now: u64) -> bool {
        let mut more = false;
        for nv in self.vifs.iter_mut() {
            let NetVif { vif, iface, scratch, .. } = &mut **nv;
            let Some(conn) = vif.as_mut().and_then(|v| v.conn.as_mut()) else { continue };
            events::take_pending(conn.port);
            let rings = &mut conn.rings;
            rings.reclaim_tx();
            let mut notify = false;
            for _ in 0..RX_BUDGET {
                let mut len = 0;
                let p = rings.poll_rx_budget(1, |frame| {
                    let data = frame.data();
                    len = data.len().min(MAX_FRAME);
                    scratch[..len].copy_from_slice(&data[..len]);
                });
                notify |= p.notify;
                if p.delivered > 0 {
                    // Forwarding (issue 4) takes Forward/Local frames here.
                    let _ = iface.process(now, &scratch[..len], &mut RingTx(rings));
                }
                if !p.more {
                    break;
                }
                more = true;
            }
            iface.poll(now, &mut RingTx(rings));
            if rings.flush_tx() || notify {
                let _ = events::send(conn.port);
            }
        }
        more
    }

    /// One line per vif for the log.
    pub fn report(&self) {
        for nv in &self.vifs {
            match nv.vif.as_ref().and_then(|v| v.conn.as_ref()) {
                Some(c) => {
                    let k = c.rings.counters();
                    info!("vif {} {}: rx {} pkts {} bytes {} drops, tx {} pkts {} bytes {} drops {} ring-full",
                        nv.devid, role_name(nv.role), k.rx_packets, k.rx_bytes, k.rx_drops, k.tx_packets, k.tx_bytes, k.tx_drops, k.tx_ring_full);
                }
                None => info!("vif {} {}: not connected", nv.devid, role_name(nv.role)),
            }
        }
    }
}
