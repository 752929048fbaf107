//! Boot configuration: parsing and validation of the PVH kernel command line.
//!
//! The command line is a whitespace-separated list of `key=value` tokens, e.g.
//!
//! ```text
//! ext=10.0.0.2/24 gw=10.0.0.1 int=192.168.252.1/24 mgmt=10.0.1.3/24 port=8080
//! irmin=10.0.1.1:8081 key=<hex secret> flows=65536 rules=4096 roles=ext:0,int:1,mgmt:2
//! ```
//!
//! [`parse`] turns it into a fully validated [`Config`] or a [`ConfigError`]
//! whose `Display` is one line naming the offending key and what is wrong
//! with it. The kernel prints that line and powers the domain off; it never
//! runs half-configured. `docs/CONFIG.md` is the operator reference.
//!
//! Everything here is `no_std` and heap-free, and no input can make the
//! parser panic: it only uses checked arithmetic and non-panicking accessors
//! (enforced for non-test builds by the clippy lints below).
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

use core::fmt;
use core::net::{Ipv4Addr, SocketAddrV4};
use core::str::FromStr;

use heapless::{String, Vec};

/// Longest command line accepted, in bytes.
pub const MAX_CMDLINE_LEN: usize = 2048;
/// Default management API TCP port.
pub const DEFAULT_PORT: u16 = 8080;
/// Default translation (flow) table capacity.
pub const DEFAULT_FLOWS: u32 = 65536;
/// Smallest accepted `flows=`.
pub const MIN_FLOWS: u32 = 16;
/// Largest accepted `flows=`.
pub const MAX_FLOWS: u32 = 1_048_576;
/// Default gatekeeper rule capacity.
pub const DEFAULT_RULES: u32 = 4096;
/// Smallest accepted `rules=`.
pub const MIN_RULES: u32 = 1;
/// Largest accepted `rules=`.
pub const MAX_RULES: u32 = 65536;
/// Largest accepted vif device id in `roles=`.
pub const MAX_DEVID: u32 = 15;
/// Fewest hex digits accepted in `key=` (16 bytes).
pub const MIN_KEY_HEX_DIGITS: usize = 32;
/// Most hex digits accepted in `key=` (64 bytes).
pub const MAX_KEY_HEX_DIGITS: usize = 128;
/// Longest decoded shared secret, in bytes.
pub const MAX_KEY_LEN: usize = MAX_KEY_HEX_DIGITS / 2;
/// Longest `irmin_branch=` / `irmin_prefix=` value, in bytes.
pub const MAX_NAME_LEN: usize = 64;
/// Default Irmin branch.
pub const DEFAULT_IRMIN_BRANCH: &str = "main";
/// Default path prefix of the bridge's data inside the Irmin store.
pub const DEFAULT_IRMIN_PREFIX: &str = "bridge";
/// Capacity of [`ConfigError::key`].
pub const ERROR_KEY_LEN: usize = 16;
/// Capacity of an [`Excerpt`].
pub const EXCERPT_LEN: usize = 32;

// ---------------------------------------------------------------------------
// Ipv4Cidr
// ---------------------------------------------------------------------------

/// An IPv4 interface address with its prefix length, e.g. `10.0.0.2/24`.
///
/// The fields are public, so `prefix_len` may exceed 32 in a hand-built
/// value; every method then treats it as 32 (and never panics).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ipv4Cidr {
    /// The address itself (normally a host address, not the network address).
    pub addr: Ipv4Addr,
    /// Prefix length, 0..=32.
    pub prefix_len: u8,
}

impl Ipv4Cidr {
    /// `addr/prefix_len`, or `None` if `prefix_len > 32`.
    pub const fn new(addr: Ipv4Addr, prefix_len: u8) -> Option<Self> {
        if prefix_len > 32 {
            None
        } else {
            Some(Self { addr, prefix_len })
        }
    }

    /// The netmask as a `u32` (`/24` -> `0xffff_ff00`).
    pub fn mask(&self) -> u32 {
        let len = u32::from(self.prefix_len.min(32));
        // `len` is at most 32, so the subtraction cannot wrap; a shift by 32
        // (prefix 0) yields `None` and thus the empty mask.
        u32::MAX.checked_shl(32u32.saturating_sub(len)).unwrap_or(0)
    }

    /// The netmask (`/24` -> `255.255.255.0`).
    pub fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.mask())
    }

    /// The network address (host bits cleared).
    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & self.mask())
    }

    /// The directed broadcast address (host bits set).
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !self.mask())
    }

    /// This subnet in canonical form (`10.0.0.2/24` -> `10.0.0.0/24`).
    pub fn subnet(&self) -> Ipv4Cidr {
        Ipv4Cidr {
            addr: self.network(),
            prefix_len: self.prefix_len.min(32),
        }
    }

    /// Whether `ip` lies inside this subnet.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        (u32::from(ip) & self.mask()) == (u32::from(self.addr) & self.mask())
    }

    /// Whether the two subnets share at least one address.
    pub fn overlaps(&self, other: &Ipv4Cidr) -> bool {
        // Two prefixes overlap iff they agree under the shorter mask.
        let shorter = if self.prefix_len <= other.prefix_len {
            self.mask()
        } else {
            other.mask()
        };
        (u32::from(self.addr) & shorter) == (u32::from(other.addr) & shorter)
    }

    /// Whether `ip` is the network or broadcast address of this subnet,
    /// which is only meaningful for prefixes up to /30 (a /31 or /32 has no
    /// such reserved addresses).
    fn is_reserved_in_subnet(&self, ip: Ipv4Addr) -> bool {
        self.prefix_len <= 30
            && self.contains(ip)
            && (ip == self.network() || ip == self.broadcast())
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

// ---------------------------------------------------------------------------
// Roles
// ---------------------------------------------------------------------------

/// What a virtual interface is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// The outside world (`ext`): translated addresses, default gateway.
    External,
    /// The protected inside network (`int`).
    Internal,
    /// The management network (`mgmt`): API and Irmin.
    Management,
}

