//! flowgen: the traffic generator of the Xen-in-QEMU NAT scenarios
//! (tests/xen/scenarios/snat-*.sh, unsolicited, many-flows, table-full).
//!
//! Servers tell each client the address they saw it as, so a scenario can
//! check that a server behind the bridge saw only the bridge's external
//! address; clients classify every failure as refused (RST), timeout (no
//! answer) or failed (anything else), so a scenario can tell a silent drop
//! from a rejection. The protocols are in [`proto`], the command line in
//! [`args`] (`flowgen --help`).

pub mod args;
pub mod proto;
pub mod sys;
pub mod tcp;
pub mod udp;

use std::io::Write;
use std::net::{TcpListener, UdpSocket};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use args::Command;

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Runs the command line (without the program name); returns the exit
/// status: 0 success, 1 the check failed, 2 usage, 3 setup error.
pub fn run(argv: &[String]) -> i32 {
    let cmd = match args::parse(argv) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("flowgen: {e}\n(flowgen --help lists the commands)");
            return 2;
        }
    };
    let never = AtomicBool::new(false);
    match cmd {
        Command::Help => {
            print!("{}", args::USAGE);
            0
        }
        Command::TcpServer(o) => {
            sys::raise_nofile(65_536);
            let l = match TcpListener::bind(o.listen) {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("flowgen tcp-server: bind {}: {e}", o.listen);
                    return 3;
                }
            };
            say(&format!(
                "listening on {}",
                l.local_addr().map(|a| a.to_string()).unwrap_or_default()
            ));
            match tcp::serve(l, o.reply, Duration::from_millis(o.idle_ms), &never, say) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("flowgen tcp-server: {e}");
                    3
                }
            }
        }
        Command::TcpClients(o) => {
            let have = sys::raise_nofile(o.concurrency + 64);
            if have < o.concurrency + 16 && !o.quiet {
                say(&format!(
                    "warning: open-file limit {have} is below the concurrency {}",
                    o.concurrency
                ));
            }
            let s = tcp::run_clients(&o, say);
            if !o.quiet {
                for (msg, n) in s.errors.iter().take(10) {
                    say(&format!("error: {n}x {msg}"));
                }
                if s.errors.len() > 10 {
                    say(&format!("error: ... {} more kinds", s.errors.len() - 10));
                }
                if o.rounds > 1 {
                    say(&format!("first round: {}", s.first_round));
                }
            }
            say(&s.line());
            if s.passed(o.expect_ok) {
                0
            } else {
                1
            }
        }
        Command::UdpEcho(o) => {
            let sock = match UdpSocket::bind(o.listen) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("flowgen udp-echo: bind {}: {e}", o.listen);
                    return 3;
                }
            };
            say(&format!(
                "listening on {}",
                sock.local_addr().map(|a| a.to_string()).unwrap_or_default()
            ));
            match udp::echo(sock, &never, say) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("flowgen udp-echo: {e}");
                    3
                }
            }
        }
        Command::UdpPing(o) => match udp::ping(&o) {
            Ok(s) => {
                say(&s.line());
                if s.passed(o.count, o.expect_ok) {
                    0
                } else {
                    1
                }
            }
            Err(e) => {
                eprintln!("flowgen udp-ping: {e}");
                3
            }
        },
    }
}
