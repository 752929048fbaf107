//! End to end: the bridge's real sans-io [`Persister`] driven over real TCP
//! against the real double binary, with a simulated monotonic clock (backoff
//! waits are skipped by jumping the clock to the persister's next due time,
//! never by sleeping).
//!
//! Each test owns its store root and its server(s); the assertions look at
//! the persister's events and status and at the store's files and commit log.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use pih_control::config::IrminEndpoint;
use pih_control::irmin::{
    doc, Change, Event, Exchange, ExchangeKind, Persister, Progress, ResponseReader,
};
use pih_control::rules::{Proto, Rule, RuleSpec};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_irmin-graphql-double");
const AUTHOR: &str = "pih-bridge-e2e";
const BRANCH: &str = "main";
const PREFIX: &str = "bridge";
/// Simulated time an exchange takes (the clock only moves when we say so).
const EXCHANGE_NS: u64 = 1_000_000;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

// ---------------------------------------------------------------------------
// The double
// ---------------------------------------------------------------------------

/// A store root, removed at the end.
struct Root(PathBuf);

impl Root {
    fn new(tag: &str) -> Root {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let p = std::env::temp_dir().join(format!(
            "irmin-graphql-double-persister-{}-{tag}-{n}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&p);
        Root(p)
    }

    fn rule_file(&self, id: &str) -> PathBuf {
        self.0
            .join(BRANCH)
            .join("tree")
            .join(PREFIX)
            .join("rules")
            .join(id)
    }

    fn read_rule(&self, id: u32) -> Option<String> {
        fs::read_to_string(self.rule_file(&id.to_string())).ok()
    }

    /// Writes a value into the tree by hand (another writer).
    fn write_by_hand(&self, id: &str, value: &str) {
        let p = self.rule_file(id);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, value).unwrap();
    }

    fn commits(&self) -> Vec<Value> {
        fs::read_to_string(self.0.join(BRANCH).join("commits"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("commit line {l:?}: {e}")))
            .collect()
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

struct Double {
    child: Child,
    port: u16,
}

impl Double {
    /// Starts the binary on `port` (0: any) over `root`. Rebinding a port
    /// that was just released is retried for a little while.
    fn start(root: &Root, port: u16, read_only: bool) -> Double {
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let mut cmd = Command::new(BIN);
            cmd.args(["--listen", &format!("127.0.0.1:{port}"), "--root"])
                .arg(&root.0)
                .stdout(Stdio::piped())
                .stderr(Stdio::null());
            if read_only {
                cmd.arg("--read-only");
            }
            let mut child = cmd.spawn().expect("spawn irmin-graphql-double");
            let mut line = String::new();
            let _ = BufReader::new(child.stdout.take().unwrap()).read_line(&mut line);
            if let Some(addr) = line.trim().strip_prefix("listening on ") {
                let port = addr.rsplit(':').next().unwrap().parse().unwrap();
                return Double { child, port };
            }
            // Bind failed (the child exits): try again shortly.
            let _ = child.kill();
            let _ = child.wait();
            assert!(
                Instant::now() < deadline,
                "could not start the double on port {port}: {line:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(mut self) -> u16 {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.port
    }
}

impl Drop for Double {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------
// The kernel's side: one exchange per TCP connection, simulated clock
// ---------------------------------------------------------------------------

fn endpoint(port: u16) -> IrminEndpoint {
    let mut branch = heapless::String::new();
    branch.push_str(BRANCH).unwrap();
    let mut prefix = heapless::String::new();
    prefix.push_str(PREFIX).unwrap();
    IrminEndpoint {
        addr: SocketAddrV4::new(Ipv4Addr::LOCALHOST, port),
        branch,
        prefix,
    }
}

/// Connect, send, read until the reader completes or EOF.
fn transport(
    addr: SocketAddr,
    ex: &Exchange,
    read_timeout: Duration,
) -> Result<(u16, Vec<u8>), String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(read_timeout)).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(&ex.request).map_err(|e| format!("send: {e}"))?;
    let mut reader = ResponseReader::new(ex.max_body);
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).map_err(|e| format!("receive: {e}"))?;
        let progress = if n == 0 {
            reader.finish_eof()
        } else {
            reader.feed(&buf[..n])
        }
        .map_err(|e| e.to_string())?;
        if progress == Progress::Complete {
            break;
        }
    }
    let status = reader.status().ok_or("no status")?;
    Ok((status, reader.take_body()))
}

struct Kernel {
    p: Persister,
    now: u64,
    port: u16,
    /// Every (exchange kind, event) so far.
    log: Vec<(ExchangeKind, Event)>,
    /// How long to wait for the reply (the kernel's exchange timeout).
    read_timeout: Duration,
}

impl Kernel {
    fn new(port: u16) -> Kernel {
        Kernel {
            p: Persister::new(&endpoint(port), AUTHOR, 16),
            // Not zero: a monotonic clock that has been running a while.
            now: 5_000_000_000,
            port,
            log: Vec::new(),
            read_timeout: Duration::from_secs(5),
        }
    }

