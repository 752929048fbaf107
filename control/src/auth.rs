//! Request authentication: HMAC-SHA256 with the shared key, a timestamp
//! window, and a replay cache.
//!
//! A signed request carries
//!
//! ```text
//! Authorization: PIH-HMAC-SHA256 ts=<unix seconds>,sig=<64 hex digits>
//! ```
//!
//! where `sig` is HMAC-SHA256, keyed with the configured secret (`key=`,
//! the decoded bytes, not the hex text), over
//!
//! ```text
//! METHOD "\n" TARGET "\n" TS "\n" BODY
//! ```
//!
//! - `METHOD` is the request method as sent (`POST`);
//! - `TARGET` is the request target as sent on the request line, query
//!   included (`/rules?offset=0&limit=50`);
//! - `TS` is the timestamp in decimal without leading zeros, exactly as in
//!   the header;
//! - `BODY` is the body's bytes (empty for GET and DELETE).
//!
//! [`sign`] and [`authorization`] produce them; `pihctl` uses these very
//! functions. `docs/API.md` has a worked example.
//!
//! A request passes [`Verifier::check`] when
//!
//! 1. the header parses (scheme case-insensitive, parameters in this order,
//!    hex digits of either case), else 401;
//! 2. the bridge knows the time (`now_unix` is `Some`), else 503: without
//!    a wall clock a timestamp cannot be judged, and accepting it anyway
//!    would let any request ever captured be replayed after a reboot. The
//!    kernel passes the Xen wall clock (shared info), which the toolstack
//!    always sets; [`plausible_unix`] filters an unset one;
//! 3. `|ts - now| <= MAX_SKEW_S` (300 s), else 401;
//! 4. the signature verifies (compared in constant time), else 401;
//! 5. the signature was not seen before, else 401 (replayed).
//!
//! Replays: every verified signature is remembered with its timestamp in
//! a cache of [`REPLAY_SLOTS`] entries. An entry is needed only while its
//! timestamp could still pass step 3. When the cache is full, the entry
//! with the oldest timestamp is dropped, and if that timestamp was still
//! inside the window, it becomes a *floor*: from then on only timestamps
//! above it are accepted. So a replay is never accepted, whatever the load;
//! the price is that more than `REPLAY_SLOTS` signed requests within one
//! second make the excess ones fail with 401 until the next second.
//!
//! The cache lives in memory: a request captured less than 300 s before a
//! reboot could be replayed once after it. Everything the API does is
//! idempotent, so such a replay repeats a change the gatekeeper made
//! itself moments before.
//!
//! With `auth=off` nothing is checked (the original gatekeeper's
//! unsigned requests); an `Authorization` header is then ignored.
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

use heapless::{String, Vec};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::MAX_KEY_LEN;

/// The `Authorization` scheme.
pub const SCHEME: &str = "PIH-HMAC-SHA256";
/// How far a request's timestamp may be from the bridge's clock, seconds.
pub const MAX_SKEW_S: u64 = 300;
/// Signatures remembered against replays.
pub const REPLAY_SLOTS: usize = 1024;
/// Bytes of a signature.
pub const SIG_LEN: usize = 32;
/// Longest `Authorization` value [`authorization`] produces.
pub const AUTHORIZATION_LEN: usize = 128;
/// Wall-clock readings before this (2020-09-13) are taken as "no clock".
pub const MIN_PLAUSIBLE_UNIX: u64 = 1_600_000_000;

type HmacSha256 = Hmac<Sha256>;

/// `Some(secs)` if `secs` looks like a real wall-clock reading (the Xen
/// wall clock is zero until the toolstack sets it).
pub fn plausible_unix(secs: u64) -> Option<u64> {
    (secs >= MIN_PLAUSIBLE_UNIX).then_some(secs)
}

