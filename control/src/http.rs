//! A minimal HTTP/1.1 server side over fixed buffers: an incremental
//! request reader and a response writer.
//!
//! ```text
//!   TCP bytes ──> RequestReader::feed ──> Progress::Ready ──> RequestReader::outcome
//!                  (copies into a fixed          │              Ok(Request) | Err(HttpError)
//!                   6 KiB buffer)                v
//!                                      the API writes a JSON body at
//!                                      out[BODY_OFFSET..], finish_response()
//!                                      puts the head in front of it
//! ```
//!
//! What is accepted, and what is refused with which status:
//!
//! - One request per connection. Every response says `Connection: close`;
//!   bytes after the first request (pipelining) are ignored.
//! - The head (request line and headers) is at most [`MAX_HEAD`] bytes and
//!   [`MAX_HEADERS`] headers, else 431.
//! - The body is framed by `Content-Length` only, at most [`MAX_BODY`]
//!   bytes, else 413 (decided from the header, before the body arrives).
//!   No `Content-Length` means an empty body. A `Transfer-Encoding` header
//!   (chunked or any other) gets 411: send `Content-Length` instead.
//!   Several `Content-Length` headers, or one that is not a decimal
//!   number, get 400.
//! - Anything httparse rejects gets 400; so does a connection closed in the
//!   middle of a request ([`RequestReader::end_of_input`]).
//! - `Expect: 100-continue` is not answered (clients send the body after a
//!   short wait); bodies here are small enough that clients rarely ask.
//!
//! Nothing here allocates, and no input makes it panic.
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

/// Largest request head (request line plus headers plus the blank line).
pub const MAX_HEAD: usize = 2048;
/// Largest request body.
pub const MAX_BODY: usize = 4096;
/// Most headers in a request.
pub const MAX_HEADERS: usize = 32;
/// Size of the buffer of a [`RequestReader`].
pub const REQUEST_BUF: usize = MAX_HEAD + MAX_BODY;
/// Where a response body starts in the output buffer while it is being
/// written; [`finish_response`] moves it right behind the head.
pub const BODY_OFFSET: usize = 256;
/// The smallest output buffer the API works with (an error response
/// always fits).
pub const MIN_RESPONSE_BUF: usize = 1024;

// ---------------------------------------------------------------------------
// Status
// ---------------------------------------------------------------------------

/// The response statuses the management API uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    Ok,
    BadRequest,
    Unauthorized,
    NotFound,
    MethodNotAllowed,
    Conflict,
    LengthRequired,
    PayloadTooLarge,
    HeaderFieldsTooLarge,
    InternalError,
    ServiceUnavailable,
}

impl Status {
    /// The numeric code (`404`).
    pub const fn code(self) -> u16 {
        match self {
            Status::Ok => 200,
            Status::BadRequest => 400,
            Status::Unauthorized => 401,
            Status::NotFound => 404,
            Status::MethodNotAllowed => 405,
            Status::Conflict => 409,
            Status::LengthRequired => 411,
            Status::PayloadTooLarge => 413,
            Status::HeaderFieldsTooLarge => 431,
            Status::InternalError => 500,
            Status::ServiceUnavailable => 503,
        }
    }

    /// The reason phrase (`Not Found`).
    pub const fn reason(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::BadRequest => "Bad Request",
            Status::Unauthorized => "Unauthorized",
            Status::NotFound => "Not Found",
            Status::MethodNotAllowed => "Method Not Allowed",
            Status::Conflict => "Conflict",
            Status::LengthRequired => "Length Required",
            Status::PayloadTooLarge => "Content Too Large",
            Status::HeaderFieldsTooLarge => "Request Header Fields Too Large",
            Status::InternalError => "Internal Server Error",
            Status::ServiceUnavailable => "Service Unavailable",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code(), self.reason())
    }
}

// ---------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------

/// A request method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Method<'a> {
    Get,
    Post,
    Delete,
    /// Any other token (answered with 405 by the router).
    Other(&'a str),
}

