//! Guest-side xenstore client over the shared ring page.
//!
//! The wire protocol is described in Xen's public headers `io/xs_wire.h` and
//! `io/xenbus.h`: the guest writes requests (`xsd_sockmsg` header followed by
//! a payload of at most [`XENSTORE_PAYLOAD_MAX`] bytes) into the `req` ring
//! and reads replies and asynchronous watch events from the `rsp` ring. Both
//! rings are 1024 bytes with free-running 32-bit indices masked by
//! [`mask_idx`].
//!
//! The module is split in two layers:
//!
//! * a pure, allocation-free parser ([`Header`], [`parse_reply`],
//!   [`Reply`], [`ReplyBody`]) that turns a complete message (header plus
//!   payload) into a typed view, in the style of smoltcp's `wire` module. It
//!   never panics and is fuzzed directly;
//! * the client [`XenStore`], which owns the guest side of the ring and does
//!   all shared-memory accesses with volatile reads/writes and explicit
//!   fences. The server (dom0's xenstored) is treated as untrusted: bad ring
//!   indices or malformed messages become [`XsError::Protocol`], never a
//!   panic or an out-of-bounds access.
//!
//! Requests are synchronous: each operation writes one request, then waits
//! (through [`XenStoreEnv::wait`]) until the reply with the same `req_id`
//! arrives or the timeout expires. Watch events that arrive meanwhile, or
//! while the kernel calls [`XenStore::pump`], are queued (bounded) and
//! handed out by [`XenStore::poll_watch`].

use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::mem::{offset_of, size_of};
use core::ptr::{addr_of, addr_of_mut};
use core::sync::atomic::{fence, Ordering};

// ---------------------------------------------------------------------------
// Protocol constants (xs_wire.h)
// ---------------------------------------------------------------------------

/// Size of each of the two rings in the shared page.
pub const XENSTORE_RING_SIZE: usize = 1024;
/// Largest payload a message may carry ("violating this is very bad").
pub const XENSTORE_PAYLOAD_MAX: usize = 4096;
/// Longest absolute path the server accepts.
pub const XENSTORE_ABS_PATH_MAX: usize = 3072;
/// Longest relative path the server accepts.
pub const XENSTORE_REL_PATH_MAX: usize = 2048;
/// Size of `struct xsd_sockmsg`.
pub const HEADER_LEN: usize = 16;
/// Largest complete message (header plus payload).
pub const MESSAGE_MAX: usize = HEADER_LEN + XENSTORE_PAYLOAD_MAX;

/// `XENSTORE_SERVER_FEATURE_RECONNECTION`.
pub const XENSTORE_SERVER_FEATURE_RECONNECTION: u32 = 1;
/// `XENSTORE_SERVER_FEATURE_ERROR`.
pub const XENSTORE_SERVER_FEATURE_ERROR: u32 = 2;
/// `XENSTORE_CONNECTED`: value of `connection` in the steady state.
pub const XENSTORE_CONNECTED: u32 = 0;
/// `XENSTORE_RECONNECT`: value of `connection` while a reconnect is going on.
pub const XENSTORE_RECONNECT: u32 = 1;

/// `MASK_XENSTORE_IDX`: position in a ring of a free-running index.
#[inline]
pub const fn mask_idx(idx: u32) -> usize {
    (idx as usize) & (XENSTORE_RING_SIZE - 1)
}

/// `struct xenstore_domain_interface`, the layout of the shared xenstore
/// page as defined by `io/xs_wire.h`.
#[repr(C)]
pub struct XenstoreDomainInterface {
    /// Requests to the xenstore daemon.
    pub req: [u8; XENSTORE_RING_SIZE],
    /// Replies and asynchronous watch events.
    pub rsp: [u8; XENSTORE_RING_SIZE],
    pub req_cons: u32,
    pub req_prod: u32,
    pub rsp_cons: u32,
    pub rsp_prod: u32,
    /// Bitmap of features supported by the server.
    pub server_features: u32,
    pub connection: u32,
    pub error: u32,
}

const _: () = {
    assert!(size_of::<XenstoreDomainInterface>() == 2076);
    assert!(core::mem::align_of::<XenstoreDomainInterface>() == 4);
    assert!(offset_of!(XenstoreDomainInterface, req) == 0);
    assert!(offset_of!(XenstoreDomainInterface, rsp) == 1024);
    assert!(offset_of!(XenstoreDomainInterface, req_cons) == 2048);
    assert!(offset_of!(XenstoreDomainInterface, req_prod) == 2052);
    assert!(offset_of!(XenstoreDomainInterface, rsp_cons) == 2056);
    assert!(offset_of!(XenstoreDomainInterface, rsp_prod) == 2060);
    assert!(offset_of!(XenstoreDomainInterface, server_features) == 2064);
    assert!(offset_of!(XenstoreDomainInterface, connection) == 2068);
    assert!(offset_of!(XenstoreDomainInterface, error) == 2072);
    assert!(XENSTORE_RING_SIZE.is_power_of_two());
};

impl XenstoreDomainInterface {
    /// An all-zero interface (what the toolstack hands a fresh domain).
    pub const fn zeroed() -> Self {
        XenstoreDomainInterface {
            req: [0; XENSTORE_RING_SIZE],
            rsp: [0; XENSTORE_RING_SIZE],
            req_cons: 0,
            req_prod: 0,
            rsp_cons: 0,
            rsp_prod: 0,
            server_features: 0,
            connection: 0,
            error: 0,
        }
    }
}

/// `enum xsd_sockmsg_type`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MsgType {
    Control = 0,
    Directory = 1,
    Read = 2,
    GetPerms = 3,
    Watch = 4,
    Unwatch = 5,
    TransactionStart = 6,
    TransactionEnd = 7,
    Introduce = 8,
    Release = 9,
    GetDomainPath = 10,
    Write = 11,
    Mkdir = 12,
    Rm = 13,
    SetPerms = 14,
    WatchEvent = 15,
    Error = 16,
    IsDomainIntroduced = 17,
    Resume = 18,
    SetTarget = 19,
    // 20 was XS_RESTRICT, removed.
    ResetWatches = 21,
    DirectoryPart = 22,
}

impl MsgType {
    /// The type for a raw `xsd_sockmsg.type`, if it is a known one.
    pub const fn from_u32(v: u32) -> Option<MsgType> {
        Some(match v {
            0 => MsgType::Control,
            1 => MsgType::Directory,
            2 => MsgType::Read,
            3 => MsgType::GetPerms,
            4 => MsgType::Watch,
            5 => MsgType::Unwatch,
            6 => MsgType::TransactionStart,
            7 => MsgType::TransactionEnd,
            8 => MsgType::Introduce,
            9 => MsgType::Release,
            10 => MsgType::GetDomainPath,
            11 => MsgType::Write,
            12 => MsgType::Mkdir,
            13 => MsgType::Rm,
            14 => MsgType::SetPerms,
            15 => MsgType::WatchEvent,
            16 => MsgType::Error,
            17 => MsgType::IsDomainIntroduced,
            18 => MsgType::Resume,
            19 => MsgType::SetTarget,
            21 => MsgType::ResetWatches,
            22 => MsgType::DirectoryPart,
            _ => return None,
        })
    }
}

/// `enum xenbus_state` (io/xenbus.h), the values of a device's `state` node.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum XenbusState {
    Unknown = 0,
    Initialising = 1,
    InitWait = 2,
    Initialised = 3,
    Connected = 4,
    Closing = 5,
    Closed = 6,
    Reconfiguring = 7,
    Reconfigured = 8,
}

impl XenbusState {
    pub const fn from_u32(v: u32) -> Option<XenbusState> {
        Some(match v {
            0 => XenbusState::Unknown,
            1 => XenbusState::Initialising,
            2 => XenbusState::InitWait,
            3 => XenbusState::Initialised,
            4 => XenbusState::Connected,
            5 => XenbusState::Closing,
            6 => XenbusState::Closed,
            7 => XenbusState::Reconfiguring,
            8 => XenbusState::Reconfigured,
            _ => return None,
        })
    }
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// Error names the server sends in `XS_ERROR` replies (the `xsd_errors`
/// table of xs_wire.h).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Errno {
    EINVAL,
    EACCES,
    EEXIST,
    EISDIR,
    ENOENT,
    ENOMEM,
    ENOSPC,
    EIO,
    ENOTEMPTY,
    ENOSYS,
    EROFS,
    EBUSY,
    EAGAIN,
    EISCONN,
    E2BIG,
    EPERM,
    /// A well-formed error reply whose name is not in the table.
    Unknown,
}

const ERRNO_NAMES: [(Errno, &str); 16] = [
    (Errno::EINVAL, "EINVAL"),
    (Errno::EACCES, "EACCES"),
    (Errno::EEXIST, "EEXIST"),
    (Errno::EISDIR, "EISDIR"),
    (Errno::ENOENT, "ENOENT"),
    (Errno::ENOMEM, "ENOMEM"),
    (Errno::ENOSPC, "ENOSPC"),
    (Errno::EIO, "EIO"),
    (Errno::ENOTEMPTY, "ENOTEMPTY"),
    (Errno::ENOSYS, "ENOSYS"),
    (Errno::EROFS, "EROFS"),
    (Errno::EBUSY, "EBUSY"),
    (Errno::EAGAIN, "EAGAIN"),
    (Errno::EISCONN, "EISCONN"),
    (Errno::E2BIG, "E2BIG"),
    (Errno::EPERM, "EPERM"),
];

impl Errno {
    /// The errno for the name in an `XS_ERROR` payload (without its NUL).
    pub fn from_name(name: &[u8]) -> Errno {
        for (e, n) in ERRNO_NAMES.iter() {
            if n.as_bytes() == name {
                return *e;
            }
        }
        Errno::Unknown
    }

    /// The name as the server spells it.
    pub fn name(self) -> &'static str {
        for (e, n) in ERRNO_NAMES.iter() {
            if *e == self {
                return n;
            }
        }
        "unknown error"
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Errors of the xenstore client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XsError {
    /// The server answered `XS_ERROR` with this error (never `EAGAIN`, see
    /// [`XsError::Again`]).
    Errno(Errno),
    /// The server answered `EAGAIN`: a transaction conflicted and must be
    /// retried from `transaction_start`.
    Again,
    /// No reply arrived before the request's deadline. The request may or
    /// may not have been carried out by the server.
    Timeout,
    /// The server broke the protocol (bad ring index, oversized or malformed
    /// message, unexpected reply). The client resynchronises and stays
    /// usable where it can.
    Protocol(&'static str),
    /// A path, value or token is longer than the protocol allows; nothing was
    /// sent.
    TooLong,
    /// An argument cannot be expressed on the wire (for example a path with
    /// a NUL byte); nothing was sent.
    Invalid(&'static str),
    /// A value read from the store does not have the expected format (for
    /// example not a decimal number for [`XenStore::read_u32`]).
    BadValue,
}

impl XsError {
    /// Shorthand for `self == XsError::Errno(Errno::ENOENT)`.
    pub fn is_not_found(&self) -> bool {
        *self == XsError::Errno(Errno::ENOENT)
    }
}

impl fmt::Display for XsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            XsError::Errno(e) => write!(f, "xenstore error {}", e),
            XsError::Again => f.write_str("xenstore transaction conflict (EAGAIN), retry"),
            XsError::Timeout => f.write_str("xenstore request timed out"),
            XsError::Protocol(what) => write!(f, "xenstore protocol error: {}", what),
            XsError::TooLong => f.write_str("xenstore request too long"),
            XsError::Invalid(what) => write!(f, "invalid xenstore argument: {}", what),
            XsError::BadValue => f.write_str("xenstore value has an unexpected format"),
        }
    }
}

impl core::error::Error for XsError {}

/// Result type of this module.
pub type Result<T> = core::result::Result<T, XsError>;

