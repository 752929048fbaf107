//! Cost of the Irmin persistence logic (`cargo bench -p pih-control`).
//!
//! - **restore**: the reply to the restore listing for 4,096 rule
//!   documents, built the way Irmin (and the GraphQL double) answers it:
//!   `HTTP/1.1 200` with `Content-Length`, body
//!   `{"data":{"branch":{"tree":{"get_tree":{"list_contents_recursively":
//!   [{"path":"/bridge/rules/1","value":"<document as a JSON string>"},…]}}}}}`,
//!   documents from `doc::encode`, in Irmin's order for a flat directory
//!   (names sorted as strings: 1, 10, 100, …). Half the rules have a TTL.
//!   One run is a whole restore as the kernel does it: a fresh
//!   `Persister`, `poll` (the list request), a `ResponseReader` fed the
//!   reply in 1,460-byte pieces (one TCP segment each), `on_reply` (JSON
//!   parsing, document decoding, sorting by id) and `take_restored`.
//!   Reported per restore and per rule.
//! - **reinstall**: the 4,096 restored rules through `Api::restore_all` into an
//!   empty API (4,096 rule slots) over `api::mock::MockGateway` (the real
//!   data plane is `pih-nat`'s table; the mock's port and rule look-ups are
//!   linear; the API's own duplicate checks use ordered sets). Only the
//!   `Api::restore_all` calls are timed, not building the API.
//! - **journal**: one change as the API records it (the kernel's
//!   `ChangeLog::record`: `Change::insert`/`update`/`remove`, which encode
//!   the documents, then `Persister::record`), `poll` (the complete HTTP
//!   `test_and_set` request) and `on_reply` with a canned committed reply
//!   (`{"data":{"test_and_set":{"hash":"<64 hex>"}}}`). The changes cycle
//!   insert, update (new TTL), remove over distinct rules, so the figures
//!   are an average over the three kinds; request sizes are also given per
//!   kind. Heap allocations per change are counted (reported, not
//!   asserted: this is not the packet path).
//! - **memory**: the bytes a journal entry takes (`(u64, Change)`, both
//!   documents inline) and a 1,024-entry journal (the kernel's
//!   `JOURNAL_CAPACITY`), measured on the heap: pushing changes must not
//!   allocate beyond the ring allocated up front.
//!
//! Besides criterion's report, a summary with these figures is printed
//! first (best of a few runs: the machine may be shared).

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::mem::size_of;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion, Throughput};
use pih_control::api::mock::MockGateway;
use pih_control::api::{Api, ApiConfig, Gateway, NoPersistence, Now, RuleError, StatsSnapshot};
use pih_control::config::IrminEndpoint;
use pih_control::irmin::{
    encode, Change, ChangeKind, Event, Journal, Persister, Progress, ResponseReader,
};
use pih_control::rules::{Proto, Rule, RuleSpec, NS_PER_SEC};

/// Counts heap allocations and the bytes allocated and live.
struct Counting;
static ALLOCS: AtomicU64 = AtomicU64::new(0);
static LIVE: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        LIVE.fetch_add(l.size() as u64, Ordering::Relaxed);
        // SAFETY: forwarded contract.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as u64, Ordering::Relaxed);
        // SAFETY: forwarded contract.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        LIVE.fetch_add(new as u64, Ordering::Relaxed);
        LIVE.fetch_sub(l.size() as u64, Ordering::Relaxed);
        // SAFETY: forwarded contract.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Rules in the store (the mock gateway's and a large bridge's capacity).
const RULES: usize = 4096;
/// The kernel's journal capacity (`kernel/src/api.rs`).
const JOURNAL: usize = 1024;
/// Bytes per TCP segment fed to the reader.
const SEGMENT: usize = 1460;
/// The wall clock at "boot" (every TTL is in the future).
const UNIX_NOW: u64 = 1_800_000_000;
const AUTHOR: &str = "pih-bridge";

fn endpoint() -> IrminEndpoint {
    IrminEndpoint {
        addr: SocketAddrV4::new(Ipv4Addr::new(10, 0, 1, 1), 8081),
        branch: heapless::String::try_from("main").unwrap(),
        prefix: heapless::String::try_from("bridge").unwrap(),
    }
}

