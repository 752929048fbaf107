//! Arbitrary bytes as one message from xenstored: the pure reply parser
//! must reject or accept them without panicking, and what it accepts must
//! be self-consistent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pih_xen::xenstore::{parse_reply, Header, ReplyBody, HEADER_LEN, XENSTORE_PAYLOAD_MAX};

fuzz_target!(|data: &[u8]| {
    let header = Header::parse(data);
    if let Ok(reply) = parse_reply(data) {
        assert_eq!(Some(reply.header), header);
        assert!(reply.header.len as usize <= XENSTORE_PAYLOAD_MAX);
        assert_eq!(data.len(), HEADER_LEN + reply.header.len as usize);
        match reply.body {
            ReplyBody::Directory(entries) => {
                let mut n = 0;
                for e in entries.iter() {
                    assert!(!e.is_empty() && !e.contains('\0'));
                    n += 1;
                }
                assert_eq!(n, entries.len());
            }
            ReplyBody::WatchEvent { path, token } => {
                assert!(!path.is_empty() && !path.contains('\0') && !token.contains('\0'));
            }
            ReplyBody::TransactionStarted(tx) => assert_ne!(tx.raw(), 0),
            ReplyBody::Read(v) => assert!(v.len() <= XENSTORE_PAYLOAD_MAX),
            ReplyBody::DomainPath(p) => assert!(!p.contains('\0')),
            ReplyBody::Ack | ReplyBody::Error(_) => {}
        }
    }
});