impl Role {
    /// All roles, in canonical order.
    pub const ALL: [Role; 3] = [Role::External, Role::Internal, Role::Management];

    /// The name used on the command line: `ext`, `int` or `mgmt`.
    pub const fn name(self) -> &'static str {
        match self {
            Role::External => "ext",
            Role::Internal => "int",
            Role::Management => "mgmt",
        }
    }

    /// Inverse of [`Role::name`].
    pub fn from_name(name: &str) -> Option<Role> {
        match name {
            "ext" => Some(Role::External),
            "int" => Some(Role::Internal),
            "mgmt" => Some(Role::Management),
            _ => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which Xen vif device id plays which [`Role`]: a bijection between the
/// three roles and three distinct device ids in `0..=MAX_DEVID`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RoleMap {
    ext: u32,
    int: u32,
    mgmt: u32,
}

impl RoleMap {
    /// A role map, or `None` unless the ids are distinct and `<= MAX_DEVID`.
    pub const fn new(ext: u32, int: u32, mgmt: u32) -> Option<Self> {
        if ext > MAX_DEVID || int > MAX_DEVID || mgmt > MAX_DEVID {
            return None;
        }
        if ext == int || ext == mgmt || int == mgmt {
            return None;
        }
        Some(Self { ext, int, mgmt })
    }

    /// The vif device id that plays `role`.
    pub const fn devid(&self, role: Role) -> u32 {
        match role {
            Role::External => self.ext,
            Role::Internal => self.int,
            Role::Management => self.mgmt,
        }
    }

    /// The role played by vif `devid`, if any.
    pub fn role_of(&self, devid: u32) -> Option<Role> {
        Role::ALL.into_iter().find(|&r| self.devid(r) == devid)
    }
}

impl Default for RoleMap {
    /// `ext:0,int:1,mgmt:2`.
    fn default() -> Self {
        Self {
            ext: 0,
            int: 1,
            mgmt: 2,
        }
    }
}

impl fmt::Display for RoleMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ext:{},int:{},mgmt:{}", self.ext, self.int, self.mgmt)
    }
}

// ---------------------------------------------------------------------------
// Log level
// ---------------------------------------------------------------------------

/// Console verbosity (`loglvl=`); ordered from least to most verbose.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Errors and warnings.
    Warn,
    /// Normal operational messages (the default).
    #[default]
    Info,
    /// Everything.
    Debug,
}

impl LogLevel {
    /// The name used on the command line.
    pub const fn name(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
        }
    }

    /// Inverse of [`LogLevel::name`].
    pub fn from_name(name: &str) -> Option<LogLevel> {
        match name {
            "error" => Some(LogLevel::Error),
            "warn" => Some(LogLevel::Warn),
            "info" => Some(LogLevel::Info),
            "debug" => Some(LogLevel::Debug),
            _ => None,
        }
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

// ---------------------------------------------------------------------------
// Irmin endpoint
// ---------------------------------------------------------------------------

/// Where and under which names the rules are persisted (`irmin=`,
/// `irmin_branch=`, `irmin_prefix=`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IrminEndpoint {
    /// Address and port of the Irmin GraphQL server (inside the mgmt subnet).
    pub addr: SocketAddrV4,
    /// Branch to read and commit to; default `main`.
    pub branch: String<MAX_NAME_LEN>,
    /// Path prefix of the bridge's data in the store; default `bridge`.
    pub prefix: String<MAX_NAME_LEN>,
}

impl fmt::Display for IrminEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} branch {} prefix {}",
            self.addr, self.branch, self.prefix
        )
    }
}

// ---------------------------------------------------------------------------
// Config
// ---------------------------------------------------------------------------

