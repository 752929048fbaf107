use super::*;
use crate::neighbor::{NEIGHBOR_LIFETIME_NS, RESOLUTION_TIMEOUT_NS};
use crate::testutil::{naive_checksum, naive_verify, XorShift};
use crate::NS_PER_SEC as S;

use std::vec;
use std::vec::Vec as StdVec;

const OUR_MAC: EthernetAddress = EthernetAddress::new(0x00, 0x16, 0x3e, 0x00, 0x00, 0x02);
const GW_MAC: EthernetAddress = EthernetAddress::new(0x00, 0x16, 0x3e, 0x00, 0x00, 0x01);
const H3_MAC: EthernetAddress = EthernetAddress::new(0x00, 0x16, 0x3e, 0x00, 0x00, 0x03);
const OTHER_MAC: EthernetAddress = EthernetAddress::new(0x00, 0x16, 0x3e, 0x00, 0x00, 0x99);
const OUR_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const GW_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const H3_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 3);
const REMOTE_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);

fn iface() -> Interface {
    Interface::new(OUR_MAC, Ipv4Cidr::new(OUR_IP, 24).unwrap(), Some(GW_IP))
}

/// Collects transmitted frames; can lend short buffers or refuse.
struct VecTx {
    frames: StdVec<StdVec<u8>>,
    buf_len: usize,
    refuse: bool,
}

impl VecTx {
    fn new() -> Self {
        VecTx {
            frames: StdVec::new(),
            buf_len: 1514,
            refuse: false,
        }
    }

    fn take(&mut self) -> StdVec<StdVec<u8>> {
        std::mem::take(&mut self.frames)
    }
}

impl Transmit for VecTx {
    fn transmit<F: FnOnce(&mut [u8]) -> usize>(&mut self, build: F) -> bool {
        if self.refuse {
            return false;
        }
        let mut buf = vec![0xa5u8; self.buf_len];
        let n = build(&mut buf);
        assert!(n <= buf.len(), "builder claims more than its buffer");
        if n == 0 {
            return false;
        }
        buf.truncate(n);
        self.frames.push(buf);
        true
    }
}

// ------------------------------------------------------------ fixtures

fn eth(dst: EthernetAddress, src: EthernetAddress, ethertype: u16) -> StdVec<u8> {
    let mut f = StdVec::new();
    f.extend_from_slice(&dst.0);
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

#[allow(clippy::too_many_arguments)]
fn arp_frame(
    eth_dst: EthernetAddress,
    eth_src: EthernetAddress,
    op: u16,
    sha: EthernetAddress,
    spa: Ipv4Addr,
    tha: EthernetAddress,
    tpa: Ipv4Addr,
) -> StdVec<u8> {
    let mut f = eth(eth_dst, eth_src, 0x0806);
    f.extend_from_slice(&[0x00, 0x01, 0x08, 0x00, 6, 4]);
    f.extend_from_slice(&op.to_be_bytes());
    f.extend_from_slice(&sha.0);
    f.extend_from_slice(&spa.octets());
    f.extend_from_slice(&tha.0);
    f.extend_from_slice(&tpa.octets());
    f
}

fn arp_request_from(sha: EthernetAddress, spa: Ipv4Addr, tpa: Ipv4Addr) -> StdVec<u8> {
    arp_frame(
        EthernetAddress::BROADCAST,
        sha,
        1,
        sha,
        spa,
        EthernetAddress::UNSPECIFIED,
        tpa,
    )
}

fn arp_reply_from(sha: EthernetAddress, spa: Ipv4Addr) -> StdVec<u8> {
    arp_frame(OUR_MAC, sha, 2, sha, spa, OUR_MAC, OUR_IP)
}

/// An IPv4 header (with `options`) + payload, checksum filled by the naive
/// implementation.
fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, options: &[u8], payload: &[u8]) -> StdVec<u8> {
    assert_eq!(options.len() % 4, 0);
    let hlen = 20 + options.len();
    let total = (hlen + payload.len()) as u16;
    let mut p = vec![0x40 | (hlen / 4) as u8, 0x00];
    p.extend_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&[0xbe, 0xef, 0x40, 0x00, 64, proto, 0, 0]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(options);
    let c = naive_checksum(&p);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

fn icmp_echo(ty: u8, id: u16, seq: u16, data: &[u8]) -> StdVec<u8> {
    let mut m = vec![ty, 0, 0, 0];
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(data);
    let c = naive_checksum(&m);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    m
}

fn ipv4_frame(eth_dst: EthernetAddress, eth_src: EthernetAddress, packet: &[u8]) -> StdVec<u8> {
    let mut f = eth(eth_dst, eth_src, 0x0800);
    f.extend_from_slice(packet);
    f
}

fn echo_request_frame(src_mac: EthernetAddress, src: Ipv4Addr, data: &[u8]) -> StdVec<u8> {
    let icmp = icmp_echo(8, 0x1234, 7, data);
    ipv4_frame(OUR_MAC, src_mac, &ipv4(src, OUR_IP, 1, &[], &icmp))
}

/// Checks that `frame` is a correct echo reply to `request` and returns
/// its IPv4 part.
fn assert_echo_reply(frame: &[u8], request: &[u8], to_mac: EthernetAddress) {
    let req_ip = &request[14..];
    let req_ihl = usize::from(req_ip[0] & 0x0f) * 4;
    let req_total = usize::from(u16::from_be_bytes([req_ip[2], req_ip[3]]));
    let req_icmp = &req_ip[req_ihl..req_total];

    assert_eq!(&frame[0..6], &to_mac.0, "reply goes to the requester's MAC");
    assert_eq!(&frame[6..12], &OUR_MAC.0);
    assert_eq!(&frame[12..14], &[0x08, 0x00]);
    let ip = &frame[14..];
    assert_eq!(ip[0], 0x45, "version 4, no options");
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    assert_eq!(total, 20 + req_icmp.len());
    assert_eq!(ip.len(), total, "no trailing bytes");
    assert_eq!(&ip[6..8], &[0, 0], "no fragmentation flags");
    assert_eq!(ip[8], DEFAULT_TTL);
    assert_eq!(ip[9], 1);
    assert!(naive_verify(&ip[..20]), "IPv4 header checksum");
    assert_eq!(&ip[12..16], &OUR_IP.octets(), "source is our address");
    assert_eq!(&ip[16..20], &req_ip[12..16], "destination is the requester");
    let icmp = &ip[20..];
    assert_eq!(icmp[0], 0, "echo reply");
    assert_eq!(icmp[1], 0);
    assert!(naive_verify(icmp), "ICMP checksum");
    assert_eq!(&icmp[4..], &req_icmp[4..], "same id, seq and payload");
}

// ---------------------------------------------------------------- ARP

#[test]
fn arp_request_gets_byte_exact_reply() {
    let mut i = iface();
    let mut tx = VecTx::new();
    #[rustfmt::skip]
    let request: [u8; 42] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x16, 0x3e, 0x00, 0x00, 0x01, 0x08, 0x06,
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01,
        0x00, 0x16, 0x3e, 0x00, 0x00, 0x01, 10, 0, 0, 1,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 10, 0, 0, 2,
    ];
    #[rustfmt::skip]
    let expected: [u8; 42] = [
        0x00, 0x16, 0x3e, 0x00, 0x00, 0x01, 0x00, 0x16, 0x3e, 0x00, 0x00, 0x02, 0x08, 0x06,
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x02,
        0x00, 0x16, 0x3e, 0x00, 0x00, 0x02, 10, 0, 0, 2,
        0x00, 0x16, 0x3e, 0x00, 0x00, 0x01, 10, 0, 0, 1,
    ];
    assert_eq!(i.process(0, &request, &mut tx), Disposition::Consumed);
    assert_eq!(tx.take(), [expected.to_vec()]);
    assert_eq!(
        i.neighbors().peek(GW_IP, 0),
        Some(GW_MAC),
        "requester learned"
    );
    let c = i.counters();
    assert_eq!(
        (c.arp_requests_in, c.arp_replies_out, c.tx_frames),
        (1, 1, 1)
    );

    // The same request with Ethernet padding to 60 bytes.
    let mut padded = request.to_vec();
    padded.resize(60, 0);
    assert_eq!(i.process(1, &padded, &mut tx), Disposition::Consumed);
    assert_eq!(tx.take(), [expected.to_vec()]);
}

