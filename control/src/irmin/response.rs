//! An incremental HTTP/1.1 response reader (the client side of an Irmin
//! exchange): feed it the bytes as the TCP socket delivers them, in pieces
//! of any size, until it says [`Progress::Complete`].
//!
//! ```text
//!  bytes ──> feed ──> head (httparse, ≤ MAX_HEAD) ──> body framing:
//!                                                    Content-Length: n
//!                                                    Transfer-Encoding: chunked
//!                                                    neither: until EOF ──> finish_eof
//! ```
//!
//! - The head is at most [`MAX_HEAD`] bytes and [`MAX_HEADERS`] headers.
//!   Interim `1xx` responses are skipped (`101` is refused).
//! - The body is at most the `max_body` given to [`ResponseReader::new`],
//!   decided from `Content-Length` before the body arrives, else as it
//!   grows. `204` and `304` have no body.
//! - `Transfer-Encoding` must be exactly `chunked` (no other coding can be
//!   decoded here); it wins over `Content-Length`. Chunk extensions and
//!   trailers are skipped; lines may end in CRLF or a bare LF.
//! - Conflicting or non-decimal `Content-Length` headers are an error.
//! - Bytes after a complete response are ignored. After an error every
//!   call returns that error again.
//!
//! No input makes it panic; memory is bounded by `MAX_HEAD + max_body`.
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
use core::fmt;

/// Largest response head (status line, headers, blank line).
pub const MAX_HEAD: usize = 8 * 1024;
/// Most headers in a response head.
pub const MAX_HEADERS: usize = 48;
/// Longest chunk-size line (with extensions) and longest trailer line.
pub const MAX_CHUNK_LINE: usize = 1024;

/// What [`ResponseReader::feed`] made of the bytes so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Give it more bytes (or, at end of input, call
    /// [`ResponseReader::finish_eof`]).
    NeedMore,
    /// The response is complete: see [`ResponseReader::status`] and
    /// [`ResponseReader::body`].
    Complete,
}

/// Why a response could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseError {
    /// The head exceeds [`MAX_HEAD`].
    HeadTooLarge,
    /// More than [`MAX_HEADERS`] headers.
    TooManyHeaders,
    /// The head is not HTTP/1.x (what httparse or a check said).
    Malformed(&'static str),
    /// Several different `Content-Length` values, or one that is not a
    /// decimal number.
    BadContentLength,
    /// A `Transfer-Encoding` other than `chunked`.
    UnsupportedEncoding,
    /// Broken chunked framing.
    BadChunk(&'static str),
    /// The body exceeds the reader's `max_body`.
    BodyTooLarge,
    /// The connection ended before the response did.
    Truncated,
}

impl fmt::Display for ResponseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResponseError::HeadTooLarge => {
                write!(f, "response head larger than {MAX_HEAD} bytes")
            }
            ResponseError::TooManyHeaders => {
                write!(f, "more than {MAX_HEADERS} response headers")
            }
            ResponseError::Malformed(what) => write!(f, "malformed response head: {what}"),
            ResponseError::BadContentLength => f.write_str("invalid Content-Length"),
            ResponseError::UnsupportedEncoding => {
                f.write_str("unsupported Transfer-Encoding (only chunked)")
            }
            ResponseError::BadChunk(what) => write!(f, "malformed chunked body: {what}"),
            ResponseError::BodyTooLarge => f.write_str("response body too large"),
            ResponseError::Truncated => f.write_str("connection closed before the response ended"),
        }
    }
}

impl core::error::Error for ResponseError {}

/// Where the chunked decoder is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Chunk {
    /// In a chunk-size line.
    Size {
        value: usize,
        digits: u8,
        /// Past the digits (whitespace or `;` extension seen).
        after: bool,
        line: usize,
    },
    /// In chunk data.
    Data { remaining: usize },
    /// After chunk data, expecting CRLF (`cr`: the CR was seen).
    DataEnd { cr: bool },
    /// In the trailer section; `line`: bytes of the current line (CR not
    /// counted), `total`: all trailer bytes.
    Trailer { line: usize, total: usize },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Head,
    Length { remaining: usize },
    Chunked(Chunk),
    UntilEof,
    Complete,
    Failed(ResponseError),
}