/// A complete, validated configuration.
///
/// Invariants established by [`parse`]: the three subnets are host addresses
/// that do not overlap, `gw` is a host of the `ext` subnet other than `ext`
/// itself, `irmin` (if any) is a host of the `mgmt` subnet other than `mgmt`
/// itself, `key` is `Some` whenever `auth` is on, and every number is in the
/// range documented on its constant.
///
/// `Debug` and `Display` never show the secret, only its length.
#[derive(Clone, PartialEq, Eq)]
pub struct Config {
    /// External interface address and subnet.
    pub ext: Ipv4Cidr,
    /// Default gateway, inside the `ext` subnet.
    pub gw: Ipv4Addr,
    /// Internal interface address and subnet.
    pub int: Ipv4Cidr,
    /// Management interface address and subnet.
    pub mgmt: Ipv4Cidr,
    /// Management API TCP port.
    pub port: u16,
    /// Persistence endpoint; `None` keeps the rules in memory only.
    pub irmin: Option<IrminEndpoint>,
    /// Decoded shared secret for request authentication (16..=64 bytes).
    pub key: Option<Vec<u8, MAX_KEY_LEN>>,
    /// Whether management requests must be authenticated.
    pub auth: bool,
    /// Translation table capacity.
    pub flows: u32,
    /// Gatekeeper rule capacity.
    pub rules: u32,
    /// Which vif plays which role.
    pub roles: RoleMap,
    /// Console verbosity.
    pub log_level: LogLevel,
}

impl Config {
    /// Parse and validate a kernel command line; see [`parse`].
    pub fn parse(cmdline: &str) -> Result<Config, ConfigError> {
        parse(cmdline)
    }

    /// The interface address and subnet of `role`.
    pub fn cidr(&self, role: Role) -> Ipv4Cidr {
        match role {
            Role::External => self.ext,
            Role::Internal => self.int,
            Role::Management => self.mgmt,
        }
    }
}

impl FromStr for Config {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse(s)
    }
}

/// Shows `<set, N bytes>` or `<unset>` instead of the secret.
struct Redacted<'a>(&'a Option<Vec<u8, MAX_KEY_LEN>>);

impl fmt::Display for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(k) => write!(f, "<set, {} bytes>", k.len()),
            None => f.write_str("<unset>"),
        }
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("ext", &self.ext)
            .field("gw", &self.gw)
            .field("int", &self.int)
            .field("mgmt", &self.mgmt)
            .field("port", &self.port)
            .field("irmin", &self.irmin)
            .field("key", &format_args!("{}", Redacted(&self.key)))
            .field("auth", &self.auth)
            .field("flows", &self.flows)
            .field("rules", &self.rules)
            .field("roles", &self.roles)
            .field("log_level", &self.log_level)
            .finish()
    }
}

impl fmt::Display for Config {
    /// A short boot-banner summary, one item per line, lines separated by
    /// `\n` (no trailing newline). The secret is shown as `key=<set, N bytes>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = &self.roles;
        writeln!(
            f,
            "ext    {} via {} on vif {}",
            self.ext,
            self.gw,
            r.devid(Role::External)
        )?;
        writeln!(f, "int    {} on vif {}", self.int, r.devid(Role::Internal))?;
        writeln!(
            f,
            "mgmt   {} on vif {}, api port {}",
            self.mgmt,
            r.devid(Role::Management),
            self.port
        )?;
        match &self.irmin {
            Some(irmin) => writeln!(f, "irmin  {irmin}")?,
            None => writeln!(f, "irmin  none (rules in memory only)")?,
        }
        let key = Redacted(&self.key);
        match (self.auth, self.key.is_some()) {
            (true, _) => writeln!(f, "auth   on, key={key}")?,
            (false, true) => writeln!(f, "auth   off, key={key} (unused)")?,
            (false, false) => writeln!(f, "auth   off, key={key}")?,
        }
        writeln!(f, "tables flows={} rules={}", self.flows, self.rules)?;
        write!(f, "loglvl {}", self.log_level)
    }
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// A short, printable copy of (part of) an offending value, for error
/// messages: at most [`EXCERPT_LEN`] bytes, anything but printable ASCII
/// (and `"`/`\`) replaced by `?`, long values cut with `...`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Excerpt(String<EXCERPT_LEN>);

impl Excerpt {
    /// An excerpt of `s`.
    pub fn new(s: &str) -> Self {
        Excerpt(sanitized(s))
    }

    /// The (sanitized) text.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl fmt::Display for Excerpt {
    /// The excerpt in double quotes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\"", self.0)
    }
}

/// Copy `s` into a bounded string, replacing anything that is not printable
/// ASCII (and the quote/backslash characters) by `?` and ending a cut-off
/// copy with `...`. Never panics.
fn sanitized<const N: usize>(s: &str) -> String<N> {
    let mut out = String::new();
    let cut = s.len() > N;
    let room = if cut { N.saturating_sub(3) } else { N };
    for ch in s.chars() {
        if out.len() >= room {
            break;
        }
        let c = match ch {
            '"' | '\\' => '?',
            c if c.is_ascii_graphic() || c == ' ' => c,
            _ => '?',
        };
        // Each pushed char is one byte, and `out.len() < room <= N`.
        let _ = out.push(c);
    }
    if cut {
        let _ = out.push_str("...");
    }
    out
}