    /// Runs one exchange if one is pending, first jumping the clock to
    /// when it is due (skipping any backoff wait). `None`: nothing pending.
    fn step(&mut self) -> Option<(ExchangeKind, Event)> {
        let due = self.p.next_poll_ns()?;
        self.now = self.now.max(due);
        let ex = self
            .p
            .poll(self.now)
            .unwrap_or_else(|| panic!("next_poll_ns {due} but poll({}) gave nothing", self.now));
        assert!(self.p.is_busy());
        assert_eq!(
            self.p.next_poll_ns(),
            None,
            "nothing is due while in flight"
        );
        assert!(self.p.poll(self.now).is_none(), "one exchange at a time");
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let result = transport(addr, &ex, self.read_timeout);
        self.now += EXCHANGE_NS;
        let ev = match result {
            Ok((status, body)) => self.p.on_reply(self.now, status, &body),
            Err(why) => self.p.on_transport_error(self.now, &why),
        };
        assert!(!self.p.is_busy());
        self.log.push((ex.kind, ev.clone()));
        Some((ex.kind, ev))
    }

    /// Runs the next exchange, which must be a `kind` that ends in a
    /// retry: the retry's reason and delay.
    fn step_retry(&mut self, kind: ExchangeKind) -> (String, u64) {
        let (got, ev) = self.step().unwrap();
        assert_eq!(got, kind);
        let Event::Retrying { reason, in_ms } = &ev else {
            panic!("expected a retry: {ev:?}")
        };
        (reason.to_string(), *in_ms)
    }

    /// Steps until nothing is pending; the events seen.
    fn drain(&mut self) -> Vec<(ExchangeKind, Event)> {
        let mut out = Vec::new();
        for _ in 0..64 {
            match self.step() {
                Some(e) => out.push(e),
                None => return out,
            }
        }
        panic!("did not drain: {out:?} status {:?}", self.p.status());
    }

    /// The restore exchange: the listing.
    fn restore(&mut self) -> pih_control::irmin::Restored {
        assert!(self.p.is_restoring());
        assert_eq!(self.p.status().state, "restoring");
        let (kind, ev) = self.step().expect("restore exchange");
        assert_eq!(kind, ExchangeKind::Restore);
        assert!(matches!(ev, Event::Restored { .. }), "{ev:?}");
        assert!(!self.p.is_restoring());
        let r = self.p.take_restored().expect("restored");
        assert_eq!(
            ev,
            Event::Restored {
                count: r.rules.len(),
                invalid: r.invalid.len()
            }
        );
        assert!(self.p.take_restored().is_none(), "taken once");
        r
    }

    fn record(&mut self, c: Change) -> u64 {
        self.p.record(c).expect("journal room")
    }
}

// ---------------------------------------------------------------------------
// Rules and checks
// ---------------------------------------------------------------------------

fn rule(id: u32, ext_port: u16, expires_unix: Option<u64>) -> Rule {
    Rule {
        id,
        spec: RuleSpec {
            client: Ipv4Addr::new(203, 0, 113, id as u8),
            int_addr: Ipv4Addr::new(192, 168, 252, 10),
            int_port: 22,
            proto: if id.is_multiple_of(2) {
                Proto::Udp
            } else {
                Proto::Tcp
            },
        },
        ext_port,
        // The monotonic deadline is not persisted; the Unix one is.
        expires_ns: expires_unix.map(|_| 123_000_000_000),
        expires_unix,
    }
}

/// What a restore gives back for `r`.
fn as_restored(r: &Rule) -> Rule {
    Rule {
        expires_ns: None,
        ..*r
    }
}

fn committed_ids(events: &[(ExchangeKind, Event)]) -> Vec<(u32, u64)> {
    events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Committed { id, seq, .. } => Some((*id, *seq)),
            _ => None,
        })
        .collect()
}

