//! Irmin's GraphQL replies, as the persister needs them.
//!
//! The shapes (Irmin 3, `irmin-graphql` over cohttp):
//!
//! ```text
//! 200 {"data":{"test_and_set":{"hash":"…"}}}                    committed
//! 200 {"data":{"test_and_set":null}}                            committed, nothing new
//! 200 {"data":{"test_and_set":null},"errors":[{"message":"…",  resolver error (the
//!      "path":["test_and_set"]}]}                                test failed, …)
//! 400 {"errors":[{"message":"…"}]}                              parse/validation error
//! 200 {"data":{"branch":{"tree":{"get":"…"|null}}}}
//! 200 {"data":{"branch":{"tree":{"get_tree":null |
//!      {"list_contents_recursively":[{"path":"/a/b","value":"…"}, …]}}}}}
//! ```
//!
//! Anything else is a [`ReplyError`]; messages are cut to [`MSG_LEN`]
//! bytes. Nothing here panics, whatever the bytes.
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
// A ReplyError carries its message inline (a 160-byte Msg): bigger than
// clippy likes for an Err, but this is not a hot path and it saves a box.
#![allow(clippy::result_large_err)]

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use serde_json::{Map, Value};

/// Capacity of a [`Msg`].
pub const MSG_LEN: usize = 160;
/// A short message for logs and status (an error text, cut to fit).
pub type Msg = heapless::String<MSG_LEN>;
/// Capacity of a [`Hash`] (Irmin's BLAKE2b hashes are 64 hex digits).
pub const HASH_LEN: usize = 80;
/// A commit hash.
pub type Hash = heapless::String<HASH_LEN>;

/// `s` cut to fit `N` bytes at a character boundary (ending in `...` when
/// cut), control characters replaced by spaces.
pub fn cut<const N: usize>(s: &str) -> heapless::String<N> {
    let mut out = heapless::String::new();
    let mut chars = s.chars().map(|c| if c.is_control() { ' ' } else { c });
    let room = N.saturating_sub(3);
    for c in chars.by_ref() {
        if out.len().saturating_add(c.len_utf8()) > room {
            // Does the rest fit whole?
            let rest_len: usize = core::iter::once(c)
                .chain(chars.clone())
                .map(char::len_utf8)
                .fold(0, usize::saturating_add);
            if out.len().saturating_add(rest_len) <= N {
                for c in core::iter::once(c).chain(chars) {
                    let _ = out.push(c);
                }
            } else {
                let _ = out.push_str("...".get(..N.min(3)).unwrap_or(""));
            }
            return out;
        }
        let _ = out.push(c);
    }
    out
}

/// `s` as a [`Msg`].
pub fn msg(s: &str) -> Msg {
    cut(s)
}

/// A [`Msg`] from formatting arguments (cut to fit).
pub fn msg_fmt(args: fmt::Arguments<'_>) -> Msg {
    match args.as_str() {
        Some(s) => msg(s),
        None => msg(&alloc::fmt::format(args)),
    }
}

/// What became of a `test_and_set` or `set`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Done (the hash of the branch head after it, if any).
    Committed { hash: Option<Hash> },
    /// The resolver failed: for `test_and_set` usually "the test did not
    /// match", but Irmin does not say which failure it was.
    ResolverError(Msg),
    /// The server refused the request itself (a non-200 status).
    Rejected { status: u16, message: Msg },
}

/// A reply that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplyError {
    /// A status other than 200 (`message`: the GraphQL error, or the start
    /// of the body).
    Http { status: u16, message: Msg },
    /// The body is not a JSON object.
    NotJson,
    /// A 200 reply with GraphQL errors.
    Graphql(Msg),
    /// Valid JSON in an unexpected shape.
    Shape(&'static str),
}

impl fmt::Display for ReplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplyError::Http { status, message } if message.is_empty() => {
                write!(f, "HTTP {status}")
            }
            ReplyError::Http { status, message } => write!(f, "HTTP {status}: {message}"),
            ReplyError::NotJson => f.write_str("reply is not a JSON object"),
            ReplyError::Graphql(m) => write!(f, "GraphQL error: {m}"),
            ReplyError::Shape(what) => write!(f, "unexpected reply: {what}"),
        }
    }
}

impl core::error::Error for ReplyError {}

type Object = Map<String, Value>;

fn parse_object(body: &[u8]) -> Option<Object> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(o)) => Some(o),
        _ => None,
    }
}