impl<'a> Method<'a> {
    fn parse(s: &'a str) -> Self {
        match s {
            "GET" => Method::Get,
            "POST" => Method::Post,
            "DELETE" => Method::Delete,
            other => Method::Other(other),
        }
    }

    /// The token as sent.
    pub const fn as_str(&self) -> &'a str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Delete => "DELETE",
            Method::Other(s) => s,
        }
    }
}

/// A complete, framed request; everything borrows the reader's buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request<'a> {
    pub method: Method<'a>,
    /// The request target exactly as sent (path and query): what is signed.
    pub target: &'a str,
    /// The target up to the first `?`.
    pub path: &'a str,
    /// The target after the first `?`, if there is one.
    pub query: Option<&'a str>,
    /// The `Authorization` header's value, if present.
    pub authorization: Option<&'a [u8]>,
    /// The `X-Pih-Api` header's value, if present.
    pub api_version: Option<&'a [u8]>,
    /// Exactly `Content-Length` bytes.
    pub body: &'a [u8],
}

/// Why a request cannot be served; each maps to one status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HttpError {
    /// Not HTTP/1.x, or a syntax error (400).
    Malformed,
    /// The connection ended before the request was complete (400).
    Incomplete,
    /// `Content-Length` is not a number, or appears more than once (400).
    BadContentLength,
    /// `Transfer-Encoding` (chunked or other) is not supported (411).
    TransferEncoding,
    /// The head exceeds [`MAX_HEAD`] bytes or [`MAX_HEADERS`] headers (431).
    HeadTooLarge,
    /// `Content-Length` exceeds [`MAX_BODY`] (413).
    BodyTooLarge,
}

impl HttpError {
    /// The status to answer with.
    pub const fn status(self) -> Status {
        match self {
            HttpError::Malformed | HttpError::Incomplete | HttpError::BadContentLength => {
                Status::BadRequest
            }
            HttpError::TransferEncoding => Status::LengthRequired,
            HttpError::HeadTooLarge => Status::HeaderFieldsTooLarge,
            HttpError::BodyTooLarge => Status::PayloadTooLarge,
        }
    }

    /// A short explanation for the error body.
    pub const fn message(self) -> &'static str {
        match self {
            HttpError::Malformed => "malformed HTTP request",
            HttpError::Incomplete => "incomplete HTTP request",
            HttpError::BadContentLength => "invalid Content-Length",
            HttpError::TransferEncoding => {
                "Transfer-Encoding is not supported: send Content-Length"
            }
            HttpError::HeadTooLarge => "request head too large",
            HttpError::BodyTooLarge => "request body too large",
        }
    }

    /// The header at fault, if one is.
    pub const fn field(self) -> Option<&'static str> {
        match self {
            HttpError::BadContentLength | HttpError::BodyTooLarge => Some("Content-Length"),
            HttpError::TransferEncoding => Some("Transfer-Encoding"),
            _ => None,
        }
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

/// What [`RequestReader::feed`] says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Progress {
    /// Not complete yet: feed more bytes.
    NeedMore,
    /// A request or an error is ready: answer it with
    /// [`RequestReader::outcome`] and close the connection.
    Ready,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Waiting for the end of the head.
    Head,
    /// Head complete; the whole request is `total` bytes.
    Body {
        total: usize,
    },
    /// A complete request of `total` bytes is in the buffer.
    Done {
        total: usize,
    },
    Failed(HttpError),
}

/// Accumulates one request of a connection in a fixed buffer of
/// [`REQUEST_BUF`] bytes.
pub struct RequestReader {
    buf: [u8; REQUEST_BUF],
    len: usize,
    state: State,
}

