//! JSON request bodies (with an error naming the field at fault) and JSON
//! output into fixed buffers, through serde-json-core.
//!
//! Bodies are JSON objects. Their strings may use escapes (unescaped into a
//! small buffer: an IP address never needs more); numbers are integers.
//! Unknown fields, duplicate fields, missing required fields and values
//! of the wrong type or out of range are all refused, each with the name
//! of the field ([`BodyError::field`]).
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

use core::fmt;
use core::net::Ipv4Addr;
use core::str::FromStr;

use heapless::String;
use serde::de::{self, DeserializeSeed, MapAccess, Visitor};
use serde::Serialize;

use crate::http::SliceWriter;
use crate::rules::{Proto, RuleSpec};

/// Longest field name echoed back in an error.
pub const FIELD_LEN: usize = 32;
/// Unescaped string buffer size (longest string value or key accepted).
const UNESCAPE_LEN: usize = 64;

/// A field name in an error (unknown keys are echoed, cut to
/// [`FIELD_LEN`] bytes).
pub type FieldName = String<FIELD_LEN>;

/// Why a body was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BodyError {
    pub message: &'static str,
    pub field: Option<FieldName>,
}

impl BodyError {
    fn new(message: &'static str, field: Option<&str>) -> Self {
        BodyError {
            message,
            field: field.map(field_name),
        }
    }
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(f, "{}: {}", field, self.message),
            None => f.write_str(self.message),
        }
    }
}

/// `s` cut to [`FIELD_LEN`] bytes at a character boundary.
pub fn field_name(s: &str) -> FieldName {
    let mut out = FieldName::new();
    for c in s.chars() {
        if out.push(c).is_err() {
            break;
        }
    }
    out
}

/// `POST /insert`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InsertRequest {
    pub spec: RuleSpec,
    /// The external port asked for, if any.
    pub port: Option<u16>,
    /// Lifetime in seconds, if any.
    pub ttl_s: Option<u32>,
}

/// `POST /remove`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RemoveRequest {
    pub spec: RuleSpec,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Insert,
    Remove,
}

impl Kind {
    /// The name of the client field in this kind of body.
    fn client_field(self) -> &'static str {
        match self {
            Kind::Insert => "ip",
            Kind::Remove => "src_ip",
        }
    }
}

#[derive(Default)]
struct Fields {
    client: Option<Ipv4Addr>,
    client_seen: bool,
    dst_ip: Option<Ipv4Addr>,
    dst_port: Option<u16>,
    proto: Option<Proto>,
    port: Option<Option<u16>>,
    ttl: Option<Option<u32>>,
}

const MSG_IP: &str = "expected an IPv4 address as a string, e.g. \"10.0.0.1\"";
const MSG_PORT: &str = "expected a port number, 1..=65535";
const MSG_OPT_PORT: &str = "expected a port number, 1..=65535, or null";
const MSG_PROTO: &str = "expected \"tcp\" or \"udp\"";
const MSG_TTL: &str = "expected a TTL in seconds, 1..=4294967295, or null";
const MSG_UNKNOWN: &str = "unknown field";
const MSG_DUPLICATE: &str = "duplicate field";
const MSG_MISSING: &str = "missing field";
const MSG_INVALID_JSON: &str = "invalid JSON";
const MSG_NOT_OBJECT: &str = "expected a JSON object";
const MSG_EMPTY: &str = "missing JSON body";

/// Parses a `POST /insert` body:
/// `{"ip": C, "dst_ip": I, "dst_port": p, "proto"?: "tcp"|"udp", "port"?: P, "ttl"?: s}`
/// (`src_ip` is accepted for `ip`).
pub fn parse_insert(body: &[u8]) -> Result<InsertRequest, BodyError> {
    let f = parse_fields(body, Kind::Insert)?;
    let spec = spec(&f, Kind::Insert)?;
    Ok(InsertRequest {
        spec,
        port: f.port.flatten(),
        ttl_s: f.ttl.flatten(),
    })
}

/// Parses a `POST /remove` body:
/// `{"src_ip": C, "dst_ip": I, "dst_port": p, "proto"?: "tcp"|"udp"}`
/// (`ip` is accepted for `src_ip`).
pub fn parse_remove(body: &[u8]) -> Result<RemoveRequest, BodyError> {
    let f = parse_fields(body, Kind::Remove)?;
    Ok(RemoveRequest {
        spec: spec(&f, Kind::Remove)?,
    })
}

fn spec(f: &Fields, kind: Kind) -> Result<RuleSpec, BodyError> {
    let missing = |name| BodyError::new(MSG_MISSING, Some(name));
    Ok(RuleSpec {
        client: f.client.ok_or_else(|| missing(kind.client_field()))?,
        int_addr: f.dst_ip.ok_or_else(|| missing("dst_ip"))?,
        int_port: f.dst_port.ok_or_else(|| missing("dst_port"))?,
        proto: f.proto.unwrap_or_default(),
    })
}