/// Reads one HTTP/1.1 response, incrementally.
#[derive(Debug)]
pub struct ResponseReader {
    max_body: usize,
    head: Vec<u8>,
    status: Option<u16>,
    body: Vec<u8>,
    state: State,
}

impl ResponseReader {
    /// A reader accepting bodies up to `max_body` bytes.
    pub fn new(max_body: usize) -> Self {
        ResponseReader {
            max_body,
            head: Vec::new(),
            status: None,
            body: Vec::new(),
            state: State::Head,
        }
    }

    /// The status code, once the head is read.
    pub fn status(&self) -> Option<u16> {
        self.status
    }

    /// The body read so far (all of it once complete), de-chunked.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    pub fn is_complete(&self) -> bool {
        self.state == State::Complete
    }

    /// Takes the body out (leaves it empty).
    pub fn take_body(&mut self) -> Vec<u8> {
        core::mem::take(&mut self.body)
    }

    /// Consumes the next bytes of the response.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Progress, ResponseError> {
        let result = self.feed_inner(bytes);
        if let Err(e) = result {
            self.state = State::Failed(e);
            self.head = Vec::new();
        }
        result
    }

    /// The peer closed the connection: completes a body delimited by the
    /// end of the connection, else the response is truncated (unless it
    /// was already complete).
    pub fn finish_eof(&mut self) -> Result<Progress, ResponseError> {
        match self.state {
            State::Complete => Ok(Progress::Complete),
            State::UntilEof => {
                self.state = State::Complete;
                Ok(Progress::Complete)
            }
            State::Failed(e) => Err(e),
            State::Head | State::Length { .. } | State::Chunked(_) => {
                self.state = State::Failed(ResponseError::Truncated);
                Err(ResponseError::Truncated)
            }
        }
    }

    fn feed_inner(&mut self, bytes: &[u8]) -> Result<Progress, ResponseError> {
        match self.state {
            State::Failed(e) => Err(e),
            State::Complete => Ok(Progress::Complete),
            State::Head => {
                let mut bytes = bytes;
                loop {
                    let room = MAX_HEAD.saturating_sub(self.head.len());
                    let (take, rest) = bytes.split_at(room.min(bytes.len()));
                    self.head.extend_from_slice(take);
                    match self.parse_head()? {
                        None if self.head.len() >= MAX_HEAD => {
                            return Err(ResponseError::HeadTooLarge)
                        }
                        None if rest.is_empty() => return Ok(Progress::NeedMore),
                        // Interim responses were dropped, making room.
                        None => bytes = rest,
                        Some(used) => {
                            // Bytes of the head buffer past the head, then
                            // the rest of the input, are body.
                            let head = core::mem::take(&mut self.head);
                            let extra = head.get(used..).unwrap_or(&[]);
                            let p = self.body_bytes(extra)?;
                            if p == Progress::Complete {
                                return Ok(p);
                            }
                            return self.body_bytes(rest);
                        }
                    }
                }
            }
            State::Length { .. } | State::Chunked(_) | State::UntilEof => self.body_bytes(bytes),
        }
    }

    /// Parses the head buffer: `Some(head length)` once complete (the
    /// body framing is then set up), skipping interim responses.
    fn parse_head(&mut self) -> Result<Option<usize>, ResponseError> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut resp = httparse::Response::new(&mut headers);
            let used = match resp.parse(&self.head) {
                Ok(httparse::Status::Partial) => return Ok(None),
                Ok(httparse::Status::Complete(n)) => n,
                Err(httparse::Error::TooManyHeaders) => return Err(ResponseError::TooManyHeaders),
                Err(e) => return Err(ResponseError::Malformed(e.description_str())),
            };
            let code = resp.code.ok_or(ResponseError::Malformed("no status"))?;
            if code == 101 {
                return Err(ResponseError::Malformed("unexpected 101 Switching Protocols"));
            }
            if (100..200).contains(&code) {
                // Interim response: drop it and read the next head.
                self.head.drain(..used.min(self.head.len()));
                continue;
            }
            self.status = Some(code);
            self.state = self.framing(code, resp.headers)?;
            return Ok(Some(used));
        }
    }

    fn framing(&self, code: u16, headers: &[httparse::Header<'_>]) -> Result<State, ResponseError> {
        if code == 204 || code == 304 {
            return Ok(State::Complete);
        }
        let mut chunked = false;
        let mut length: Option<usize> = None;
        for h in headers {
            if h.name.eq_ignore_ascii_case("transfer-encoding") {
                let v = core::str::from_utf8(h.value)
                    .map_err(|_| ResponseError::UnsupportedEncoding)?
                    .trim();
                // Exactly one `chunked` coding, no other.
                if !v.eq_ignore_ascii_case("chunked") || chunked {
                    return Err(ResponseError::UnsupportedEncoding);
                }
                chunked = true;
            } else if h.name.eq_ignore_ascii_case("content-length") {
                let v = core::str::from_utf8(h.value)
                    .map_err(|_| ResponseError::BadContentLength)?
                    .trim();
                if v.is_empty() || v.len() > 19 || !v.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(ResponseError::BadContentLength);
                }
                let n: u64 = v.parse().map_err(|_| ResponseError::BadContentLength)?;
                // Too big for this machine is too big for the reader.
                let n = usize::try_from(n).unwrap_or(usize::MAX);
                if length.is_some_and(|l| l != n) {
                    return Err(ResponseError::BadContentLength);
                }
                length = Some(n);
            }
        }
        if chunked {
            return Ok(State::Chunked(Chunk::Size {
                value: 0,
                digits: 0,
                after: false,
                line: 0,
            }));
        }
        match length {
            Some(n) if n > self.max_body => Err(ResponseError::BodyTooLarge),
            Some(0) => Ok(State::Complete),
            Some(n) => Ok(State::Length { remaining: n }),
            None => Ok(State::UntilEof),
        }
    }

    /// Appends body bytes, keeping within `max_body`.
    fn append(&mut self, bytes: &[u8]) -> Result<(), ResponseError> {
        let total = self.body.len().saturating_add(bytes.len());
        if total > self.max_body {
            return Err(ResponseError::BodyTooLarge);
        }
        self.body.extend_from_slice(bytes);
        Ok(())
    }

    fn body_bytes(&mut self, mut bytes: &[u8]) -> Result<Progress, ResponseError> {
        loop {
            match self.state {
                State::Complete => return Ok(Progress::Complete),
                State::Failed(e) => return Err(e),
                State::Head => return Err(ResponseError::Malformed("internal: body before head")),
                State::UntilEof => {
                    self.append(bytes)?;
                    return Ok(Progress::NeedMore);
                }
                State::Length { remaining } => {
                    let n = remaining.min(bytes.len());
                    let (take, _) = bytes.split_at(n);
                    self.append(take)?;
                    let remaining = remaining.saturating_sub(n);
                    if remaining == 0 {
                        self.state = State::Complete;
                        return Ok(Progress::Complete);
                    }
                    self.state = State::Length { remaining };
                    return Ok(Progress::NeedMore);
                }
                State::Chunked(Chunk::Data { remaining }) => {
                    if bytes.is_empty() {
                        return Ok(Progress::NeedMore);
                    }
                    let n = remaining.min(bytes.len());
                    let (take, rest) = bytes.split_at(n);
                    self.append(take)?;
                    bytes = rest;
                    let remaining = remaining.saturating_sub(n);
                    self.state = State::Chunked(if remaining == 0 {
                        Chunk::DataEnd { cr: false }
                    } else {
                        Chunk::Data { remaining }
                    });
                }
                State::Chunked(chunk) => {
                    let Some((&b, rest)) = bytes.split_first() else {
                        return Ok(Progress::NeedMore);
                    };
                    bytes = rest;
                    self.state = self.chunk_byte(chunk, b)?;
                }
            }
        }
    }

    /// One byte of chunked framing outside chunk data.
    fn chunk_byte(&self, chunk: Chunk, b: u8) -> Result<State, ResponseError> {
        let next = match chunk {
            Chunk::Size {
                value,
                digits,
                after,
                line,
            } => {
                let line = line.saturating_add(1);
                if line > MAX_CHUNK_LINE {
                    return Err(ResponseError::BadChunk("chunk-size line too long"));
                }
                match b {
                    b'\n' => {
                        if digits == 0 {
                            return Err(ResponseError::BadChunk("missing chunk size"));
                        }
                        if value == 0 {
                            Chunk::Trailer { line: 0, total: 0 }
                        } else {
                            if self.body.len().saturating_add(value) > self.max_body {
                                return Err(ResponseError::BodyTooLarge);
                            }
                            Chunk::Data { remaining: value }
                        }
                    }
                    b'\r' => Chunk::Size {
                        value,
                        digits,
                        after: true,
                        line,
                    },
                    _ if after => {
                        if b.is_ascii_graphic() || b == b' ' || b == b'\t' {
                            Chunk::Size {
                                value,
                                digits,
                                after,
                                line,
                            }
                        } else {
                            return Err(ResponseError::BadChunk("bad byte in chunk extension"));
                        }
                    }
                    b';' | b' ' | b'\t' if digits > 0 => Chunk::Size {
                        value,
                        digits,
                        after: true,
                        line,
                    },
                    _ => {
                        let d = char::from(b)
                            .to_digit(16)
                            .ok_or(ResponseError::BadChunk("bad chunk size"))?;
                        let value = value
                            .checked_mul(16)
                            .and_then(|v| v.checked_add(d as usize))
                            .ok_or(ResponseError::BodyTooLarge)?;
                        Chunk::Size {
                            value,
                            digits: digits.saturating_add(1),
                            after,
                            line,
                        }
                    }
                }
            }
            Chunk::DataEnd { cr } => match b {
                b'\r' if !cr => Chunk::DataEnd { cr: true },
                b'\n' => Chunk::Size {
                    value: 0,
                    digits: 0,
                    after: false,
                    line: 0,
                },
                _ => return Err(ResponseError::BadChunk("missing CRLF after chunk data")),
            },
            Chunk::Trailer { line, total } => {
                let total = total.saturating_add(1);
                if total > MAX_HEAD {
                    return Err(ResponseError::BadChunk("trailer section too long"));
                }
                match b {
                    b'\n' if line == 0 => return Ok(State::Complete),
                    b'\n' => Chunk::Trailer { line: 0, total },
                    b'\r' => Chunk::Trailer { line, total },
                    _ => Chunk::Trailer {
                        line: line.saturating_add(1),
                        total,
                    },
                }
            }
            // Data is handled by the caller.
            Chunk::Data { remaining } => Chunk::Data { remaining },
        };
        Ok(State::Chunked(next))
    }
}

