//! Arbitrary bytes as Irmin's answer: through the incremental HTTP response
//! reader, the GraphQL reply parsers and the persister.
//!
//! Input: one control byte, then the bytes. Control bits 0..=3 pick how
//! the bytes are cut into pieces for the reader (sizes 1..=16, or a size
//! sequence drawn from the data); bit 4 = the connection ends after the
//! bytes (finish_eof); bits 5..=7 pick which exchange the persister has in
//! flight when the reply comes.
//!
//! Checked: nothing panics; the reader's verdict (status, body or error)
//! does not depend on how the bytes were cut; bodies stay within the
//! limit; messages fit their buffers; the parsers agree with each other
//! on the shape of a reply; and the persister never loses a change (the
//! committed count plus the backlog is what was recorded) and settles the
//! change only on a reply that says so.
#![no_main]

use core::net::{Ipv4Addr, SocketAddrV4};
use libfuzzer_sys::fuzz_target;
use pih_control::config::IrminEndpoint;
use pih_control::irmin::reply::MSG_LEN;
use pih_control::irmin::{
    parse_get, parse_list, parse_write, Change, Event, ExchangeKind, Persister, Progress,
    ResponseError, ResponseReader, WriteOutcome,
};
use pih_control::rules::{Proto, Rule, RuleSpec};

const MAX_BODY: usize = 4096;

type Verdict = Result<Option<(u16, Vec<u8>)>, ResponseError>;

/// Reads `data` cut into pieces by `sizes` (cycled); `Ok(None)`: needs
/// more.
fn read(data: &[u8], sizes: &mut dyn FnMut() -> usize, eof: bool) -> Verdict {
    let mut r = ResponseReader::new(MAX_BODY);
    let mut rest = data;
    let mut complete = false;
    while !rest.is_empty() {
        let n = sizes().clamp(1, rest.len());
        let (piece, tail) = rest.split_at(n);
        rest = tail;
        match r.feed(piece)? {
            Progress::Complete => complete = true,
            Progress::NeedMore => assert!(!complete, "NeedMore after Complete"),
        }
        assert!(r.body().len() <= MAX_BODY);
    }
    if !complete && eof {
        complete = r.finish_eof()? == Progress::Complete;
    }
    if !complete {
        // An empty feed changes nothing.
        assert_eq!(r.feed(&[]), Ok(Progress::NeedMore));
        return Ok(None);
    }
    assert!(r.is_complete());
    Ok(Some((r.status().expect("status"), r.body().to_vec())))
}

fn endpoint() -> IrminEndpoint {
    IrminEndpoint {
        addr: SocketAddrV4::new(Ipv4Addr::new(10, 0, 1, 1), 8081),
        branch: heapless::String::try_from("main").unwrap(),
        prefix: heapless::String::try_from("bridge").unwrap(),
    }
}

fn rule(id: u32) -> Rule {
    Rule {
        id,
        spec: RuleSpec {
            client: Ipv4Addr::new(203, 0, 113, 9),
            int_addr: Ipv4Addr::new(192, 168, 252, 10),
            int_port: 22,
            proto: Proto::Tcp,
        },
        ext_port: 18407,
        expires_ns: None,
        expires_unix: Some(1_800_000_000),
    }
}

fn check_parsers(status: u16, body: &[u8]) {
    match parse_write(status, body, "test_and_set") {
        Ok(WriteOutcome::Committed { hash }) => {
            assert_eq!(status, 200);
            assert!(hash.map_or(0, |h| h.len()) <= 80);
        }
        Ok(WriteOutcome::ResolverError(m)) => {
            assert_eq!(status, 200);
            assert!(m.len() <= MSG_LEN);
        }
        Ok(WriteOutcome::Rejected { status: s, message }) => {
            assert_eq!(s, status);
            assert_ne!(status, 200);
            assert!(message.len() <= MSG_LEN);
        }
        Err(e) => {
            assert_eq!(status, 200);
            let _ = e.to_string();
        }
    }
    let get = parse_get(status, body);
    let list = parse_list(status, body);
    if status != 200 {
        assert!(get.is_err() && list.is_err());
    }
    if let Ok(entries) = &list {
        for (path, value) in entries {
            let _ = pih_control::irmin::id_from_path("bridge", path);
            let _ = pih_control::irmin::decode(value);
        }
    }
    if let (Err(a), Err(b)) = (&get, &list) {
        // Both fail for the same reason when it is about the envelope.
        if matches!(
            a,
            pih_control::irmin::ReplyError::Http { .. }
                | pih_control::irmin::ReplyError::NotJson
                | pih_control::irmin::ReplyError::Graphql(_)
        ) {
            assert_eq!(a, b);
        }
    }
}

