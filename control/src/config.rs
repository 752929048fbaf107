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
            Key::Flows => p.flows = Some(parse_ranged(value, MIN_FLOWS, MAX_FLOWS).map_err(err)?),
            Key::Rules => p.rules = Some(parse_ranged(value, MIN_RULES, MAX_RULES).map_err(err)?),
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
    if s.split('/')
        .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
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
        let role =
            Role::from_name(role).ok_or_else(|| ConfigProblem::UnknownRole(Excerpt::new(role)))?;
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
    use std::format;
    use std::string::{String as StdString, ToString};
    use std::vec::Vec as StdVec;

    const KEY_HEX: &str = "00112233445566778899aabbccddeeff";
    const BASE: &str = "ext=10.0.0.2/24 gw=10.0.0.1 int=192.168.252.1/24 \
                        mgmt=10.0.1.3/24 key=00112233445566778899aabbccddeeff";
    const FULL: &str = "ext=10.0.0.2/24 gw=10.0.0.1 int=192.168.252.1/24 mgmt=10.0.1.3/24 \
                        port=8080 irmin=10.0.1.1:8081 key=00112233445566778899aabbccddeeff \
                        flows=65536 rules=4096 roles=ext:0,int:1,mgmt:2";

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn cidr(s: &str) -> Ipv4Cidr {
        let (a, l) = s.split_once('/').unwrap();
        Ipv4Cidr::new(ip(a), l.parse().unwrap()).unwrap()
    }

    /// BASE with the tokens for `drop` removed and `extra` appended.
    fn line(drop: &[&str], extra: &str) -> StdString {
        let mut out: StdVec<&str> = BASE
            .split_whitespace()
            .filter(|t| !drop.iter().any(|d| t.split_once('=').unwrap().0 == *d))
            .collect();
        out.extend(extra.split_whitespace());
        out.join(" ")
    }

    /// BASE with `key=value` tokens from `set` replacing (or adding to) it.
    fn with(set: &str) -> StdString {
        let keys: StdVec<&str> = set
            .split_whitespace()
            .map(|t| t.split_once('=').map_or(t, |(k, _)| k))
            .collect();
        line(&keys, set)
    }

    fn ok(cmdline: &str) -> Config {
        match parse(cmdline) {
            Ok(c) => c,
            Err(e) => panic!("{cmdline:?} rejected: {e}"),
        }
    }

    fn err(cmdline: &str) -> ConfigError {
        match parse(cmdline) {
            Ok(c) => panic!("{cmdline:?} accepted: {c:?}"),
            Err(e) => {
                let text = e.to_string();
                assert!(!text.contains('\n'), "multi-line error: {text}");
                assert!(text.starts_with("config: "), "{text}");
                e
            }
        }
    }

    fn msg(cmdline: &str) -> StdString {
        err(cmdline).to_string()
    }

    /// The error names `key` and has the given problem.
    fn check(cmdline: &str, key: &str, problem: ConfigProblem) {
        let e = err(cmdline);
        assert_eq!(e.key.as_str(), key, "{cmdline:?}: {e}");
        assert_eq!(e.problem, problem, "{cmdline:?}: {e}");
    }

    fn ex(s: &str) -> Excerpt {
        Excerpt::new(s)
    }

    // -- whole configurations ----------------------------------------------

    #[test]
    fn defaults() {
        let c = ok(BASE);
        assert_eq!(c.ext, cidr("10.0.0.2/24"));
        assert_eq!(c.gw, ip("10.0.0.1"));
        assert_eq!(c.int, cidr("192.168.252.1/24"));
        assert_eq!(c.mgmt, cidr("10.0.1.3/24"));
        assert_eq!(c.port, DEFAULT_PORT);
        assert_eq!(c.irmin, None);
        assert!(c.auth);
        assert_eq!(
            c.key.as_deref(),
            Some(
                &[
                    0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc,
                    0xdd, 0xee, 0xff
                ][..]
            )
        );
        assert_eq!(c.flows, DEFAULT_FLOWS);
        assert_eq!(c.rules, DEFAULT_RULES);
        assert_eq!(c.roles, RoleMap::default());
        assert_eq!(c.log_level, LogLevel::Info);
    }

    #[test]
    fn full_example() {
        let c = ok(FULL);
        let irmin = c.irmin.as_ref().unwrap();
        assert_eq!(irmin.addr, SocketAddrV4::new(ip("10.0.1.1"), 8081));
        assert_eq!(irmin.branch.as_str(), "main");
        assert_eq!(irmin.prefix.as_str(), "bridge");
        assert_eq!(c.port, 8080);
        assert_eq!(c.cidr(Role::Management), c.mgmt);
        assert_eq!(Config::parse(FULL), Ok(c.clone()));
        assert_eq!(FULL.parse::<Config>(), Ok(c));
    }

    #[test]
    fn every_key_set() {
        let c = ok(&with(
            "port=9000 irmin=10.0.1.254:443 irmin_branch=prod/v1 irmin_prefix=nat.rules \
             auth=on flows=16 rules=1 roles=int:3,mgmt:15,ext:7 loglvl=debug",
        ));
        assert_eq!(c.port, 9000);
        let irmin = c.irmin.unwrap();
        assert_eq!(irmin.addr.port(), 443);
        assert_eq!(irmin.branch.as_str(), "prod/v1");
        assert_eq!(irmin.prefix.as_str(), "nat.rules");
        assert_eq!((c.flows, c.rules), (16, 1));
        assert_eq!(c.roles, RoleMap::new(7, 3, 15).unwrap());
        assert_eq!(c.log_level, LogLevel::Debug);
    }

    #[test]
    fn whitespace_and_order() {
        let shuffled = "  key=00112233445566778899aabbccddeeff\tmgmt=10.0.1.3/24\n\
                        int=192.168.252.1/24\r\n gw=10.0.0.1 ext=10.0.0.2/24 \x0c";
        assert_eq!(ok(shuffled), ok(BASE));
    }

    // -- structural errors -------------------------------------------------

    #[test]
    fn missing_keys_in_order() {
        check("", "ext", ConfigProblem::Missing);
        assert_eq!(msg(" \t\n"), "config: ext: missing (mandatory)");
        for k in ["ext", "gw", "int", "mgmt"] {
            check(&line(&[k], ""), k, ConfigProblem::Missing);
        }
        assert_eq!(msg(&line(&["gw"], "")), "config: gw: missing (mandatory)");
        check(&line(&["gw", "int"], ""), "gw", ConfigProblem::Missing);
        check(&line(&["key"], ""), "key", ConfigProblem::MissingWithAuth);
        assert_eq!(
            msg(&line(&["key"], "auth=on")),
            "config: key: missing (mandatory unless auth=off)"
        );
    }

    #[test]
    fn unknown_keys() {
        assert_eq!(
            msg(&with("frobnicate=1")),
            "config: frobnicate: unknown key"
        );
        check(&with("name=dom1"), "name", ConfigProblem::UnknownKey);
        check(&with("EXT=10.0.0.2/24"), "EXT", ConfigProblem::UnknownKey);
        check(
            &with("loglevel=info"),
            "loglevel",
            ConfigProblem::UnknownKey,
        );
        // Long key names are cut to fit, with an ellipsis.
        let e = err(&with("averyveryverylongkeyname=1"));
        assert_eq!(e.key.as_str(), "averyveryvery...");
        assert_eq!(e.problem, ConfigProblem::UnknownKey);
        // Unknown keys are reported even before missing ones.
        check("frobnicate=1", "frobnicate", ConfigProblem::UnknownKey);
    }

    #[test]
    fn duplicate_keys() {
        for t in [
            "ext=10.0.0.2/24",
            "gw=10.0.0.1",
            "port=1",
            "auth=on",
            "loglvl=info",
            "roles=ext:0,int:1,mgmt:2",
        ] {
            let key = t.split_once('=').unwrap().0;
            let cmdline = format!("{} {t} {t}", line(&[key], ""));
            check(&cmdline, key, ConfigProblem::Duplicate);
        }
        // Even with a different (or broken) second value.
        check(&format!("{BASE} ext=1"), "ext", ConfigProblem::Duplicate);
        assert_eq!(
            msg(&format!("{BASE} gw=10.0.0.9")),
            "config: gw: given more than once"
        );
    }

    #[test]
    fn malformed_tokens() {
        assert_eq!(
            msg(&format!("{BASE} verbose")),
            "config: verbose: not a key=value token"
        );
        check(&format!("{BASE} =5"), "=", ConfigProblem::EmptyKeyName);
        check(&format!("{BASE} ="), "=", ConfigProblem::EmptyKeyName);
        check(&with("ext="), "ext", ConfigProblem::EmptyValue);
        assert_eq!(msg(&with("port=")), "config: port: empty value");
        // `=` inside a value is part of the value.
        check(
            &with("gw=10.0.0.1=x"),
            "gw",
            ConfigProblem::MalformedAddress(ex("10.0.0.1=x")),
        );
    }

    #[test]
    fn secret_never_echoed() {
        let secret = "a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6";
        for cmdline in [
            format!("{} key{secret}", line(&["key"], "")),
            format!("{} key:{secret}", line(&["key"], "")),
            format!("{} ={secret}", line(&["key"], "")),
            format!("{} key{secret}\u{0}", line(&["key"], "")),
            format!("{} key={secret}g", line(&["key"], "")),
            format!("{} key={secret}zz", line(&["key"], "")),
            format!("{} key={secret} key={secret}", line(&["key"], "")),
        ] {
            let text = msg(&cmdline);
            assert!(!text.contains("a1b2c3"), "{text}");
        }
        check(
            &format!("{} key{secret}", line(&["key"], "")),
            "key...",
            ConfigProblem::NotKeyValue,
        );
        let c = ok(BASE);
        for shown in [format!("{c}"), format!("{c:?}")] {
            assert!(!shown.contains(KEY_HEX), "{shown}");
            assert!(!shown.contains("[0, 17"), "{shown}");
            assert!(shown.contains("<set, 16 bytes>"), "{shown}");
        }
    }

    #[test]
    fn invalid_bytes() {
        check(
            &with("gw=10.0.0.1\u{0}"),
            "gw",
            ConfigProblem::InvalidByte {
                byte: 0,
                offset: 11,
            },
        );
        check(
            &with("loglvl=d\u{e9}bug"),
            "loglvl",
            ConfigProblem::InvalidByte {
                byte: 0xc3,
                offset: 8,
            },
        );
        check(
            &format!("{BASE} \u{0}"),
            "?",
            ConfigProblem::InvalidByte { byte: 0, offset: 0 },
        );
        // Vertical tab is not a separator.
        check(
            &format!("{BASE} port=1\u{b}"),
            "port",
            ConfigProblem::InvalidByte {
                byte: 0x0b,
                offset: 6,
            },
        );
        // Non-ASCII whitespace is not a separator either.
        let e = err(&format!("{BASE}\u{a0}port=1"));
        assert_eq!(e.key.as_str(), "key");
        assert!(matches!(
            e.problem,
            ConfigProblem::InvalidByte { byte: 0xc2, .. }
        ));
        // Non-ASCII in the key part is shown sanitized.
        check(
            &format!("{BASE} p\u{f6}rt=1"),
            "p?rt",
            ConfigProblem::InvalidByte {
                byte: 0xc3,
                offset: 1,
            },
        );
        assert_eq!(
            msg(&with("gw=10.0.0.1\u{0}")),
            "config: gw: invalid byte 0x00 at offset 11 of the token \
             (only printable ASCII is allowed)"
        );
    }

    #[test]
    fn length_bound() {
        let padded = format!("{BASE}{}", " ".repeat(MAX_CMDLINE_LEN - BASE.len()));
        assert_eq!(padded.len(), MAX_CMDLINE_LEN);
        ok(&padded);
        let long = format!("{padded} ");
        check(
            &long,
            "cmdline",
            ConfigProblem::TooLong {
                len: MAX_CMDLINE_LEN + 1,
            },
        );
        assert_eq!(
            msg(&long),
            "config: cmdline: command line too long (2049 bytes, at most 2048)"
        );
    }

    // -- interface addresses -----------------------------------------------

    #[test]
    fn cidr_values() {
        assert_eq!(
            msg(&with("ext=10.0.0.300/24")),
            "config: ext: malformed address \"10.0.0.300/24\" (expected a.b.c.d/len)"
        );
        for key in ["ext", "int", "mgmt"] {
            for bad in [
                "10.0.0.300/24",
                "10.0.0.2",
                "10.0.0.2/",
                "/24",
                "10.0.0/24",
                "10.0.0.2/24/1",
                "010.0.0.2/24",
                "10.0.0.2/x",
                "10.0.0.2/-1",
                "10.0.0.2/+8",
                "::1/64",
                "ten/8",
            ] {
                check(
                    &with(&format!("{key}={bad}")),
                    key,
                    ConfigProblem::MalformedCidr(ex(bad)),
                );
            }
            for (bad, len) in [
                ("10.9.9.2/0", "0"),
                ("10.9.9.2/33", "33"),
                ("10.9.9.2/99999999999", "99999999999"),
            ] {
                check(
                    &with(&format!("{key}={bad}")),
                    key,
                    ConfigProblem::PrefixLenOutOfRange(ex(len)),
                );
            }
            for bad in [
                "0.0.0.0/8",
                "0.1.2.3/24",
                "127.0.0.1/8",
                "224.0.0.5/24",
                "240.0.0.1/8",
                "255.255.255.255/32",
            ] {
                let addr = ip(bad.split_once('/').unwrap().0);
                check(
                    &with(&format!("{key}={bad}")),
                    key,
                    ConfigProblem::NotUnicast(addr),
                );
            }
            check(
                &with(&format!("{key}=172.16.0.0/16")),
                key,
                ConfigProblem::NetworkAddress(cidr("172.16.0.0/16")),
            );
            check(
                &with(&format!("{key}=172.16.255.255/16")),
                key,
                ConfigProblem::BroadcastAddress(cidr("172.16.255.255/16")),
            );
            check(
                &with(&format!("{key}=172.16.0.4/30")),
                key,
                ConfigProblem::NetworkAddress(cidr("172.16.0.4/30")),
            );
        }
        assert_eq!(
            msg(&with("int=172.16.0.0/16")),
            "config: int: 172.16.0.0 is the network address of 172.16.0.0/16 (use a host address)"
        );
        assert_eq!(
            msg(&with("mgmt=10.9.9.9/33")),
            "config: mgmt: prefix length \"33\" out of range (expected 1..=32)"
        );
        // /31 and /32 have no network/broadcast address.
        let c = ok(&with("int=172.16.0.0/31 mgmt=172.17.0.7/32"));
        assert_eq!(c.int, cidr("172.16.0.0/31"));
        assert_eq!(c.mgmt, cidr("172.17.0.7/32"));
        ok(&with("ext=10.0.0.1/31 gw=10.0.0.0"));
        // /1 works as long as nothing overlaps.
        ok(&with("ext=10.0.0.2/1 int=192.168.0.1/2 mgmt=172.16.0.1/12"));
    }

    #[test]
    fn overlap_detection() {
        assert_eq!(
            msg(&with("int=10.0.0.77/24")),
            "config: int: overlaps ext 10.0.0.0/24"
        );
        check(
            &with("int=10.0.0.130/25"),
            "int",
            ConfigProblem::Overlaps {
                other: "ext",
                subnet: cidr("10.0.0.0/24"),
            },
        );
        // A larger later subnet that contains an earlier one.
        check(
            &with("mgmt=10.1.2.3/8"),
            "mgmt",
            ConfigProblem::Overlaps {
                other: "ext",
                subnet: cidr("10.0.0.0/24"),
            },
        );
        check(
            &with("mgmt=192.168.253.1/23"),
            "mgmt",
            ConfigProblem::Overlaps {
                other: "int",
                subnet: cidr("192.168.252.0/24"),
            },
        );
        // The earliest overlapping key is reported; order on the line is irrelevant.
        let e = err(&format!(
            "mgmt=10.0.0.9/16 int=10.0.0.200/24 ext=10.0.0.2/24 gw=10.0.0.1 key={KEY_HEX}"
        ));
        assert_eq!(e.key.as_str(), "int");
        // Adjacent subnets are fine.
        ok(&with(
            "ext=10.0.0.2/25 gw=10.0.0.1 int=10.0.0.130/25 mgmt=10.0.1.3/24",
        ));
    }

    // -- gateway -----------------------------------------------------------

    #[test]
    fn gateway() {
        ok(&with("gw=10.0.0.254"));
        check(
            &with("gw=10.0.0"),
            "gw",
            ConfigProblem::MalformedAddress(ex("10.0.0")),
        );
        check(
            &with("gw=10.0.0.1/24"),
            "gw",
            ConfigProblem::MalformedAddress(ex("10.0.0.1/24")),
        );
        check(
            &with("gw=224.0.0.1"),
            "gw",
            ConfigProblem::NotUnicast(ip("224.0.0.1")),
        );
        check(
            &with("gw=10.0.1.1"),
            "gw",
            ConfigProblem::GatewayOutsideExt {
                gw: ip("10.0.1.1"),
                ext: cidr("10.0.0.0/24"),
            },
        );
        assert_eq!(
            msg(&with("gw=10.0.1.1")),
            "config: gw: 10.0.1.1 is outside ext subnet 10.0.0.0/24"
        );
        check(
            &with("gw=10.0.0.2"),
            "gw",
            ConfigProblem::GatewayIsOwnAddress(ip("10.0.0.2")),
        );
        check(
            &with("gw=10.0.0.0"),
            "gw",
            ConfigProblem::NetworkAddress(cidr("10.0.0.0/24")),
        );
        check(
            &with("gw=10.0.0.255"),
            "gw",
            ConfigProblem::BroadcastAddress(cidr("10.0.0.255/24")),
        );
        // A /32 ext leaves no room for a gateway.
        check(
            &with("ext=10.0.0.2/32 gw=10.0.0.1"),
            "gw",
            ConfigProblem::GatewayOutsideExt {
                gw: ip("10.0.0.1"),
                ext: cidr("10.0.0.2/32"),
            },
        );
    }

    // -- numbers -----------------------------------------------------------

    #[test]
    fn port() {
        assert_eq!(ok(&with("port=1")).port, 1);
        assert_eq!(ok(&with("port=65535")).port, 65535);
        assert_eq!(ok(&with("port=0443")).port, 443);
        for bad in ["0", "65536", "99999999999999999999"] {
            check(
                &with(&format!("port={bad}")),
                "port",
                ConfigProblem::OutOfRange {
                    value: ex(bad),
                    min: 1,
                    max: 65535,
                },
            );
        }
        for bad in ["-1", "+80", "80a", "0x50", "１"] {
            let e = err(&with(&format!("port={bad}")));
            assert_eq!(e.key.as_str(), "port", "{bad}: {e}");
        }
        check(
            &with("port=http"),
            "port",
            ConfigProblem::MalformedNumber(ex("http")),
        );
        assert_eq!(
            msg(&with("port=70000")),
            "config: port: \"70000\" out of range (expected 1..=65535)"
        );
    }

    #[test]
    fn table_sizes() {
        assert_eq!(ok(&with("flows=16")).flows, 16);
        assert_eq!(ok(&with("flows=1048576")).flows, 1_048_576);
        assert_eq!(ok(&with("rules=1")).rules, 1);
        assert_eq!(ok(&with("rules=65536")).rules, 65536);
        for (key, bad, min, max) in [
            ("flows", "15", 16, 1_048_576),
            ("flows", "1048577", 16, 1_048_576),
            ("flows", "4294967296", 16, 1_048_576),
            ("rules", "0", 1, 65536),
            ("rules", "65537", 1, 65536),
        ] {
            check(
                &with(&format!("{key}={bad}")),
                key,
                ConfigProblem::OutOfRange {
                    value: ex(bad),
                    min,
                    max,
                },
            );
        }
        check(
            &with("rules=4k"),
            "rules",
            ConfigProblem::MalformedNumber(ex("4k")),
        );
        check(
            &with("flows=-16"),
            "flows",
            ConfigProblem::MalformedNumber(ex("-16")),
        );
    }

    // -- irmin -------------------------------------------------------------

    #[test]
    fn irmin_endpoint() {
        let c = ok(&with("irmin=10.0.1.1:8081"));
        assert_eq!(
            c.irmin.unwrap().addr,
            SocketAddrV4::new(ip("10.0.1.1"), 8081)
        );
        for bad in [
            "10.0.1.1",
            "10.0.1.1:",
            ":8081",
            "irmin.local:8081",
            "10.0.1.1:80:80",
            "10.0.1.1:http",
        ] {
            check(
                &with(&format!("irmin={bad}")),
                "irmin",
                ConfigProblem::MalformedEndpoint(ex(bad)),
            );
        }
        for (bad, port) in [("10.0.1.1:0", "0"), ("10.0.1.1:65536", "65536")] {
            check(
                &with(&format!("irmin={bad}")),
                "irmin",
                ConfigProblem::OutOfRange {
                    value: ex(port),
                    min: 1,
                    max: 65535,
                },
            );
        }
        check(
            &with("irmin=127.0.0.1:80"),
            "irmin",
            ConfigProblem::NotUnicast(ip("127.0.0.1")),
        );
        assert_eq!(
            msg(&with("irmin=10.0.2.1:8081")),
            "config: irmin: 10.0.2.1 is outside mgmt subnet 10.0.1.0/24 \
             (Irmin must be reachable without routing)"
        );
        check(
            &with("irmin=10.0.1.3:8081"),
            "irmin",
            ConfigProblem::IrminIsOwnAddress(ip("10.0.1.3")),
        );
        check(
            &with("irmin=10.0.1.255:8081"),
            "irmin",
            ConfigProblem::BroadcastAddress(cidr("10.0.1.255/24")),
        );
    }

    #[test]
    fn irmin_names() {
        let base = with("irmin=10.0.1.1:8081");
        let long = "b".repeat(MAX_NAME_LEN);
        for good in [
            "main",
            "feature/x-1.2_3",
            "A.b",
            "..a",
            "a..b",
            long.as_str(),
        ] {
            for key in ["irmin_branch", "irmin_prefix"] {
                let c = ok(&format!("{base} {key}={good}"));
                let irmin = c.irmin.unwrap();
                let got = if key == "irmin_branch" {
                    irmin.branch
                } else {
                    irmin.prefix
                };
                assert_eq!(got.as_str(), good);
            }
        }
        let too_long = "b".repeat(MAX_NAME_LEN + 1);
        for (bad, reason) in [
            (too_long.as_str(), "longer than 64 bytes"),
            ("a*b", "allowed characters: A-Z a-z 0-9 . _ / -"),
            ("a:b", "allowed characters: A-Z a-z 0-9 . _ / -"),
            ("/abs", "empty, '.' or '..' path segment"),
            ("trail/", "empty, '.' or '..' path segment"),
            ("a//b", "empty, '.' or '..' path segment"),
            ("..", "empty, '.' or '..' path segment"),
            (".", "empty, '.' or '..' path segment"),
            ("a/./b", "empty, '.' or '..' path segment"),
            ("a/../b", "empty, '.' or '..' path segment"),
        ] {
            for key in ["irmin_branch", "irmin_prefix"] {
                check(
                    &format!("{base} {key}={bad}"),
                    key,
                    ConfigProblem::BadName {
                        value: ex(bad),
                        reason,
                    },
                );
            }
        }
        check(
            &with("irmin_branch=main"),
            "irmin_branch",
            ConfigProblem::RequiresIrmin,
        );
        assert_eq!(
            msg(&with("irmin_prefix=x")),
            "config: irmin_prefix: given without irmin="
        );
    }

    // -- secret and auth ---------------------------------------------------

    #[test]
    fn key_values() {
        let k128 = "Ab".repeat(64);
        let c = ok(&with(&format!("key={k128}")));
        assert_eq!(c.key.as_ref().unwrap().len(), 64);
        assert!(c.key.unwrap().iter().all(|&b| b == 0xab));
        for digits in [2usize, 30, 31, 33, 127, 129, 130, 1000] {
            let k = "a".repeat(digits);
            check(
                &with(&format!("key={k}")),
                "key",
                ConfigProblem::KeyLength { digits },
            );
        }
        check(
            &with("key=00112233445566778899aabbccddeefg"),
            "key",
            ConfigProblem::KeyNotHex { position: 31 },
        );
        check(
            &with("key=x0112233445566778899aabbccddeeff"),
            "key",
            ConfigProblem::KeyNotHex { position: 0 },
        );
        assert_eq!(
            msg(&with("key=0011")),
            "config: key: secret has 4 characters \
             (expected an even number of hex digits, 32..=128)"
        );
    }

    #[test]
    fn auth_modes() {
        let c = ok(&line(&["key"], "auth=off"));
        assert!(!c.auth);
        assert_eq!(c.key, None);
        let c = ok(&with("auth=off"));
        assert!(!c.auth);
        assert_eq!(c.key.as_ref().map(|k| k.len()), Some(16));
        assert!(ok(&with("auth=on")).auth);
        assert_eq!(
            msg(&with("auth=yes")),
            "config: auth: invalid value \"yes\" (expected on|off)"
        );
        check(
            &with("auth=OFF"),
            "auth",
            ConfigProblem::NotOneOf {
                value: ex("OFF"),
                expected: "on|off",
            },
        );
        // A broken key is an error even with auth off.
        check(
            &line(&["key"], "auth=off key=zz"),
            "key",
            ConfigProblem::KeyLength { digits: 2 },
        );
    }

    // -- roles -------------------------------------------------------------

    #[test]
    fn role_permutations() {
        let c = ok(&with("roles=mgmt:0,ext:1,int:2"));
        assert_eq!(c.roles.devid(Role::Management), 0);
        assert_eq!(c.roles.devid(Role::External), 1);
        assert_eq!(c.roles.devid(Role::Internal), 2);
        assert_eq!(c.roles.role_of(0), Some(Role::Management));
        assert_eq!(c.roles.role_of(3), None);
        let perms = [
            [0, 1, 2],
            [0, 2, 1],
            [1, 0, 2],
            [1, 2, 0],
            [2, 0, 1],
            [2, 1, 0],
        ];
        for p in perms {
            let [e, i, m] = p;
            for text in [
                format!("roles=ext:{e},int:{i},mgmt:{m}"),
                format!("roles=mgmt:{m},int:{i},ext:{e}"),
                format!("roles=int:{i},mgmt:{m},ext:{e}"),
            ] {
                let r = ok(&with(&text)).roles;
                assert_eq!(r, RoleMap::new(e, i, m).unwrap());
                for role in Role::ALL {
                    assert_eq!(r.role_of(r.devid(role)), Some(role));
                }
            }
        }
        let r = ok(&with("roles=ext:15,int:04,mgmt:9")).roles;
        assert_eq!(r.to_string(), "ext:15,int:4,mgmt:9");
    }

    #[test]
    fn role_errors() {
        let roles = |v: &str| with(&format!("roles={v}"));
        for bad in [
            "",
            "ext",
            "ext:0,int:1,mgmt:2,",
            ",ext:0,int:1,mgmt:2",
            "ext:0,,int:1,mgmt:2",
            "ext:x,int:1,mgmt:2",
            "ext:-1,int:1,mgmt:2",
            "ext=0,int=1,mgmt=2",
        ] {
            if bad.is_empty() {
                check(&roles(bad), "roles", ConfigProblem::EmptyValue);
            } else {
                check(&roles(bad), "roles", ConfigProblem::MalformedRoles(ex(bad)));
            }
        }
        check(
            &roles("ext:0,int:1"),
            "roles",
            ConfigProblem::MissingRole(Role::Management),
        );
        check(
            &roles("mgmt:2"),
            "roles",
            ConfigProblem::MissingRole(Role::External),
        );
        check(
            &roles("ext:0,int:1,ext:2"),
            "roles",
            ConfigProblem::DuplicateRole(Role::External),
        );
        check(
            &roles("ext:0,int:1,mgmt:2,int:3"),
            "roles",
            ConfigProblem::DuplicateRole(Role::Internal),
        );
        check(
            &roles("ext:0,int:0,mgmt:2"),
            "roles",
            ConfigProblem::DuplicateDevid(0),
        );
        check(
            &roles("ext:0,int:1,mgmt:16"),
            "roles",
            ConfigProblem::DevidOutOfRange(ex("16")),
        );
        check(
            &roles("ext:0,int:1,mgmt:99999999999"),
            "roles",
            ConfigProblem::DevidOutOfRange(ex("99999999999")),
        );
        check(
            &roles("ext:0,lan:1,mgmt:2"),
            "roles",
            ConfigProblem::UnknownRole(ex("lan")),
        );
        check(
            &roles("ext:0,int:1,mgmt:2,dmz:3"),
            "roles",
            ConfigProblem::UnknownRole(ex("dmz")),
        );
        assert_eq!(
            msg(&roles("ext:0,int:1,mgmt:1")),
            "config: roles: device id 1 given to more than one role"
        );
        assert_eq!(
            msg(&roles("ext:0,int:1")),
            "config: roles: role mgmt not listed (need ext, int and mgmt)"
        );
    }

    #[test]
    fn role_map_api() {
        assert_eq!(RoleMap::new(0, 0, 1), None);
        assert_eq!(RoleMap::new(0, 1, 16), None);
        let d = RoleMap::default();
        assert_eq!(Role::ALL.map(|r| d.devid(r)), [0, 1, 2]);
        assert_eq!(d.role_of(1), Some(Role::Internal));
        assert_eq!(d.role_of(u32::MAX), None);
        for r in Role::ALL {
            assert_eq!(Role::from_name(r.name()), Some(r));
        }
    }

    // -- log level ---------------------------------------------------------

    #[test]
    fn log_levels() {
        for (text, level) in [
            ("error", LogLevel::Error),
            ("warn", LogLevel::Warn),
            ("info", LogLevel::Info),
            ("debug", LogLevel::Debug),
        ] {
            assert_eq!(ok(&with(&format!("loglvl={text}"))).log_level, level);
            assert_eq!(level.to_string(), text);
        }
        assert!(LogLevel::Error < LogLevel::Debug);
        check(
            &with("loglvl=trace"),
            "loglvl",
            ConfigProblem::NotOneOf {
                value: ex("trace"),
                expected: "error|warn|info|debug",
            },
        );
    }

    // -- types and output --------------------------------------------------

    #[test]
    fn cidr_math() {
        let c = cidr("10.1.2.3/20");
        assert_eq!(c.netmask(), ip("255.255.240.0"));
        assert_eq!(c.network(), ip("10.1.0.0"));
        assert_eq!(c.broadcast(), ip("10.1.15.255"));
        assert_eq!(c.subnet(), cidr("10.1.0.0/20"));
        assert!(c.contains(ip("10.1.15.1")));
        assert!(!c.contains(ip("10.1.16.0")));
        assert_eq!(c.to_string(), "10.1.2.3/20");
        assert_eq!(cidr("1.2.3.4/0").netmask(), ip("0.0.0.0"));
        assert!(cidr("1.2.3.4/0").contains(ip("255.255.255.255")));
        assert_eq!(cidr("1.2.3.4/32").netmask(), ip("255.255.255.255"));
        assert_eq!(cidr("1.2.3.4/32").broadcast(), ip("1.2.3.4"));
        assert_eq!(cidr("1.2.3.4/1").netmask(), ip("128.0.0.0"));
        assert_eq!(Ipv4Cidr::new(ip("1.2.3.4"), 33), None);
        // Out-of-range hand-built values behave like /32 and never panic.
        let odd = Ipv4Cidr {
            addr: ip("1.2.3.4"),
            prefix_len: 200,
        };
        assert_eq!(odd.netmask(), ip("255.255.255.255"));
        assert!(odd.contains(ip("1.2.3.4")));
        assert!(!odd.overlaps(&cidr("1.2.3.5/32")));
        assert!(cidr("10.0.0.1/8").overlaps(&cidr("10.200.0.1/16")));
        assert!(cidr("10.200.0.1/16").overlaps(&cidr("10.0.0.1/8")));
        assert!(!cidr("10.0.0.1/25").overlaps(&cidr("10.0.0.129/25")));
        for len in 0..=32u8 {
            let c = Ipv4Cidr::new(ip("203.0.113.77"), len).unwrap();
            assert_eq!(u32::from(c.netmask()).count_ones(), u32::from(len));
            assert!(c.contains(c.network()) && c.contains(c.broadcast()));
        }
    }

    #[test]
    fn config_display() {
        let c = ok(&format!("{FULL} loglvl=warn"));
        assert_eq!(
            c.to_string(),
            "ext    10.0.0.2/24 via 10.0.0.1 on vif 0\n\
             int    192.168.252.1/24 on vif 1\n\
             mgmt   10.0.1.3/24 on vif 2, api port 8080\n\
             irmin  10.0.1.1:8081 branch main prefix bridge\n\
             auth   on, key=<set, 16 bytes>\n\
             tables flows=65536 rules=4096\n\
             loglvl warn"
        );
        let off = ok(&line(&["key"], "auth=off")).to_string();
        assert!(off.contains("irmin  none (rules in memory only)"), "{off}");
        assert!(off.contains("auth   off, key=<unset>"), "{off}");
        let unused = ok(&with("auth=off")).to_string();
        assert!(
            unused.contains("auth   off, key=<set, 16 bytes> (unused)"),
            "{unused}"
        );
    }

    #[test]
    fn excerpts_are_bounded_and_printable() {
        let long = "x".repeat(100);
        let e = Excerpt::new(&long);
        assert_eq!(e.as_str().len(), EXCERPT_LEN);
        assert!(e.as_str().ends_with("..."));
        assert_eq!(Excerpt::new("a\"b\\c\u{7}d\u{e9}").as_str(), "a?b?c?d?");
        assert_eq!(Excerpt::new("ok").to_string(), "\"ok\"");
        let exact = "y".repeat(EXCERPT_LEN);
        assert_eq!(Excerpt::new(&exact).as_str(), exact);
        let e = err(&with(&format!("flows={}", "9".repeat(500))));
        assert!(e.to_string().len() < 120, "{e}");
    }

    // -- robustness --------------------------------------------------------

    use crate::test_util::XorShift;

    /// Parse without panicking and check the result's invariants.
    fn exercise(input: &str) {
        match parse(input) {
            Err(e) => {
                let text = e.to_string();
                assert!(text.starts_with("config: "));
                assert!(
                    text.bytes().all(|b| b == b' ' || b.is_ascii_graphic()),
                    "{input:?} -> {text:?}"
                );
            }
            Ok(c) => {
                assert!(c.ext.contains(c.gw) && c.gw != c.ext.addr);
                assert!(!c.ext.overlaps(&c.int) && !c.ext.overlaps(&c.mgmt));
                assert!(!c.int.overlaps(&c.mgmt));
                assert!((MIN_FLOWS..=MAX_FLOWS).contains(&c.flows));
                assert!((MIN_RULES..=MAX_RULES).contains(&c.rules));
                assert!(c.port >= 1);
                assert!(!c.auth || c.key.is_some());
                if let Some(i) = &c.irmin {
                    assert!(c.mgmt.contains(*i.addr.ip()) && *i.addr.ip() != c.mgmt.addr);
                }
                for r in Role::ALL {
                    assert_eq!(c.roles.role_of(c.roles.devid(r)), Some(r));
                }
                let _ = format!("{c} {c:?}");
            }
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        for _ in 0..20_000 {
            let len = rng.below(300);
            let bytes: StdVec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            exercise(&StdString::from_utf8_lossy(&bytes));
        }
    }

    #[test]
    fn random_token_soup_never_panics() {
        const PIECES: &[&str] = &[
            "ext=",
            "int=",
            "mgmt=",
            "gw=",
            "port=",
            "irmin=",
            "irmin_branch=",
            "irmin_prefix=",
            "key=",
            "auth=",
            "flows=",
            "rules=",
            "roles=",
            "loglvl=",
            "10.0.0.",
            "10.0.1.",
            "192.168.252.",
            "0",
            "1",
            "2",
            "3",
            "255",
            "256",
            "/",
            "/24",
            "/31",
            "/32",
            "/0",
            ":",
            ",",
            "=",
            ".",
            " ",
            "\t",
            "\0",
            "\u{e9}",
            "ext:",
            "int:",
            "mgmt:",
            "on",
            "off",
            "info",
            "ff",
            "00112233445566778899aabbccddeeff",
            "65536",
            "4294967296",
            "-",
            "..",
            "main",
            "a/b",
        ];
        let mut rng = XorShift(0x1234_5678_9abc_def1);
        for _ in 0..50_000 {
            let n = rng.below(40);
            let s: StdString = (0..n).map(|_| PIECES[rng.below(PIECES.len())]).collect();
            exercise(&s);
        }
    }

    #[test]
    fn mutated_valid_lines_never_panic() {
        let full = format!("{FULL} irmin_branch=main irmin_prefix=x/y auth=on loglvl=debug");
        exercise(&full);
        let alphabet = b"0123456789./:,=abcdefxyz_- \x00\xff";
        let mut rng = XorShift(42);
        let mut accepted = 0;
        for _ in 0..50_000 {
            let mut bytes = full.as_bytes().to_vec();
            for _ in 0..=rng.below(4) {
                let at = rng.below(bytes.len());
                match rng.below(3) {
                    0 => bytes[at] = alphabet[rng.below(alphabet.len())],
                    1 => {
                        bytes.remove(at);
                    }
                    _ => bytes.insert(at, alphabet[rng.below(alphabet.len())]),
                }
            }
            let s = StdString::from_utf8_lossy(&bytes);
            if parse(&s).is_ok() {
                accepted += 1;
            }
            exercise(&s);
        }
        // The mutations reach the semantic checks, not just the tokenizer.
        assert!(accepted > 100, "only {accepted} mutants accepted");
    }

    #[test]
    fn error_key_fits() {
        // Every key name fits the error's key field unabbreviated.
        for k in [
            "ext",
            "gw",
            "int",
            "mgmt",
            "port",
            "irmin",
            "irmin_branch",
            "irmin_prefix",
            "key",
            "auth",
            "flows",
            "rules",
            "roles",
            "loglvl",
            "cmdline",
        ] {
            assert!(k.len() <= ERROR_KEY_LEN);
            assert_eq!(ConfigError::new(k, ConfigProblem::Missing).key.as_str(), k);
        }
        let _unused: &dyn core::error::Error = &ConfigError::new("x", ConfigProblem::Missing);
        let _ = ToString::to_string(&1);
    }
}