impl Default for RequestReader {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for RequestReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestReader")
            .field("len", &self.len)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl RequestReader {
    pub const fn new() -> Self {
        RequestReader {
            buf: [0; REQUEST_BUF],
            len: 0,
            state: State::Head,
        }
    }

    /// Forgets everything (for a new connection).
    pub fn reset(&mut self) {
        self.len = 0;
        self.state = State::Head;
    }

    /// Bytes buffered so far.
    pub fn buffered(&self) -> usize {
        self.len
    }

    /// Whether [`Self::outcome`] has an answer.
    pub fn is_ready(&self) -> bool {
        matches!(self.state, State::Done { .. } | State::Failed(_))
    }

    /// Takes the next bytes received on the connection (all of them:
    /// whatever follows a complete request is ignored).
    pub fn feed(&mut self, data: &[u8]) -> Progress {
        if self.is_ready() {
            return Progress::Ready;
        }
        let room = REQUEST_BUF.saturating_sub(self.len);
        let take = data.len().min(room);
        let end = self.len.saturating_add(take);
        if let (Some(dst), Some(src)) = (self.buf.get_mut(self.len..end), data.get(..take)) {
            dst.copy_from_slice(src);
            self.len = end;
        }
        self.advance();
        if self.is_ready() {
            Progress::Ready
        } else {
            Progress::NeedMore
        }
    }

    /// The peer closed its side: an unfinished request becomes
    /// [`HttpError::Incomplete`], ready to be answered (a caller may as
    /// well just close a connection that sent nothing).
    pub fn end_of_input(&mut self) {
        if !self.is_ready() {
            self.state = State::Failed(HttpError::Incomplete);
        }
    }

    fn advance(&mut self) {
        if self.state == State::Head {
            let window = self.len.min(MAX_HEAD);
            let head = self.buf.get(..window).unwrap_or(&[]);
            self.state = match scan_head(head) {
                Ok(Some((head_len, body_len))) => State::Body {
                    total: head_len.saturating_add(body_len),
                },
                Ok(None) if self.len >= MAX_HEAD => State::Failed(HttpError::HeadTooLarge),
                Ok(None) => State::Head,
                Err(e) => State::Failed(e),
            };
        }
        if let State::Body { total } = self.state {
            if self.len >= total {
                self.state = State::Done { total };
            }
        }
    }

    /// The request, or why there is none: [`HttpError::Incomplete`] before
    /// [`Progress::Ready`].
    pub fn outcome(&self) -> Result<Request<'_>, HttpError> {
        match self.state {
            State::Done { total } => parse_request(self.buf.get(..total).unwrap_or(&[])),
            State::Failed(e) => Err(e),
            State::Head | State::Body { .. } => Err(HttpError::Incomplete),
        }
    }
}

/// Parses one complete request held in `bytes` (extra bytes after it are
/// ignored). For callers that already have the whole request.
pub fn parse_request(bytes: &[u8]) -> Result<Request<'_>, HttpError> {
    let window = bytes.get(..bytes.len().min(MAX_HEAD)).unwrap_or(&[]);
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(window) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if bytes.len() >= MAX_HEAD => {
            return Err(HttpError::HeadTooLarge)
        }
        Ok(httparse::Status::Partial) => return Err(HttpError::Incomplete),
        Err(httparse::Error::TooManyHeaders) => return Err(HttpError::HeadTooLarge),
        Err(_) => return Err(HttpError::Malformed),
    };
    let framing = framing(req.headers)?;
    let (Some(method), Some(target)) = (req.method, req.path) else {
        return Err(HttpError::Malformed);
    };
    let end = head_len.saturating_add(framing.body_len);
    let body = bytes.get(head_len..end).ok_or(HttpError::Incomplete)?;
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    Ok(Request {
        method: Method::parse(method),
        target,
        path,
        query,
        authorization: framing.authorization,
        api_version: framing.api_version,
        body,
    })
}

/// The head's length and the body's, once the head is complete.
fn scan_head(head: &[u8]) -> Result<Option<(usize, usize)>, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(n)) => Ok(Some((n, framing(req.headers)?.body_len))),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => Err(HttpError::HeadTooLarge),
        Err(_) => Err(HttpError::Malformed),
    }
}

