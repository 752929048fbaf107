//! The GraphQL subset: schema, validation and execution.
//!
//! A request is parsed with `graphql-parser`, validated completely against
//! the schema below (any problem → HTTP 400 `{"errors":[...]}`), and then
//! executed; resolver failures become `null` plus an entry in `errors`
//! (HTTP 200), with the usual non-null propagation.

use std::collections::HashMap;

use graphql_parser::query as q;
use serde_json::Value as Json;

use crate::out::Out;
use crate::store::{self, Commit, Info, Kind, Op, Steps, Store};

type Doc<'a> = q::Document<'a, &'a str>;
type SelSet<'a> = q::SelectionSet<'a, &'a str>;
type Field<'a> = q::Field<'a, &'a str>;
type Lit<'a> = q::Value<'a, &'a str>;

/// Deepest `{`/`[`/`(` nesting accepted (graphql-parser is recursive).
const MAX_NESTING: usize = 64;
/// Selections visited while validating or executing one request (stops
/// fragment bombs; a listing of N contents costs about 3N).
const MAX_WORK: usize = 2_000_000;

// ---------------------------------------------------------------- schema

#[derive(Clone, Debug, PartialEq)]
enum GType {
    Named(String),
    List(Box<GType>),
    NonNull(Box<GType>),
}

impl GType {
    /// Parses the schema's own type notation ("[Contents!]!").
    fn parse(s: &str) -> GType {
        if let Some(inner) = s.strip_suffix('!') {
            GType::NonNull(Box::new(GType::parse(inner)))
        } else if let Some(inner) = s.strip_prefix('[').and_then(|x| x.strip_suffix(']')) {
            GType::List(Box::new(GType::parse(inner)))
        } else {
            GType::Named(s.to_string())
        }
    }

    fn of_ast<'a>(t: &q::Type<'a, &'a str>) -> GType {
        match t {
            q::Type::NamedType(n) => GType::Named(n.to_string()),
            q::Type::ListType(i) => GType::List(Box::new(GType::of_ast(i))),
            q::Type::NonNullType(i) => GType::NonNull(Box::new(GType::of_ast(i))),
        }
    }

    fn base(&self) -> &str {
        match self {
            GType::Named(n) => n,
            GType::List(i) | GType::NonNull(i) => i.base(),
        }
    }

    fn show(&self) -> String {
        match self {
            GType::Named(n) => n.clone(),
            GType::List(i) => format!("[{}]", i.show()),
            GType::NonNull(i) => format!("{}!", i.show()),
        }
    }
}

struct FieldDef {
    name: &'static str,
    ty: &'static str,
    args: &'static [(&'static str, &'static str)],
}

const fn f(
    name: &'static str,
    ty: &'static str,
    args: &'static [(&'static str, &'static str)],
) -> FieldDef {
    FieldDef { name, ty, args }
}

const WRITE_ARGS_SET: &[(&str, &str)] = &[
    ("branch", "BranchName"),
    ("path", "Path!"),
    ("value", "Value!"),
    ("info", "InfoInput"),
];
const WRITE_ARGS_REMOVE: &[(&str, &str)] = &[
    ("branch", "BranchName"),
    ("path", "Path!"),
    ("info", "InfoInput"),
];
const WRITE_ARGS_TAS: &[(&str, &str)] = &[
    ("branch", "BranchName"),
    ("path", "Path!"),
    ("test", "Value"),
    ("set", "Value"),
    ("info", "InfoInput"),
];

const QUERY: &[FieldDef] = &[
    f("main", "Branch", &[]),
    f("branch", "Branch", &[("name", "BranchName!")]),
    f("branches", "[Branch!]!", &[]),
];
const MUTATION: &[FieldDef] = &[
    f("set", "Commit", WRITE_ARGS_SET),
    f("remove", "Commit", WRITE_ARGS_REMOVE),
    f("test_and_set", "Commit", WRITE_ARGS_TAS),
    f("test_set_and_get", "Commit", WRITE_ARGS_TAS),
];
const BRANCH: &[FieldDef] = &[
    f("name", "BranchName!", &[]),
    f("head", "Commit", &[]),
    f("tree", "Tree!", &[]),
];
const TREE: &[FieldDef] = &[
    f("path", "Path!", &[]),
    f("get", "Value", &[("path", "Path!")]),
    f("get_contents", "Contents", &[("path", "Path!")]),
    f("get_tree", "Tree", &[("path", "Path!")]),
    f("list_contents_recursively", "[Contents!]!", &[]),
    f("hash", "Hash!", &[]),
];
const CONTENTS: &[FieldDef] = &[
    f("path", "Path!", &[]),
    f("value", "Value!", &[]),
    f("hash", "Hash!", &[]),
];
const COMMIT: &[FieldDef] = &[
    f("hash", "Hash!", &[]),
    f("key", "CommitKey!", &[]),
    f("info", "Info!", &[]),
    f("parents", "[CommitKey!]!", &[]),
];
const INFO: &[FieldDef] = &[
    f("date", "String!", &[]),
    f("author", "String!", &[]),
    f("message", "String!", &[]),
];
const INFO_INPUT: &[(&str, &str)] = &[
    ("author", "String"),
    ("message", "String"),
    ("retries", "Int"),
    ("allow_empty", "Boolean"),
    ("parents", "[CommitKey!]"),
];

