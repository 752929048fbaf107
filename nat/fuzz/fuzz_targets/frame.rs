//! Feeds arbitrary frames to `pih_nat::host::Interface::process`, and the
//! same bytes to every wire parser, checking that nothing panics and that
//! everything the interface emits or classifies is well formed.
//!
//! Input layout, so that one input drives a sequence of frames through the
//! same interface (ARP cache, pending queue and timers carry over):
//!
//! ```text
//! ctl:u8  then records  len_hi:u8 len_lo:u8 dt:u8 frame[len]
//! ```
//!
//! `len` is clamped to the bytes left. `dt` advances the clock by
//! `dt & 0x7f` x 50 ms (so ARP rate limits, the 3 s resolution timeout and
//! the 60 s neighbor lifetime are all reached); its top bit makes the
//! transmitter refuse frames when `ctl & 4`. `ctl & 3` picks the size of the
//! transmit buffers (1514, 2048, 42, 100 bytes); `ctl & 8` calls `poll`
//! after each frame; odd `dt` also sends a packet with `send_ipv4`.
#![no_main]

use core::net::Ipv4Addr;
use core::str::FromStr;

use libfuzzer_sys::fuzz_target;
use pih_nat::host::{Disposition, Interface, Ipv4Cidr, SendStatus, Transmit};
use pih_nat::wire::{
    ArpPacket, ArpRepr, EtherType, EthernetAddress, EthernetFrame, IcmpPacket, IpProtocol,
    Ipv4Packet,
};
use pih_nat::{checksum, NS_PER_SEC};

const OUR_MAC: EthernetAddress = EthernetAddress::new(0x00, 0x16, 0x3e, 0x00, 0x00, 0x02);
const OUR_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const GW_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

/// Checks every frame the interface hands over.
struct Tx {
    buf: [u8; 2048],
    len: usize,
    refuse: bool,
}

impl Transmit for Tx {
    fn transmit<F: FnOnce(&mut [u8]) -> usize>(&mut self, build: F) -> bool {
        if self.refuse {
            return false;
        }
        self.buf.fill(0xa5);
        let n = build(&mut self.buf[..self.len]);
        assert!(n <= self.len, "frame longer than its buffer");
        if n == 0 {
            return false;
        }
        check_emitted(&self.buf[..n]);
        true
    }
}

fn check_emitted(f: &[u8]) {
    assert!(f.len() <= 1514);
    let eth = EthernetFrame::new_checked(f).expect("emitted frame has a header");
    assert_eq!(eth.src_addr(), OUR_MAC);
    assert!(!eth.dst_addr().is_multicast() || eth.dst_addr().is_broadcast());
    match eth.ethertype() {
        EtherType::Arp => {
            assert_eq!(f.len(), 42);
            let arp = ArpPacket::new_checked(eth.payload()).expect("emitted ARP parses");
            let arp = ArpRepr::parse(&arp).expect("emitted ARP parses");
            assert_eq!(arp.source_hardware_addr, OUR_MAC);
            assert_eq!(arp.source_protocol_addr, OUR_IP);
        }
        EtherType::Ipv4 => {
            let ip = Ipv4Packet::new_checked(eth.payload()).expect("emitted IPv4 parses");
            assert!(ip.verify_checksum(), "emitted IPv4 checksum");
            assert_eq!(ip.src_addr(), OUR_IP);
            assert_eq!(usize::from(ip.total_len()) + 14, f.len());
            if ip.protocol() == IpProtocol::Icmp {
                let icmp = IcmpPacket::new_checked(ip.payload()).expect("emitted ICMP parses");
                assert!(icmp.verify_checksum(), "emitted ICMP checksum");
            }
        }
        other => panic!("emitted ethertype {other}"),
    }
}

/// Every parser, getter, Display and setter on arbitrary bytes.
fn exercise_parsers(data: &[u8]) {
    if let Ok(s) = core::str::from_utf8(data) {
        if let Ok(mac) = EthernetAddress::from_str(s) {
            assert_eq!(EthernetAddress::from_str(&mac.to_string()), Ok(mac));
        }
    }
    let mut l3 = data;
    if let Ok(eth) = EthernetFrame::new_checked(data) {
        let _ = format!("{eth}");
        l3 = eth.payload();
    }
    for bytes in [data, l3] {
        if let Ok(arp) = ArpPacket::new_checked(bytes) {
            let repr = ArpRepr::parse(&arp).expect("checked ARP parses");
            let _ = format!("{repr}");
            let mut out = [0u8; 28];
            repr.emit(&mut ArpPacket::new_unchecked(&mut out[..]));
            assert_eq!(&out[..], &bytes[..28]);
        }
        if let Ok(ip) = Ipv4Packet::new_checked(bytes) {
            let _ = format!("{ip}");
            let _ = (ip.options(), ip.verify_checksum(), ip.frag_offset(), ip.dscp());
            assert!(ip.payload().len() + usize::from(ip.header_len()) == usize::from(ip.total_len()));
            if let Ok(icmp) = IcmpPacket::new_checked(ip.payload()) {
                let _ = format!("{icmp}");
                let _ = (icmp.verify_checksum(), icmp.data(), icmp.rest_of_header());
            }
            let mut copy = bytes.to_vec();
            let mut m = Ipv4Packet::new_unchecked(&mut copy[..]);
            m.set_ttl(m.ttl().wrapping_sub(1));
            m.fill_checksum();
            assert!(m.verify_checksum());
            // The incremental update agrees with the recomputation.
            let old = m.src_addr();
            let c = m.checksum();
            m.set_src_addr(Ipv4Addr::new(192, 0, 2, 1));
            let inc = checksum::update_addr(c, old, Ipv4Addr::new(192, 0, 2, 1));
            m.set_checksum(inc);
            assert!(m.verify_checksum());
        }
        if let Ok(icmp) = IcmpPacket::new_checked(bytes) {
            let _ = (icmp.msg_type(), icmp.echo_ident(), icmp.echo_seq_no(), format!("{icmp}"));
        }
    }
    // Unchecked views on arbitrary buffers never panic either.
    let mut copy = data.to_vec();
    let mut ip = Ipv4Packet::new_unchecked(&mut copy[..]);
    ip.set_header_len(60);
    ip.set_total_len(u16::MAX);
    ip.fill_checksum();
    let _ = (ip.payload_mut().len(), ip.options_mut().len(), ip.header().len());
    let mut icmp = IcmpPacket::new_unchecked(&mut copy[..]);
    icmp.fill_checksum();
    let _ = icmp.data_mut().len();
}