// ---------------------------------------------------------------------------
// Wire format: pure parsing, no allocation, no panics
// ---------------------------------------------------------------------------

/// `struct xsd_sockmsg`, in the machine's byte order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Raw `type`; see [`Header::kind`].
    pub msg_type: u32,
    pub req_id: u32,
    pub tx_id: u32,
    /// Payload length following the header.
    pub len: u32,
}

impl Header {
    /// Reads a header from the first [`HEADER_LEN`] bytes.
    pub fn from_bytes(b: &[u8; HEADER_LEN]) -> Header {
        let w = |i: usize| u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        Header {
            msg_type: w(0),
            req_id: w(4),
            tx_id: w(8),
            len: w(12),
        }
    }

    /// Reads a header from the start of `b`, if it is long enough.
    pub fn parse(b: &[u8]) -> Option<Header> {
        let first: &[u8; HEADER_LEN] = b.get(..HEADER_LEN)?.try_into().ok()?;
        Some(Header::from_bytes(first))
    }

    /// Serialises the header.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0..4].copy_from_slice(&self.msg_type.to_ne_bytes());
        out[4..8].copy_from_slice(&self.req_id.to_ne_bytes());
        out[8..12].copy_from_slice(&self.tx_id.to_ne_bytes());
        out[12..16].copy_from_slice(&self.len.to_ne_bytes());
        out
    }

    /// The message type, if known.
    pub fn kind(&self) -> Option<MsgType> {
        MsgType::from_u32(self.msg_type)
    }
}

/// A transaction id handed out by the server (never 0, which means "no
/// transaction" on the wire).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TxId(u32);

impl TxId {
    /// The id as it goes on the wire.
    pub fn raw(self) -> u32 {
        self.0
    }
}

/// The entries of an `XS_DIRECTORY` reply (validated UTF-8, each non-empty).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirEntries<'a> {
    /// Entries separated and terminated by NUL, or empty.
    raw: &'a str,
}

impl<'a> DirEntries<'a> {
    /// Iterates over the entry names.
    pub fn iter(&self) -> impl Iterator<Item = &'a str> + 'a {
        let raw = self.raw;
        raw.split('\0').filter(|s| !s.is_empty())
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }
}

/// The typed content of a reply or event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyBody<'a> {
    /// `"OK"` acknowledgement (write, mkdir, rm, watch, unwatch,
    /// transaction end and the other commands without a result).
    Ack,
    /// Value of an `XS_READ` (raw bytes, not NUL-terminated).
    Read(&'a [u8]),
    /// Children of an `XS_DIRECTORY`.
    Directory(DirEntries<'a>),
    /// Id of a transaction just started.
    TransactionStarted(TxId),
    /// Answer to `XS_GET_DOMAIN_PATH`.
    DomainPath(&'a str),
    /// An asynchronous watch event.
    WatchEvent { path: &'a str, token: &'a str },
    /// `XS_ERROR`.
    Error(Errno),
}

/// A parsed message: its header and a typed view of the payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reply<'a> {
    pub header: Header,
    pub body: ReplyBody<'a>,
}

/// Splits a payload made of exactly one NUL-terminated string.
fn single_string(p: &[u8]) -> Result<&[u8]> {
    match p.split_last() {
        Some((0, s)) if !s.contains(&0) => Ok(s),
        Some((0, _)) => Err(XsError::Protocol("unexpected NUL in string")),
        _ => Err(XsError::Protocol("missing NUL terminator")),
    }
}

fn utf8(b: &[u8]) -> Result<&str> {
    core::str::from_utf8(b).map_err(|_| XsError::Protocol("invalid UTF-8"))
}

/// Parses a decimal `u32` the way xenstore values are written (ASCII digits
/// only, no sign, no spaces).
pub fn parse_u32(b: &[u8]) -> Option<u32> {
    if b.is_empty() || b.len() > 10 {
        return None;
    }
    let mut v: u32 = 0;
    for &c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u32::from(c - b'0'))?;
    }
    Some(v)
}

/// Parses one complete message (header followed by exactly `len` bytes of
/// payload) received from the server.
///
/// Pure function over untrusted bytes: it never panics, never allocates and
/// rejects anything malformed with [`XsError::Protocol`].
pub fn parse_reply(bytes: &[u8]) -> Result<Reply<'_>> {
    let header = Header::parse(bytes).ok_or(XsError::Protocol("truncated header"))?;
    let len = header.len as usize;
    if len > XENSTORE_PAYLOAD_MAX {
        return Err(XsError::Protocol("payload too long"));
    }
    let payload = &bytes[HEADER_LEN..];
    if payload.len() != len {
        return Err(XsError::Protocol("payload length mismatch"));
    }
    let kind = header
        .kind()
        .ok_or(XsError::Protocol("unknown message type"))?;
    let body = match kind {
        MsgType::Error => {
            let name = single_string(payload)?;
            ReplyBody::Error(Errno::from_name(name))
        }
        MsgType::WatchEvent => {
            // "path\0token\0", exactly two strings.
            let (last, rest) = payload
                .split_last()
                .ok_or(XsError::Protocol("empty watch event"))?;
            if *last != 0 {
                return Err(XsError::Protocol("missing NUL terminator"));
            }
            let mut parts = rest.splitn(2, |&c| c == 0);
            let path = parts.next().unwrap_or(&[]);
            let token = parts
                .next()
                .ok_or(XsError::Protocol("watch event without token"))?;
            if token.contains(&0) {
                return Err(XsError::Protocol("watch event with extra fields"));
            }
            if path.is_empty() {
                return Err(XsError::Protocol("watch event with empty path"));
            }
            ReplyBody::WatchEvent {
                path: utf8(path)?,
                token: utf8(token)?,
            }
        }
        MsgType::Read => ReplyBody::Read(payload),
        MsgType::Directory => {
            // Tolerate a lone NUL for an empty directory.
            let raw: &[u8] = if payload == b"\0" { &[] } else { payload };
            if let Some(&last) = raw.last() {
                if last != 0 {
                    return Err(XsError::Protocol("missing NUL terminator"));
                }
                if raw[0] == 0 || raw.windows(2).any(|w| w == [0, 0]) {
                    return Err(XsError::Protocol("empty directory entry"));
                }
            }
            ReplyBody::Directory(DirEntries { raw: utf8(raw)? })
        }
        MsgType::TransactionStart => {
            let s = single_string(payload)?;
            match parse_u32(s) {
                Some(0) | None => return Err(XsError::Protocol("bad transaction id")),
                Some(id) => ReplyBody::TransactionStarted(TxId(id)),
            }
        }
        MsgType::GetDomainPath => ReplyBody::DomainPath(utf8(single_string(payload)?)?),
        MsgType::Write
        | MsgType::Mkdir
        | MsgType::Rm
        | MsgType::Watch
        | MsgType::Unwatch
        | MsgType::TransactionEnd
        | MsgType::SetPerms
        | MsgType::Introduce
        | MsgType::Release
        | MsgType::Resume
        | MsgType::SetTarget
        | MsgType::ResetWatches => {
            if payload == b"OK\0" || payload == b"OK" {
                ReplyBody::Ack
            } else {
                return Err(XsError::Protocol("bad acknowledgement"));
            }
        }
        MsgType::Control
        | MsgType::GetPerms
        | MsgType::IsDomainIntroduced
        | MsgType::DirectoryPart => {
            return Err(XsError::Protocol("unsupported message type"));
        }
    };
    Ok(Reply { header, body })
}

// ---------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------

/// What the platform provides to the client.
pub trait XenStoreEnv {
    /// Signal the xenstore event channel (EVTCHNOP_send).
    fn notify(&mut self);
    /// Block until an event arrives (any event is fine: the client re-checks
    /// the ring) or `now_ns() >= deadline_ns`. Spurious returns are fine.
    fn wait(&mut self, deadline_ns: u64);
    /// Monotonic time in nanoseconds.
    fn now_ns(&self) -> u64;
}

/// An asynchronous watch event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchEvent {
    /// The node that changed (or the watched path itself for the initial
    /// event the server sends on registration).
    pub path: String,
    /// The token given to [`XenStore::watch`].
    pub token: String,
}

/// Counters of things that went wrong without failing a request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XsStats {
    /// Watch events dropped because the queue was full (oldest first).
    pub watch_events_dropped: u64,
    /// Replies to requests that had already timed out or failed, dropped.
    pub stale_replies: u64,
    /// Protocol errors seen (bad indices, malformed or unmatched messages).
    pub protocol_errors: u64,
}

/// Default per-request timeout: 5 seconds.
pub const DEFAULT_TIMEOUT_NS: u64 = 5_000_000_000;
/// Default capacity of the watch event queue.
pub const DEFAULT_WATCH_QUEUE: usize = 64;
/// How many abandoned request ids are remembered to drop their late replies.
const ABANDONED_MAX: usize = 16;
/// Upper bound on the rounds of one `drain` (each takes up to a ring's worth).
const DRAIN_ROUNDS_MAX: usize = 1024;

struct Pending {
    req_id: u32,
    reply: Option<Result<Vec<u8>>>,
}

/// The guest side of the xenstore ring.
pub struct XenStore<E: XenStoreEnv> {
    ring: *mut XenstoreDomainInterface,
    env: E,
    /// Our copy of `req_prod` (we are its only writer).
    req_prod: u32,
    /// Our copy of `rsp_cons` (we are its only writer).
    rsp_cons: u32,
    /// Bytes queued for the request ring; `out[..out_pos]` already sent.
    out: Vec<u8>,
    out_pos: usize,
    /// Partial incoming message (at most [`MESSAGE_MAX`] bytes).
    rx: Vec<u8>,
    next_req_id: u32,
    pending: Option<Pending>,
    abandoned: VecDeque<u32>,
    watches: VecDeque<WatchEvent>,
    watch_capacity: usize,
    timeout_ns: u64,
    stats: XsStats,
}

// SAFETY: the ring pointer is only dereferenced through `&mut self` (or
// `&self` for a read of a server-owned field), and `new`'s contract makes the
// page exclusive to this client on the guest side, so moving the client to
// another CPU/thread moves sole access with it.
unsafe impl<E: XenStoreEnv + Send> Send for XenStore<E> {}

impl<E: XenStoreEnv> XenStore<E> {
    /// Takes over the guest side of the xenstore ring at `ring`.
    ///
    /// Unconsumed bytes already in the response ring are discarded as stale
    /// (as Linux does on boot); the request ring is left as it is.
    ///
    /// # Safety
    ///
    /// `ring` must be non-null, 4-byte aligned, and valid for reads and
    /// writes of a whole [`XenstoreDomainInterface`] for as long as the
    /// returned value lives (typically the mapped xenstore page). Nothing on
    /// the guest side other than this client may access it while the client
    /// exists; the xenstore server on the other side may, and is not trusted.
    pub unsafe fn new(ring: *mut XenstoreDomainInterface, env: E) -> Self {
        // SAFETY: the caller guarantees `ring` is valid and aligned; only
        // fields are read, through raw pointers, with volatile accesses.
        let (req_prod, rsp_prod) = unsafe {
            (
                addr_of!((*ring).req_prod).read_volatile(),
                addr_of!((*ring).rsp_prod).read_volatile(),
            )
        };
        let mut xs = XenStore {
            ring,
            env,
            req_prod,
            rsp_cons: rsp_prod,
            out: Vec::new(),
            out_pos: 0,
            rx: Vec::new(),
            next_req_id: 1,
            pending: None,
            abandoned: VecDeque::new(),
            watches: VecDeque::new(),
            watch_capacity: DEFAULT_WATCH_QUEUE,
            timeout_ns: DEFAULT_TIMEOUT_NS,
            stats: XsStats::default(),
        };
        fence(Ordering::Release);
        xs.publish_rsp_cons();
        xs
    }

    /// The platform environment.
    pub fn env(&self) -> &E {
        &self.env
    }

