//! Ethernet II frames (without preamble and FCS, as netfront delivers them).

use core::fmt;
use core::str::FromStr;

use super::{field, read, read_u16, slice, slice_mut, write, write_u16, WireError};

/// A 48-bit Ethernet (MAC) address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct EthernetAddress(pub [u8; 6]);

impl EthernetAddress {
    /// `ff:ff:ff:ff:ff:ff`.
    pub const BROADCAST: EthernetAddress = EthernetAddress([0xff; 6]);
    /// `00:00:00:00:00:00`, the "unknown" target hardware address of ARP.
    pub const UNSPECIFIED: EthernetAddress = EthernetAddress([0; 6]);

    /// The address from its six bytes, in transmission order.
    pub const fn new(b0: u8, b1: u8, b2: u8, b3: u8, b4: u8, b5: u8) -> Self {
        EthernetAddress([b0, b1, b2, b3, b4, b5])
    }

    /// The address from the first six bytes of `bytes`, if there are six.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        bytes
            .get(..6)
            .and_then(|b| <[u8; 6]>::try_from(b).ok())
            .map(EthernetAddress)
    }

    /// The six bytes.
    pub const fn as_bytes(&self) -> &[u8; 6] {
        &self.0
    }

    /// Whether this is `ff:ff:ff:ff:ff:ff`.
    pub fn is_broadcast(&self) -> bool {
        *self == Self::BROADCAST
    }

    /// Whether the group bit is set (multicast, broadcast included).
    pub const fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }

    /// Whether this names one station: not multicast, not all zeros.
    pub fn is_unicast(&self) -> bool {
        !self.is_multicast() && *self != Self::UNSPECIFIED
    }

    /// Whether the locally-administered bit is set.
    pub const fn is_local(&self) -> bool {
        self.0[0] & 0x02 != 0
    }
}

impl fmt::Display for EthernetAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// Parses the xenstore form `00:16:3e:12:34:56`: six groups of exactly two
/// hexadecimal digits (either case) separated by colons.
impl FromStr for EthernetAddress {
    type Err = WireError;

    fn from_str(s: &str) -> Result<Self, WireError> {
        let mut out = [0u8; 6];
        let mut groups = s.split(':');
        for byte in out.iter_mut() {
            let group = groups.next().ok_or(WireError::Malformed)?;
            let digits = group.as_bytes();
            let [hi, lo] = *digits else {
                return Err(WireError::Malformed);
            };
            *byte = (hex_digit(hi)? << 4) | hex_digit(lo)?;
        }
        if groups.next().is_some() {
            return Err(WireError::Malformed);
        }
        Ok(EthernetAddress(out))
    }
}

fn hex_digit(c: u8) -> Result<u8, WireError> {
    match c {
        b'0'..=b'9' => Ok(c.wrapping_sub(b'0')),
        b'a'..=b'f' => Ok(c.wrapping_sub(b'a').wrapping_add(10)),
        b'A'..=b'F' => Ok(c.wrapping_sub(b'A').wrapping_add(10)),
        _ => Err(WireError::Malformed),
    }
}

/// The EtherType field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EtherType {
    Ipv4,
    Arp,
    Ipv6,
    /// 802.1Q VLAN tag (unsupported: such frames are dropped).
    Vlan,
    /// 802.1ad QinQ service tag (unsupported).
    QinQ,
    /// Any other value, including 802.3 length fields (< 0x0600).
    Unknown(u16),
}

impl From<u16> for EtherType {
    fn from(v: u16) -> Self {
        match v {
            0x0800 => EtherType::Ipv4,
            0x0806 => EtherType::Arp,
            0x86dd => EtherType::Ipv6,
            0x8100 => EtherType::Vlan,
            0x88a8 => EtherType::QinQ,
            other => EtherType::Unknown(other),
        }
    }
}

impl From<EtherType> for u16 {
    fn from(t: EtherType) -> u16 {
        match t {
            EtherType::Ipv4 => 0x0800,
            EtherType::Arp => 0x0806,
            EtherType::Ipv6 => 0x86dd,
            EtherType::Vlan => 0x8100,
            EtherType::QinQ => 0x88a8,
            EtherType::Unknown(v) => v,
        }
    }
}