const STRING_SCALARS: &[&str] = &[
    "String",
    "ID",
    "Path",
    "Value",
    "BranchName",
    "Hash",
    "CommitKey",
];

fn object_fields(ty: &str) -> Option<&'static [FieldDef]> {
    Some(match ty {
        "Query" => QUERY,
        "Mutation" => MUTATION,
        "Branch" => BRANCH,
        "Tree" => TREE,
        "Contents" => CONTENTS,
        "Commit" => COMMIT,
        "Info" => INFO,
        _ => return None,
    })
}

fn field_def(ty: &str, name: &str) -> Option<&'static FieldDef> {
    object_fields(ty)?.iter().find(|d| d.name == name)
}

fn is_input_type(name: &str) -> bool {
    STRING_SCALARS.contains(&name) || matches!(name, "Int" | "Float" | "Boolean" | "InfoInput")
}

// ------------------------------------------------------------ input values

#[derive(Clone, Debug, PartialEq)]
enum In {
    Null,
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    List(Vec<In>),
    Obj(Vec<(String, In)>),
}

fn coerce_scalar_str(name: &str, s: &str) -> Result<In, String> {
    if name == "BranchName" && !store::valid_branch(s) {
        return Err(format!(
            "invalid branch name {} (want [A-Za-z0-9._-]+, not starting with '.')",
            Out::str(s).to_json()
        ));
    }
    Ok(In::Str(s.to_string()))
}

fn type_err(ty: &GType, got: &str) -> String {
    format!("expected a value of type {}, got {got}", ty.show())
}

/// Coerces a JSON variable value.
fn coerce_json(v: &Json, ty: &GType) -> Result<In, String> {
    match ty {
        GType::NonNull(inner) => {
            if v.is_null() {
                return Err(type_err(ty, "null"));
            }
            coerce_json(v, inner)
        }
        _ if v.is_null() => Ok(In::Null),
        GType::List(inner) => match v {
            Json::Array(items) => items
                .iter()
                .map(|i| coerce_json(i, inner))
                .collect::<Result<_, _>>()
                .map(In::List),
            other => Ok(In::List(vec![coerce_json(other, inner)?])),
        },
        GType::Named(n) => {
            let n = n.as_str();
            match (n, v) {
                (_, Json::String(s)) if STRING_SCALARS.contains(&n) => coerce_scalar_str(n, s),
                ("Int", Json::Number(x)) => x
                    .as_i64()
                    .filter(|i| i32::try_from(*i).is_ok())
                    .map(In::Int)
                    .ok_or_else(|| type_err(ty, "a non-32-bit integer")),
                ("Float", Json::Number(x)) => x
                    .as_f64()
                    .map(In::Float)
                    .ok_or_else(|| type_err(ty, "a number")),
                ("Boolean", Json::Bool(b)) => Ok(In::Bool(*b)),
                ("InfoInput", Json::Object(m)) => {
                    let mut out = Vec::new();
                    for (k, fv) in m {
                        let Some((_, fty)) = INFO_INPUT.iter().find(|(name, _)| name == k) else {
                            return Err(format!("unknown field {k} in InfoInput"));
                        };
                        let c = coerce_json(fv, &GType::parse(fty))
                            .map_err(|e| format!("InfoInput.{k}: {e}"))?;
                        out.push((k.clone(), c));
                    }
                    Ok(In::Obj(out))
                }
                _ => Err(type_err(ty, json_kind(v))),
            }
        }
    }
}

fn json_kind(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "a list",
        Json::Object(_) => "an object",
    }
}

/// Is a variable of type `var` allowed where `loc` is expected?
fn compatible(var: &GType, loc: &GType, var_has_default: bool) -> bool {
    match (var, loc) {
        (GType::NonNull(v), GType::NonNull(l)) => compatible(v, l, false),
        (_, GType::NonNull(l)) => var_has_default && compatible(var, l, false),
        (GType::NonNull(v), l) => compatible(v, l, false),
        (GType::List(v), GType::List(l)) => compatible(v, l, false),
        (GType::Named(v), GType::Named(l)) => v == l,
        _ => false,
    }
}

// ------------------------------------------------------------- the engine

struct VarDef {
    ty: GType,
    has_default: bool,
}

enum PathSeg {
    Key(String),
    Index(usize),
}

/// An object value during execution.
#[derive(Clone)]
enum Obj {
    Root(&'static str),
    Branch(String),
    Tree { branch: String, path: Steps },
    Contents { path: Steps, value: Vec<u8> },
    Commit(Commit),
    Info(Commit),
}

impl Obj {
    fn type_name(&self) -> &'static str {
        match self {
            Obj::Root(t) => t,
            Obj::Branch(_) => "Branch",
            Obj::Tree { .. } => "Tree",
            Obj::Contents { .. } => "Contents",
            Obj::Commit(_) => "Commit",
            Obj::Info(_) => "Info",
        }
    }
}