/// What is wrong; see [`ConfigError`]. `Display` gives the problem part of
/// the error line (without the key). No variant ever carries the secret.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigProblem {
    /// The whole command line is longer than [`MAX_CMDLINE_LEN`] bytes.
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// A token contains a NUL, control or non-ASCII byte.
    InvalidByte {
        /// The byte.
        byte: u8,
        /// Its offset inside the token.
        offset: usize,
    },
    /// A token without `=`.
    NotKeyValue,
    /// A token that starts with `=`.
    EmptyKeyName,
    /// A key this parser does not know.
    UnknownKey,
    /// A key given more than once.
    Duplicate,
    /// A mandatory key is absent.
    Missing,
    /// `key=` is absent while `auth` is on.
    MissingWithAuth,
    /// `key=` with nothing after the `=`.
    EmptyValue,
    /// Not `a.b.c.d/len`.
    MalformedCidr(Excerpt),
    /// Prefix length 0 or greater than 32.
    PrefixLenOutOfRange(Excerpt),
    /// Not `a.b.c.d`.
    MalformedAddress(Excerpt),
    /// Not `a.b.c.d:port`.
    MalformedEndpoint(Excerpt),
    /// Unspecified, `0.0.0.0/8`, loopback, multicast or reserved/broadcast.
    NotUnicast(Ipv4Addr),
    /// The address is the network address of its subnet.
    NetworkAddress(Ipv4Cidr),
    /// The address is the broadcast address of its subnet.
    BroadcastAddress(Ipv4Cidr),
    /// Not a decimal number.
    MalformedNumber(Excerpt),
    /// A number outside its range.
    OutOfRange {
        /// The value as given.
        value: Excerpt,
        /// Smallest accepted value.
        min: u32,
        /// Largest accepted value.
        max: u32,
    },
    /// Not one of a fixed set of words.
    NotOneOf {
        /// The value as given.
        value: Excerpt,
        /// The accepted words, `|`-separated.
        expected: &'static str,
    },
    /// The secret has the wrong number of hex digits (odd or out of range).
    KeyLength {
        /// Number of characters given.
        digits: usize,
    },
    /// The secret contains a non-hex character (its value is not shown).
    KeyNotHex {
        /// 0-based position of the first bad character.
        position: usize,
    },
    /// An `irmin_branch`/`irmin_prefix` value that is not acceptable.
    BadName {
        /// The value as given.
        value: Excerpt,
        /// Why.
        reason: &'static str,
    },
    /// `irmin_branch`/`irmin_prefix` without `irmin=`.
    RequiresIrmin,
    /// `roles=` is not a list of `role:devid`.
    MalformedRoles(Excerpt),
    /// A role other than `ext`, `int` or `mgmt`.
    UnknownRole(Excerpt),
    /// A role listed twice.
    DuplicateRole(Role),
    /// A role not listed.
    MissingRole(Role),
    /// A device id above [`MAX_DEVID`].
    DevidOutOfRange(Excerpt),
    /// The same device id for two roles.
    DuplicateDevid(u32),
    /// The gateway is not inside the `ext` subnet.
    GatewayOutsideExt {
        /// The gateway.
        gw: Ipv4Addr,
        /// The `ext` subnet (canonical form).
        ext: Ipv4Cidr,
    },
    /// The gateway is the bridge's own `ext` address.
    GatewayIsOwnAddress(Ipv4Addr),
    /// Two of the ext/int/mgmt subnets overlap.
    Overlaps {
        /// The earlier key (`ext` or `int`).
        other: &'static str,
        /// Its subnet (canonical form).
        subnet: Ipv4Cidr,
    },
    /// The Irmin server is not inside the `mgmt` subnet.
    IrminOutsideMgmt {
        /// The server address.
        addr: Ipv4Addr,
        /// The `mgmt` subnet (canonical form).
        mgmt: Ipv4Cidr,
    },
    /// The Irmin server address is the bridge's own `mgmt` address.
    IrminIsOwnAddress(Ipv4Addr),
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ConfigProblem as P;
        match self {
            P::TooLong { len } => write!(
                f,
                "command line too long ({len} bytes, at most {MAX_CMDLINE_LEN})"
            ),
            P::InvalidByte { byte, offset } => write!(
                f,
                "invalid byte 0x{byte:02x} at offset {offset} of the token \
                 (only printable ASCII is allowed)"
            ),
            P::NotKeyValue => f.write_str("not a key=value token"),
            P::EmptyKeyName => f.write_str("empty key name before '='"),
            P::UnknownKey => f.write_str("unknown key"),
            P::Duplicate => f.write_str("given more than once"),
            P::Missing => f.write_str("missing (mandatory)"),
            P::MissingWithAuth => f.write_str("missing (mandatory unless auth=off)"),
            P::EmptyValue => f.write_str("empty value"),
            P::MalformedCidr(v) => write!(f, "malformed address {v} (expected a.b.c.d/len)"),
            P::PrefixLenOutOfRange(v) => {
                write!(f, "prefix length {v} out of range (expected 1..=32)")
            }
            P::MalformedAddress(v) => write!(f, "malformed address {v} (expected a.b.c.d)"),
            P::MalformedEndpoint(v) => {
                write!(f, "malformed endpoint {v} (expected a.b.c.d:port)")
            }
            P::NotUnicast(a) => write!(f, "{a} is not a unicast host address"),
            P::NetworkAddress(c) => write!(
                f,
                "{} is the network address of {} (use a host address)",
                c.addr,
                c.subnet()
            ),
            P::BroadcastAddress(c) => write!(
                f,
                "{} is the broadcast address of {} (use a host address)",
                c.addr,
                c.subnet()
            ),
            P::MalformedNumber(v) => write!(f, "malformed number {v} (expected decimal digits)"),
            P::OutOfRange { value, min, max } => {
                write!(f, "{value} out of range (expected {min}..={max})")
            }
            P::NotOneOf { value, expected } => {
                write!(f, "invalid value {value} (expected {expected})")
            }
            P::KeyLength { digits } => write!(
                f,
                "secret has {digits} characters (expected an even number of hex digits, \
                 {MIN_KEY_HEX_DIGITS}..={MAX_KEY_HEX_DIGITS})"
            ),
            P::KeyNotHex { position } => write!(
                f,
                "secret is not hexadecimal (bad character at position {position})"
            ),
            P::BadName { value, reason } => write!(f, "invalid name {value} ({reason})"),
            P::RequiresIrmin => f.write_str("given without irmin="),
            P::MalformedRoles(v) => write!(
                f,
                "malformed role map {v} (expected e.g. ext:0,int:1,mgmt:2)"
            ),
            P::UnknownRole(v) => write!(f, "unknown role {v} (expected ext, int or mgmt)"),
            P::DuplicateRole(r) => write!(f, "role {r} listed more than once"),
            P::MissingRole(r) => write!(f, "role {r} not listed (need ext, int and mgmt)"),
            P::DevidOutOfRange(v) => {
                write!(f, "device id {v} out of range (expected 0..={MAX_DEVID})")
            }
            P::DuplicateDevid(d) => write!(f, "device id {d} given to more than one role"),
            P::GatewayOutsideExt { gw, ext } => write!(f, "{gw} is outside ext subnet {ext}"),
            P::GatewayIsOwnAddress(a) => write!(f, "{a} is the bridge's own ext address"),
            P::Overlaps { other, subnet } => write!(f, "overlaps {other} {subnet}"),
            P::IrminOutsideMgmt { addr, mgmt } => write!(
                f,
                "{addr} is outside mgmt subnet {mgmt} (Irmin must be reachable without routing)"
            ),
            P::IrminIsOwnAddress(a) => write!(f, "{a} is the bridge's own mgmt address"),
        }
    }
}