impl fmt::Display for EtherType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EtherType::Ipv4 => f.write_str("IPv4"),
            EtherType::Arp => f.write_str("ARP"),
            EtherType::Ipv6 => f.write_str("IPv6"),
            EtherType::Vlan => f.write_str("802.1Q"),
            EtherType::QinQ => f.write_str("802.1ad"),
            EtherType::Unknown(v) => write!(f, "0x{v:04x}"),
        }
    }
}

mod fields {
    use super::field::{Field, Rest};
    pub const DST: Field = 0..6;
    pub const SRC: Field = 6..12;
    pub const ETHERTYPE: Field = 12..14;
    pub const PAYLOAD: Rest = 14..;
}

/// A view of an Ethernet II frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// Length of the Ethernet II header.
    pub const HEADER_LEN: usize = fields::PAYLOAD.start;
    /// Largest frame of a 1500-byte MTU link, header included, FCS excluded.
    pub const MAX_LEN: usize = 1514;

    /// Wraps `buffer` without checking it.
    pub const fn new_unchecked(buffer: T) -> Self {
        EthernetFrame { buffer }
    }

    /// Wraps `buffer` after checking it holds a full header.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let frame = Self::new_unchecked(buffer);
        frame.check_len()?;
        Ok(frame)
    }

    /// Checks that the buffer holds a full header.
    pub fn check_len(&self) -> Result<(), WireError> {
        if self.buffer.as_ref().len() < Self::HEADER_LEN {
            Err(WireError::Truncated)
        } else {
            Ok(())
        }
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Frame length for a payload of `payload_len` bytes (saturating).
    pub const fn buffer_len(payload_len: usize) -> usize {
        Self::HEADER_LEN.saturating_add(payload_len)
    }

    pub fn dst_addr(&self) -> EthernetAddress {
        EthernetAddress(read(self.buffer.as_ref(), fields::DST.start))
    }

    pub fn src_addr(&self) -> EthernetAddress {
        EthernetAddress(read(self.buffer.as_ref(), fields::SRC.start))
    }

    pub fn ethertype(&self) -> EtherType {
        EtherType::from(read_u16(self.buffer.as_ref(), fields::ETHERTYPE.start))
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> EthernetFrame<&'a T> {
    /// Everything after the header (including any link-layer padding),
    /// borrowed for as long as the underlying buffer.
    pub fn payload(&self) -> &'a [u8] {
        let b: &'a [u8] = T::as_ref(self.buffer);
        slice(b, fields::PAYLOAD.start..b.len())
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    pub fn set_dst_addr(&mut self, addr: EthernetAddress) {
        write(self.buffer.as_mut(), fields::DST.start, addr.0);
    }

    pub fn set_src_addr(&mut self, addr: EthernetAddress) {
        write(self.buffer.as_mut(), fields::SRC.start, addr.0);
    }

    pub fn set_ethertype(&mut self, ethertype: EtherType) {
        write_u16(
            self.buffer.as_mut(),
            fields::ETHERTYPE.start,
            ethertype.into(),
        );
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        let b = self.buffer.as_mut();
        let len = b.len();
        slice_mut(b, fields::PAYLOAD.start..len)
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for EthernetFrame<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

impl<T: AsRef<[u8]>> fmt::Display for EthernetFrame<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "EthernetII src={} dst={} type={}",
            self.src_addr(),
            self.dst_addr(),
            self.ethertype()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAME: [u8; 18] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // dst
        0x00, 0x16, 0x3e, 0x01, 0x02, 0x03, // src
        0x08, 0x06, // ARP
        0xaa, 0xbb, 0xcc, 0xdd,
    ];

    #[test]
    fn parse() {
        let f = EthernetFrame::new_checked(&FRAME[..]).unwrap();
        assert_eq!(f.dst_addr(), EthernetAddress::BROADCAST);
        assert_eq!(
            f.src_addr(),
            EthernetAddress::new(0x00, 0x16, 0x3e, 1, 2, 3)
        );
        assert_eq!(f.ethertype(), EtherType::Arp);
        assert_eq!(f.payload(), &[0xaa, 0xbb, 0xcc, 0xdd]);
        assert_eq!(
            f.to_string(),
            "EthernetII src=00:16:3e:01:02:03 dst=ff:ff:ff:ff:ff:ff type=ARP"
        );
    }

    #[test]
    fn header_only_and_truncated() {
        let f = EthernetFrame::new_checked(&FRAME[..14]).unwrap();
        assert!(f.payload().is_empty());
        for len in 0..14 {
            assert_eq!(
                EthernetFrame::new_checked(&FRAME[..len]),
                Err(WireError::Truncated)
            );
        }
    }

    #[test]
    fn vlan_is_reported() {
        let mut b = FRAME;
        b[12] = 0x81;
        b[13] = 0x00;
        assert_eq!(
            EthernetFrame::new_checked(&b[..]).unwrap().ethertype(),
            EtherType::Vlan
        );
        b[12] = 0x00;
        b[13] = 0x2e; // 802.3 length
        assert_eq!(
            EthernetFrame::new_checked(&b[..]).unwrap().ethertype(),
            EtherType::Unknown(0x2e)
        );
    }

    #[test]
    fn emit() {
        let mut b = [0u8; 18];
        let mut f = EthernetFrame::new_unchecked(&mut b[..]);
        f.set_dst_addr(EthernetAddress::BROADCAST);
        f.set_src_addr(EthernetAddress::new(0x00, 0x16, 0x3e, 1, 2, 3));
        f.set_ethertype(EtherType::Arp);
        f.payload_mut().copy_from_slice(&[0xaa, 0xbb, 0xcc, 0xdd]);
        assert_eq!(b, FRAME);
    }

    #[test]
    fn unchecked_short_buffer_is_harmless() {
        let mut b = [0x12u8; 5];
        let mut f = EthernetFrame::new_unchecked(&mut b[..]);
        assert_eq!(f.src_addr(), EthernetAddress::UNSPECIFIED);
        assert_eq!(f.ethertype(), EtherType::Unknown(0));
        assert!(f.payload_mut().is_empty());
        f.set_ethertype(EtherType::Ipv4);
        f.set_src_addr(EthernetAddress::BROADCAST);
        assert_eq!(b, [0x12; 5]);
    }

    #[test]
    fn address_text() {
        let a: EthernetAddress = "00:16:3e:0a:Bc:ff".parse().unwrap();
        assert_eq!(a, EthernetAddress::new(0x00, 0x16, 0x3e, 0x0a, 0xbc, 0xff));
        assert_eq!(a.to_string(), "00:16:3e:0a:bc:ff");
        for bad in [
            "",
            "00:16:3e:0a:bc",
            "00:16:3e:0a:bc:ff:00",
            "00:16:3e:0a:bc:f",
            "00:16:3e:0a:bc:fff",
            "00-16-3e-0a-bc-ff",
            "00:16:3e:0a:bc:fg",
            "00:16:3e:0a:bc:ff:",
            " 00:16:3e:0a:bc:ff",
            "00:16:3e:0a:bc:é",
        ] {
            assert_eq!(
                bad.parse::<EthernetAddress>(),
                Err(WireError::Malformed),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn address_classes() {
        assert!(EthernetAddress::BROADCAST.is_broadcast());
        assert!(EthernetAddress::BROADCAST.is_multicast());
        assert!(!EthernetAddress::BROADCAST.is_unicast());
        assert!(EthernetAddress::new(0x01, 0x00, 0x5e, 0, 0, 1).is_multicast());
        assert!(EthernetAddress::new(0x00, 0x16, 0x3e, 0, 0, 1).is_unicast());
        assert!(!EthernetAddress::UNSPECIFIED.is_unicast());
        assert!(EthernetAddress::new(0x02, 0, 0, 0, 0, 1).is_local());
        assert_eq!(EthernetAddress::from_bytes(&[1, 2, 3, 4, 5]), None);
        assert_eq!(
            EthernetAddress::from_bytes(&[1, 2, 3, 4, 5, 6, 7]),
            Some(EthernetAddress::new(1, 2, 3, 4, 5, 6))
        );
    }
}