#[test]
fn arp_for_another_address_is_not_for_us() {
    let mut i = iface();
    let mut tx = VecTx::new();
    let f = arp_request_from(H3_MAC, H3_IP, Ipv4Addr::new(10, 0, 0, 50));
    assert_eq!(
        i.process(0, &f, &mut tx),
        Disposition::Dropped(DropReason::NotForUs)
    );
    assert!(tx.frames.is_empty());
    assert!(i.neighbors().is_empty(), "no learning from ARP not for us");
    assert_eq!(i.counters().dropped(DropReason::NotForUs), 1);
}

#[test]
fn arp_from_off_subnet_sender_is_answered_not_learned() {
    let mut i = iface();
    let mut tx = VecTx::new();
    let f = arp_request_from(H3_MAC, Ipv4Addr::new(172, 16, 0, 1), OUR_IP);
    assert_eq!(i.process(0, &f, &mut tx), Disposition::Consumed);
    assert_eq!(tx.take().len(), 1);
    assert!(i.neighbors().is_empty());
    // Nor the subnet's broadcast address.
    let f = arp_request_from(H3_MAC, Ipv4Addr::new(10, 0, 0, 255), OUR_IP);
    assert_eq!(i.process(0, &f, &mut tx), Disposition::Consumed);
    assert!(i.neighbors().is_empty());
}

#[test]
fn arp_reply_learns_and_releases_pending() {
    let mut i = iface();
    let mut tx = VecTx::new();
    let packet = ipv4(OUR_IP, H3_IP, 17, &[], b"hello");
    let build = |p: &[u8]| {
        let p = p.to_vec();
        move |buf: &mut [u8]| {
            buf[..p.len()].copy_from_slice(&p);
            p.len()
        }
    };
    assert_eq!(
        i.send_ipv4(0, H3_IP, &mut tx, build(&packet)),
        SendStatus::Queued
    );
    assert_eq!(
        i.send_ipv4(1, H3_IP, &mut tx, build(&packet)),
        SendStatus::Queued
    );
    // One broadcast ARP request only (rate limit).
    let sent = tx.take();
    assert_eq!(
        sent,
        [arp_frame(
            EthernetAddress::BROADCAST,
            OUR_MAC,
            1,
            OUR_MAC,
            OUR_IP,
            EthernetAddress::UNSPECIFIED,
            H3_IP
        )]
    );
    assert_eq!(i.pending().len(), 2);

    assert_eq!(
        i.process(2, &arp_reply_from(H3_MAC, H3_IP), &mut tx),
        Disposition::Consumed
    );
    let expected = ipv4_frame(H3_MAC, OUR_MAC, &packet);
    assert_eq!(tx.take(), [expected.clone(), expected]);
    assert!(i.pending().is_empty());
    assert_eq!(i.neighbors().peek(H3_IP, 2), Some(H3_MAC));
    let c = i.counters();
    assert_eq!(
        (c.arp_replies_in, c.pending_released, c.arp_requests_out),
        (1, 2, 1)
    );

    // Now known: sent at once.
    assert_eq!(
        i.send_ipv4(3, H3_IP, &mut tx, build(&packet)),
        SendStatus::Sent
    );
    assert_eq!(tx.take(), [ipv4_frame(H3_MAC, OUR_MAC, &packet)]);
}

