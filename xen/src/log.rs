//! The kernel log: one line per record, `[seconds.micros] LEVEL message`,
//! written to every registered sink (port 0xe9 early, the PV console once it
//! is up).

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Level {
    Error = 1,
    Warn = 2,
    Info = 3,
    Debug = 4,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Error => "ERROR",
            Level::Warn => "WARN ",
            Level::Info => "INFO ",
            Level::Debug => "DEBUG",
        }
    }
}

/// Somewhere log lines go. Implementations serialise internally.
pub trait Sink: Sync {
    fn write(&self, bytes: &[u8]);
    /// Waits (boundedly) until what was written has left the guest.
    fn flush(&self) {}
}

const MAX_SINKS: usize = 4;
pub const MAX_LINE: usize = 480;

static SINKS: spin::Mutex<heapless::Vec<&'static dyn Sink, MAX_SINKS>> =
    spin::Mutex::new(heapless::Vec::new());
static MAX_LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);
/// `fn() -> u64` giving nanoseconds since boot, stored as usize (0 = none).
static CLOCK: AtomicUsize = AtomicUsize::new(0);

pub fn add_sink(sink: &'static dyn Sink) {
    let _ = SINKS.lock().push(sink);
}

pub fn remove_sink(sink: &'static dyn Sink) {
    SINKS.lock().retain(|s| !core::ptr::addr_eq(*s as *const dyn Sink, sink as *const dyn Sink));
}

pub fn set_level(level: Level) {
    MAX_LEVEL.store(level as u8, Ordering::Relaxed);
}

pub fn enabled(level: Level) -> bool {
    level as u8 <= MAX_LEVEL.load(Ordering::Relaxed)
}

pub fn set_clock(now_ns: fn() -> u64) {
    CLOCK.store(now_ns as usize, Ordering::Relaxed);
}

fn now_ns() -> u64 {
    match CLOCK.load(Ordering::Relaxed) {
        0 => 0,
        // SAFETY: only `set_clock` stores non-zero values, always a `fn() -> u64`.
        f => unsafe { core::mem::transmute::<usize, fn() -> u64>(f)() },
    }
}

/// A fixed buffer that keeps what fits and marks the cut.
pub struct LineBuf {
    buf: [u8; MAX_LINE],
    len: usize,
    truncated: bool,
}

impl LineBuf {
    pub const fn new() -> Self {
        LineBuf { buf: [0; MAX_LINE], len: 0, truncated: false }
    }
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
    /// Ends the line: "~" marks a cut, then a newline.
    pub fn finish(&mut self) -> &[u8] {
        let room = MAX_LINE - 2;
        if self.truncated || self.len > room {
            self.len = self.len.min(room);
            self.buf[self.len] = b'~';
            self.len += 1;
        }
        self.buf[self.len] = b'\n';
        self.len += 1;
        &self.buf[..self.len]
    }
}

impl Default for LineBuf {
    fn default() -> Self {
        Self::new()
    }
}

impl Write for LineBuf {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = MAX_LINE - 2 - self.len;
        // Newlines inside a record would forge extra log lines.
        for (i, b) in s.bytes().enumerate() {
            if i >= room {
                self.truncated = true;
                break;
            }
            self.buf[self.len] = if b == b'\n' || b == b'\r' { b' ' } else { b };
            self.len += 1;
        }
        Ok(())
    }
}

/// Formats one record: `[    1.234567] INFO  message`.
pub fn format(line: &mut LineBuf, ns: u64, level: Level, args: fmt::Arguments<'_>) {
    let _ = write!(line, "[{:5}.{:06}] {} ", ns / 1_000_000_000, (ns / 1000) % 1_000_000, level.as_str());
    let _ = line.write_fmt(args);
}

pub fn log(level: Level, args: fmt::Arguments<'_>) {
    if !enabled(level) {
        return;
    }
    let mut line = LineBuf::new();
    format(&mut line, now_ns(), level, args);
    let bytes = line.finish();
    // A fault while a line is being written must still be reported: never
    // wait for the lock here.
    if let Some(sinks) = SINKS.try_lock() {
        for s in sinks.iter() {
            s.write(bytes);
        }
    }
}

/// Waits until every sink has handed its output over.
pub fn flush() {
    if let Some(sinks) = SINKS.try_lock() {
        for s in sinks.iter() {
            s.flush();
        }
    }
}

#[macro_export]
macro_rules! error { ($($t:tt)*) => { $crate::log::log($crate::log::Level::Error, format_args!($($t)*)) } }
#[macro_export]
macro_rules! warn { ($($t:tt)*) => { $crate::log::log($crate::log::Level::Warn, format_args!($($t)*)) } }
#[macro_export]
macro_rules! info { ($($t:tt)*) => { $crate::log::log($crate::log::Level::Info, format_args!($($t)*)) } }
#[macro_export]
macro_rules! debug { ($($t:tt)*) => { $crate::log::log($crate::log::Level::Debug, format_args!($($t)*)) } }

#[cfg(test)]
mod tests {
    use super::*;

    fn render(ns: u64, level: Level, args: fmt::Arguments<'_>) -> std::string::String {
        let mut l = LineBuf::new();
        format(&mut l, ns, level, args);
        std::string::String::from_utf8(l.finish().to_vec()).unwrap()
    }

    #[test]
    fn line_has_timestamp_and_level() {
        assert_eq!(render(12_345_678_901, Level::Info, format_args!("ready")), "[   12.345678] INFO  ready\n");
        assert_eq!(render(0, Level::Error, format_args!("x")), "[    0.000000] ERROR x\n");
    }

    #[test]
    fn embedded_newlines_cannot_forge_lines() {
        assert_eq!(render(0, Level::Warn, format_args!("a\nPASS b")), "[    0.000000] WARN  a PASS b\n");
    }

    #[test]
    fn long_records_are_cut_and_marked() {
        let long = "x".repeat(2000);
        let out = render(0, Level::Info, format_args!("{long}"));
        assert_eq!(out.len(), MAX_LINE);
        assert!(out.ends_with("~\n"));
    }
}