enum Res {
    Null,
    Leaf(Out),
    Obj(Obj),
    List(Vec<Res>),
}

struct Group<'q, 'a> {
    key: &'a str,
    fields: Vec<&'q Field<'a>>,
}

struct Engine<'q, 'a> {
    store: &'q Store,
    fragments: HashMap<&'a str, &'q q::FragmentDefinition<'a, &'a str>>,
    var_defs: HashMap<&'a str, VarDef>,
    vars: HashMap<String, In>,
    errors: Vec<Out>,
    first_error: Option<String>,
    work: usize,
}

/// What the server logs about a request.
#[derive(Default)]
pub struct Summary {
    pub op: String,
    pub fields: Vec<String>,
    pub errors: usize,
    /// The first error message, if any.
    pub first_error: Option<String>,
}

pub struct Response {
    pub status: u16,
    pub body: String,
    pub summary: Summary,
}

fn bad_request(msg: impl Into<String>, summary: Summary) -> Response {
    let msg = msg.into();
    Response {
        status: 400,
        body: crate::out::error_body(&msg),
        summary: Summary {
            errors: 1,
            first_error: Some(msg),
            ..summary
        },
    }
}

/// Handles one request body (already known to be within the size limit).
pub fn handle(store: &Store, body: &[u8], graphql_content_type: bool) -> Response {
    let mut summary = Summary::default();
    let (query, variables, op_name) = if graphql_content_type {
        match std::str::from_utf8(body) {
            Ok(s) => (s.to_string(), None, None),
            Err(_) => return bad_request("request body is not UTF-8", summary),
        }
    } else {
        let v: Json = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => return bad_request(format!("request body is not valid JSON: {e}"), summary),
        };
        let Json::Object(mut m) = v else {
            return bad_request("request body must be a JSON object", summary);
        };
        let query = match m.remove("query") {
            Some(Json::String(s)) => s,
            Some(_) => return bad_request("\"query\" must be a string", summary),
            None => return bad_request("missing \"query\"", summary),
        };
        let variables = match m.remove("variables") {
            None | Some(Json::Null) => None,
            Some(Json::Object(o)) => Some(o),
            Some(_) => return bad_request("\"variables\" must be an object", summary),
        };
        let op_name = match m.remove("operationName") {
            None | Some(Json::Null) => None,
            Some(Json::String(s)) => Some(s),
            Some(_) => return bad_request("\"operationName\" must be a string", summary),
        };
        (query, variables, op_name)
    };

    if let Err(e) = prescan(&query) {
        return bad_request(e, summary);
    }
    let doc: Doc = match q::parse_query::<&str>(&query) {
        Ok(d) => d,
        Err(e) => return bad_request(format!("{}", e).trim().to_string(), summary),
    };
    run(
        store,
        &doc,
        variables.unwrap_or_default(),
        op_name.as_deref(),
        &mut summary,
    )
}

/// Rejects what would make graphql-parser recurse too deep or panic
/// (block strings containing non-ASCII whitespace trip a slicing bug in
/// its indentation stripping).
fn prescan(s: &str) -> Result<(), String> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut depth = 0usize;
    while i < b.len() {
        match b[i] {
            b'#' => {
                while i < b.len() && b[i] != b'\n' && b[i] != b'\r' {
                    i += 1;
                }
            }
            b'"' if b[i..].starts_with(b"\"\"\"") => {
                let start = i + 3;
                let mut j = start;
                loop {
                    if j >= b.len() {
                        return Ok(()); // unterminated: let the parser report it
                    }
                    if b[j..].starts_with(b"\\\"\"\"") {
                        j += 4;
                    } else if b[j..].starts_with(b"\"\"\"") {
                        break;
                    } else {
                        j += 1;
                    }
                }
                let content = &s[start..j];
                if content.chars().any(|c| c.is_whitespace() && !c.is_ascii()) {
                    return Err(
                        "Parse error: non-ASCII whitespace in a block string is not supported"
                            .into(),
                    );
                }
                i = j + 3;
                continue;
            }
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' && b[i] != b'\n' {
                    if b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'{' | b'[' | b'(' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Err(format!(
                        "Parse error: query nested deeper than {MAX_NESTING} levels"
                    ));
                }
            }
            b'}' | b']' | b')' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

