use std::string::{String, ToString};
use std::vec::Vec as StdVec;
use std::{format, vec};

use serde_json::{json, Value};

use super::mock::MockGateway;
use super::*;
use crate::auth::authorization;
use crate::http::{Progress, MAX_BODY};

const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";
const UNIX: u64 = 1_700_000_000;
const EXT: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

fn now_at(s: u64) -> Now {
    Now {
        mono_ns: s * NS_PER_SEC,
        unix_s: Some(UNIX + s),
    }
}

/// An API with its storage, the mock gateway and a clock.
struct Bed {
    api: Api<'static>,
    gw: MockGateway,
    now: Now,
    auth: bool,
}

impl Bed {
    fn new(capacity: usize, auth: bool) -> Bed {
        let storage: &'static mut [Rule] = vec![Rule::EMPTY; capacity].leak();
        let cfg = ApiConfig {
            external: EXT,
            key: Some(KEY),
            auth,
        };
        Bed {
            api: Api::new(&cfg, storage),
            gw: MockGateway::new(),
            now: now_at(100),
            auth,
        }
    }

    fn raw(&mut self, bytes: &[u8]) -> Resp {
        let mut out = vec![0u8; RESPONSE_BUF];
        let n = self
            .api
            .handle_bytes(self.now, &mut self.gw, bytes, &mut out);
        Resp::parse(&out[..n])
    }

    fn request_bytes(&self, method: &str, target: &str, body: &str) -> StdVec<u8> {
        let mut head = format!("{method} {target} HTTP/1.1\r\nHost: bridge\r\n");
        if self.auth {
            let ts = self.now.unix_s.unwrap();
            let a = authorization(KEY, method, target, ts, body.as_bytes());
            head.push_str(&format!("Authorization: {a}\r\n"));
        }
        if !body.is_empty() {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        let mut v = head.into_bytes();
        v.extend_from_slice(body.as_bytes());
        v
    }

    /// A request, signed if authentication is on. Identical signed
    /// requests within one second are replays: the wall clock moves on by
    /// a second after each.
    fn call(&mut self, method: &str, target: &str, body: &str) -> Resp {
        let bytes = self.request_bytes(method, target, body);
        let r = self.raw(&bytes);
        self.now.unix_s = self.now.unix_s.map(|u| u + 1);
        r
    }

    fn insert(&mut self, body: Value) -> Resp {
        self.call("POST", "/insert", &body.to_string())
    }

    fn remove(&mut self, body: Value) -> Resp {
        self.call("POST", "/remove", &body.to_string())
    }

    /// Advances both clocks.
    fn tick(&mut self, s: u64) {
        self.now.mono_ns += s * NS_PER_SEC;
        self.now.unix_s = self.now.unix_s.map(|u| u + s);
    }
}

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: StdVec<(String, String)>,
    body: Value,
}

impl Resp {
    fn parse(bytes: &[u8]) -> Resp {
        let text = std::str::from_utf8(bytes).expect("utf-8 response");
        let (head, body) = text.split_once("\r\n\r\n").expect("head");
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap();
        assert!(status_line.starts_with("HTTP/1.1 "), "{status_line}");
        let status = status_line[9..12].parse().unwrap();
        let headers: StdVec<(String, String)> = lines
            .map(|l| {
                let (k, v) = l.split_once(": ").unwrap();
                (k.to_string(), v.to_string())
            })
            .collect();
        let r = Resp {
            status,
            headers,
            body: serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body:?}")),
        };
        assert_eq!(r.header("Content-Length").unwrap(), body.len().to_string());
        assert_eq!(r.header("Content-Type"), Some("application/json"));
        assert_eq!(r.header("Connection"), Some("close"));
        assert_eq!(r.header("X-Pih-Api"), Some("1"));
        if status != 200 {
            assert!(r.body["error"].is_string(), "{body}");
        }
        r
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn error(&self) -> (&str, Option<&str>) {
        (
            self.body["error"].as_str().unwrap(),
            self.body.get("field").and_then(Value::as_str),
        )
    }
}

fn rule(c: &str, i: &str, p: u16) -> Value {
    json!({"ip": c, "dst_ip": i, "dst_port": p})
}

// -- insert -------------------------------------------------------------

#[test]
fn insert_answers_external_address_port_and_id() {
    let mut b = Bed::new(16, true);
    let r = b.insert(rule("203.0.113.7", "192.168.252.10", 22));
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body, json!({"ip": "10.0.0.2", "port": 40000, "id": 1, "persisted": false}));
    let g = b.gw.get(Proto::Tcp, 40000).unwrap();
    assert_eq!(g.spec.client, Ipv4Addr::new(203, 0, 113, 7));
    assert_eq!(g.spec.int_port, 22);
    assert_eq!(b.api.rules().len(), 1);
}

#[test]
fn insert_is_idempotent() {
    let mut b = Bed::new(16, true);
    let first = b.insert(rule("203.0.113.7", "192.168.252.10", 22));
    b.tick(1);
    let again = b.insert(rule("203.0.113.7", "192.168.252.10", 22));
    assert_eq!(again.status, 200);
    assert_eq!(first.body, again.body);
    assert_eq!(b.gw.inserts, 1);
    assert_eq!(b.api.rules().len(), 1);
    // Asking for its own port is fine; for another one, a conflict.
    let mut with_port = rule("203.0.113.7", "192.168.252.10", 22);
    with_port["port"] = json!(40000);
    assert_eq!(b.insert(with_port.clone()).status, 200);
    with_port["port"] = json!(40500);
    let r = b.insert(with_port);
    assert_eq!(r.status, 409);
    assert_eq!(r.error().1, Some("port"));
    // Another client, protocol or endpoint: another rule.
    let r = b.insert(rule("203.0.113.8", "192.168.252.10", 22));
    assert_eq!(r.body["port"], 40001);
    let mut udp = rule("203.0.113.7", "192.168.252.10", 22);
    udp["proto"] = json!("udp");
    let r = b.insert(udp);
    assert_eq!(r.body["port"], 40000);
    assert_eq!(r.body["id"], 3);
    assert_eq!(b.api.rules().len(), 3);
}

