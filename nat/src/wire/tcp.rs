//! TCP headers (RFC 9293), as far as a NAT needs them: ports, sequence and
//! acknowledgment numbers, the control flags, and the checksum over the
//! IPv4 pseudo-header.

use core::fmt;
use core::net::Ipv4Addr;

use super::{
    check_announced, field, read, read_u16, read_u8, slice, write, write_u16, write_u8, WireError,
};
use crate::checksum;

mod fields {
    use super::field::Field;
    pub const SRC_PORT: Field = 0..2;
    pub const DST_PORT: Field = 2..4;
    pub const SEQ_NUM: Field = 4..8;
    pub const ACK_NUM: Field = 8..12;
    pub const DATA_OFF: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WINDOW: Field = 14..16;
    pub const CHECKSUM: Field = 16..18;
    pub const URGENT: Field = 18..20;
}

/// The IP protocol number of TCP, for the pseudo-header.
const PROTOCOL: u8 = 6;

/// A view of a TCP segment (header and data).
///
/// A checked view guarantees a data offset of at least five words and a
/// header (options included) inside the buffer. The whole buffer is the
/// segment: pass exactly the IPv4 payload. The checksum is not checked by
/// `new_checked`: call [`TcpPacket::verify_checksum`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    /// Length of a header without options.
    pub const MIN_HEADER_LEN: usize = fields::URGENT.end;

    /// The FIN flag bit of [`TcpPacket::flags`].
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
    pub const ECE: u8 = 0x40;
    pub const CWR: u8 = 0x80;

    /// Offset of the checksum field inside the header (the NAT rewrites it
    /// in place, also in the truncated headers quoted by ICMP errors).
    pub const CHECKSUM_OFFSET: usize = fields::CHECKSUM.start;

    pub const fn new_unchecked(buffer: T) -> Self {
        TcpPacket { buffer }
    }

    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// The structural checks of [`TcpPacket::new_checked`].
    pub fn check_len(&self) -> Result<(), WireError> {
        let len = self.buffer.as_ref().len();
        if len < Self::MIN_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        check_announced(usize::from(self.header_len()), Self::MIN_HEADER_LEN, len)
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn src_port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), fields::SRC_PORT.start)
    }

    pub fn dst_port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), fields::DST_PORT.start)
    }

    pub fn seq_number(&self) -> u32 {
        u32::from_be_bytes(read(self.buffer.as_ref(), fields::SEQ_NUM.start))
    }

    pub fn ack_number(&self) -> u32 {
        u32::from_be_bytes(read(self.buffer.as_ref(), fields::ACK_NUM.start))
    }

    /// Header length in bytes (data offset * 4, 0..=60).
    pub fn header_len(&self) -> u8 {
        (read_u8(self.buffer.as_ref(), fields::DATA_OFF) >> 4).wrapping_mul(4)
    }

    /// The eight control bits (CWR ECE URG ACK PSH RST SYN FIN).
    pub fn flags(&self) -> u8 {
        read_u8(self.buffer.as_ref(), fields::FLAGS)
    }

    pub fn fin(&self) -> bool {
        self.flags() & Self::FIN != 0
    }

    pub fn syn(&self) -> bool {
        self.flags() & Self::SYN != 0
    }

    pub fn rst(&self) -> bool {
        self.flags() & Self::RST != 0
    }

    pub fn psh(&self) -> bool {
        self.flags() & Self::PSH != 0
    }

    pub fn ack(&self) -> bool {
        self.flags() & Self::ACK != 0
    }

    pub fn urg(&self) -> bool {
        self.flags() & Self::URG != 0
    }

    pub fn window_len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), fields::WINDOW.start)
    }

    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), fields::CHECKSUM.start)
    }

    pub fn urgent_at(&self) -> u16 {
        read_u16(self.buffer.as_ref(), fields::URGENT.start)
    }

    /// The options (empty without options or on a short buffer).
    pub fn options(&self) -> &[u8] {
        slice(
            self.buffer.as_ref(),
            Self::MIN_HEADER_LEN..usize::from(self.header_len()),
        )
    }

    /// The data after the header.
    pub fn payload(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        let start = usize::from(self.header_len()).max(Self::MIN_HEADER_LEN);
        slice(b, start..b.len())
    }

    /// Whether the checksum over the pseudo-header (`src`, `dst`) and the
    /// whole segment verifies.
    pub fn verify_checksum(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        let b = self.buffer.as_ref();
        let Ok(len) = u16::try_from(b.len()) else {
            return false;
        };
        b.len() >= Self::MIN_HEADER_LEN
            && checksum::combine(&[
                checksum::pseudo_header_sum(src, dst, PROTOCOL, len),
                checksum::sum(b),
            ]) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
    pub fn set_src_port(&mut self, port: u16) {
        write_u16(self.buffer.as_mut(), fields::SRC_PORT.start, port);
    }

    pub fn set_dst_port(&mut self, port: u16) {
        write_u16(self.buffer.as_mut(), fields::DST_PORT.start, port);
    }

    pub fn set_seq_number(&mut self, seq: u32) {
        write(
            self.buffer.as_mut(),
            fields::SEQ_NUM.start,
            seq.to_be_bytes(),
        );
    }

    pub fn set_ack_number(&mut self, ack: u32) {
        write(
            self.buffer.as_mut(),
            fields::ACK_NUM.start,
            ack.to_be_bytes(),
        );
    }

    /// Sets the header length in bytes (a multiple of four, 20..=60); the
    /// reserved bits are cleared.
    pub fn set_header_len(&mut self, len: u8) {
        write_u8(
            self.buffer.as_mut(),
            fields::DATA_OFF,
            ((len / 4) & 0x0f) << 4,
        );
    }

    pub fn set_flags(&mut self, flags: u8) {
        write_u8(self.buffer.as_mut(), fields::FLAGS, flags);
    }

    pub fn set_window_len(&mut self, window: u16) {
        write_u16(self.buffer.as_mut(), fields::WINDOW.start, window);
    }

    pub fn set_checksum(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), fields::CHECKSUM.start, value);
    }

    pub fn set_urgent_at(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), fields::URGENT.start, value);
    }

    /// Computes and stores the checksum over the pseudo-header and the
    /// whole segment (nothing is written when the buffer exceeds 65,535
    /// bytes).
    pub fn fill_checksum(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        let Ok(len) = u16::try_from(self.buffer.as_ref().len()) else {
            return;
        };
        self.set_checksum(0);
        let c = !checksum::combine(&[
            checksum::pseudo_header_sum(src, dst, PROTOCOL, len),
            checksum::sum(self.buffer.as_ref()),
        ]);
        self.set_checksum(c);
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for TcpPacket<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

impl<T: AsRef<[u8]>> fmt::Display for TcpPacket<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TCP src={} dst={}", self.src_port(), self.dst_port())?;
        for (bit, name) in [
            (Self::SYN, " syn"),
            (Self::ACK, " ack"),
            (Self::FIN, " fin"),
            (Self::RST, " rst"),
            (Self::PSH, " psh"),
        ] {
            if self.flags() & bit != 0 {
                f.write_str(name)?;
            }
        }
        write!(
            f,
            " seq={} ack={} win={} len={}",
            self.seq_number(),
            self.ack_number(),
            self.window_len(),
            self.payload().len()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::naive_checksum;

    const SRC: Ipv4Addr = Ipv4Addr::new(192, 168, 252, 7);
    const DST: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 9);

    /// A SYN with an MSS option and 3 bytes of data, checksum filled by the
    /// naive implementation.
    fn segment() -> Vec<u8> {
        let mut b = vec![
            0xc3, 0x50, 0x00, 0x50, // ports 50000 -> 80
            0x01, 0x02, 0x03, 0x04, // seq
            0x00, 0x00, 0x00, 0x00, // ack
            0x60, 0x02, 0xfa, 0xf0, // data offset 6, SYN, window
            0x00, 0x00, 0x00, 0x00, // checksum, urgent
            0x02, 0x04, 0x05, 0xb4, // MSS 1460
            b'a', b'b', b'c',
        ];
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&SRC.octets());
        pseudo.extend_from_slice(&DST.octets());
        pseudo.extend_from_slice(&[0, 6, 0, b.len() as u8]);
        pseudo.extend_from_slice(&b);
        let c = naive_checksum(&pseudo);
        b[16..18].copy_from_slice(&c.to_be_bytes());
        b
    }

    #[test]
    fn parse() {
        let b = segment();
        let p = TcpPacket::new_checked(&b[..]).unwrap();
        assert_eq!((p.src_port(), p.dst_port()), (50000, 80));
        assert_eq!(p.seq_number(), 0x01020304);
        assert_eq!(p.ack_number(), 0);
        assert_eq!(p.header_len(), 24);
        assert!(p.syn() && !p.ack() && !p.fin() && !p.rst() && !p.psh() && !p.urg());
        assert_eq!(p.flags(), TcpPacket::<&[u8]>::SYN);
        assert_eq!(p.window_len(), 0xfaf0);
        assert_eq!(p.options(), &[2, 4, 5, 0xb4]);
        assert_eq!(p.payload(), b"abc");
        assert!(p.verify_checksum(SRC, DST));
        assert!(!p.verify_checksum(DST, Ipv4Addr::new(1, 2, 3, 4)));
        assert_eq!(
            p.to_string(),
            "TCP src=50000 dst=80 syn seq=16909060 ack=0 win=64240 len=3"
        );
    }

    #[test]
    fn fill_matches_naive() {
        let good = segment();
        let mut b = good.clone();
        b[16] ^= 0x55;
        let mut p = TcpPacket::new_unchecked(&mut b[..]);
        assert!(!p.verify_checksum(SRC, DST));
        p.fill_checksum(SRC, DST);
        assert_eq!(b, good);
    }

    #[test]
    fn checks() {
        let b = segment();
        for len in 0..20 {
            assert_eq!(TcpPacket::new_checked(&b[..len]), Err(WireError::Truncated));
        }
        // Data offset 6 needs 24 bytes.
        assert_eq!(TcpPacket::new_checked(&b[..23]), Err(WireError::Truncated));
        let mut m = b.clone();
        m[12] = 0x40;
        assert_eq!(TcpPacket::new_checked(&m[..]), Err(WireError::Malformed));
        m[12] = 0xf0;
        assert_eq!(TcpPacket::new_checked(&m[..]), Err(WireError::Truncated));
    }

    #[test]
    fn setters() {
        let mut b = [0u8; 20];
        let mut p = TcpPacket::new_unchecked(&mut b[..]);
        p.set_src_port(1);
        p.set_dst_port(2);
        p.set_seq_number(3);
        p.set_ack_number(4);
        p.set_header_len(20);
        p.set_flags(TcpPacket::<&[u8]>::ACK | TcpPacket::<&[u8]>::FIN);
        p.set_window_len(5);
        p.set_urgent_at(6);
        p.fill_checksum(SRC, DST);
        assert!(p.verify_checksum(SRC, DST));
        assert!(p.fin() && p.ack());
        assert_eq!(
            (p.src_port(), p.dst_port(), p.seq_number(), p.ack_number()),
            (1, 2, 3, 4)
        );
        assert_eq!((p.window_len(), p.urgent_at(), p.header_len()), (5, 6, 20));
    }

    #[test]
    fn garbage_is_harmless() {
        let p = TcpPacket::new_unchecked(&[0xff][..]);
        assert_eq!(p.dst_port(), 0);
        assert!(p.payload().is_empty());
        assert!(p.options().is_empty());
        assert!(!p.verify_checksum(SRC, DST));
    }
}