/// The kinds of the exchanges behind `events`.
fn kinds_of(events: &[(ExchangeKind, Event)]) -> Vec<ExchangeKind> {
    events.iter().map(|(k, _)| *k).collect()
}

/// Checks commit line `c`: author, message prefix, op and path.
fn check_commit(c: &Value, message_prefix: &str, op: &str, id: u32) {
    assert_eq!(c["author"], AUTHOR, "{c}");
    let msg = c["message"].as_str().unwrap();
    assert!(
        msg.starts_with(message_prefix),
        "message {msg:?} should start with {message_prefix:?}"
    );
    // The rest of the message is `: ...` or ` (...`, not more digits.
    let rest = &msg[message_prefix.len()..];
    assert!(
        rest.is_empty() || rest.starts_with(':') || rest.starts_with(' '),
        "{msg:?}"
    );
    assert_eq!(c["op"], op, "{c}");
    assert_eq!(
        c["path"].as_str().unwrap().trim_start_matches('/'),
        format!("{PREFIX}/rules/{id}"),
        "{c}"
    );
}

fn assert_ok_status(k: &Kernel, committed: u64, failures: u64, conflicts: u64) {
    let s = k.p.status();
    assert_eq!(s.state, "ok", "{s:?}");
    assert_eq!(s.backlog, 0, "{s:?}");
    assert_eq!(s.capacity, 16, "{s:?}");
    assert_eq!(s.committed, committed, "{s:?}");
    assert_eq!(s.failures, failures, "{s:?}");
    assert_eq!(s.conflicts, conflicts, "{s:?}");
    assert_eq!(s.retry_in_ms, None, "{s:?}");
}

// ---------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------