#[test]
fn requested_port() {
    let mut b = Bed::new(16, true);
    let mut r1 = rule("203.0.113.7", "192.168.252.10", 22);
    r1["port"] = json!(50022);
    let r = b.insert(r1);
    assert_eq!((r.status, r.body["port"].as_u64()), (200, Some(50022)));
    // Taken by another rule.
    let mut r2 = rule("203.0.113.8", "192.168.252.10", 22);
    r2["port"] = json!(50022);
    let r = b.insert(r2.clone());
    assert_eq!(r.status, 409);
    assert_eq!(r.error(), ("external port busy", Some("port")));
    // Busy in the data plane (a dynamic mapping).
    b.gw.busy.push((Proto::Tcp, 50023)).unwrap();
    r2["port"] = json!(50023);
    let r = b.insert(r2.clone());
    assert_eq!(r.status, 409);
    assert_eq!(r.error().1, Some("port"));
    // Same port, other protocol: fine.
    r2["port"] = json!(50022);
    r2["proto"] = json!("udp");
    assert_eq!(b.insert(r2).status, 200);
    assert_eq!(b.api.rules().len(), 2);
    assert_eq!(b.gw.installed.len(), 2);
}

#[test]
fn full_and_no_port_are_503_and_change_nothing() {
    let mut b = Bed::new(2, true);
    assert_eq!(b.insert(rule("1.1.1.1", "192.168.252.10", 1)).status, 200);
    assert_eq!(b.insert(rule("1.1.1.2", "192.168.252.10", 1)).status, 200);
    let r = b.insert(rule("1.1.1.3", "192.168.252.10", 1));
    assert_eq!(r.status, 503);
    assert_eq!(r.error(), ("rule table full", None));
    assert_eq!(b.gw.installed.len(), 2);
    // The same rule again still works when full.
    assert_eq!(b.insert(rule("1.1.1.2", "192.168.252.10", 1)).status, 200);

    let mut b = Bed::new(16, true);
    b.gw.capacity = 1;
    assert_eq!(b.insert(rule("1.1.1.1", "192.168.252.10", 1)).status, 200);
    let r = b.insert(rule("1.1.1.2", "192.168.252.10", 1));
    assert_eq!((r.status, r.error().0), (503, "rule table full"));
    assert_eq!(b.api.rules().len(), 1);

    let mut b = Bed::new(16, true);
    b.gw.ports = 40000..=40001;
    assert_eq!(b.insert(rule("1.1.1.1", "192.168.252.10", 1)).status, 200);
    assert_eq!(b.insert(rule("1.1.1.2", "192.168.252.10", 1)).status, 200);
    let r = b.insert(rule("1.1.1.3", "192.168.252.10", 1));
    assert_eq!((r.status, r.error().0), (503, "no external port available"));
    assert_eq!(b.api.rules().len(), 2);
}

#[test]
fn insert_field_errors() {
    let mut b = Bed::new(16, true);
    let cases = [
        (json!({"dst_ip": "192.168.252.10", "dst_port": 22}), "ip"),
        (json!({"ip": "1.2.3.4", "dst_port": 22}), "dst_ip"),
        (
            json!({"ip": "1.2.3.4", "dst_ip": "192.168.252.10"}),
            "dst_port",
        ),
        (
            json!({"ip": "1.2.3", "dst_ip": "192.168.252.10", "dst_port": 22}),
            "ip",
        ),
        (
            json!({"ip": "1.2.3.4", "dst_ip": "192.168.252.10", "dst_port": 70000}),
            "dst_port",
        ),
        (
            json!({"ip": "1.2.3.4", "dst_ip": "192.168.252.10", "dst_port": 22, "proto": "sctp"}),
            "proto",
        ),
        (
            json!({"ip": "1.2.3.4", "dst_ip": "192.168.252.10", "dst_port": 22, "ttl": -5}),
            "ttl",
        ),
        (
            json!({"ip": "1.2.3.4", "dst_ip": "192.168.252.10", "dst_port": 22, "extra": 1}),
            "extra",
        ),
        // Semantic checks.
        (
            json!({"ip": "224.0.0.1", "dst_ip": "192.168.252.10", "dst_port": 22}),
            "ip",
        ),
        (
            json!({"ip": "0.0.0.0", "dst_ip": "192.168.252.10", "dst_port": 22}),
            "ip",
        ),
        (
            json!({"ip": "1.2.3.4", "dst_ip": "255.255.255.255", "dst_port": 22}),
            "dst_ip",
        ),
        (
            json!({"ip": "1.2.3.4", "dst_ip": "10.9.9.9", "dst_port": 22}),
            "dst_ip",
        ),
        (
            json!({"ip": "1.2.3.4", "dst_ip": "192.168.252.255", "dst_port": 22}),
            "dst_ip",
        ),
    ];
    for (body, field) in cases {
        let r = b.insert(body.clone());
        assert_eq!(r.status, 400, "{body}");
        assert_eq!(r.error().1, Some(field), "{body} -> {:?}", r.body);
    }
    for body in ["", "{", "[1,2]", "null", "{\"ip\":\"1.2.3.4\",}", "\u{0}"] {
        let r = b.call("POST", "/insert", body);
        assert_eq!(r.status, 400, "{body:?}");
        assert_eq!(r.error().1, None);
    }
    assert!(b.api.rules().is_empty());
    assert!(b.gw.installed.is_empty());
}

// -- remove -------------------------------------------------------------