#[test]
fn gratuitous_arp_updates_known_entries_only() {
    let mut i = iface();
    let mut tx = VecTx::new();
    let garp = |mac| {
        arp_frame(
            EthernetAddress::BROADCAST,
            mac,
            1,
            mac,
            H3_IP,
            EthernetAddress::UNSPECIFIED,
            H3_IP,
        )
    };
    assert_eq!(
        i.process(0, &garp(H3_MAC), &mut tx),
        Disposition::Dropped(DropReason::NotForUs)
    );
    assert!(i.neighbors().is_empty());
    i.neighbors_mut().fill(H3_IP, H3_MAC, 0);
    assert_eq!(
        i.process(1, &garp(OTHER_MAC), &mut tx),
        Disposition::Consumed
    );
    assert_eq!(i.neighbors().peek(H3_IP, 1), Some(OTHER_MAC));
    assert!(tx.frames.is_empty());
    // A broadcast reply form of gratuitous ARP works too.
    let reply = arp_frame(
        EthernetAddress::BROADCAST,
        H3_MAC,
        2,
        H3_MAC,
        H3_IP,
        EthernetAddress::BROADCAST,
        H3_IP,
    );
    assert_eq!(i.process(2, &reply, &mut tx), Disposition::Consumed);
    assert_eq!(i.neighbors().peek(H3_IP, 2), Some(H3_MAC));
}

#[test]
fn arp_probe_is_answered_without_learning() {
    let mut i = iface();
    let mut tx = VecTx::new();
    let probe = arp_request_from(H3_MAC, Ipv4Addr::UNSPECIFIED, OUR_IP);
    assert_eq!(i.process(0, &probe, &mut tx), Disposition::Consumed);
    let expected = arp_frame(
        H3_MAC,
        OUR_MAC,
        2,
        OUR_MAC,
        OUR_IP,
        H3_MAC,
        Ipv4Addr::UNSPECIFIED,
    );
    assert_eq!(tx.take(), [expected]);
    assert!(i.neighbors().is_empty());
}

#[test]
fn address_conflict_is_counted() {
    let mut i = iface();
    let mut tx = VecTx::new();
    let garp = arp_frame(
        EthernetAddress::BROADCAST,
        OTHER_MAC,
        1,
        OTHER_MAC,
        OUR_IP,
        EthernetAddress::UNSPECIFIED,
        OUR_IP,
    );
    assert_eq!(i.process(0, &garp, &mut tx), Disposition::Consumed);
    assert_eq!(i.counters().arp_conflicts, 1);
    assert!(tx.frames.is_empty());
    assert!(i.neighbors().is_empty());
}

#[test]
fn bad_arp_packets() {
    let mut i = iface();
    let mut tx = VecTx::new();
    let good = arp_request_from(GW_MAC, GW_IP, OUR_IP);

    let mut other_hw = good.clone();
    other_hw[15] = 6; // htype IEEE 802
    assert_eq!(
        i.process(0, &other_hw, &mut tx),
        Disposition::Dropped(DropReason::Unsupported)
    );
    let mut other_proto = good.clone();
    other_proto[16] = 0x86;
    other_proto[17] = 0xdd;
    assert_eq!(
        i.process(0, &other_proto, &mut tx),
        Disposition::Dropped(DropReason::Unsupported)
    );
    let mut unknown_op = good.clone();
    unknown_op[21] = 3; // RARP request
    assert_eq!(
        i.process(0, &unknown_op, &mut tx),
        Disposition::Dropped(DropReason::Unsupported)
    );
    for len in 14..42 {
        assert_eq!(
            i.process(0, &good[..len], &mut tx),
            Disposition::Dropped(DropReason::Malformed),
            "len {len}"
        );
    }
    let mut multicast_sender = good.clone();
    multicast_sender[22] = 0x01;
    assert_eq!(
        i.process(0, &multicast_sender, &mut tx),
        Disposition::Dropped(DropReason::Malformed)
    );
    assert!(tx.frames.is_empty());
    assert!(i.neighbors().is_empty());
    assert_eq!(i.counters().dropped(DropReason::Unsupported), 3);
    assert_eq!(i.counters().dropped(DropReason::Malformed), 29);
}

#[test]
fn announce_sends_gratuitous_arp() {
    let mut i = iface();
    let mut tx = VecTx::new();
    assert!(i.announce(&mut tx));
    let expected = arp_frame(
        EthernetAddress::BROADCAST,
        OUR_MAC,
        1,
        OUR_MAC,
        OUR_IP,
        EthernetAddress::UNSPECIFIED,
        OUR_IP,
    );
    assert_eq!(tx.take(), [expected]);
    assert_eq!(i.counters().arp_requests_out, 1);
}

// --------------------------------------------------------------- ICMP

#[test]
fn echo_request_gets_reply() {
    let mut i = iface();
    let mut tx = VecTx::new();
    let req = echo_request_frame(
        GW_MAC,
        GW_IP,
        b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUV",
    );
    assert_eq!(i.process(0, &req, &mut tx), Disposition::Consumed);
    let sent = tx.take();
    assert_eq!(sent.len(), 1);
    assert_echo_reply(&sent[0], &req, GW_MAC);
    assert_eq!(
        i.neighbors().peek(GW_IP, 0),
        Some(GW_MAC),
        "requester gleaned"
    );
    let c = i.counters();
    assert_eq!((c.icmp_echo_in, c.icmp_echo_out), (1, 1));
}

