//! Complete HTTP/1.1 requests to Irmin's GraphQL endpoint.
//!
//! Every request is `POST /graphql` with `Connection: close` (one exchange
//! per TCP connection) and a JSON body `{"query": ..., "variables": ...}`.
//! The query texts are constants; values (branch, path, documents, commit
//! message) only ever travel as variables, JSON-escaped by
//! [`push_json_str`], so nothing a rule or the configuration contains can
//! change the meaning of a query.
//!
//! Each builder appends to the caller's `Vec<u8>` (it does not clear it).
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

use alloc::vec::Vec;
use core::fmt::{self, Write as _};
use core::net::SocketAddrV4;

use crate::config::IrminEndpoint;

/// `test_and_set`: write `$s` (or remove with null) if the path holds `$t`
/// (or is absent with null).
pub const TEST_AND_SET_QUERY: &str = "mutation ($b: BranchName!, $p: Path!, $t: Value, $s: Value, $i: InfoInput) { test_and_set(branch: $b, path: $p, test: $t, set: $s, info: $i) { hash } }";
/// `set`: write unconditionally.
pub const SET_QUERY: &str = "mutation ($b: BranchName!, $p: Path!, $v: Value!, $i: InfoInput) { set(branch: $b, path: $p, value: $v, info: $i) { hash } }";
/// `get`: the value at a path, or null.
pub const GET_QUERY: &str =
    "query ($b: BranchName!, $p: Path!) { branch(name: $b) { tree { get(path: $p) } } }";
/// `get_tree ... list_contents_recursively`: every value under a path.
pub const LIST_QUERY: &str = "query ($b: BranchName!, $p: Path!) { branch(name: $b) { tree { get_tree(path: $p) { list_contents_recursively { path value } } } } }";

/// The request target.
pub const GRAPHQL_PATH: &str = "/graphql";
/// The `User-Agent` sent.
pub const USER_AGENT: &str = "pih-bridge";

/// Commit metadata (`InfoInput`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Info<'a> {
    pub author: &'a str,
    pub message: &'a str,
}

/// Appends `s` as a JSON string literal (quotes included): `"` and `\`
/// escaped, control characters as `\n`-style or `\u00XX` escapes, other
/// characters (including non-ASCII) as they are.
pub fn push_json_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            '\u{8}' => out.extend_from_slice(b"\\b"),
            '\u{c}' => out.extend_from_slice(b"\\f"),
            c if u32::from(c) < 0x20 || c == '\u{7f}' => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                let n = u32::from(c);
                out.extend_from_slice(b"\\u00");
                for shift in [4u32, 0] {
                    let digit = HEX.get(((n >> shift) & 0xf) as usize).copied();
                    out.push(digit.unwrap_or(b'0'));
                }
            }
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out.push(b'"');
}

fn push_opt_json_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => push_json_str(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

/// Writes `fmt::Arguments` into a byte vector.
struct VecWriter<'a>(&'a mut Vec<u8>);

