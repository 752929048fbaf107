//! pih-bridge: a NAT-like bridge unikernel for Xen PVH.
//!
//! Boot order: CPU tables, early log on port 0xe9, start info, Xen
//! detection and hypercall page, page tables, heap, shared info and clock,
//! PV console, xenstore, configuration, banner; then the event loop.
#![no_std]
#![no_main]

extern crate alloc;

mod api;
mod heap;
mod lifecycle;
mod mgmt;
mod net;
mod xenstore_env;

use pih_boot::{cpu, layout, paging};
use pih_control::config::{Config, LogLevel, Role};
use pih_drivers::console::XenConsole;
use pih_xen::start_info::BootInfo;
use pih_xen::{arch, clock, error, info, log, sched, shared_info, warn};

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

struct Debugcon;

impl log::Sink for Debugcon {
    fn write(&self, bytes: &[u8]) {
        arch::debugcon_write(bytes);
    }
}

static DEBUGCON: Debugcon = Debugcon;
static CONSOLE: XenConsole = XenConsole::new();

fn crash() -> ! {
    log::flush();
    sched::shutdown(sched::ShutdownReason::Crash)
}

/// Prints `why` and powers the domain off: never run half-configured.
fn power_off_with(why: core::fmt::Arguments<'_>) -> ! {
    error!("{}", why);
    error!("shutdown: poweroff (cannot run)");
    log::flush();
    sched::shutdown(sched::ShutdownReason::Poweroff)
}

#[no_mangle]
pub extern "C" fn pih_main(start_info_paddr: u64) -> ! {
    cpu::init();
    log::add_sink(&DEBUGCON);

    // SAFETY: this is the address Xen (or QEMU's PVH loader) passed in %ebx;
    // nothing has been allocated over it yet.
    let boot = match unsafe { BootInfo::from_phys(start_info_paddr) } {
        Ok(b) => b,
        Err(e) => {
            error!("boot: {e}");
            cpu::halt();
        }
    };
    let Some(xen) = arch::detect_xen() else {
        error!("pih-bridge {VERSION}: Xen not detected (no XenVMMXenVMM CPUID leaves); this kernel runs only as a Xen PVH guest. Halting.");
        cpu::halt();
    };
    arch::init_hypercall_page(&xen);
    cpu::set_fatal_hook(crash);

    match paging::init(&boot.ram) {
        Ok(0) => {}
        Ok(above) => warn!("paging: {} MiB of RAM above 4 GiB left unmapped", above >> 20),
        Err(e) => power_off_with(format_args!("paging: {e}")),
    }
    let Some(heap) = heap::init(&boot.ram, layout::kernel_end()) else {
        power_off_with(format_args!("heap: no free RAM above the kernel image"));
    };
    if let Err(e) = shared_info::map() {
        power_off_with(format_args!("shared info: cannot map: {e}"));
    }
    clock::init();
    log::set_clock(clock::uptime_ns);

    match CONSOLE.init() {
        Ok(()) => {
            log::add_sink(&CONSOLE);
            // From here on the PV console carries the log; port 0xe9 would
            // only fill Xen's own console ring.
            log::remove_sink(&DEBUGCON);
        }
        Err(e) => warn!("console: {e}; logging to port 0xe9 only"),
    }

    let mut xs = match xenstore_env::connect() {
        Ok(xs) => xs,
        Err(e) => power_off_with(format_args!("xenstore: {e}")),
    };

    let cmdline = match (boot.cmdline(), boot.cmdline_truncated) {
        (_, true) => power_off_with(format_args!("config: command line longer than {} bytes", pih_xen::start_info::MAX_CMDLINE)),
        (None, _) => power_off_with(format_args!("config: command line is not valid UTF-8")),
        (Some(c), false) => c,
    };
    let config: &'static Config = match Config::parse(cmdline) {
        Ok(c) => alloc::boxed::Box::leak(alloc::boxed::Box::new(c)),
        Err(e) => power_off_with(format_args!("{e}")),
    };
    log::set_level(match config.log_level {
        LogLevel::Error => log::Level::Error,
        LogLevel::Warn => log::Level::Warn,
        LogLevel::Info => log::Level::Info,
        LogLevel::Debug => log::Level::Debug,
    });

    let domid = xs.read("domid").ok().and_then(|s| s.trim().parse::<u32>().ok());
    let name = xs.read("name").unwrap_or_default();
    let (major, minor) = xen.version;
    info!(
        "pih-bridge {VERSION} on Xen {major}.{minor} domid={} name={} memory={}MiB heap={}KiB",
        domid.map_or(alloc::string::String::from("?"), |d| alloc::format!("{d}")),
        if name.is_empty() { "?" } else { name.as_str() },
        boot.ram_bytes() >> 20,
        heap.len() >> 10,
    );
    print_config(config);
    lifecycle::report_vifs(&mut xs, config);

    let gnt = match pih_xen::grant_table::init() {
        Ok(g) => g,
        Err(e) => power_off_with(format_args!("grant table: cannot set up: {e}")),
    };
    let author = if name.is_empty() { "pih-bridge" } else { name.as_str() };
    let net = match net::Net::new(gnt, config, author) {
        Ok(n) => n,
        Err(e) => power_off_with(format_args!("nat: {e}")),
    };
    lifecycle::run(xs, net)
}

fn print_config(c: &Config) {
    let r = &c.roles;
    info!("config: ext={} gw={} vif={}", c.ext, c.gw, r.devid(Role::External));
    info!("config: int={} vif={}", c.int, r.devid(Role::Internal));
    info!("config: mgmt={} port={} vif={}", c.mgmt, c.port, r.devid(Role::Management));
    match &c.irmin {
        Some(i) => info!("config: irmin={i}"),
        None => info!("config: irmin=none (rules in memory only)"),
    }
    match (&c.key, c.auth) {
        (Some(k), auth) => info!("config: auth={} key=<set, {} bytes>", if auth { "on" } else { "off" }, k.len()),
        (None, _) => info!("config: auth=off key=<unset>"),
    }
    info!("config: flows={} rules={} loglvl={}", c.flows, c.rules, c.log_level);
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    error!("panic: {info}");
    cpu::fatal()
}