#[test]
fn remove_by_endpoint() {
    let mut b = Bed::new(16, true);
    b.gw.flows_per_rule = 3;
    b.insert(rule("203.0.113.7", "192.168.252.10", 22));
    let mut udp = rule("203.0.113.7", "192.168.252.10", 22);
    udp["proto"] = json!("udp");
    b.insert(udp);
    let body = json!({"src_ip": "203.0.113.7", "dst_ip": "192.168.252.10", "dst_port": 22});
    let r = b.remove(body.clone());
    assert_eq!(r.status, 200);
    assert_eq!(r.body, json!({"removed": true, "id": 1, "flows": 3, "persisted": false}));
    assert!(b.gw.get(Proto::Tcp, 40000).is_none());
    assert!(b.gw.get(Proto::Udp, 40000).is_some());
    // Gone now.
    let r = b.remove(body);
    assert_eq!((r.status, r.error()), (404, ("no such rule", None)));
    // The udp one, named with "ip" this time.
    let r = b.remove(
        json!({"ip": "203.0.113.7", "dst_ip": "192.168.252.10", "dst_port": 22, "proto": "udp"}),
    );
    assert_eq!(r.status, 200);
    assert!(b.api.rules().is_empty());
    assert!(b.gw.installed.is_empty());
    // Field errors.
    let r = b.remove(json!({"src_ip": "203.0.113.7", "dst_port": 22}));
    assert_eq!((r.status, r.error().1), (400, Some("dst_ip")));
    let r = b.remove(
        json!({"src_ip": "203.0.113.7", "dst_ip": "192.168.252.10", "dst_port": 22, "port": 1}),
    );
    assert_eq!((r.status, r.error().1), (400, Some("port")));
}

#[test]
fn removal_refused_by_gateway_keeps_the_rule() {
    let mut b = Bed::new(16, true);
    b.insert(rule("203.0.113.7", "192.168.252.10", 22));
    b.gw.fail_remove = Some(RuleError::Unsupported);
    let r = b.call("DELETE", "/rules/1", "");
    assert_eq!(r.status, 500);
    assert_eq!(b.api.rules().len(), 1);
    // A gateway that no longer has it: the store forgets it too.
    b.gw.fail_remove = Some(RuleError::NotFound);
    let r = b.call("DELETE", "/rules/1", "");
    assert_eq!(r.status, 200);
    assert_eq!(r.body["flows"], 0);
    assert!(b.api.rules().is_empty());
}

#[test]
fn rules_by_id() {
    let mut b = Bed::new(16, true);
    b.insert(rule("203.0.113.7", "192.168.252.10", 22));
    let mut r2 = rule("203.0.113.8", "192.168.252.11", 80);
    r2["ttl"] = json!(60);
    b.insert(r2);
    let r = b.call("GET", "/rules/2", "");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.body,
        json!({"id": 2, "ip": "203.0.113.8", "dst_ip": "192.168.252.11", "dst_port": 80,
               "proto": "tcp", "port": 40001, "expires_in": 60})
    );
    assert_eq!(
        b.call("DELETE", "/rules/2", "").body,
        json!({"removed": true, "id": 2, "flows": 0, "persisted": false})
    );
    assert_eq!(b.call("DELETE", "/rules/2", "").status, 404);
    assert_eq!(b.call("GET", "/rules/2", "").status, 404);
    for bad in ["/rules/x", "/rules/-1", "/rules/99999999999", "/rules/"] {
        let r = b.call("DELETE", bad, "");
        assert_eq!((r.status, r.error().1), (400, Some("id")), "{bad}");
    }
    let r = b.call("POST", "/rules/1", "");
    assert_eq!(r.status, 405);
    assert_eq!(r.header("Allow"), Some("GET, DELETE"));
    assert_eq!(b.api.rules().len(), 1);
}

// -- listing ------------------------------------------------------------

#[test]
fn list_rules() {
    let mut b = Bed::new(16, true);
    let r = b.call("GET", "/rules", "");
    assert_eq!(
        r.body,
        json!({"total": 0, "offset": 0, "rules": [], "count": 0, "next_offset": null})
    );
    b.insert(rule("203.0.113.7", "192.168.252.10", 22));
    let mut r2 = rule("203.0.113.8", "192.168.252.11", 53);
    r2["proto"] = json!("udp");
    r2["ttl"] = json!(30);
    b.insert(r2);
    b.tick(10);
    let r = b.call("GET", "/rules", "");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.body,
        json!({"total": 2, "offset": 0, "count": 2, "next_offset": null, "rules": [
            {"id": 1, "ip": "203.0.113.7", "dst_ip": "192.168.252.10", "dst_port": 22,
             "proto": "tcp", "port": 40000, "expires_in": null},
            {"id": 2, "ip": "203.0.113.8", "dst_ip": "192.168.252.11", "dst_port": 53,
             "proto": "udp", "port": 40000, "expires_in": 20},
        ]})
    );
}

#[test]
fn list_paging() {
    let n = 1000;
    let mut b = Bed::new(n, false);
    for i in 0..n {
        let c = format!("198.51.{}.{}", i / 250, 1 + i % 250);
        assert_eq!(b.insert(rule(&c, "192.168.252.10", 22)).status, 200, "{i}");
    }
    // Explicit pages.
    let r = b.call("GET", "/rules?offset=10&limit=5", "");
    assert_eq!(r.body["count"], 5);
    assert_eq!(r.body["next_offset"], 15);
    assert_eq!(r.body["rules"][0]["id"], 11);
    let r = b.call("GET", "/rules?limit=5&offset=998", "");
    assert_eq!(r.body["count"], 2);
    assert_eq!(r.body["next_offset"], Value::Null);
    let r = b.call("GET", "/rules?offset=5000", "");
    assert_eq!(
        (r.body["count"].as_u64(), r.body["total"].as_u64()),
        (Some(0), Some(1000))
    );
    // Unbounded: as many as fit, then follow next_offset.
    let mut seen = StdVec::new();
    let mut offset = 0u64;
    let mut pages = 0;
    loop {
        let r = b.call("GET", &format!("/rules?offset={offset}"), "");
        assert_eq!(r.status, 200);
        pages += 1;
        for rule in r.body["rules"].as_array().unwrap() {
            seen.push(rule["id"].as_u64().unwrap());
        }
        match r.body["next_offset"].as_u64() {
            Some(next) => offset = next,
            None => break,
        }
    }
    assert!(pages > 1, "{pages}");
    assert_eq!(seen, (1..=n as u64).collect::<StdVec<_>>());
    // Bad parameters.
    for (q, field) in [
        ("offset=x", "offset"),
        ("limit=0", "limit"),
        ("limit=", "limit"),
        ("limit=-1", "limit"),
        ("page=2", "page"),
        ("offset=1&offset=2", "offset"),
    ] {
        let r = b.call("GET", &format!("/rules?{q}"), "");
        assert_eq!((r.status, r.error().1), (400, Some(field)), "{q}");
    }
}