impl fmt::Write for VecWriter<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// A variable of the body: name and value writer.
enum Var<'a> {
    Str(&'a str),
    OptStr(Option<&'a str>),
    Info(Info<'a>),
}

fn body(query: &str, vars: &[(&str, Var<'_>)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(query.len().saturating_add(512));
    out.extend_from_slice(b"{\"query\":");
    push_json_str(&mut out, query);
    out.extend_from_slice(b",\"variables\":{");
    for (i, (name, var)) in vars.iter().enumerate() {
        if i != 0 {
            out.push(b',');
        }
        push_json_str(&mut out, name);
        out.push(b':');
        match var {
            Var::Str(s) => push_json_str(&mut out, s),
            Var::OptStr(s) => push_opt_json_str(&mut out, *s),
            Var::Info(info) => {
                out.extend_from_slice(b"{\"author\":");
                push_json_str(&mut out, info.author);
                out.extend_from_slice(b",\"message\":");
                push_json_str(&mut out, info.message);
                out.push(b'}');
            }
        }
    }
    out.extend_from_slice(b"}}");
    out
}

/// Appends the head and `body` of a `POST /graphql` to `host`.
fn post(out: &mut Vec<u8>, host: SocketAddrV4, body: &[u8]) {
    out.reserve(body.len().saturating_add(256));
    let _ = write!(
        VecWriter(out),
        "POST {GRAPHQL_PATH} HTTP/1.1\r\n\
         Host: {host}\r\n\
         Content-Type: application/json\r\n\
         Accept: application/json\r\n\
         User-Agent: {USER_AGENT}\r\n\
         Connection: close\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    out.extend_from_slice(body);
}

/// `test_and_set` of `path` on the endpoint's branch: `test` is the value
/// expected (`None`: must be absent), `set` the new one (`None`: remove).
pub fn test_and_set(
    out: &mut Vec<u8>,
    ep: &IrminEndpoint,
    path: &str,
    test: Option<&str>,
    set: Option<&str>,
    info: Info<'_>,
) {
    let b = body(
        TEST_AND_SET_QUERY,
        &[
            ("b", Var::Str(&ep.branch)),
            ("p", Var::Str(path)),
            ("t", Var::OptStr(test)),
            ("s", Var::OptStr(set)),
            ("i", Var::Info(info)),
        ],
    );
    post(out, ep.addr, &b);
}

/// `set` of `path` to `value` on the endpoint's branch, unconditionally.
pub fn set(out: &mut Vec<u8>, ep: &IrminEndpoint, path: &str, value: &str, info: Info<'_>) {
    let b = body(
        SET_QUERY,
        &[
            ("b", Var::Str(&ep.branch)),
            ("p", Var::Str(path)),
            ("v", Var::Str(value)),
            ("i", Var::Info(info)),
        ],
    );
    post(out, ep.addr, &b);
}

/// `get` of `path` on the endpoint's branch.
pub fn get(out: &mut Vec<u8>, ep: &IrminEndpoint, path: &str) {
    let b = body(
        GET_QUERY,
        &[("b", Var::Str(&ep.branch)), ("p", Var::Str(path))],
    );
    post(out, ep.addr, &b);
}

/// Every `(path, value)` under `path` on the endpoint's branch.
pub fn list(out: &mut Vec<u8>, ep: &IrminEndpoint, path: &str) {
    let b = body(
        LIST_QUERY,
        &[("b", Var::Str(&ep.branch)), ("p", Var::Str(path))],
    );
    post(out, ep.addr, &b);
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::Ipv4Addr;
    use serde_json::{json, Value};

    fn ep() -> IrminEndpoint {
        IrminEndpoint {
            addr: SocketAddrV4::new(Ipv4Addr::new(10, 0, 1, 1), 8081),
            branch: heapless::String::try_from("main").unwrap(),
            prefix: heapless::String::try_from("bridge").unwrap(),
        }
    }

    /// Splits a request into head lines and the parsed body, checking the
    /// framing on the way.
    fn split(req: &[u8]) -> (std::vec::Vec<std::string::String>, Value) {
        let text = std::str::from_utf8(req).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let lines: std::vec::Vec<_> = head.split("\r\n").map(str::to_owned).collect();
        let len: usize = lines
            .iter()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(len, body.len());
        // Also acceptable to httparse (as a server would parse it).
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut r = httparse::Request::new(&mut headers);
        assert!(r.parse(req).unwrap().is_complete());
        assert_eq!(r.method, Some("POST"));
        assert_eq!(r.path, Some("/graphql"));
        (lines, serde_json::from_str(body).unwrap())
    }

    #[test]
    fn head() {
        let mut out = Vec::new();
        get(&mut out, &ep(), "bridge/rules/3");
        let (lines, body) = split(&out);
        assert_eq!(
            lines[..6],
            [
                "POST /graphql HTTP/1.1",
                "Host: 10.0.1.1:8081",
                "Content-Type: application/json",
                "Accept: application/json",
                "User-Agent: pih-bridge",
                "Connection: close",
            ]
        );
        assert!(lines[6].starts_with("Content-Length: "));
        assert_eq!(lines.len(), 7);
        assert_eq!(
            body,
            json!({"query": GET_QUERY, "variables": {"b": "main", "p": "bridge/rules/3"}})
        );
        // Appends.
        let before = out.len();
        list(&mut out, &ep(), "bridge/rules");
        assert!(out[before..].starts_with(b"POST /graphql HTTP/1.1\r\n"));
        let (_, body) = split(&out[before..]);
        assert_eq!(
            body,
            json!({"query": LIST_QUERY, "variables": {"b": "main", "p": "bridge/rules"}})
        );
    }

    #[test]
    fn write_requests() {
        let doc = r#"{"v":1,"id":3,"ip":"1.2.3.4"}"#;
        let info = Info {
            author: "pih-bridge",
            message: "insert rule 3: tcp 203.0.113.9 -> 192.168.252.10:22 via port 18407",
        };
        let mut out = Vec::new();
        test_and_set(&mut out, &ep(), "bridge/rules/3", None, Some(doc), info);
        let (_, body) = split(&out);
        assert_eq!(
            body,
            json!({"query": TEST_AND_SET_QUERY, "variables": {
                "b": "main", "p": "bridge/rules/3", "t": null, "s": doc,
                "i": {"author": "pih-bridge", "message": info.message}}})
        );
        out.clear();
        test_and_set(&mut out, &ep(), "bridge/rules/3", Some(doc), None, info);
        let (_, body) = split(&out);
        assert_eq!(body["variables"]["t"], doc);
        assert_eq!(body["variables"]["s"], Value::Null);
        out.clear();
        set(&mut out, &ep(), "bridge/rules/3", doc, info);
        let (_, body) = split(&out);
        assert_eq!(
            body,
            json!({"query": SET_QUERY, "variables": {
                "b": "main", "p": "bridge/rules/3", "v": doc,
                "i": {"author": "pih-bridge", "message": info.message}}})
        );
    }

    #[test]
    fn escaping() {
        let nasty: std::string::String = (0u32..0x80)
            .filter_map(char::from_u32)
            .chain("\"\\\"}]{[ \u{e9}\u{2028}\u{1f600}\u{fffd}".chars())
            .collect();
        let mut out = Vec::new();
        let info = Info {
            author: &nasty,
            message: "a\"b\\c\nd\u{0}e\u{1f}",
        };
        test_and_set(&mut out, &ep(), &nasty, Some(&nasty), Some("x\"y"), info);
        let (_, body) = split(&out);
        assert_eq!(body["variables"]["p"], nasty.as_str());
        assert_eq!(body["variables"]["t"], nasty.as_str());
        assert_eq!(body["variables"]["s"], "x\"y");
        assert_eq!(body["variables"]["i"]["author"], nasty.as_str());
        assert_eq!(body["variables"]["i"]["message"], info.message);
        // No raw control characters anywhere in the body.
        let start = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        assert!(out[start..].iter().all(|&b| b >= 0x20 && b != 0x7f));

        let mut v = Vec::new();
        push_json_str(&mut v, "\u{1}\u{7f}\u{8}\u{c}");
        assert_eq!(v, b"\"\\u0001\\u007f\\b\\f\"");
    }

    #[test]
    fn escaping_random() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..2000 {
            let mut s = std::string::String::new();
            for _ in 0..(x % 40) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let c = match x % 4 {
                    0 => char::from_u32((x >> 8) as u32 % 0x80),
                    1 => char::from_u32((x >> 8) as u32 % 0x800),
                    _ => char::from_u32((x >> 8) as u32 % 0x11_0000),
                };
                if let Some(c) = c {
                    s.push(c);
                }
            }
            let mut v = Vec::new();
            push_json_str(&mut v, &s);
            let back: std::string::String = serde_json::from_slice(&v).unwrap();
            assert_eq!(back, s);
        }
    }
}
