//! Arbitrary bytes as the JSON body of `POST /insert` and `POST /remove`.
//!
//! Checked: nothing panics; an error names at most a short field; a body
//! the parser accepts is valid JSON to serde_json too, with the same
//! values; serializing an accepted request and parsing it again gives the
//! same request; and the body sent through the API gets the status the
//! parser's verdict implies.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pih_control::api::mock::MockGateway;
use pih_control::api::{Api, ApiConfig, Now};
use pih_control::json::{parse_insert, parse_remove, FIELD_LEN};
use pih_control::rules::{Proto, Rule, RuleSpec};
use serde_json::{json, Value};

/// If serde_json reads `data` as an object, its fields must agree with
/// what was parsed. (serde-json-core is more lenient about some number
/// spellings, such as leading zeros; those bodies are not compared.)
fn agrees(data: &[u8], spec: &RuleSpec, client_keys: &[&str]) {
    let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let client = client_keys
        .iter()
        .find_map(|k| m.get(*k))
        .expect("client field");
    assert_eq!(
        client
            .as_str()
            .unwrap()
            .parse::<std::net::Ipv4Addr>()
            .unwrap(),
        spec.client
    );
    assert_eq!(
        m["dst_ip"]
            .as_str()
            .unwrap()
            .parse::<std::net::Ipv4Addr>()
            .unwrap(),
        spec.int_addr
    );
    assert_eq!(m["dst_port"].as_f64().unwrap(), f64::from(spec.int_port));
    match m.get("proto") {
        Some(p) => assert!(p.as_str().unwrap().eq_ignore_ascii_case(spec.proto.name())),
        None => assert_eq!(spec.proto, Proto::Tcp),
    }
}

fn canonical(spec: &RuleSpec, client_key: &str) -> Value {
    let mut v = json!({
        "dst_ip": spec.int_addr.to_string(),
        "dst_port": spec.int_port,
        "proto": spec.proto.name(),
    });
    v[client_key] = json!(spec.client.to_string());
    v
}

fuzz_target!(|data: &[u8]| {
    let insert = parse_insert(data);
    match &insert {
        Ok(r) => {
            agrees(data, &r.spec, &["ip", "src_ip"]);
            let mut v = canonical(&r.spec, "ip");
            if let Some(p) = r.port {
                v["port"] = json!(p);
            }
            if let Some(t) = r.ttl_s {
                v["ttl"] = json!(t);
            }
            let again = parse_insert(v.to_string().as_bytes()).expect("canonical insert parses");
            assert_eq!(&again, r);
        }
        Err(e) => {
            assert!(e.field.as_ref().is_none_or(|f| f.len() <= FIELD_LEN));
            assert!(!e.message.is_empty());
        }
    }
    match parse_remove(data) {
        Ok(r) => {
            agrees(data, &r.spec, &["src_ip", "ip"]);
            let v = canonical(&r.spec, "src_ip");
            let again = parse_remove(v.to_string().as_bytes()).expect("canonical remove parses");
            assert_eq!(again, r);
        }
        Err(e) => assert!(e.field.as_ref().is_none_or(|f| f.len() <= FIELD_LEN)),
    }

    // Through the API.
    let cfg = ApiConfig {
        external: "10.0.0.2".parse().unwrap(),
        key: None,
        auth: false,
    };
    let mut storage = [Rule::EMPTY; 4];
    let mut api = Api::new(&cfg, &mut storage);
    let mut gw = MockGateway::new();
    let mut req = format!(
        "POST /insert HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
        data.len()
    )
    .into_bytes();
    req.extend_from_slice(data);
    let mut out = [0u8; 2048];
    let n = api.handle_bytes(Now::default(), &mut gw, &req, &mut out);
    let text = std::str::from_utf8(&out[..n]).expect("UTF-8 response");
    let status: u16 = text[9..12].parse().unwrap();
    let body: Value = serde_json::from_str(text.split_once("\r\n\r\n").unwrap().1).unwrap();
    match insert {
        Ok(_) => assert!([200, 400].contains(&status), "{status} {body}"),
        Err(e) if data.len() <= 4096 => {
            assert_eq!(status, 400);
            assert_eq!(body["error"], e.message);
            assert_eq!(
                body.get("field").and_then(Value::as_str),
                e.field.as_deref()
            );
        }
        Err(_) => assert_eq!(status, 413),
    }
    assert_eq!(api.rules().len(), gw.installed.len());
});