    /// The platform environment, mutably.
    pub fn env_mut(&mut self) -> &mut E {
        &mut self.env
    }

    /// Per-request timeout in nanoseconds.
    pub fn timeout_ns(&self) -> u64 {
        self.timeout_ns
    }

    /// Sets the per-request timeout in nanoseconds.
    pub fn set_timeout_ns(&mut self, ns: u64) {
        self.timeout_ns = ns;
    }

    /// Sets the capacity of the watch event queue (at least 1). Events
    /// beyond it drop the oldest ones.
    pub fn set_watch_queue_capacity(&mut self, cap: usize) {
        self.watch_capacity = cap.max(1);
        while self.watches.len() > self.watch_capacity {
            self.watches.pop_front();
            self.stats.watch_events_dropped += 1;
        }
    }

    /// Counters of dropped events, stale replies and protocol errors.
    pub fn stats(&self) -> XsStats {
        self.stats
    }

    /// The server's feature bitmap (`XENSTORE_SERVER_FEATURE_*`).
    pub fn server_features(&self) -> u32 {
        // SAFETY: `ring` is valid per `new`'s contract; volatile read of a
        // plain u32 field through a raw pointer.
        unsafe { addr_of!((*self.ring).server_features).read_volatile() }
    }

    // ----- watch queue -----

    /// Takes the oldest queued watch event. Does not look at the ring: call
    /// [`XenStore::pump`] when the event channel fires.
    pub fn poll_watch(&mut self) -> Option<WatchEvent> {
        self.watches.pop_front()
    }

    /// Whether a watch event is queued.
    pub fn has_pending_watch(&self) -> bool {
        !self.watches.is_empty()
    }

    // ----- operations -----

    /// Reads a value as UTF-8 text.
    pub fn read(&mut self, path: &str) -> Result<String> {
        self.read_in(0, path)
    }

    /// Reads a value inside a transaction.
    pub fn read_tx(&mut self, tx: TxId, path: &str) -> Result<String> {
        self.read_in(tx.0, path)
    }

    /// Reads a value as raw bytes.
    pub fn read_bytes(&mut self, path: &str) -> Result<Vec<u8>> {
        self.read_bytes_in(0, path)
    }

    /// Reads a value as raw bytes inside a transaction.
    pub fn read_bytes_tx(&mut self, tx: TxId, path: &str) -> Result<Vec<u8>> {
        self.read_bytes_in(tx.0, path)
    }

