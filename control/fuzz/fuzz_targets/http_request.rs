//! Arbitrary bytes through the whole management API: the incremental HTTP
//! reader, authentication, the router, the JSON bodies, the rule store and
//! a mock gateway.
//!
//! Input: one control byte, then up to four requests separated by zero bytes
//! (served in turn, as separate connections, on the same API state).
//! Control bits: 0 = authentication on; 1 = the harness signs each request
//! itself (inserting a valid `Authorization` header after the request
//! line), so the paths behind authentication are reached too; 2 = no wall
//! clock; 3..=5 = the size of the chunks fed to the reader; 6 = the clock
//! moves on between requests (TTL expiry runs).
//!
//! Checked: nothing panics; every answer is a well-formed HTTP response
//! with a JSON body whose length matches Content-Length and an expected
//! status; the incremental reader answers exactly as the one-shot parser
//! does; the rule store and the gateway always agree.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pih_control::api::mock::MockGateway;
use pih_control::api::{Api, ApiConfig, Now};
use pih_control::auth;
use pih_control::http::{self, Progress, RequestReader, REQUEST_BUF};
use pih_control::rules::{Rule, NS_PER_SEC};

const KEY: &[u8] = b"fuzzing key, 32 bytes long......";
const OUT: usize = 4096;

fn check_response(bytes: &[u8]) -> u16 {
    assert!(!bytes.is_empty(), "no response");
    let text = std::str::from_utf8(bytes).expect("response is UTF-8");
    let (head, body) = text.split_once("\r\n\r\n").expect("response head");
    assert!(head.starts_with("HTTP/1.1 "), "{head}");
    let status: u16 = head[9..12].parse().expect("status code");
    assert!(
        [200, 400, 401, 404, 405, 409, 411, 413, 431, 500, 503].contains(&status),
        "status {status}"
    );
    let len = head
        .split("\r\n")
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .expect("Content-Length");
    assert_eq!(len.parse::<usize>().unwrap(), body.len());
    assert!(head.contains("\r\nConnection: close\r\n"));
    let v: serde_json::Value = serde_json::from_str(body).expect("JSON body");
    assert!(v.is_object());
    if status != 200 {
        assert!(v["error"].is_string(), "{body}");
    }
    status
}

/// `req` with an `Authorization` header for it, after the request line.
fn signed(req: &[u8], ts: u64) -> Option<Vec<u8>> {
    let parsed = http::parse_request(req).ok()?;
    let a = auth::authorization(KEY, parsed.method.as_str(), parsed.target, ts, parsed.body);
    let line_end = req.iter().position(|&b| b == b'\n')? + 1;
    let mut out = req[..line_end].to_vec();
    out.extend_from_slice(b"Authorization: ");
    out.extend_from_slice(a.as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&req[line_end..]);
    Some(out)
}

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, rest)) = data.split_first() else {
        return;
    };
    let auth_on = ctl & 1 != 0;
    let sign = ctl & 2 != 0;
    let no_clock = ctl & 4 != 0;
    let chunk = 1usize << ((ctl >> 3) & 7);
    let ticking = ctl & 64 != 0;

    let cfg = ApiConfig {
        external: "10.0.0.2".parse().unwrap(),
        key: Some(KEY),
        auth: auth_on,
    };
    let mut storage = [Rule::EMPTY; 8];
    let mut twin_storage = [Rule::EMPTY; 8];
    let mut api = Api::new(&cfg, &mut storage);
    let mut twin = Api::new(&cfg, &mut twin_storage);
    let mut gw = MockGateway::new();
    gw.ports = 40000..=40005;
    gw.flows_per_rule = 1;
    let mut twin_gw = gw.clone();
    let mut now = Now {
        mono_ns: 5 * NS_PER_SEC,
        unix_s: (!no_clock).then_some(1_700_000_000),
    };
    let mut out = [0u8; OUT];
    let mut twin_out = [0u8; OUT];

    for (i, raw) in rest
        .split(|&b| b == 0)
        .filter(|r| !r.is_empty())
        .take(4)
        .enumerate()
    {
        let signed_req;
        let req: &[u8] = if sign {
            signed_req = signed(raw, 1_700_000_000 + i as u64);
            signed_req.as_deref().unwrap_or(raw)
        } else {
            raw
        };
        if let Some(u) = now.unix_s.as_mut() {
            *u = 1_700_000_000 + i as u64;
        }

        // Incrementally, as the kernel does.
        let mut reader = RequestReader::new();
        let mut ready = false;
        for c in req.chunks(chunk) {
            if reader.feed(c) == Progress::Ready {
                ready = true;
                break;
            }
        }
        if !ready {
            reader.end_of_input();
        }
        let n = api.respond(now, &mut gw, &reader, &mut out);
        let status = check_response(&out[..n]);

        // In one go: the same answer (when the reader could hold it all).
        if req.len() <= REQUEST_BUF {
            let m = twin.handle_bytes(now, &mut twin_gw, req, &mut twin_out);
            assert_eq!(
                &out[..n],
                &twin_out[..m],
                "reader and one-shot parser differ"
            );
        }
        let _ = status;

        // The store and the gateway agree.
        assert_eq!(api.rules().len(), gw.installed.len());
        for r in api.rules().iter() {
            let g = gw.get(r.spec.proto, r.ext_port).expect("rule in gateway");
            assert_eq!(g.spec, r.spec);
        }

        if ticking {
            now.mono_ns += 100 * NS_PER_SEC;
            api.expire(now.mono_ns, &mut gw);
            twin.expire(now.mono_ns, &mut twin_gw);
        }
    }
});