fn mac(key: &[u8], method: &str, target: &str, ts: u64, body: &[u8]) -> Option<HmacSha256> {
    // HMAC takes keys of any length: this never returns `None`.
    let mut m = HmacSha256::new_from_slice(key).ok()?;
    let mut digits = [0u8; 20];
    m.update(method.as_bytes());
    m.update(b"\n");
    m.update(target.as_bytes());
    m.update(b"\n");
    m.update(decimal(ts, &mut digits));
    m.update(b"\n");
    m.update(body);
    Some(m)
}

/// `n` in decimal, no leading zeros.
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i = i.saturating_sub(1);
        if let Some(d) = buf.get_mut(i) {
            *d = b'0'.wrapping_add((n % 10) as u8);
        }
        n /= 10;
        if n == 0 || i == 0 {
            break;
        }
    }
    buf.get(i..).unwrap_or(&[])
}

/// The signature of a request.
pub fn sign(key: &[u8], method: &str, target: &str, ts: u64, body: &[u8]) -> [u8; SIG_LEN] {
    mac(key, method, target, ts, body).map_or([0; SIG_LEN], |m| m.finalize().into_bytes().into())
}

/// The whole `Authorization` header value for a request:
/// `PIH-HMAC-SHA256 ts=<ts>,sig=<hex>`.
pub fn authorization(
    key: &[u8],
    method: &str,
    target: &str,
    ts: u64,
    body: &[u8],
) -> String<AUTHORIZATION_LEN> {
    let sig = sign(key, method, target, ts, body);
    let mut s = String::new();
    // 15 + 4 + 20 + 5 + 64 bytes: always fits.
    let _ = write!(s, "{SCHEME} ts={ts},sig={}", Hex(&sig));
    s
}

/// Lowercase hex of some bytes.
pub struct Hex<'a>(pub &'a [u8]);

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// A parsed `Authorization` header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Credentials {
    pub ts: u64,
    pub sig: [u8; SIG_LEN],
}

/// Parses `PIH-HMAC-SHA256 ts=<digits>,sig=<64 hex>`. Spaces around the
/// value, after the comma and around `=` are tolerated; the timestamp must
/// have no leading zeros (it is signed as written).
pub fn parse_authorization(value: &[u8]) -> Result<Credentials, AuthError> {
    let v = core::str::from_utf8(crate::http::trim(value)).map_err(|_| AuthError::Malformed)?;
    let (scheme, params) = v.split_once([' ', '\t']).ok_or(AuthError::Malformed)?;
    if !scheme.eq_ignore_ascii_case(SCHEME) {
        return Err(AuthError::Malformed);
    }
    let (ts_part, sig_part) = params.split_once(',').ok_or(AuthError::Malformed)?;
    let ts_text = param(ts_part, "ts")?;
    let sig_text = param(sig_part, "sig")?;
    let ts = parse_ts(ts_text)?;
    let mut sig = [0u8; SIG_LEN];
    decode_hex(sig_text, &mut sig).ok_or(AuthError::Malformed)?;
    Ok(Credentials { ts, sig })
}

fn param<'a>(part: &'a str, name: &str) -> Result<&'a str, AuthError> {
    let (k, v) = part.split_once('=').ok_or(AuthError::Malformed)?;
    if k.trim().eq_ignore_ascii_case(name) {
        Ok(v.trim())
    } else {
        Err(AuthError::Malformed)
    }
}

fn parse_ts(text: &str) -> Result<u64, AuthError> {
    let b = text.as_bytes();
    let canonical = !b.is_empty()
        && b.len() <= 20
        && b.iter().all(u8::is_ascii_digit)
        && (b.len() == 1 || b.first() != Some(&b'0'));
    if !canonical {
        return Err(AuthError::Malformed);
    }
    text.parse().map_err(|_| AuthError::Malformed)
}

