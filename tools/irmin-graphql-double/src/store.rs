//! The on-disk store: one directory per branch.
//!
//! ```text
//! ROOT/<branch>/tree/<seg>/<seg>/...   one plain file per value
//! ROOT/<branch>/commits                append-only log, one JSON object a line
//! ROOT/<branch>/.tmp-*                 temporary files (renamed into tree/)
//! ```
//!
//! Every read and write of a branch holds that branch's mutex, so a
//! `test_and_set` is atomic with respect to every other request.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path as FsPath, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use crate::out::Out;

/// A path inside a branch's tree, as a list of steps.
pub type Steps = Vec<String>;

#[derive(Clone, Debug, PartialEq)]
pub struct Commit {
    pub hash: String,
    pub parents: Vec<String>,
    pub author: String,
    pub message: String,
    pub date: u64,
}

/// Commit information given by the client (`InfoInput`).
#[derive(Clone, Debug, Default)]
pub struct Info {
    pub author: Option<String>,
    pub message: Option<String>,
    pub allow_empty: bool,
}

pub enum Kind {
    Absent,
    Contents,
    Node,
}

pub enum Op<'a> {
    Set(&'a [u8]),
    Remove,
    /// `test`: expected current value (`None` = absent);
    /// `set`: new value (`None` = remove).
    TestAndSet {
        test: Option<&'a [u8]>,
        set: Option<&'a [u8]>,
    },
}

impl Op<'_> {
    fn name(&self) -> &'static str {
        match self {
            Op::Set(_) => "set",
            Op::Remove => "remove",
            Op::TestAndSet { .. } => "test_and_set",
        }
    }
}

pub struct Store {
    root: PathBuf,
    read_only: bool,
    locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    tmp_counter: AtomicU64,
}

/// Irmin prints paths with a leading slash; the root is "/".
pub fn show_path(steps: &[String]) -> String {
    let mut s = String::new();
    for step in steps {
        s.push('/');
        s.push_str(step);
    }
    if s.is_empty() {
        s.push('/');
    }
    s
}

/// Accepts "/a/b", "a/b", "" and "/" (the root).  Steps must be non-empty,
/// not "." or "..", and free of NUL (they become file names).
pub fn parse_path(s: &str) -> Result<Steps, String> {
    let body = s.strip_prefix('/').unwrap_or(s);
    if body.is_empty() {
        return Ok(Vec::new());
    }
    let mut steps = Vec::new();
    for seg in body.split('/') {
        if seg.is_empty() || seg == "." || seg == ".." || seg.contains('\0') {
            return Err(format!(
                "invalid path {}: steps must be non-empty, not \".\" or \"..\", and contain no NUL",
                Out::str(s).to_json()
            ));
        }
        steps.push(seg.to_string());
    }
    Ok(steps)
}

