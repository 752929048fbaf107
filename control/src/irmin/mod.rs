//! Persistence of the gatekeeper rules in an Irmin store, through Irmin 3's
//! GraphQL API, as sans-io logic: the kernel moves the bytes over a TCP
//! connection to the endpoint, everything else is here and host-tested.
//!
//! ```text
//!  API / expiry ── Change ──> Persister::record ──> Journal (bounded, ordered)
//!                                                        │ head
//!  kernel loop:                                          v
//!    poll(now) ──> Exchange { request bytes } ──> TCP connect, send ──┐
//!                                                                      │
//!    on_reply(now, status, body) <── ResponseReader::feed/finish_eof <─┘
//!    on_transport_error(now, why)      (HTTP/1.1: length, chunked, EOF)
//!          │
//!          └──> Event (log it); status() (the API's PersistStatus) for /health and /stats
//!
//!  Irmin store (branch from the configuration):
//!    <prefix>/rules/<id> = {"v":1,"id":3,"proto":"tcp","ip":"203.0.113.9",
//!                           "dst_ip":"192.168.252.10","dst_port":22,
//!                           "port":18407,"expires_at":null}
//! ```
//!
//! - [`doc`]: the rule document and the store paths.
//! - [`request`]: the four GraphQL requests (`test_and_set`, `set`, `get`,
//!   `get_tree { list_contents_recursively }`) as complete HTTP requests.
//! - [`response`]: an incremental, bounded HTTP/1.1 response reader.
//! - [`reply`]: the GraphQL replies, including resolver and validation
//!   errors.
//! - [`journal`]: the bounded journal of changes, its retry backoff and
//!   counters.
//! - [`client`]: the [`Persister`] state machine: restore at start-up,
//!   then each change as a `test_and_set` from the old document to the
//!   new one, verified by a read when Irmin refuses it.
//!
//! This module allocates (the replies are parsed with `serde_json`); it is
//! not on the packet path. No input makes it panic.

pub mod client;
pub mod doc;
pub mod journal;
pub mod reply;
pub mod request;
pub mod response;

pub use client::{
    Event, Exchange, ExchangeKind, PersistStatus, Persister, Restored, EXCHANGE_TIMEOUT_NS,
    LIST_MAX_BODY, REPLY_MAX_BODY,
};
pub use doc::{
    decode, encode, id_from_path, rule_path, rules_dir, DocBuf, DocError, PathBuf, DOC_MAX,
};
pub use journal::{Backoff, Change, ChangeKind, Journal, JournalFull};
pub use reply::{parse_get, parse_list, parse_write, Hash, Msg, ReplyError, WriteOutcome};
pub use response::{Progress, ResponseError, ResponseReader};
