//! ICMP for IPv4 (RFC 792).
//!
//! The view covers one ICMP message: the IPv4 payload. Every message has an
//! 8-byte header (type, code, checksum, and four type-specific bytes: the
//! identifier and sequence number of echo messages, unused or MTU for
//! errors); the rest is the data (the echo payload, or the leading bytes of
//! the offending datagram of an error).

use core::fmt;

use super::{field, read_u16, read_u8, slice, slice_mut, write, write_u16, write_u8, WireError};
use crate::checksum;

/// The ICMP message type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IcmpType {
    EchoReply,
    DestinationUnreachable,
    Redirect,
    EchoRequest,
    TimeExceeded,
    ParameterProblem,
    Unknown(u8),
}

impl From<u8> for IcmpType {
    fn from(v: u8) -> Self {
        match v {
            0 => IcmpType::EchoReply,
            3 => IcmpType::DestinationUnreachable,
            5 => IcmpType::Redirect,
            8 => IcmpType::EchoRequest,
            11 => IcmpType::TimeExceeded,
            12 => IcmpType::ParameterProblem,
            other => IcmpType::Unknown(other),
        }
    }
}

impl From<IcmpType> for u8 {
    fn from(t: IcmpType) -> u8 {
        match t {
            IcmpType::EchoReply => 0,
            IcmpType::DestinationUnreachable => 3,
            IcmpType::Redirect => 5,
            IcmpType::EchoRequest => 8,
            IcmpType::TimeExceeded => 11,
            IcmpType::ParameterProblem => 12,
            IcmpType::Unknown(v) => v,
        }
    }
}

impl IcmpType {
    /// Whether this type reports an error about another datagram (whose
    /// header it quotes).
    pub fn is_error(&self) -> bool {
        matches!(
            self,
            IcmpType::DestinationUnreachable
                | IcmpType::Redirect
                | IcmpType::TimeExceeded
                | IcmpType::ParameterProblem
        )
    }
}

mod fields {
    use super::field::Field;
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: Field = 2..4;
    pub const ECHO_IDENT: Field = 4..6;
    pub const ECHO_SEQ: Field = 6..8;
    pub const REST: Field = 4..8;
}

/// A view of an ICMP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IcmpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> IcmpPacket<T> {
    /// Length of the header common to all messages.
    pub const HEADER_LEN: usize = fields::REST.end;

    pub const fn new_unchecked(buffer: T) -> Self {
        IcmpPacket { buffer }
    }

    /// Checks that the buffer holds the 8-byte header. The whole buffer is
    /// the message: pass exactly the IPv4 payload. The checksum is not
    /// checked here: call [`IcmpPacket::verify_checksum`].
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    pub fn check_len(&self) -> Result<(), WireError> {
        if self.buffer.as_ref().len() < Self::HEADER_LEN {
            Err(WireError::Truncated)
        } else {
            Ok(())
        }
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn msg_type(&self) -> IcmpType {
        IcmpType::from(read_u8(self.buffer.as_ref(), fields::TYPE))
    }

    pub fn msg_code(&self) -> u8 {
        read_u8(self.buffer.as_ref(), fields::CODE)
    }

    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), fields::CHECKSUM.start)
    }

    /// Identifier of an echo request or reply.
    pub fn echo_ident(&self) -> u16 {
        read_u16(self.buffer.as_ref(), fields::ECHO_IDENT.start)
    }

    /// Sequence number of an echo request or reply.
    pub fn echo_seq_no(&self) -> u16 {
        read_u16(self.buffer.as_ref(), fields::ECHO_SEQ.start)
    }

    /// The four type-specific header bytes.
    pub fn rest_of_header(&self) -> &[u8] {
        slice(self.buffer.as_ref(), fields::REST)
    }

    /// Whether the checksum over the whole message verifies.
    pub fn verify_checksum(&self) -> bool {
        let b = self.buffer.as_ref();
        b.len() >= Self::HEADER_LEN && checksum::verify(b)
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> IcmpPacket<&'a T> {
    /// Everything after the 8-byte header: the echo payload, or the quoted
    /// datagram of an error message; borrowed for as long as the buffer.
    pub fn data(&self) -> &'a [u8] {
        let b: &'a [u8] = T::as_ref(self.buffer);
        slice(b, IcmpPacket::<&[u8]>::HEADER_LEN..b.len())
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> IcmpPacket<T> {
    pub fn set_msg_type(&mut self, t: IcmpType) {
        write_u8(self.buffer.as_mut(), fields::TYPE, t.into());
    }

    pub fn set_msg_code(&mut self, code: u8) {
        write_u8(self.buffer.as_mut(), fields::CODE, code);
    }

    pub fn set_checksum(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), fields::CHECKSUM.start, value);
    }

    pub fn set_echo_ident(&mut self, ident: u16) {
        write_u16(self.buffer.as_mut(), fields::ECHO_IDENT.start, ident);
    }

    pub fn set_echo_seq_no(&mut self, seq: u16) {
        write_u16(self.buffer.as_mut(), fields::ECHO_SEQ.start, seq);
    }

    pub fn set_rest_of_header(&mut self, rest: [u8; 4]) {
        write(self.buffer.as_mut(), fields::REST.start, rest);
    }

    pub fn data_mut(&mut self) -> &mut [u8] {
        let b = self.buffer.as_mut();
        let len = b.len();
        slice_mut(b, Self::HEADER_LEN..len)
    }

    /// Computes and stores the checksum over the whole message.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum::checksum(self.buffer.as_ref());
        self.set_checksum(c);
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for IcmpPacket<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

