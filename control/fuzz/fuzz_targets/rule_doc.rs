//! Arbitrary text as a persisted rule document and as a store path.
//!
//! Checked: nothing panics; a document `decode` accepts encodes within
//! `DOC_MAX` and decodes again to the same rule (and encoding is
//! deterministic); serde_json reads the same values out of it; an error
//! names one of the document's fields; a path `id_from_path` accepts is
//! `rule_path` of that id (give or take the leading slash).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pih_control::irmin::{decode, encode, id_from_path, rule_path, DocError, DOC_MAX};

const FIELDS: &[&str] = &[
    "v", "id", "proto", "ip", "dst_ip", "dst_port", "port", "expires_at",
];

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match decode(&text) {
        Ok(rule) => {
            assert!(rule.id != 0 && rule.id != u32::MAX);
            assert!(rule.ext_port != 0 && rule.spec.int_port != 0);
            assert_eq!(rule.expires_ns, None);
            let doc = encode(&rule);
            assert!(doc.len() <= DOC_MAX);
            assert_eq!(decode(&doc), Ok(rule), "{doc}");
            assert_eq!(encode(&rule), doc);
            let v: serde_json::Value = serde_json::from_str(&text).expect("serde_json agrees");
            assert_eq!(v["id"].as_u64(), Some(u64::from(rule.id)));
            assert_eq!(v["port"].as_u64(), Some(u64::from(rule.ext_port)));
            assert_eq!(v["proto"].as_str(), Some(rule.spec.proto.name()));
            assert_eq!(
                v["ip"].as_str().map(|s| s.parse().ok()),
                Some(Some(rule.spec.client))
            );
            assert_eq!(v["expires_at"].as_u64(), rule.expires_unix);
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.starts_with("rule document: "), "{msg}");
            match e.field() {
                Some(f) => assert!(FIELDS.contains(&f), "{f}"),
                None => assert_eq!(e, DocError::NotObject),
            }
        }
    }
    for prefix in ["bridge", "a/b"] {
        if let Some(id) = id_from_path(prefix, &text) {
            let path = rule_path(prefix, id);
            assert_eq!(text.strip_prefix('/').unwrap_or(&text), path.as_str());
        }
    }
});