struct Framing<'a> {
    body_len: usize,
    authorization: Option<&'a [u8]>,
    api_version: Option<&'a [u8]>,
}

fn framing<'a>(headers: &[httparse::Header<'a>]) -> Result<Framing<'a>, HttpError> {
    let mut content_length: Option<usize> = None;
    let mut authorization = None;
    let mut api_version = None;
    for h in headers {
        if h.name.eq_ignore_ascii_case("content-length") {
            if content_length.is_some() {
                return Err(HttpError::BadContentLength);
            }
            content_length = Some(parse_content_length(h.value)?);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(HttpError::TransferEncoding);
        } else if h.name.eq_ignore_ascii_case("authorization") {
            if authorization.is_some() {
                return Err(HttpError::Malformed);
            }
            authorization = Some(h.value);
        } else if h.name.eq_ignore_ascii_case("x-pih-api") {
            api_version = Some(h.value);
        }
    }
    Ok(Framing {
        body_len: content_length.unwrap_or(0),
        authorization,
        api_version,
    })
}

fn parse_content_length(value: &[u8]) -> Result<usize, HttpError> {
    let v = trim(value);
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return Err(HttpError::BadContentLength);
    }
    let mut n: usize = 0;
    for &d in v {
        n = n
            .checked_mul(10)
            .and_then(|n| n.checked_add(usize::from(d.wrapping_sub(b'0'))))
            .ok_or(HttpError::BodyTooLarge)?;
        if n > MAX_BODY {
            return Err(HttpError::BodyTooLarge);
        }
    }
    Ok(n)
}

/// `value` without leading and trailing spaces and tabs.
pub fn trim(value: &[u8]) -> &[u8] {
    let is_ws = |b: &u8| *b == b' ' || *b == b'\t';
    let start = value.iter().position(|b| !is_ws(b)).unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|b| !is_ws(b))
        .map_or(start, |p| p.saturating_add(1));
    value.get(start..end).unwrap_or(&[])
}

// ---------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------

/// A `core::fmt::Write` sink over a byte slice that remembers overflow.
pub struct SliceWriter<'b> {
    buf: &'b mut [u8],
    len: usize,
    overflow: bool,
}

impl<'b> SliceWriter<'b> {
    pub fn new(buf: &'b mut [u8]) -> Self {
        SliceWriter {
            buf,
            len: 0,
            overflow: false,
        }
    }

    /// Bytes written.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether something did not fit (and was dropped).
    pub fn overflowed(&self) -> bool {
        self.overflow
    }

    /// Space left.
    pub fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.len)
    }

    /// Appends `bytes` whole, or nothing (and marks the overflow).
    pub fn push(&mut self, bytes: &[u8]) -> bool {
        let end = self.len.saturating_add(bytes.len());
        match self.buf.get_mut(self.len..end) {
            Some(dst) => {
                dst.copy_from_slice(bytes);
                self.len = end;
                true
            }
            None => {
                self.overflow = true;
                false
            }
        }
    }

    /// Marks the output as incomplete (something did not fit).
    pub fn set_overflow(&mut self) {
        self.overflow = true;
    }

    /// Forgets everything after the first `len` bytes (and any overflow).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
        self.overflow = false;
    }

    /// The free part of the buffer, to serialize into directly; then
    /// [`Self::advance`].
    pub fn spare(&mut self) -> &mut [u8] {
        self.buf.get_mut(self.len..).unwrap_or(&mut [])
    }

    /// Counts `n` bytes written into [`Self::spare`].
    pub fn advance(&mut self, n: usize) {
        self.len = self.len.saturating_add(n).min(self.buf.len());
    }

    /// What was written.
    pub fn written(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or(&[])
    }
}

impl fmt::Write for SliceWriter<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.push(s.as_bytes()) {
            Ok(())
        } else {
            Err(fmt::Error)
        }
    }
}

/// Extra response headers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExtraHeaders<'a> {
    /// `Allow:` (for 405).
    pub allow: Option<&'a str>,
    /// `WWW-Authenticate:` (for 401).
    pub www_authenticate: Option<&'a str>,
}