fn parse_fields(body: &[u8], kind: Kind) -> Result<Fields, BodyError> {
    if crate::http::trim(body)
        .iter()
        .all(|b| matches!(b, b'\r' | b'\n'))
    {
        return Err(BodyError::new(MSG_EMPTY, None));
    }
    let mut fields = Fields::default();
    let mut error = None;
    let mut unescape = [0u8; UNESCAPE_LEN];
    let mut de = serde_json_core::de::Deserializer::new(body, Some(&mut unescape));
    let seed = BodySeed {
        kind,
        fields: &mut fields,
        error: &mut error,
    };
    let parsed = seed.deserialize(&mut de).and_then(|()| de.end());
    use serde_json_core::de::Error as E;
    match (parsed, error) {
        (Ok(_), _) => Ok(fields),
        // A value of the wrong type or out of range, an unknown or
        // duplicate field: the field is at fault.
        (
            Err(
                E::InvalidType
                | E::InvalidNumber
                | E::CustomError
                | E::InvalidUnicodeCodePoint
                | E::InvalidEscapeSequence
                | E::EscapedStringIsTooLong,
            ),
            Some(e),
        ) => Err(e),
        (Err(E::InvalidType), None) => Err(BodyError::new(MSG_NOT_OBJECT, None)),
        // Anything else is broken JSON.
        (Err(_), _) => Err(BodyError::new(MSG_INVALID_JSON, None)),
    }
}

struct BodySeed<'c> {
    kind: Kind,
    fields: &'c mut Fields,
    error: &'c mut Option<BodyError>,
}

impl<'de> DeserializeSeed<'de> for BodySeed<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for BodySeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let BodySeed {
            kind,
            fields,
            error,
        } = self;
        while let Some(key) = map.next_key_seed(KeySeed)? {
            let key = key.as_str();
            // Records what is wrong with this field; the error passed on
            // tells a syntax error (reported as such) from a bad value.
            let mut note = |message: &'static str| {
                *error = Some(BodyError::new(message, Some(key)));
            };
            let duplicate = match key {
                "ip" | "src_ip" => fields.client_seen,
                "dst_ip" => fields.dst_ip.is_some(),
                "dst_port" => fields.dst_port.is_some(),
                "proto" => fields.proto.is_some(),
                "port" if kind == Kind::Insert => fields.port.is_some(),
                "ttl" if kind == Kind::Insert => fields.ttl.is_some(),
                _ => {
                    note(MSG_UNKNOWN);
                    return Err(de::Error::custom(MSG_UNKNOWN));
                }
            };
            if duplicate {
                note(MSG_DUPLICATE);
                return Err(de::Error::custom(MSG_DUPLICATE));
            }
            match key {
                "ip" | "src_ip" | "dst_ip" => {
                    let v = map.next_value_seed(IpSeed).inspect_err(|_| note(MSG_IP))?;
                    if key == "dst_ip" {
                        fields.dst_ip = Some(v);
                    } else {
                        fields.client_seen = true;
                        fields.client = Some(v);
                    }
                }
                "dst_port" => {
                    let v = map
                        .next_value_seed(IntSeed {
                            max: u16::MAX.into(),
                        })
                        .inspect_err(|_| note(MSG_PORT))?;
                    fields.dst_port = Some(u16::try_from(v).unwrap_or(0));
                }
                "proto" => {
                    let v = map
                        .next_value_seed(ProtoSeed)
                        .inspect_err(|_| note(MSG_PROTO))?;
                    fields.proto = Some(v);
                }
                "port" => {
                    let v = map
                        .next_value_seed(OptionSeed(IntSeed {
                            max: u16::MAX.into(),
                        }))
                        .inspect_err(|_| note(MSG_OPT_PORT))?;
                    fields.port = Some(v.map(|p| u16::try_from(p).unwrap_or(0)));
                }
                _ => {
                    let v = map
                        .next_value_seed(OptionSeed(IntSeed {
                            max: u32::MAX.into(),
                        }))
                        .inspect_err(|_| note(MSG_TTL))?;
                    fields.ttl = Some(v.map(|t| u32::try_from(t).unwrap_or(0)));
                }
            }
        }
        Ok(())
    }
}

/// An integer in `1..=max`, written as any JSON number with an integral
/// value (`22`, `22.0` and `2.2e1` alike).
#[derive(Clone, Copy)]
struct IntSeed {
    max: u64,
}

impl<'de> DeserializeSeed<'de> for IntSeed {
    type Value = u64;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<u64, D::Error> {
        d.deserialize_f64(self)
    }
}