/// Rule `i` (0-based) of a varied, consistent set: distinct ids, clients
/// and external ports; internal hosts inside the mock's 192.168.252.0/24.
fn rule(i: usize) -> Rule {
    const PORTS: [u16; 5] = [22, 80, 443, 3389, 8080];
    Rule {
        id: i as u32 + 1,
        spec: RuleSpec {
            client: Ipv4Addr::new(198, 18, (i >> 8) as u8, i as u8),
            int_addr: Ipv4Addr::new(192, 168, 252, 2 + (i % 250) as u8),
            int_port: PORTS[i % PORTS.len()],
            proto: if i % 4 == 3 { Proto::Udp } else { Proto::Tcp },
        },
        ext_port: 20_000 + i as u16,
        expires_ns: None,
        expires_unix: i.is_multiple_of(2).then_some(UNIX_NOW + 3600 + i as u64),
    }
}

/// The complete HTTP reply to the restore listing of `n` rules.
fn list_reply(n: usize) -> Vec<u8> {
    let mut ids: Vec<usize> = (1..=n).collect();
    // A flat directory comes back in name order.
    ids.sort_by_key(|id| id.to_string());
    let mut body =
        String::from(r#"{"data":{"branch":{"tree":{"get_tree":{"list_contents_recursively":["#);
    for (k, id) in ids.iter().enumerate() {
        if k > 0 {
            body.push(',');
        }
        let doc = encode(&rule(id - 1));
        body.push_str(r#"{"path":"/bridge/rules/"#);
        body.push_str(&id.to_string());
        body.push_str(r#"","value":"#);
        body.push_str(&serde_json::to_string(doc.as_str()).unwrap());
        body.push('}');
    }
    body.push_str("]}}}}}");
    let mut wire = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    wire.extend_from_slice(body.as_bytes());
    wire
}

/// A committed `test_and_set` reply body (Irmin's shape).
const COMMITTED: &[u8] = br#"{"data":{"test_and_set":{"hash":"4f0e7a9c3b2d1e8f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f"}}}"#;

/// One whole restore: a new persister, its list request, the reply read
/// in segments, parsed and taken. Returns the rules.
#[inline(never)]
fn restore(ep: &IrminEndpoint, wire: &[u8]) -> Vec<Rule> {
    let mut p = Persister::new(ep, AUTHOR, JOURNAL);
    let ex = p.poll(0).expect("the list request");
    black_box(&ex.request);
    let mut reader = ResponseReader::new(ex.max_body);
    let mut done = false;
    for piece in wire.chunks(SEGMENT) {
        if reader.feed(piece).expect("a valid reply") == Progress::Complete {
            done = true;
            break;
        }
    }
    assert!(done, "reply complete");
    let ev = p.on_reply(0, reader.status().unwrap(), reader.body());
    assert!(matches!(ev, Event::Restored { invalid: 0, .. }), "{ev}");
    p.take_restored().expect("restored").rules
}

fn now() -> Now {
    Now {
        mono_ns: 5 * NS_PER_SEC,
        unix_s: Some(UNIX_NOW),
    }
}

/// A gateway that accepts every rule at once: what `Api::restore_all` costs
/// without the mock's linear look-ups.
struct Accepting;

impl Gateway for Accepting {
    fn insert_rule(&mut self, _: u64, _: &RuleSpec, port: Option<u16>) -> Result<u16, RuleError> {
        port.ok_or(RuleError::NoPort)
    }
    fn remove_rule(&mut self, _: u64, _: Proto, _: u16) -> Result<usize, RuleError> {
        Ok(0)
    }
    fn stats(&self, _: &mut StatsSnapshot) {}
}

/// Reinstalls `rules` into a new API over a new mock gateway; the time of
/// the `Api::restore_all` call only.
#[inline(never)]
fn reinstall(rules: &[Rule]) -> Duration {
    let mut gw = Box::new(MockGateway::new());
    let d = reinstall_into(&mut *gw, rules);
    assert_eq!(gw.installed.len(), rules.len());
    d
}

/// [`reinstall`] over any gateway.
fn reinstall_into<G: Gateway>(gw: &mut G, rules: &[Rule]) -> Duration {
    let mut storage = vec![Rule::EMPTY; RULES];
    let cfg = ApiConfig {
        external: Ipv4Addr::new(10, 0, 0, 2),
        key: None,
        auth: false,
    };
    let mut api = Box::new(Api::new(&cfg, &mut storage));
    let mut log = NoPersistence;
    let now = now();
    let t = Instant::now();
    api.restore_all(now, gw, &mut log, rules, |_, o| o.expect("reinstalled"));
    let d = t.elapsed();
    assert_eq!(api.rules().len(), rules.len());
    d
}

/// A running persister with an empty journal of the kernel's capacity.
fn running() -> Persister {
    let mut p = Persister::new(&endpoint(), AUTHOR, JOURNAL);
    p.skip_restore();
    p
}

/// Change number `k` of the insert / update / remove cycle.
fn change(k: usize) -> Change {
    let r = rule((k / 3) % RULES);
    match k % 3 {
        0 => Change::insert(&r),
        1 => {
            let mut after = r;
            after.expires_unix = Some(UNIX_NOW + 7200 + k as u64);
            Change::update(&r, &after)
        }
        _ => {
            let mut r = r;
            r.expires_unix = Some(UNIX_NOW + 7200 + k as u64 - 1);
            Change::remove(&r)
        }
    }
}

/// Records change `k`, sends it and commits it; the request's size.
#[inline(never)]
fn journal_step(p: &mut Persister, k: usize, now_ns: u64) -> usize {
    p.record(change(k)).expect("room");
    let ex = p.poll(now_ns).expect("a write");
    let n = black_box(&ex.request).len();
    let ev = p.on_reply(now_ns, 200, COMMITTED);
    debug_assert!(matches!(ev, Event::Committed { .. }), "{ev}");
    black_box(ev);
    n
}

fn benches(c: &mut Criterion) {
    let ep = endpoint();
    let wire = list_reply(RULES);
    let rules = restore(&ep, &wire);

    let mut g = c.benchmark_group("persist");
    g.sample_size(10);
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Elements(RULES as u64));
    g.bench_function(
        format!("restore {RULES} rules (read, parse, decode)"),
        |b| b.iter(|| restore(&ep, &wire)),
    );
    g.bench_function(
        format!("reinstall {RULES} rules (Api::restore_all, mock gateway)"),
        |b| b.iter_custom(|iters| (0..iters).map(|_| reinstall(&rules)).sum()),
    );
    g.throughput(Throughput::Elements(1));
    let mut p = running();
    let mut k = 0usize;
    g.bench_function("journal: record + poll + on_reply, per change", |b| {
        b.iter(|| {
            k += 1;
            journal_step(&mut p, k, 0)
        })
    });
    g.finish();
}

/// Best time of `runs` calls of `f` (each returning its own timing).
fn best(runs: usize, mut f: impl FnMut() -> Duration) -> Duration {
    (0..runs).map(|_| f()).min().unwrap()
}

fn summary(quick: bool) {
    let runs = if quick { 1 } else { 7 };
    let ep = endpoint();

    // -- restore ----------------------------------------------------------
    let wire = list_reply(RULES);
    let head = wire.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let rules = restore(&ep, &wire); // warm up
    assert_eq!(rules.len(), RULES);
    assert!(rules.iter().enumerate().all(|(i, r)| *r == rule(i)));
    let restore_runs = if quick { 1 } else { 20 };
    let a = ALLOCS.load(Ordering::Relaxed);
    let d = best(restore_runs, || {
        let t = Instant::now();
        black_box(restore(&ep, &wire));
        t.elapsed()
    });
    let allocs = (ALLOCS.load(Ordering::Relaxed) - a) / restore_runs as u64;
    println!(
        "restore: {RULES} rules, reply {} bytes ({} body, {:.0} per rule, {} segments of {SEGMENT}): \
         {:.2} ms per restore, {:.2} us per rule, {allocs} allocations ({:.1} per rule)",
        wire.len(),
        wire.len() - head,
        (wire.len() - head) as f64 / RULES as f64,
        wire.len().div_ceil(SEGMENT),
        d.as_secs_f64() * 1e3,
        d.as_secs_f64() * 1e6 / RULES as f64,
        allocs as f64 / RULES as f64,
    );
    let d = best(runs, || reinstall(&rules));
    let quarter = best(runs, || reinstall(&rules[..RULES / 4]));
    let api_only = best(runs, || reinstall_into(&mut Accepting, &rules));
    println!(
        "reinstall: {RULES} rules through Api::restore_all (mock gateway): {:.2} ms, {:.2} us per rule \
         (the first {} alone: {:.2} ms; with a gateway that accepts \
         everything: {:.2} ms)",
        d.as_secs_f64() * 1e3,
        d.as_secs_f64() * 1e6 / RULES as f64,
        RULES / 4,
        quarter.as_secs_f64() * 1e3,
        api_only.as_secs_f64() * 1e3,
    );

    // -- journal ----------------------------------------------------------
    let changes = if quick { 300 } else { 3 * RULES };
    let mut p = running();
    for k in 0..30 {
        journal_step(&mut p, k, 0); // warm up
    }
    let mut sizes = [(0usize, 0usize); 3];
    let a = ALLOCS.load(Ordering::Relaxed);
    let d = best(runs, || {
        sizes = [(0, 0); 3];
        let t = Instant::now();
        for k in 0..changes {
            let n = journal_step(&mut p, k, 0);
            let s = &mut sizes[k % 3];
            s.0 += n;
            s.1 += 1;
        }
        t.elapsed()
    });
    let allocs = (ALLOCS.load(Ordering::Relaxed) - a) / runs as u64;
    assert_eq!(p.journal().committed(), (runs * changes) as u64 + 30);
    assert!(p.journal().is_empty());
    let total: usize = sizes.iter().map(|s| s.0).sum();
    let avg = |s: (usize, usize)| s.0 / s.1;
    println!(
        "journal: {changes} changes (insert/update/remove): {:.2} us per change, \
         requests {} bytes on average (insert {}, update {}, remove {}), {:.1} allocations per change",
        d.as_secs_f64() * 1e6 / changes as f64,
        total / changes,
        avg(sizes[0]),
        avg(sizes[1]),
        avg(sizes[2]),
        allocs as f64 / changes as f64,
    );
    for (i, kind) in [ChangeKind::Insert, ChangeKind::Update, ChangeKind::Remove]
        .into_iter()
        .enumerate()
    {
        let mut p = running();
        let a = ALLOCS.load(Ordering::Relaxed);
        let reps = 100;
        for k in 0..reps {
            journal_step(&mut p, 3 * k + i, 0);
        }
        println!(
            "  {kind}: {} allocations per change",
            (ALLOCS.load(Ordering::Relaxed) - a) / reps as u64
        );
    }

    // -- memory -----------------------------------------------------------
    let before = LIVE.load(Ordering::Relaxed);
    let mut j = Journal::new(JOURNAL);
    let empty = LIVE.load(Ordering::Relaxed) - before;
    let pending: Vec<Change> = (0..JOURNAL).map(|k| change(3 * k + 1)).collect();
    let a_push = ALLOCS.load(Ordering::Relaxed);
    for c in pending {
        j.push(c).unwrap();
    }
    assert!(j.is_full());
    let push_allocs = ALLOCS.load(Ordering::Relaxed) - a_push;
    let full = LIVE.load(Ordering::Relaxed) - before;
    println!(
        "memory: a journal entry (u64, Change) takes {} bytes (Change {}, a document {}); \
         a {JOURNAL}-entry journal {} bytes on the heap empty, {} bytes full ({:.2} MiB), \
         {push_allocs} allocations to fill it; struct Journal {} bytes, Persister {} bytes",
        size_of::<(u64, Change)>(),
        size_of::<Change>(),
        size_of::<pih_control::irmin::DocBuf>(),
        empty,
        full,
        full as f64 / (1024.0 * 1024.0),
        size_of::<Journal>(),
        size_of::<Persister>(),
    );
    drop(j);
}

criterion_group!(group, benches);

fn main() {
    // `cargo bench` passes `--bench`; without it (`cargo test --benches`)
    // criterion runs each benchmark once, and the summary is short too.
    let quick = !std::env::args().any(|a| a == "--bench");
    summary(quick);
    group();
    Criterion::default().configure_from_args().final_summary();
}
