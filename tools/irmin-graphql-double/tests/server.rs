//! Starts the real binary and talks raw HTTP to it.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_irmin-graphql-double");

const TAS: &str = "mutation ($b: BranchName!, $p: Path!, $t: Value, $s: Value, $i: InfoInput) { test_and_set(branch: $b, path: $p, test: $t, set: $s, info: $i) { hash } }";
const SET: &str = "mutation ($b: BranchName!, $p: Path!, $v: Value!, $i: InfoInput) { set(branch: $b, path: $p, value: $v, info: $i) { hash } }";
const GET: &str =
    "query ($b: BranchName!, $p: Path!) { branch(name: $b) { tree { get(path: $p) } } }";
const LIST: &str = "query ($b: BranchName!, $p: Path!) { branch(name: $b) { tree { get_tree(path: $p) { list_contents_recursively { path value } } } } }";

static COUNTER: AtomicUsize = AtomicUsize::new(0);

struct Server {
    child: Child,
    port: u16,
    root: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.root);
    }
}

fn start(extra: &[&str]) -> Server {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let root = std::env::temp_dir().join(format!(
        "irmin-graphql-double-test-{}-{n}",
        std::process::id()
    ));
    let _ = fs::remove_dir_all(&root);
    let mut child = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--root"])
        .arg(&root)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn server");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("banner: {line:?}"));
    let port = addr.rsplit(':').next().unwrap().parse().unwrap();
    Server { child, port, root }
}

impl Server {
    fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    }

    /// Sends raw bytes, reads the whole answer (the server closes).
    fn raw(&self, bytes: &[u8]) -> (u16, String) {
        let mut s = self.connect();
        let _ = s.write_all(bytes);
        let _ = s.shutdown(Shutdown::Write);
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        parse_response(&String::from_utf8_lossy(&out))
    }

    fn post(&self, body: &str) -> (u16, String) {
        let req = format!(
            "POST /graphql HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        self.raw(req.as_bytes())
    }

    fn gql(&self, query: &str, vars: Value) -> (u16, Value) {
        let (status, body) = self.post(&json!({"query": query, "variables": vars}).to_string());
        let v = serde_json::from_str(&body).unwrap_or_else(|e| panic!("bad JSON {body:?}: {e}"));
        (status, v)
    }

    fn ok(&self, query: &str, vars: Value) -> Value {
        let (status, v) = self.gql(query, vars);
        assert_eq!(status, 200, "{v}");
        assert!(v.get("errors").is_none(), "{v}");
        v["data"].clone()
    }

    fn alive(&self) {
        assert_eq!(
            self.ok("{ main { name } }", json!({})),
            json!({"main": {"name": "main"}})
        );
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }
}

fn parse_response(text: &str) -> (u16, String) {
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no head in {text:?}"));
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .expect("Content-Length");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    assert_eq!(body.len(), len, "{text:?}");
    (status, body.to_string())
}

fn info(author: &str, message: &str) -> Value {
    json!({"author": author, "message": message, "retries": 3, "allow_empty": false, "parents": []})
}