#[test]
fn echo_from_off_link_host_is_answered_via_the_frame_sender() {
    let mut i = iface();
    let mut tx = VecTx::new();
    let req = echo_request_frame(GW_MAC, REMOTE_IP, b"x");
    assert_eq!(i.process(0, &req, &mut tx), Disposition::Consumed);
    let sent = tx.take();
    assert_echo_reply(&sent[0], &req, GW_MAC);
    assert!(i.neighbors().is_empty(), "off-link source not gleaned");
}

#[test]
fn echo_with_1472_byte_payload() {
    let mut i = iface();
    let mut tx = VecTx::new();
    let data: StdVec<u8> = (0..1472u32).map(|n| (n * 7 + 3) as u8).collect();
    let req = echo_request_frame(H3_MAC, H3_IP, &data);
    assert_eq!(req.len(), 1514);
    assert_eq!(i.process(0, &req, &mut tx), Disposition::Consumed);
    let sent = tx.take();
    assert_eq!(sent[0].len(), 1514);
    assert_echo_reply(&sent[0], &req, H3_MAC);

    // A transmitter lending too short a buffer: no reply, counted.
    tx.buf_len = 1000;
    assert_eq!(i.process(1, &req, &mut tx), Disposition::Consumed);
    assert!(tx.frames.is_empty());
    assert_eq!(i.counters().dropped(DropReason::TxUnavailable), 1);
    assert_eq!(i.counters().icmp_echo_out, 1);
}

#[test]
fn echo_with_empty_payload_and_with_padding() {
    let mut i = iface();
    let mut tx = VecTx::new();
    let req = echo_request_frame(H3_MAC, H3_IP, b"");
    let mut padded = req.clone();
    padded.resize(60, 0xee);
    assert_eq!(i.process(0, &padded, &mut tx), Disposition::Consumed);
    let sent = tx.take();
    assert_eq!(sent[0].len(), 14 + 20 + 8, "padding is not echoed");
    assert_echo_reply(&sent[0], &req, H3_MAC);
}

#[test]
fn echo_with_ip_options_gets_plain_reply() {
    let mut i = iface();
    let mut tx = VecTx::new();
    let icmp = icmp_echo(8, 1, 2, b"opts");
    let req = ipv4_frame(
        OUR_MAC,
        H3_MAC,
        &ipv4(H3_IP, OUR_IP, 1, &[0x94, 0x04, 0, 0, 1, 1, 1, 0], &icmp),
    );
    assert_eq!(i.process(0, &req, &mut tx), Disposition::Consumed);
    assert_echo_reply(&tx.take()[0], &req, H3_MAC);
}

#[test]
fn echo_with_bad_checksums_is_dropped() {
    let mut i = iface();
    let mut tx = VecTx::new();
    let req = echo_request_frame(H3_MAC, H3_IP, b"payload");
    let mut bad_ip = req.clone();
    bad_ip[14 + 10] ^= 0x01;
    assert_eq!(
        i.process(0, &bad_ip, &mut tx),
        Disposition::Dropped(DropReason::BadChecksum)
    );
    let mut bad_icmp = req.clone();
    bad_icmp[14 + 20 + 9] ^= 0x40; // payload byte
    assert_eq!(
        i.process(0, &bad_icmp, &mut tx),
        Disposition::Dropped(DropReason::BadChecksum)
    );
    assert!(tx.frames.is_empty());
    assert_eq!(i.counters().dropped(DropReason::BadChecksum), 2);
    assert_eq!(i.counters().icmp_echo_in, 0);
}

#[test]
fn truncated_icmp_is_malformed() {
    let mut i = iface();
    let mut tx = VecTx::new();
    let req = ipv4_frame(
        OUR_MAC,
        H3_MAC,
        &ipv4(H3_IP, OUR_IP, 1, &[], &[8, 0, 0xf7, 0xff]),
    );
    assert_eq!(
        i.process(0, &req, &mut tx),
        Disposition::Dropped(DropReason::Malformed)
    );
}

#[test]
fn other_traffic_to_us_is_local() {
    let mut i = iface();
    let mut tx = VecTx::new();
    // TCP.
    let tcp = ipv4_frame(
        OUR_MAC,
        GW_MAC,
        &ipv4(REMOTE_IP, OUR_IP, 6, &[], &[0u8; 20]),
    );
    assert_eq!(i.process(0, &tcp, &mut tx), Disposition::Local);
    // An echo reply (to a ping the NAT forwarded).
    let reply = ipv4_frame(
        OUR_MAC,
        GW_MAC,
        &ipv4(REMOTE_IP, OUR_IP, 1, &[], &icmp_echo(0, 9, 9, b"r")),
    );
    assert_eq!(i.process(0, &reply, &mut tx), Disposition::Local);
    // A fragment of an echo request: not answered.
    let mut frag = ipv4(H3_IP, OUR_IP, 1, &[], &icmp_echo(8, 1, 1, b"frag"));
    frag[6] = 0x20; // MF
    frag[10] = 0;
    frag[11] = 0;
    let c = naive_checksum(&frag[..20]);
    frag[10..12].copy_from_slice(&c.to_be_bytes());
    assert_eq!(
        i.process(0, &ipv4_frame(OUR_MAC, H3_MAC, &frag), &mut tx),
        Disposition::Local
    );
    assert!(tx.frames.is_empty());
    assert_eq!(i.counters().local, 3);
}

// ------------------------------------------------------ classification

