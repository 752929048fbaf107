//! The persisted form of a rule: one small JSON document per rule, stored
//! at `<prefix>/rules/<id>`.
//!
//! ```text
//! bridge/rules/3 = {"v":1,"id":3,"proto":"tcp","ip":"203.0.113.9",
//!                   "dst_ip":"192.168.252.10","dst_port":22,"port":18407,
//!                   "expires_at":null}
//! ```
//!
//! | field        | meaning                                           |
//! |--------------|---------------------------------------------------|
//! | `v`          | document version, always `1`                      |
//! | `id`         | rule id (also the last path segment)              |
//! | `proto`      | `tcp` or `udp`                                    |
//! | `ip`         | the client allowed in                             |
//! | `dst_ip`     | internal address                                  |
//! | `dst_port`   | internal port                                     |
//! | `port`       | the bridge's external port                        |
//! | `expires_at` | deadline in Unix seconds, or `null` (no TTL)      |
//!
//! [`encode`] is deterministic (same rule, same bytes), which lets the
//! persister compare the store's value with what it wrote byte for byte.
//! [`decode`] is strict about the fields it knows (a [`DocError`] names
//! the one at fault) and ignores fields it does not know, so a later
//! version may add some without breaking an older bridge.
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::arithmetic_side_effects
    )
)]

use core::fmt::{self, Write as _};
use core::net::Ipv4Addr;
use core::str::FromStr;

use serde_json::{Map, Value};

use crate::rules::{Proto, Rule, RuleSpec};

/// Capacity of an encoded document (the longest possible one is about 150
/// bytes).
pub const DOC_MAX: usize = 256;
/// An encoded document.
pub type DocBuf = heapless::String<DOC_MAX>;
/// A store path (`bridge/rules/3`): a 64-byte prefix, `/rules/` and ten
/// digits always fit.
pub type PathBuf = heapless::String<128>;
/// The document version written and understood.
pub const DOC_VERSION: u64 = 1;

/// `rule` as its document.
pub fn encode(rule: &Rule) -> DocBuf {
    let mut out = DocBuf::new();
    // Cannot fail: the longest document is well under DOC_MAX.
    let _ = write!(
        out,
        "{{\"v\":{},\"id\":{},\"proto\":\"{}\",\"ip\":\"{}\",\"dst_ip\":\"{}\",\"dst_port\":{},\"port\":{},\"expires_at\":",
        DOC_VERSION,
        rule.id,
        rule.spec.proto.name(),
        rule.spec.client,
        rule.spec.int_addr,
        rule.spec.int_port,
        rule.ext_port,
    );
    let _ = match rule.expires_unix {
        Some(t) => write!(out, "{t}}}"),
        None => out.push_str("null}").map_err(|_| fmt::Error),
    };
    out
}

/// Why a document was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DocError {
    /// Not a JSON object.
    NotObject,
    /// A required field is absent.
    Missing(&'static str),
    /// A field has the wrong type or an out-of-range value.
    Invalid(&'static str),
    /// `v` is not a version this bridge understands.
    Version,
}

impl DocError {
    /// The field at fault, if any.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            DocError::NotObject => None,
            DocError::Missing(f) | DocError::Invalid(f) => Some(f),
            DocError::Version => Some("v"),
        }
    }
}

impl fmt::Display for DocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DocError::NotObject => f.write_str("rule document: not a JSON object"),
            DocError::Missing(field) => write!(f, "rule document: {field}: missing"),
            DocError::Invalid(field) => {
                let what = match *field {
                    "id" => "expected an integer 1..=4294967294",
                    "proto" => "expected \"tcp\" or \"udp\"",
                    "ip" | "dst_ip" => "expected an IPv4 address string",
                    "dst_port" | "port" => "expected an integer 1..=65535",
                    "expires_at" => "expected Unix seconds or null",
                    _ => "invalid value",
                };
                write!(f, "rule document: {field}: {what}")
            }
            DocError::Version => write!(
                f,
                "rule document: v: unsupported version (expected {DOC_VERSION})"
            ),
        }
    }
}

