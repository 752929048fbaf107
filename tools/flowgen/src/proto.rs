//! The line protocols spoken between flowgen's clients and servers.
//!
//! TCP (one exchange per line; a connection may carry several):
//!
//! ```text
//! client -> server   REQ <token>\n
//! server -> client   OK <token> <peer-ip>:<peer-port> <len> <payload>\n
//! server -> client   ERR <reason>\n            (bad request; then closes)
//! ```
//!
//! `<token>` is 1..=64 characters of `[A-Za-z0-9._:-]`, chosen by the
//! client and echoed so it can tell its own answer. `<peer>` is the client
//! address as the server saw it (after any NAT on the way). `<payload>` is
//! `<len>` bytes of [`payload_byte`], so the client can verify every byte.
//!
//! UDP (one datagram each way):
//!
//! ```text
//! client -> server   PING <nonce> <seq>
//! server -> client   ECHO <nonce> <seq> <peer-ip>:<peer-port>
//! ```

use std::fmt;
use std::net::SocketAddr;

/// Largest `<len>` a server sends and a client accepts.
pub const MAX_PAYLOAD: usize = 1 << 20;
/// Longest request line (token included) a server accepts.
pub const MAX_REQUEST_LINE: usize = 256;
/// Longest token.
pub const MAX_TOKEN: usize = 64;

/// Why a line or datagram was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtoError(pub String);

impl fmt::Display for ProtoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ProtoError {}

fn err<T>(msg: impl Into<String>) -> Result<T, ProtoError> {
    Err(ProtoError(msg.into()))
}

/// Byte `i` of every payload: a repeating printable pattern without
/// spaces or newlines.
pub fn payload_byte(i: usize) -> u8 {
    const PAT: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    PAT[i % PAT.len()]
}

/// A token is 1..=64 characters of `[A-Za-z0-9._:-]`.
pub fn valid_token(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= MAX_TOKEN
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
}

/// Strips one trailing `\n` (and a `\r` before it).
fn chomp(line: &str) -> &str {
    let line = line.strip_suffix('\n').unwrap_or(line);
    line.strip_suffix('\r').unwrap_or(line)
}

/// The request line for `token`, newline included.
pub fn request(token: &str) -> String {
    debug_assert!(valid_token(token));
    format!("REQ {token}\n")
}

/// Parses a request line (with or without its newline); returns the token.
pub fn parse_request(line: &str) -> Result<&str, ProtoError> {
    let line = chomp(line);
    let Some(token) = line.strip_prefix("REQ ") else {
        return err("request does not start with 'REQ '");
    };
    if !valid_token(token) {
        return err("bad token");
    }
    Ok(token)
}

/// The reply to `token` from a client seen as `peer`, with `len` payload
/// bytes, newline included.
pub fn reply(token: &str, peer: SocketAddr, len: usize) -> Vec<u8> {
    let mut out = format!("OK {token} {peer} {len} ").into_bytes();
    out.reserve(len + 1);
    out.extend((0..len).map(payload_byte));
    out.push(b'\n');
    out
}

/// The error reply, newline included.
pub fn error_reply(reason: &str) -> Vec<u8> {
    let reason: String = reason
        .chars()
        .map(|c| if c == '\n' { ' ' } else { c })
        .collect();
    format!("ERR {reason}\n").into_bytes()
}

/// A parsed, verified `OK` reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub token: String,
    pub peer: SocketAddr,
    pub len: usize,
}