/// Why a command line was rejected.
///
/// `Display` is a single line `config: <key>: <problem>`, e.g.
/// `config: gw: missing (mandatory)`; the kernel prints it and powers off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The key the error is about; for a malformed token, the token itself
    /// (sanitized like an [`Excerpt`], at most [`ERROR_KEY_LEN`] bytes);
    /// `cmdline` for errors about the whole command line.
    pub key: String<ERROR_KEY_LEN>,
    /// What is wrong.
    pub problem: ConfigProblem,
}

impl ConfigError {
    /// An error about `key` (sanitized and truncated to fit).
    pub fn new(key: &str, problem: ConfigProblem) -> Self {
        ConfigError {
            key: sanitized(key),
            problem,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "config: {}: {}", self.key, self.problem)
    }
}

impl core::error::Error for ConfigError {}

// ---------------------------------------------------------------------------
// Parser
// ---------------------------------------------------------------------------

/// The keys the command line may contain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Key {
    Ext,
    Gw,
    Int,
    Mgmt,
    Port,
    Irmin,
    IrminBranch,
    IrminPrefix,
    Secret,
    Auth,
    Flows,
    Rules,
    Roles,
    LogLvl,
}

impl Key {
    fn from_name(name: &str) -> Option<Key> {
        Some(match name {
            "ext" => Key::Ext,
            "gw" => Key::Gw,
            "int" => Key::Int,
            "mgmt" => Key::Mgmt,
            "port" => Key::Port,
            "irmin" => Key::Irmin,
            "irmin_branch" => Key::IrminBranch,
            "irmin_prefix" => Key::IrminPrefix,
            "key" => Key::Secret,
            "auth" => Key::Auth,
            "flows" => Key::Flows,
            "rules" => Key::Rules,
            "roles" => Key::Roles,
            "loglvl" => Key::LogLvl,
            _ => return None,
        })
    }

    fn bit(self) -> u16 {
        1u16 << (self as u16)
    }
}

/// Values seen so far; `None` = not given.
#[derive(Default)]
struct Partial {
    ext: Option<Ipv4Cidr>,
    gw: Option<Ipv4Addr>,
    int: Option<Ipv4Cidr>,
    mgmt: Option<Ipv4Cidr>,
    port: Option<u16>,
    irmin: Option<SocketAddrV4>,
    irmin_branch: Option<String<MAX_NAME_LEN>>,
    irmin_prefix: Option<String<MAX_NAME_LEN>>,
    key: Option<Vec<u8, MAX_KEY_LEN>>,
    auth: Option<bool>,
    flows: Option<u32>,
    rules: Option<u32>,
    roles: Option<RoleMap>,
    log_level: Option<LogLevel>,
}