fn run(
    store: &Store,
    doc: &Doc,
    variables: serde_json::Map<String, Json>,
    op_name: Option<&str>,
    summary: &mut Summary,
) -> Response {
    let take = |summary: &mut Summary| std::mem::take(summary);
    // Operations and fragments.
    let mut ops = Vec::new();
    let mut fragments = HashMap::new();
    for def in &doc.definitions {
        match def {
            q::Definition::Operation(op) => ops.push(op),
            q::Definition::Fragment(fr) => {
                if fragments.insert(fr.name, fr).is_some() {
                    return bad_request(format!("duplicate fragment {}", fr.name), take(summary));
                }
            }
        }
    }
    fn name_of<'a>(op: &q::OperationDefinition<'a, &'a str>) -> Option<String> {
        match op {
            q::OperationDefinition::SelectionSet(_) => None,
            q::OperationDefinition::Query(x) => x.name.map(str::to_string),
            q::OperationDefinition::Mutation(x) => x.name.map(str::to_string),
            q::OperationDefinition::Subscription(x) => x.name.map(str::to_string),
        }
    }
    let op = match op_name {
        Some(n) => match ops.iter().find(|o| name_of(o).as_deref() == Some(n)) {
            Some(o) => *o,
            None => return bad_request(format!("operation {n} not found"), take(summary)),
        },
        None => match ops.as_slice() {
            [o] => *o,
            [] => return bad_request("no operation in the document", take(summary)),
            _ => {
                return bad_request(
                    "several operations: operationName is required",
                    take(summary),
                )
            }
        },
    };
    let (root, var_defs, directives, sel) = match op {
        q::OperationDefinition::SelectionSet(s) => ("Query", &[][..], &[][..], s),
        q::OperationDefinition::Query(x) => (
            "Query",
            &x.variable_definitions[..],
            &x.directives[..],
            &x.selection_set,
        ),
        q::OperationDefinition::Mutation(x) => (
            "Mutation",
            &x.variable_definitions[..],
            &x.directives[..],
            &x.selection_set,
        ),
        q::OperationDefinition::Subscription(_) => {
            return bad_request("subscriptions are not supported", take(summary))
        }
    };
    summary.op = if root == "Query" {
        "query".into()
    } else {
        "mutation".into()
    };
    summary.fields = sel
        .items
        .iter()
        .filter_map(|s| match s {
            q::Selection::Field(f) => Some(f.name.to_string()),
            _ => None,
        })
        .collect();
    if !directives.is_empty() {
        return bad_request("directives are not supported", take(summary));
    }

    let mut eng = Engine {
        store,
        fragments,
        var_defs: HashMap::new(),
        vars: HashMap::new(),
        errors: Vec::new(),
        first_error: None,
        work: 0,
    };

    // Variables: declared types, provided values, defaults.
    for vd in var_defs {
        let ty = GType::of_ast(&vd.var_type);
        if !is_input_type(ty.base()) {
            return bad_request(
                format!("variable ${} has unknown input type {}", vd.name, ty.show()),
                take(summary),
            );
        }
        if eng.var_defs.contains_key(vd.name) {
            return bad_request(
                format!("variable ${} declared twice", vd.name),
                take(summary),
            );
        }
        match variables.get(vd.name) {
            Some(v) => match coerce_json(v, &ty) {
                Ok(c) => {
                    eng.vars.insert(vd.name.to_string(), c);
                }
                Err(e) => return bad_request(format!("variable ${}: {e}", vd.name), take(summary)),
            },
            None => {
                if let Some(d) = &vd.default_value {
                    match eng.coerce_lit(d, &ty, false) {
                        Ok(Some(c)) => {
                            eng.vars.insert(vd.name.to_string(), c);
                        }
                        Ok(None) => {}
                        Err(e) => {
                            return bad_request(
                                format!("default of variable ${}: {e}", vd.name),
                                take(summary),
                            )
                        }
                    }
                } else if matches!(ty, GType::NonNull(_)) {
                    return bad_request(
                        format!(
                            "missing value for non-null variable ${} of type {}",
                            vd.name,
                            ty.show()
                        ),
                        take(summary),
                    );
                }
            }
        }
        eng.var_defs.insert(
            vd.name,
            VarDef {
                ty,
                has_default: vd.default_value.is_some(),
            },
        );
    }

    // Validation: walk the whole selection.
    if let Err(e) = eng.validate(&[sel], root, 0) {
        return bad_request(e, take(summary));
    }

    // Execution.
    let mut path = Vec::new();
    let data = eng
        .exec_set(&[sel], &Obj::Root(root), &mut path)
        .unwrap_or(Out::Null);
    let mut resp = vec![("data".to_string(), data)];
    summary.errors = eng.errors.len();
    summary.first_error = eng.first_error.take();
    if !eng.errors.is_empty() {
        resp.push((
            "errors".to_string(),
            Out::List(std::mem::take(&mut eng.errors)),
        ));
    }
    Response {
        status: 200,
        body: Out::Obj(resp).to_json(),
        summary: take(summary),
    }
}

impl<'q, 'a> Engine<'q, 'a> {
    fn tick(&mut self) -> Result<(), String> {
        self.work += 1;
        if self.work > MAX_WORK {
            Err("query too complex".to_string())
        } else {
            Ok(())
        }
    }

