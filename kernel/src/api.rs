//! The management API wired to the data plane: `pih_control::api` over
//! the translation table, served by `mgmt`'s TCP server.

use alloc::boxed::Box;
use alloc::vec;

use pih_control::api::{Api, ApiConfig, Gateway, NatStats, Now, RuleError, StatsSnapshot, VifStats};
use pih_control::auth;
use pih_control::config::{Config, Role};
use pih_control::http::{Progress, RequestReader};
use pih_control::rules::{Proto, Rule, RuleSpec};
use pih_nat::table::{Protocol, StaticError};
use pih_nat::translate::{DropReason, Nat};
use pih_xen::{clock, shared_info};

use crate::mgmt::Service;

fn protocol(p: Proto) -> Protocol {
    match p {
        Proto::Tcp => Protocol::Tcp,
        Proto::Udp => Protocol::Udp,
    }
}

fn rule_error(e: StaticError) -> RuleError {
    match e {
        StaticError::PortBusy => RuleError::PortBusy,
        StaticError::Full => RuleError::Full,
        StaticError::NotFound => RuleError::NotFound,
        _ => RuleError::Unsupported,
    }
}

/// The data plane as the API sees it.
pub struct NatGateway<'a> {
    pub nat: &'a mut Nat,
    pub vifs: &'a [VifStats],
}

impl Gateway for NatGateway<'_> {
    fn insert_rule(&mut self, now_ns: u64, r: &RuleSpec, requested: Option<u16>) -> Result<u16, RuleError> {
        let p = protocol(r.proto);
        let (port, reserved) = match requested {
            Some(port) => (port, false),
            None => (self.nat.table_mut().reserve_any_port(now_ns, p).ok_or(RuleError::NoPort)?, true),
        };
        match self.nat.insert_static(now_ns, p, port, r.client, r.int_addr, r.int_port) {
            Ok(()) => Ok(port),
            Err(e) => {
                if reserved {
                    self.nat.table_mut().release_port(now_ns, p, port);
                }
                Err(rule_error(e))
            }
        }
    }

    fn remove_rule(&mut self, now_ns: u64, proto: Proto, ext_port: u16) -> Result<usize, RuleError> {
        self.nat.remove_static(now_ns, protocol(proto), ext_port).map_err(rule_error)
    }

    fn stats(&self, out: &mut StatsSnapshot) {
        for v in self.vifs {
            let _ = out.vifs.push(*v);
        }
        let t = self.nat.table().stats();
        let c = self.nat.counters();
        out.nat = NatStats {
            flows_active: self.nat.table().len() as u64,
            flows_capacity: self.nat.table().capacity() as u64,
            flows_created: t.created,
            flows_expired: t.expired,
            flows_removed: t.removed,
            refused_full: c.dropped(DropReason::TableFull),
            refused_no_port: c.dropped(DropReason::NoPort),
            forwarded_out: c.outbound,
            forwarded_in: c.inbound,
            dropped: c.dropped_total(),
        };
    }
}

/// The API plus the per-connection request readers.
pub struct ApiService {
    api: Api<'static>,
    reader: Box<RequestReader>,
}

impl ApiService {
    pub fn new(config: &'static Config) -> ApiService {
        let storage: &'static mut [Rule] = Box::leak(vec![Rule::EMPTY; config.rules as usize].into_boxed_slice());
        ApiService { api: Api::new(&ApiConfig::from_config(config), storage), reader: Box::new(RequestReader::new()) }
    }

    pub fn expire(&mut self, gw: &mut NatGateway<'_>) {
        self.api.expire(clock::uptime_ns(), gw);
    }

    pub fn with<'s, 'g>(&'s mut self, gw: NatGateway<'g>) -> Serving<'s, 'g> {
        Serving { svc: self, gw }
    }
}

fn now() -> Now {
    let mono_ns = clock::uptime_ns();
    let unix = shared_info::wallclock_base_s() + clock::system_time_ns() / 1_000_000_000;
    Now { mono_ns, unix_s: auth::plausible_unix(unix) }
}

/// An `ApiService` lent the gateway for one poll.
pub struct Serving<'s, 'g> {
    svc: &'s mut ApiService,
    gw: NatGateway<'g>,
}

impl Service for Serving<'_, '_> {
    fn serve(&mut self, _now_ns: u64, request: &[u8], out: &mut [u8]) -> Option<usize> {
        // Requests are small and rare: re-read the connection's bytes so
        // far into a fresh reader instead of keeping one per connection.
        *self.svc.reader = RequestReader::new();
        match self.svc.reader.feed(request) {
            Progress::NeedMore => None,
            _ => Some(self.svc.api.respond(now(), &mut self.gw, &self.svc.reader, out)),
        }
    }
}

/// Counters of one vif for `GET /stats`.
pub fn vif_stats(devid: u32, role: Role, k: &pih_drivers::netfront::VifCounters) -> VifStats {
    VifStats {
        devid,
        role,
        rx_packets: k.rx_packets,
        rx_bytes: k.rx_bytes,
        rx_drops: k.rx_drops,
        tx_packets: k.tx_packets,
        tx_bytes: k.tx_bytes,
        tx_drops: k.tx_drops,
    }
}