impl Visitor<'_> for IntSeed {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an integer in 1..={}", self.max)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<u64, E> {
        // NaN (serde-json-core's `null`) fails the range test; a float
        // cast saturates, so the round trip catches fractions.
        if v >= 1.0 && v <= self.max as f64 && (v as u64) as f64 == v {
            Ok(v as u64)
        } else {
            Err(E::custom("out of range"))
        }
    }
}

/// `null` or the inner value.
struct OptionSeed<S>(S);

impl<'de, S: DeserializeSeed<'de> + Copy> DeserializeSeed<'de> for OptionSeed<S> {
    type Value = Option<S::Value>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de, S: DeserializeSeed<'de> + Copy> Visitor<'de> for OptionSeed<S> {
    type Value = Option<S::Value>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a value or null")
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        self.0.deserialize(d).map(Some)
    }
}

/// Object keys, cut to [`FIELD_LEN`] bytes (no known key is longer).
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = FieldName;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<FieldName, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for KeySeed {
    type Value = FieldName;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<FieldName, E> {
        Ok(field_name(v))
    }
}

struct IpSeed;

impl<'de> DeserializeSeed<'de> for IpSeed {
    type Value = Ipv4Addr;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Ipv4Addr, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for IpSeed {
    type Value = Ipv4Addr;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an IPv4 address")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Ipv4Addr, E> {
        Ipv4Addr::from_str(v).map_err(|_| E::custom("bad address"))
    }
}

struct ProtoSeed;