    /// Coerces a literal argument value.  `exec` false: validation (variables
    /// are checked for type compatibility; the result is a placeholder).
    /// `Ok(None)`: an unset nullable variable (the argument is absent).
    fn coerce_lit(&self, v: &Lit<'a>, ty: &GType, exec: bool) -> Result<Option<In>, String> {
        if let q::Value::Variable(name) = v {
            let Some(def) = self.var_defs.get(name) else {
                return Err(format!("variable ${name} is not declared"));
            };
            if !compatible(&def.ty, ty, def.has_default) {
                return Err(format!(
                    "variable ${name} of type {} cannot be used where {} is expected",
                    def.ty.show(),
                    ty.show()
                ));
            }
            return match self.vars.get(*name) {
                Some(In::Null) if matches!(ty, GType::NonNull(_)) => Err(type_err(ty, "null")),
                Some(x) => Ok(Some(if exec { x.clone() } else { In::Null })),
                None => Ok(None),
            };
        }
        let inner_opt = |x: Option<In>| x.unwrap_or(In::Null);
        match ty {
            GType::NonNull(inner) => {
                if matches!(v, q::Value::Null) {
                    return Err(type_err(ty, "null"));
                }
                self.coerce_lit(v, inner, exec)
            }
            _ if matches!(v, q::Value::Null) => Ok(Some(In::Null)),
            GType::List(inner) => match v {
                q::Value::List(items) => {
                    let mut out = Vec::new();
                    for i in items {
                        out.push(inner_opt(self.coerce_lit(i, inner, exec)?));
                    }
                    Ok(Some(In::List(out)))
                }
                other => Ok(Some(In::List(vec![inner_opt(
                    self.coerce_lit(other, inner, exec)?,
                )]))),
            },
            GType::Named(n) => {
                let n = n.as_str();
                let r = match (n, v) {
                    (_, q::Value::String(s)) if STRING_SCALARS.contains(&n) => {
                        coerce_scalar_str(n, s)?
                    }
                    ("Int", q::Value::Int(x)) => {
                        match x.as_i64().filter(|i| i32::try_from(*i).is_ok()) {
                            Some(i) => In::Int(i),
                            None => return Err(type_err(ty, "a non-32-bit integer")),
                        }
                    }
                    ("Float", q::Value::Int(x)) => In::Float(x.as_i64().unwrap_or(0) as f64),
                    ("Float", q::Value::Float(x)) => In::Float(*x),
                    ("Boolean", q::Value::Boolean(b)) => In::Bool(*b),
                    ("InfoInput", q::Value::Object(m)) => {
                        let mut out = Vec::new();
                        for (k, fv) in m {
                            let Some((_, fty)) = INFO_INPUT.iter().find(|(name, _)| name == k)
                            else {
                                return Err(format!("unknown field {k} in InfoInput"));
                            };
                            if let Some(c) = self
                                .coerce_lit(fv, &GType::parse(fty), exec)
                                .map_err(|e| format!("InfoInput.{k}: {e}"))?
                            {
                                out.push((k.to_string(), c));
                            }
                        }
                        In::Obj(out)
                    }
                    _ => {
                        let got = match v {
                            q::Value::Int(_) => "an integer",
                            q::Value::Float(_) => "a float",
                            q::Value::String(_) => "a string",
                            q::Value::Boolean(_) => "a boolean",
                            q::Value::Enum(_) => "an enum value",
                            q::Value::List(_) => "a list",
                            q::Value::Object(_) => "an object",
                            q::Value::Null | q::Value::Variable(_) => "null",
                        };
                        return Err(type_err(ty, got));
                    }
                };
                Ok(Some(r))
            }
        }
    }