impl core::error::Error for DocError {}

fn field<'a>(obj: &'a Map<alloc::string::String, Value>, name: &'static str) -> Result<&'a Value, DocError> {
    obj.get(name).ok_or(DocError::Missing(name))
}

fn uint(obj: &Map<alloc::string::String, Value>, name: &'static str) -> Result<u64, DocError> {
    field(obj, name)?.as_u64().ok_or(DocError::Invalid(name))
}

fn port(obj: &Map<alloc::string::String, Value>, name: &'static str) -> Result<u16, DocError> {
    match u16::try_from(uint(obj, name)?) {
        Ok(p) if p != 0 => Ok(p),
        _ => Err(DocError::Invalid(name)),
    }
}

fn addr(obj: &Map<alloc::string::String, Value>, name: &'static str) -> Result<Ipv4Addr, DocError> {
    let s = field(obj, name)?.as_str().ok_or(DocError::Invalid(name))?;
    Ipv4Addr::from_str(s).map_err(|_| DocError::Invalid(name))
}

/// The rule a document describes, with `expires_ns: None` (the caller
/// derives the monotonic deadline from `expires_unix` and its clock).
pub fn decode(value: &str) -> Result<Rule, DocError> {
    let parsed: Value = serde_json::from_str(value).map_err(|_| DocError::NotObject)?;
    let obj = parsed.as_object().ok_or(DocError::NotObject)?;
    let version = field(obj, "v")?;
    if version.as_u64() != Some(DOC_VERSION) {
        return Err(DocError::Version);
    }
    let id = match u32::try_from(uint(obj, "id")?) {
        Ok(id) if id != 0 && id != u32::MAX => id,
        _ => return Err(DocError::Invalid("id")),
    };
    let proto = match field(obj, "proto")?.as_str() {
        Some("tcp") => Proto::Tcp,
        Some("udp") => Proto::Udp,
        _ => return Err(DocError::Invalid("proto")),
    };
    let client = addr(obj, "ip")?;
    let int_addr = addr(obj, "dst_ip")?;
    let int_port = port(obj, "dst_port")?;
    let ext_port = port(obj, "port")?;
    let expires_unix = match field(obj, "expires_at")? {
        Value::Null => None,
        v => Some(v.as_u64().ok_or(DocError::Invalid("expires_at"))?),
    };
    Ok(Rule {
        id,
        spec: RuleSpec {
            client,
            int_addr,
            int_port,
            proto,
        },
        ext_port,
        expires_ns: None,
        expires_unix,
    })
}

/// `prefix` without leading or trailing slashes (the configuration never
/// has them, but a hand-built endpoint might).
fn trim_prefix(prefix: &str) -> &str {
    prefix.trim_matches('/')
}

/// `<prefix>/rules`, where the rule documents live.
pub fn rules_dir(prefix: &str) -> PathBuf {
    let mut out = PathBuf::new();
    let p = trim_prefix(prefix);
    if !p.is_empty() {
        let _ = write!(out, "{p}/");
    }
    let _ = out.push_str("rules");
    out
}

/// `<prefix>/rules/<id>`.
pub fn rule_path(prefix: &str, id: u32) -> PathBuf {
    let mut out = rules_dir(prefix);
    let _ = write!(out, "/{id}");
    out
}