/// Decodes exactly `out.len()` bytes of hex (either case).
pub fn decode_hex(text: &str, out: &mut [u8]) -> Option<()> {
    let b = text.as_bytes();
    if b.len() != out.len().checked_mul(2)? {
        return None;
    }
    for (pair, o) in b.chunks_exact(2).zip(out.iter_mut()) {
        let hi = hex_val(*pair.first()?)?;
        let lo = hex_val(*pair.get(1)?)?;
        *o = (hi << 4) | lo;
    }
    Some(())
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c.wrapping_sub(b'0')),
        b'a'..=b'f' => Some(c.wrapping_sub(b'a').wrapping_add(10)),
        b'A'..=b'F' => Some(c.wrapping_sub(b'A').wrapping_add(10)),
        _ => None,
    }
}

/// Why a request is not authenticated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AuthError {
    /// No `Authorization` header (401).
    Missing,
    /// The header does not parse (401).
    Malformed,
    /// The timestamp is outside the window, or not above the replay floor
    /// (401).
    Stale,
    /// Wrong signature (401).
    BadSignature,
    /// A signature already accepted (401).
    Replayed,
    /// The bridge has no wall clock to judge timestamps by (503).
    NoClock,
    /// Authentication is on but no key is configured (401; the
    /// configuration parser never lets this happen).
    NoKey,
}

impl AuthError {
    pub const fn message(self) -> &'static str {
        match self {
            AuthError::Missing => "authentication required",
            AuthError::Malformed => "malformed Authorization header",
            AuthError::Stale => "timestamp outside the accepted window",
            AuthError::BadSignature => "bad signature",
            AuthError::Replayed => "replayed request",
            AuthError::NoClock => "bridge has no wall clock: signed requests cannot be checked",
            AuthError::NoKey => "no key configured",
        }
    }

    /// Whether the answer is 503 rather than 401.
    pub const fn is_unavailable(self) -> bool {
        matches!(self, AuthError::NoClock)
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Seen {
    ts: u64,
    sig: [u8; SIG_LEN],
    used: bool,
}

/// Signatures seen recently (see the module documentation).
#[derive(Clone)]
pub struct ReplayCache {
    slots: [Seen; REPLAY_SLOTS],
    /// Only timestamps above this are accepted (0: no floor).
    floor: u64,
}

impl fmt::Debug for ReplayCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let used = self.slots.iter().filter(|s| s.used).count();
        f.debug_struct("ReplayCache")
            .field("used", &used)
            .field("floor", &self.floor)
            .finish()
    }
}

impl Default for ReplayCache {
    fn default() -> Self {
        Self::new()
    }
}

impl ReplayCache {
    pub const fn new() -> Self {
        ReplayCache {
            slots: [Seen {
                ts: 0,
                sig: [0; SIG_LEN],
                used: false,
            }; REPLAY_SLOTS],
            floor: 0,
        }
    }

    /// The replay floor (see the module documentation).
    pub fn floor(&self) -> u64 {
        self.floor
    }

    fn contains(&self, sig: &[u8; SIG_LEN]) -> bool {
        self.slots.iter().any(|s| s.used && s.sig == *sig)
    }

    /// Records a verified signature.
    fn insert(&mut self, now: u64, ts: u64, sig: &[u8; SIG_LEN]) {
        let window_start = now.saturating_sub(MAX_SKEW_S);
        // A free slot, else one that can no longer pass the window, else
        // the oldest timestamp, which then becomes the floor.
        let mut victim: Option<&mut Seen> = None;
        for s in self.slots.iter_mut() {
            if !s.used || s.ts < window_start {
                victim = Some(s);
                break;
            }
            match &victim {
                Some(v) if v.ts <= s.ts => {}
                _ => victim = Some(s),
            }
        }
        if let Some(v) = victim {
            if v.used && v.ts >= window_start {
                self.floor = self.floor.max(v.ts);
            }
            *v = Seen {
                ts,
                sig: *sig,
                used: true,
            };
        }
    }
}

/// Checks requests (see the module documentation).
#[derive(Clone)]
pub struct Verifier {
    key: Option<Vec<u8, MAX_KEY_LEN>>,
    required: bool,
    replay: ReplayCache,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("key", &self.key.as_ref().map(|k| k.len()))
            .field("required", &self.required)
            .field("replay", &self.replay)
            .finish()
    }
}