#[test]
fn tiny_output_buffer() {
    let mut b = Bed::new(4, false);
    b.insert(rule("203.0.113.7", "192.168.252.10", 22));
    let req = b.request_bytes("GET", "/rules", "");
    let mut out = [0u8; BODY_OFFSET + 100];
    let n = b.api.handle_bytes(b.now, &mut b.gw, &req, &mut out);
    let r = Resp::parse(&out[..n]);
    assert_eq!(r.status, 500);
    let mut none = [0u8; 10];
    assert_eq!(b.api.handle_bytes(b.now, &mut b.gw, &req, &mut none), 0);
}

// -- expiry -------------------------------------------------------------

#[test]
fn ttl_expiry() {
    let mut b = Bed::new(16, true);
    b.gw.flows_per_rule = 2;
    let mut short = rule("203.0.113.7", "192.168.252.10", 22);
    short["ttl"] = json!(5);
    b.insert(short.clone());
    let mut long = rule("203.0.113.8", "192.168.252.10", 22);
    long["ttl"] = json!(50);
    b.insert(long);
    b.insert(rule("203.0.113.9", "192.168.252.10", 22));
    assert_eq!(b.api.next_expiry(), Some(b.now.mono_ns + 5 * NS_PER_SEC));
    b.tick(4);
    assert_eq!(b.api.expire(b.now.mono_ns, &mut b.gw), 0);
    // Re-inserting refreshes the TTL.
    b.insert(short.clone());
    b.tick(4);
    assert_eq!(b.api.expire(b.now.mono_ns, &mut b.gw), 0);
    b.tick(1);
    assert_eq!(b.api.expire(b.now.mono_ns, &mut b.gw), 1);
    assert_eq!(b.api.rules().len(), 2);
    assert!(b.gw.get(Proto::Tcp, 40000).is_none());
    // A refusing gateway: the rule stays until it agrees.
    b.tick(100);
    b.gw.fail_remove = Some(RuleError::Unsupported);
    assert_eq!(b.api.expire(b.now.mono_ns, &mut b.gw), 0);
    assert_eq!(b.api.rules().len(), 2);
    b.gw.fail_remove = None;
    assert_eq!(b.api.expire(b.now.mono_ns, &mut b.gw), 1);
    assert_eq!(b.api.rules().len(), 1);
    assert_eq!(b.api.next_expiry(), None);
    // Re-inserting without a TTL makes a rule permanent.
    b.insert(short.clone());
    assert!(b.api.next_expiry().is_some());
    short.as_object_mut().unwrap().remove("ttl");
    b.insert(short);
    assert_eq!(b.api.next_expiry(), None);
    b.tick(1000);
    assert_eq!(b.api.expire(b.now.mono_ns, &mut b.gw), 0);
    assert_eq!(b.api.rules().len(), 2);
}

#[test]
fn expiry_is_batched() {
    let mut b = Bed::new(200, false);
    for i in 0..150 {
        let mut r = rule(&format!("198.51.100.{}", i + 1), "192.168.252.10", 22);
        r["ttl"] = json!(1);
        b.insert(r);
    }
    b.tick(2);
    assert_eq!(b.api.expire(b.now.mono_ns, &mut b.gw), EXPIRE_BATCH);
    assert_eq!(b.api.expire(b.now.mono_ns, &mut b.gw), EXPIRE_BATCH);
    assert_eq!(
        b.api.expire(b.now.mono_ns, &mut b.gw),
        150 - 2 * EXPIRE_BATCH
    );
    assert!(b.api.rules().is_empty());
    assert!(b.gw.installed.is_empty());
}

// -- stats and health -----------------------------------------------------

#[test]
fn stats_and_health() {
    let mut b = Bed::new(16, true);
    b.insert(rule("203.0.113.7", "192.168.252.10", 22));
    let r = b.call("GET", "/stats", "");
    assert_eq!(r.status, 200);
    assert_eq!(r.body["rules"], json!({"count": 1, "capacity": 16}));
    assert_eq!(r.body["uptime_s"], 100);
    assert_eq!(r.body["vifs"].as_array().unwrap().len(), 3);
    assert_eq!(r.body["vifs"][2]["role"], "mgmt");
    assert_eq!(r.body["vifs"][0]["rx_packets"], 100);
    assert_eq!(r.body["nat"]["flows_capacity"], 65536);
    assert!(r.body["nat"]["refused_full"].is_u64());
    let r = b.call("GET", "/health", "");
    assert_eq!(
        r.body,
        json!({"status": "ok", "version": VERSION, "uptime_s": 100,
               "persistence": {"state": "off", "backlog": 0, "capacity": 0, "committed": 0,
                               "failures": 0, "conflicts": 0, "last_error": null,
                               "retry_in_ms": null}})
    );
}

// -- routing --------------------------------------------------------------

#[test]
fn routing_statuses() {
    let mut b = Bed::new(16, true);
    let r = b.call("GET", "/nope", "");
    assert_eq!((r.status, r.error()), (404, ("no such endpoint", None)));
    for (m, p, allow) in [
        ("GET", "/insert", "POST"),
        ("DELETE", "/remove", "POST"),
        ("POST", "/rules", "GET"),
        ("PUT", "/stats", "GET"),
        ("POST", "/health", "GET"),
        ("PATCH", "/rules/1", "GET, DELETE"),
    ] {
        let r = b.call(m, p, "");
        assert_eq!(r.status, 405, "{m} {p}");
        assert_eq!(r.header("Allow"), Some(allow));
    }
    // API version header.
    let mut req = b.request_bytes("GET", "/health", "");
    let at = req.len() - 2;
    req.splice(at..at, b"X-Pih-Api: 2\r\n".iter().copied());
    let r = b.raw(&req);
    assert_eq!((r.status, r.error().1), (400, Some("X-Pih-Api")));
    b.tick(1);
    let mut req = b.request_bytes("GET", "/health", "");
    let at = req.len() - 2;
    req.splice(at..at, b"X-Pih-Api: 1\r\n".iter().copied());
    assert_eq!(b.raw(&req).status, 200);
}