fn commits(path: &Path) -> Vec<Value> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn assert_400(srv: &Server, body: &str, what: &str) {
    let (status, text) = srv.post(body);
    assert_eq!(status, 400, "{what}: {text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert!(v.get("data").is_none(), "{what}: {v}");
    let msg = v["errors"][0]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: {v}"));
    assert!(!msg.is_empty());
}

#[test]
fn set_get_list_shapes_and_disk() {
    let srv = start(&[]);
    let d = srv.ok(SET, json!({"b": "main", "p": "/bridge/rules/3", "v": "{\"r\":3}", "i": info("bridge", "insert 3")}));
    let h1 = d["set"]["hash"].as_str().unwrap().to_string();
    assert_eq!(h1.len(), 64);
    // Path accepted without leading slash too.
    srv.ok(
        SET,
        json!({"b": "main", "p": "bridge/rules/10", "v": "ten", "i": info("bridge", "insert 10")}),
    );
    srv.ok(
        SET,
        json!({"b": "main", "p": "bridge/other", "v": "o", "i": null}),
    );

    assert_eq!(
        srv.ok(GET, json!({"b": "main", "p": "bridge/rules/3"})),
        json!({"branch": {"tree": {"get": "{\"r\":3}"}}})
    );
    assert_eq!(
        srv.ok(GET, json!({"b": "main", "p": "/bridge/rules/4"})),
        json!({"branch": {"tree": {"get": null}}})
    );
    // A node is not a value.
    assert_eq!(
        srv.ok(GET, json!({"b": "main", "p": "/bridge/rules"})),
        json!({"branch": {"tree": {"get": null}}})
    );
    assert_eq!(
        srv.ok(LIST, json!({"b": "main", "p": "/bridge/rules"})),
        json!({"branch": {"tree": {"get_tree": {"list_contents_recursively": [
            {"path": "/bridge/rules/10", "value": "ten"},
            {"path": "/bridge/rules/3", "value": "{\"r\":3}"},
        ]}}}})
    );

    // Files and commit log.
    assert_eq!(
        fs::read_to_string(srv.path("main/tree/bridge/rules/3")).unwrap(),
        "{\"r\":3}"
    );
    assert_eq!(
        fs::read_to_string(srv.path("main/tree/bridge/other")).unwrap(),
        "o"
    );
    let log = commits(&srv.path("main/commits"));
    assert_eq!(log.len(), 3);
    assert_eq!(log[0]["hash"], json!(h1));
    assert_eq!(log[0]["parents"], json!([]));
    assert_eq!(log[0]["author"], json!("bridge"));
    assert_eq!(log[0]["message"], json!("insert 3"));
    assert_eq!(log[0]["op"], json!("set"));
    assert_eq!(log[0]["path"], json!("/bridge/rules/3"));
    assert!(log[0]["date"].as_u64().unwrap() > 1_600_000_000);
    assert_eq!(log[1]["parents"], json!([h1]));
    assert_eq!(log[1]["path"], json!("/bridge/rules/10"));
    assert_eq!(log[2]["author"], json!(""));

    // Head, info, inline literal arguments, __typename, field order.
    let d = srv.ok(
        r#"{ main { head { info { message author date } hash parents } tree { path get_contents(path: "bridge/other") { __typename value path } } } }"#,
        json!({}),
    );
    let head = &d["main"]["head"];
    assert_eq!(head["hash"], log[2]["hash"]);
    assert_eq!(head["parents"], json!([log[1]["hash"]]));
    assert_eq!(head["info"]["message"], json!(""));
    assert_eq!(
        head["info"]["date"],
        json!(log[2]["date"].as_u64().unwrap().to_string())
    );
    assert_eq!(
        d["main"]["tree"],
        json!({"path": "/", "get_contents": {"__typename": "Contents", "value": "o", "path": "/bridge/other"}})
    );
    let (_, text) = srv.post(&json!({"query": "{ main { tree { get_contents(path: \"bridge/other\") { value path __typename } } } }"}).to_string());
    assert_eq!(
        text,
        r#"{"data":{"main":{"tree":{"get_contents":{"value":"o","path":"/bridge/other","__typename":"Contents"}}}}}"#
    );

    // Setting the same value again changes nothing: no commit, same head.
    let d = srv.ok(SET, json!({"b": "main", "p": "bridge/other", "v": "o"}));
    assert_eq!(d["set"]["hash"], log[2]["hash"]);
    assert_eq!(commits(&srv.path("main/commits")).len(), 3);

    // Whole tree from the root.
    let d = srv.ok(
        "{ main { tree { list_contents_recursively { path } } } }",
        json!({}),
    );
    assert_eq!(
        d["main"]["tree"]["list_contents_recursively"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
}

#[test]
fn test_and_set_semantics() {
    let srv = start(&[]);
    let p = "/bridge/rules/1";
    // test null = must be absent.
    let d = srv.ok(
        TAS,
        json!({"b": "main", "p": p, "t": null, "s": "v1", "i": info("a", "create")}),
    );
    let h1 = d["test_and_set"]["hash"].as_str().unwrap().to_string();
    assert_eq!(
        fs::read_to_string(srv.path("main/tree/bridge/rules/1")).unwrap(),
        "v1"
    );

    // Now absent-test fails: 200, data null, error with path.
    let (status, v) = srv.gql(TAS, json!({"b": "main", "p": p, "t": null, "s": "v2"}));
    assert_eq!(status, 200);
    assert_eq!(v["data"], json!({"test_and_set": null}));
    assert_eq!(v["errors"][0]["path"], json!(["test_and_set"]));
    assert!(
        v["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("test-got"),
        "{v}"
    );
    // Wrong value fails too; the store is unchanged.
    let (status, v) = srv.gql(TAS, json!({"b": "main", "p": p, "t": "other", "s": "v2"}));
    assert_eq!((status, &v["data"]), (200, &json!({"test_and_set": null})));
    assert_eq!(
        fs::read_to_string(srv.path("main/tree/bridge/rules/1")).unwrap(),
        "v1"
    );

    // Matching test: replaced.
    let d = srv.ok(
        TAS,
        json!({"b": "main", "p": p, "t": "v1", "s": "v2", "i": info("a", "update")}),
    );
    let h2 = d["test_and_set"]["hash"].as_str().unwrap().to_string();
    assert_ne!(h1, h2);
    assert_eq!(
        fs::read_to_string(srv.path("main/tree/bridge/rules/1")).unwrap(),
        "v2"
    );

    // set null = remove; empty directories are pruned.
    srv.ok(
        TAS,
        json!({"b": "main", "p": p, "t": "v2", "s": null, "i": info("a", "delete")}),
    );
    assert!(!srv.path("main/tree/bridge").exists());
    assert!(srv.path("main/tree").is_dir());
    assert_eq!(
        srv.ok(GET, json!({"b": "main", "p": p})),
        json!({"branch": {"tree": {"get": null}}})
    );

    // Absent variables behave as null.
    srv.ok(TAS, json!({"b": "main", "p": p, "s": "v3"}));
    assert_eq!(
        fs::read_to_string(srv.path("main/tree/bridge/rules/1")).unwrap(),
        "v3"
    );

    let log = commits(&srv.path("main/commits"));
    let ops: Vec<_> = log
        .iter()
        .map(|c| (c["op"].as_str().unwrap(), c["message"].as_str().unwrap()))
        .collect();
    assert_eq!(
        ops,
        [
            ("test_and_set", "create"),
            ("test_and_set", "update"),
            ("test_and_set", "delete"),
            ("test_and_set", "")
        ]
    );
    assert_eq!(log[1]["parents"], json!([h1]));
}

#[test]
fn remove_missing_and_unknown_branch() {
    let srv = start(&[]);
    // Unknown branch: empty tree, no head.
    assert_eq!(
        srv.ok("query ($b: BranchName!) { branch(name: $b) { name head { hash } tree { list_contents_recursively { path } } } }", json!({"b": "nope"})),
        json!({"branch": {"name": "nope", "head": null, "tree": {"list_contents_recursively": []}}})
    );
    assert_eq!(
        srv.ok(LIST, json!({"b": "nope", "p": "/x"})),
        json!({"branch": {"tree": {"get_tree": null}}})
    );
    // Removing from an empty branch: no commit, null head.
    assert_eq!(
        srv.ok(r#"mutation { remove(path: "a/b") { hash } }"#, json!({})),
        json!({"remove": null})
    );
    assert!(!srv.path("main/commits").exists());

    // Writing to a missing branch creates it (branch argument).
    srv.ok(SET, json!({"b": "feature-1", "p": "a/b/c", "v": "x"}));
    srv.ok(SET, json!({"b": "feature-1", "p": "a/d", "v": "y"}));
    assert_eq!(
        fs::read_to_string(srv.path("feature-1/tree/a/b/c")).unwrap(),
        "x"
    );
    assert!(!srv.path("main/tree").exists());
    let d = srv.ok(
        r#"mutation { remove(branch: "feature-1", path: "/a/b/c", info: {author: "t", message: "rm"}) { hash info { author message } } }"#,
        json!({}),
    );
    assert_eq!(d["remove"]["info"], json!({"author": "t", "message": "rm"}));
    assert!(!srv.path("feature-1/tree/a/b").exists());
    assert!(srv.path("feature-1/tree/a/d").exists());
    let log = commits(&srv.path("feature-1/commits"));
    assert_eq!(log.last().unwrap()["op"], json!("remove"));
    assert_eq!(log.last().unwrap()["path"], json!("/a/b/c"));
    // get_tree of a missing path is null; of a node lists it.
    assert_eq!(
        srv.ok(LIST, json!({"b": "feature-1", "p": "a/b"})),
        json!({"branch": {"tree": {"get_tree": null}}})
    );
    assert_eq!(
        srv.ok(LIST, json!({"b": "feature-1", "p": "a"})),
        json!({"branch": {"tree": {"get_tree": {"list_contents_recursively": [{"path": "/a/d", "value": "y"}]}}}})
    );
    // Contents replaced by a node and a node by contents, as in Irmin.
    srv.ok(SET, json!({"b": "t", "p": "x/y", "v": "1"}));
    srv.ok(SET, json!({"b": "t", "p": "x/y/z", "v": "2"}));
    assert_eq!(fs::read_to_string(srv.path("t/tree/x/y/z")).unwrap(), "2");
    srv.ok(SET, json!({"b": "t", "p": "x", "v": "3"}));
    assert_eq!(fs::read_to_string(srv.path("t/tree/x")).unwrap(), "3");
    assert_eq!(commits(&srv.path("t/commits")).len(), 3);
    assert_eq!(
        srv.ok("{ branches { name } }", json!({})),
        json!({"branches": [{"name": "feature-1"}, {"name": "t"}]})
    );
    // Bad path: resolver error.
    let (status, v) = srv.gql(SET, json!({"b": "main", "p": "a/../b", "v": "x"}));
    assert_eq!((status, &v["data"]), (200, &json!({"set": null})));
    let (status, v) = srv.gql(SET, json!({"b": "main", "p": "a//b", "v": "x"}));
    assert_eq!((status, &v["data"]), (200, &json!({"set": null})));
}

#[test]
fn external_files_are_read_as_is() {
    let srv = start(&[]);
    srv.ok(
        SET,
        json!({"b": "main", "p": "bridge/rules/1", "v": "good"}),
    );
    fs::write(srv.path("main/tree/bridge/rules/2"), b"{not json").unwrap();
    fs::write(srv.path("main/tree/bridge/rules/3"), b"bad \xff utf8").unwrap();
    assert_eq!(
        srv.ok(LIST, json!({"b": "main", "p": "bridge/rules"})),
        json!({"branch": {"tree": {"get_tree": {"list_contents_recursively": [
            {"path": "/bridge/rules/1", "value": "good"},
            {"path": "/bridge/rules/2", "value": "{not json"},
            {"path": "/bridge/rules/3", "value": "bad \u{fffd} utf8"},
        ]}}}})
    );
    assert_eq!(
        srv.ok(GET, json!({"b": "main", "p": "bridge/rules/2"})),
        json!({"branch": {"tree": {"get": "{not json"}}})
    );
}

#[test]
fn validation_errors_are_400() {
    let srv = start(&[]);
    let q = |query: &str, vars: Value| json!({"query": query, "variables": vars}).to_string();
    assert_400(
        &srv,
        &q("{ main { tree { get(path: \"a\") } }", json!({})),
        "parse error",
    );
    assert_400(&srv, &q("{ main { nope } }", json!({})), "unknown field");
    assert_400(&srv, &q("{ nope }", json!({})), "unknown root field");
    assert_400(&srv, &q(GET, json!({"b": "main"})), "missing variable");
    assert_400(
        &srv,
        &q(GET, json!({"b": "main", "p": 3})),
        "variable of the wrong type",
    );
    assert_400(
        &srv,
        &q("{ main { tree { get(path: $p) } } }", json!({"p": "a"})),
        "undeclared variable",
    );
    assert_400(
        &srv,
        &q(
            "query ($p: String!) { main { tree { get(path: $p) } } }",
            json!({"p": "a"}),
        ),
        "variable type mismatch",
    );
    assert_400(
        &srv,
        &q("{ main { tree { get(path: 3) } } }", json!({})),
        "wrong argument type",
    );
    assert_400(
        &srv,
        &q("{ main { tree { get(paht: \"a\") } } }", json!({})),
        "unknown argument",
    );
    assert_400(
        &srv,
        &q("{ main { tree { get } } }", json!({})),
        "missing required argument",
    );
    assert_400(
        &srv,
        &q("{ main { name { x } } }", json!({})),
        "selection on a scalar",
    );
    assert_400(
        &srv,
        &q("{ main { tree } }", json!({})),
        "no selection on an object",
    );
    assert_400(
        &srv,
        &q("mutation { set(path: \"a\") { hash } }", json!({})),
        "missing value",
    );
    assert_400(
        &srv,
        &q(
            "mutation { set(path: \"a\", value: \"v\", info: {auth: \"x\"}) { hash } }",
            json!({}),
        ),
        "bad InfoInput",
    );
    assert_400(
        &srv,
        &q("{ branch(name: \"../x\") { name } }", json!({})),
        "bad branch name",
    );
    assert_400(&srv, "not json", "non-JSON body");
    assert_400(&srv, "[1,2]", "non-object body");
    assert_400(&srv, "{\"variables\":{}}", "no query");
    assert_400(
        &srv,
        &q("{ a(x: 10000000000000000000000000000) }", json!({})),
        "huge integer",
    );
    // Nothing was written.
    assert!(!srv.path("main/commits").exists());
    srv.alive();
}

#[test]
fn read_only_mutations_fail_with_200() {
    let srv = start(&["--read-only"]);
    let (status, v) = srv.gql(SET, json!({"b": "main", "p": "a", "v": "x"}));
    assert_eq!(status, 200);
    assert_eq!(v["data"], json!({"set": null}));
    assert_eq!(v["errors"][0]["message"], json!("store is read-only"));
    assert_eq!(v["errors"][0]["path"], json!(["set"]));
    let (status, v) = srv.gql(TAS, json!({"b": "main", "p": "a", "t": null, "s": "x"}));
    assert_eq!((status, &v["data"]), (200, &json!({"test_and_set": null})));
    assert!(!srv.path("main/tree/a").exists());
    // Reads still work.
    assert_eq!(
        srv.ok(GET, json!({"b": "main", "p": "a"})),
        json!({"branch": {"tree": {"get": null}}})
    );
}

#[test]
fn concurrent_test_and_set_has_one_winner() {
    let srv = Arc::new(start(&[]));
    let barrier = Arc::new(Barrier::new(8));
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let srv = srv.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                let (status, v) = srv.gql(
                    TAS,
                    json!({"b": "main", "p": "/lock", "t": null, "s": format!("owner-{i}")}),
                );
                assert_eq!(status, 200);
                v["data"]["test_and_set"].is_object()
            })
        })
        .collect();
    let wins = handles
        .into_iter()
        .map(|h| h.join().unwrap())
        .filter(|w| *w)
        .count();
    assert_eq!(wins, 1);
    assert_eq!(commits(&srv.path("main/commits")).len(), 1);
    assert!(fs::read_to_string(srv.path("main/tree/lock"))
        .unwrap()
        .starts_with("owner-"));
}

#[test]
fn http_edges_and_garbage() {
    let srv = start(&[]);
    // Keep-alive: two requests on one connection.
    let mut s = srv.connect();
    let body = json!({"query": "{ main { name } }"}).to_string();
    let req = format!(
        "POST /graphql HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(format!("{req}{req}").as_bytes()).unwrap();
    let mut r = BufReader::new(s);
    for _ in 0..2 {
        let mut len = 0;
        loop {
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap();
            }
        }
        let mut b = vec![0; len];
        r.read_exact(&mut b).unwrap();
        assert_eq!(b, br#"{"data":{"main":{"name":"main"}}}"#);
    }

    assert_eq!(
        srv.raw(b"GET /other HTTP/1.1\r\nConnection: close\r\n\r\n")
            .0,
        404
    );
    assert_eq!(
        srv.raw(b"GET /graphql HTTP/1.1\r\nConnection: close\r\n\r\n")
            .0,
        405
    );
    assert_eq!(
        srv.raw(b"POST /graphql HTTP/1.1\r\nContent-Length: 99999999\r\n\r\nxx")
            .0,
        413
    );
    // A body just over the cap, actually sent.
    let big = vec![b'a'; (1 << 20) + 10];
    let mut req = format!(
        "POST /graphql HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
        big.len()
    )
    .into_bytes();
    req.extend_from_slice(&big);
    assert_eq!(srv.raw(&req).0, 413);
    assert_eq!(srv.raw(b"\x00\x01garbage\xff\r\n\r\n").0, 400);
    assert_eq!(
        srv.raw(b"POST /graphql HTTP/1.1\r\nContent-Length: nope\r\n\r\n")
            .0,
        400
    );
    assert_eq!(srv.raw(&vec![b'x'; 100_000]).0, 431);
    // Unterminated: client goes away mid-body.
    let _ = srv.raw(b"POST /graphql HTTP/1.1\r\nContent-Length: 100\r\n\r\nabc");
    // GraphQL bombs.
    let deep = format!(
        "{{\"query\":\"{}{}\"}}",
        "{ main ".repeat(5000),
        "}".repeat(5000)
    );
    assert_eq!(srv.post(&deep).0, 400);
    let deep_json = format!(
        "{{\"query\":\"x\",\"variables\":{}{}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    assert_eq!(srv.post(&deep_json).0, 400);
    let block =
        json!({"query": "{ main { tree { get(path: \"\"\"x\n\u{a0}a\n\u{3000}b\"\"\") } } }"})
            .to_string();
    assert_eq!(srv.post(&block).0, 400);
    let mut frags = String::from("{ main { ...F0 } }");
    for i in 0..40 {
        frags.push_str(&format!(
            " fragment F{i} on Branch {{ ...F{} ...F{} }}",
            i + 1,
            i + 1
        ));
    }
    frags.push_str(" fragment F40 on Branch { name }");
    assert_eq!(srv.post(&json!({"query": frags}).to_string()).0, 400);
    assert_eq!(
        srv.post(&json!({"query": "{ main { ...F } } fragment F on Branch { ...F }"}).to_string())
            .0,
        400
    );
    let wide = format!("{{ main {{ {} }} }}", "name ".repeat(100_000));
    let (status, _) = srv.post(&json!({"query": wide}).to_string());
    assert!(status == 200 || status == 400);
    srv.alive();
}

#[test]
fn command_line() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("--listen"));
    for args in [
        &["--bogus"][..],
        &["--root", "/tmp/x"][..],
        &["--listen", "127.0.0.1:0"][..],
        &["--listen"][..],
    ] {
        let out = Command::new(BIN).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(!out.stderr.is_empty());
    }
    // --pid-file and --log.
    let dir = std::env::temp_dir().join(format!("irmin-graphql-double-cli-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let pid = dir.join("pid");
    let log = dir.join("log");
    let srv = start(&[
        "--pid-file",
        pid.to_str().unwrap(),
        "--log",
        log.to_str().unwrap(),
    ]);
    assert_eq!(
        fs::read_to_string(&pid).unwrap().trim(),
        srv.child.id().to_string()
    );
    srv.alive();
    let text = fs::read_to_string(&log).unwrap();
    assert!(text.contains("POST /graphql query main -> 200"), "{text}");
    drop(srv);
    let _ = fs::remove_dir_all(&dir);
}