/// The API version sent in every response's `X-Pih-Api` header.
pub const API_VERSION: u32 = 1;

/// Completes a response whose `body_len`-byte body was written at
/// `out[BODY_OFFSET..]`: writes the status line and headers in front of
/// it and moves the body behind them. Returns the length of the whole
/// response at the start of `out`, or 0 if `out` is too small (the caller
/// then just closes the connection).
pub fn finish_response(
    out: &mut [u8],
    status: Status,
    extra: ExtraHeaders<'_>,
    body_len: usize,
) -> usize {
    let mut head = [0u8; BODY_OFFSET];
    let mut w = SliceWriter::new(&mut head);
    let written = write!(
        w,
        "HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\nCache-Control: no-store\r\nX-Pih-Api: {}\r\n",
        status.code(),
        status.reason(),
        body_len,
        API_VERSION
    )
    .is_ok()
        && extra
            .allow
            .is_none_or(|a| write!(w, "Allow: {a}\r\n").is_ok())
        && extra
            .www_authenticate
            .is_none_or(|a| write!(w, "WWW-Authenticate: {a}\r\n").is_ok())
        && w.push(b"\r\n");
    let head_len = w.len();
    let body_end = BODY_OFFSET.saturating_add(body_len);
    let total = head_len.saturating_add(body_len);
    if !written || body_end > out.len() || head_len > BODY_OFFSET {
        return 0;
    }
    out.copy_within(BODY_OFFSET..body_end, head_len);
    match (out.get_mut(..head_len), head.get(..head_len)) {
        (Some(dst), Some(src)) => {
            dst.copy_from_slice(src);
            total
        }
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(bytes: &[u8]) -> RequestReader {
        let mut r = RequestReader::new();
        r.feed(bytes);
        r
    }

    #[test]
    fn simple_get() {
        let r = read_all(b"GET /rules?offset=2&limit=3 HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(r.is_ready());
        let q = r.outcome().unwrap();
        assert_eq!(q.method, Method::Get);
        assert_eq!(q.target, "/rules?offset=2&limit=3");
        assert_eq!(q.path, "/rules");
        assert_eq!(q.query, Some("offset=2&limit=3"));
        assert_eq!(q.body, b"");
        assert_eq!(q.authorization, None);
    }

    #[test]
    fn post_with_body_byte_by_byte() {
        let req = b"POST /insert HTTP/1.1\r\nContent-Length: 7\r\n\
                    authorization: PIH-HMAC-SHA256 ts=1,sig=00\r\nX-Pih-Api: 1\r\n\r\n{\"a\":1}";
        let mut r = RequestReader::new();
        for (i, b) in req.iter().enumerate() {
            let p = r.feed(core::slice::from_ref(b));
            assert_eq!(p == Progress::Ready, i == req.len() - 1, "at {i}");
        }
        let q = r.outcome().unwrap();
        assert_eq!(q.method, Method::Post);
        assert_eq!(q.body, b"{\"a\":1}");
        assert_eq!(q.authorization, Some(&b"PIH-HMAC-SHA256 ts=1,sig=00"[..]));
        assert_eq!(q.api_version, Some(&b"1"[..]));
    }

    #[test]
    fn pipelined_bytes_are_ignored() {
        let r = read_all(b"DELETE /rules/3 HTTP/1.1\r\n\r\nGET /x HTTP/1.1\r\n\r\n");
        let q = r.outcome().unwrap();
        assert_eq!(q.method, Method::Delete);
        assert_eq!(q.path, "/rules/3");
        assert_eq!(q.body, b"");
    }

    #[test]
    fn errors() {
        let cases: &[(&[u8], HttpError)] = &[
            (b"garbage\r\n\r\n", HttpError::Malformed),
            (b"GET / HTTP/2.0\r\n\r\n", HttpError::Malformed),
            (b"\x00\x01\x02\r\n\r\n", HttpError::Malformed),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                HttpError::TransferEncoding,
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 4097\r\n\r\n",
                HttpError::BodyTooLarge,
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999999\r\n\r\n",
                HttpError::BodyTooLarge,
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
                HttpError::BadContentLength,
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
                HttpError::BadContentLength,
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length:\r\n\r\n",
                HttpError::BadContentLength,
            ),
        ];
        for (bytes, e) in cases {
            let r = read_all(bytes);
            assert!(r.is_ready(), "{:?}", core::str::from_utf8(bytes));
            assert_eq!(r.outcome(), Err(*e), "{:?}", core::str::from_utf8(bytes));
        }
        assert_eq!(HttpError::BodyTooLarge.status().code(), 413);
        assert_eq!(HttpError::HeadTooLarge.status().code(), 431);
        assert_eq!(HttpError::TransferEncoding.status().code(), 411);
    }

    #[test]
    fn bounds() {
        // A head that never ends.
        let mut r = RequestReader::new();
        assert_eq!(r.feed(b"GET / HTTP/1.1\r\n"), Progress::NeedMore);
        let line = b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
        let mut p = Progress::NeedMore;
        for _ in 0..100 {
            p = r.feed(line);
            if p == Progress::Ready {
                break;
            }
        }
        assert_eq!(p, Progress::Ready);
        assert_eq!(r.outcome(), Err(HttpError::HeadTooLarge));
        // Too many headers.
        let mut many = std::vec::Vec::from(&b"GET / HTTP/1.1\r\n"[..]);
        for _ in 0..40 {
            many.extend_from_slice(b"A: b\r\n");
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(read_all(&many).outcome(), Err(HttpError::HeadTooLarge));
        // The largest body fits.
        let mut big =
            std::vec::Vec::from(&b"POST /insert HTTP/1.1\r\nContent-Length: 4096\r\n\r\n"[..]);
        big.extend(std::iter::repeat_n(b'x', 4096));
        let r = read_all(&big);
        assert_eq!(r.outcome().unwrap().body.len(), 4096);
    }

    #[test]
    fn incomplete() {
        let mut r = RequestReader::new();
        assert_eq!(
            r.feed(b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc"),
            Progress::NeedMore
        );
        assert_eq!(r.outcome(), Err(HttpError::Incomplete));
        r.end_of_input();
        assert!(r.is_ready());
        assert_eq!(r.outcome(), Err(HttpError::Incomplete));
        r.reset();
        assert_eq!(r.buffered(), 0);
        assert_eq!(r.feed(b"GET / HTTP/1.1\r\n\r\n"), Progress::Ready);
        assert!(r.outcome().is_ok());
    }

    #[test]
    fn response_layout() {
        let mut out = [0u8; 2048];
        let body = b"{\"error\":\"x\"}";
        out[BODY_OFFSET..BODY_OFFSET + body.len()].copy_from_slice(body);
        let n = finish_response(
            &mut out,
            Status::MethodNotAllowed,
            ExtraHeaders {
                allow: Some("GET, DELETE"),
                www_authenticate: None,
            },
            body.len(),
        );
        let text = std::str::from_utf8(&out[..n]).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
            "{text}"
        );
        assert!(text.contains("\r\nContent-Length: 13\r\n"));
        assert!(text.contains("\r\nConnection: close\r\n"));
        assert!(text.contains("\r\nAllow: GET, DELETE\r\n"));
        assert!(text.contains("\r\nX-Pih-Api: 1\r\n"));
        assert!(text.ends_with("\r\n\r\n{\"error\":\"x\"}"));
        // Too small a buffer: nothing.
        let mut tiny = [0u8; 300];
        assert_eq!(
            finish_response(&mut tiny, Status::Ok, ExtraHeaders::default(), 100),
            0
        );
    }

    #[test]
    fn trims() {
        assert_eq!(trim(b"  12\t"), b"12");
        assert_eq!(trim(b"   "), b"");
        assert_eq!(trim(b""), b"");
    }
}