#[test]
fn forward_and_not_for_us() {
    let mut i = iface();
    let mut tx = VecTx::new();
    let udp = ipv4(H3_IP, REMOTE_IP, 17, &[], &[0u8; 12]);
    assert_eq!(
        i.process(0, &ipv4_frame(OUR_MAC, H3_MAC, &udp), &mut tx),
        Disposition::Forward
    );
    // Flooded unicast for another station.
    assert_eq!(
        i.process(0, &ipv4_frame(OTHER_MAC, H3_MAC, &udp), &mut tx),
        Disposition::Dropped(DropReason::NotForUs)
    );
    // Multicast MAC.
    let mcast_mac = EthernetAddress::new(0x01, 0x00, 0x5e, 0, 0, 0xfb);
    assert_eq!(
        i.process(0, &ipv4_frame(mcast_mac, H3_MAC, &udp), &mut tx),
        Disposition::Dropped(DropReason::NotForUs)
    );
    // Link-layer broadcast of a unicast packet for someone else.
    assert_eq!(
        i.process(
            0,
            &ipv4_frame(EthernetAddress::BROADCAST, H3_MAC, &udp),
            &mut tx
        ),
        Disposition::Dropped(DropReason::NotForUs)
    );
    // IP broadcasts and multicast.
    for dst in [
        Ipv4Addr::BROADCAST,
        Ipv4Addr::new(10, 0, 0, 255),
        Ipv4Addr::new(224, 0, 0, 251),
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::new(127, 0, 0, 1),
    ] {
        let p = ipv4(H3_IP, dst, 17, &[], &[0u8; 12]);
        assert_eq!(
            i.process(0, &ipv4_frame(OUR_MAC, H3_MAC, &p), &mut tx),
            Disposition::Dropped(DropReason::NotForUs),
            "{dst}"
        );
    }
    // Martian sources.
    for src in [
        Ipv4Addr::BROADCAST,
        Ipv4Addr::new(224, 0, 0, 1),
        OUR_IP,
        Ipv4Addr::new(10, 0, 0, 255),
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::LOCALHOST,
    ] {
        let p = ipv4(src, REMOTE_IP, 17, &[], &[0u8; 12]);
        assert_eq!(
            i.process(0, &ipv4_frame(OUR_MAC, H3_MAC, &p), &mut tx),
            Disposition::Dropped(DropReason::Malformed),
            "{src}"
        );
    }
    // Our own MAC as source; a multicast source MAC.
    assert_eq!(
        i.process(0, &ipv4_frame(OUR_MAC, OUR_MAC, &udp), &mut tx),
        Disposition::Dropped(DropReason::NotForUs)
    );
    assert_eq!(
        i.process(0, &ipv4_frame(OUR_MAC, mcast_mac, &udp), &mut tx),
        Disposition::Dropped(DropReason::Malformed)
    );
    assert!(tx.frames.is_empty());
    assert_eq!(i.counters().forward, 1);
    assert_eq!(i.counters().dropped(DropReason::NotForUs), 9);
    assert_eq!(i.counters().rx_frames, 17);
}

#[test]
fn unsupported_ethertypes() {
    let mut i = iface();
    let mut tx = VecTx::new();
    // 802.1Q-tagged IPv4.
    let mut vlan = eth(OUR_MAC, H3_MAC, 0x8100);
    vlan.extend_from_slice(&[0x00, 0x0a, 0x08, 0x00]);
    vlan.extend_from_slice(&ipv4(H3_IP, OUR_IP, 1, &[], &icmp_echo(8, 1, 1, b"v")));
    assert_eq!(
        i.process(0, &vlan, &mut tx),
        Disposition::Dropped(DropReason::UnsupportedEthertype)
    );
    let mut v6 = eth(OUR_MAC, H3_MAC, 0x86dd);
    v6.extend_from_slice(&[0x60; 40]);
    assert_eq!(
        i.process(0, &v6, &mut tx),
        Disposition::Dropped(DropReason::UnsupportedEthertype)
    );
    let stp = eth(EthernetAddress::BROADCAST, H3_MAC, 0x0026);
    assert_eq!(
        i.process(0, &stp, &mut tx),
        Disposition::Dropped(DropReason::UnsupportedEthertype)
    );
    assert_eq!(i.counters().dropped(DropReason::UnsupportedEthertype), 3);
}

#[test]
fn malformed_ipv4() {
    let mut i = iface();
    let mut tx = VecTx::new();
    let good = ipv4_frame(
        OUR_MAC,
        H3_MAC,
        &ipv4(H3_IP, REMOTE_IP, 17, &[], &[0u8; 12]),
    );
    assert_eq!(i.process(0, &good, &mut tx), Disposition::Forward);
    // Truncated Ethernet, truncated IPv4.
    for len in (0..14).chain(14..34) {
        assert_eq!(
            i.process(0, &good[..len], &mut tx),
            Disposition::Dropped(DropReason::Malformed),
            "{len}"
        );
    }
    // IHL below five.
    let mut bad = good.clone();
    bad[14] = 0x44;
    assert_eq!(
        i.process(0, &bad, &mut tx),
        Disposition::Dropped(DropReason::Malformed)
    );
    // IHL beyond the buffer.
    let mut bad = good.clone();
    bad[14] = 0x4f;
    assert_eq!(
        i.process(0, &bad, &mut tx),
        Disposition::Dropped(DropReason::Malformed)
    );
    // Total length beyond the buffer.
    let mut bad = good.clone();
    bad[14 + 3] += 1;
    assert_eq!(
        i.process(0, &bad, &mut tx),
        Disposition::Dropped(DropReason::Malformed)
    );
    // Version 6 in an IPv4 frame.
    let mut bad = good.clone();
    bad[14] = 0x65;
    assert_eq!(
        i.process(0, &bad, &mut tx),
        Disposition::Dropped(DropReason::Malformed)
    );
    assert_eq!(i.counters().dropped(DropReason::Malformed), 34 + 4);
}

// ----------------------------------------------------------------- send

fn udp_packet(dst: Ipv4Addr) -> StdVec<u8> {
    ipv4(OUR_IP, dst, 17, &[], b"payload!")
}

fn copy_of(p: &[u8]) -> impl FnOnce(&mut [u8]) -> usize + '_ {
    move |buf: &mut [u8]| {
        buf[..p.len()].copy_from_slice(p);
        p.len()
    }
}