    /// Reads a value, `Ok(None)` if the node does not exist.
    pub fn read_optional(&mut self, path: &str) -> Result<Option<String>> {
        match self.read(path) {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Reads a decimal `u32` value.
    pub fn read_u32(&mut self, path: &str) -> Result<u32> {
        self.read_u32_in(0, path)
    }

    /// Reads a decimal `u32` value inside a transaction.
    pub fn read_u32_tx(&mut self, tx: TxId, path: &str) -> Result<u32> {
        self.read_u32_in(tx.0, path)
    }

    /// Reads a xenbus `state` node.
    pub fn read_state(&mut self, path: &str) -> Result<XenbusState> {
        XenbusState::from_u32(self.read_u32(path)?).ok_or(XsError::BadValue)
    }

    /// Writes a value (creating the node and missing parents).
    pub fn write(&mut self, path: &str, value: &str) -> Result<()> {
        self.write_in(0, path, value.as_bytes())
    }

    /// Writes a value inside a transaction.
    pub fn write_tx(&mut self, tx: TxId, path: &str, value: &str) -> Result<()> {
        self.write_in(tx.0, path, value.as_bytes())
    }

    /// Writes raw bytes.
    pub fn write_bytes(&mut self, path: &str, value: &[u8]) -> Result<()> {
        self.write_in(0, path, value)
    }

    /// Writes raw bytes inside a transaction.
    pub fn write_bytes_tx(&mut self, tx: TxId, path: &str, value: &[u8]) -> Result<()> {
        self.write_in(tx.0, path, value)
    }

    /// Writes a decimal `u32`.
    pub fn write_u32(&mut self, path: &str, value: u32) -> Result<()> {
        self.write_u32_in(0, path, value)
    }

    /// Writes a decimal `u32` inside a transaction.
    pub fn write_u32_tx(&mut self, tx: TxId, path: &str, value: u32) -> Result<()> {
        self.write_u32_in(tx.0, path, value)
    }

    /// Writes a xenbus `state` node.
    pub fn write_state(&mut self, path: &str, state: XenbusState) -> Result<()> {
        self.write_u32(path, state as u32)
    }

    /// Creates a node with an empty value (no error if it exists).
    pub fn mkdir(&mut self, path: &str) -> Result<()> {
        self.path_ack(MsgType::Mkdir, 0, path)
    }

    /// Creates a node inside a transaction.
    pub fn mkdir_tx(&mut self, tx: TxId, path: &str) -> Result<()> {
        self.path_ack(MsgType::Mkdir, tx.0, path)
    }

    /// Removes a node and everything below it.
    pub fn rm(&mut self, path: &str) -> Result<()> {
        self.path_ack(MsgType::Rm, 0, path)
    }

    /// Removes a node inside a transaction.
    pub fn rm_tx(&mut self, tx: TxId, path: &str) -> Result<()> {
        self.path_ack(MsgType::Rm, tx.0, path)
    }

    /// Lists the children of a node.
    pub fn directory(&mut self, path: &str) -> Result<Vec<String>> {
        self.directory_in(0, path)
    }

    /// Lists the children of a node inside a transaction.
    pub fn directory_tx(&mut self, tx: TxId, path: &str) -> Result<Vec<String>> {
        self.directory_in(tx.0, path)
    }

    /// The home path of domain `domid` (e.g. `/local/domain/5`).
    pub fn get_domain_path(&mut self, domid: u16) -> Result<String> {
        let mut buf = [0u8; 5];
        let id = fmt_u32(u32::from(domid), &mut buf);
        let raw = self.request(MsgType::GetDomainPath, 0, &[id, b"\0"])?;
        match check_reply(&raw, MsgType::GetDomainPath)? {
            ReplyBody::DomainPath(p) => Ok(String::from(p)),
            _ => Err(XsError::Protocol("reply type does not match request")),
        }
    }

    /// Registers a watch on `path` (and everything below it). The server
    /// fires one event for `path` right away; events arrive through
    /// [`XenStore::poll_watch`] carrying `token`.
    pub fn watch(&mut self, path: &str, token: &str) -> Result<()> {
        self.watch_op(MsgType::Watch, path, token)
    }

    /// Removes a watch registered with the same `path` and `token`. Events
    /// already queued stay queued.
    pub fn unwatch(&mut self, path: &str, token: &str) -> Result<()> {
        self.watch_op(MsgType::Unwatch, path, token)
    }

    /// Starts a transaction.
    pub fn transaction_start(&mut self) -> Result<TxId> {
        let raw = self.request(MsgType::TransactionStart, 0, &[b"\0"])?;
        match check_reply(&raw, MsgType::TransactionStart)? {
            ReplyBody::TransactionStarted(tx) => Ok(tx),
            _ => Err(XsError::Protocol("reply type does not match request")),
        }
    }

    /// Ends a transaction, committing it if `commit`. A conflicting commit
    /// fails with [`XsError::Again`]: start over with a new transaction.
    pub fn transaction_end(&mut self, tx: TxId, commit: bool) -> Result<()> {
        let arg: &[u8] = if commit { b"T\0" } else { b"F\0" };
        let raw = self.request(MsgType::TransactionEnd, tx.0, &[arg])?;
        expect_ack(&raw, MsgType::TransactionEnd)
    }

    /// Runs `f` in a transaction and commits it, retrying from the start
    /// when the server answers `EAGAIN` (at most `max_attempts` times in
    /// all). If `f` fails, the transaction is aborted and its error
    /// returned.
    pub fn transaction<T>(
        &mut self,
        max_attempts: u32,
        mut f: impl FnMut(&mut Self, TxId) -> Result<T>,
    ) -> Result<T> {
        let mut attempt: u32 = 0;
        loop {
            attempt = attempt.saturating_add(1);
            let tx = self.transaction_start()?;
            let res = match f(self, tx) {
                Ok(v) => self.transaction_end(tx, true).map(|()| v),
                Err(e) => {
                    // Best effort: the transaction is abandoned either way.
                    let _ = self.transaction_end(tx, false);
                    Err(e)
                }
            };
            match res {
                Err(XsError::Again) if attempt < max_attempts => continue,
                other => return other,
            }
        }
    }

    /// Non-blocking: sends queued request bytes the ring has room for and
    /// drains every complete response and watch event from the ring. Call it
    /// when the xenstore event channel fires. Returns the number of complete
    /// messages taken off the ring, or the first protocol error seen (the
    /// client has resynchronised and the rest of the ring was still
    /// drained).
    pub fn pump(&mut self) -> Result<usize> {
        let sent = self.flush();
        let got = self.drain();
        sent?;
        got
    }

    // ----- internals: typed helpers -----

    fn read_bytes_in(&mut self, tx: u32, path: &str) -> Result<Vec<u8>> {
        check_path(path)?;
        let raw = self.request(MsgType::Read, tx, &[path.as_bytes(), b"\0"])?;
        match check_reply(&raw, MsgType::Read)? {
            ReplyBody::Read(v) => Ok(v.to_vec()),
            _ => Err(XsError::Protocol("reply type does not match request")),
        }
    }

    fn read_in(&mut self, tx: u32, path: &str) -> Result<String> {
        let v = self.read_bytes_in(tx, path)?;
        String::from_utf8(v).map_err(|_| XsError::Protocol("invalid UTF-8"))
    }

    fn read_u32_in(&mut self, tx: u32, path: &str) -> Result<u32> {
        let v = self.read_bytes_in(tx, path)?;
        parse_u32(&v).ok_or(XsError::BadValue)
    }

    fn write_in(&mut self, tx: u32, path: &str, value: &[u8]) -> Result<()> {
        check_path(path)?;
        let raw = self.request(MsgType::Write, tx, &[path.as_bytes(), b"\0", value])?;
        expect_ack(&raw, MsgType::Write)
    }

    fn write_u32_in(&mut self, tx: u32, path: &str, value: u32) -> Result<()> {
        let mut buf = [0u8; 10];
        let digits = fmt_u32(value, &mut buf);
        self.write_in(tx, path, digits)
    }

    fn path_ack(&mut self, ty: MsgType, tx: u32, path: &str) -> Result<()> {
        check_path(path)?;
        let raw = self.request(ty, tx, &[path.as_bytes(), b"\0"])?;
        expect_ack(&raw, ty)
    }

    fn directory_in(&mut self, tx: u32, path: &str) -> Result<Vec<String>> {
        check_path(path)?;
        let raw = self.request(MsgType::Directory, tx, &[path.as_bytes(), b"\0"])?;
        match check_reply(&raw, MsgType::Directory)? {
            ReplyBody::Directory(d) => Ok(d.iter().map(String::from).collect()),
            _ => Err(XsError::Protocol("reply type does not match request")),
        }
    }

    fn watch_op(&mut self, ty: MsgType, path: &str, token: &str) -> Result<()> {
        check_path(path)?;
        if token.as_bytes().contains(&0) {
            return Err(XsError::Invalid("NUL byte in watch token"));
        }
        let raw = self.request(ty, 0, &[path.as_bytes(), b"\0", token.as_bytes(), b"\0"])?;
        expect_ack(&raw, ty)
    }

    // ----- internals: request/reply engine -----

    /// Sends one request made of `parts` and waits for its reply. Returns the
    /// complete raw reply message (header and payload), whatever its type.
    fn request(&mut self, ty: MsgType, tx: u32, parts: &[&[u8]]) -> Result<Vec<u8>> {
        let mut len: usize = 0;
        for p in parts {
            len = len.checked_add(p.len()).ok_or(XsError::TooLong)?;
        }
        if len > XENSTORE_PAYLOAD_MAX {
            return Err(XsError::TooLong);
        }
        let req_id = self.next_req_id;
        self.next_req_id = self.next_req_id.wrapping_add(1);
        let header = Header {
            msg_type: ty as u32,
            req_id,
            tx_id: tx,
            len: len as u32,
        };

        // Compact the outgoing queue; what is left is the unsent tail of an
        // abandoned request, which must go out first to keep the stream
        // framed.
        if self.out_pos > 0 {
            self.out.drain(..self.out_pos);
            self.out_pos = 0;
        }
        let start = self.out.len();
        self.out.reserve(HEADER_LEN + len);
        self.out.extend_from_slice(&header.to_bytes());
        for p in parts {
            self.out.extend_from_slice(p);
        }
        self.pending = Some(Pending {
            req_id,
            reply: None,
        });

        let deadline = self.env.now_ns().saturating_add(self.timeout_ns);
        loop {
            let sent = self.flush();
            // Drain even when sending failed: the server may be waiting for
            // us to make room in the response ring.
            let _ = self.drain();
            if let Some(Pending { reply: Some(_), .. }) = self.pending {
                break;
            }
            let failure = match sent {
                Err(e) => Some(e),
                Ok(()) if self.env.now_ns() >= deadline => Some(XsError::Timeout),
                Ok(()) => None,
            };
            if let Some(e) = failure {
                self.pending = None;
                if self.out_pos <= start {
                    // Not a byte of it reached the ring: withdraw it, the
                    // server will never see it.
                    self.out.truncate(start);
                } else {
                    self.abandon(req_id);
                }
                return Err(e);
            }
            self.env.wait(deadline);
        }
        let reply = match self.pending.take() {
            Some(Pending { reply: Some(r), .. }) => r,
            _ => Err(XsError::Protocol("internal: reply vanished")),
        };
        if reply.is_err() && self.out_pos <= start && self.out.len() > start {
            // Failed (resynchronisation) before a byte of it was sent.
            self.out.truncate(start);
        }
        reply
    }

    fn abandon(&mut self, req_id: u32) {
        if self.abandoned.len() >= ABANDONED_MAX {
            self.abandoned.pop_front();
        }
        self.abandoned.push_back(req_id);
    }

    fn protocol_error(&mut self, what: &'static str) -> XsError {
        self.stats.protocol_errors = self.stats.protocol_errors.saturating_add(1);
        XsError::Protocol(what)
    }

    fn ring_base(&self, rsp: bool) -> *mut u8 {
        if rsp {
            // SAFETY: computing a field address through the raw pointer
            // valid per `new`'s contract; no reference is created.
            unsafe { addr_of_mut!((*self.ring).rsp).cast::<u8>() }
        } else {
            // SAFETY: as above.
            unsafe { addr_of_mut!((*self.ring).req).cast::<u8>() }
        }
    }

    fn publish_rsp_cons(&mut self) {
        // SAFETY: `ring` valid per `new`'s contract; volatile write of the
        // field we own, through a raw pointer.
        unsafe { addr_of_mut!((*self.ring).rsp_cons).write_volatile(self.rsp_cons) };
    }

    fn read_rsp_prod(&self) -> u32 {
        // SAFETY: `ring` valid per `new`'s contract; volatile read of a
        // server-owned u32 through a raw pointer.
        unsafe { addr_of!((*self.ring).rsp_prod).read_volatile() }
    }

    /// Writes as much of the outgoing queue as the request ring has room
    /// for, publishes it and notifies the server.
    fn flush(&mut self) -> Result<()> {
        let mut result = Ok(());
        let mut wrote = false;
        let base = self.ring_base(false);
        while self.out_pos < self.out.len() {
            // SAFETY: `ring` valid per `new`'s contract; volatile read of
            // the server-owned consumer index.
            let cons = unsafe { addr_of!((*self.ring).req_cons).read_volatile() };
            // The server's reads of the slots we are about to reuse must be
            // complete before we overwrite them: order the index read
            // before our data writes.
            fence(Ordering::Acquire);
            let used = self.req_prod.wrapping_sub(cons) as usize;
            if used > XENSTORE_RING_SIZE {
                result = Err(self.protocol_error("request ring index out of range"));
                break;
            }
            let free = XENSTORE_RING_SIZE - used;
            if free == 0 {
                break;
            }
            let n = free.min(self.out.len() - self.out_pos);
            for i in 0..n {
                let idx = mask_idx(self.req_prod.wrapping_add(i as u32));
                let byte = self.out[self.out_pos + i];
                // SAFETY: `idx < XENSTORE_RING_SIZE`, so the address is
                // inside `req`; volatile write through a raw pointer.
                unsafe { base.add(idx).write_volatile(byte) };
            }
            self.req_prod = self.req_prod.wrapping_add(n as u32);
            self.out_pos += n;
            wrote = true;
        }
        if wrote {
            // The data must be visible before the new producer index.
            fence(Ordering::Release);
            // SAFETY: `ring` valid per `new`'s contract; volatile write of
            // the index we own.
            unsafe { addr_of_mut!((*self.ring).req_prod).write_volatile(self.req_prod) };
            self.env.notify();
        }
        // `out` is compacted when the next request is queued, so that
        // `out_pos` keeps telling how much of the current request went out.
        result
    }

    /// Takes every available byte off the response ring, dispatching each
    /// complete message. Returns the number of complete messages, or the
    /// first error (after resynchronising).
    fn drain(&mut self) -> Result<usize> {
        let mut first_err: Option<XsError> = None;
        let mut messages = 0usize;
        let mut consumed = false;
        let base = self.ring_base(true);
        // Each round consumes at least one byte or resynchronises; bound the
        // rounds so a server racing its indices cannot keep us here.
        for _ in 0..DRAIN_ROUNDS_MAX {
            let prod = self.read_rsp_prod();
            // Read the producer index before the data it covers.
            fence(Ordering::Acquire);
            let avail = prod.wrapping_sub(self.rsp_cons) as usize;
            if avail > XENSTORE_RING_SIZE {
                // The server claims more than the ring holds: nothing in it
                // can be trusted. Skip to its producer index and drop any
                // partial message.
                let e = self.protocol_error("response ring index out of range");
                self.resync(prod, e);
                consumed = true;
                first_err.get_or_insert(e);
                continue;
            }
            if avail == 0 {
                break;
            }
            let want = if self.rx.len() < HEADER_LEN {
                HEADER_LEN - self.rx.len()
            } else {
                let len = Header::parse(&self.rx).map_or(0, |h| h.len as usize);
                (HEADER_LEN + len).saturating_sub(self.rx.len())
            };
            let n = want.min(avail);
            self.rx.reserve(n);
            for i in 0..n {
                let idx = mask_idx(self.rsp_cons.wrapping_add(i as u32));
                // SAFETY: `idx < XENSTORE_RING_SIZE`, so the address is
                // inside `rsp`; volatile read through a raw pointer.
                let byte = unsafe { base.add(idx).read_volatile() };
                self.rx.push(byte);
            }
            self.rsp_cons = self.rsp_cons.wrapping_add(n as u32);
            consumed = true;

            if let Some(h) = Header::parse(&self.rx) {
                if h.len as usize > XENSTORE_PAYLOAD_MAX {
                    // Unframeable: we cannot know where the next message
                    // starts. Drop what the ring holds now.
                    let e = self.protocol_error("payload too long");
                    let prod = self.read_rsp_prod();
                    fence(Ordering::Acquire);
                    self.resync(prod, e);
                    first_err.get_or_insert(e);
                    continue;
                }
                if self.rx.len() == HEADER_LEN + h.len as usize {
                    messages += 1;
                    let msg = core::mem::take(&mut self.rx);
                    if let Err(e) = self.dispatch(msg) {
                        first_err.get_or_insert(e);
                    }
                }
            }
        }
        if consumed {
            // Our reads of the data must be complete before the server may
            // overwrite it.
            fence(Ordering::Release);
            self.publish_rsp_cons();
            self.env.notify();
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(messages),
        }
    }

    /// Skips the response stream to `prod` after an unrecoverable framing
    /// error, failing the pending request with `e`.
    fn resync(&mut self, prod: u32, e: XsError) {
        // Whether the index itself was bogus or a message could not be
        // framed, continue from the server's current producer index: the
        // next message it writes starts a clean stream.
        self.rsp_cons = prod;
        self.rx.clear();
        self.fail_pending(e);
    }

    fn fail_pending(&mut self, e: XsError) {
        if let Some(p) = self.pending.as_mut() {
            if p.reply.is_none() {
                p.reply = Some(Err(e));
                let id = p.req_id;
                // Its real reply may still turn up.
                self.abandon(id);
            }
        }
    }

    /// Handles one complete message from the server.
    fn dispatch(&mut self, msg: Vec<u8>) -> Result<()> {
        let header = match Header::parse(&msg) {
            Some(h) => h,
            None => return Err(self.protocol_error("truncated header")),
        };
        if header.msg_type == MsgType::WatchEvent as u32 {
            return match parse_reply(&msg) {
                Ok(Reply {
                    body: ReplyBody::WatchEvent { path, token },
                    ..
                }) => {
                    let ev = WatchEvent {
                        path: String::from(path),
                        token: String::from(token),
                    };
                    self.queue_watch(ev);
                    Ok(())
                }
                Ok(_) => Err(self.protocol_error("malformed watch event")),
                Err(XsError::Protocol(what)) => Err(self.protocol_error(what)),
                Err(e) => Err(e),
            };
        }
        if let Some(p) = self.pending.as_mut() {
            if p.req_id == header.req_id && p.reply.is_none() {
                p.reply = Some(Ok(msg));
                return Ok(());
            }
        }
        if let Some(pos) = self.abandoned.iter().position(|&id| id == header.req_id) {
            self.abandoned.remove(pos);
            self.stats.stale_replies = self.stats.stale_replies.saturating_add(1);
            return Ok(());
        }
        Err(self.protocol_error("reply does not match any request"))
    }

    fn queue_watch(&mut self, ev: WatchEvent) {
        while self.watches.len() >= self.watch_capacity {
            self.watches.pop_front();
            self.stats.watch_events_dropped = self.stats.watch_events_dropped.saturating_add(1);
        }
        self.watches.push_back(ev);
    }
}

/// Parses a reply to a request of type `ty`: `XS_ERROR` becomes the error,
/// any other type than `ty` is a protocol error.
fn check_reply(raw: &[u8], ty: MsgType) -> Result<ReplyBody<'_>> {
    let reply = parse_reply(raw)?;
    if let ReplyBody::Error(e) = reply.body {
        return Err(match e {
            Errno::EAGAIN => XsError::Again,
            other => XsError::Errno(other),
        });
    }
    if reply.header.msg_type != ty as u32 {
        return Err(XsError::Protocol("reply type does not match request"));
    }
    Ok(reply.body)
}

fn expect_ack(raw: &[u8], ty: MsgType) -> Result<()> {
    match check_reply(raw, ty)? {
        ReplyBody::Ack => Ok(()),
        _ => Err(XsError::Protocol("reply type does not match request")),
    }
}

/// Checks that a path can be sent: no NUL, within the server's limits.
fn check_path(path: &str) -> Result<()> {
    let b = path.as_bytes();
    if b.is_empty() {
        return Err(XsError::Invalid("empty path"));
    }
    if b.contains(&0) {
        return Err(XsError::Invalid("NUL byte in path"));
    }
    let max = if b[0] == b'/' || b[0] == b'@' {
        XENSTORE_ABS_PATH_MAX
    } else {
        XENSTORE_REL_PATH_MAX
    };
    if b.len() > max {
        return Err(XsError::TooLong);
    }
    Ok(())
}

/// Formats `v` in decimal into `buf`, returning the digits.
fn fmt_u32(mut v: u32, buf: &mut [u8]) -> &[u8] {
    let mut i = buf.len();
    loop {
        if i == 0 {
            break;
        }
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    &buf[i..]
}

// ---------------------------------------------------------------------------
// Tests: a simulated xenstored on a heap-allocated ring page
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use std::boxed::Box;
    use std::collections::{BTreeMap, HashMap};
    use std::format;
    use std::string::ToString;
    use std::vec;

    type Store = BTreeMap<String, Vec<u8>>;

    /// One-shot misbehaviour applied to the next reply the simulator sends.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Mischief {
        None,
        /// Header claims 5000 bytes of payload, followed by junk.
        LenTooBig,
        /// No reply; `rsp_prod` jumps forward by 5000.
        ProdJump,
        /// Reply with an unknown message type.
        GarbageType,
        /// Read reply that is not UTF-8.
        BadUtf8,
        /// Reply carries another request id.
        WrongReqId,
        /// XS_ERROR without its NUL terminator.
        ErrorNoNul,
    }