/// Scenarios 1 to 3, on one store: three inserts into an empty store; a
/// TTL update and a remove; a restart that restores what was written and
/// reports (and leaves alone) the corrupt entries written by hand.
#[test]
fn insert_update_remove_then_restore() {
    let root = Root::new("basic");
    let srv = Double::start(&root, 0, false);
    let mut k = Kernel::new(srv.port);

    // --- 1. empty store ---
    let restored = k.restore();
    assert!(restored.rules.is_empty(), "{restored:?}");
    assert!(restored.invalid.is_empty(), "{restored:?}");
    assert_eq!(k.p.next_poll_ns(), None, "nothing to do");
    assert_ok_status(&k, 0, 0, 0);

    let r1 = rule(1, 18401, None);
    let r2 = rule(2, 18402, Some(1_900_000_000));
    let r3 = rule(3, 18403, None);
    let seqs: Vec<u64> = [&r1, &r2, &r3]
        .iter()
        .map(|r| k.record(Change::insert(r)))
        .collect();
    assert_eq!(k.p.status().backlog, 3);
    assert!(seqs.iter().all(|s| !k.p.is_committed(*s)));
    assert_eq!(k.p.pending_for(2), Some(seqs[1]));

    let evs = k.drain();
    assert_eq!(evs.len(), 3, "one exchange per change: {evs:?}");
    assert!(evs.iter().all(|(kind, _)| *kind == ExchangeKind::Write));
    assert_eq!(
        committed_ids(&evs),
        vec![(1, seqs[0]), (2, seqs[1]), (3, seqs[2])]
    );
    for (_, e) in &evs {
        let Event::Committed { hash, .. } = e else {
            unreachable!()
        };
        assert!(hash.is_some(), "a commit has a hash: {e:?}");
    }
    assert!(seqs.iter().all(|s| k.p.is_committed(*s)));
    assert_eq!(k.p.pending_for(2), None);
    assert_ok_status(&k, 3, 0, 0);

    for r in [&r1, &r2, &r3] {
        assert_eq!(
            root.read_rule(r.id).as_deref(),
            Some(doc::encode(r).as_str())
        );
    }
    let commits = root.commits();
    assert_eq!(commits.len(), 3, "{commits:?}");
    for (c, id) in commits.iter().zip([1, 2, 3]) {
        check_commit(c, &format!("insert rule {id}"), "test_and_set", id);
    }
    // The hashes the persister got are the commits' hashes, in order.
    let got: Vec<String> = evs
        .iter()
        .map(|(_, e)| match e {
            Event::Committed { hash: Some(h), .. } => h.to_string(),
            _ => unreachable!(),
        })
        .collect();
    let logged: Vec<String> = commits
        .iter()
        .map(|c| c["hash"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(got, logged);

    // --- 2. TTL change of rule 2, removal of rule 3 ---
    let r2b = Rule {
        expires_unix: Some(1_900_003_600),
        ..r2
    };
    let s_upd = k.record(Change::update(&r2, &r2b));
    let s_rm = k.record(Change::remove(&r3));
    let evs = k.drain();
    assert_eq!(committed_ids(&evs), vec![(2, s_upd), (3, s_rm)]);
    assert_eq!(evs.len(), 2, "{evs:?}");
    assert!(k.p.is_committed(s_upd) && k.p.is_committed(s_rm));
    assert_ok_status(&k, 5, 0, 0);

    assert_eq!(
        root.read_rule(2).as_deref(),
        Some(doc::encode(&r2b).as_str())
    );
    assert_ne!(doc::encode(&r2b), doc::encode(&r2));
    assert!(root.read_rule(2).unwrap().contains("1900003600"));
    assert_eq!(root.read_rule(3), None, "removed");
    assert!(!root.rule_file("3").exists());
    assert_eq!(
        root.read_rule(1).as_deref(),
        Some(doc::encode(&r1).as_str())
    );
    let commits = root.commits();
    assert_eq!(commits.len(), 5, "{commits:?}");
    check_commit(&commits[3], "update rule 2", "test_and_set", 2);
    assert!(
        commits[3]["message"]
            .as_str()
            .unwrap()
            .contains("1900003600"),
        "{}",
        commits[3]
    );
    check_commit(&commits[4], "remove rule 3", "test_and_set", 3);
    // The log is a chain.
    for w in commits.windows(2) {
        assert_eq!(w[1]["parents"][0], w[0]["hash"], "{w:?}");
    }

    // --- 3. restart: a fresh persister on the same store ---
    root.write_by_hand("7", "{not json");
    let wrong_id = doc::encode(&rule(9, 18409, None));
    root.write_by_hand("8", &wrong_id);
    let named = doc::encode(&rule(5, 18405, None));
    root.write_by_hand("abc", &named);
    drop(k);
    srv.stop();
    let srv = Double::start(&root, 0, false);

    let mut k2 = Kernel::new(srv.port);
    let restored = k2.restore();
    assert_eq!(restored.rules, vec![as_restored(&r1), as_restored(&r2b)]);
    assert_eq!(restored.rules[1].expires_unix, Some(1_900_003_600));
    assert_eq!(restored.rules[0].ext_port, 18401);
    assert_eq!(restored.rules[1].ext_port, 18402);
    let mut bad: Vec<(String, String)> = restored
        .invalid
        .iter()
        .map(|(p, why)| (p.trim_start_matches('/').to_string(), why.clone()))
        .collect();
    bad.sort();
    let bad_paths: Vec<&str> = bad.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        bad_paths,
        vec!["bridge/rules/7", "bridge/rules/8", "bridge/rules/abc"],
        "{bad:?}"
    );
    assert!(bad[1].1.contains("does not match"), "{bad:?}");
    assert!(bad[2].1.contains("not a rule path"), "{bad:?}");
    assert!(bad.iter().all(|(_, why)| !why.is_empty()));
    // Nothing touched: the files as written, no new commit, nothing queued.
    assert_eq!(
        fs::read_to_string(root.rule_file("7")).unwrap(),
        "{not json"
    );
    assert_eq!(
        fs::read_to_string(root.rule_file("8")).unwrap(),
        wrong_id.as_str()
    );
    assert_eq!(
        fs::read_to_string(root.rule_file("abc")).unwrap(),
        named.as_str()
    );
    assert_eq!(root.commits().len(), 5);
    assert_eq!(k2.p.next_poll_ns(), None);
    assert_ok_status(&k2, 0, 0, 0);
}

/// Scenario 4: The store goes away with changes pending, comes back on the same
/// port: the backlog drains in order.
#[test]
fn outage_then_drain_in_order() {
    let root = Root::new("outage");
    let srv = Double::start(&root, 0, false);
    let mut k = Kernel::new(srv.port);
    assert!(k.restore().rules.is_empty());
    let r1 = rule(1, 18401, Some(1_900_000_000));
    let s0 = k.record(Change::insert(&r1));
    assert_eq!(committed_ids(&k.drain()), vec![(1, s0)]);
    assert_eq!(root.commits().len(), 1);

    let port = srv.stop();

    let r10 = rule(10, 18410, None);
    let r11 = rule(11, 18411, Some(1_900_000_100));
    let seqs = [
        k.record(Change::insert(&r10)),
        k.record(Change::insert(&r11)),
        k.record(Change::remove(&r1)),
    ];
    let mut delays = Vec::new();
    let mut last_due = 0;
    for attempt in 1..=4u64 {
        let before = k.now;
        let (reason, in_ms) = k.step_retry(ExchangeKind::Write);
        assert!(reason.contains("write rule 10"), "{reason}");
        assert!(reason.contains("connect"), "{reason}");
        delays.push(in_ms);
        let s = k.p.status();
        assert_eq!(s.state, "retrying", "{s:?}");
        assert_eq!(s.backlog, 3, "{s:?}");
        assert_eq!(s.failures, attempt, "{s:?}");
        assert_eq!(s.committed, 1, "{s:?}");
        assert_eq!(s.last_error.as_deref(), Some(reason.as_str()), "{s:?}");
        assert_eq!(s.retry_in_ms, Some(in_ms), "{s:?}");
        let due = k.p.next_poll_ns().unwrap();
        assert_eq!(due, k.now + in_ms * 1_000_000);
        assert!(due > last_due && k.now >= before);
        last_due = due;
        // Not due before its time.
        assert!(k.p.poll(due - 1).is_none());
        assert!(seqs.iter().all(|s| !k.p.is_committed(*s)));
    }
    assert_eq!(delays, vec![500, 1000, 2000, 4000], "exponential backoff");

    // A server that accepts but never answers: the exchange times out.
    {
        let hung = std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind the port again");
        k.read_timeout = Duration::from_millis(200);
        let (reason, in_ms) = k.step_retry(ExchangeKind::Write);
        assert!(reason.contains("write rule 10: receive"), "{reason}");
        assert_eq!(in_ms, 8000);
        let s = k.p.status();
        assert_eq!(
            (s.state, s.backlog, s.failures),
            ("retrying", 3, 5),
            "{s:?}"
        );
        k.read_timeout = Duration::from_secs(5);
        drop(hung);
    }
    assert_eq!(root.commits().len(), 1, "nothing written while down");
    assert!(root.read_rule(1).is_some());

    // Back, same port, same root.
    let srv = Double::start(&root, port, false);
    assert_eq!(srv.port, port);
    let before = k.now;
    let evs = k.drain();
    assert!(
        k.now >= before + 4000 * 1_000_000,
        "the clock jumped the wait"
    );
    assert_eq!(
        committed_ids(&evs),
        vec![(10, seqs[0]), (11, seqs[1]), (1, seqs[2])]
    );
    assert_eq!(evs.len(), 3, "{evs:?}");
    assert_ok_status(&k, 4, 5, 0);
    assert!(k.p.status().last_error.is_some(), "the last error is kept");

    let commits = root.commits();
    assert_eq!(commits.len(), 4, "{commits:?}");
    check_commit(&commits[1], "insert rule 10", "test_and_set", 10);
    check_commit(&commits[2], "insert rule 11", "test_and_set", 11);
    check_commit(&commits[3], "remove rule 1", "test_and_set", 1);
    assert_eq!(
        root.read_rule(10).as_deref(),
        Some(doc::encode(&r10).as_str())
    );
    assert_eq!(
        root.read_rule(11).as_deref(),
        Some(doc::encode(&r11).as_str())
    );
    assert_eq!(root.read_rule(1), None);
}

/// Scenario 5: Another writer: a foreign document where an insert goes is
/// overwritten; a foreign document where a remove goes is left; a remove
/// of what is already gone is done.
#[test]
fn conflicts_with_another_writer() {
    let root = Root::new("conflict");
    let srv = Double::start(&root, 0, false);
    let mut k = Kernel::new(srv.port);
    assert!(k.restore().rules.is_empty());

    // Insert over a foreign document.
    let r20 = rule(20, 18420, None);
    let foreign = doc::encode(&rule(20, 29999, Some(1)));
    root.write_by_hand("20", &foreign);
    let s = k.record(Change::insert(&r20));
    let evs = k.drain();
    let kinds = kinds_of(&evs);
    assert_eq!(
        kinds,
        vec![
            ExchangeKind::Write,
            ExchangeKind::Verify,
            ExchangeKind::Overwrite
        ],
        "{evs:?}"
    );
    assert!(
        matches!(&evs[0].1, Event::Verifying { id: 20, seq, .. } if *seq == s),
        "{evs:?}"
    );
    assert!(
        matches!(&evs[1].1, Event::Conflict { id: 20, seq, what } if *seq == s && what.contains("overwriting")),
        "{evs:?}"
    );
    assert!(
        matches!(&evs[2].1, Event::Committed { id: 20, seq, hash: Some(_) } if *seq == s),
        "{evs:?}"
    );
    assert!(k.p.is_committed(s));
    assert_eq!(
        root.read_rule(20).as_deref(),
        Some(doc::encode(&r20).as_str())
    );
    let commits = root.commits();
    assert_eq!(commits.len(), 1, "{commits:?}");
    check_commit(
        &commits[0],
        "insert rule 20 (overwriting a conflicting document)",
        "set",
        20,
    );
    assert_ok_status(&k, 1, 0, 1);

    // Remove of a document changed by hand: theirs stays.
    let r21 = rule(21, 18421, None);
    let s_ins = k.record(Change::insert(&r21));
    assert_eq!(committed_ids(&k.drain()), vec![(21, s_ins)]);
    let theirs = doc::encode(&Rule {
        ext_port: 18500,
        ..r21
    });
    root.write_by_hand("21", &theirs);
    let s_rm = k.record(Change::remove(&r21));
    let evs = k.drain();
    let kinds = kinds_of(&evs);
    assert_eq!(
        kinds,
        vec![ExchangeKind::Write, ExchangeKind::Verify],
        "{evs:?}"
    );
    assert!(
        matches!(&evs[0].1, Event::Verifying { id: 21, .. }),
        "{evs:?}"
    );
    assert!(
        matches!(&evs[1].1, Event::Conflict { id: 21, seq, what } if *seq == s_rm && what.contains("left in place")),
        "{evs:?}"
    );
    assert!(k.p.is_committed(s_rm), "settled as a conflict");
    assert_eq!(root.read_rule(21).as_deref(), Some(theirs.as_str()));
    assert_eq!(root.commits().len(), 2, "no commit for the settled remove");
    let s = k.p.status();
    assert_eq!(
        (s.state, s.backlog, s.conflicts, s.failures),
        ("ok", 0, 2, 0),
        "{s:?}"
    );

    // An update whose reply was "lost": the store already holds the new
    // document, so the read settles it without a commit or a conflict.
    let r23 = rule(23, 18423, None);
    let s_ins = k.record(Change::insert(&r23));
    assert_eq!(committed_ids(&k.drain()), vec![(23, s_ins)]);
    let r23b = Rule {
        expires_unix: Some(1_900_000_500),
        ..r23
    };
    root.write_by_hand("23", &doc::encode(&r23b));
    let s_upd = k.record(Change::update(&r23, &r23b));
    let evs = k.drain();
    assert_eq!(evs.len(), 2, "{evs:?}");
    assert!(
        matches!(&evs[0].1, Event::Verifying { id: 23, .. }),
        "{evs:?}"
    );
    assert_eq!(
        evs[1].1,
        Event::Committed {
            id: 23,
            seq: s_upd,
            hash: None
        }
    );
    assert_eq!(root.commits().len(), 3);
    assert_eq!(
        root.read_rule(23).as_deref(),
        Some(doc::encode(&r23b).as_str())
    );

    // Remove of a document already gone: done, after a read that finds
    // the path absent.
    let r22 = rule(22, 18422, None);
    let s_ins = k.record(Change::insert(&r22));
    assert_eq!(committed_ids(&k.drain()), vec![(22, s_ins)]);
    fs::remove_file(root.rule_file("22")).unwrap();
    let s_rm = k.record(Change::remove(&r22));
    let evs = k.drain();
    let kinds = kinds_of(&evs);
    assert_eq!(
        kinds,
        vec![ExchangeKind::Write, ExchangeKind::Verify],
        "{evs:?}"
    );
    assert!(
        matches!(&evs[0].1, Event::Verifying { id: 22, .. }),
        "{evs:?}"
    );
    // Committed without a hash: the verify read saw the path absent (= new).
    assert_eq!(
        evs[1].1,
        Event::Committed {
            id: 22,
            seq: s_rm,
            hash: None
        }
    );
    assert!(k.p.is_committed(s_rm));
    assert_eq!(root.read_rule(22), None);
    assert_eq!(root.commits().len(), 4);
    let s = k.p.status();
    assert_eq!(
        (s.state, s.backlog, s.conflicts, s.failures, s.committed),
        ("ok", 0, 2, 0, 7),
        "{s:?}"
    );
}

/// Scenario 6: A store that answers every write with a resolver error: retried
/// with backoff, never dropped; a writable store on the same root drains.
#[test]
fn read_only_store_then_writable() {
    let root = Root::new("readonly");
    let srv = Double::start(&root, 0, true);
    let mut k = Kernel::new(srv.port);
    assert!(k.restore().rules.is_empty(), "reads work read-only");

    let r1 = rule(1, 18401, None);
    let r2 = rule(2, 18402, Some(1_900_000_000));
    let seqs = [k.record(Change::insert(&r1)), k.record(Change::insert(&r2))];

    let mut delays = Vec::new();
    for round in 1..=3u64 {
        let (kind, ev) = k.step().unwrap();
        assert_eq!(kind, ExchangeKind::Write);
        match &ev {
            Event::Verifying { id: 1, seq, reason } if *seq == seqs[0] => {
                assert!(reason.contains("read-only"), "{reason}")
            }
            _ => panic!("expected verifying: {ev:?}"),
        }
        let (reason, in_ms) = k.step_retry(ExchangeKind::Verify);
        assert!(reason.contains("rule 1"), "{reason}");
        assert!(reason.contains("read-only"), "{reason}");
        delays.push(in_ms);
        let s = k.p.status();
        assert_eq!(s.state, "retrying", "{s:?}");
        assert_eq!(s.backlog, 2, "never dropped: {s:?}");
        assert_eq!(s.failures, round, "{s:?}");
        assert_eq!(s.committed, 0, "{s:?}");
        assert_eq!(s.conflicts, 0, "{s:?}");
        assert_eq!(s.last_error.as_deref(), Some(reason.as_str()));
        assert!(!k.p.is_committed(seqs[0]) && !k.p.is_committed(seqs[1]));
    }
    assert_eq!(delays, vec![500, 1000, 2000]);
    assert!(root.commits().is_empty());
    assert_eq!(root.read_rule(1), None);

    let port = srv.stop();
    let srv = Double::start(&root, port, false);
    assert_eq!(srv.port, port);
    let evs = k.drain();
    assert_eq!(
        committed_ids(&evs),
        vec![(1, seqs[0]), (2, seqs[1])],
        "{evs:?}"
    );
    assert_ok_status(&k, 2, 3, 0);
    let commits = root.commits();
    assert_eq!(commits.len(), 2);
    check_commit(&commits[0], "insert rule 1", "test_and_set", 1);
    check_commit(&commits[1], "insert rule 2", "test_and_set", 2);
    assert_eq!(
        root.read_rule(1).as_deref(),
        Some(doc::encode(&r1).as_str())
    );
    assert_eq!(
        root.read_rule(2).as_deref(),
        Some(doc::encode(&r2).as_str())
    );
}