impl<'de> DeserializeSeed<'de> for ProtoSeed {
    type Value = Proto;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Proto, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for ProtoSeed {
    type Value = Proto;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("tcp or udp")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Proto, E> {
        Proto::from_name(v).ok_or_else(|| E::custom("bad protocol"))
    }
}

// ---------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------

/// Serializes `value` at the end of `w`; false (and nothing written) if it
/// does not fit.
pub fn write_json<T: Serialize + ?Sized>(w: &mut SliceWriter<'_>, value: &T) -> bool {
    match serde_json_core::to_slice(value, w.spare()) {
        Ok(n) => {
            w.advance(n);
            true
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn err(
        r: Result<impl fmt::Debug, BodyError>,
    ) -> (std::string::String, Option<std::string::String>) {
        let e = r.unwrap_err();
        (e.message.into(), e.field.map(|f| f.as_str().into()))
    }

    #[test]
    fn insert_minimal_and_full() {
        let r =
            parse_insert(br#"{"ip": "203.0.113.7", "dst_ip": "192.168.252.10", "dst_port": 22}"#)
                .unwrap();
        assert_eq!(
            r,
            InsertRequest {
                spec: RuleSpec {
                    client: ip("203.0.113.7"),
                    int_addr: ip("192.168.252.10"),
                    int_port: 22,
                    proto: Proto::Tcp
                },
                port: None,
                ttl_s: None
            }
        );
        let r = parse_insert(
            br#" {"ttl":60,"port":40000,"proto":"udp","dst_port":53,"dst_ip":"10.1.1.1","src_ip":"1.2.3.4"} "#,
        )
        .unwrap();
        assert_eq!(r.spec.proto, Proto::Udp);
        assert_eq!(r.spec.client, ip("1.2.3.4"));
        assert_eq!(r.port, Some(40000));
        assert_eq!(r.ttl_s, Some(60));
        let r = parse_insert(
            br#"{"ip":"1.2.3.4","dst_ip":"10.1.1.1","dst_port":53,"port":null,"ttl":null}"#,
        )
        .unwrap();
        assert_eq!((r.port, r.ttl_s), (None, None));
        // Escapes in strings.
        let r = parse_insert(br#"{"\u0069p":"1.2.3.\u0034","dst_ip":"10.1.1.1","dst_port":53}"#)
            .unwrap();
        assert_eq!(r.spec.client, ip("1.2.3.4"));
    }

    #[test]
    fn field_errors() {
        let cases: &[(&[u8], &str, Option<&str>)] = &[
            (b"", MSG_EMPTY, None),
            (b"  \r\n", MSG_EMPTY, None),
            (b"[]", MSG_NOT_OBJECT, None),
            (b"\"x\"", MSG_NOT_OBJECT, None),
            (b"{", MSG_INVALID_JSON, None),
            (b"{\"ip\"", MSG_INVALID_JSON, None),
            (b"{}", MSG_MISSING, Some("ip")),
            (b"{} x", MSG_INVALID_JSON, None),
            (br#"{"ip":"1.2.3.4"}"#, MSG_MISSING, Some("dst_ip")),
            (
                br#"{"ip":"1.2.3.4","dst_ip":"1.1.1.1"}"#,
                MSG_MISSING,
                Some("dst_port"),
            ),
            (
                br#"{"ip":"1.2.3.256","dst_ip":"1.1.1.1","dst_port":1}"#,
                MSG_IP,
                Some("ip"),
            ),
            (
                br#"{"ip":16909060,"dst_ip":"1.1.1.1","dst_port":1}"#,
                MSG_IP,
                Some("ip"),
            ),
            (
                br#"{"ip":"1.2.3.4","dst_ip":"1.1.1.1","dst_port":0}"#,
                MSG_PORT,
                Some("dst_port"),
            ),
            (
                br#"{"ip":"1.2.3.4","dst_ip":"1.1.1.1","dst_port":65536}"#,
                MSG_PORT,
                Some("dst_port"),
            ),
            (
                br#"{"ip":"1.2.3.4","dst_ip":"1.1.1.1","dst_port":-1}"#,
                MSG_PORT,
                Some("dst_port"),
            ),
            (
                br#"{"ip":"1.2.3.4","dst_ip":"1.1.1.1","dst_port":"22"}"#,
                MSG_PORT,
                Some("dst_port"),
            ),
            (
                br#"{"ip":"1.2.3.4","dst_ip":"1.1.1.1","dst_port":2.5}"#,
                MSG_PORT,
                Some("dst_port"),
            ),
            (
                br#"{"ip":"1.2.3.4","dst_ip":"1.1.1.1","dst_port":22,"proto":"icmp"}"#,
                MSG_PROTO,
                Some("proto"),
            ),
            (
                br#"{"ip":"1.2.3.4","dst_ip":"1.1.1.1","dst_port":22,"port":0}"#,
                MSG_OPT_PORT,
                Some("port"),
            ),
            (
                br#"{"ip":"1.2.3.4","dst_ip":"1.1.1.1","dst_port":22,"ttl":0}"#,
                MSG_TTL,
                Some("ttl"),
            ),
            (
                br#"{"ip":"1.2.3.4","dst_ip":"1.1.1.1","dst_port":22,"ttl":4294967296}"#,
                MSG_TTL,
                Some("ttl"),
            ),
            (
                br#"{"ip":"1.2.3.4","dst_ip":"1.1.1.1","dst_port":22,"tll":5}"#,
                MSG_UNKNOWN,
                Some("tll"),
            ),
            (
                br#"{"ip":"1.2.3.4","src_ip":"1.2.3.4","dst_ip":"1.1.1.1","dst_port":22}"#,
                MSG_DUPLICATE,
                Some("src_ip"),
            ),
            (
                br#"{"ip":"1.2.3.4","dst_ip":"1.1.1.1","dst_ip":"1.1.1.1","dst_port":22}"#,
                MSG_DUPLICATE,
                Some("dst_ip"),
            ),
            (
                br#"{"ip":"1.2.3.4","dst_ip":"1.1.1.1","dst_port":22,}"#,
                MSG_INVALID_JSON,
                None,
            ),
        ];
        for (body, msg, field) in cases {
            let got = err(parse_insert(body));
            assert_eq!(
                (got.0.as_str(), got.1.as_deref()),
                (*msg, *field),
                "{}",
                std::string::String::from_utf8_lossy(body)
            );
        }
        // Long unknown keys are cut.
        let long = std::format!("{{\"{}\":1}}", "k".repeat(50));
        let (m, f) = err(parse_insert(long.as_bytes()));
        assert_eq!(m, MSG_UNKNOWN);
        assert_eq!(f.unwrap().len(), FIELD_LEN);
    }

    #[test]
    fn remove_bodies() {
        let r = parse_remove(br#"{"src_ip":"1.2.3.4","dst_ip":"10.0.0.9","dst_port":80}"#).unwrap();
        assert_eq!(r.spec.int_port, 80);
        let r =
            parse_remove(br#"{"ip":"1.2.3.4","dst_ip":"10.0.0.9","dst_port":80,"proto":"udp"}"#)
                .unwrap();
        assert_eq!(r.spec.proto, Proto::Udp);
        assert_eq!(
            err(parse_remove(b"{}")),
            (MSG_MISSING.into(), Some("src_ip".into()))
        );
        // Insert-only fields are unknown here.
        assert_eq!(
            err(parse_remove(
                br#"{"src_ip":"1.2.3.4","dst_ip":"10.0.0.9","dst_port":80,"ttl":5}"#
            )),
            (MSG_UNKNOWN.into(), Some("ttl".into()))
        );
    }

    #[test]
    fn output() {
        #[derive(Serialize)]
        struct T<'a> {
            a: u32,
            s: &'a str,
        }
        let mut buf = [0u8; 32];
        let mut w = SliceWriter::new(&mut buf);
        assert!(write_json(&mut w, &T { a: 1, s: "q\"\\\n" }));
        assert_eq!(w.written(), br#"{"a":1,"s":"q\"\\\n"}"#);
        let n = w.len();
        assert!(!write_json(
            &mut w,
            &T {
                a: 1,
                s: "this does not fit any more"
            }
        ));
        assert_eq!(w.len(), n);
    }
}
