//! What the toolstack sees of the domain's life: vif discovery in the
//! banner, and `xl shutdown` / `xl reboot` through `control/shutdown`
//! (xen/include/public/io/xenbus.h conventions, as Linux implements them).

use alloc::string::String;

use pih_boot::cpu;
use pih_control::config::{Config, Role};
use pih_xen::{clock, events, hvm, info, log, sched, warn};

use crate::net::{role_name, Net};
use crate::xenstore_env::Xs;

const SHUTDOWN_PATH: &str = "control/shutdown";
const SHUTDOWN_TOKEN: &str = "shutdown";
/// How often the loop wakes without events (housekeeping later).
const TICK_NS: u64 = 1_000_000_000;
/// How often the per-vif counters go to the log.
const REPORT_NS: u64 = 600_000_000_000;
/// How long a shutdown waits for the Irmin journal to drain.
const DRAIN_NS: u64 = 3_000_000_000;

/// Lists `device/vif/*` with the role each devid plays.
pub fn report_vifs(xs: &mut Xs, config: &Config) {
    let mut ids: alloc::vec::Vec<u32> = match xs.directory("device/vif") {
        Ok(v) => v.iter().filter_map(|s| s.parse().ok()).collect(),
        Err(e) if e.is_not_found() => alloc::vec::Vec::new(),
        Err(e) => {
            warn!("vifs: cannot list device/vif: {e}");
            return;
        }
    };
    ids.sort_unstable();
    let mut list = String::new();
    for id in &ids {
        let mac = xs.read(&alloc::format!("device/vif/{id}/mac")).unwrap_or_default();
        let role = config.roles.role_of(*id).map_or("unused", role_name);
        if !list.is_empty() {
            list.push_str(", ");
        }
        list.push_str(&alloc::format!("{id} ({role}, mac {mac})"));
    }
    info!("vifs: {} found: {}", ids.len(), if list.is_empty() { "none" } else { list.as_str() });
    for role in [Role::External, Role::Internal, Role::Management] {
        let devid = config.roles.devid(role);
        if !ids.contains(&devid) {
            warn!("vifs: no vif {devid} for the {} role", role_name(role));
        }
    }
}

/// Tells the toolstack we handle `control/shutdown`, then serves events
/// until asked to stop.
pub fn run(mut xs: Xs, mut net: Net) -> ! {
    // libxl offers xenstore-based shutdown to an HVM-style guest only once
    // it has registered an event callback (libxl__domain_pvcontrol_available).
    if let Err(e) = hvm::set_callback_vector(cpu::EVENT_VECTOR) {
        warn!("lifecycle: cannot set the event callback: {e}; xl shutdown will not reach us");
    }
    for feature in ["control/feature-poweroff", "control/feature-reboot"] {
        if let Err(e) = xs.write(feature, "1") {
            warn!("lifecycle: cannot write {feature}: {e}");
        }
    }
    if let Err(e) = xs.watch(SHUTDOWN_PATH, SHUTDOWN_TOKEN) {
        warn!("lifecycle: cannot watch {SHUTDOWN_PATH}: {e}");
    }
    let xs_port = xs.env().port();
    net.start(&mut xs);
    let (used, size) = crate::heap::stats();
    info!("ready (boot took {} ms, heap {} of {} KiB used)", clock::uptime_ns() / 1_000_000, used >> 10, size >> 10);

    let mut next_report = clock::uptime_ns() + REPORT_NS;
    loop {
        poll_or_wait(&mut net, xs_port, TICK_NS);
        if events::take_pending(xs_port) {
            if let Err(e) = xs.pump() {
                warn!("xenstore: {e}");
            }
        }
        while let Some(ev) = xs.poll_watch() {
            if ev.token == SHUTDOWN_TOKEN {
                handle_shutdown_request(&mut xs, &mut net, xs_port);
            } else {
                net.on_watch(&mut xs, &ev.token);
            }
        }
        if clock::uptime_ns() >= next_report {
            next_report = clock::uptime_ns() + REPORT_NS;
            net.report();
        }
    }
}

fn handle_shutdown_request(xs: &mut Xs, net: &mut Net, xs_port: events::Port) {
    let request = match xs.read(SHUTDOWN_PATH) {
        Ok(v) => v,
        Err(e) if e.is_not_found() => return,
        Err(e) => {
            warn!("lifecycle: cannot read {SHUTDOWN_PATH}: {e}");
            return;
        }
    };
    let reason = match request.as_str() {
        "" => return,
        "poweroff" | "halt" => sched::ShutdownReason::Poweroff,
        "reboot" => sched::ShutdownReason::Reboot,
        other => {
            warn!("lifecycle: shutdown request {other:?} not supported; ignored");
            return;
        }
    };
    // Clearing the node acknowledges the request to the toolstack.
    if let Err(e) = xs.write(SHUTDOWN_PATH, "") {
        warn!("lifecycle: cannot acknowledge {SHUTDOWN_PATH}: {e}");
    }
    let what = if reason == sched::ShutdownReason::Reboot { "reboot" } else { "poweroff" };
    info!("shutdown: {what} requested by the toolstack");
    drain_journal(net, xs_port, what);
    net.report();
    log::flush();
    sched::shutdown(reason)
}

/// One round of the network; if it left nothing to do, sleeps until an
/// event channel (xenstore's or a vif's) fires or `timeout_ns` passes.
fn poll_or_wait(net: &mut Net, xs_port: events::Port, timeout_ns: u64) {
    if !net.poll(clock::uptime_ns()) {
        let mut ports: heapless::Vec<events::Port, 8> = heapless::Vec::new();
        let _ = ports.push(xs_port);
        net.ports(&mut ports);
        let _ = events::poll(&ports, clock::system_time_ns() + timeout_ns);
    }
}

/// Gives rule changes still waiting for Irmin a short chance to be
/// committed before the domain goes (the journal lives in memory).
fn drain_journal(net: &mut Net, xs_port: events::Port, what: &str) {
    let backlog = net.persistence_backlog();
    if backlog == 0 {
        return;
    }
    info!("shutdown: {backlog} rule changes waiting for Irmin; up to {} ms to commit them", DRAIN_NS / 1_000_000);
    let deadline = clock::uptime_ns() + DRAIN_NS;
    while net.persistence_backlog() > 0 && clock::uptime_ns() < deadline {
        poll_or_wait(net, xs_port, 20_000_000);
    }
    let left = net.persistence_backlog();
    if left > 0 {
        warn!("shutdown: {left} rule changes not committed to Irmin are lost with this {what}");
    }
}
