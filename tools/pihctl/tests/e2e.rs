//! pihctl against the real API code (`pih_control::api` with the mock
//! gateway) served over TCP on 127.0.0.1, as the kernel will serve it:
//! one request per connection through `http::RequestReader`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pih_control::api::mock::MockGateway;
use pih_control::api::{Api, ApiConfig, Now, RESPONSE_BUF};
use pih_control::auth;
use pih_control::http::{Progress, RequestReader};
use pih_control::rules::{Proto, Rule};
use serde_json::Value;

const KEY_HEX: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

struct Bridge {
    api: Api<'static>,
    gw: MockGateway,
    started: Instant,
}

/// Starts a server; returns its address and the shared state.
fn start(auth: bool, capacity: usize) -> (String, Arc<Mutex<Bridge>>) {
    let key: &'static [u8] = pihctl::parse_key(KEY_HEX, "test").unwrap().leak();
    let storage: &'static mut [Rule] = vec![Rule::EMPTY; capacity].leak();
    let cfg = ApiConfig {
        external: "10.0.0.2".parse().unwrap(),
        key: Some(key),
        auth,
    };
    let bridge = Arc::new(Mutex::new(Bridge {
        api: Api::new(&cfg, storage),
        gw: MockGateway::new(),
        started: Instant::now(),
    }));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let shared = Arc::clone(&bridge);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || serve(conn, &shared));
        }
    });
    (addr, bridge)
}

fn serve(mut conn: TcpStream, bridge: &Mutex<Bridge>) {
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut reader = Box::new(RequestReader::new());
    let mut buf = [0u8; 512];
    loop {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => {
                reader.end_of_input();
                break;
            }
            Ok(n) => {
                if reader.feed(&buf[..n]) == Progress::Ready {
                    break;
                }
            }
        }
    }
    let mut out = vec![0u8; RESPONSE_BUF];
    let n = {
        let mut b = bridge.lock().unwrap();
        let now = Now {
            mono_ns: b.started.elapsed().as_nanos() as u64 + 3_600_000_000_000,
            unix_s: auth::plausible_unix(
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap()
                    .as_secs(),
            ),
        };
        let Bridge { api, gw, .. } = &mut *b;
        api.respond(now, gw, &reader, &mut out)
    };
    let _ = conn.write_all(&out[..n]);
}

/// Runs pihctl in-process; returns (exit code, stdout, stderr).
fn pihctl(addr: &str, key: Option<&str>, args: &str) -> (i32, String, String) {
    let mut argv = vec!["--bridge".to_string(), addr.to_string()];
    if let Some(k) = key {
        argv.push("--key".into());
        argv.push(k.into());
    }
    argv.extend(args.split_whitespace().map(String::from));
    let mut out = Vec::new();
    let mut err = Vec::new();
    let code = pihctl::run(&argv, &|_| None, &mut out, &mut err);
    (
        code,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

#[test]
fn operator_session() {
    let (addr, bridge) = start(true, 64);
    let k = Some(KEY_HEX);

    let (code, out, err) = pihctl(&addr, k, "health");
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("ok: pih-bridge 0.1.0, up 1h 0m"), "{out}");

    let (code, out, err) = pihctl(&addr, k, "insert 203.0.113.7 192.168.252.10:22");
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "rule 1: 203.0.113.7 -> 10.0.0.2:40000 -> 192.168.252.10:22 (tcp), not persisted yet\n"
    );
    // Idempotent, even within the same second (pihctl re-signs a replay).
    let (code, out2, _) = pihctl(&addr, k, "insert 203.0.113.7 192.168.252.10:22");
    assert_eq!((code, out2), (0, out));

    let (code, out, err) = pihctl(
        &addr,
        k,
        "--json insert 198.51.100.1 192.168.252.11:53 --proto udp --port 5353 --ttl 600",
    );
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"ip": "10.0.0.2", "port": 5353, "id": 2, "persisted": false})
    );
    {
        let b = bridge.lock().unwrap();
        let g = b.gw.get(Proto::Udp, 5353).unwrap();
        assert_eq!(g.spec.int_port, 53);
        assert_eq!(b.api.rules().len(), 2);
    }

    let (code, out, _) = pihctl(&addr, k, "list");
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        "ID  CLIENT        PROTO  PORT   INTERNAL           EXPIRES"
    );
    assert!(lines[1].starts_with("1   203.0.113.7   tcp    40000  192.168.252.10:22  never"));
    assert!(
        lines[2].starts_with("2   198.51.100.1  udp    5353   192.168.252.11:53  in 9m 59s")
            || lines[2].starts_with("2   198.51.100.1  udp    5353   192.168.252.11:53  in 10m 0s"),
        "{out}"
    );
    assert_eq!(lines[3], "2 rules");

    let (code, out, _) = pihctl(&addr, k, "--json list");
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["total"], 2);
    assert_eq!(v["rules"][1]["proto"], "udp");

    let (code, out, _) = pihctl(&addr, k, "stats");
    assert_eq!(code, 0);
    assert!(out.starts_with("VIF  ROLE  RX PACKETS"), "{out}");
    assert!(out.contains("\n2    mgmt  102"), "{out}");
    assert!(out.contains("rules     2 of 64\n"), "{out}");
    let (code, out, _) = pihctl(&addr, k, "--json stats");
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["rules"]["capacity"], 64);

    // Errors: exit 1 with the message and field.
    let (code, _, err) = pihctl(
        &addr,
        k,
        "insert 198.51.100.9 192.168.252.11:53 --proto udp --port 5353",
    );
    assert_eq!(code, 1);
    assert_eq!(
        err,
        "pihctl: 409 Conflict: external port busy (field: port)\n"
    );
    let (code, _, err) = pihctl(&addr, k, "insert 198.51.100.9 10.9.9.9:53");
    assert_eq!(code, 1);
    assert!(
        err.contains("400 Bad Request: not a host of the internal network (field: dst_ip)"),
        "{err}"
    );
    let (code, out, err) = pihctl(&addr, k, "--json rm 99");
    assert_eq!(code, 1);
    assert_eq!(out.trim(), r#"{"error":"no such rule"}"#);
    assert!(err.contains("404 Not Found: no such rule"), "{err}");

    // Removal.
    bridge.lock().unwrap().gw.flows_per_rule = 0;
    let (code, out, _) = pihctl(&addr, k, "remove 203.0.113.7 192.168.252.10:22");
    assert_eq!((code, out.as_str()), (0, "removed rule 1 (0 flows), not persisted yet\n"));
    let (code, _, err) = pihctl(&addr, k, "remove 203.0.113.7 192.168.252.10:22");
    assert_eq!(code, 1);
    assert!(err.contains("404"), "{err}");
    let (code, out, _) = pihctl(&addr, k, "rm 2");
    assert_eq!((code, out.as_str()), (0, "removed rule 2 (0 flows), not persisted yet\n"));
    let (code, out, _) = pihctl(&addr, k, "list");
    assert_eq!((code, out.as_str()), (0, "no rules\n"));
    assert!(bridge.lock().unwrap().gw.installed.is_empty());
}