fn check_disposition(d: Disposition, frame: &[u8]) {
    if let Disposition::Forward | Disposition::Local = d {
        let eth = EthernetFrame::new_checked(frame).expect("classified frame parses");
        assert_eq!(eth.ethertype(), EtherType::Ipv4);
        let ip = Ipv4Packet::new_checked(eth.payload()).expect("classified IPv4 parses");
        assert!(ip.verify_checksum());
        if d == Disposition::Local {
            assert_eq!(ip.dst_addr(), OUR_IP);
        } else {
            assert_eq!(eth.dst_addr(), OUR_MAC);
            assert_ne!(ip.dst_addr(), OUR_IP);
            assert!(!ip.dst_addr().is_broadcast() && !ip.dst_addr().is_multicast());
        }
    }
}

/// A valid UDP packet from us to `dst`, written by `send_ipv4`'s builder.
fn build_udp(buf: &mut [u8], dst: Ipv4Addr, payload: &[u8]) -> usize {
    let len = (20 + 8 + payload.len()).min(buf.len());
    let Ok(total) = u16::try_from(len) else { return 0 };
    let buf = &mut buf[..len];
    buf.fill(0);
    let mut ip = Ipv4Packet::new_unchecked(&mut buf[..]);
    ip.set_version(4);
    ip.set_header_len(20);
    ip.set_total_len(total);
    ip.set_ttl(64);
    ip.set_protocol(IpProtocol::Udp);
    ip.set_src_addr(OUR_IP);
    ip.set_dst_addr(dst);
    ip.fill_checksum();
    let n = payload.len().min(len - 28);
    ip.payload_mut()[8..8 + n].copy_from_slice(&payload[..n]);
    len
}

fuzz_target!(|data: &[u8]| {
    exercise_parsers(data);

    let Some((&ctl, mut rest)) = data.split_first() else {
        return;
    };
    let cidr = Ipv4Cidr::new(OUR_IP, 24).unwrap();
    let mut iface: Interface<8, 4> = Interface::new(OUR_MAC, cidr, Some(GW_IP));
    let mut tx = Tx {
        buf: [0; 2048],
        len: [1514, 2048, 42, 100][usize::from(ctl & 3)],
        refuse: false,
    };
    let mut now = 0u64;
    let mut frames = 0u64;
    if ctl & 0x10 != 0 {
        iface.announce(&mut tx);
    }
    while let [hi, lo, dt, tail @ ..] = rest {
        let len = usize::from(u16::from_be_bytes([*hi, *lo])).min(tail.len());
        let (frame, next) = tail.split_at(len);
        rest = next;
        now += u64::from(dt & 0x7f) * (NS_PER_SEC / 20);
        tx.refuse = ctl & 4 != 0 && dt & 0x80 != 0;

        exercise_parsers(frame);
        let d = iface.process(now, frame, &mut tx);
        frames += 1;
        check_disposition(d, frame);

        if dt & 1 != 0 {
            let host = frame.first().copied().unwrap_or(3);
            let dst = if frame.get(1).is_some_and(|b| b & 1 != 0) {
                Ipv4Addr::new(198, 51, 100, host)
            } else {
                Ipv4Addr::new(10, 0, 0, host)
            };
            let s = iface.send_ipv4(now, dst, &mut tx, |buf| build_udp(buf, dst, frame));
            assert!(!matches!(s, SendStatus::Empty));
        }
        if ctl & 8 != 0 {
            iface.poll(now, &mut tx);
            if let Some(at) = iface.poll_at(now) {
                assert!(at <= now + 3 * NS_PER_SEC);
            }
        }
        assert!(iface.pending().len() <= 4);
        assert!(iface.neighbors().len() <= 8);
    }
    assert_eq!(iface.counters().rx_frames, frames);
});