    struct SimTx {
        store: Store,
        generation: u64,
        touched: Vec<String>,
    }

    /// A single-threaded xenstored stand-in, driven by the client's
    /// `notify()` and `wait()`.
    struct Sim {
        ring: *mut XenstoreDomainInterface,
        inbuf: Vec<u8>,
        outq: VecDeque<u8>,
        store: Store,
        generation: u64,
        txs: HashMap<u32, SimTx>,
        next_tx: u32,
        watches: Vec<(String, String)>,
        /// Consume requests but never answer them.
        silent: bool,
        /// Answer into `held` instead of the ring.
        hold: bool,
        held: Vec<Vec<u8>>,
        /// Do not consume requests at all.
        paused: bool,
        consume_chunk: usize,
        produce_chunk: usize,
        inject_before_reply: VecDeque<Vec<u8>>,
        mischief: Mischief,
        requests: Vec<Header>,
        /// A write by "another domain", applied just before the next commit.
        conflict_before_commit: Option<(String, Vec<u8>)>,
    }

    fn msg(ty: u32, req_id: u32, tx_id: u32, payload: &[u8]) -> Vec<u8> {
        let h = Header {
            msg_type: ty,
            req_id,
            tx_id,
            len: payload.len() as u32,
        };
        let mut v = h.to_bytes().to_vec();
        v.extend_from_slice(payload);
        v
    }

    fn watch_event(path: &str, token: &str) -> Vec<u8> {
        let mut p = path.as_bytes().to_vec();
        p.push(0);
        p.extend_from_slice(token.as_bytes());
        p.push(0);
        msg(MsgType::WatchEvent as u32, 0, 0, &p)
    }

    fn parent(path: &str) -> Option<&str> {
        let i = path.rfind('/')?;
        if i == 0 {
            if path.len() > 1 {
                Some("/")
            } else {
                None
            }
        } else {
            Some(&path[..i])
        }
    }

    fn store_write(store: &mut Store, path: &str, value: &[u8]) {
        let mut p = parent(path);
        while let Some(q) = p {
            if q == "/" {
                break;
            }
            store.entry(q.to_string()).or_default();
            p = parent(q);
        }
        store.insert(path.to_string(), value.to_vec());
    }

    fn store_children(store: &Store, path: &str) -> Option<Vec<String>> {
        if path != "/" && !store.contains_key(path) {
            return None;
        }
        let prefix = if path == "/" {
            "/".to_string()
        } else {
            format!("{}/", path)
        };
        Some(
            store
                .keys()
                .filter_map(|k| k.strip_prefix(prefix.as_str()))
                .filter(|rest| !rest.is_empty() && !rest.contains('/'))
                .map(|s| s.to_string())
                .collect(),
        )
    }

    fn store_rm(store: &mut Store, path: &str) -> bool {
        if !store.contains_key(path) {
            return false;
        }
        let prefix = format!("{}/", path);
        store.retain(|k, _| k != path && !k.starts_with(&prefix));
        true
    }

    impl Sim {
        fn new(ring: *mut XenstoreDomainInterface) -> Sim {
            Sim {
                ring,
                inbuf: Vec::new(),
                outq: VecDeque::new(),
                store: Store::new(),
                generation: 0,
                txs: HashMap::new(),
                next_tx: 1,
                watches: Vec::new(),
                silent: false,
                hold: false,
                held: Vec::new(),
                paused: false,
                consume_chunk: usize::MAX,
                produce_chunk: usize::MAX,
                inject_before_reply: VecDeque::new(),
                mischief: Mischief::None,
                requests: Vec::new(),
                conflict_before_commit: None,
            }
        }

        fn get(&self, field: fn(*mut XenstoreDomainInterface) -> *mut u32) -> u32 {
            // SAFETY: the ring box outlives the simulator; raw volatile read.
            unsafe { field(self.ring).read_volatile() }
        }

        fn set(&self, field: fn(*mut XenstoreDomainInterface) -> *mut u32, v: u32) {
            // SAFETY: as in `get`.
            unsafe { field(self.ring).write_volatile(v) }
        }

        /// Runs the server once: consume requests, answer, fill the
        /// response ring.
        fn step(&mut self) {
            if !self.hold && !self.held.is_empty() {
                for m in std::mem::take(&mut self.held) {
                    self.outq.extend(m);
                }
            }
            if !self.paused {
                let cons = self.get(f_req_cons);
                let prod = self.get(f_req_prod);
                let avail = prod.wrapping_sub(cons) as usize;
                assert!(
                    avail <= XENSTORE_RING_SIZE,
                    "client overran the request ring"
                );
                let n = avail.min(self.consume_chunk);
                for i in 0..n {
                    let idx = mask_idx(cons.wrapping_add(i as u32));
                    // SAFETY: idx < ring size; raw volatile read.
                    let b = unsafe {
                        addr_of!((*self.ring).req)
                            .cast::<u8>()
                            .add(idx)
                            .read_volatile()
                    };
                    self.inbuf.push(b);
                }
                self.set(f_req_cons, cons.wrapping_add(n as u32));
                self.process();
            }
            self.produce();
        }

        fn produce(&mut self) {
            let cons = self.get(f_rsp_cons);
            let prod = self.get(f_rsp_prod);
            let used = prod.wrapping_sub(cons) as usize;
            let free = XENSTORE_RING_SIZE.saturating_sub(used);
            let n = free.min(self.produce_chunk).min(self.outq.len());
            for i in 0..n {
                let idx = mask_idx(prod.wrapping_add(i as u32));
                let b = self.outq.pop_front().unwrap();
                // SAFETY: idx < ring size; raw volatile write.
                unsafe {
                    addr_of_mut!((*self.ring).rsp)
                        .cast::<u8>()
                        .add(idx)
                        .write_volatile(b)
                };
            }
            fence(Ordering::Release);
            self.set(f_rsp_prod, prod.wrapping_add(n as u32));
        }

        fn process(&mut self) {
            loop {
                let Some(h) = Header::parse(&self.inbuf) else {
                    return;
                };
                assert!(
                    h.len as usize <= XENSTORE_PAYLOAD_MAX,
                    "client sent an oversized request"
                );
                let total = HEADER_LEN + h.len as usize;
                if self.inbuf.len() < total {
                    return;
                }
                let payload: Vec<u8> = self.inbuf[HEADER_LEN..total].to_vec();
                self.inbuf.drain(..total);
                self.requests.push(h);
                self.handle(h, &payload);
            }
        }

        fn send(&mut self, m: Vec<u8>) {
            if self.hold {
                self.held.push(m);
            } else {
                self.outq.extend(m);
            }
        }

        fn fire(&mut self, path: &str) {
            let events: Vec<Vec<u8>> = self
                .watches
                .iter()
                .filter(|(w, _)| path == w || path.starts_with(&format!("{}/", w)))
                .map(|(_, t)| watch_event(path, t))
                .collect();
            for e in events {
                self.send(e);
            }
        }

        fn reply(&mut self, h: Header, ty: MsgType, payload: &[u8]) {
            while let Some(m) = self.inject_before_reply.pop_front() {
                self.send(m);
            }
            let mischief = std::mem::replace(&mut self.mischief, Mischief::None);
            let m = match mischief {
                Mischief::None => msg(ty as u32, h.req_id, h.tx_id, payload),
                Mischief::LenTooBig => {
                    let mut m = Header {
                        msg_type: ty as u32,
                        req_id: h.req_id,
                        tx_id: h.tx_id,
                        len: 5000,
                    }
                    .to_bytes()
                    .to_vec();
                    m.extend(std::iter::repeat_n(0x41, 100));
                    m
                }
                Mischief::ProdJump => {
                    let prod = self.get(f_rsp_prod);
                    self.set(f_rsp_prod, prod.wrapping_add(5000));
                    return;
                }
                Mischief::GarbageType => msg(0xdead, h.req_id, h.tx_id, b"xyz"),
                Mischief::BadUtf8 => msg(ty as u32, h.req_id, h.tx_id, &[0xff, 0xfe, 0x41]),
                Mischief::WrongReqId => {
                    msg(ty as u32, h.req_id.wrapping_add(1000), h.tx_id, payload)
                }
                Mischief::ErrorNoNul => msg(MsgType::Error as u32, h.req_id, h.tx_id, b"ENOENT"),
            };
            self.send(m);
        }

        fn error(&mut self, h: Header, name: &str) {
            let mut p = name.as_bytes().to_vec();
            p.push(0);
            self.reply(h, MsgType::Error, &p);
        }

        fn ack(&mut self, h: Header, ty: MsgType) {
            self.reply(h, ty, b"OK\0");
        }

        fn handle(&mut self, h: Header, payload: &[u8]) {
            if self.silent {
                return;
            }
            let args: Vec<&[u8]> = payload.split(|&c| c == 0).collect();
            let arg0 = std::str::from_utf8(args[0]).unwrap().to_string();
            let ty = MsgType::from_u32(h.msg_type).expect("client sent an unknown type");
            if h.tx_id != 0 && !self.txs.contains_key(&h.tx_id) {
                return self.error(h, "ENOENT");
            }
            match ty {
                MsgType::Read => {
                    let v = if h.tx_id != 0 {
                        self.txs[&h.tx_id].store.get(&arg0).cloned()
                    } else {
                        self.store.get(&arg0).cloned()
                    };
                    match v {
                        Some(v) => self.reply(h, ty, &v),
                        None => self.error(h, "ENOENT"),
                    }
                }
                MsgType::Write => {
                    let value = &payload[arg0.len() + 1..];
                    if h.tx_id != 0 {
                        let tx = self.txs.get_mut(&h.tx_id).unwrap();
                        store_write(&mut tx.store, &arg0, value);
                        tx.touched.push(arg0.clone());
                    } else {
                        store_write(&mut self.store, &arg0, value);
                        self.generation += 1;
                        self.fire(&arg0);
                    }
                    self.ack(h, ty);
                }
                MsgType::Mkdir => {
                    let store = if h.tx_id != 0 {
                        &mut self.txs.get_mut(&h.tx_id).unwrap().store
                    } else {
                        &mut self.store
                    };
                    if !store.contains_key(&arg0) {
                        store_write(store, &arg0, b"");
                        if h.tx_id == 0 {
                            self.generation += 1;
                            self.fire(&arg0);
                        }
                    }
                    self.ack(h, ty);
                }
                MsgType::Rm => {
                    let ok = if h.tx_id != 0 {
                        let tx = self.txs.get_mut(&h.tx_id).unwrap();
                        tx.touched.push(arg0.clone());
                        store_rm(&mut tx.store, &arg0)
                    } else {
                        let ok = store_rm(&mut self.store, &arg0);
                        if ok {
                            self.generation += 1;
                            self.fire(&arg0);
                        }
                        ok
                    };
                    if ok {
                        self.ack(h, ty)
                    } else {
                        self.error(h, "ENOENT")
                    }
                }
                MsgType::Directory => {
                    let store = if h.tx_id != 0 {
                        &self.txs[&h.tx_id].store
                    } else {
                        &self.store
                    };
                    match store_children(store, &arg0) {
                        Some(children) => {
                            let mut p = Vec::new();
                            for c in children {
                                p.extend_from_slice(c.as_bytes());
                                p.push(0);
                            }
                            self.reply(h, ty, &p);
                        }
                        None => self.error(h, "ENOENT"),
                    }
                }
                MsgType::Watch => {
                    let token = std::str::from_utf8(args[1]).unwrap().to_string();
                    self.watches.push((arg0.clone(), token.clone()));
                    self.ack(h, ty);
                    // xenstored fires every new watch once, after the ack.
                    self.send(watch_event(&arg0, &token));
                }
                MsgType::Unwatch => {
                    let token = std::str::from_utf8(args[1]).unwrap().to_string();
                    let before = self.watches.len();
                    self.watches.retain(|(p, t)| !(*p == arg0 && *t == token));
                    if self.watches.len() == before {
                        self.error(h, "ENOENT")
                    } else {
                        self.ack(h, ty)
                    }
                }
                MsgType::TransactionStart => {
                    let id = self.next_tx;
                    self.next_tx += 1;
                    self.txs.insert(
                        id,
                        SimTx {
                            store: self.store.clone(),
                            generation: self.generation,
                            touched: Vec::new(),
                        },
                    );
                    self.reply(h, ty, format!("{}\0", id).as_bytes());
                }
                MsgType::TransactionEnd => {
                    if let Some((p, v)) = self.conflict_before_commit.take() {
                        store_write(&mut self.store, &p, &v);
                        self.generation += 1;
                    }
                    let tx = self.txs.remove(&h.tx_id).unwrap();
                    if payload == b"T\0" {
                        if tx.generation != self.generation {
                            return self.error(h, "EAGAIN");
                        }
                        self.store = tx.store;
                        self.generation += 1;
                        for p in tx.touched {
                            self.fire(&p);
                        }
                    }
                    self.ack(h, ty);
                }
                MsgType::GetDomainPath => {
                    self.reply(h, ty, format!("/local/domain/{}\0", arg0).as_bytes());
                }
                _ => self.error(h, "ENOSYS"),
            }
        }
    }