/// A persister with `kind` in flight gets this reply.
fn check_persister(selector: u8, status: u16, body: &[u8]) {
    let mut p = Persister::new(&endpoint(), "pih-bridge", 4);
    let want = match selector % 4 {
        0 => ExchangeKind::Restore,
        1 => ExchangeKind::Write,
        2 => ExchangeKind::Verify,
        _ => ExchangeKind::Overwrite,
    };
    let r = rule(3);
    let change = if selector & 4 == 0 {
        Change::insert(&r)
    } else {
        Change::remove(&r)
    };
    let seq = p.record(change).unwrap();
    if want != ExchangeKind::Restore {
        p.skip_restore();
    }
    // Walk to the wanted step with the replies that lead there.
    let foreign = br#"{"data":{"branch":{"tree":{"get":"foreign"}}}}"#;
    let refused = br#"{"data":{"test_and_set":null},"errors":[{"message":"Test_and_set failed"}]}"#;
    let mut now = 0;
    let path: &[&[u8]] = match want {
        ExchangeKind::Restore | ExchangeKind::Write => &[],
        ExchangeKind::Verify => &[refused],
        ExchangeKind::Overwrite => &[refused, foreign],
    };
    for reply in path {
        let ex = p.poll(now).unwrap();
        p.on_reply(now, 200, reply);
        assert!(ex.kind != ExchangeKind::Restore);
    }
    if want == ExchangeKind::Overwrite && selector & 4 != 0 {
        // A removal is settled by the conflict, no overwrite.
        assert!(p.is_committed(seq));
        return;
    }
    let ex = p.poll(now).expect("exchange due");
    assert_eq!(ex.kind, want);
    let before = p.status_at(now);
    let event = p.on_reply(now, status, body);
    let after = p.status_at(now);
    assert_eq!(after.committed + after.backlog, 1);
    assert!(after.last_error.as_ref().map_or(0, |m| m.len()) <= MSG_LEN);
    match &event {
        Event::Committed { seq: s, .. } => {
            assert_eq!(*s, seq);
            assert!(p.is_committed(seq));
            assert_eq!(status, 200);
        }
        Event::Retrying { in_ms, .. } => {
            assert!(*in_ms >= 500);
            assert_eq!(after.failures, before.failures + 1);
            assert!(p.poll(now).is_none());
        }
        Event::Restored { .. } => {
            assert_eq!(status, 200);
            assert!(!p.is_restoring());
            let r = p.take_restored().unwrap();
            for rule in &r.rules {
                assert!(rule.id != 0 && rule.expires_ns.is_none());
            }
        }
        Event::Verifying { .. } => assert_eq!(want, ExchangeKind::Write),
        Event::Conflict { .. } => assert_eq!(want, ExchangeKind::Verify),
        Event::Nothing => panic!("unexpected with an exchange in flight"),
    }
    let _ = event.to_string();
    now += 60_000_000_000;
    // Whatever happened, the machine goes on.
    if let Some(ex) = p.poll(now) {
        assert!(!ex.request.is_empty());
        p.on_transport_error(now, "reset");
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&control, data)) = input.split_first() else {
        return;
    };
    let eof = control & 0x10 != 0;
    let whole = read(data, &mut || usize::MAX, eof);
    let fixed = usize::from(control & 0x0f) + 1;
    assert_eq!(read(data, &mut || fixed, eof), whole, "pieces of {fixed}");
    let mut i = 0usize;
    let mut drawn = || {
        i = i.wrapping_add(1);
        usize::from(data.get(i % data.len().max(1)).copied().unwrap_or(1) % 32) + 1
    };
    assert_eq!(read(data, &mut drawn, eof), whole, "drawn pieces");

    // The raw bytes as a 200 body, to reach the JSON shapes directly.
    check_parsers(200, data);
    check_persister(control >> 5, 200, data);
    if let Ok(Some((status, body))) = whole {
        assert!(body.len() <= MAX_BODY);
        check_parsers(status, &body);
        check_persister(control >> 5, status, &body);
    }
});