impl Verifier {
    /// `required` is the configuration's `auth`; `key` its `key` (longer
    /// keys are cut to [`MAX_KEY_LEN`] bytes, which the configuration
    /// never produces).
    pub fn new(key: Option<&[u8]>, required: bool) -> Self {
        let key = key.map(|k| {
            let mut v = Vec::new();
            let _ = v.extend_from_slice(k.get(..k.len().min(MAX_KEY_LEN)).unwrap_or(&[]));
            v
        });
        Verifier {
            key,
            required,
            replay: ReplayCache::new(),
        }
    }

    /// Whether requests must be signed.
    pub fn required(&self) -> bool {
        self.required
    }

    pub fn replay_cache(&self) -> &ReplayCache {
        &self.replay
    }

    /// Checks one request; on success its signature is remembered.
    pub fn check(
        &mut self,
        now_unix: Option<u64>,
        method: &str,
        target: &str,
        authorization: Option<&[u8]>,
        body: &[u8],
    ) -> Result<(), AuthError> {
        if !self.required {
            return Ok(());
        }
        let Some(key) = self.key.as_ref() else {
            return Err(AuthError::NoKey);
        };
        let creds = parse_authorization(authorization.ok_or(AuthError::Missing)?)?;
        let now = now_unix.ok_or(AuthError::NoClock)?;
        if creds.ts.abs_diff(now) > MAX_SKEW_S || creds.ts <= self.replay.floor {
            return Err(AuthError::Stale);
        }
        mac(key, method, target, creds.ts, body)
            .ok_or(AuthError::BadSignature)?
            .verify_slice(&creds.sig)
            .map_err(|_| AuthError::BadSignature)?;
        if self.replay.contains(&creds.sig) {
            return Err(AuthError::Replayed);
        }
        self.replay.insert(now, creds.ts, &creds.sig);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef";
    const NOW: u64 = 1_700_000_000;

    fn header(ts: u64, method: &str, target: &str, body: &[u8]) -> String<AUTHORIZATION_LEN> {
        authorization(KEY, method, target, ts, body)
    }

    #[test]
    fn known_vectors() {
        // The worked examples of docs/API.md (computed independently).
        let key = [
            0x00u8, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd,
            0xee, 0xff,
        ];
        let body = br#"{"ip":"203.0.113.7","dst_ip":"192.168.252.10","dst_port":22}"#;
        assert_eq!(
            authorization(&key, "POST", "/insert", 1_700_000_000, body).as_str(),
            "PIH-HMAC-SHA256 ts=1700000000,\
             sig=fe3cb1bc8c1c559642a91885eaa27c7e009119c2cd22f7c75ab04b724fa93d84"
        );
        assert_eq!(
            authorization(&key, "GET", "/rules?offset=0&limit=50", 1_700_000_000, b"").as_str(),
            "PIH-HMAC-SHA256 ts=1700000000,\
             sig=1b1651fc94d134788a1a2f7484fbc8a41de5564225fae05ae1b3789d9a585578"
        );
        let mut v = Verifier::new(Some(&key), true);
        let h = authorization(&key, "POST", "/insert", 1_700_000_000, body);
        assert_eq!(
            v.check(
                Some(1_700_000_100),
                "POST",
                "/insert",
                Some(h.as_bytes()),
                body
            ),
            Ok(())
        );
    }

    #[test]
    fn decimal_digits() {
        let mut b = [0u8; 20];
        assert_eq!(decimal(0, &mut b), b"0");
        assert_eq!(decimal(7, &mut b), b"7");
        assert_eq!(decimal(1_700_000_000, &mut b), b"1700000000");
        assert_eq!(decimal(u64::MAX, &mut b), b"18446744073709551615");
    }

    #[test]
    fn parse_header() {
        let h = header(NOW, "GET", "/x", b"");
        let c = parse_authorization(h.as_bytes()).unwrap();
        assert_eq!(c.ts, NOW);
        let upper = h
            .to_ascii_uppercase()
            .replace("TS=", "ts=")
            .replace("SIG=", "sig=");
        assert_eq!(parse_authorization(upper.as_bytes()).unwrap(), c);
        let spaced = h.replace(",", " , ").replace("=", " = ");
        assert_eq!(parse_authorization(spaced.as_bytes()).unwrap(), c);
        for bad in [
            "",
            "PIH-HMAC-SHA256",
            "Bearer ts=1,sig=00",
            "PIH-HMAC-SHA256 ts=1",
            "PIH-HMAC-SHA256 sig=00,ts=1",
            "PIH-HMAC-SHA256 ts=01,sig=0000000000000000000000000000000000000000000000000000000000000000",
            "PIH-HMAC-SHA256 ts=-1,sig=0000000000000000000000000000000000000000000000000000000000000000",
            "PIH-HMAC-SHA256 ts=99999999999999999999,sig=0000000000000000000000000000000000000000000000000000000000000000",
            "PIH-HMAC-SHA256 ts=1,sig=000000000000000000000000000000000000000000000000000000000000000",
            "PIH-HMAC-SHA256 ts=1,sig=00000000000000000000000000000000000000000000000000000000000000zz",
            "PIH-HMAC-SHA256 ts=1,sig=00000000000000000000000000000000000000000000000000000000000000000",
        ] {
            assert_eq!(parse_authorization(bad.as_bytes()), Err(AuthError::Malformed), "{bad}");
        }
        assert_eq!(parse_authorization(b"\xff\xfe"), Err(AuthError::Malformed));
    }

    #[test]
    fn verify_ok_stale_wrong_replayed() {
        let mut v = Verifier::new(Some(KEY), true);
        let body = b"{}";
        let h = header(NOW, "POST", "/insert", body);
        assert_eq!(
            v.check(Some(NOW), "POST", "/insert", Some(h.as_bytes()), body),
            Ok(())
        );
        // Same request again.
        assert_eq!(
            v.check(Some(NOW + 1), "POST", "/insert", Some(h.as_bytes()), body),
            Err(AuthError::Replayed)
        );
        // Window edges.
        for (ts, ok) in [
            (NOW - MAX_SKEW_S, true),
            (NOW + MAX_SKEW_S, true),
            (NOW - MAX_SKEW_S - 1, false),
            (NOW + MAX_SKEW_S + 1, false),
            (0, false),
            (u64::MAX, false),
        ] {
            let h = header(ts, "GET", "/health", b"");
            let r = v.check(Some(NOW), "GET", "/health", Some(h.as_bytes()), b"");
            assert_eq!(r.is_ok(), ok, "{ts}");
            if !ok {
                assert_eq!(r, Err(AuthError::Stale));
            }
        }
        // Anything changed: bad signature.
        let h = header(NOW, "POST", "/insert", b"{\"a\":1}");
        for (m, t, b) in [
            ("GET", "/insert", &b"{\"a\":1}"[..]),
            ("POST", "/insert?x", &b"{\"a\":1}"[..]),
            ("POST", "/insert", &b"{\"a\":2}"[..]),
            ("POST", "/insert", &b""[..]),
        ] {
            assert_eq!(
                v.check(Some(NOW), m, t, Some(h.as_bytes()), b),
                Err(AuthError::BadSignature)
            );
        }
        // Another timestamp in the header with the same signature.
        let forged = h.replace(&std::format!("ts={NOW}"), &std::format!("ts={}", NOW + 1));
        assert_eq!(
            v.check(
                Some(NOW),
                "POST",
                "/insert",
                Some(forged.as_bytes()),
                b"{\"a\":1}"
            ),
            Err(AuthError::BadSignature)
        );
        // A bad signature is not remembered: the genuine one still passes.
        assert_eq!(
            v.check(
                Some(NOW),
                "POST",
                "/insert",
                Some(h.as_bytes()),
                b"{\"a\":1}"
            ),
            Ok(())
        );
        // Wrong key.
        let other = authorization(b"another key......", "GET", "/", NOW, b"");
        assert_eq!(
            v.check(Some(NOW), "GET", "/", Some(other.as_bytes()), b""),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            v.check(Some(NOW), "GET", "/", None, b""),
            Err(AuthError::Missing)
        );
        assert_eq!(
            v.check(
                None,
                "GET",
                "/",
                Some(header(NOW, "GET", "/", b"").as_bytes()),
                b""
            ),
            Err(AuthError::NoClock)
        );
        assert!(AuthError::NoClock.is_unavailable());
    }

    #[test]
    fn auth_off_and_no_key() {
        let mut off = Verifier::new(None, false);
        assert_eq!(off.check(None, "GET", "/", None, b""), Ok(()));
        assert_eq!(off.check(Some(NOW), "GET", "/", Some(b"junk"), b""), Ok(()));
        let mut nokey = Verifier::new(None, true);
        assert_eq!(
            nokey.check(
                Some(NOW),
                "GET",
                "/",
                Some(header(NOW, "GET", "/", b"").as_bytes()),
                b""
            ),
            Err(AuthError::NoKey)
        );
    }

    #[test]
    fn replay_cache_overflow_never_admits_a_replay() {
        let mut v = Verifier::new(Some(KEY), true);
        // Fill the cache and then some, all within the window.
        let n = REPLAY_SLOTS + 10;
        let mut headers = std::vec::Vec::new();
        for i in 0..n {
            let ts = NOW - 100 + (i as u64 / 100);
            let target = std::format!("/rules/{i}");
            let h = header(ts, "DELETE", &target, b"");
            assert_eq!(
                v.check(Some(NOW), "DELETE", &target, Some(h.as_bytes()), b""),
                Ok(()),
                "{i}"
            );
            headers.push((target, h));
        }
        assert!(v.replay_cache().floor() >= NOW - 100);
        // Every one of them is refused now, evicted or not.
        for (target, h) in &headers {
            let r = v.check(Some(NOW), "DELETE", target, Some(h.as_bytes()), b"");
            assert!(
                matches!(r, Err(AuthError::Replayed | AuthError::Stale)),
                "{target}: {r:?}"
            );
        }
        // Fresh requests still pass.
        let h = header(NOW, "GET", "/health", b"");
        assert_eq!(
            v.check(Some(NOW), "GET", "/health", Some(h.as_bytes()), b""),
            Ok(())
        );
    }

    #[test]
    fn expired_entries_are_reused_without_a_floor() {
        let mut v = Verifier::new(Some(KEY), true);
        for i in 0..REPLAY_SLOTS as u64 {
            let t = std::format!("/r{i}");
            let h = header(NOW, "GET", &t, b"");
            assert_eq!(
                v.check(Some(NOW), "GET", &t, Some(h.as_bytes()), b""),
                Ok(())
            );
        }
        // Much later every entry is out of the window: no floor is raised.
        let later = NOW + 10 * MAX_SKEW_S;
        for i in 0..REPLAY_SLOTS as u64 {
            let t = std::format!("/s{i}");
            let h = header(later, "GET", &t, b"");
            assert_eq!(
                v.check(Some(later), "GET", &t, Some(h.as_bytes()), b""),
                Ok(())
            );
        }
        assert_eq!(v.replay_cache().floor(), 0);
    }

    #[test]
    fn plausible_clock() {
        assert_eq!(plausible_unix(0), None);
        assert_eq!(plausible_unix(NOW), Some(NOW));
    }

    #[test]
    fn hex_roundtrip() {
        let mut out = [0u8; 3];
        assert_eq!(decode_hex("0aFf10", &mut out), Some(()));
        assert_eq!(out, [0x0a, 0xff, 0x10]);
        assert_eq!(std::format!("{}", Hex(&out)), "0aff10");
        assert_eq!(decode_hex("0aFf1", &mut out), None);
        assert_eq!(decode_hex("0aFf1g", &mut out), None);
    }
}