    impl Drop for Sim {
        fn drop(&mut self) {
            // SAFETY: the ring was created by Box::into_raw in `setup_at`,
            // and the client that shares it is being dropped with us (we
            // live in its env) and never touches it on drop.
            unsafe { drop(Box::from_raw(self.ring)) };
        }
    }

    fn f_req_cons(r: *mut XenstoreDomainInterface) -> *mut u32 {
        // SAFETY: only called with the live ring pointer; computes a field
        // address without creating a reference.
        unsafe { addr_of_mut!((*r).req_cons) }
    }
    fn f_req_prod(r: *mut XenstoreDomainInterface) -> *mut u32 {
        // SAFETY: only called with the live ring pointer; computes a field
        // address without creating a reference.
        unsafe { addr_of_mut!((*r).req_prod) }
    }
    fn f_rsp_cons(r: *mut XenstoreDomainInterface) -> *mut u32 {
        // SAFETY: only called with the live ring pointer; computes a field
        // address without creating a reference.
        unsafe { addr_of_mut!((*r).rsp_cons) }
    }
    fn f_rsp_prod(r: *mut XenstoreDomainInterface) -> *mut u32 {
        // SAFETY: only called with the live ring pointer; computes a field
        // address without creating a reference.
        unsafe { addr_of_mut!((*r).rsp_prod) }
    }

    struct TestEnv {
        sim: Sim,
        now: u64,
        waits: u64,
        notifies: u64,
    }

    impl XenStoreEnv for TestEnv {
        fn notify(&mut self) {
            self.notifies += 1;
            self.sim.step();
        }
        fn wait(&mut self, deadline_ns: u64) {
            self.waits += 1;
            self.sim.step();
            // Time passes: 1 ms per wait, never past the deadline.
            self.now = self.now.max(deadline_ns.min(self.now + 1_000_000));
        }
        fn now_ns(&self) -> u64 {
            self.now
        }
    }

    fn setup_at(start: u32) -> XenStore<TestEnv> {
        let ring = Box::into_raw(Box::new(XenstoreDomainInterface::zeroed()));
        let sim = Sim::new(ring);
        for f in [f_req_cons, f_req_prod, f_rsp_cons, f_rsp_prod] {
            sim.set(f, start);
        }
        let env = TestEnv {
            sim,
            now: 0,
            waits: 0,
            notifies: 0,
        };
        // SAFETY: `ring` is a live, aligned heap allocation owned by the
        // simulator inside `env`, which the client owns.
        unsafe { XenStore::new(ring, env) }
    }

    fn setup() -> XenStore<TestEnv> {
        setup_at(0)
    }

    fn sim(xs: &mut XenStore<TestEnv>) -> &mut Sim {
        &mut xs.env_mut().sim
    }

    fn ring_field(
        xs: &mut XenStore<TestEnv>,
        f: fn(*mut XenstoreDomainInterface) -> *mut u32,
    ) -> u32 {
        sim(xs).get(f)
    }

    fn drain_watches(xs: &mut XenStore<TestEnv>) -> Vec<(String, String)> {
        let mut v = Vec::new();
        while let Some(e) = xs.poll_watch() {
            v.push((e.path, e.token));
        }
        v
    }

    // ----- basic operations -----

    #[test]
    fn read_write_directory_rm() {
        let mut xs = setup();
        xs.write("/d/a", "1").unwrap();
        xs.write("/d/b", "two").unwrap();
        xs.write("/d/c/x", "deep").unwrap();
        assert_eq!(xs.read("/d/a").unwrap(), "1");
        assert_eq!(xs.read("/d/b").unwrap(), "two");
        assert_eq!(xs.read("/d/c/x").unwrap(), "deep");
        assert_eq!(xs.read("/d/c").unwrap(), "");
        assert_eq!(xs.directory("/d").unwrap(), vec!["a", "b", "c"]);
        xs.rm("/d/c").unwrap();
        assert_eq!(xs.directory("/d").unwrap(), vec!["a", "b"]);
        assert_eq!(xs.read("/d/c/x"), Err(XsError::Errno(Errno::ENOENT)));
        xs.write("/d/a", "overwritten").unwrap();
        assert_eq!(xs.read("/d/a").unwrap(), "overwritten");
        // Distinct request ids, in order.
        let ids: Vec<u32> = sim(&mut xs).requests.iter().map(|h| h.req_id).collect();
        assert!(ids.windows(2).all(|w| w[1] == w[0] + 1));
        assert_eq!(xs.stats(), XsStats::default());
    }

    #[test]
    fn enoent_and_optional() {
        let mut xs = setup();
        let e = xs.read("/nope").unwrap_err();
        assert_eq!(e, XsError::Errno(Errno::ENOENT));
        assert!(e.is_not_found());
        assert_eq!(xs.read_optional("/nope").unwrap(), None);
        assert_eq!(xs.directory("/nope"), Err(XsError::Errno(Errno::ENOENT)));
        assert_eq!(xs.rm("/nope"), Err(XsError::Errno(Errno::ENOENT)));
        xs.write("/yes", "v").unwrap();
        assert_eq!(xs.read_optional("/yes").unwrap(), Some("v".to_string()));
        // An unsupported command comes back as ENOSYS from the simulator.
        let raw = xs.request(MsgType::GetPerms, 0, &[b"/yes\0"]).unwrap();
        assert_eq!(
            check_reply(&raw, MsgType::GetPerms),
            Err(XsError::Errno(Errno::ENOSYS))
        );
    }

    #[test]
    fn mkdir_and_empty_directory() {
        let mut xs = setup();
        xs.mkdir("/m").unwrap();
        assert_eq!(xs.directory("/m").unwrap(), Vec::<String>::new());
        assert_eq!(xs.read("/m").unwrap(), "");
        xs.mkdir("/m").unwrap();
        xs.write("/m/k", "v").unwrap();
        xs.mkdir("/m").unwrap();
        assert_eq!(xs.read("/m/k").unwrap(), "v");
    }

    #[test]
    fn numbers_state_and_bytes() {
        let mut xs = setup();
        xs.write_u32("/n", 4_000_000_000).unwrap();
        assert_eq!(xs.read("/n").unwrap(), "4000000000");
        assert_eq!(xs.read_u32("/n").unwrap(), 4_000_000_000);
        xs.write_u32("/z", 0).unwrap();
        assert_eq!(xs.read_u32("/z").unwrap(), 0);
        xs.write("/bad", "12a").unwrap();
        assert_eq!(xs.read_u32("/bad"), Err(XsError::BadValue));
        xs.write("/big", "4294967296").unwrap();
        assert_eq!(xs.read_u32("/big"), Err(XsError::BadValue));
        xs.write_state("/dev/state", XenbusState::Connected)
            .unwrap();
        assert_eq!(xs.read("/dev/state").unwrap(), "4");
        assert_eq!(xs.read_state("/dev/state").unwrap(), XenbusState::Connected);
        xs.write_bytes("/bin", &[0, 1, 0xff]).unwrap();
        assert_eq!(xs.read_bytes("/bin").unwrap(), vec![0, 1, 0xff]);
        assert_eq!(xs.get_domain_path(7).unwrap(), "/local/domain/7");
        assert_eq!(xs.get_domain_path(65535).unwrap(), "/local/domain/65535");
    }

    #[test]
    fn stale_responses_discarded_on_start() {
        let ring = Box::into_raw(Box::new(XenstoreDomainInterface::zeroed()));
        let sim = Sim::new(ring);
        sim.set(f_rsp_prod, 37); // 37 bytes of leftovers
        let env = TestEnv {
            sim,
            now: 0,
            waits: 0,
            notifies: 0,
        };
        // SAFETY: as in `setup_at`.
        let mut xs = unsafe { XenStore::new(ring, env) };
        assert_eq!(ring_field(&mut xs, f_rsp_cons), 37);
        xs.write("/a", "b").unwrap();
        assert_eq!(xs.read("/a").unwrap(), "b");
    }

    // ----- argument checks -----

    #[test]
    fn too_long_and_invalid_before_sending() {
        let mut xs = setup();
        let prod0 = ring_field(&mut xs, f_req_prod);
        // "/v" + NUL + value: exactly the payload maximum is fine.
        let v = "x".repeat(XENSTORE_PAYLOAD_MAX - 3);
        xs.write("/v", &v).unwrap();
        assert_eq!(xs.read("/v").unwrap(), v);
        let prod1 = ring_field(&mut xs, f_req_prod);
        assert_ne!(prod0, prod1);

        let v = "x".repeat(XENSTORE_PAYLOAD_MAX - 2);
        assert_eq!(xs.write("/v", &v), Err(XsError::TooLong));
        let long_abs = format!("/{}", "p".repeat(XENSTORE_ABS_PATH_MAX));
        assert_eq!(xs.read(&long_abs), Err(XsError::TooLong));
        let ok_abs = format!("/{}", "p".repeat(XENSTORE_ABS_PATH_MAX - 1));
        assert_eq!(xs.read(&ok_abs), Err(XsError::Errno(Errno::ENOENT)));
        let prod1 = ring_field(&mut xs, f_req_prod);
        let long_rel = "r".repeat(XENSTORE_REL_PATH_MAX + 1);
        assert_eq!(xs.read(&long_rel), Err(XsError::TooLong));
        assert_eq!(xs.watch(&long_rel, "t"), Err(XsError::TooLong));
        assert_eq!(xs.read("/a\0b"), Err(XsError::Invalid("NUL byte in path")));
        assert_eq!(xs.read(""), Err(XsError::Invalid("empty path")));
        assert_eq!(
            xs.watch("/a", "t\0"),
            Err(XsError::Invalid("NUL byte in watch token"))
        );
        // Nothing of the rejected requests went out.
        assert_eq!(ring_field(&mut xs, f_req_prod), prod1);
    }