    /// Arguments of a field, checked against its definition.
    fn args(
        &self,
        def: &FieldDef,
        field: &Field<'a>,
        exec: bool,
    ) -> Result<HashMap<&'static str, In>, String> {
        let mut out = HashMap::new();
        let mut seen: Vec<&str> = Vec::new();
        for (name, v) in &field.arguments {
            let Some((aname, aty)) = def.args.iter().find(|(n, _)| n == name) else {
                return Err(format!("unknown argument {name} on field {}", def.name));
            };
            if seen.contains(name) {
                return Err(format!("argument {name} given twice on field {}", def.name));
            }
            seen.push(name);
            let c = self
                .coerce_lit(v, &GType::parse(aty), exec)
                .map_err(|e| format!("argument {name} of {}: {e}", def.name))?;
            if let Some(c) = c {
                out.insert(*aname, c);
            }
        }
        for (aname, aty) in def.args {
            if aty.ends_with('!') && !out.contains_key(aname) {
                return Err(format!(
                    "field {} is missing required argument {aname} of type {aty}",
                    def.name
                ));
            }
        }
        Ok(out)
    }

    /// Flattens fragments and groups fields by response key.
    fn collect(
        &mut self,
        sets: &[&'q SelSet<'a>],
        ty: &str,
        stack: &mut Vec<&'a str>,
    ) -> Result<Vec<Group<'q, 'a>>, String> {
        let mut groups: Vec<Group<'q, 'a>> = Vec::new();
        for set in sets {
            self.collect_into(set, ty, stack, &mut groups)?;
        }
        Ok(groups)
    }

    fn collect_into(
        &mut self,
        set: &'q SelSet<'a>,
        ty: &str,
        stack: &mut Vec<&'a str>,
        groups: &mut Vec<Group<'q, 'a>>,
    ) -> Result<(), String> {
        for sel in &set.items {
            self.tick()?;
            match sel {
                q::Selection::Field(field) => {
                    if !field.directives.is_empty() {
                        return Err("directives are not supported".into());
                    }
                    let key = field.alias.unwrap_or(field.name);
                    match groups.iter_mut().find(|g| g.key == key) {
                        Some(g) => {
                            if g.fields[0].name != field.name {
                                return Err(format!(
                                    "fields {} and {} conflict on response key {key}",
                                    g.fields[0].name, field.name
                                ));
                            }
                            g.fields.push(field);
                        }
                        None => groups.push(Group {
                            key,
                            fields: vec![field],
                        }),
                    }
                }
                q::Selection::FragmentSpread(sp) => {
                    if !sp.directives.is_empty() {
                        return Err("directives are not supported".into());
                    }
                    let Some(fr) = self.fragments.get(sp.fragment_name).copied() else {
                        return Err(format!("unknown fragment {}", sp.fragment_name));
                    };
                    let q::TypeCondition::On(cond) = fr.type_condition;
                    if cond != ty {
                        return Err(format!(
                            "fragment {} on {cond} cannot be spread on {ty}",
                            fr.name
                        ));
                    }
                    if stack.contains(&fr.name) || stack.len() > MAX_NESTING {
                        return Err(format!("fragment {} spreads itself", fr.name));
                    }
                    stack.push(fr.name);
                    self.collect_into(&fr.selection_set, ty, stack, groups)?;
                    stack.pop();
                }
                q::Selection::InlineFragment(inl) => {
                    if !inl.directives.is_empty() {
                        return Err("directives are not supported".into());
                    }
                    if let Some(q::TypeCondition::On(cond)) = inl.type_condition {
                        if cond != ty {
                            return Err(format!("inline fragment on {cond} cannot appear in {ty}"));
                        }
                    }
                    self.collect_into(&inl.selection_set, ty, stack, groups)?;
                }
            }
        }
        Ok(())
    }

    fn validate(&mut self, sets: &[&'q SelSet<'a>], ty: &str, depth: usize) -> Result<(), String> {
        if depth > MAX_NESTING {
            return Err("query nested too deeply".into());
        }
        let groups = self.collect(sets, ty, &mut Vec::new())?;
        for g in groups {
            let name = g.fields[0].name;
            if name == "__typename" {
                for fld in &g.fields {
                    if !fld.arguments.is_empty() || !fld.selection_set.items.is_empty() {
                        return Err("__typename takes no arguments and no selection".into());
                    }
                }
                continue;
            }
            let Some(def) = field_def(ty, name) else {
                return Err(format!("field {name} is not defined on type {ty}"));
            };
            for fld in &g.fields {
                self.args(def, fld, false)?;
            }
            let rty = GType::parse(def.ty);
            let subs: Vec<&'q SelSet<'a>> = g.fields.iter().map(|fld| &fld.selection_set).collect();
            let has_sel = subs.iter().any(|s| !s.items.is_empty());
            if object_fields(rty.base()).is_some() {
                if !has_sel {
                    return Err(format!(
                        "field {name} of type {} must have a selection of subfields",
                        rty.show()
                    ));
                }
                self.validate(&subs, rty.base(), depth + 1)?;
            } else if has_sel {
                return Err(format!(
                    "field {name} of type {} must not have a selection since it is a scalar",
                    rty.show()
                ));
            }
        }
        Ok(())
    }

    fn error(&mut self, msg: String, path: &[PathSeg]) {
        let p = path
            .iter()
            .map(|s| match s {
                PathSeg::Key(k) => Out::str(k.clone()),
                PathSeg::Index(i) => Out::Int(*i as i64),
            })
            .collect();
        self.first_error.get_or_insert_with(|| msg.clone());
        self.errors.push(Out::obj([
            ("message", Out::Str(msg)),
            ("path", Out::List(p)),
        ]));
    }

    /// Executes a (merged) selection on `obj`.  `Err(())`: the object must
    /// be replaced by null (the error is already recorded).
    fn exec_set(
        &mut self,
        sets: &[&'q SelSet<'a>],
        obj: &Obj,
        path: &mut Vec<PathSeg>,
    ) -> Result<Out, ()> {
        let groups = match self.collect(sets, obj.type_name(), &mut Vec::new()) {
            Ok(g) => g,
            Err(e) => {
                self.error(e, path);
                return Err(());
            }
        };
        let mut out = Vec::new();
        for g in groups {
            let field = g.fields[0];
            if field.name == "__typename" {
                out.push((g.key.to_string(), Out::str(obj.type_name())));
                continue;
            }
            path.push(PathSeg::Key(g.key.to_string()));
            let v = self.exec_field(&g, obj, path);
            path.pop();
            match v {
                Some(v) => out.push((g.key.to_string(), v)),
                None => return Err(()),
            }
        }
        Ok(Out::Obj(out))
    }

    /// `None`: null must propagate to the parent.
    fn exec_field(&mut self, g: &Group<'q, 'a>, obj: &Obj, path: &mut Vec<PathSeg>) -> Option<Out> {
        let field = g.fields[0];
        let ty_name = obj.type_name();
        let Some(def) = field_def(ty_name, field.name) else {
            self.error(
                format!("field {} is not defined on type {ty_name}", field.name),
                path,
            );
            return None;
        };
        let rty = GType::parse(def.ty);
        let nullable = !matches!(rty, GType::NonNull(_));
        let res = self
            .tick()
            .and_then(|_| self.args(def, field, true))
            .and_then(|args| self.resolve(obj, def.name, &args));
        let subs: Vec<&'q SelSet<'a>> = g.fields.iter().map(|fld| &fld.selection_set).collect();
        let done = match res {
            Ok(r) => self.complete(&rty, r, &subs, path),
            Err(e) => {
                self.error(e, path);
                Err(())
            }
        };
        match done {
            Ok(v) => Some(v),
            Err(()) if nullable => Some(Out::Null),
            Err(()) => None,
        }
    }

    fn complete(
        &mut self,
        ty: &GType,
        r: Res,
        subs: &[&'q SelSet<'a>],
        path: &mut Vec<PathSeg>,
    ) -> Result<Out, ()> {
        match ty {
            GType::NonNull(inner) => {
                let v = self.complete(inner, r, subs, path)?;
                if v.is_null() {
                    self.error(
                        format!("non-null value of type {} resolved to null", ty.show()),
                        path,
                    );
                    return Err(());
                }
                Ok(v)
            }
            GType::List(inner) => match r {
                Res::Null => Ok(Out::Null),
                Res::List(items) => {
                    let mut out = Vec::new();
                    for (i, it) in items.into_iter().enumerate() {
                        path.push(PathSeg::Index(i));
                        let v = self.complete(inner, it, subs, path);
                        path.pop();
                        match v {
                            Ok(v) => out.push(v),
                            Err(()) if matches!(**inner, GType::NonNull(_)) => return Err(()),
                            Err(()) => out.push(Out::Null),
                        }
                    }
                    Ok(Out::List(out))
                }
                _ => {
                    self.error("internal: expected a list".into(), path);
                    Err(())
                }
            },
            GType::Named(_) => match r {
                Res::Null => Ok(Out::Null),
                Res::Leaf(o) => Ok(o),
                Res::Obj(o) => self.exec_set(subs, &o, path),
                Res::List(_) => {
                    self.error("internal: unexpected list".into(), path);
                    Err(())
                }
            },
        }
    }

    fn resolve(
        &mut self,
        obj: &Obj,
        field: &str,
        args: &HashMap<&'static str, In>,
    ) -> Result<Res, String> {
        let s = self.store;
        let arg_str = |k: &str| match args.get(k) {
            Some(In::Str(v)) => Some(v.clone()),
            _ => None,
        };
        let arg_path = |k: &str| -> Result<Steps, String> {
            store::parse_path(&arg_str(k).unwrap_or_default())
        };
        Ok(match (obj, field) {
            (Obj::Root("Query"), "main") => Res::Obj(Obj::Branch("main".into())),
            (Obj::Root("Query"), "branch") => {
                Res::Obj(Obj::Branch(arg_str("name").unwrap_or_default()))
            }
            (Obj::Root("Query"), "branches") => Res::List(
                s.branches()?
                    .into_iter()
                    .map(|b| Res::Obj(Obj::Branch(b)))
                    .collect(),
            ),
            (Obj::Root("Mutation"), op) => {
                if s.read_only() {
                    return Err("store is read-only".into());
                }
                let branch = arg_str("branch").unwrap_or_else(|| "main".into());
                let steps = arg_path("path")?;
                let info = match args.get("info") {
                    Some(In::Obj(fields)) => {
                        let get = |k: &str| fields.iter().find(|(n, _)| n == k).map(|(_, v)| v);
                        Info {
                            author: match get("author") {
                                Some(In::Str(a)) => Some(a.clone()),
                                _ => None,
                            },
                            message: match get("message") {
                                Some(In::Str(m)) => Some(m.clone()),
                                _ => None,
                            },
                            allow_empty: matches!(get("allow_empty"), Some(In::Bool(true))),
                        }
                    }
                    _ => Info::default(),
                };
                let bytes = |k: &str| arg_str(k).map(String::into_bytes);
                let (value, test, set) = (bytes("value"), bytes("test"), bytes("set"));
                let op = match op {
                    "set" => Op::Set(value.as_deref().unwrap_or_default()),
                    "remove" => Op::Remove,
                    "test_and_set" | "test_set_and_get" => Op::TestAndSet {
                        test: test.as_deref(),
                        set: set.as_deref(),
                    },
                    other => return Err(format!("unknown mutation {other}")),
                };
                match s.write(&branch, &steps, op, &info)? {
                    Some(c) => Res::Obj(Obj::Commit(c)),
                    None => Res::Null,
                }
            }
            (Obj::Branch(b), "name") => Res::Leaf(Out::str(b.clone())),
            (Obj::Branch(b), "head") => match s.head(b)? {
                Some(c) => Res::Obj(Obj::Commit(c)),
                None => Res::Null,
            },
            (Obj::Branch(b), "tree") => Res::Obj(Obj::Tree {
                branch: b.clone(),
                path: Vec::new(),
            }),
            (Obj::Tree { path, .. }, "path") => Res::Leaf(Out::str(store::show_path(path))),
            (Obj::Tree { branch, path }, "get" | "get_contents" | "get_tree") => {
                let mut full = path.clone();
                full.extend(arg_path("path")?);
                match field {
                    "get" => match s.find(branch, &full)? {
                        Some(v) => Res::Leaf(Out::str(String::from_utf8_lossy(&v))),
                        None => Res::Null,
                    },
                    "get_contents" => match s.find(branch, &full)? {
                        Some(v) => Res::Obj(Obj::Contents {
                            path: full,
                            value: v,
                        }),
                        None => Res::Null,
                    },
                    _ => match s.kind(branch, &full)? {
                        Kind::Absent => Res::Null,
                        Kind::Contents | Kind::Node => Res::Obj(Obj::Tree {
                            branch: branch.clone(),
                            path: full,
                        }),
                    },
                }
            }
            (Obj::Tree { branch, path }, "list_contents_recursively") => Res::List(
                s.list(branch, path)?
                    .into_iter()
                    .map(|(p, v)| Res::Obj(Obj::Contents { path: p, value: v }))
                    .collect(),
            ),
            (Obj::Tree { branch, path }, "hash") => {
                let mut buf = Vec::new();
                for (p, v) in s.list(branch, path)? {
                    let p = store::show_path(&p[path.len()..]);
                    buf.extend_from_slice(&(p.len() as u64).to_le_bytes());
                    buf.extend_from_slice(p.as_bytes());
                    buf.extend_from_slice(&(v.len() as u64).to_le_bytes());
                    buf.extend_from_slice(&v);
                }
                Res::Leaf(Out::str(store::sha256_hex(&buf)))
            }
            (Obj::Contents { path, .. }, "path") => Res::Leaf(Out::str(store::show_path(path))),
            (Obj::Contents { value, .. }, "value") => {
                Res::Leaf(Out::str(String::from_utf8_lossy(value)))
            }
            (Obj::Contents { value, .. }, "hash") => Res::Leaf(Out::str(store::sha256_hex(value))),
            (Obj::Commit(c), "hash" | "key") => Res::Leaf(Out::str(c.hash.clone())),
            (Obj::Commit(c), "info") => Res::Obj(Obj::Info(c.clone())),
            (Obj::Commit(c), "parents") => Res::List(
                c.parents
                    .iter()
                    .map(|p| Res::Leaf(Out::str(p.clone())))
                    .collect(),
            ),
            (Obj::Info(c), "date") => Res::Leaf(Out::str(c.date.to_string())),
            (Obj::Info(c), "author") => Res::Leaf(Out::str(c.author.clone())),
            (Obj::Info(c), "message") => Res::Leaf(Out::str(c.message.clone())),
            (o, f) => return Err(format!("internal: no resolver for {}.{f}", o.type_name())),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// graphql-parser 0.4.1 slices a block string mid-character when lines
    /// are indented with different non-ASCII whitespace; with the
    /// workspace's `panic = "abort"` that would kill the server, so
    /// `prescan` rejects such block strings first.
    #[test]
    fn prescan_guards_the_parser() {
        let bad = "{ main { tree { get(path: \"\"\"x\n\u{a0}a\n\u{3000}b\"\"\") } } }";
        assert!(std::panic::catch_unwind(|| {
            let _ = q::parse_query::<&str>(bad);
        })
        .is_err());
        assert!(prescan(bad).is_err());
        assert!(prescan(&"[".repeat(MAX_NESTING + 1)).is_err());
        assert!(prescan(&format!("\"{}\" # {}", "{".repeat(100), "(".repeat(100))).is_ok());
        assert!(prescan("{ a(x: \"\"\" \\\"\"\" { \"\"\") }").is_ok());
    }

    #[test]
    fn types() {
        let t = GType::parse("[Contents!]!");
        assert_eq!(t.show(), "[Contents!]!");
        assert_eq!(t.base(), "Contents");
        let nn = GType::parse("BranchName!");
        let n = GType::parse("BranchName");
        assert!(compatible(&nn, &n, false));
        assert!(!compatible(&n, &nn, false));
        assert!(compatible(&n, &nn, true));
        assert!(!compatible(
            &GType::parse("String!"),
            &GType::parse("Path!"),
            false
        ));
    }
}