/// Parses a reply line (with or without its newline) and verifies its
/// payload: length and every byte.
pub fn parse_reply(line: &str) -> Result<Reply, ProtoError> {
    let line = chomp(line);
    if let Some(reason) = line.strip_prefix("ERR ") {
        return err(format!("server error: {reason}"));
    }
    let Some(rest) = line.strip_prefix("OK ") else {
        return err("reply does not start with 'OK '");
    };
    let mut parts = rest.splitn(4, ' ');
    let token = parts.next().unwrap_or("");
    let peer = parts
        .next()
        .ok_or_else(|| ProtoError("reply has no peer".into()))?;
    let len = parts
        .next()
        .ok_or_else(|| ProtoError("reply has no length".into()))?;
    let payload = parts.next().unwrap_or("");
    if !valid_token(token) {
        return err("bad token in reply");
    }
    let peer: SocketAddr = peer
        .parse()
        .map_err(|_| ProtoError(format!("bad peer address in reply: {peer:.40}")))?;
    let len: usize = len
        .parse()
        .map_err(|_| ProtoError(format!("bad length in reply: {len:.20}")))?;
    if len > MAX_PAYLOAD {
        return err(format!("payload length {len} over {MAX_PAYLOAD}"));
    }
    if payload.len() != len {
        return err(format!(
            "payload has {} bytes, header says {len}",
            payload.len()
        ));
    }
    if let Some(i) = payload
        .bytes()
        .enumerate()
        .position(|(i, b)| b != payload_byte(i))
    {
        return err(format!("payload corrupt at byte {i}"));
    }
    Ok(Reply {
        token: token.to_string(),
        peer,
        len,
    })
}

/// The UDP request datagram.
pub fn udp_request(nonce: u64, seq: u64) -> Vec<u8> {
    format!("PING {nonce} {seq}").into_bytes()
}

/// Parses a UDP request datagram: `(nonce, seq)`.
pub fn parse_udp_request(d: &[u8]) -> Result<(u64, u64), ProtoError> {
    let s = std::str::from_utf8(d).map_err(|_| ProtoError("not UTF-8".into()))?;
    let Some(rest) = s.strip_prefix("PING ") else {
        return err("datagram does not start with 'PING '");
    };
    let mut it = rest.split(' ');
    let nonce = it.next().and_then(|v| v.parse().ok());
    let seq = it.next().and_then(|v| v.parse().ok());
    match (nonce, seq, it.next()) {
        (Some(n), Some(q), None) => Ok((n, q)),
        _ => err("bad PING datagram"),
    }
}

/// The UDP reply datagram.
pub fn udp_reply(nonce: u64, seq: u64, peer: SocketAddr) -> Vec<u8> {
    format!("ECHO {nonce} {seq} {peer}").into_bytes()
}