#[test]
fn http_level_errors() {
    let mut b = Bed::new(16, true);
    let big = "x".repeat(MAX_BODY + 1);
    let r = b.call("POST", "/insert", &big);
    assert_eq!((r.status, r.error().1), (413, Some("Content-Length")));
    let r = b.raw(b"POST /insert HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
    assert_eq!(r.status, 411);
    let r = b.raw(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03");
    assert_eq!(r.status, 400);
    let r = b.raw(b"GET /health HTTP/1.1\r\nContent-Length: 5\r\n\r\nab");
    assert_eq!((r.status, r.error().0), (400, "incomplete HTTP request"));
    let mut head = b"GET /health HTTP/1.1\r\n".to_vec();
    head.extend(std::iter::repeat_n(b'a', 3000));
    assert_eq!(b.raw(&head).status, 431);
    assert!(b.api.rules().is_empty());
}

// -- authentication ---------------------------------------------------------

fn with_auth(method: &str, target: &str, body: &str, auth: &str) -> StdVec<u8> {
    let mut v = format!(
        "{method} {target} HTTP/1.1\r\nAuthorization: {auth}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    v.extend_from_slice(body.as_bytes());
    v
}

#[test]
fn auth_success_stale_wrong_replayed() {
    let mut b = Bed::new(16, true);
    let body = rule("203.0.113.7", "192.168.252.10", 22).to_string();
    let ts = b.now.unix_s.unwrap();
    // Unsigned.
    let r = b.call_unsigned("POST", "/insert", &body);
    assert_eq!(r.status, 401);
    assert_eq!(
        r.error(),
        ("authentication required", Some("Authorization"))
    );
    assert_eq!(r.header("WWW-Authenticate"), Some("PIH-HMAC-SHA256"));
    // Good.
    let good = authorization(KEY, "POST", "/insert", ts, body.as_bytes());
    let req = with_auth("POST", "/insert", &body, &good);
    assert_eq!(b.raw(&req).status, 200);
    // Replayed, even much later within the window.
    b.tick(200);
    let r = b.raw(&req);
    assert_eq!((r.status, r.error().0), (401, "replayed request"));
    // Stale: 301 s old.
    b.tick(101);
    let r = b.raw(&req);
    assert_eq!(
        (r.status, r.error().0),
        (401, "timestamp outside the accepted window")
    );
    // From the future.
    let now = b.now.unix_s.unwrap();
    let future = authorization(KEY, "POST", "/insert", now + 301, body.as_bytes());
    assert_eq!(
        b.raw(&with_auth("POST", "/insert", &body, &future)).status,
        401
    );
    // Wrong key, wrong body, wrong path.
    let wrong = authorization(
        b"not the key at all",
        "POST",
        "/insert",
        now,
        body.as_bytes(),
    );
    let r = b.raw(&with_auth("POST", "/insert", &body, &wrong));
    assert_eq!((r.status, r.error().0), (401, "bad signature"));
    let other = authorization(KEY, "POST", "/insert", now, b"{}");
    assert_eq!(
        b.raw(&with_auth("POST", "/insert", &body, &other)).status,
        401
    );
    let path = authorization(KEY, "POST", "/remove", now, body.as_bytes());
    assert_eq!(
        b.raw(&with_auth("POST", "/insert", &body, &path)).status,
        401
    );
    // Garbage header.
    let r = b.raw(&with_auth("POST", "/insert", &body, "Basic dXNlcjpwYXNz"));
    assert_eq!(
        (r.status, r.error().0),
        (401, "malformed Authorization header")
    );
    // Nothing changed by any of these.
    assert_eq!(b.gw.inserts, 1);
    // Auth is checked before routing.
    assert_eq!(b.call_unsigned("GET", "/nope", "").status, 401);
}

#[test]
fn no_wall_clock_is_503() {
    let mut b = Bed::new(16, true);
    let req = b.request_bytes("GET", "/health", "");
    b.now.unix_s = None;
    let r = b.raw(&req);
    assert_eq!(r.status, 503);
    assert_eq!(r.error().1, Some("Authorization"));
}

#[test]
fn auth_off_accepts_the_original_gatekeeper() {
    let mut b = Bed::new(16, false);
    b.now.unix_s = None;
    let body = r#"{"ip": "203.0.113.7", "dst_ip": "192.168.252.10", "dst_port": 22}"#;
    let r = b.raw(
        format!(
            "POST /insert HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.body["ip"], "10.0.0.2");
    assert_eq!(r.body["port"], 40000);
    let body = r#"{"src_ip": "203.0.113.7", "dst_ip": "192.168.252.10", "dst_port": 22}"#;
    let r = b.raw(
        format!(
            "POST /remove HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    assert_eq!(r.status, 200);
    // A stray Authorization header is ignored.
    let r = b.raw(&with_auth("GET", "/health", "", "nonsense"));
    assert_eq!(r.status, 200);
}

impl Bed {
    fn call_unsigned(&mut self, method: &str, target: &str, body: &str) -> Resp {
        let auth = self.auth;
        self.auth = false;
        let r = self.call(method, target, body);
        self.auth = auth;
        r
    }
}

// -- through the incremental reader -------------------------------------------

#[test]
fn reader_to_response() {
    let mut b = Bed::new(16, true);
    let bytes = b.request_bytes(
        "POST",
        "/insert",
        &rule("203.0.113.7", "192.168.252.10", 22).to_string(),
    );
    let mut reader = RequestReader::new();
    let mut out = vec![0u8; RESPONSE_BUF];
    let mut done = false;
    for chunk in bytes.chunks(7) {
        if reader.feed(chunk) == Progress::Ready {
            done = true;
        }
    }
    assert!(done);
    let n = b.api.respond(b.now, &mut b.gw, &reader, &mut out);
    let r = Resp::parse(&out[..n]);
    assert_eq!(r.status, 200);
    // Not ready: 400.
    let mut reader = RequestReader::new();
    reader.feed(b"GET /health HT");
    let n = b.api.respond(b.now, &mut b.gw, &reader, &mut out);
    assert_eq!(Resp::parse(&out[..n]).status, 400);
}

// -- robustness ---------------------------------------------------------------

use crate::test_util::XorShift;

#[test]
fn garbage_requests_never_panic_and_always_answer() {
    let mut b = Bed::new(8, false);
    let mut rng = XorShift(0x5eed_1234_abcd_ef01);
    let valid = b.request_bytes(
        "POST",
        "/insert",
        &rule("203.0.113.7", "192.168.252.10", 22).to_string(),
    );
    const PIECES: &[&str] = &[
        "GET ",
        "POST ",
        "DELETE ",
        "/insert",
        "/remove",
        "/rules",
        "/rules/1",
        "/stats",
        "/health",
        "?offset=1",
        "&limit=2",
        " HTTP/1.1\r\n",
        "Content-Length: 10\r\n",
        "Content-Length: 99999\r\n",
        "Transfer-Encoding: chunked\r\n",
        "\r\n",
        "{",
        "}",
        "\"ip\":",
        "\"1.2.3.4\"",
        ",",
        "22",
        "null",
        "\"dst_ip\":\"192.168.252.10\"",
        "\"dst_port\":",
        "\u{0}",
        "\u{ff}",
        "\\u0000",
        "ttl",
        "1e999",
        "-",
    ];
    let mut out = vec![0u8; RESPONSE_BUF];
    for i in 0..20_000 {
        let bytes: StdVec<u8> = match i % 3 {
            0 => (0..rng.below(300)).map(|_| rng.next() as u8).collect(),
            1 => (0..rng.below(30))
                .flat_map(|_| PIECES[rng.below(PIECES.len())].bytes())
                .collect(),
            _ => {
                let mut v = valid.clone();
                for _ in 0..=rng.below(4) {
                    let at = rng.below(v.len());
                    match rng.below(3) {
                        0 => v[at] = rng.next() as u8,
                        1 => {
                            v.remove(at);
                        }
                        _ => v.insert(at, rng.next() as u8),
                    }
                }
                v
            }
        };
        let n = b.api.handle_bytes(b.now, &mut b.gw, &bytes, &mut out);
        let r = Resp::parse(&out[..n]);
        assert!(
            [200, 400, 404, 405, 409, 411, 413, 431, 503].contains(&r.status),
            "{} for {:?}",
            r.status,
            String::from_utf8_lossy(&bytes)
        );
        // The store and the gateway agree at all times.
        assert_eq!(b.api.rules().len(), b.gw.installed.len());
        for rule in b.api.rules().iter() {
            let g = b.gw.get(rule.spec.proto, rule.ext_port).unwrap();
            assert_eq!(g.spec, rule.spec);
        }
        if b.api.rules().is_full() {
            let id = b.api.rules().iter().next().unwrap().id;
            let del = format!("DELETE /rules/{id} HTTP/1.1\r\n\r\n");
            assert_eq!(b.raw(del.as_bytes()).status, 200);
        }
    }
}

#[test]
fn api_size_is_bounded() {
    // The replay cache dominates; the kernel keeps the API in a box.
    assert!(core::mem::size_of::<Api<'static>>() < 64 * 1024);
    assert!(core::mem::size_of::<RequestReader>() < 7 * 1024);
}

// -- persistence --------------------------------------------------------

/// A change log that remembers what it was given.
#[derive(Default)]
struct RecordingLog {
    changes: StdVec<(u64, &'static str, Rule, Option<Rule>)>,
    committed: StdVec<u64>,
    capacity: usize,
    restoring: bool,
}

impl RecordingLog {
    fn new(capacity: usize) -> Self {
        RecordingLog {
            capacity,
            ..Default::default()
        }
    }
    fn backlog(&self) -> usize {
        self.changes
            .iter()
            .filter(|c| !self.committed.contains(&c.0))
            .count()
    }
    fn kinds(&self) -> StdVec<(&'static str, u32)> {
        self.changes.iter().map(|c| (c.1, c.2.id)).collect()
    }
}

impl ChangeLog for RecordingLog {
    fn has_room(&self, n: usize) -> bool {
        self.backlog() + n <= self.capacity
    }
    fn record(&mut self, change: RuleChange<'_>) -> Option<u64> {
        let t = self.changes.len() as u64 + 1;
        let entry = match change {
            RuleChange::Insert(r) => (t, "insert", *r, None),
            RuleChange::Update { before, after } => (t, "update", *before, Some(*after)),
            RuleChange::Remove(r) => (t, "remove", *r, None),
        };
        self.changes.push(entry);
        Some(t)
    }
    fn is_committed(&self, ticket: u64) -> bool {
        self.committed.contains(&ticket)
    }
    fn pending_for(&self, id: u32) -> Option<u64> {
        self.changes
            .iter()
            .rev()
            .find(|c| c.2.id == id && !self.committed.contains(&c.0))
            .map(|c| c.0)
    }
    fn is_restoring(&self) -> bool {
        self.restoring
    }
    fn status(&self) -> PersistStatus {
        PersistStatus {
            state: if self.restoring { "restoring" } else { "ok" },
            backlog: self.backlog() as u64,
            capacity: self.capacity as u64,
            ..PersistStatus::default()
        }
    }
}

/// What came of a request answered with a log.
enum Logged {
    Ready(Resp),
    Await(Pending),
}

impl Bed {
    fn logged(&mut self, log: &mut RecordingLog, method: &str, target: &str, body: &str) -> Logged {
        let bytes = self.request_bytes(method, target, body);
        let mut out = vec![0u8; RESPONSE_BUF];
        let a = self.api.answer(
            self.now,
            &mut self.gw,
            log,
            crate::http::parse_request(&bytes),
            &mut out,
        );
        self.now.unix_s = self.now.unix_s.map(|u| u + 1);
        match a {
            Answer::Ready(n) => Logged::Ready(Resp::parse(&out[..n])),
            Answer::Await(p) => Logged::Await(p),
        }
    }

    fn finish(&self, p: &Pending, persisted: bool) -> Resp {
        let mut out = vec![0u8; RESPONSE_BUF];
        let n = self.api.finish(p, persisted, &mut out);
        Resp::parse(&out[..n])
    }
}

fn awaited(l: Logged) -> Pending {
    match l {
        Logged::Await(p) => p,
        Logged::Ready(r) => panic!("answered at once: {} {}", r.status, r.body),
    }
}

fn ready(l: Logged) -> Resp {
    match l {
        Logged::Ready(r) => r,
        Logged::Await(p) => panic!("waits for ticket {}", p.ticket),
    }
}

#[test]
fn insert_waits_for_the_commit_and_says_whether_it_happened() {
    let mut b = Bed::new(16, false);
    let mut log = RecordingLog::new(8);
    let body = rule("203.0.113.7", "192.168.252.10", 22).to_string();
    let p = awaited(b.logged(&mut log, "POST", "/insert", &body));
    // In effect before the answer.
    assert!(b.gw.get(Proto::Tcp, 40000).is_some());
    assert_eq!(log.kinds(), [("insert", 1)]);
    assert_eq!(p.ticket, 1);
    assert_eq!(
        b.finish(&p, true).body,
        json!({"ip": "10.0.0.2", "port": 40000, "id": 1, "persisted": true})
    );
    assert_eq!(b.finish(&p, false).body["persisted"], false);
    // The same rule while its insert is pending: the same ticket.
    assert_eq!(awaited(b.logged(&mut log, "POST", "/insert", &body)).ticket, 1);
    log.committed.push(1);
    // Nothing changed and nothing pending: persisted at once.
    let r = ready(b.logged(&mut log, "POST", "/insert", &body));
    assert_eq!(r.body["persisted"], true);
    assert_eq!(log.kinds(), [("insert", 1)]);
    // A new TTL is a change of the stored document.
    let mut with_ttl = rule("203.0.113.7", "192.168.252.10", 22);
    with_ttl["ttl"] = json!(60);
    let p = awaited(b.logged(&mut log, "POST", "/insert", &with_ttl.to_string()));
    assert_eq!(p.ticket, 2);
    let (_, kind, before, after) = log.changes[1];
    assert_eq!(kind, "update");
    assert_eq!(before.expires_unix, None);
    assert_eq!(after.unwrap().expires_unix, Some(b.now.unix_s.unwrap() - 1 + 60));
    assert_eq!(b.api.rules().get(1).unwrap().expires_unix, after.unwrap().expires_unix);
}

#[test]
fn remove_and_expiry_are_recorded() {
    let mut b = Bed::new(16, false);
    let mut log = RecordingLog::new(8);
    let mut r1 = rule("203.0.113.7", "192.168.252.10", 22);
    r1["ttl"] = json!(5);
    awaited(b.logged(&mut log, "POST", "/insert", &r1.to_string()));
    awaited(b.logged(&mut log, "POST", "/insert", &rule("203.0.113.8", "192.168.252.10", 22).to_string()));
    let rm = json!({"src_ip": "203.0.113.8", "dst_ip": "192.168.252.10", "dst_port": 22});
    let p = awaited(b.logged(&mut log, "POST", "/remove", &rm.to_string()));
    assert_eq!(
        b.finish(&p, false).body,
        json!({"removed": true, "id": 2, "flows": 0, "persisted": false})
    );
    assert!(b.gw.get(Proto::Tcp, 40001).is_none());
    b.tick(6);
    assert_eq!(b.api.expire_logged(b.now.mono_ns, &mut b.gw, &mut log), 1);
    assert_eq!(log.kinds(), [("insert", 1), ("insert", 2), ("remove", 2), ("remove", 1)]);
}

#[test]
fn a_full_journal_refuses_changes_before_they_take_effect() {
    let mut b = Bed::new(16, false);
    let mut log = RecordingLog::new(1);
    let mut r1 = rule("203.0.113.7", "192.168.252.10", 22);
    r1["ttl"] = json!(5);
    awaited(b.logged(&mut log, "POST", "/insert", &r1.to_string()));
    let r = ready(b.logged(&mut log, "POST", "/insert", &rule("203.0.113.8", "192.168.252.10", 22).to_string()));
    assert_eq!(r.status, 503);
    assert_eq!(r.body, json!({"error": "persistence backlog full"}));
    assert!(b.gw.get(Proto::Tcp, 40001).is_none());
    let rm = json!({"src_ip": "203.0.113.7", "dst_ip": "192.168.252.10", "dst_port": 22});
    assert_eq!(ready(b.logged(&mut log, "POST", "/remove", &rm.to_string())).status, 503);
    assert!(b.gw.get(Proto::Tcp, 40000).is_some());
    // Expiry waits for room too.
    b.tick(6);
    assert_eq!(b.api.expire_logged(b.now.mono_ns, &mut b.gw, &mut log), 0);
    log.committed.push(1);
    assert_eq!(b.api.expire_logged(b.now.mono_ns, &mut b.gw, &mut log), 1);
    assert!(b.gw.get(Proto::Tcp, 40000).is_none());
    // Reads never need room.
    assert_eq!(ready(b.logged(&mut log, "GET", "/rules", "")).status, 200);
}

#[test]
fn while_restoring_only_health_answers() {
    let mut b = Bed::new(16, false);
    let mut log = RecordingLog::new(8);
    log.restoring = true;
    let body = rule("203.0.113.7", "192.168.252.10", 22).to_string();
    let r = ready(b.logged(&mut log, "POST", "/insert", &body));
    assert_eq!(r.status, 503);
    assert_eq!(r.body["error"], "restoring rules from the persistent store");
    assert_eq!(ready(b.logged(&mut log, "GET", "/rules", "")).status, 503);
    let h = ready(b.logged(&mut log, "GET", "/health", ""));
    assert_eq!(h.status, 200);
    assert_eq!(h.body["status"], "restoring");
    assert_eq!(h.body["persistence"]["state"], "restoring");
    log.restoring = false;
    let s = ready(b.logged(&mut log, "GET", "/stats", ""));
    assert_eq!(s.body["persistence"]["capacity"], 8);
    assert_eq!(ready(b.logged(&mut log, "GET", "/health", "")).body["status"], "ok");
}

fn stored(id: u32, client: [u8; 4], port: u16, expires_unix: Option<u64>) -> Rule {
    Rule {
        id,
        spec: RuleSpec {
            client: Ipv4Addr::from(client),
            int_addr: Ipv4Addr::new(192, 168, 252, 10),
            int_port: 22,
            proto: Proto::Tcp,
        },
        ext_port: port,
        expires_ns: None,
        expires_unix,
    }
}

#[test]
fn restore_keeps_ids_ports_and_remaining_ttl() {
    let mut b = Bed::new(4, false);
    let mut log = RecordingLog::new(8);
    let unix = b.now.unix_s.unwrap();
    let now = b.now;
    assert_eq!(b.api.restore(now, &mut b.gw, &mut log, &stored(7, [203, 0, 113, 1], 41000, None)), Ok(()));
    assert_eq!(
        b.api.restore(now, &mut b.gw, &mut log, &stored(3, [203, 0, 113, 2], 41001, Some(unix + 30))),
        Ok(())
    );
    // Expired while down: not installed, its document goes.
    assert_eq!(
        b.api.restore(now, &mut b.gw, &mut log, &stored(5, [203, 0, 113, 3], 41002, Some(unix - 1))),
        Err(RestoreRefused::Expired)
    );
    assert_eq!(log.kinds(), [("remove", 5)]);
    assert!(b.gw.get(Proto::Tcp, 41002).is_none());
    // Duplicates are refused without touching the gateway.
    assert_eq!(
        b.api.restore(now, &mut b.gw, &mut log, &stored(8, [203, 0, 113, 4], 41000, None)),
        Err(RestoreRefused::Store(RestoreError::DuplicatePort))
    );
    assert_eq!(
        b.api.restore(now, &mut b.gw, &mut log, &stored(9, [203, 0, 113, 1], 41005, None)),
        Err(RestoreRefused::Store(RestoreError::DuplicateSpec))
    );
    assert!(b.gw.get(Proto::Tcp, 41005).is_none());
    // A document the API would have refused is refused here too.
    assert_eq!(
        b.api.restore(now, &mut b.gw, &mut log, &stored(10, [224, 0, 0, 1], 41006, None)),
        Err(RestoreRefused::NotUnicast("ip"))
    );
    let mut bad = stored(11, [203, 0, 113, 6], 41007, None);
    bad.spec.int_addr = Ipv4Addr::new(127, 0, 0, 1);
    assert_eq!(
        b.api.restore(now, &mut b.gw, &mut log, &bad),
        Err(RestoreRefused::NotUnicast("dst_ip"))
    );
    assert_eq!(b.gw.get(Proto::Tcp, 41000).unwrap().spec.client, Ipv4Addr::new(203, 0, 113, 1));
    let ids: StdVec<u32> = b.api.rules().iter().map(|r| r.id).collect();
    assert_eq!(ids, [3, 7]);
    let r3 = b.api.rules().get(3).unwrap();
    assert_eq!(r3.expires_in(now.mono_ns), Some(30));
    // New rules continue above the highest restored id.
    let r = b.insert(rule("203.0.113.9", "192.168.252.10", 22));
    assert_eq!(r.body["id"], 8);
    let got = b.call("GET", "/rules/7", "");
    assert_eq!(got.body["port"], 41000);
}

#[test]
fn restore_all_in_id_order_with_duplicates_refused() {
    const N: u32 = 4_000;
    let storage: &'static mut [Rule] = vec![Rule::EMPTY; N as usize + 8].leak();
    let cfg = ApiConfig { external: EXT, key: Some(KEY), auth: false };
    let mut api = Api::new(&cfg, storage);
    let mut gw = MockGateway::new();
    let mut log = RecordingLog::new(8);
    // Unordered ids; every rule distinct but for three planted duplicates.
    let mut rules: StdVec<Rule> = (1..=N)
        .rev()
        .map(|i| stored(i, [10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 1024 + (i % 60_000) as u16, None))
        .collect();
    let mut same_spec = rules[0];
    same_spec.id = N + 1;
    same_spec.ext_port = 65_000;
    let mut same_port = stored(N + 2, [11, 0, 0, 1], rules[0].ext_port, None);
    same_port.spec.proto = Proto::Tcp;
    let same_id = stored(5, [12, 0, 0, 1], 65_001, None);
    rules.extend([same_spec, same_port, same_id]);
    let mut outcomes = StdVec::new();
    api.restore_all(now_at(1), &mut gw, &mut log, &rules, |r, o| outcomes.push((r.id, o)));
    let refused: StdVec<_> = outcomes.iter().filter(|(_, o)| o.is_err()).copied().collect();
    // Ids 1..=N first (in id order), so the planted ones lose.
    assert_eq!(
        refused,
        [
            (5, Err(RestoreRefused::Store(RestoreError::DuplicateId))),
            (N + 1, Err(RestoreRefused::Store(RestoreError::DuplicateSpec))),
            (N + 2, Err(RestoreRefused::Store(RestoreError::DuplicatePort))),
        ]
    );
    assert_eq!(api.rules().len(), N as usize);
    assert!(api.rules().as_slice().windows(2).all(|w| w[0].id < w[1].id));
    assert_eq!(api.rules().next_id(), N + 1);
    assert!(gw.get(Proto::Tcp, 65_000).is_none());
}