/// The rule id of a document path (`/bridge/rules/3` or `bridge/rules/3`
/// with prefix `bridge`): `None` for anything else, including deeper
/// paths, ids with a sign, leading zeros or out of `1..u32::MAX`.
pub fn id_from_path(prefix: &str, path: &str) -> Option<u32> {
    let path = path.strip_prefix('/').unwrap_or(path);
    let p = trim_prefix(prefix);
    let rest = if p.is_empty() {
        path
    } else {
        path.strip_prefix(p)?.strip_prefix('/')?
    };
    let digits = rest.strip_prefix("rules/")?;
    if digits.is_empty()
        || digits.len() > 10
        || digits.starts_with('0')
        || !digits.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    match u32::from_str(digits) {
        Ok(id) if id != u32::MAX => Some(id),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule() -> Rule {
        Rule {
            id: 3,
            spec: RuleSpec {
                client: Ipv4Addr::new(203, 0, 113, 9),
                int_addr: Ipv4Addr::new(192, 168, 252, 10),
                int_port: 22,
                proto: Proto::Tcp,
            },
            ext_port: 18407,
            expires_ns: Some(123),
            expires_unix: None,
        }
    }

    const EXAMPLE: &str = r#"{"v":1,"id":3,"proto":"tcp","ip":"203.0.113.9","dst_ip":"192.168.252.10","dst_port":22,"port":18407,"expires_at":null}"#;

    #[test]
    fn encode_example() {
        assert_eq!(encode(&rule()).as_str(), EXAMPLE);
        let mut r = rule();
        r.expires_unix = Some(1_800_000_000);
        r.spec.proto = Proto::Udp;
        assert_eq!(
            encode(&r).as_str(),
            EXAMPLE
                .replace("null", "1800000000")
                .replace("tcp", "udp")
        );
        // Deterministic.
        assert_eq!(encode(&r), encode(&r));
    }

    #[test]
    fn longest_fits() {
        let r = Rule {
            id: u32::MAX - 1,
            spec: RuleSpec {
                client: Ipv4Addr::new(255, 255, 255, 255),
                int_addr: Ipv4Addr::new(255, 255, 255, 255),
                int_port: 65535,
                proto: Proto::Udp,
            },
            ext_port: 65535,
            expires_ns: None,
            expires_unix: Some(u64::MAX),
        };
        let doc = encode(&r);
        assert!(doc.ends_with("18446744073709551615}"), "{doc}");
        assert!(doc.len() < 200);
        assert_eq!(decode(&doc), Ok(r));
    }

    #[test]
    fn round_trip() {
        let mut r = rule();
        let back = decode(&encode(&r)).unwrap();
        r.expires_ns = None;
        assert_eq!(back, r);
        r.expires_unix = Some(0);
        assert_eq!(decode(&encode(&r)).unwrap(), r);
        // Serde's view agrees with the hand-written encoder.
        let v: serde_json::Value = serde_json::from_str(&encode(&r)).unwrap();
        assert_eq!(v["ip"], "203.0.113.9");
        assert_eq!(v["expires_at"], 0);
    }

    #[test]
    fn extra_fields_and_whitespace() {
        let doc = r#" { "future" : [1, {"x": null}], "v":1,"id":3,"proto":"tcp","ip":"203.0.113.9",
            "dst_ip":"192.168.252.10","dst_port":22,"port":18407,"expires_at":null , "note": "hi"} "#;
        let mut want = rule();
        want.expires_ns = None;
        assert_eq!(decode(doc), Ok(want));
    }

    #[test]
    fn rejections() {
        let with = |field: &str, value: &str| -> std::string::String {
            let mut v: serde_json::Value = serde_json::from_str(EXAMPLE).unwrap();
            if value == "<absent>" {
                v.as_object_mut().unwrap().remove(field);
            } else {
                v[field] = serde_json::from_str(value).unwrap();
            }
            v.to_string()
        };
        let table: &[(&str, &str, DocError)] = &[
            ("v", "<absent>", DocError::Missing("v")),
            ("v", "2", DocError::Version),
            ("v", "\"1\"", DocError::Version),
            ("v", "1.0", DocError::Version),
            ("v", "0", DocError::Version),
            ("id", "<absent>", DocError::Missing("id")),
            ("id", "0", DocError::Invalid("id")),
            ("id", "-1", DocError::Invalid("id")),
            ("id", "4294967295", DocError::Invalid("id")),
            ("id", "4294967296", DocError::Invalid("id")),
            ("id", "\"3\"", DocError::Invalid("id")),
            ("id", "3.5", DocError::Invalid("id")),
            ("proto", "<absent>", DocError::Missing("proto")),
            ("proto", "\"icmp\"", DocError::Invalid("proto")),
            ("proto", "\"TCP\"", DocError::Invalid("proto")),
            ("proto", "6", DocError::Invalid("proto")),
            ("ip", "<absent>", DocError::Missing("ip")),
            ("ip", "\"203.0.113\"", DocError::Invalid("ip")),
            ("ip", "\"203.0.113.256\"", DocError::Invalid("ip")),
            ("ip", "\"::1\"", DocError::Invalid("ip")),
            ("ip", "\" 203.0.113.9\"", DocError::Invalid("ip")),
            ("ip", "null", DocError::Invalid("ip")),
            ("dst_ip", "<absent>", DocError::Missing("dst_ip")),
            ("dst_ip", "3405803785", DocError::Invalid("dst_ip")),
            ("dst_port", "<absent>", DocError::Missing("dst_port")),
            ("dst_port", "0", DocError::Invalid("dst_port")),
            ("dst_port", "65536", DocError::Invalid("dst_port")),
            ("dst_port", "\"22\"", DocError::Invalid("dst_port")),
            ("port", "<absent>", DocError::Missing("port")),
            ("port", "0", DocError::Invalid("port")),
            ("port", "-5", DocError::Invalid("port")),
            ("expires_at", "<absent>", DocError::Missing("expires_at")),
            ("expires_at", "-1", DocError::Invalid("expires_at")),
            ("expires_at", "1.5", DocError::Invalid("expires_at")),
            ("expires_at", "\"soon\"", DocError::Invalid("expires_at")),
        ];
        for (field, value, want) in table {
            let doc = with(field, value);
            let got = decode(&doc);
            assert_eq!(got, Err(*want), "{field}={value}: {doc}");
            let text = want.to_string();
            assert!(text.contains(field), "{text}");
        }
        for bad in ["", "null", "[]", "\"x\"", "{", "{\"v\":1,}", "1", "{}}", "\u{0}"] {
            assert_eq!(decode(bad), Err(DocError::NotObject), "{bad:?}");
        }
        assert_eq!(decode("{}"), Err(DocError::Missing("v")));
        assert_eq!(DocError::Version.field(), Some("v"));
        assert_eq!(DocError::NotObject.field(), None);
        assert_eq!(
            DocError::Invalid("port").to_string(),
            "rule document: port: expected an integer 1..=65535"
        );
    }

    #[test]
    fn paths() {
        assert_eq!(rule_path("bridge", 3).as_str(), "bridge/rules/3");
        assert_eq!(rules_dir("bridge").as_str(), "bridge/rules");
        assert_eq!(rules_dir("a/b").as_str(), "a/b/rules");
        assert_eq!(rules_dir("/a/").as_str(), "a/rules");
        assert_eq!(rules_dir("").as_str(), "rules");
        let long = "p".repeat(64);
        assert_eq!(
            rule_path(&long, u32::MAX).as_str(),
            format!("{long}/rules/4294967295")
        );
        for (path, want) in [
            ("/bridge/rules/3", Some(3)),
            ("bridge/rules/3", Some(3)),
            ("bridge/rules/4294967294", Some(4294967294)),
            ("bridge/rules/4294967295", None),
            ("bridge/rules/99999999999", None),
            ("bridge/rules/03", None),
            ("bridge/rules/0", None),
            ("bridge/rules/+3", None),
            ("bridge/rules/-3", None),
            ("bridge/rules/3a", None),
            ("bridge/rules/", None),
            ("bridge/rules", None),
            ("bridge/rules/3/x", None),
            ("bridge/rules/x/3", None),
            ("bridge/other/3", None),
            ("other/rules/3", None),
            ("bridgex/rules/3", None),
            ("//bridge/rules/3", None),
            ("/bridge//rules/3", None),
            ("", None),
        ] {
            assert_eq!(id_from_path("bridge", path), want, "{path}");
        }
        assert_eq!(id_from_path("a/b", "/a/b/rules/7"), Some(7));
        assert_eq!(id_from_path("a/b", "/a/rules/7"), None);
        assert_eq!(id_from_path("", "/rules/7"), Some(7));
        for id in [1, 9, 10, 12345, u32::MAX - 1] {
            assert_eq!(id_from_path("x", &rule_path("x", id)), Some(id));
        }
    }
}