/// Parse and validate a kernel command line.
///
/// Tokens are separated by ASCII whitespace; each must be `key=value` with a
/// known key given at most once and a value made of printable ASCII. Errors
/// about single tokens are reported in command-line order; then missing
/// mandatory keys (in the order ext, gw, int, mgmt, key); then the cross
/// checks (gw inside ext, non-overlapping subnets, irmin inside mgmt).
pub fn parse(cmdline: &str) -> Result<Config, ConfigError> {
    if cmdline.len() > MAX_CMDLINE_LEN {
        return Err(ConfigError::new(
            "cmdline",
            ConfigProblem::TooLong { len: cmdline.len() },
        ));
    }

    let mut seen: u16 = 0;
    let mut p = Partial::default();
    for token in cmdline.split_ascii_whitespace() {
        let (name, value) = split_token(token)?;
        let key = Key::from_name(name)
            .ok_or_else(|| ConfigError::new(name, ConfigProblem::UnknownKey))?;
        if seen & key.bit() != 0 {
            return Err(ConfigError::new(name, ConfigProblem::Duplicate));
        }
        seen |= key.bit();
        if value.is_empty() {
            return Err(ConfigError::new(name, ConfigProblem::EmptyValue));
        }
        let err = |problem| ConfigError::new(name, problem);
        match key {
            Key::Ext => p.ext = Some(parse_cidr(value).map_err(err)?),
            Key::Int => p.int = Some(parse_cidr(value).map_err(err)?),
            Key::Mgmt => p.mgmt = Some(parse_cidr(value).map_err(err)?),
            Key::Gw => p.gw = Some(parse_host(value).map_err(err)?),
            Key::Port => p.port = Some(parse_port(value).map_err(err)?),
            Key::Irmin => p.irmin = Some(parse_endpoint(value).map_err(err)?),
            Key::IrminBranch => p.irmin_branch = Some(parse_name(value).map_err(err)?),
            Key::IrminPrefix => p.irmin_prefix = Some(parse_name(value).map_err(err)?),
            Key::Secret => p.key = Some(parse_key(value).map_err(err)?),
            Key::Auth => p.auth = Some(parse_on_off(value).map_err(err)?),
            Key::Flows => {
                p.flows = Some(parse_ranged(value, MIN_FLOWS, MAX_FLOWS).map_err(err)?)
            }
            Key::Rules => {
                p.rules = Some(parse_ranged(value, MIN_RULES, MAX_RULES).map_err(err)?)
            }
            Key::Roles => p.roles = Some(parse_roles(value).map_err(err)?),
            Key::LogLvl => p.log_level = Some(parse_log_level(value).map_err(err)?),
        }
    }

    let missing = |name| ConfigError::new(name, ConfigProblem::Missing);
    let ext = p.ext.ok_or_else(|| missing("ext"))?;
    let gw = p.gw.ok_or_else(|| missing("gw"))?;
    let int = p.int.ok_or_else(|| missing("int"))?;
    let mgmt = p.mgmt.ok_or_else(|| missing("mgmt"))?;
    let auth = p.auth.unwrap_or(true);
    if auth && p.key.is_none() {
        return Err(ConfigError::new("key", ConfigProblem::MissingWithAuth));
    }

    // The gateway: a host of the ext subnet, not the bridge itself.
    let gw_err = |problem| ConfigError::new("gw", problem);
    if !ext.contains(gw) {
        return Err(gw_err(ConfigProblem::GatewayOutsideExt {
            gw,
            ext: ext.subnet(),
        }));
    }
    if gw == ext.addr {
        return Err(gw_err(ConfigProblem::GatewayIsOwnAddress(gw)));
    }
    check_host_of(gw, &ext).map_err(gw_err)?;

    // Subnets must be disjoint; the error names the later of the two keys.
    let nets = [("ext", ext), ("int", int), ("mgmt", mgmt)];
    for (i, (later, later_net)) in nets.iter().enumerate() {
        for (earlier, earlier_net) in nets.iter().take(i) {
            if later_net.overlaps(earlier_net) {
                return Err(ConfigError::new(
                    later,
                    ConfigProblem::Overlaps {
                        other: earlier,
                        subnet: earlier_net.subnet(),
                    },
                ));
            }
        }
    }

    // Irmin: reached on the management vif without routing.
    let irmin = match p.irmin {
        Some(addr) => {
            let ip = *addr.ip();
            let irmin_err = |problem| ConfigError::new("irmin", problem);
            if !mgmt.contains(ip) {
                return Err(irmin_err(ConfigProblem::IrminOutsideMgmt {
                    addr: ip,
                    mgmt: mgmt.subnet(),
                }));
            }
            if ip == mgmt.addr {
                return Err(irmin_err(ConfigProblem::IrminIsOwnAddress(ip)));
            }
            check_host_of(ip, &mgmt).map_err(irmin_err)?;
            Some(IrminEndpoint {
                addr,
                branch: p
                    .irmin_branch
                    .unwrap_or_else(|| bounded(DEFAULT_IRMIN_BRANCH)),
                prefix: p
                    .irmin_prefix
                    .unwrap_or_else(|| bounded(DEFAULT_IRMIN_PREFIX)),
            })
        }
        None => {
            if p.irmin_branch.is_some() {
                return Err(ConfigError::new(
                    "irmin_branch",
                    ConfigProblem::RequiresIrmin,
                ));
            }
            if p.irmin_prefix.is_some() {
                return Err(ConfigError::new(
                    "irmin_prefix",
                    ConfigProblem::RequiresIrmin,
                ));
            }
            None
        }
    };

    Ok(Config {
        ext,
        gw,
        int,
        mgmt,
        port: p.port.unwrap_or(DEFAULT_PORT),
        irmin,
        key: p.key,
        auth,
        flows: p.flows.unwrap_or(DEFAULT_FLOWS),
        rules: p.rules.unwrap_or(DEFAULT_RULES),
        roles: p.roles.unwrap_or_default(),
        log_level: p.log_level.unwrap_or_default(),
    })
}