/// The first GraphQL error message of a reply, if it has any errors
/// (`"errors": []` has none).
fn first_error(obj: &Object) -> Option<Msg> {
    let errors = obj.get("errors")?;
    let first = match errors {
        Value::Array(a) => a.first()?,
        Value::Null => return None,
        // Not the GraphQL shape, but an error all the same.
        other => other,
    };
    let text = first
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("error without a message");
    let more = match errors {
        Value::Array(a) => a.len().saturating_sub(1),
        _ => 0,
    };
    Some(if more == 0 {
        msg(text)
    } else {
        msg_fmt(format_args!("{text} (and {more} more)"))
    })
}

/// The message of a non-200 reply: its first GraphQL error, else the
/// start of the body (if it is text), else nothing.
fn http_message(body: &[u8]) -> Msg {
    if let Some(m) = parse_object(body).as_ref().and_then(first_error) {
        return m;
    }
    let head = body.get(..MSG_LEN.saturating_mul(2)).unwrap_or(body);
    match core::str::from_utf8(head) {
        Ok(s) => msg(s.trim()),
        Err(e) => msg(
            core::str::from_utf8(head.get(..e.valid_up_to()).unwrap_or(&[]))
                .unwrap_or("")
                .trim(),
        ),
    }
}

/// The reply to a `test_and_set` or `set` (`field`: the mutation's name).
pub fn parse_write(status: u16, body: &[u8], field: &str) -> Result<WriteOutcome, ReplyError> {
    if status != 200 {
        return Ok(WriteOutcome::Rejected {
            status,
            message: http_message(body),
        });
    }
    let obj = parse_object(body).ok_or(ReplyError::NotJson)?;
    let data = obj.get("data");
    let result = data.and_then(|d| d.get(field));
    if let Some(Value::Object(commit)) = result {
        let hash = commit.get("hash").and_then(Value::as_str).map(cut);
        return Ok(WriteOutcome::Committed { hash });
    }
    if let Some(m) = first_error(&obj) {
        return Ok(WriteOutcome::ResolverError(m));
    }
    match result {
        Some(Value::Null) => Ok(WriteOutcome::Committed { hash: None }),
        Some(_) => Err(ReplyError::Shape("mutation result is not an object")),
        None => Err(ReplyError::Shape("no mutation result in data")),
    }
}

/// `data.branch.tree` of a 200 reply without errors.
fn tree_of(status: u16, body: &[u8]) -> Result<Object, ReplyError> {
    if status != 200 {
        return Err(ReplyError::Http {
            status,
            message: http_message(body),
        });
    }
    let mut obj = parse_object(body).ok_or(ReplyError::NotJson)?;
    if let Some(m) = first_error(&obj) {
        return Err(ReplyError::Graphql(m));
    }
    let Some(Value::Object(mut data)) = obj.remove("data") else {
        return Err(ReplyError::Shape("no data object"));
    };
    let Some(Value::Object(mut branch)) = data.remove("branch") else {
        return Err(ReplyError::Shape("no data.branch object"));
    };
    let Some(Value::Object(tree)) = branch.remove("tree") else {
        return Err(ReplyError::Shape("no data.branch.tree object"));
    };
    Ok(tree)
}

/// The reply to a `get`: the value, `None` if the path holds none.
pub fn parse_get(status: u16, body: &[u8]) -> Result<Option<String>, ReplyError> {
    let mut tree = tree_of(status, body)?;
    match tree.remove("get") {
        Some(Value::String(s)) => Ok(Some(s)),
        Some(Value::Null) => Ok(None),
        Some(_) => Err(ReplyError::Shape("get is not a string")),
        None => Err(ReplyError::Shape("no get in data.branch.tree")),
    }
}