#[test]
fn send_routes_on_link_gateway_and_broadcast() {
    let mut i = iface();
    let mut tx = VecTx::new();
    i.neighbors_mut().fill(GW_IP, GW_MAC, 0);
    i.neighbors_mut().fill(H3_IP, H3_MAC, 0);
    let remote = udp_packet(REMOTE_IP);
    assert_eq!(
        i.send_ipv4(0, REMOTE_IP, &mut tx, copy_of(&remote)),
        SendStatus::Sent
    );
    let local = udp_packet(H3_IP);
    assert_eq!(
        i.send_ipv4(0, H3_IP, &mut tx, copy_of(&local)),
        SendStatus::Sent
    );
    let bcast = udp_packet(Ipv4Addr::new(10, 0, 0, 255));
    assert_eq!(
        i.send_ipv4(0, Ipv4Addr::new(10, 0, 0, 255), &mut tx, copy_of(&bcast)),
        SendStatus::Sent
    );
    assert_eq!(
        tx.take(),
        [
            ipv4_frame(GW_MAC, OUR_MAC, &remote),
            ipv4_frame(H3_MAC, OUR_MAC, &local),
            ipv4_frame(EthernetAddress::BROADCAST, OUR_MAC, &bcast),
        ]
    );
    assert_eq!(i.counters().tx_frames, 3);
}

#[test]
fn send_without_route() {
    let mut i: Interface = Interface::new(OUR_MAC, Ipv4Cidr::new(OUR_IP, 24).unwrap(), None);
    let mut tx = VecTx::new();
    let p = udp_packet(REMOTE_IP);
    for dst in [
        REMOTE_IP,
        Ipv4Addr::new(224, 0, 0, 1),
        OUR_IP,
        Ipv4Addr::new(10, 0, 0, 0),
    ] {
        assert_eq!(
            i.send_ipv4(0, dst, &mut tx, copy_of(&p)),
            SendStatus::Dropped(DropReason::NoRoute),
            "{dst}"
        );
    }
    assert!(tx.frames.is_empty());
    assert_eq!(i.counters().dropped(DropReason::NoRoute), 4);
    assert_eq!(i.next_hop(H3_IP), Some(NextHop::Neighbor(H3_IP)));
    i.set_gateway(Some(GW_IP));
    assert_eq!(i.next_hop(REMOTE_IP), Some(NextHop::Neighbor(GW_IP)));
    assert_eq!(i.next_hop(Ipv4Addr::BROADCAST), Some(NextHop::Broadcast));
}

#[test]
fn send_empty_oversized_and_refused() {
    let mut i = iface();
    let mut tx = VecTx::new();
    i.neighbors_mut().fill(H3_IP, H3_MAC, 0);
    assert_eq!(i.send_ipv4(0, H3_IP, &mut tx, |_| 0), SendStatus::Empty);
    let mut room = 0;
    assert_eq!(
        i.send_ipv4(0, H3_IP, &mut tx, |b| {
            room = b.len();
            b.len() + 1
        }),
        SendStatus::Empty
    );
    assert_eq!(room, 1500, "the builder gets exactly one MTU");
    tx.refuse = true;
    let p = udp_packet(H3_IP);
    assert_eq!(
        i.send_ipv4(0, H3_IP, &mut tx, copy_of(&p)),
        SendStatus::Dropped(DropReason::TxUnavailable)
    );
    assert!(tx.frames.is_empty());
    // Unknown next hop and empty builder: nothing queued.
    assert_eq!(
        i.send_ipv4(0, Ipv4Addr::new(10, 0, 0, 4), &mut tx, |_| 0),
        SendStatus::Empty
    );
    assert!(i.pending().is_empty());
}

#[test]
fn arp_retries_and_resolution_timeout() {
    let mut i = iface();
    let mut tx = VecTx::new();
    let p = udp_packet(REMOTE_IP);
    assert_eq!(
        i.send_ipv4(0, REMOTE_IP, &mut tx, copy_of(&p)),
        SendStatus::Queued
    );
    assert_eq!(tx.take().len(), 1, "ARP request for the gateway");
    assert_eq!(i.poll_at(0), Some(S));
    i.poll(S / 2, &mut tx);
    assert!(tx.frames.is_empty(), "rate limited");
    i.poll(S, &mut tx);
    let retry = tx.take();
    assert_eq!(retry.len(), 1);
    assert_eq!(&retry[0][38..42], &GW_IP.octets());
    i.poll(2 * S, &mut tx);
    assert_eq!(tx.take().len(), 1);
    assert_eq!(i.poll_at(2 * S), Some(RESOLUTION_TIMEOUT_NS));
    i.poll(RESOLUTION_TIMEOUT_NS, &mut tx);
    assert!(tx.frames.is_empty());
    assert!(i.pending().is_empty());
    assert_eq!(i.counters().dropped(DropReason::PendingTimeout), 1);
    assert_eq!(i.counters().arp_requests_out, 3);
    assert_eq!(i.poll_at(RESOLUTION_TIMEOUT_NS), None);
    // A late reply releases nothing.
    assert_eq!(
        i.process(4 * S, &arp_reply_from(GW_MAC, GW_IP), &mut tx),
        Disposition::Consumed
    );
    assert!(tx.frames.is_empty());
}