/// A short constant copied into a bounded string (the constants fit).
fn bounded<const N: usize>(s: &str) -> String<N> {
    let mut out = String::new();
    let _ = out.push_str(s);
    out
}

/// Check a token's bytes and split it at the first `=`.
fn split_token(token: &str) -> Result<(&str, &str), ConfigError> {
    // How errors name the token. A mistyped `key` token, or what follows a
    // bare `=`, may be the secret: never echo it.
    let label = match token.split_once('=') {
        Some(("", _)) => "=",
        Some((name, _)) => name,
        None if token.len() > 3 && token.starts_with("key") => "key...",
        None => token,
    };
    if let Some((offset, &byte)) = token
        .as_bytes()
        .iter()
        .enumerate()
        .find(|(_, b)| !b.is_ascii_graphic())
    {
        return Err(ConfigError::new(
            label,
            ConfigProblem::InvalidByte { byte, offset },
        ));
    }
    match token.split_once('=') {
        None => Err(ConfigError::new(label, ConfigProblem::NotKeyValue)),
        Some(("", _)) => Err(ConfigError::new(label, ConfigProblem::EmptyKeyName)),
        Some(kv) => Ok(kv),
    }
}

/// Unsigned decimal digits (leading zeros allowed) without overflow.
enum NumError {
    Malformed,
    TooLarge,
}

fn parse_u32(s: &str) -> Result<u32, NumError> {
    if s.is_empty() {
        return Err(NumError::Malformed);
    }
    let mut n: u32 = 0;
    for b in s.bytes() {
        if !b.is_ascii_digit() {
            return Err(NumError::Malformed);
        }
        let digit = u32::from(b.wrapping_sub(b'0'));
        n = n
            .checked_mul(10)
            .and_then(|n| n.checked_add(digit))
            .ok_or(NumError::TooLarge)?;
    }
    Ok(n)
}

fn parse_ranged(s: &str, min: u32, max: u32) -> Result<u32, ConfigProblem> {
    let out_of_range = || ConfigProblem::OutOfRange {
        value: Excerpt::new(s),
        min,
        max,
    };
    match parse_u32(s) {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        Ok(_) | Err(NumError::TooLarge) => Err(out_of_range()),
        Err(NumError::Malformed) => Err(ConfigProblem::MalformedNumber(Excerpt::new(s))),
    }
}

fn parse_port(s: &str) -> Result<u16, ConfigProblem> {
    let n = parse_ranged(s, 1, u32::from(u16::MAX))?;
    u16::try_from(n).map_err(|_| ConfigProblem::OutOfRange {
        value: Excerpt::new(s),
        min: 1,
        max: u32::from(u16::MAX),
    })
}

/// Whether `ip` can be an interface, gateway or server address.
fn check_unicast(ip: Ipv4Addr) -> Result<(), ConfigProblem> {
    let [first, ..] = ip.octets();
    if first == 0 || ip.is_loopback() || ip.is_multicast() || first >= 240 {
        Err(ConfigProblem::NotUnicast(ip))
    } else {
        Ok(())
    }
}

/// `ip` must not be the network or broadcast address of `net` (for /30 and
/// shorter prefixes).
fn check_host_of(ip: Ipv4Addr, net: &Ipv4Cidr) -> Result<(), ConfigProblem> {
    if !net.is_reserved_in_subnet(ip) {
        return Ok(());
    }
    let at = Ipv4Cidr {
        addr: ip,
        prefix_len: net.prefix_len,
    };
    if ip == net.network() {
        Err(ConfigProblem::NetworkAddress(at))
    } else {
        Err(ConfigProblem::BroadcastAddress(at))
    }
}

fn parse_host(s: &str) -> Result<Ipv4Addr, ConfigProblem> {
    let ip = Ipv4Addr::from_str(s).map_err(|_| ConfigProblem::MalformedAddress(Excerpt::new(s)))?;
    check_unicast(ip)?;
    Ok(ip)
}

fn parse_cidr(s: &str) -> Result<Ipv4Cidr, ConfigProblem> {
    let malformed = || ConfigProblem::MalformedCidr(Excerpt::new(s));
    let (addr, len) = s.split_once('/').ok_or_else(malformed)?;
    let addr = Ipv4Addr::from_str(addr).map_err(|_| malformed())?;
    let prefix_len = match parse_u32(len) {
        Ok(n @ 1..=32) => u8::try_from(n).map_err(|_| malformed())?,
        Ok(_) | Err(NumError::TooLarge) => {
            return Err(ConfigProblem::PrefixLenOutOfRange(Excerpt::new(len)))
        }
        Err(NumError::Malformed) => return Err(malformed()),
    };
    check_unicast(addr)?;
    let cidr = Ipv4Cidr { addr, prefix_len };
    check_host_of(addr, &cidr)?;
    Ok(cidr)
}

