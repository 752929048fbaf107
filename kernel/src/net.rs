//! The network side of the kernel: the three vifs (netfront connections
//! that come and go with their backends) and the bridge's own address on
//! each (ARP, ping). Forwarding plugs in where frames are classified.

use alloc::alloc::{alloc_zeroed, dealloc, Layout};
use alloc::boxed::Box;
use alloc::vec::Vec;
use core::net::Ipv4Addr;

use pih_control::config::{Config, Role};
use pih_drivers::netfront_xs::{self, Rings, Vif, VifPlatform};
use pih_nat::host::{Disposition, Interface, Ipv4Cidr, Transmit};
use pih_nat::icmp_reply::{self, IcmpErrorKind};
use pih_nat::translate::{DropReason, Nat, NatConfig, Verdict};
use pih_nat::wire::EthernetAddress;
use pih_xen::grant_table::{GrantError, GrantRef, GrantTable};
use pih_xen::{events, info, warn};

use crate::api::{self, ApiService, NatGateway};
use crate::mgmt::Mgmt;
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
}

impl NetVif {
    fn rings(&mut self) -> Option<&mut Rings> {
        self.vif.as_mut().and_then(|v| v.conn.as_mut()).map(|c| &mut c.rings)
    }
}

/// Indices into `Net::vifs` (built in role order).
const EXT: usize = 0;
const INT: usize = 1;
const MGMT: usize = 2;

pub struct Net {
    gnt: GrantTable,
    vifs: Vec<Box<NetVif>>,
    nat: Nat,
    /// Refusals already reported, and when (rate-limits the log line).
    refused_logged: (u64, u64),
    /// Packets the kernel could not hand to the next vif.
    pub forward_failed: u64,
    /// IPv4 identification of the ICMP errors the bridge originates.
    icmp_ident: u16,
    /// The TCP/IP stack of the management vif, once it has connected.
    mgmt: Option<Mgmt>,
    api: Box<ApiService>,
    api_port: u16,
}

/// A seed for the translation table's hash keys and port choice: the TSC
/// at boot mixed with Xen system time (not secret-grade, but not known to
/// remote parties in advance).
fn seed() -> [u64; 4] {
    let a = pih_xen::arch::rdtsc();
    let b = pih_xen::clock::system_time_ns();
    let mix = |x: u64| {
        let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    [mix(a), mix(b), mix(a ^ b.rotate_left(17)), mix(a.wrapping_mul(b | 1))]
}

/// Counters of every connected vif, for `GET /stats`.
fn vif_stats(vifs: &[Box<NetVif>]) -> heapless::Vec<pih_control::api::VifStats, 4> {
    let mut out = heapless::Vec::new();
    for nv in vifs {
        if let Some(c) = nv.vif.as_ref().and_then(|v| v.conn.as_ref()) {
            let _ = out.push(api::vif_stats(nv.devid, nv.role, &c.rings.counters()));
        }
    }
    out
}

pub fn role_name(r: Role) -> &'static str {
    match r {
        Role::External => "external",
        Role::Internal => "internal",
        Role::Management => "management",
    }
}

