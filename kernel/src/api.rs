//! The management API wired to the data plane: `pih_control::api` over
//! the translation table, served by `mgmt`'s TCP server, with rule changes
//! persisted in Irmin through `pih_control::irmin`'s client (whose
//! exchanges `mgmt` carries).

use alloc::boxed::Box;
use alloc::vec;
use core::net::SocketAddrV4;

use pih_control::api::{
    Answer, Api, ApiConfig, ChangeLog, Gateway, NatStats, Now, Pending, PersistStatus, RuleChange, RuleError, StatsSnapshot,
    VifStats, NO_TICKET,
};
use pih_control::auth;
use pih_control::config::{Config, IrminEndpoint, Role};
use pih_control::http::{Progress, RequestReader};
use pih_control::irmin::client::{Event, Persister, Restored};
use pih_control::irmin::doc::id_from_path;
use pih_control::irmin::journal::Change;
use pih_control::rules::{Proto, Rule, RuleSpec};
use pih_nat::table::{Protocol, StaticError};
use pih_nat::translate::{DropReason, Nat};
use pih_xen::{clock, error, info, shared_info, warn};

use crate::mgmt::{Exchanged, Mgmt, Service};

/// Up to this many restored rules (and skipped documents, refused rules)
/// are logged one by one.
const RESTORE_LINES: usize = 32;
/// Changes that may wait for Irmin.
pub const JOURNAL_CAPACITY: usize = 1024;
/// How long an answer waits for its change to be committed while Irmin
/// is healthy; after that it says `"persisted": false`.
const ANSWER_WAIT_NS: u64 = 3_000_000_000;

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

    fn claim_port(&mut self, now_ns: u64, proto: Proto, ext_port: u16) -> usize {
        match self.nat.table_mut().evict_port(now_ns, protocol(proto), ext_port) {
            Ok(0) | Err(_) => 0,
            Ok(n) => {
                warn!("irmin: port {proto} {ext_port} of a restored rule was taken by a dynamic mapping: {n} flows dropped");
                n
            }
        }
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

/// Rule changes on their way to Irmin, or nowhere without `irmin=`.
pub struct Persistence {
    client: Option<(Persister, SocketAddrV4)>,
}

impl Persistence {
    fn new(endpoint: Option<&IrminEndpoint>, author: &str, rules: usize) -> Persistence {
        Persistence {
            client: endpoint.map(|e| {
                let mut p = Persister::new(e, author, JOURNAL_CAPACITY);
                p.set_list_max_body(pih_control::irmin::client::list_max_body(rules));
                (p, e.addr)
            }),
        }
    }

    fn healthy(&self) -> bool {
        self.client.as_ref().is_some_and(|(p, _)| p.status().state == "ok")
    }
}

impl ChangeLog for Persistence {
    fn has_room(&self, n: usize) -> bool {
        match &self.client {
            Some((p, _)) => p.room() >= n,
            None => true,
        }
    }

    fn record(&mut self, change: RuleChange<'_>) -> Option<u64> {
        let (p, _) = self.client.as_mut()?;
        let change = match change {
            RuleChange::Insert(r) => Change::insert(r),
            RuleChange::Update { before, after } => Change::update(before, after),
            RuleChange::Remove(r) => Change::remove(r),
        };
        match p.record(change) {
            Ok(seq) => Some(seq),
            Err(_) => {
                // has_room() said yes; the API checks it before every change.
                error!("irmin: journal full, a change will not be persisted");
                None
            }
        }
    }

    fn is_committed(&self, ticket: u64) -> bool {
        self.client.as_ref().is_some_and(|(p, _)| p.is_committed(ticket))
    }

    fn pending_for(&self, id: u32) -> Option<u64> {
        self.client.as_ref().and_then(|(p, _)| p.pending_for(id))
    }

    fn is_restoring(&self) -> bool {
        self.client.as_ref().is_some_and(|(p, _)| p.is_restoring())
    }

    fn status(&self) -> PersistStatus {
        match &self.client {
            Some((p, _)) => p.status(),
            None => PersistStatus { state: "off", ..PersistStatus::default() },
        }
    }
}

/// The API, its persistence and the request reader.
pub struct ApiService {
    api: Api<'static>,
    log: Persistence,
    prefix: &'static str,
    reader: Box<RequestReader>,
}

impl ApiService {
    pub fn new(config: &'static Config, author: &str) -> ApiService {
        let storage: &'static mut [Rule] = Box::leak(vec![Rule::EMPTY; config.rules as usize].into_boxed_slice());
        let log = Persistence::new(config.irmin.as_ref(), author, config.rules as usize);
        if let Some(e) = &config.irmin {
            info!("irmin: rules persisted at {} (branch {}, {}/rules/<id>); reading them back before the API serves", e.addr, e.branch, e.prefix);
        }
        let prefix = config.irmin.as_ref().map_or("", |e| e.prefix.as_str());
        ApiService { api: Api::new(&ApiConfig::from_config(config), storage), log, prefix, reader: Box::new(RequestReader::new()) }
    }

    pub fn expire(&mut self, gw: &mut NatGateway<'_>) {
        if !self.log.is_restoring() {
            self.api.expire_logged(clock::uptime_ns(), gw, &mut self.log);
        }
    }

    /// Moves the conversation with Irmin on: takes the outcome of the last
    /// exchange, reinstalls the rules once they are read back, starts the
    /// next exchange when one is due.
    pub fn persist(&mut self, now_ns: u64, mgmt: &mut Mgmt, gw: &mut NatGateway<'_>) {
        let Some((p, server)) = self.log.client.as_mut() else { return };
        let server = *server;
        if let Some(outcome) = mgmt.take_exchanged() {
            let event = match outcome {
                Exchanged::Reply { status, body } => p.on_reply(now_ns, status, &body),
                Exchanged::Failed(why) => p.on_transport_error(now_ns, why),
            };
            report(&event);
        }
        if let Some(restored) = p.take_restored() {
            self.reinstall(&restored, gw);
        }
        let Some((p, _)) = self.log.client.as_mut() else { return };
        if mgmt.client_idle() {
            if let Some(exchange) = p.poll(now_ns) {
                mgmt.start_exchange(now_ns, server, exchange.request, exchange.max_body);
            }
        }
    }

    /// Puts the rules read back from Irmin into the table and the API,
    /// and says so on the console (one line each for a handful).
    fn reinstall(&mut self, restored: &Restored, gw: &mut NatGateway<'_>) {
        for (path, why) in restored.invalid.iter().take(RESTORE_LINES) {
            warn!("irmin: skipped {path}: {why}");
        }
        if let Some(more) = restored.invalid.len().checked_sub(RESTORE_LINES).filter(|&n| n > 0) {
            warn!("irmin: {more} more documents skipped (not listed)");
        }
        let many = restored.rules.len() > RESTORE_LINES;
        let (mut ok, mut refused) = (0usize, 0usize);
        // Ids whose documents stay in the store (invalid, or refused and
        // being removed) are not given to new rules.
        let mut highest_kept = restored.invalid.iter().filter_map(|(path, _)| id_from_path(self.prefix, path)).max();
        self.api.restore_all(now(), gw, &mut self.log, &restored.rules, |rule, outcome| match outcome {
            Ok(()) => {
                ok += 1;
                if !many {
                    info!("irmin: restored rule {}: {} {} -> port {} -> {}:{}", rule.id, rule.spec.proto,
                        rule.spec.client, rule.ext_port, rule.spec.int_addr, rule.spec.int_port);
                }
            }
            Err(e) => {
                refused += 1;
                if refused <= RESTORE_LINES {
                    warn!("irmin: rule {} not restored: {e}", rule.id);
                }
                highest_kept = highest_kept.max(Some(rule.id));
            }
        });
        if let Some(id) = highest_kept {
            self.api.skip_ids_through(id);
        }
        info!("irmin: {ok} rules restored, {} documents skipped, {refused} not reinstalled; API serving ({} ms after boot)",
            restored.invalid.len(), clock::uptime_ns() / 1_000_000);
    }

    /// Rule changes waiting for Irmin.
    pub fn persistence_backlog(&self) -> u64 {
        self.log.status().backlog
    }

    /// One line for the periodic report.
    pub fn report(&self) {
        let st = self.log.status();
        if st.state != "off" {
            info!("irmin: {}, backlog {} of {}, {} committed, {} failed attempts, {} conflicts",
                st.state, st.backlog, st.capacity, st.committed, st.failures, st.conflicts);
        }
    }

    pub fn with<'s, 'g>(&'s mut self, gw: NatGateway<'g>) -> Serving<'s, 'g> {
        Serving { svc: self, gw }
    }
}

fn report(event: &Event) {
    match event {
        Event::Committed { .. } | Event::Nothing | Event::Restored { .. } => pih_xen::debug!("irmin: {event}"),
        _ => warn!("irmin: {event}"),
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
    fn serve(&mut self, _now_ns: u64, request: &[u8], out: &mut [u8]) -> Option<Answer> {
        // Requests are small and rare: re-read the connection's bytes so
        // far into a fresh reader instead of keeping one per connection.
        *self.svc.reader = RequestReader::new();
        match self.svc.reader.feed(request) {
            Progress::NeedMore => None,
            _ => {
                let svc = &mut *self.svc;
                Some(svc.api.answer(now(), &mut self.gw, &mut svc.log, svc.reader.outcome(), out))
            }
        }
    }

    fn resolve(&mut self, now_ns: u64, pending: &Pending, since_ns: u64, out: &mut [u8]) -> Option<usize> {
        let log = &self.svc.log;
        if pending.ticket != NO_TICKET && log.is_committed(pending.ticket) {
            return Some(self.svc.api.finish(pending, true, out));
        }
        // Waiting helps only while Irmin answers; during an outage the
        // change stays in the journal and the answer says so at once.
        let waiting = pending.ticket != NO_TICKET && log.healthy() && now_ns.saturating_sub(since_ns) < ANSWER_WAIT_NS;
        (!waiting).then(|| self.svc.api.finish(pending, false, out))
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