    // ----- watches -----

    #[test]
    fn watch_events() {
        let mut xs = setup();
        xs.watch("/w", "tok").unwrap();
        // The initial event arrives after the ack; a pump picks it up.
        xs.pump().unwrap();
        assert!(xs.has_pending_watch());
        assert_eq!(
            drain_watches(&mut xs),
            vec![("/w".to_string(), "tok".to_string())]
        );
        assert!(!xs.has_pending_watch());
        // The simulator sends a write's events before the write's ack.
        xs.write("/w/a", "1").unwrap();
        xs.write("/other", "1").unwrap();
        xs.write("/w", "2").unwrap();
        xs.write("/wx", "3").unwrap();
        assert_eq!(
            drain_watches(&mut xs),
            vec![
                ("/w/a".to_string(), "tok".to_string()),
                ("/w".to_string(), "tok".to_string())
            ]
        );
        xs.unwatch("/w", "tok").unwrap();
        xs.write("/w/b", "1").unwrap();
        xs.pump().unwrap();
        assert_eq!(drain_watches(&mut xs), vec![]);
        assert_eq!(xs.unwatch("/w", "tok"), Err(XsError::Errno(Errno::ENOENT)));
    }

    #[test]
    fn watch_event_before_unrelated_reply() {
        let mut xs = setup();
        xs.write("/data", "value").unwrap();
        xs.watch("/be", "t1").unwrap();
        xs.pump().unwrap();
        drain_watches(&mut xs);
        sim(&mut xs)
            .inject_before_reply
            .push_back(watch_event("/be/x", "t1"));
        sim(&mut xs)
            .inject_before_reply
            .push_back(watch_event("/be/y", "t1"));
        // Also split the stream into small pieces so the event and the
        // reply are each reassembled from several rounds.
        sim(&mut xs).produce_chunk = 5;
        assert_eq!(xs.read("/data").unwrap(), "value");
        assert_eq!(
            drain_watches(&mut xs),
            vec![
                ("/be/x".to_string(), "t1".to_string()),
                ("/be/y".to_string(), "t1".to_string())
            ]
        );
        assert_eq!(xs.stats().protocol_errors, 0);
    }

    #[test]
    fn watch_queue_bounded_drops_oldest() {
        let mut xs = setup();
        for i in 0..70 {
            sim(&mut xs).send(watch_event(&format!("/q/{}", i), "t"));
        }
        sim(&mut xs).step();
        while xs.pump().unwrap() > 0 {
            sim(&mut xs).step();
        }
        assert_eq!(xs.stats().watch_events_dropped, 6);
        let got = drain_watches(&mut xs);
        assert_eq!(got.len(), DEFAULT_WATCH_QUEUE);
        assert_eq!(got[0].0, "/q/6");
        assert_eq!(got[63].0, "/q/69");
        xs.set_watch_queue_capacity(2);
        for i in 0..3 {
            sim(&mut xs).send(watch_event(&format!("/r/{}", i), "t"));
        }
        sim(&mut xs).step();
        xs.pump().unwrap();
        assert_eq!(xs.stats().watch_events_dropped, 7);
        assert_eq!(drain_watches(&mut xs).len(), 2);
    }

    // ----- transactions -----

    #[test]
    fn transactions_commit_abort_conflict() {
        let mut xs = setup();
        xs.write("/t/x", "0").unwrap();

        let tx = xs.transaction_start().unwrap();
        xs.write_tx(tx, "/t/x", "1").unwrap();
        xs.write_u32_tx(tx, "/t/n", 9).unwrap();
        assert_eq!(xs.read_tx(tx, "/t/x").unwrap(), "1");
        assert_eq!(xs.read_u32_tx(tx, "/t/n").unwrap(), 9);
        assert_eq!(xs.read("/t/x").unwrap(), "0");
        assert_eq!(xs.directory_tx(tx, "/t").unwrap(), vec!["n", "x"]);
        xs.transaction_end(tx, true).unwrap();
        assert_eq!(xs.read("/t/x").unwrap(), "1");

        let tx = xs.transaction_start().unwrap();
        xs.rm_tx(tx, "/t/n").unwrap();
        xs.mkdir_tx(tx, "/t/m").unwrap();
        xs.transaction_end(tx, false).unwrap();
        assert_eq!(xs.read("/t/n").unwrap(), "9");
        assert_eq!(xs.read("/t/m"), Err(XsError::Errno(Errno::ENOENT)));

        // A write outside the transaction makes its commit conflict.
        let tx = xs.transaction_start().unwrap();
        xs.write_tx(tx, "/t/x", "tx").unwrap();
        xs.write("/t/x", "outside").unwrap();
        assert_eq!(xs.transaction_end(tx, true), Err(XsError::Again));
        assert_eq!(xs.read("/t/x").unwrap(), "outside");
        // The transaction is gone on the server.
        assert_eq!(xs.read_tx(tx, "/t/x"), Err(XsError::Errno(Errno::ENOENT)));
    }

    #[test]
    fn transaction_helper_retries_on_eagain() {
        let mut xs = setup();
        xs.write("/c", "0").unwrap();
        let mut attempts = 0;
        let v = xs
            .transaction(5, |xs, tx| {
                attempts += 1;
                if attempts == 1 {
                    // Another domain writes before we commit.
                    xs.env_mut().sim.conflict_before_commit =
                        Some(("/c".to_string(), b"10".to_vec()));
                }
                let n = xs.read_u32_tx(tx, "/c")?;
                xs.write_u32_tx(tx, "/c", n + 1)?;
                Ok(n + 1)
            })
            .unwrap();
        assert_eq!(attempts, 2);
        assert_eq!(v, 11);
        assert_eq!(xs.read_u32("/c").unwrap(), 11);

        // Persistent conflicts give up after max_attempts.
        let mut attempts = 0;
        let r = xs.transaction(3, |xs, tx| {
            attempts += 1;
            xs.env_mut().sim.conflict_before_commit = Some(("/c".to_string(), b"0".to_vec()));
            xs.write_tx(tx, "/c", "x")
        });
        assert_eq!(r, Err(XsError::Again));
        assert_eq!(attempts, 3);

        // An error inside aborts and is returned without retry.
        let mut attempts = 0;
        let r: Result<()> = xs.transaction(3, |xs, tx| {
            attempts += 1;
            xs.write_tx(tx, "/c", "never")?;
            xs.read_tx(tx, "/missing").map(|_| ())
        });
        assert_eq!(r, Err(XsError::Errno(Errno::ENOENT)));
        assert_eq!(attempts, 1);
        assert_eq!(xs.read("/c").unwrap(), "0");
    }

    // ----- ring mechanics -----

    #[test]
    fn index_wraparound() {
        let start = u32::MAX - 100;
        let mut xs = setup_at(start);
        for i in 0..20 {
            let v = format!("{}{}", i, "v".repeat(300 + i * 37));
            xs.write(&format!("/wrap/{}", i), &v).unwrap();
            assert_eq!(xs.read(&format!("/wrap/{}", i)).unwrap(), v);
        }
        xs.watch("/wrap", "w").unwrap();
        xs.write("/wrap/0", "x").unwrap();
        xs.pump().unwrap();
        assert_eq!(drain_watches(&mut xs).len(), 2);
        let req_prod = ring_field(&mut xs, f_req_prod);
        let rsp_prod = ring_field(&mut xs, f_rsp_prod);
        assert!(
            req_prod < start && rsp_prod < start,
            "indices wrapped past u32::MAX"
        );
        assert_eq!(ring_field(&mut xs, f_req_cons), req_prod);
        assert_eq!(ring_field(&mut xs, f_rsp_cons), rsp_prod);
        assert_eq!(xs.stats(), XsStats::default());
    }

    #[test]
    fn chunked_large_payloads() {
        let mut xs = setup_at(u32::MAX - 3);
        let v: String = (0..4000).map(|i| (b'a' + (i % 26) as u8) as char).collect();
        xs.write("/big", &v).unwrap();
        assert_eq!(xs.read("/big").unwrap(), v);
        // A slow server that takes and gives little at a time.
        sim(&mut xs).consume_chunk = 100;
        sim(&mut xs).produce_chunk = 77;
        let waits0 = xs.env().waits;
        xs.write("/big2", &v).unwrap();
        assert_eq!(xs.read("/big2").unwrap(), v);
        assert!(xs.env().waits > waits0, "the client waited for ring space");
        let d: Vec<String> = (0..300).map(|i| format!("entry{:04}", i)).collect();
        for e in &d[..10] {
            xs.write(&format!("/dir/{}", e), "").unwrap();
        }
        assert_eq!(xs.directory("/dir").unwrap(), d[..10].to_vec());
    }

    // ----- timeouts -----

    #[test]
    fn silent_server_times_out() {
        let mut xs = setup();
        sim(&mut xs).silent = true;
        let t0 = xs.env().now_ns();
        assert_eq!(xs.read("/x"), Err(XsError::Timeout));
        let elapsed = xs.env().now_ns() - t0;
        assert!((DEFAULT_TIMEOUT_NS..DEFAULT_TIMEOUT_NS + 2_000_000).contains(&elapsed));
        xs.set_timeout_ns(10_000_000);
        assert_eq!(xs.timeout_ns(), 10_000_000);
        let t0 = xs.env().now_ns();
        assert_eq!(xs.write("/x", "1"), Err(XsError::Timeout));
        assert_eq!(xs.env().now_ns() - t0, 10_000_000);
        // The server comes back.
        sim(&mut xs).silent = false;
        xs.write("/x", "2").unwrap();
        assert_eq!(xs.read("/x").unwrap(), "2");
    }

    #[test]
    fn late_reply_after_timeout_is_dropped() {
        let mut xs = setup();
        xs.write("/k", "old").unwrap();
        xs.set_timeout_ns(50_000_000);
        sim(&mut xs).hold = true;
        assert_eq!(xs.write("/k", "new"), Err(XsError::Timeout));
        sim(&mut xs).hold = false;
        // The held ack for the timed-out write arrives first and is dropped.
        assert_eq!(xs.read("/k").unwrap(), "new");
        assert_eq!(xs.stats().stale_replies, 1);
        assert_eq!(xs.stats().protocol_errors, 0);
    }

    #[test]
    fn timeout_mid_send_keeps_stream_framed() {
        let mut xs = setup();
        xs.set_timeout_ns(20_000_000);
        sim(&mut xs).paused = true;
        let big = "b".repeat(3000);
        // Only the first 1024 bytes fit: times out half-sent.
        assert_eq!(xs.write("/half", &big), Err(XsError::Timeout));
        let prod = ring_field(&mut xs, f_req_prod);
        // Nothing of this one fits: withdrawn entirely.
        assert_eq!(xs.write("/never", "x"), Err(XsError::Timeout));
        assert_eq!(ring_field(&mut xs, f_req_prod), prod);
        sim(&mut xs).paused = false;
        // The rest of the half-sent write goes first; its ack is dropped.
        assert_eq!(xs.read("/half").unwrap(), big);
        assert_eq!(xs.read("/never"), Err(XsError::Errno(Errno::ENOENT)));
        assert_eq!(xs.stats().stale_replies, 1);
        let writes = sim(&mut xs)
            .requests
            .iter()
            .filter(|h| h.msg_type == MsgType::Write as u32)
            .count();
        assert_eq!(writes, 1);
    }

    // ----- a hostile or broken server -----

    #[test]
    fn reply_len_5000_is_protocol_error_then_recovers() {
        let mut xs = setup();
        xs.write("/a", "1").unwrap();
        sim(&mut xs).mischief = Mischief::LenTooBig;
        assert_eq!(xs.read("/a"), Err(XsError::Protocol("payload too long")));
        assert_eq!(xs.read("/a").unwrap(), "1");
        assert_eq!(xs.stats().protocol_errors, 1);
    }