impl Net {
    pub fn new(gnt: GrantTable, config: &'static Config, name: &str) -> Result<Net, &'static str> {
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
            }));
        }
        let int = Ipv4Cidr::new(config.int.addr, config.int.prefix_len).ok_or("bad internal prefix")?;
        let mut nat_config = NatConfig::new(config.ext.addr, int);
        nat_config.table.capacity = config.flows as usize;
        nat_config.table.static_capacity = config.rules as usize;
        let nat = Nat::new(&nat_config, seed()).map_err(|_| "translation table configuration refused")?;
        info!("nat: translation table for {} flows ready", nat.table().capacity());
        Ok(Net { gnt, vifs, nat, refused_logged: (0, 0), forward_failed: 0, icmp_ident: 0,
            mgmt: None, api: Box::new(ApiService::new(config, name)), api_port: config.port })
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
                if nv.role == Role::Management && self.mgmt.is_none() {
                    if let Some(conn) = vif.conn.as_mut() {
                        let c = nv.iface.cidr();
                        self.mgmt = Some(Mgmt::new(vif.mac, c.addr(), c.prefix_len(), self.api_port, &mut conn.rings, pih_xen::clock::uptime_ns()));
                        info!("mgmt: API on {}:{} (tcp)", c.addr(), self.api_port);
                    }
                }
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
    /// frames (answered, translated and forwarded, or dropped), timers.
    /// Returns true if work remains (budget exhausted).
    pub fn poll(&mut self, now: u64) -> bool {
        let mut more = false;
        let mut frame = [0u8; MAX_FRAME];
        for i in 0..self.vifs.len() {
            let Some(port) = self.vifs[i].vif.as_ref().and_then(|v| v.conn.as_ref()).map(|c| c.port) else { continue };
            events::take_pending(port);
            let mut notify = false;
            if let Some(rings) = self.vifs[i].rings() {
                rings.reclaim_tx();
            }
            for _ in 0..RX_BUDGET {
                let nv = &mut *self.vifs[i];
                let Some(rings) = nv.vif.as_mut().and_then(|v| v.conn.as_mut()).map(|c| &mut c.rings) else { break };
                let mut len = 0;
                let p = rings.poll_rx_budget(1, |f| {
                    let data = f.data();
                    len = data.len().min(MAX_FRAME);
                    frame[..len].copy_from_slice(&data[..len]);
                });
                notify |= p.notify;
                if p.delivered > 0 {
                    if i == MGMT && self.mgmt.is_some() {
                        self.poll_mgmt(now, Some(&frame[..len]));
                    } else {
                        let d = nv.iface.process(now, &frame[..len], &mut RingTx(rings));
                        self.dispatch(now, i, d, &mut frame[..len]);
                    }
                }
                if !p.more {
                    break;
                }
                more = true;
            }
            if i == MGMT && self.mgmt.is_some() {
                self.poll_mgmt(now, None);
            } else {
                let nv = &mut *self.vifs[i];
                if let Some(rings) = nv.vif.as_mut().and_then(|v| v.conn.as_mut()).map(|c| &mut c.rings) {
                    nv.iface.poll(now, &mut RingTx(rings));
                }
            }
            self.flush(i, notify);
        }
        // Frames queued on other vifs by forwarding.
        for i in 0..self.vifs.len() {
            self.flush(i, false);
        }
        self.nat.expire(now);
        self.report_refusals(now);
        more
    }

    /// Runs the management stack over a received `frame`, or (`None`) its
    /// timers: TCP retransmissions and idle connections, rule expiry, the
    /// exchanges with Irmin, answers waiting for a commit.
    fn poll_mgmt(&mut self, now: u64, frame: Option<&[u8]>) {
        let stats = vif_stats(&self.vifs);
        let nv = &mut *self.vifs[MGMT];
        let (Some(m), Some(rings)) = (self.mgmt.as_mut(), nv.rings()) else { return };
        let mut gw = NatGateway { nat: &mut self.nat, vifs: &stats };
        if frame.is_none() {
            self.api.expire(&mut gw);
            self.api.persist(now, m, &mut gw);
        }
        m.poll(now, frame, rings, &mut self.api.with(gw));
    }

    fn flush(&mut self, i: usize, notify: bool) {
        if let Some(conn) = self.vifs[i].vif.as_mut().and_then(|v| v.conn.as_mut()) {
            if conn.rings.flush_tx() || notify {
                let _ = events::send(conn.port);
            }
        }
    }

    /// What happens to a frame the vif's own address did not consume.
    fn dispatch(&mut self, now: u64, from: usize, d: Disposition, frame: &mut [u8]) {
        let role = self.vifs[from].role;
        // Forward and Local promise Ethernet II + a valid IPv4 header.
        let Some(packet) = frame.get_mut(14..) else { return };
        let (verdict, to) = match (role, d) {
            (Role::Internal, Disposition::Forward) => (self.nat.outbound(now, packet), EXT),
            (Role::External, Disposition::Local) => (self.nat.inbound(now, packet), INT),
            // Management traffic (the API, issue 5) and anything else:
            // nothing to forward.
            _ => return,
        };
        let error = match verdict {
            Verdict::Forward => return self.send(now, to, packet),
            // Silently, as a NAT must; counted by the translator.
            Verdict::Drop(_) => return,
            Verdict::TimeExceeded => IcmpErrorKind::TimeExceeded,
            Verdict::NeedFrag { mtu } => IcmpErrorKind::FragmentationNeeded { mtu },
        };
        // The sender hears about it from the bridge's address on its side.
        let src = self.vifs[from].iface.ip();
        self.icmp_ident = self.icmp_ident.wrapping_add(1);
        let mut reply = [0u8; 128];
        let n = icmp_reply::emit(&mut reply, src, self.icmp_ident, error, packet);
        if n > 0 {
            self.send(now, from, &reply[..n]);
        }
    }

    /// Sends an IPv4 packet out of vif `to`, resolving the next hop (or
    /// queueing it until ARP answers).
    fn send(&mut self, now: u64, to: usize, packet: &[u8]) {
        let Some(total) = packet.get(2..4).map(|b| u16::from_be_bytes([b[0], b[1]]) as usize) else { return };
        let Some(ip) = packet.get(..total) else { return };
        let Some(&[a, b, c, d]) = ip.get(16..20) else { return };
        let dst = Ipv4Addr::new(a, b, c, d);
        let nv = &mut *self.vifs[to];
        let NetVif { vif, iface, .. } = nv;
        let Some(rings) = vif.as_mut().and_then(|v| v.conn.as_mut()).map(|c| &mut c.rings) else {
            self.forward_failed += 1;
            return;
        };
        let status = iface.send_ipv4(now, dst, &mut RingTx(rings), |buf| {
            if buf.len() < ip.len() {
                return 0;
            }
            buf[..ip.len()].copy_from_slice(ip);
            ip.len()
        });
        if matches!(status, pih_nat::host::SendStatus::Dropped(_) | pih_nat::host::SendStatus::Empty) {
            self.forward_failed += 1;
        }
    }

    fn report_refusals(&mut self, now: u64) {
        let refused = self.nat.counters().dropped(DropReason::TableFull);
        let (logged, at) = self.refused_logged;
        if refused > logged && now.saturating_sub(at) >= 1_000_000_000 {
            warn!("nat: table full ({} flows), refused {} new flows so far", self.nat.table().len(), refused);
            self.refused_logged = (refused, now);
        }
    }

    /// Rule changes waiting for Irmin.
    pub fn persistence_backlog(&self) -> u64 {
        self.api.persistence_backlog()
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
        let c = self.nat.counters();
        info!("nat: {} flows active, {} packets dropped ({} table full), {} not forwarded",
            self.nat.table().len(), c.dropped_total(), c.dropped(DropReason::TableFull), self.forward_failed);
        self.api.report();
    }
}
