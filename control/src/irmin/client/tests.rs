//! Scripted conversations between a [`Persister`] and a fake Irmin that
//! executes the four GraphQL operations on an in-memory store, answering
//! in Irmin's reply shapes (through real HTTP framing and the
//! [`ResponseReader`]).

use super::*;
use crate::irmin::doc::encode;
use crate::irmin::request::{GET_QUERY, LIST_QUERY, SET_QUERY, TEST_AND_SET_QUERY};
use crate::irmin::response::{Progress, ResponseReader};
use crate::rules::{Proto, RuleSpec};
use core::net::{Ipv4Addr, SocketAddrV4};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::string::String as StdString;
use std::vec::Vec as StdVec;

const MS: u64 = 1_000_000;

fn ep() -> IrminEndpoint {
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
            client: Ipv4Addr::new(203, 0, 113, id as u8),
            int_addr: Ipv4Addr::new(192, 168, 252, 10),
            int_port: 22,
            proto: Proto::Tcp,
        },
        ext_port: 18400 + id as u16,
        expires_ns: None,
        expires_unix: None,
    }
}

/// What a request asked for, as the fake server saw it.
#[derive(Clone, Debug)]
struct Seen {
    query: StdString,
    vars: Value,
}

/// One scripted answer instead of executing the request.
enum Script {
    /// Execute normally.
    Run,
    /// Execute, but the reply is lost (transport error).
    RunThenLose,
    /// Don't execute; reply with this status and body.
    Reply(u16, &'static str),
    /// Don't execute; the connection fails.
    Down,
}

#[derive(Default)]
struct FakeIrmin {
    store: BTreeMap<StdString, StdString>,
    seen: StdVec<Seen>,
    commits: StdVec<(StdString, StdString)>,
    script: std::collections::VecDeque<Script>,
}

impl FakeIrmin {
    fn with(docs: &[(&str, &str)]) -> Self {
        let mut f = FakeIrmin::default();
        for (p, v) in docs {
            f.store.insert(p.to_string(), v.to_string());
        }
        f
    }

    fn commit(&mut self, info: &Value) -> Value {
        self.commits.push((
            info["author"].as_str().unwrap_or("").to_string(),
            info["message"].as_str().unwrap_or("").to_string(),
        ));
        json!({ "hash": format!("{:064x}", self.commits.len()) })
    }