#[test]
fn authentication_failures() {
    let (addr, bridge) = start(true, 8);
    // No key.
    let (code, _, err) = pihctl(&addr, None, "insert 203.0.113.7 192.168.252.10:22");
    assert_eq!(code, 1);
    assert!(
        err.contains("401 Unauthorized: authentication required (field: Authorization)"),
        "{err}"
    );
    assert!(err.contains("no key given"), "{err}");
    // Wrong key.
    let wrong = "ff".repeat(32);
    let (code, _, err) = pihctl(&addr, Some(&wrong), "list");
    assert_eq!(code, 1);
    assert!(err.contains("bad signature"), "{err}");
    assert!(bridge.lock().unwrap().gw.installed.is_empty());
}

#[test]
fn auth_off_bridge_takes_unsigned_requests() {
    let (addr, _bridge) = start(false, 8);
    let (code, out, err) = pihctl(&addr, None, "insert 203.0.113.7 192.168.252.10:22");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("10.0.0.2:40000"));
}

#[test]
fn paging_through_many_rules() {
    let (addr, bridge) = start(false, 600);
    {
        let mut b = bridge.lock().unwrap();
        b.gw.ports = 40000..=40999;
        let Bridge { api, gw, .. } = &mut *b;
        let mut out = vec![0u8; RESPONSE_BUF];
        for i in 0..600 {
            let body = format!(
                r#"{{"ip":"198.51.{}.{}","dst_ip":"192.168.252.10","dst_port":22}}"#,
                i / 200,
                1 + i % 200
            );
            let req = format!(
                "POST /insert HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            let n = api.handle_bytes(Now::default(), gw, req.as_bytes(), &mut out);
            assert!(out[..n].starts_with(b"HTTP/1.1 200 "));
        }
    }
    let (code, out, _) = pihctl(&addr, None, "--json list");
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).unwrap();
    let ids: Vec<u64> = v["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, (1..=600).collect::<Vec<_>>());
    let (code, out, _) = pihctl(&addr, None, "list");
    assert_eq!(code, 0);
    assert!(out.ends_with("\n600 rules\n"));
}

#[test]
fn connection_failures_exit_3() {
    // A port with nothing listening.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    drop(l);
    let (code, _, err) = pihctl(&addr, None, "health");
    assert_eq!(code, 3, "{err}");
    assert!(err.starts_with("pihctl: cannot connect to"), "{err}");
    // Something that is not the API.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        if let Ok((mut c, _)) = l.accept() {
            let mut buf = [0u8; 4096];
            let _ = c.read(&mut buf);
            let _ = c.write_all(b"SSH-2.0-OpenSSH_9.2\r\n");
            let _ = c.shutdown(std::net::Shutdown::Write);
            let _ = c.read(&mut buf);
        }
    });
    let (code, _, err) = pihctl(&addr, None, "--timeout 5 health");
    assert_eq!(code, 3);
    assert!(err.contains("unexpected answer"), "{err}");
}

#[test]
fn the_binary() {
    let (addr, _bridge) = start(true, 8);
    let bin = env!("CARGO_BIN_EXE_pihctl");
    let out = std::process::Command::new(bin)
        .args(["--json", "insert", "203.0.113.7", "192.168.252.10:22"])
        .env("PIH_BRIDGE", &addr)
        .env("PIH_KEY", KEY_HEX)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["port"], 40000);
    let out = std::process::Command::new(bin)
        .args(["insert", "203.0.113.7"])
        .env("PIH_BRIDGE", &addr)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage: pihctl insert"));
    let out = std::process::Command::new(bin)
        .arg("--help")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("usage: pihctl"));
}