    #[test]
    fn rsp_prod_jump_is_protocol_error_then_recovers() {
        let mut xs = setup_at(u32::MAX - 10);
        xs.write("/a", "1").unwrap();
        sim(&mut xs).mischief = Mischief::ProdJump;
        assert_eq!(
            xs.read("/a"),
            Err(XsError::Protocol("response ring index out of range"))
        );
        assert_eq!(
            ring_field(&mut xs, f_rsp_cons),
            ring_field(&mut xs, f_rsp_prod)
        );
        assert_eq!(xs.read("/a").unwrap(), "1");
        xs.write("/b", "2").unwrap();
        assert_eq!(xs.directory("/").unwrap(), vec!["a", "b"]);
    }

    #[test]
    fn garbage_type_is_protocol_error_then_recovers() {
        let mut xs = setup();
        xs.write("/a", "1").unwrap();
        sim(&mut xs).mischief = Mischief::GarbageType;
        assert_eq!(
            xs.read("/a"),
            Err(XsError::Protocol("unknown message type"))
        );
        assert_eq!(xs.read("/a").unwrap(), "1");
    }

    #[test]
    fn invalid_utf8_and_missing_nul() {
        let mut xs = setup();
        xs.write("/a", "1").unwrap();
        sim(&mut xs).mischief = Mischief::BadUtf8;
        assert_eq!(xs.read("/a"), Err(XsError::Protocol("invalid UTF-8")));
        sim(&mut xs).mischief = Mischief::ErrorNoNul;
        assert_eq!(
            xs.read("/a"),
            Err(XsError::Protocol("missing NUL terminator"))
        );
        assert_eq!(xs.read("/a").unwrap(), "1");
    }

    #[test]
    fn wrong_req_id_and_unsolicited_replies() {
        let mut xs = setup();
        xs.write("/a", "1").unwrap();
        xs.set_timeout_ns(10_000_000);
        sim(&mut xs).mischief = Mischief::WrongReqId;
        assert_eq!(xs.read("/a"), Err(XsError::Timeout));
        assert_eq!(xs.stats().protocol_errors, 1);
        // A reply with nothing pending, seen by pump().
        sim(&mut xs).send(msg(MsgType::Read as u32, 999, 0, b"zz"));
        sim(&mut xs).step();
        assert_eq!(
            xs.pump(),
            Err(XsError::Protocol("reply does not match any request"))
        );
        // A malformed watch event.
        sim(&mut xs).send(msg(MsgType::WatchEvent as u32, 0, 0, b"/path-only\0"));
        sim(&mut xs).step();
        assert_eq!(
            xs.pump(),
            Err(XsError::Protocol("watch event without token"))
        );
        assert_eq!(xs.pump(), Ok(0));
        assert_eq!(xs.read("/a").unwrap(), "1");
        assert_eq!(xs.stats().protocol_errors, 3);
    }

    #[test]
    fn bogus_req_cons_is_protocol_error() {
        let mut xs = setup_at(1000);
        xs.write("/a", "1").unwrap();
        let prod = ring_field(&mut xs, f_req_prod);
        sim(&mut xs).paused = true;
        sim(&mut xs).set(f_req_cons, prod.wrapping_add(5000));
        assert_eq!(
            xs.read("/a"),
            Err(XsError::Protocol("request ring index out of range"))
        );
        assert_eq!(ring_field(&mut xs, f_req_prod), prod, "nothing written");
        sim(&mut xs).set(f_req_cons, prod.wrapping_sub(5000));
        assert_eq!(
            xs.read("/a"),
            Err(XsError::Protocol("request ring index out of range"))
        );
        // The server repairs its index: the client works again.
        sim(&mut xs).set(f_req_cons, prod);
        sim(&mut xs).paused = false;
        assert_eq!(xs.read("/a").unwrap(), "1");
    }

    #[test]
    fn hostile_rsp_ring_never_panics() {
        // Random indices and contents thrown at the client between requests.
        let mut xs = setup();
        xs.set_timeout_ns(3_000_000);
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..300 {
            let r = rnd();
            let ring = sim(&mut xs).ring;
            for i in 0..(r % 64) as usize {
                let b = rnd() as u8;
                // SAFETY: index masked to the ring size.
                unsafe {
                    addr_of_mut!((*ring).rsp)
                        .cast::<u8>()
                        .add(mask_idx(i as u32 * 7 + round))
                        .write_volatile(b)
                };
            }
            let p = ring_field(&mut xs, f_rsp_prod);
            let jump = match r % 4 {
                0 => (rnd() % 2000) as u32,
                1 => rnd() as u32,
                _ => (rnd() % 40) as u32,
            };
            sim(&mut xs).set(f_rsp_prod, p.wrapping_add(jump));
            let _ = xs.pump();
            let _ = xs.read("/x");
            let _ = xs.directory("/");
            let _ = xs.poll_watch();
        }
        // Once the noise stops, the client talks to the server again.
        xs.set_timeout_ns(DEFAULT_TIMEOUT_NS);
        let mut ok = false;
        for _ in 0..5 {
            if xs.write("/after", "yes").is_ok() {
                ok = true;
                break;
            }
        }
        assert!(ok);
        assert_eq!(xs.read("/after").unwrap(), "yes");
    }

    // ----- the pure parser -----

    #[test]
    fn parse_reply_cases() {
        let m = msg(MsgType::Write as u32, 3, 0, b"OK\0");
        let r = parse_reply(&m).unwrap();
        assert_eq!(r.body, ReplyBody::Ack);
        assert_eq!(r.header.req_id, 3);
        assert_eq!(
            parse_reply(&msg(MsgType::Write as u32, 3, 0, b"OK"))
                .unwrap()
                .body,
            ReplyBody::Ack
        );
        assert!(parse_reply(&msg(MsgType::Write as u32, 3, 0, b"NO\0")).is_err());
        assert_eq!(
            parse_reply(&msg(MsgType::Read as u32, 1, 0, b"v\0x"))
                .unwrap()
                .body,
            ReplyBody::Read(b"v\0x")
        );
        let m = msg(MsgType::Directory as u32, 1, 0, b"a\0bc\0");
        let d = parse_reply(&m).unwrap();
        match d.body {
            ReplyBody::Directory(e) => {
                assert_eq!(e.iter().collect::<Vec<_>>(), vec!["a", "bc"]);
                assert_eq!(e.len(), 2);
            }
            _ => panic!(),
        }
        for empty in [&b""[..], b"\0"] {
            match parse_reply(&msg(MsgType::Directory as u32, 1, 0, empty))
                .unwrap()
                .body
            {
                ReplyBody::Directory(e) => assert!(e.is_empty() && e.iter().next().is_none()),
                _ => panic!(),
            }
        }
        for bad in [&b"a"[..], b"a\0\0b\0", b"\0a\0", b"\xff\0"] {
            assert!(
                parse_reply(&msg(MsgType::Directory as u32, 1, 0, bad)).is_err(),
                "{:?}",
                bad
            );
        }
        assert_eq!(
            parse_reply(&msg(MsgType::TransactionStart as u32, 1, 0, b"42\0"))
                .unwrap()
                .body,
            ReplyBody::TransactionStarted(TxId(42))
        );
        for bad in [
            &b"0\0"[..],
            b"42",
            b"-1\0",
            b"\0",
            b"99999999999\0",
            b"4 2\0",
        ] {
            assert!(parse_reply(&msg(MsgType::TransactionStart as u32, 1, 0, bad)).is_err());
        }
        assert_eq!(
            parse_reply(&msg(MsgType::Error as u32, 1, 0, b"EACCES\0"))
                .unwrap()
                .body,
            ReplyBody::Error(Errno::EACCES)
        );
        assert_eq!(
            parse_reply(&msg(MsgType::Error as u32, 1, 0, b"EWHAT\0"))
                .unwrap()
                .body,
            ReplyBody::Error(Errno::Unknown)
        );
        assert_eq!(
            parse_reply(&msg(MsgType::WatchEvent as u32, 0, 0, b"/p\0tok\0"))
                .unwrap()
                .body,
            ReplyBody::WatchEvent {
                path: "/p",
                token: "tok"
            }
        );
        assert_eq!(
            parse_reply(&msg(MsgType::WatchEvent as u32, 0, 0, b"/p\0\0"))
                .unwrap()
                .body,
            ReplyBody::WatchEvent {
                path: "/p",
                token: ""
            }
        );
        for bad in [&b""[..], b"/p\0", b"/p\0t", b"/p\0t\0x\0", b"\0t\0"] {
            assert!(parse_reply(&msg(MsgType::WatchEvent as u32, 0, 0, bad)).is_err());
        }
        assert_eq!(
            parse_reply(&msg(
                MsgType::GetDomainPath as u32,
                1,
                0,
                b"/local/domain/1\0"
            ))
            .unwrap()
            .body,
            ReplyBody::DomainPath("/local/domain/1")
        );
        // Framing.
        assert_eq!(
            parse_reply(&[0; 15]),
            Err(XsError::Protocol("truncated header"))
        );
        let mut m = msg(MsgType::Read as u32, 1, 0, b"abc");
        m.push(0);
        assert_eq!(
            parse_reply(&m),
            Err(XsError::Protocol("payload length mismatch"))
        );
        m.truncate(HEADER_LEN + 2);
        assert_eq!(
            parse_reply(&m),
            Err(XsError::Protocol("payload length mismatch"))
        );
        let mut h = Header {
            msg_type: 2,
            req_id: 1,
            tx_id: 0,
            len: 5000,
        }
        .to_bytes()
        .to_vec();
        h.extend(vec![0; 5000]);
        assert_eq!(parse_reply(&h), Err(XsError::Protocol("payload too long")));
        assert_eq!(
            parse_reply(&msg(20, 1, 0, b"")),
            Err(XsError::Protocol("unknown message type"))
        );
        assert_eq!(
            parse_reply(&msg(0xffff, 1, 0, b"")),
            Err(XsError::Protocol("unknown message type"))
        );
        assert!(parse_reply(&msg(MsgType::GetPerms as u32, 1, 0, b"n0\0")).is_err());
        // Header round trip.
        let hd = Header {
            msg_type: 1,
            req_id: 2,
            tx_id: 3,
            len: 4,
        };
        assert_eq!(Header::from_bytes(&hd.to_bytes()), hd);
        assert_eq!(Header::parse(&hd.to_bytes()[..15]), None);
    }

    #[test]
    fn helpers_and_display() {
        assert_eq!(parse_u32(b"0"), Some(0));
        assert_eq!(parse_u32(b"4294967295"), Some(u32::MAX));
        assert_eq!(parse_u32(b"4294967296"), None);
        assert_eq!(parse_u32(b""), None);
        assert_eq!(parse_u32(b"+1"), None);
        let mut b = [0u8; 10];
        assert_eq!(fmt_u32(0, &mut b), b"0");
        assert_eq!(fmt_u32(u32::MAX, &mut b), b"4294967295");
        for (e, n) in ERRNO_NAMES {
            assert_eq!(Errno::from_name(n.as_bytes()), e);
            assert_eq!(e.name(), n);
        }
        assert_eq!(
            XsError::Errno(Errno::ENOENT).to_string(),
            "xenstore error ENOENT"
        );
        assert_eq!(
            XsError::Protocol("x").to_string(),
            "xenstore protocol error: x"
        );
        for e in [
            XsError::Again,
            XsError::Timeout,
            XsError::TooLong,
            XsError::BadValue,
            XsError::Invalid("y"),
        ] {
            assert!(!e.to_string().is_empty());
        }
        for v in 0..30 {
            if let Some(t) = MsgType::from_u32(v) {
                assert_eq!(t as u32, v);
            }
        }
        for v in 0..12 {
            if let Some(s) = XenbusState::from_u32(v) {
                assert_eq!(s as u32, v);
            }
        }
        assert_eq!(mask_idx(u32::MAX), 1023);
        assert_eq!(mask_idx(1024), 0);
    }
}