    /// Executes a request like Irmin would; the HTTP status and body.
    fn execute(&mut self, request: &[u8]) -> (u16, StdString) {
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut req = httparse::Request::new(&mut headers);
        let httparse::Status::Complete(n) = req.parse(request).unwrap() else {
            panic!("partial request")
        };
        assert_eq!(req.method, Some("POST"));
        assert_eq!(req.path, Some("/graphql"));
        let host = req.headers.iter().find(|h| h.name == "Host").unwrap();
        assert_eq!(host.value, b"10.0.1.1:8081");
        let body: Value = serde_json::from_slice(&request[n..]).unwrap();
        let query = body["query"].as_str().unwrap().to_string();
        let vars = body["variables"].clone();
        self.seen.push(Seen {
            query: query.clone(),
            vars: vars.clone(),
        });
        assert_eq!(vars["b"], "main");
        let path = vars["p"].as_str().unwrap().to_string();
        let current = self.store.get(&path).cloned();
        let reply = if query == TEST_AND_SET_QUERY {
            let test = vars["t"].as_str().map(str::to_string);
            if test == current {
                match vars["s"].as_str() {
                    Some(s) => self.store.insert(path, s.to_string()),
                    None => self.store.remove(&path),
                };
                json!({"data": {"test_and_set": self.commit(&vars["i"])}})
            } else {
                json!({"errors": [{"message": "Test_and_set failed", "path": ["test_and_set"]}],
                       "data": {"test_and_set": null}})
            }
        } else if query == SET_QUERY {
            self.store
                .insert(path, vars["v"].as_str().unwrap().to_string());
            json!({"data": {"set": self.commit(&vars["i"])}})
        } else if query == GET_QUERY {
            json!({"data": {"branch": {"tree": {"get": current}}}})
        } else if query == LIST_QUERY {
            let under = format!("{path}/");
            let items: StdVec<Value> = self
                .store
                .iter()
                .filter(|(k, _)| k.starts_with(&under))
                .map(|(k, v)| json!({"path": format!("/{k}"), "value": v}))
                .collect();
            let tree = if items.is_empty() {
                Value::Null
            } else {
                json!({ "list_contents_recursively": items })
            };
            json!({"data": {"branch": {"tree": {"get_tree": tree}}}})
        } else {
            return (400, r#"{"errors":[{"message":"unknown query"}]}"#.into());
        };
        (200, reply.to_string())
    }

    /// Runs one exchange (per the script) and feeds the outcome to `p`.
    fn exchange(&mut self, p: &mut Persister, now: u64, ex: Exchange) -> Event {
        let script = self.script.pop_front().unwrap_or(Script::Run);
        let (status, body) = match script {
            Script::Down => return p.on_transport_error(now, "connection refused"),
            Script::Reply(status, body) => (status, body.to_string()),
            Script::Run => self.execute(&ex.request),
            Script::RunThenLose => {
                self.execute(&ex.request);
                return p.on_transport_error(now, "connection reset");
            }
        };
        // Real framing, read back in small pieces.
        let wire = format!(
            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let mut reader = ResponseReader::new(ex.max_body);
        let mut done = false;
        for piece in wire.as_bytes().chunks(7) {
            if reader.feed(piece).unwrap() == Progress::Complete {
                done = true;
            }
        }
        assert!(done);
        p.on_reply(now, reader.status().unwrap(), reader.body())
    }

    /// Polls `p` at `now`: the event of the exchange it started, if any.
    fn step(&mut self, p: &mut Persister, now: u64) -> Option<Event> {
        let ex = p.poll(now)?;
        assert!(p.poll(now).is_none(), "second exchange while one is in flight");
        Some(self.exchange(p, now, ex))
    }

    fn last_query(&self) -> &str {
        &self.seen.last().unwrap().query
    }
}

fn running(f: &mut FakeIrmin) -> Persister {
    let mut p = Persister::new(&ep(), "pih-bridge", 16);
    assert!(p.is_restoring());
    assert!(matches!(f.step(&mut p, 0), Some(Event::Restored { .. })));
    assert!(!p.is_restoring());
    p
}

fn doc(id: u32) -> StdString {
    encode(&rule(id)).to_string()
}

// -- restore ---------------------------------------------------------------

#[test]
fn restore_with_rules_and_invalid_entries() {
    let mut odd = rule(8);
    odd.expires_unix = Some(1_900_000_000);
    let odd_doc = encode(&odd).to_string();
    let mut f = FakeIrmin::with(&[
        ("bridge/rules/5", &doc(5)),
        ("bridge/rules/1", &doc(1)),
        ("bridge/rules/7", &odd_doc),
        ("bridge/rules/x", "{}"),
        ("bridge/rules/9", "garbage"),
        ("bridge/rules/10/a", &doc(10)),
        ("bridge/rules/11", r#"{"v":2}"#),
        ("bridge/other", "not listed"),
        ("elsewhere/rules/2", &doc(2)),
    ]);
    let mut p = Persister::new(&ep(), "pih-bridge", 16);
    assert_eq!(p.status_at(0).state, "restoring");
    assert_eq!(p.next_poll_ns(), Some(0));
    let ex = p.poll(0).unwrap();
    assert_eq!(ex.kind, ExchangeKind::Restore);
    assert_eq!(ex.max_body, LIST_MAX_BODY);
    assert!(p.is_busy() && p.next_poll_ns().is_none());
    let ev = f.exchange(&mut p, 0, ex);
    assert_eq!(f.last_query(), LIST_QUERY);
    assert_eq!(f.seen[0].vars["p"], "bridge/rules");
    assert_eq!(ev, Event::Restored { count: 2, invalid: 5 });
    assert_eq!(ev.to_string(), "restored 2 rules, 5 invalid entries");
    assert!(!p.is_restoring());
    let r = p.take_restored().unwrap();
    assert!(p.take_restored().is_none());
    assert_eq!(r.rules, [rule(1), rule(5)]);
    let invalid: BTreeMap<_, _> = r.invalid.into_iter().collect();
    assert_eq!(invalid.len(), 5);
    assert_eq!(
        invalid["/bridge/rules/7"],
        "document id 8 does not match the path"
    );
    assert!(invalid["/bridge/rules/x"].contains("not a rule path"));
    assert!(invalid["/bridge/rules/10/a"].contains("not a rule path"));
    assert_eq!(invalid["/bridge/rules/9"], "rule document: not a JSON object");
    assert!(invalid["/bridge/rules/11"].contains("v: unsupported version"));
    assert_eq!(p.status_at(0).state, "ok");
    // Nothing to do.
    assert_eq!(p.poll(1), None);
    assert_eq!(p.next_poll_ns(), None);
}

#[test]
fn restore_empty_and_expiry_kept() {
    let mut f = FakeIrmin::default();
    let mut p = running(&mut f);
    assert_eq!(p.take_restored(), Some(Restored::default()));

    let mut r = rule(4);
    r.expires_unix = Some(1_800_000_000);
    r.spec.proto = Proto::Udp;
    let mut f = FakeIrmin::with(&[("bridge/rules/4", &encode(&r))]);
    let mut p = running(&mut f);
    assert_eq!(p.take_restored().unwrap().rules, [r]);
}

#[test]
fn restore_retries_with_backoff() {
    let mut f = FakeIrmin::with(&[("bridge/rules/2", &doc(2))]);
    f.script.extend([
        Script::Down,
        Script::Reply(500, "oops"),
        Script::Reply(200, "{\"data\":"),
        Script::Reply(
            200,
            r#"{"errors":[{"message":"boom"}],"data":{"branch":null}}"#,
        ),
    ]);
    let mut p = Persister::new(&ep(), "pih-bridge", 16);
    let mut now = 5 * MS;
    let mut delays = StdVec::new();
    for _ in 0..4 {
        match f.step(&mut p, now).unwrap() {
            Event::Retrying { reason, in_ms } => {
                assert!(reason.starts_with("restore: "), "{reason}");
                delays.push(in_ms);
                assert!(p.is_restoring());
                let st = p.status_at(now);
                assert_eq!(st.state, "restoring");
                assert_eq!(st.retry_in_ms, Some(in_ms));
                assert_eq!(p.next_poll_ns(), Some(now + in_ms * MS));
                assert!(p.poll(now + in_ms * MS - 1).is_none());
                now += in_ms * MS;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(delays, [500, 1000, 2000, 4000]);
    let st = p.status_at(now);
    assert_eq!(st.failures, 4);
    assert_eq!(
        st.last_error.as_deref(),
        Some("restore: GraphQL error: boom")
    );
    assert_eq!(
        f.step(&mut p, now),
        Some(Event::Restored { count: 1, invalid: 0 })
    );
    let st = p.status_at(now);
    assert_eq!((st.state, st.retry_in_ms), ("ok", None));
    assert_eq!(p.take_restored().unwrap().rules, [rule(2)]);
}

#[test]
fn skip_restore_and_changes_recorded_while_restoring() {
    let mut f = FakeIrmin::default();
    let mut p = Persister::new(&ep(), "pih-bridge", 4);
    let seq = p.record(Change::insert(&rule(1))).unwrap();
    // The restore goes first.
    assert_eq!(p.poll(0).unwrap().kind, ExchangeKind::Restore);
    assert!(matches!(p.on_transport_error(0, "timeout"), Event::Retrying { .. }));
    p.skip_restore();
    assert!(!p.is_restoring());
    assert!(p.take_restored().is_none());
    // Due at once: skipping resets the backoff.
    assert_eq!(
        f.step(&mut p, 0),
        Some(Event::Committed {
            id: 1,
            seq,
            hash: Some(heapless::String::try_from(format!("{:064x}", 1).as_str()).unwrap())
        })
    );
    assert_eq!(f.store["bridge/rules/1"], doc(1));
}

// -- writes ----------------------------------------------------------------

#[test]
fn insert_committed() {
    let mut f = FakeIrmin::default();
    let mut p = running(&mut f);
    let mut r = rule(3);
    r.spec.client = Ipv4Addr::new(203, 0, 113, 9);
    r.ext_port = 18407;
    let seq = p.record(Change::insert(&r)).unwrap();
    assert!(!p.is_committed(seq));
    assert_eq!(p.status_at(0).backlog, 1);
    assert_eq!(p.next_poll_ns(), Some(0));
    let ex = p.poll(10).unwrap();
    assert_eq!((ex.kind, ex.max_body), (ExchangeKind::Write, REPLY_MAX_BODY));
    let ev = f.exchange(&mut p, 10, ex);
    let seen = f.seen.last().unwrap();
    assert_eq!(seen.query, TEST_AND_SET_QUERY);
    assert_eq!(
        seen.vars,
        json!({"b": "main", "p": "bridge/rules/3", "t": null, "s": encode(&r).as_str(),
               "i": {"author": "pih-bridge",
                     "message": "insert rule 3: tcp 203.0.113.9 -> 192.168.252.10:22 via port 18407"}})
    );
    match &ev {
        Event::Committed { id: 3, seq: s, hash: Some(h) } => {
            assert_eq!(*s, seq);
            assert_eq!(h.len(), 64);
        }
        other => panic!("{other:?}"),
    }
    assert!(ev.to_string().starts_with("rule 3: change 1 committed ("));
    assert!(p.is_committed(seq));
    let st = p.status_at(10);
    assert_eq!((st.state, st.backlog, st.committed), ("ok", 0, 1));
}

#[test]
fn update_and_remove_messages() {
    let mut f = FakeIrmin::default();
    let mut p = running(&mut f);
    let r = rule(2);
    let mut r2 = r;
    r2.expires_unix = Some(1_800_000_000);
    p.record(Change::insert(&r)).unwrap();
    p.record(Change::update(&r, &r2)).unwrap();
    p.record(Change::update(&r2, &r)).unwrap();
    p.record(Change::remove(&r)).unwrap();
    for _ in 0..4 {
        assert!(matches!(f.step(&mut p, 0), Some(Event::Committed { id: 2, .. })));
    }
    assert!(f.store.is_empty());
    let messages: StdVec<&str> = f.commits.iter().map(|(_, m)| m.as_str()).collect();
    assert_eq!(
        messages,
        [
            "insert rule 2: tcp 203.0.113.2 -> 192.168.252.10:22 via port 18402",
            "update rule 2: tcp 203.0.113.2 -> 192.168.252.10:22 via port 18402, expires at 1800000000",
            "update rule 2: tcp 203.0.113.2 -> 192.168.252.10:22 via port 18402, no expiry",
            "remove rule 2: tcp 203.0.113.2 -> 192.168.252.10:22 via port 18402",
        ]
    );
    assert!(f.commits.iter().all(|(a, _)| a == "pih-bridge"));
    // The removal tested the last document and set null.
    let last = &f.seen.last().unwrap().vars;
    assert_eq!(last["t"], doc(2).as_str());
    assert_eq!(last["s"], Value::Null);
}

#[test]
fn lost_reply_is_verified_as_committed() {
    let mut f = FakeIrmin::default();
    let mut p = running(&mut f);
    let seq = p.record(Change::insert(&rule(3))).unwrap();
    f.script.push_back(Script::RunThenLose);
    let now = 100 * MS;
    match f.step(&mut p, now) {
        Some(Event::Retrying { reason, in_ms: 500 }) => {
            assert_eq!(reason.as_str(), "write rule 3: connection reset")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(p.status_at(now).state, "retrying");
    assert_eq!(p.status_at(now + 200 * MS).retry_in_ms, Some(300));
    assert!(p.poll(now + 499 * MS).is_none());
    // The retried test_and_set fails (the document is already there)...
    let later = now + 500 * MS;
    match f.step(&mut p, later) {
        Some(Event::Verifying { id: 3, seq: s, reason }) => {
            assert_eq!(s, seq);
            assert_eq!(reason.as_str(), "Test_and_set failed");
        }
        other => panic!("{other:?}"),
    }
    // ...the read-back is due at once and finds the new document.
    let ex = p.poll(later).unwrap();
    assert_eq!(ex.kind, ExchangeKind::Verify);
    let ev = f.exchange(&mut p, later, ex);
    assert_eq!(f.last_query(), GET_QUERY);
    assert_eq!(f.seen.last().unwrap().vars, json!({"b": "main", "p": "bridge/rules/3"}));
    assert_eq!(ev, Event::Committed { id: 3, seq, hash: None });
    assert!(p.is_committed(seq));
    let st = p.status_at(later);
    assert_eq!((st.state, st.committed, st.failures, st.conflicts), ("ok", 1, 1, 0));
    assert_eq!(f.commits.len(), 1);
}

#[test]
fn lost_removal_reply_is_verified_as_committed() {
    let mut f = FakeIrmin::with(&[("bridge/rules/3", &doc(3))]);
    let mut p = running(&mut f);
    let seq = p.record(Change::remove(&rule(3))).unwrap();
    f.script.push_back(Script::RunThenLose);
    assert!(matches!(f.step(&mut p, 0), Some(Event::Retrying { .. })));
    assert!(matches!(f.step(&mut p, 500 * MS), Some(Event::Verifying { .. })));
    assert_eq!(
        f.step(&mut p, 500 * MS),
        Some(Event::Committed { id: 3, seq, hash: None })
    );
    assert!(f.store.is_empty());
}

#[test]
fn refusal_with_the_expected_value_retries_the_write() {
    let mut f = FakeIrmin::default();
    let mut p = running(&mut f);
    let seq = p.record(Change::insert(&rule(3))).unwrap();
    f.script.push_back(Script::Reply(
        200,
        r#"{"errors":[{"message":"Too many retries","path":["test_and_set"]}],"data":{"test_and_set":null}}"#,
    ));
    assert!(matches!(f.step(&mut p, 0), Some(Event::Verifying { .. })));
    // The path is still absent (== old): back off and write again.
    match f.step(&mut p, 0) {
        Some(Event::Retrying { reason, in_ms: 500 }) => {
            assert_eq!(reason.as_str(), "write rule 3: refused: Too many retries")
        }
        other => panic!("{other:?}"),
    }
    assert!(p.poll(499 * MS).is_none());
    let ex = p.poll(500 * MS).unwrap();
    assert_eq!(ex.kind, ExchangeKind::Write);
    assert!(matches!(
        f.exchange(&mut p, 500 * MS, ex),
        Event::Committed { id: 3, seq: s, hash: Some(_) } if s == seq
    ));
    assert_eq!(p.status_at(0).conflicts, 0);
}

#[test]
fn foreign_document_is_overwritten_on_insert() {
    let foreign = r#"{"v":1,"id":3,"note":"someone else"}"#;
    let mut f = FakeIrmin::default();
    let mut p = running(&mut f);
    f.store.insert("bridge/rules/3".into(), foreign.into());
    let seq = p.record(Change::insert(&rule(3))).unwrap();
    assert!(matches!(f.step(&mut p, 0), Some(Event::Verifying { .. })));
    let ev = f.step(&mut p, 0).unwrap();
    assert!(matches!(ev, Event::Conflict { id: 3, seq: s, .. } if s == seq), "{ev:?}");
    assert!(ev.to_string().contains("overwriting"), "{ev}");
    assert_eq!(p.status_at(0).conflicts, 1);
    assert!(!p.is_committed(seq));
    let ex = p.poll(0).unwrap();
    assert_eq!(ex.kind, ExchangeKind::Overwrite);
    let ev = f.exchange(&mut p, 0, ex);
    let seen = f.seen.last().unwrap();
    assert_eq!(seen.query, SET_QUERY);
    assert_eq!(seen.vars["v"], doc(3).as_str());
    assert_eq!(seen.vars["p"], "bridge/rules/3");
    assert!(seen.vars["i"]["message"]
        .as_str()
        .unwrap()
        .starts_with("insert rule 3 (overwriting a conflicting document): tcp "));
    assert!(matches!(ev, Event::Committed { id: 3, hash: Some(_), .. }));
    assert!(p.is_committed(seq));
    assert_eq!(f.store["bridge/rules/3"], doc(3));
    let st = p.status_at(0);
    assert_eq!((st.state, st.conflicts, st.committed, st.failures), ("ok", 1, 1, 0));
}

#[test]
fn update_of_a_deleted_document_recreates_it() {
    let mut f = FakeIrmin::default();
    let mut p = running(&mut f);
    let r = rule(6);
    let mut r2 = r;
    r2.expires_unix = Some(42);
    p.record(Change::update(&r, &r2)).unwrap();
    assert!(matches!(f.step(&mut p, 0), Some(Event::Verifying { .. })));
    assert!(matches!(f.step(&mut p, 0), Some(Event::Conflict { id: 6, .. })));
    assert!(matches!(f.step(&mut p, 0), Some(Event::Committed { id: 6, .. })));
    assert_eq!(f.store["bridge/rules/6"], encode(&r2).as_str());
}

#[test]
fn removal_conflict_leaves_foreign_document() {
    let foreign = r#"{"v":1,"id":3,"proto":"udp","ip":"1.1.1.1","dst_ip":"2.2.2.2","dst_port":1,"port":2,"expires_at":null}"#;
    let mut f = FakeIrmin::with(&[("bridge/rules/3", foreign)]);
    let mut p = running(&mut f);
    assert_eq!(p.take_restored().unwrap().rules.len(), 1);
    let seq = p.record(Change::remove(&rule(3))).unwrap();
    let next = p.record(Change::insert(&rule(4))).unwrap();
    assert!(matches!(f.step(&mut p, 0), Some(Event::Verifying { .. })));
    let ev = f.step(&mut p, 0).unwrap();
    assert!(matches!(ev, Event::Conflict { id: 3, seq: s, .. } if s == seq), "{ev:?}");
    assert!(ev.to_string().contains("left in place"));
    assert!(p.is_committed(seq) && !p.is_committed(next));
    assert_eq!(f.store["bridge/rules/3"], foreign);
    // The next change goes on as a plain write.
    let ex = p.poll(0).unwrap();
    assert_eq!(ex.kind, ExchangeKind::Write);
    assert!(matches!(f.exchange(&mut p, 0, ex), Event::Committed { id: 4, .. }));
    let st = p.status_at(0);
    assert_eq!((st.conflicts, st.committed, st.backlog), (1, 2, 0));
}

#[test]
fn verify_failures_retry_the_read() {
    let mut f = FakeIrmin::with(&[("bridge/rules/3", "{}")]);
    let mut p = running(&mut f);
    p.record(Change::insert(&rule(3))).unwrap();
    assert!(matches!(f.step(&mut p, 0), Some(Event::Verifying { .. })));
    f.script.extend([Script::Down, Script::Reply(200, "[]")]);
    let mut now = 0;
    for want in ["verify rule 3: connection refused", "verify rule 3: reply is not a JSON object"] {
        match f.step(&mut p, now) {
            Some(Event::Retrying { reason, in_ms }) => {
                assert_eq!(reason.as_str(), want);
                now += in_ms * MS;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(p.poll(now).unwrap().kind, ExchangeKind::Verify);
}

#[test]
fn overwrite_failures_retry_the_set() {
    let mut f = FakeIrmin::with(&[("bridge/rules/3", "{}")]);
    let mut p = running(&mut f);
    p.record(Change::insert(&rule(3))).unwrap();
    assert!(matches!(f.step(&mut p, 0), Some(Event::Verifying { .. })));
    assert!(matches!(f.step(&mut p, 0), Some(Event::Conflict { .. })));
    f.script.extend([
        Script::Reply(200, r#"{"data":{"set":null},"errors":[{"message":"disk full"}]}"#),
        Script::Reply(400, r#"{"errors":[{"message":"bad"}]}"#),
    ]);
    let mut now = 0;
    for want in ["overwrite rule 3: disk full", "overwrite rule 3: HTTP 400: bad"] {
        match f.step(&mut p, now) {
            Some(Event::Retrying { reason, in_ms }) => {
                assert_eq!(reason.as_str(), want);
                now += in_ms * MS;
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(matches!(f.step(&mut p, now), Some(Event::Committed { id: 3, .. })));
    assert_eq!(f.store["bridge/rules/3"], doc(3));
    assert_eq!(p.status_at(now).conflicts, 1);
}

#[test]
fn rejected_and_garbage_replies_never_drop_a_change() {
    let mut f = FakeIrmin::default();
    let mut p = running(&mut f);
    let seq = p.record(Change::insert(&rule(1))).unwrap();
    f.script.extend([
        Script::Reply(400, r#"{"errors":[{"message":"Unknown type \"InfoInput\""}]}"#),
        Script::Reply(503, "Service Unavailable"),
        Script::Reply(200, "<html>"),
        Script::Reply(200, r#"{"data":{}}"#),
        Script::Reply(200, r#"{"data":{"test_and_set":7}}"#),
    ]);
    let mut now = 0;
    let mut reasons = StdVec::new();
    for _ in 0..5 {
        match f.step(&mut p, now) {
            Some(Event::Retrying { reason, in_ms }) => {
                reasons.push(reason.to_string());
                now += in_ms * MS;
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(p.status_at(now).backlog, 1);
    }
    assert_eq!(
        reasons,
        [
            "write rule 1: HTTP 400: Unknown type \"InfoInput\"",
            "write rule 1: HTTP 503: Service Unavailable",
            "write rule 1: reply is not a JSON object",
            "write rule 1: unexpected reply: no mutation result in data",
            "write rule 1: unexpected reply: mutation result is not an object",
        ]
    );
    assert_eq!(now, (500 + 1000 + 2000 + 4000 + 8000) * MS);
    assert!(matches!(f.step(&mut p, now), Some(Event::Committed { seq: s, .. }) if s == seq));
    assert_eq!(p.status_at(now).failures, 5);
}

#[test]
fn outage_backlog_flushes_in_order() {
    let mut f = FakeIrmin::with(&[("bridge/rules/1", &doc(1))]);
    let mut p = running(&mut f);
    let r2 = rule(2);
    let mut r2b = r2;
    r2b.expires_unix = Some(1_700_000_000);
    let changes = [
        Change::insert(&rule(3)),
        Change::insert(&r2),
        Change::update(&r2, &r2b),
        Change::remove(&rule(1)),
        Change::insert(&rule(4)),
        Change::remove(&rule(3)),
    ];
    let mut seqs = StdVec::new();
    for c in changes.iter().cloned() {
        seqs.push(p.record(c).unwrap());
    }
    assert_eq!(seqs, [1, 2, 3, 4, 5, 6]);
    // The store is down for a while.
    let mut now = 1_000 * MS;
    let mut delays = StdVec::new();
    for _ in 0..9 {
        f.script.push_back(Script::Down);
        match f.step(&mut p, now) {
            Some(Event::Retrying { reason, in_ms }) => {
                assert_eq!(reason.as_str(), "write rule 3: connection refused");
                delays.push(in_ms);
                let st = p.status_at(now);
                assert_eq!((st.state, st.backlog, st.capacity), ("retrying", 6, 16));
                assert_eq!(st.retry_in_ms, Some(in_ms));
                // Nothing before it is due.
                assert!(p.poll(now + in_ms * MS - 1).is_none());
                now += in_ms * MS;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        delays,
        [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]
    );
    // More changes arrive meanwhile.
    seqs.push(p.record(Change::insert(&rule(5))).unwrap());
    // Back up: everything flushes in order, without waiting.
    let mut committed = StdVec::new();
    while let Some(ev) = f.step(&mut p, now) {
        match ev {
            Event::Committed { id, seq, .. } => committed.push((id, seq)),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        committed,
        [(3, 1), (2, 2), (2, 3), (1, 4), (4, 5), (3, 6), (5, 7)]
    );
    assert!(seqs.iter().all(|&s| p.is_committed(s)));
    let kinds: StdVec<&str> = f
        .commits
        .iter()
        .map(|(_, m)| m.split(':').next().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "insert rule 3",
            "insert rule 2",
            "update rule 2",
            "remove rule 1",
            "insert rule 4",
            "remove rule 3",
            "insert rule 5"
        ]
    );
    let keys: StdVec<&str> = f.store.keys().map(StdString::as_str).collect();
    assert_eq!(keys, ["bridge/rules/2", "bridge/rules/4", "bridge/rules/5"]);
    assert_eq!(f.store["bridge/rules/2"], encode(&r2b).as_str());
    let st = p.status_at(now);
    assert_eq!(
        (st.state, st.backlog, st.committed, st.failures, st.conflicts),
        ("ok", 0, 7, 9, 0)
    );
    assert_eq!(
        st.last_error.as_deref(),
        Some("write rule 3: connection refused")
    );
    assert_eq!(st.retry_in_ms, None);
}

#[test]
fn journal_full() {
    let mut f = FakeIrmin::default();
    let mut p = Persister::new(&ep(), "pih-bridge", 2);
    p.skip_restore();
    assert_eq!(p.room(), 2);
    p.record(Change::insert(&rule(1))).unwrap();
    p.record(Change::insert(&rule(2))).unwrap();
    assert_eq!(p.room(), 0);
    assert_eq!(p.record(Change::insert(&rule(3))), Err(JournalFull));
    assert!(p.journal().is_full());
    assert!(f.step(&mut p, 0).is_some());
    assert!(p.record(Change::insert(&rule(3))).is_ok());
}

#[test]
fn pending_for_and_status_without_a_clock() {
    let mut f = FakeIrmin::default();
    let mut p = running(&mut f);
    let a = p.record(Change::insert(&rule(1))).unwrap();
    let b = p.record(Change::insert(&rule(2))).unwrap();
    let mut r1 = rule(1);
    r1.expires_unix = Some(5);
    let c = p.record(Change::update(&rule(1), &r1)).unwrap();
    assert_eq!(p.pending_for(1), Some(c));
    assert_eq!(p.pending_for(2), Some(b));
    assert_eq!(p.pending_for(3), None);
    f.script.push_back(Script::Down);
    assert!(matches!(f.step(&mut p, 1_000 * MS), Some(Event::Retrying { in_ms: 500, .. })));
    // status() is as of the last time the persister was given.
    assert_eq!(p.status().retry_in_ms, Some(500));
    assert_eq!(p.poll(1_200 * MS), None);
    assert_eq!(p.status().retry_in_ms, Some(300));
    assert_eq!(p.status(), p.status_at(1_200 * MS));
    assert!(matches!(f.step(&mut p, 1_500 * MS), Some(Event::Committed { seq, .. }) if seq == a));
    assert_eq!(p.pending_for(1), Some(c));
    while f.step(&mut p, 1_500 * MS).is_some() {}
    assert_eq!(p.pending_for(1), None);
    assert_eq!(p.status().state, "ok");
}

#[test]
fn unexpected_calls_are_ignored() {
    let mut f = FakeIrmin::default();
    let mut p = running(&mut f);
    assert_eq!(p.on_reply(0, 200, b"{}"), Event::Nothing);
    assert_eq!(p.on_transport_error(0, "x"), Event::Nothing);
    assert_eq!(p.status_at(0).failures, 0);
    assert_eq!(Event::Nothing.to_string(), "reply with no request in flight (ignored)");
}

#[test]
fn status_json() {
    let mut f = FakeIrmin::default();
    let mut p = running(&mut f);
    let st = serde_json::to_value(p.status_at(0)).unwrap();
    assert_eq!(
        st,
        json!({"state": "ok", "backlog": 0, "capacity": 16, "committed": 0, "failures": 0,
               "conflicts": 0, "last_error": null, "retry_in_ms": null})
    );
    p.record(Change::insert(&rule(1))).unwrap();
    f.script.push_back(Script::Reply(500, "a \"quoted\"\nline"));
    f.step(&mut p, 0);
    let st = serde_json::to_value(p.status_at(100 * MS)).unwrap();
    assert_eq!(
        st,
        json!({"state": "retrying", "backlog": 1, "capacity": 16, "committed": 0, "failures": 1,
               "conflicts": 0, "last_error": "write rule 1: HTTP 500: a \"quoted\" line",
               "retry_in_ms": 400})
    );
    // Also through serde-json-core, as the API writes it.
    let mut buf = [0u8; 512];
    let n = serde_json_core::to_slice(&p.status_at(100 * MS), &mut buf).unwrap();
    let back: Value = serde_json::from_slice(&buf[..n]).unwrap();
    assert_eq!(back, st);
    // In flight while retrying: 0.
    let _ = p.poll(500 * MS).unwrap();
    assert_eq!(p.status_at(500 * MS).retry_in_ms, Some(0));
}

#[test]
fn long_author_and_odd_prefix() {
    let mut e = ep();
    e.prefix = heapless::String::try_from("a/b").unwrap();
    let mut f = FakeIrmin::with(&[("a/b/rules/1", &doc(1)), ("bridge/rules/2", &doc(2))]);
    let long = "n".repeat(100);
    let mut p = Persister::new(&e, &long, 4);
    assert!(matches!(f.step(&mut p, 0), Some(Event::Restored { count: 1, invalid: 0 })));
    assert_eq!(p.take_restored().unwrap().rules, [rule(1)]);
    p.record(Change::remove(&rule(1))).unwrap();
    assert!(matches!(f.step(&mut p, 0), Some(Event::Committed { .. })));
    assert_eq!(f.commits[0].0.len(), AUTHOR_LEN);
    assert_eq!(f.seen.last().unwrap().vars["p"], "a/b/rules/1");
    assert!(!f.store.contains_key("a/b/rules/1"));
}

#[test]
fn random_replies_never_panic() {
    // Arbitrary statuses and bodies at every step keep the machine
    // consistent: one exchange at a time, nothing dropped.
    let bodies: &[&str] = &[
        "",
        "null",
        "{}",
        r#"{"data":null}"#,
        r#"{"errors":[{"message":"x"}]}"#,
        r#"{"data":{"test_and_set":null},"errors":[{"message":"t"}]}"#,
        r#"{"data":{"test_and_set":{"hash":"h"}}}"#,
        r#"{"data":{"set":{"hash":"h"}}}"#,
        r#"{"data":{"branch":{"tree":{"get":null}}}}"#,
        r#"{"data":{"branch":{"tree":{"get":"zz"}}}}"#,
        r#"{"data":{"branch":{"tree":{"get_tree":null}}}}"#,
        r#"{"data":{"branch":{"tree":{"get_tree":{"list_contents_recursively":[{"path":"/bridge/rules/1","value":"{}"}]}}}}}"#,
    ];
    let mut x = 0x1234_5678u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut p = Persister::new(&ep(), "pih-bridge", 8);
    let mut now = 0u64;
    let mut recorded = 0u64;
    for _ in 0..5000 {
        now += next() % (40_000 * MS);
        if next() % 3 == 0 && p.record(Change::insert(&rule(1 + (next() % 9) as u32))).is_ok() {
            recorded += 1;
        }
        if let Some(ex) = p.poll(now) {
            assert!(!ex.request.is_empty());
            if next() % 5 == 0 {
                p.on_transport_error(now, "x");
            } else {
                let status = [200u16, 200, 200, 400, 500][(next() % 5) as usize];
                let body = bodies[(next() % bodies.len() as u64) as usize];
                p.on_reply(now, status, body.as_bytes());
            }
        }
        let st = p.status_at(now);
        assert_eq!(st.committed + st.backlog, recorded);
        assert!(st.backlog <= 8);
    }
}

#[test]
fn restore_listing_limit_follows_the_rule_capacity() {
    assert_eq!(list_max_body(0), LIST_MAX_BODY);
    assert!(list_max_body(65_536) >= 65_536 * 300);
    let mut p = Persister::new(&ep(), "pih-bridge", 16);
    assert_eq!(p.poll(0).unwrap().max_body, LIST_MAX_BODY);
    let mut p2 = Persister::new(&ep(), "pih-bridge", 16);
    p2.set_list_max_body(list_max_body(65_536));
    let x = p2.poll(0).unwrap();
    assert_eq!(x.kind, ExchangeKind::Restore);
    assert_eq!(x.max_body, list_max_body(65_536));
    // A real 65,536-rule listing fits: the longest document, escaped, plus its path.
    let mut r = rule(1);
    r.id = u32::MAX - 1;
    r.ext_port = 65535;
    r.spec.int_port = 65535;
    r.spec.proto = Proto::Udp;
    r.spec.client = Ipv4Addr::new(255, 255, 255, 254);
    r.spec.int_addr = Ipv4Addr::new(255, 255, 255, 254);
    r.expires_unix = Some(u64::MAX);
    let entry = json!({"path": "/bridge/rules/4294967294", "value": encode(&r).as_str()}).to_string();
    assert!(entry.len() + 1 <= LIST_BYTES_PER_RULE, "{} bytes: {entry}", entry.len());
    drop(p);
}