#[test]
fn pending_overflow_is_counted() {
    let mut i = iface();
    let mut tx = VecTx::new();
    for n in 0..20u8 {
        let dst = Ipv4Addr::new(10, 0, 0, 100 + n);
        let p = udp_packet(dst);
        assert_eq!(
            i.send_ipv4(0, dst, &mut tx, copy_of(&p)),
            SendStatus::Queued
        );
    }
    assert_eq!(i.pending().len(), 16);
    assert_eq!(i.counters().dropped(DropReason::PendingOverflow), 4);
    assert_eq!(tx.take().len(), 20, "one ARP request per address");
    // The oldest four (10.0.0.100..103) were dropped; 10.0.0.104 is queued.
    let mac = EthernetAddress::new(0x00, 0x16, 0x3e, 0, 1, 4);
    i.process(
        1,
        &arp_reply_from(mac, Ipv4Addr::new(10, 0, 0, 104)),
        &mut tx,
    );
    assert_eq!(
        tx.take(),
        [ipv4_frame(
            mac,
            OUR_MAC,
            &udp_packet(Ipv4Addr::new(10, 0, 0, 104))
        )]
    );
    let mac = EthernetAddress::new(0x00, 0x16, 0x3e, 0, 1, 3);
    i.process(
        1,
        &arp_reply_from(mac, Ipv4Addr::new(10, 0, 0, 103)),
        &mut tx,
    );
    assert!(tx.frames.is_empty());
}

#[test]
fn gleaning_from_echo_releases_pending() {
    let mut i = iface();
    let mut tx = VecTx::new();
    let p = udp_packet(H3_IP);
    assert_eq!(
        i.send_ipv4(0, H3_IP, &mut tx, copy_of(&p)),
        SendStatus::Queued
    );
    tx.take();
    let req = echo_request_frame(H3_MAC, H3_IP, b"hi");
    assert_eq!(i.process(1, &req, &mut tx), Disposition::Consumed);
    let sent = tx.take();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0], ipv4_frame(H3_MAC, OUR_MAC, &p));
    assert_echo_reply(&sent[1], &req, H3_MAC);
}

#[test]
fn entries_expire_and_refresh() {
    let mut i = iface();
    let mut tx = VecTx::new();
    i.process(0, &arp_reply_from(H3_MAC, H3_IP), &mut tx);
    let p = udp_packet(H3_IP);
    // Early: plain send.
    assert_eq!(
        i.send_ipv4(10 * S, H3_IP, &mut tx, copy_of(&p)),
        SendStatus::Sent
    );
    assert_eq!(tx.take().len(), 1);
    // Close to expiry: still sent, plus a unicast ARP request.
    assert_eq!(
        i.send_ipv4(56 * S, H3_IP, &mut tx, copy_of(&p)),
        SendStatus::Sent
    );
    let sent = tx.take();
    assert_eq!(sent.len(), 2);
    assert_eq!(
        sent[0],
        arp_frame(H3_MAC, OUR_MAC, 1, OUR_MAC, OUR_IP, H3_MAC, H3_IP)
    );
    assert_eq!(sent[1], ipv4_frame(H3_MAC, OUR_MAC, &p));
    // No reply came: after the lifetime the entry is gone and frames queue.
    assert_eq!(
        i.send_ipv4(NEIGHBOR_LIFETIME_NS, H3_IP, &mut tx, copy_of(&p)),
        SendStatus::Queued
    );
    // Traffic from the neighbor renews it.
    i.process(
        NEIGHBOR_LIFETIME_NS + 1,
        &arp_reply_from(H3_MAC, H3_IP),
        &mut tx,
    );
    tx.take();
    let req = echo_request_frame(H3_MAC, H3_IP, b"keepalive");
    i.process(NEIGHBOR_LIFETIME_NS + 50 * S, &req, &mut tx);
    tx.take();
    assert_eq!(
        i.neighbors().peek(H3_IP, 2 * NEIGHBOR_LIFETIME_NS + 10 * S),
        Some(H3_MAC)
    );
}

#[test]
fn resolve_for_forwarding() {
    let mut i = iface();
    let mut tx = VecTx::new();
    assert_eq!(i.resolve(0, REMOTE_IP, &mut tx), None);
    assert_eq!(tx.take().len(), 1, "ARP request for the gateway");
    assert_eq!(i.resolve(1, REMOTE_IP, &mut tx), None);
    assert!(tx.frames.is_empty(), "rate limited");
    i.process(2, &arp_reply_from(GW_MAC, GW_IP), &mut tx);
    assert_eq!(i.resolve(3, REMOTE_IP, &mut tx), Some(GW_MAC));
    assert_eq!(
        i.resolve(3, Ipv4Addr::BROADCAST, &mut tx),
        Some(EthernetAddress::BROADCAST)
    );
    assert_eq!(i.resolve(3, Ipv4Addr::new(239, 1, 1, 1), &mut tx), None);
}

#[test]
fn tx_fn_adapter() {
    let mut i = iface();
    let mut out: StdVec<StdVec<u8>> = StdVec::new();
    {
        let mut tx = TxFn::new(|build: &mut dyn FnMut(&mut [u8]) -> usize| {
            let mut buf = [0u8; 1514];
            let n = build(&mut buf);
            out.push(buf[..n].to_vec());
            n > 0
        });
        let d = i.process(0, &arp_request_from(GW_MAC, GW_IP, OUR_IP), &mut tx);
        assert_eq!(d, Disposition::Consumed);
    }
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].len(), 42);
}

