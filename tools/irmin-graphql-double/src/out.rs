//! Response values with the field order of the selection preserved.
//!
//! serde_json's `Map` is sorted unless its `preserve_order` feature is on,
//! and turning that feature on here would change it for every crate of the
//! workspace built together with this one; so responses are written by hand
//! (strings still go through serde_json for escaping).

#[derive(Clone, Debug, PartialEq)]
pub enum Out {
    Null,
    Int(i64),
    Str(String),
    List(Vec<Out>),
    Obj(Vec<(String, Out)>),
}

impl Out {
    pub fn obj<const N: usize>(fields: [(&str, Out); N]) -> Out {
        Out::Obj(
            fields
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        )
    }

    pub fn str(s: impl Into<String>) -> Out {
        Out::Str(s.into())
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Out::Null)
    }

    pub fn to_json(&self) -> String {
        let mut s = String::new();
        self.write(&mut s);
        s
    }

    fn write(&self, s: &mut String) {
        match self {
            Out::Null => s.push_str("null"),
            Out::Int(i) => s.push_str(&i.to_string()),
            Out::Str(v) => write_str(s, v),
            Out::List(items) => {
                s.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        s.push(',');
                    }
                    item.write(s);
                }
                s.push(']');
            }
            Out::Obj(fields) => {
                s.push('{');
                for (i, (k, v)) in fields.iter().enumerate() {
                    if i > 0 {
                        s.push(',');
                    }
                    write_str(s, k);
                    s.push(':');
                    v.write(s);
                }
                s.push('}');
            }
        }
    }
}

fn write_str(s: &mut String, v: &str) {
    // Serialising a &str cannot fail.
    match serde_json::to_string(v) {
        Ok(q) => s.push_str(&q),
        Err(_) => s.push_str("\"\""),
    }
}

/// `{"errors":[{"message":msg}]}`
pub fn error_body(msg: &str) -> String {
    Out::obj([(
        "errors",
        Out::List(vec![Out::obj([("message", Out::str(msg))])]),
    )])
    .to_json()
}