impl<T: AsRef<[u8]>> fmt::Display for IcmpPacket<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.msg_type() {
            t @ (IcmpType::EchoRequest | IcmpType::EchoReply) => write!(
                f,
                "ICMP {:?} id={} seq={} len={}",
                t,
                self.echo_ident(),
                self.echo_seq_no(),
                self.buffer.as_ref().len().saturating_sub(Self::HEADER_LEN)
            ),
            t => write!(f, "ICMP {:?} code={}", t, self.msg_code()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{naive_checksum, naive_verify};

    /// Echo request id 0x0102 seq 3, payload "abcd".
    fn echo_request() -> Vec<u8> {
        let mut b = vec![8, 0, 0, 0, 0x01, 0x02, 0x00, 0x03, b'a', b'b', b'c', b'd'];
        let c = naive_checksum(&b);
        b[2..4].copy_from_slice(&c.to_be_bytes());
        b
    }

    #[test]
    fn parse_echo() {
        let b = echo_request();
        let p = IcmpPacket::new_checked(&b[..]).unwrap();
        assert_eq!(p.msg_type(), IcmpType::EchoRequest);
        assert_eq!(p.msg_code(), 0);
        assert_eq!(p.echo_ident(), 0x0102);
        assert_eq!(p.echo_seq_no(), 3);
        assert_eq!(p.rest_of_header(), &[1, 2, 0, 3]);
        assert_eq!(p.data(), b"abcd");
        assert!(p.verify_checksum());
        assert_eq!(p.to_string(), "ICMP EchoRequest id=258 seq=3 len=4");
    }

    #[test]
    fn bad_checksum() {
        let mut b = echo_request();
        b[9] ^= 0x80;
        let p = IcmpPacket::new_checked(&b[..]).unwrap();
        assert!(!p.verify_checksum());
    }

    #[test]
    fn truncated() {
        let b = echo_request();
        for len in 0..8 {
            assert_eq!(
                IcmpPacket::new_checked(&b[..len]),
                Err(WireError::Truncated)
            );
        }
        assert!(IcmpPacket::new_checked(&b[..8]).unwrap().data().is_empty());
    }

    #[test]
    fn emit_reply() {
        let mut b = echo_request();
        let mut p = IcmpPacket::new_unchecked(&mut b[..]);
        p.set_msg_type(IcmpType::EchoReply);
        p.fill_checksum();
        assert!(p.verify_checksum());
        assert_eq!(b[0], 0);
        assert!(naive_verify(&b));
        let mut p = IcmpPacket::new_unchecked(&mut b[..]);
        p.set_echo_ident(7);
        p.set_echo_seq_no(9);
        p.data_mut()[0] = b'z';
        p.set_rest_of_header([0, 0, 0x05, 0xdc]);
        p.set_msg_code(4);
        assert_eq!(p.rest_of_header(), &[0, 0, 5, 0xdc]);
        assert_eq!(p.msg_code(), 4);
    }

    #[test]
    fn types() {
        for v in 0..=255u8 {
            assert_eq!(u8::from(IcmpType::from(v)), v);
        }
        assert!(IcmpType::TimeExceeded.is_error());
        assert!(!IcmpType::EchoRequest.is_error());
    }
}