/// Branch names become directory names: `[A-Za-z0-9._-]+`, not starting
/// with a dot.
pub fn valid_branch(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name.len() <= 255
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

fn is_absent(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

fn io_msg(what: &str, p: &FsPath, e: &io::Error) -> String {
    format!("store I/O error: {what} {}: {e}", p.display())
}

impl Store {
    pub fn new(root: PathBuf, read_only: bool) -> Store {
        Store {
            root,
            read_only,
            locks: Mutex::new(HashMap::new()),
            tmp_counter: AtomicU64::new(0),
        }
    }

    pub fn read_only(&self) -> bool {
        self.read_only
    }

    fn branch_lock(&self, branch: &str) -> Arc<Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        locks.entry(branch.to_string()).or_default().clone()
    }

    fn with_branch<R>(&self, branch: &str, f: impl FnOnce() -> R) -> R {
        let lock = self.branch_lock(branch);
        let _guard: MutexGuard<()> = lock.lock().unwrap_or_else(|e| e.into_inner());
        f()
    }

    fn branch_dir(&self, branch: &str) -> PathBuf {
        self.root.join(branch)
    }

    fn tree_dir(&self, branch: &str) -> PathBuf {
        self.branch_dir(branch).join("tree")
    }

    fn fs_path(&self, branch: &str, steps: &[String]) -> PathBuf {
        let mut p = self.tree_dir(branch);
        for s in steps {
            p.push(s);
        }
        p
    }

    /// Branch names: directories under the root that are valid names.
    pub fn branches(&self) -> Result<Vec<String>, String> {
        let rd = match fs::read_dir(&self.root) {
            Ok(rd) => rd,
            Err(e) if is_absent(&e) => return Ok(Vec::new()),
            Err(e) => return Err(io_msg("listing", &self.root, &e)),
        };
        let mut out = Vec::new();
        for ent in rd {
            let ent = ent.map_err(|e| io_msg("listing", &self.root, &e))?;
            if let Ok(name) = ent.file_name().into_string() {
                if valid_branch(&name) && ent.path().is_dir() {
                    out.push(name);
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// The contents at `steps`, or `None` if absent or a node.
    pub fn find(&self, branch: &str, steps: &[String]) -> Result<Option<Vec<u8>>, String> {
        self.with_branch(branch, || self.find_unlocked(branch, steps))
    }

    fn find_unlocked(&self, branch: &str, steps: &[String]) -> Result<Option<Vec<u8>>, String> {
        let p = self.fs_path(branch, steps);
        match fs::metadata(&p) {
            Ok(m) if m.is_dir() => return Ok(None),
            Ok(_) => {}
            Err(e) if is_absent(&e) => return Ok(None),
            Err(e) => return Err(io_msg("reading", &p, &e)),
        }
        match fs::read(&p) {
            Ok(v) => Ok(Some(v)),
            Err(e) if is_absent(&e) => Ok(None),
            Err(e) => Err(io_msg("reading", &p, &e)),
        }
    }

    /// What is at `steps`.  A directory holding no contents (only possible
    /// when made by hand) counts as absent, as Irmin has no empty nodes;
    /// the root is always a node.
    pub fn kind(&self, branch: &str, steps: &[String]) -> Result<Kind, String> {
        self.with_branch(branch, || {
            let p = self.fs_path(branch, steps);
            match fs::metadata(&p) {
                Ok(m) if m.is_dir() => {
                    if steps.is_empty() || !self.list_unlocked(branch, steps)?.is_empty() {
                        Ok(Kind::Node)
                    } else {
                        Ok(Kind::Absent)
                    }
                }
                Ok(_) => Ok(Kind::Contents),
                Err(e) if is_absent(&e) => {
                    if steps.is_empty() {
                        Ok(Kind::Node)
                    } else {
                        Ok(Kind::Absent)
                    }
                }
                Err(e) => Err(io_msg("reading", &p, &e)),
            }
        })
    }

    /// All contents under `steps` (or the contents at `steps` itself), in
    /// the order Irmin's `list_contents_recursively` produces them.
    pub fn list(&self, branch: &str, steps: &[String]) -> Result<Vec<(Steps, Vec<u8>)>, String> {
        self.with_branch(branch, || self.list_unlocked(branch, steps))
    }

    fn list_unlocked(
        &self,
        branch: &str,
        steps: &[String],
    ) -> Result<Vec<(Steps, Vec<u8>)>, String> {
        let p = self.fs_path(branch, steps);
        let mut acc = Vec::new();
        tree_list(&p, steps.to_vec(), &mut acc, 0)?;
        // `acc` holds Irmin's list back to front (see `tree_list`).
        acc.reverse();
        Ok(acc)
    }

    /// The newest commit of the branch, if any.
    pub fn head(&self, branch: &str) -> Result<Option<Commit>, String> {
        self.with_branch(branch, || self.head_unlocked(branch))
    }

    fn head_unlocked(&self, branch: &str) -> Result<Option<Commit>, String> {
        let p = self.branch_dir(branch).join("commits");
        let text = match fs::read(&p) {
            Ok(t) => t,
            Err(e) if is_absent(&e) => return Ok(None),
            Err(e) => return Err(io_msg("reading", &p, &e)),
        };
        let text = String::from_utf8_lossy(&text);
        let Some(line) = text.lines().rev().find(|l| !l.trim().is_empty()) else {
            return Ok(None);
        };
        parse_commit(line)
            .ok_or_else(|| format!("store corrupt: bad last line in {}", p.display()))
            .map(Some)
    }

    /// Applies a write and commits it.  Returns the branch head afterwards
    /// (`None` if the branch still has no commits).  Like Irmin (with
    /// `allow_empty` false), a write that changes nothing makes no commit.
    pub fn write(
        &self,
        branch: &str,
        steps: &[String],
        op: Op,
        info: &Info,
    ) -> Result<Option<Commit>, String> {
        if self.read_only {
            return Err("store is read-only".to_string());
        }
        self.with_branch(branch, || {
            let current = self.find_unlocked(branch, steps)?;
            let target: Option<&[u8]> = match &op {
                Op::Set(v) => Some(v),
                Op::Remove => None,
                Op::TestAndSet { test, set } => {
                    if current.as_deref() != *test {
                        let got = match &current {
                            Some(v) => Out::str(String::from_utf8_lossy(v)),
                            None => Out::Null,
                        };
                        return Err(Out::obj([("test-got", got)]).to_json());
                    }
                    *set
                }
            };
            if target.is_some() && steps.is_empty() {
                return Err("cannot store a value at the root path \"/\"".to_string());
            }
            let changed = match target {
                Some(v) => current.as_deref() != Some(v) || self.is_node(branch, steps),
                None => current.is_some() || self.is_node(branch, steps),
            };
            if !changed && !info.allow_empty {
                return self.head_unlocked(branch);
            }
            match target {
                Some(v) => self.put(branch, steps, v)?,
                None => self.delete(branch, steps)?,
            }
            let parent = self.head_unlocked(branch)?;
            let commit = self.append_commit(branch, parent, op.name(), steps, target, info)?;
            Ok(Some(commit))
        })
    }

    fn is_node(&self, branch: &str, steps: &[String]) -> bool {
        fs::metadata(self.fs_path(branch, steps))
            .map(|m| m.is_dir())
            .unwrap_or(false)
    }

    fn put(&self, branch: &str, steps: &[String], value: &[u8]) -> Result<(), String> {
        // A contents where a node must go is replaced by the node, and a
        // node where the contents goes is replaced by the contents (as
        // Irmin's tree does).
        let tree = self.tree_dir(branch);
        let mut dir = tree.clone();
        for s in &steps[..steps.len() - 1] {
            dir.push(s);
            if let Ok(m) = fs::symlink_metadata(&dir) {
                if !m.is_dir() {
                    fs::remove_file(&dir).map_err(|e| io_msg("replacing", &dir, &e))?;
                }
            }
        }
        fs::create_dir_all(&dir).map_err(|e| io_msg("creating", &dir, &e))?;
        let target = dir.join(&steps[steps.len() - 1]);
        if let Ok(m) = fs::symlink_metadata(&target) {
            if m.is_dir() {
                fs::remove_dir_all(&target).map_err(|e| io_msg("replacing", &target, &e))?;
            }
        }
        let n = self.tmp_counter.fetch_add(1, Ordering::Relaxed);
        let tmp = self
            .branch_dir(branch)
            .join(format!(".tmp-{}-{n}", std::process::id()));
        let res = (|| {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(value)?;
            f.sync_all()?;
            fs::rename(&tmp, &target)
        })();
        if let Err(e) = res {
            let _ = fs::remove_file(&tmp);
            return Err(io_msg("writing", &target, &e));
        }
        Ok(())
    }

    fn delete(&self, branch: &str, steps: &[String]) -> Result<(), String> {
        let tree = self.tree_dir(branch);
        let target = self.fs_path(branch, steps);
        match fs::symlink_metadata(&target) {
            Ok(m) if m.is_dir() => {
                if steps.is_empty() {
                    // Removing the root empties the tree.
                    for ent in fs::read_dir(&target).map_err(|e| io_msg("listing", &target, &e))? {
                        let ent = ent.map_err(|e| io_msg("listing", &target, &e))?;
                        let p = ent.path();
                        let r = if p.is_dir() {
                            fs::remove_dir_all(&p)
                        } else {
                            fs::remove_file(&p)
                        };
                        r.map_err(|e| io_msg("removing", &p, &e))?;
                    }
                    return Ok(());
                }
                fs::remove_dir_all(&target).map_err(|e| io_msg("removing", &target, &e))?
            }
            Ok(_) => fs::remove_file(&target).map_err(|e| io_msg("removing", &target, &e))?,
            Err(e) if is_absent(&e) => return Ok(()),
            Err(e) => return Err(io_msg("removing", &target, &e)),
        }
        // Prune directories left empty, up to (not including) tree/.
        let mut dir = target.parent().map(|p| p.to_path_buf());
        while let Some(d) = dir {
            if d == tree || !d.starts_with(&tree) {
                break;
            }
            if fs::remove_dir(&d).is_err() {
                break; // not empty (or gone): stop
            }
            dir = d.parent().map(|p| p.to_path_buf());
        }
        Ok(())
    }

    fn append_commit(
        &self,
        branch: &str,
        parent: Option<Commit>,
        op: &str,
        steps: &[String],
        value: Option<&[u8]>,
        info: &Info,
    ) -> Result<Commit, String> {
        let date = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let author = info.author.clone().unwrap_or_default();
        let message = info.message.clone().unwrap_or_default();
        let parents: Vec<String> = parent.map(|c| c.hash).into_iter().collect();
        let path = show_path(steps);

        let mut h = Sha256::new();
        let mut field = |b: &[u8]| {
            h.update((b.len() as u64).to_le_bytes());
            h.update(b);
        };
        field(parents.first().map(|s| s.as_bytes()).unwrap_or(b""));
        field(op.as_bytes());
        field(path.as_bytes());
        match value {
            Some(v) => {
                field(b"some");
                field(v)
            }
            None => field(b"none"),
        }
        field(author.as_bytes());
        field(message.as_bytes());
        field(&date.to_le_bytes());
        let hash = hex(&h.finalize());

        let line = Out::obj([
            ("hash", Out::str(hash.clone())),
            (
                "parents",
                Out::List(parents.iter().map(|p| Out::str(p.clone())).collect()),
            ),
            ("author", Out::str(author.clone())),
            ("message", Out::str(message.clone())),
            ("date", Out::Int(date as i64)),
            ("op", Out::str(op)),
            ("path", Out::str(path)),
        ])
        .to_json();
        let p = self.branch_dir(branch).join("commits");
        let res = (|| {
            let mut f = fs::OpenOptions::new().create(true).append(true).open(&p)?;
            f.write_all(format!("{line}\n").as_bytes())?;
            f.sync_data()
        })();
        res.map_err(|e| io_msg("appending to", &p, &e))?;
        Ok(Commit {
            hash,
            parents,
            author,
            message,
            date,
        })
    }
}

/// Irmin's `list_contents_recursively`, step for step: a fold over the
/// sorted children that prepends into one accumulator, then reverses it at
/// every node.  (Hence the result is sorted for flat directories but not in
/// general -- don't rely on the order.)  `acc` holds Irmin's list back to
/// front: a push is Irmin's cons, and reversing it is Irmin's `List.rev`.
fn tree_list(
    p: &FsPath,
    steps: Steps,
    acc: &mut Vec<(Steps, Vec<u8>)>,
    depth: usize,
) -> Result<(), String> {
    if depth > 256 {
        return Err(format!("store: tree too deep at {}", p.display()));
    }
    let meta = match fs::metadata(p) {
        Ok(m) => m,
        Err(e) if is_absent(&e) => return Ok(()),
        Err(e) => return Err(io_msg("reading", p, &e)),
    };
    if !meta.is_dir() {
        let v = fs::read(p).map_err(|e| io_msg("reading", p, &e))?;
        acc.push((steps, v));
        return Ok(());
    }
    let mut names: Vec<(String, PathBuf)> = Vec::new();
    for ent in fs::read_dir(p).map_err(|e| io_msg("listing", p, &e))? {
        let ent = ent.map_err(|e| io_msg("listing", p, &e))?;
        names.push((ent.file_name().to_string_lossy().into_owned(), ent.path()));
    }
    names.sort();
    for (name, child) in names {
        let mut s = steps.clone();
        s.push(name);
        tree_list(&child, s, acc, depth + 1)?;
    }
    acc.reverse();
    Ok(())
}

fn parse_commit(line: &str) -> Option<Commit> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
    Some(Commit {
        hash: s("hash")?,
        parents: v
            .get("parents")
            .and_then(|p| p.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
        author: s("author").unwrap_or_default(),
        message: s("message").unwrap_or_default(),
        date: v.get("date").and_then(|d| d.as_u64()).unwrap_or(0),
    })
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn sha256_hex(b: &[u8]) -> String {
    hex(&Sha256::digest(b))
}