/// The reply to a `get_tree { list_contents_recursively }`: `(path,
/// value)` pairs, empty when the tree is absent. A value that is not a
/// JSON string (a store with other contents) is returned as its JSON text.
pub fn parse_list(status: u16, body: &[u8]) -> Result<Vec<(String, String)>, ReplyError> {
    let mut tree = tree_of(status, body)?;
    let sub = match tree.remove("get_tree") {
        Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Object(o)) => o,
        Some(_) => return Err(ReplyError::Shape("get_tree is not an object")),
        None => return Err(ReplyError::Shape("no get_tree in data.branch.tree")),
    };
    let Some(Value::Array(items)) = sub.get("list_contents_recursively") else {
        return Err(ReplyError::Shape("list_contents_recursively is not a list"));
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let Some(path) = item.get("path").and_then(Value::as_str) else {
            return Err(ReplyError::Shape("list entry without a path string"));
        };
        let value = match item.get("value") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => {
                return Err(ReplyError::Shape("list entry without a value"))
            }
            Some(other) => other.to_string(),
        };
        out.push((path.to_string(), value));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(status: u16, body: &str) -> Result<WriteOutcome, ReplyError> {
        parse_write(status, body.as_bytes(), "test_and_set")
    }

    #[test]
    fn writes() {
        let h = "5a4d0e4f3b2c1d0e5a4d0e4f3b2c1d0e5a4d0e4f3b2c1d0e5a4d0e4f3b2c1d0e";
        assert_eq!(
            w(200, &format!(r#"{{"data":{{"test_and_set":{{"hash":"{h}"}}}}}}"#)),
            Ok(WriteOutcome::Committed {
                hash: Some(Hash::try_from(h).unwrap())
            })
        );
        assert_eq!(
            w(200, r#"{"data":{"test_and_set":null}}"#),
            Ok(WriteOutcome::Committed { hash: None })
        );
        assert_eq!(
            w(200, r#"{"data":{"test_and_set":{}}}"#),
            Ok(WriteOutcome::Committed { hash: None })
        );
        assert_eq!(
            w(
                200,
                r#"{"data":{"test_and_set":null},"errors":[{"message":"Test_and_set failed","path":["test_and_set"]}]}"#
            ),
            Ok(WriteOutcome::ResolverError(msg("Test_and_set failed")))
        );
        // errors first, as ocaml-graphql-server writes them.
        assert_eq!(
            w(
                200,
                r#"{"errors":[{"message":"a","path":["test_and_set"]},{"message":"b"}],"data":{"test_and_set":null}}"#
            ),
            Ok(WriteOutcome::ResolverError(msg("a (and 1 more)")))
        );
        assert_eq!(
            w(200, r#"{"errors":[{"message":"x"}],"data":null}"#),
            Ok(WriteOutcome::ResolverError(msg("x")))
        );
        assert_eq!(
            w(200, r#"{"errors":[{}]}"#),
            Ok(WriteOutcome::ResolverError(msg("error without a message")))
        );
        assert_eq!(
            w(
                400,
                r#"{"errors":[{"message":"Unknown argument \"tset\" on field \"test_and_set\""}]}"#
            ),
            Ok(WriteOutcome::Rejected {
                status: 400,
                message: msg("Unknown argument \"tset\" on field \"test_and_set\"")
            })
        );
        assert_eq!(
            w(500, "Internal\nServer Error"),
            Ok(WriteOutcome::Rejected {
                status: 500,
                message: msg("Internal Server Error")
            })
        );
        assert_eq!(
            parse_write(502, b"\xff", "test_and_set"),
            Ok(WriteOutcome::Rejected {
                status: 502,
                message: msg("")
            })
        );
        // `set` looks at its own field.
        assert_eq!(
            parse_write(200, br#"{"data":{"set":{"hash":"ab"}}}"#, "set"),
            Ok(WriteOutcome::Committed {
                hash: Some(Hash::try_from("ab").unwrap())
            })
        );
        assert_eq!(
            parse_write(200, br#"{"data":{"set":{"hash":"ab"}}}"#, "test_and_set"),
            Err(ReplyError::Shape("no mutation result in data"))
        );
        for bad in ["", "null", "[]", "{", "\"data\"", "{\"data\":{\"test_and_set\":3}}", "{\"data\":{}}", "{\"errors\":[]}"] {
            assert!(w(200, bad).is_err(), "{bad}");
        }
        // Long hash: cut, no panic.
        let long = "x".repeat(300);
        match w(200, &format!(r#"{{"data":{{"test_and_set":{{"hash":"{long}"}}}}}}"#)) {
            Ok(WriteOutcome::Committed { hash: Some(h) }) => assert!(h.len() <= HASH_LEN),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn gets() {
        assert_eq!(
            parse_get(200, br#"{"data":{"branch":{"tree":{"get":"{\"v\":1}"}}}}"#),
            Ok(Some("{\"v\":1}".into()))
        );
        assert_eq!(
            parse_get(200, br#"{"data":{"branch":{"tree":{"get":null}}}}"#),
            Ok(None)
        );
        assert_eq!(
            parse_get(200, br#"{"data":{"branch":{"tree":{"get":1}}}}"#),
            Err(ReplyError::Shape("get is not a string"))
        );
        assert_eq!(
            parse_get(200, br#"{"data":{"branch":null}}"#),
            Err(ReplyError::Shape("no data.branch object"))
        );
        assert_eq!(
            parse_get(200, br#"{"data":{"branch":{"tree":{}}}}"#),
            Err(ReplyError::Shape("no get in data.branch.tree"))
        );
        assert_eq!(
            parse_get(200, br#"{"data":{"branch":{"tree":{"get":"x"}}},"errors":[{"message":"m"}]}"#),
            Err(ReplyError::Graphql(msg("m")))
        );
        assert_eq!(
            parse_get(400, br#"{"errors":[{"message":"Variable $p of type Path! not provided"}]}"#),
            Err(ReplyError::Http {
                status: 400,
                message: msg("Variable $p of type Path! not provided")
            })
        );
        assert_eq!(
            parse_get(200, b"not json"),
            Err(ReplyError::NotJson)
        );
        assert_eq!(ReplyError::Http { status: 503, message: msg("") }.to_string(), "HTTP 503");
        assert_eq!(
            ReplyError::Http { status: 503, message: msg("busy") }.to_string(),
            "HTTP 503: busy"
        );
    }

    #[test]
    fn lists() {
        // The example of irmin's test/irmin-graphql/test.ml
        // (test_list_contents_recursively), as the server sends it.
        let body = br#"{"data":{"branch":{"tree":{"get_tree":{"list_contents_recursively":[{"path":"/a/b/c","value":"data"},{"path":"/a/b/d","value":"data1"}]}}}}}"#;
        assert_eq!(
            parse_list(200, body),
            Ok(vec![
                ("/a/b/c".into(), "data".into()),
                ("/a/b/d".into(), "data1".into())
            ])
        );
        assert_eq!(
            parse_list(200, br#"{"data":{"branch":{"tree":{"get_tree":null}}}}"#),
            Ok(vec![])
        );
        assert_eq!(
            parse_list(
                200,
                br#"{"data":{"branch":{"tree":{"get_tree":{"list_contents_recursively":[]}}}}}"#
            ),
            Ok(vec![])
        );
        // Non-string values come back as JSON text.
        assert_eq!(
            parse_list(
                200,
                br#"{"data":{"branch":{"tree":{"get_tree":{"list_contents_recursively":[{"path":"/p","value":{"v":1}}]}}}}}"#
            ),
            Ok(vec![("/p".into(), "{\"v\":1}".into())])
        );
        for (body, want) in [
            (&br#"{"data":{"branch":{"tree":{"get_tree":{}}}}}"#[..], "list_contents_recursively is not a list"),
            (br#"{"data":{"branch":{"tree":{"get_tree":{"list_contents_recursively":[{"value":"x"}]}}}}}"#, "list entry without a path string"),
            (br#"{"data":{"branch":{"tree":{"get_tree":{"list_contents_recursively":[{"path":1,"value":"x"}]}}}}}"#, "list entry without a path string"),
            (br#"{"data":{"branch":{"tree":{"get_tree":{"list_contents_recursively":[{"path":"/x"}]}}}}}"#, "list entry without a value"),
            (br#"{"data":{"branch":{"tree":{"get_tree":{"list_contents_recursively":[3]}}}}}"#, "list entry without a path string"),
            (br#"{"data":{"branch":{"tree":{"get_tree":[]}}}}"#, "get_tree is not an object"),
            (br#"{"data":{"branch":{"tree":{}}}}"#, "no get_tree in data.branch.tree"),
            (br#"{"data":{"branch":{}}}"#, "no data.branch.tree object"),
            (br#"{"data":null}"#, "no data object"),
            (br#"{}"#, "no data object"),
        ] {
            assert_eq!(parse_list(200, body), Err(ReplyError::Shape(want)));
        }
        assert!(matches!(parse_list(404, b"Not found"), Err(ReplyError::Http { status: 404, .. })));
    }

    #[test]
    fn cutting() {
        assert_eq!(msg("short").as_str(), "short");
        let exact = "e".repeat(MSG_LEN);
        assert_eq!(msg(&exact).as_str(), exact);
        let long = "\u{e9}".repeat(MSG_LEN);
        let m = msg(&long);
        assert!(m.len() <= MSG_LEN && m.ends_with("..."), "{m}");
        assert!(m.starts_with("\u{e9}\u{e9}"));
        assert_eq!(msg("a\nb\tc\u{0}").as_str(), "a b c ");
        let c: heapless::String<2> = cut("abcdef");
        assert_eq!(c.as_str(), "..");
        let c: heapless::String<0> = cut("abcdef");
        assert_eq!(c.as_str(), "");
        let c: heapless::String<4> = cut("\u{1f600}\u{1f600}");
        assert_eq!(c.as_str(), "...");
        let c: heapless::String<4> = cut("\u{1f600}");
        assert_eq!(c.as_str(), "\u{1f600}");
        assert_eq!(msg_fmt(format_args!("n={}", 5)).as_str(), "n=5");
    }
}