/// Parses a UDP reply datagram: `(nonce, seq, peer)`.
pub fn parse_udp_reply(d: &[u8]) -> Result<(u64, u64, SocketAddr), ProtoError> {
    let s = std::str::from_utf8(d).map_err(|_| ProtoError("not UTF-8".into()))?;
    let Some(rest) = s.strip_prefix("ECHO ") else {
        return err("datagram does not start with 'ECHO '");
    };
    let mut it = rest.split(' ');
    let nonce = it.next().and_then(|v| v.parse().ok());
    let seq = it.next().and_then(|v| v.parse().ok());
    let peer = it.next().and_then(|v| v.parse().ok());
    match (nonce, seq, peer, it.next()) {
        (Some(n), Some(q), Some(p), None) => Ok((n, q, p)),
        _ => err("bad ECHO datagram"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn request_round_trip() {
        let r = request("c17.r2");
        assert_eq!(r, "REQ c17.r2\n");
        assert_eq!(parse_request(&r), Ok("c17.r2"));
        assert_eq!(parse_request("REQ x\r\n"), Ok("x"));
        assert_eq!(parse_request("REQ x"), Ok("x"));
    }

    #[test]
    fn bad_requests() {
        for l in [
            "",
            "\n",
            "REQ \n",
            "REQ a b\n",
            "GET / HTTP/1.0\n",
            "req x\n",
            "REQ x\n\n",
        ] {
            assert!(parse_request(l).is_err(), "{l:?}");
        }
        let long = format!("REQ {}\n", "a".repeat(MAX_TOKEN + 1));
        assert!(parse_request(&long).is_err());
        let max = format!("REQ {}\n", "a".repeat(MAX_TOKEN));
        assert!(parse_request(&max).is_ok());
        assert!(max.len() <= MAX_REQUEST_LINE);
    }

    #[test]
    fn reply_round_trip() {
        for len in [0, 1, 35, 36, 37, 1000, MAX_PAYLOAD] {
            let r = reply("t1", sa("10.0.0.2:40000"), len);
            assert_eq!(
                r.len(),
                format!("OK t1 10.0.0.2:40000 {len} ").len() + len + 1
            );
            let line = String::from_utf8(r).unwrap();
            let p = parse_reply(&line).unwrap();
            assert_eq!(
                p,
                Reply {
                    token: "t1".into(),
                    peer: sa("10.0.0.2:40000"),
                    len
                }
            );
        }
        // IPv6 peers format as [addr]:port and parse back.
        let line = String::from_utf8(reply("t", sa("[::1]:5"), 3)).unwrap();
        assert_eq!(parse_reply(&line).unwrap().peer, sa("[::1]:5"));
    }

    #[test]
    fn reply_is_verified() {
        let good = String::from_utf8(reply("t", sa("1.2.3.4:5"), 10)).unwrap();
        assert!(parse_reply(&good).is_ok());
        // One byte of payload changed.
        let bad = good.replacen("abc", "abd", 1);
        assert!(parse_reply(&bad)
            .unwrap_err()
            .0
            .contains("corrupt at byte 2"));
        // Truncated payload.
        let short = good.replacen("abcdefghij", "abcdefghi", 1);
        assert!(parse_reply(&short).unwrap_err().0.contains("9 bytes"));
        for l in [
            "",
            "OK\n",
            "OK t\n",
            "OK t 1.2.3.4:5\n",
            "OK t 1.2.3.4 0 \n",
            "OK t 1.2.3.4:5 x \n",
            "OK t 1.2.3.4:5 2000000 \n",
            "OK  1.2.3.4:5 0 \n",
            "HELLO\n",
        ] {
            assert!(parse_reply(l).is_err(), "{l:?}");
        }
        assert!(parse_reply("ERR bad token\n")
            .unwrap_err()
            .0
            .contains("server error: bad token"));
        // A zero-length payload may come without the trailing space.
        assert_eq!(parse_reply("OK t 1.2.3.4:5 0").unwrap().len, 0);
    }

    #[test]
    fn error_reply_is_one_line() {
        assert_eq!(error_reply("a\nb"), b"ERR a b\n");
    }

    #[test]
    fn udp_round_trip() {
        let d = udp_request(42, 7);
        assert_eq!(d, b"PING 42 7");
        assert_eq!(parse_udp_request(&d), Ok((42, 7)));
        let e = udp_reply(42, 7, sa("10.0.0.2:1234"));
        assert_eq!(e, b"ECHO 42 7 10.0.0.2:1234");
        assert_eq!(parse_udp_reply(&e), Ok((42, 7, sa("10.0.0.2:1234"))));
        for d in [
            &b""[..],
            b"PING",
            b"PING 1",
            b"PING 1 2 3",
            b"PING x 2",
            b"\xff\xfe",
            b"ECHO 1 2",
        ] {
            assert!(parse_udp_request(d).is_err(), "{d:?}");
        }
        for d in [
            &b""[..],
            b"ECHO 1 2",
            b"ECHO 1 2 nothere",
            b"ECHO 1 2 1.2.3.4:5 x",
            b"PING 1 2",
        ] {
            assert!(parse_udp_reply(d).is_err(), "{d:?}");
        }
    }

    #[test]
    fn tokens() {
        assert!(valid_token("c0"));
        assert!(valid_token("a.b:c-d_e"));
        assert!(!valid_token(""));
        assert!(!valid_token("a b"));
        assert!(!valid_token("a/b"));
        assert!(!valid_token("é"));
    }
}