/// httparse's error text without std.
trait Describe {
    fn description_str(&self) -> &'static str;
}

impl Describe for httparse::Error {
    fn description_str(&self) -> &'static str {
        match self {
            httparse::Error::HeaderName => "invalid header name",
            httparse::Error::HeaderValue => "invalid header value",
            httparse::Error::NewLine => "invalid new line",
            httparse::Error::Status => "invalid status",
            httparse::Error::Token => "invalid token",
            httparse::Error::TooManyHeaders => "too many headers",
            httparse::Error::Version => "invalid HTTP version",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 23\r\n\r\n{\"data\":{\"get\":\"a\\\"b\"}}xx";

    /// Feeds `input` split at every pair of points, checking that every
    /// split gives the same outcome as one whole feed.
    fn all_splits(input: &[u8], max_body: usize, eof: bool) -> Result<(u16, Vec<u8>), ResponseError> {
        let whole = run(&[input], max_body, eof);
        for i in 0..=input.len() {
            assert_eq!(run(&[&input[..i], &input[i..]], max_body, eof), whole, "split at {i}");
        }
        // Byte by byte.
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(run(&bytes, max_body, eof), whole, "bytewise");
        // Three pieces, a sample of split points (small inputs only).
        let step = if input.len() > 512 { input.len() } else { 3 };
        for i in (0..input.len()).step_by(step) {
            for j in (i..input.len()).step_by(5) {
                assert_eq!(
                    run(&[&input[..i], &input[i..j], &input[j..]], max_body, eof),
                    whole,
                    "splits {i} {j}"
                );
            }
        }
        whole
    }

    fn run(pieces: &[&[u8]], max_body: usize, eof: bool) -> Result<(u16, Vec<u8>), ResponseError> {
        let mut r = ResponseReader::new(max_body);
        let mut done = false;
        for p in pieces {
            if r.feed(p)? == Progress::Complete {
                done = true;
            }
        }
        if !done {
            if !eof {
                return Err(ResponseError::Truncated);
            }
            r.finish_eof()?;
        }
        assert!(r.is_complete());
        Ok((r.status().unwrap(), r.body().to_vec()))
    }

    #[test]
    fn content_length() {
        let (status, body) = all_splits(OK, 1000, false).unwrap();
        assert_eq!(status, 200);
        assert_eq!(body, b"{\"data\":{\"get\":\"a\\\"b\"}}");
        assert_eq!(serde_json::from_slice::<serde_json::Value>(&body).unwrap()["data"]["get"], "a\"b");
        // Exactly at the limit, and one over.
        assert!(all_splits(OK, 23, false).is_ok());
        assert_eq!(all_splits(OK, 22, false), Err(ResponseError::BodyTooLarge));
        // Zero length.
        let (s, b) = all_splits(b"HTTP/1.1 400 Bad Request\r\ncontent-length:  0 \r\n\r\n", 10, false).unwrap();
        assert_eq!((s, b.len()), (400, 0));
        // Duplicate identical lengths are fine, different ones are not.
        assert!(all_splits(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nab", 10, false).is_ok());
        for bad in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: -2\r\n\r\nab",
            b"HTTP/1.1 200 OK\r\nContent-Length: 0x2\r\n\r\nab",
            b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nab",
            b"HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\nab",
            b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\nab",
        ] {
            assert_eq!(all_splits(bad, 10, true), Err(ResponseError::BadContentLength));
        }
        // Huge but well-formed: too large before any body byte.
        let mut r = ResponseReader::new(1 << 21);
        assert_eq!(
            r.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 9999999999999999999\r\n\r\n"),
            Err(ResponseError::BodyTooLarge)
        );
        // Sticky error.
        assert_eq!(r.feed(b"x"), Err(ResponseError::BodyTooLarge));
        assert_eq!(r.finish_eof(), Err(ResponseError::BodyTooLarge));
    }

    #[test]
    fn truncated() {
        for cut in 0..OK.len() - 2 {
            let mut r = ResponseReader::new(1000);
            assert_eq!(r.feed(&OK[..cut]), Ok(Progress::NeedMore), "{cut}");
            assert_eq!(r.finish_eof(), Err(ResponseError::Truncated), "{cut}");
            assert!(!r.is_complete());
        }
        let mut r = ResponseReader::new(1000);
        assert_eq!(r.feed(OK), Ok(Progress::Complete));
        assert_eq!(r.finish_eof(), Ok(Progress::Complete));
        assert_eq!(r.feed(b"more"), Ok(Progress::Complete));
        assert_eq!(r.body().len(), 23);
        assert_eq!(r.take_body().len(), 23);
        assert!(r.body().is_empty());
    }

    #[test]
    fn until_eof() {
        let input = b"HTTP/1.0 200 OK\r\nServer: x\r\n\r\n{\"data\":null}";
        let (s, b) = all_splits(input, 100, true).unwrap();
        assert_eq!((s, &b[..]), (200, &b"{\"data\":null}"[..]));
        assert_eq!(all_splits(input, 12, true), Err(ResponseError::BodyTooLarge));
        assert!(all_splits(input, 13, true).is_ok());
        // Empty body.
        let (_, b) = all_splits(b"HTTP/1.1 500 Oops\r\n\r\n", 100, true).unwrap();
        assert!(b.is_empty());
    }

    #[test]
    fn no_body_statuses() {
        let mut r = ResponseReader::new(10);
        assert_eq!(r.feed(b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello"), Ok(Progress::Complete));
        assert_eq!(r.body(), b"");
        assert_eq!(r.status(), Some(204));
    }

    #[test]
    fn interim_responses_skipped() {
        let input = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\nX: y\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        let (s, b) = all_splits(input, 10, false).unwrap();
        assert_eq!((s, &b[..]), (200, &b"ok"[..]));
        // Interim responses that fill the head buffer on their own.
        let mut big = std::vec::Vec::new();
        for _ in 0..(2 * MAX_HEAD / 40) {
            big.extend_from_slice(b"HTTP/1.1 100 Continue\r\nX: 0123456789\r\n\r\n");
        }
        big.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        assert_eq!(run(&[&big], 10, false), Ok((200, b"ok".to_vec())));
        let mut r = ResponseReader::new(10);
        assert!(matches!(r.feed(b"HTTP/1.1 101 Switching Protocols\r\n\r\n"), Err(ResponseError::Malformed(_))));
    }

    #[test]
    fn chunked() {
        let input = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n\
            5\r\nhello\r\n\
            1;name=\"v\"\r\n,\r\n\
            A \r\n 0123456\r\n\r\n\
            0\r\nX-Trailer: 1\r\n\r\ntrailing garbage";
        let (s, b) = all_splits(input, 100, false).unwrap();
        assert_eq!(s, 200);
        assert_eq!(b, b"hello, 0123456\r\n");
        // Bare LF line ends, upper-case hex, no trailers.
        let input = b"HTTP/1.1 200 OK\r\ntransfer-encoding: Chunked\r\n\r\n1F\nabcdefghijklmnopqrstuvwxyz01234\n0\n\n";
        let (_, b) = all_splits(input, 100, false).unwrap();
        assert_eq!(b, b"abcdefghijklmnopqrstuvwxyz01234");
        // Limits: exactly max_body is fine, one more is not (decided from
        // the chunk size).
        assert!(all_splits(input, 31, false).is_ok());
        assert_eq!(all_splits(input, 30, false), Err(ResponseError::BodyTooLarge));
        // EOF inside the chunked body.
        assert_eq!(
            all_splits(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel", 100, true),
            Err(ResponseError::Truncated)
        );
        assert_eq!(
            all_splits(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n", 100, true),
            Err(ResponseError::Truncated)
        );
    }

    #[test]
    fn chunked_errors() {
        let head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        for (body, want) in [
            ("\r\n", ResponseError::BadChunk("missing chunk size")),
            ("g\r\n", ResponseError::BadChunk("bad chunk size")),
            ("-1\r\n", ResponseError::BadChunk("bad chunk size")),
            (";x\r\n", ResponseError::BadChunk("bad chunk size")),
            ("2\r\nabX\r\n", ResponseError::BadChunk("missing CRLF after chunk data")),
            ("2\r\nab\rX", ResponseError::BadChunk("missing CRLF after chunk data")),
            ("2;\u{1}\r\nab\r\n", ResponseError::BadChunk("bad byte in chunk extension")),
            ("FFFFFFFFFFFFFFFFFFFF\r\n", ResponseError::BodyTooLarge),
            ("FFFFFFFF\r\n", ResponseError::BodyTooLarge),
        ] {
            let input = format!("{head}{body}");
            assert_eq!(all_splits(input.as_bytes(), 100, true), Err(want), "{body:?}");
        }
        let long = format!("{head}1;{}\r\nx\r\n0\r\n\r\n", "e".repeat(MAX_CHUNK_LINE));
        assert_eq!(
            all_splits(long.as_bytes(), 100, true),
            Err(ResponseError::BadChunk("chunk-size line too long"))
        );
        let trailers = format!("{head}0\r\n{}\r\n\r\n", "t".repeat(MAX_HEAD + 1));
        assert_eq!(
            run(&[trailers.as_bytes()], 100, true),
            Err(ResponseError::BadChunk("trailer section too long"))
        );
        for te in ["gzip", "gzip, chunked", "chunked, gzip", "identity"] {
            let input = format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: {te}\r\n\r\n0\r\n\r\n");
            assert_eq!(run(&[input.as_bytes()], 100, true), Err(ResponseError::UnsupportedEncoding), "{te}");
        }
        let twice = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        assert_eq!(run(&[twice.as_bytes()], 100, true), Err(ResponseError::UnsupportedEncoding));
    }

    #[test]
    fn head_limits_and_garbage() {
        // A head of exactly MAX_HEAD bytes is fine.
        let prefix = "HTTP/1.1 200 OK\r\nX: ";
        let suffix = "\r\nContent-Length: 1\r\n\r\n";
        let pad = MAX_HEAD - prefix.len() - suffix.len();
        let input = format!("{prefix}{}{suffix}z", "a".repeat(pad));
        let (_, b) = all_splits(input.as_bytes(), 10, false).unwrap();
        assert_eq!(b, b"z");
        let input = format!("{prefix}{}{suffix}z", "a".repeat(pad + 1));
        assert_eq!(all_splits(input.as_bytes(), 10, true), Err(ResponseError::HeadTooLarge));
        // Too many headers.
        let many = format!("HTTP/1.1 200 OK\r\n{}\r\n", "A: b\r\n".repeat(MAX_HEADERS + 1));
        assert_eq!(run(&[many.as_bytes()], 10, true), Err(ResponseError::TooManyHeaders));
        for bad in [&b"GET / HTTP/1.1\r\n\r\n"[..], b"HTTP/2 200\r\n\r\n", b"\0\0\0\0", b"HTTP/1.1 2000 OK\r\n\r\n", b"HTTP/1.1 200 OK\r\nBad Header: x\r\n\r\n"] {
            assert!(matches!(run(&[bad], 10, true), Err(ResponseError::Malformed(_))), "{bad:?}");
        }
        for e in [ResponseError::HeadTooLarge, ResponseError::Malformed("x"), ResponseError::Truncated] {
            assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn random_never_panics() {
        let mut rng = crate::test_util::XorShift(0x9e37_79b9_7f4a_7c15);
        let pieces: &[&[u8]] = &[
            b"HTTP/1.1 200 OK\r\n", b"Content-Length: 5\r\n", b"Transfer-Encoding: chunked\r\n",
            b"\r\n", b"5\r\n", b"0\r\n", b"hello", b";x", b"\n", b"\r", b"HTTP/1.1 100 Continue\r\n",
            b"FFFF", b" ", b"\0",
        ];
        for _ in 0..20_000 {
            let mut input = Vec::new();
            for _ in 0..rng.next() % 12 {
                input.extend_from_slice(pieces[(rng.next() % pieces.len() as u64) as usize]);
            }
            let mut r = ResponseReader::new((rng.next() % 64) as usize);
            let mut rest = &input[..];
            while !rest.is_empty() {
                let n = 1 + (rng.next() as usize % rest.len());
                let _ = r.feed(&rest[..n]);
                rest = &rest[n..];
            }
            let _ = r.finish_eof();
            assert!(r.body().len() <= 64);
        }
    }
}