fn parse_endpoint(s: &str) -> Result<SocketAddrV4, ConfigProblem> {
    let malformed = || ConfigProblem::MalformedEndpoint(Excerpt::new(s));
    let (ip, port) = s.split_once(':').ok_or_else(malformed)?;
    let ip = Ipv4Addr::from_str(ip).map_err(|_| malformed())?;
    let port = match parse_port(port) {
        Err(ConfigProblem::MalformedNumber(_)) => return Err(malformed()),
        other => other?,
    };
    check_unicast(ip)?;
    Ok(SocketAddrV4::new(ip, port))
}

fn parse_on_off(s: &str) -> Result<bool, ConfigProblem> {
    match s {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(ConfigProblem::NotOneOf {
            value: Excerpt::new(s),
            expected: "on|off",
        }),
    }
}

fn parse_log_level(s: &str) -> Result<LogLevel, ConfigProblem> {
    LogLevel::from_name(s).ok_or_else(|| ConfigProblem::NotOneOf {
        value: Excerpt::new(s),
        expected: "error|warn|info|debug",
    })
}

/// A branch or path name: 1..=MAX_NAME_LEN bytes of `[A-Za-z0-9._/-]`,
/// `/`-separated segments that are neither empty nor `.`/`..`.
fn parse_name(s: &str) -> Result<String<MAX_NAME_LEN>, ConfigProblem> {
    let bad = |reason| ConfigProblem::BadName {
        value: Excerpt::new(s),
        reason,
    };
    if s.len() > MAX_NAME_LEN {
        return Err(bad("longer than 64 bytes"));
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'/' | b'-'))
    {
        return Err(bad("allowed characters: A-Z a-z 0-9 . _ / -"));
    }
    if s.split('/').any(|seg| seg.is_empty() || seg == "." || seg == "..") {
        return Err(bad("empty, '.' or '..' path segment"));
    }
    let mut out = String::new();
    out.push_str(s).map_err(|_| bad("longer than 64 bytes"))?;
    Ok(out)
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b.wrapping_sub(b'0')),
        b'a'..=b'f' => Some(b.wrapping_sub(b'a').wrapping_add(10)),
        b'A'..=b'F' => Some(b.wrapping_sub(b'A').wrapping_add(10)),
        _ => None,
    }
}

/// The shared secret; errors never include its value.
fn parse_key(s: &str) -> Result<Vec<u8, MAX_KEY_LEN>, ConfigProblem> {
    let digits = s.len();
    if !digits.is_multiple_of(2) || !(MIN_KEY_HEX_DIGITS..=MAX_KEY_HEX_DIGITS).contains(&digits) {
        return Err(ConfigProblem::KeyLength { digits });
    }
    let mut key = Vec::new();
    for (i, pair) in s.as_bytes().chunks(2).enumerate() {
        let position = i.saturating_mul(2);
        let (hi, lo) = match *pair {
            [hi, lo] => (hi, lo),
            _ => return Err(ConfigProblem::KeyLength { digits }),
        };
        let hi = hex_value(hi).ok_or(ConfigProblem::KeyNotHex { position })?;
        let lo = hex_value(lo).ok_or(ConfigProblem::KeyNotHex {
            position: position.saturating_add(1),
        })?;
        key.push((hi << 4) | lo)
            .map_err(|_| ConfigProblem::KeyLength { digits })?;
    }
    Ok(key)
}

fn parse_roles(s: &str) -> Result<RoleMap, ConfigProblem> {
    let malformed = || ConfigProblem::MalformedRoles(Excerpt::new(s));
    let mut ids: [Option<u32>; 3] = [None; 3];
    for entry in s.split(',') {
        let (role, devid) = entry.split_once(':').ok_or_else(malformed)?;
        let role = Role::from_name(role).ok_or_else(|| ConfigProblem::UnknownRole(Excerpt::new(role)))?;
        let devid = match parse_u32(devid) {
            Ok(d) if d <= MAX_DEVID => d,
            Ok(_) | Err(NumError::TooLarge) => {
                return Err(ConfigProblem::DevidOutOfRange(Excerpt::new(devid)))
            }
            Err(NumError::Malformed) => return Err(malformed()),
        };
        let [ext, int, mgmt] = &mut ids;
        let slot = match role {
            Role::External => ext,
            Role::Internal => int,
            Role::Management => mgmt,
        };
        if slot.is_some() {
            return Err(ConfigProblem::DuplicateRole(role));
        }
        *slot = Some(devid);
        if ids.iter().flatten().filter(|&&d| d == devid).count() > 1 {
            return Err(ConfigProblem::DuplicateDevid(devid));
        }
    }
    let [ext, int, mgmt] = ids;
    let ext = ext.ok_or(ConfigProblem::MissingRole(Role::External))?;
    let int = int.ok_or(ConfigProblem::MissingRole(Role::Internal))?;
    let mgmt = mgmt.ok_or(ConfigProblem::MissingRole(Role::Management))?;
    RoleMap::new(ext, int, mgmt).ok_or_else(malformed)
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
}