#[test]
fn cidr() {
    let c = Ipv4Cidr::new(Ipv4Addr::new(192, 168, 252, 1), 24).unwrap();
    assert_eq!(c.netmask(), Ipv4Addr::new(255, 255, 255, 0));
    assert_eq!(c.network(), Ipv4Addr::new(192, 168, 252, 0));
    assert_eq!(c.broadcast(), Ipv4Addr::new(192, 168, 252, 255));
    assert!(c.contains(Ipv4Addr::new(192, 168, 252, 200)));
    assert!(!c.contains(Ipv4Addr::new(192, 168, 253, 1)));
    assert!(c.is_host_addr(Ipv4Addr::new(192, 168, 252, 2)));
    assert!(!c.is_host_addr(Ipv4Addr::new(192, 168, 252, 0)));
    assert!(!c.is_host_addr(Ipv4Addr::new(192, 168, 252, 255)));
    assert_eq!(c.to_string(), "192.168.252.1/24");
    assert_eq!(Ipv4Cidr::new(Ipv4Addr::LOCALHOST, 33), None);
    let all = Ipv4Cidr::new(Ipv4Addr::new(1, 2, 3, 4), 0).unwrap();
    assert!(all.contains(Ipv4Addr::new(200, 1, 1, 1)));
    assert_eq!(all.netmask(), Ipv4Addr::UNSPECIFIED);
    let p2p = Ipv4Cidr::new(Ipv4Addr::new(10, 9, 9, 0), 31).unwrap();
    assert!(p2p.is_host_addr(Ipv4Addr::new(10, 9, 9, 1)));
    assert!(p2p.is_host_addr(Ipv4Addr::new(10, 9, 9, 0)));
    assert!(!p2p.is_subnet_broadcast(Ipv4Addr::new(10, 9, 9, 1)));
    let host = Ipv4Cidr::new(Ipv4Addr::new(10, 9, 9, 9), 32).unwrap();
    assert_eq!(host.netmask(), Ipv4Addr::BROADCAST);
    assert!(!host.contains(Ipv4Addr::new(10, 9, 9, 8)));
}

#[test]
fn drop_reasons_print() {
    for (n, r) in DropReason::ALL.iter().enumerate() {
        assert_eq!(r.index(), n);
        assert!(!r.as_str().is_empty());
    }
    assert_eq!(
        Disposition::Dropped(DropReason::BadChecksum).to_string(),
        "dropped (bad_checksum)"
    );
}

// ------------------------------------------------------ never panics

fn valid_frames() -> StdVec<StdVec<u8>> {
    vec![
        arp_request_from(GW_MAC, GW_IP, OUR_IP),
        arp_reply_from(H3_MAC, H3_IP),
        arp_request_from(H3_MAC, Ipv4Addr::UNSPECIFIED, OUR_IP),
        echo_request_frame(GW_MAC, GW_IP, b"0123456789"),
        echo_request_frame(H3_MAC, H3_IP, &[0x5a; 1472]),
        ipv4_frame(
            OUR_MAC,
            H3_MAC,
            &ipv4(
                H3_IP,
                OUR_IP,
                1,
                &[0x94, 4, 0, 0],
                &icmp_echo(8, 1, 1, b"o"),
            ),
        ),
        ipv4_frame(
            OUR_MAC,
            H3_MAC,
            &ipv4(H3_IP, REMOTE_IP, 17, &[], &[0u8; 12]),
        ),
        ipv4_frame(
            OUR_MAC,
            GW_MAC,
            &ipv4(REMOTE_IP, OUR_IP, 6, &[], &[0u8; 20]),
        ),
    ]
}

/// Random and mutated frames, random transmit buffer sizes, random sends
/// and timer calls: nothing panics, every emitted IPv4 header verifies.
#[test]
fn random_input_never_panics() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let seeds = valid_frames();
    let mut i: Interface<8, 4> =
        Interface::new(OUR_MAC, Ipv4Cidr::new(OUR_IP, 24).unwrap(), Some(GW_IP));
    let mut tx = VecTx::new();
    let mut now = 0u64;
    const ROUNDS: u64 = 200_000;
    for _ in 0..ROUNDS {
        now += rng.next() % (S / 4);
        let frame = match rng.below(4) {
            0 => {
                let len = rng.below(1600);
                rng.bytes(len)
            }
            1 => {
                // Plausible header, random rest.
                let len = 14 + rng.below(1600);
                let mut f = rng.bytes(len);
                let dst = if rng.below(2) == 0 {
                    OUR_MAC
                } else {
                    EthernetAddress::BROADCAST
                };
                f[..6].copy_from_slice(&dst.0);
                f[6..12].copy_from_slice(&H3_MAC.0);
                f[12] = 0x08;
                f[13] = if rng.below(2) == 0 { 0x00 } else { 0x06 };
                f
            }
            _ => {
                // A mutated valid frame.
                let mut f = seeds[rng.below(seeds.len())].clone();
                for _ in 0..1 + rng.below(4) {
                    let at = rng.below(f.len());
                    f[at] = rng.next() as u8;
                }
                match rng.below(4) {
                    0 => f.truncate(rng.below(f.len() + 1)),
                    1 => {
                        let n = rng.below(64);
                        f.extend(rng.bytes(n));
                    }
                    _ => {}
                }
                f
            }
        };
        tx.buf_len = if rng.below(8) == 0 {
            rng.below(1600)
        } else {
            1514
        };
        tx.refuse = rng.below(32) == 0;
        i.process(now, &frame, &mut tx);
        match rng.below(16) {
            0 => {
                let dst = Ipv4Addr::from(rng.next() as u32 & 0x0a0000ff | 0x0a000000);
                let len = rng.below(1600);
                i.send_ipv4(now, dst, &mut tx, |b| {
                    b.fill(0xa5);
                    len.min(b.len() + (len & 1))
                });
            }
            1 => i.poll(now, &mut tx),
            _ => {}
        }
        for f in tx.take() {
            assert!(f.len() >= 14 && f.len() <= 1514);
            if f[12..14] == [0x08, 0x00] && f[6..12] == OUR_MAC.0 && f[14] == 0x45 {
                // Our own packets (not the random ones handed to send_ipv4).
                if f[23] == 1 {
                    assert!(naive_verify(&f[14..34]));
                    assert!(naive_verify(&f[34..]));
                }
            }
        }
    }
    let c = i.counters();
    assert_eq!(c.rx_frames, ROUNDS);
    assert!(
        c.icmp_echo_out > 0 && c.arp_replies_out > 0 && c.forward > 0,
        "{c:?}"
    );
}
