use super::*;
use crate::testutil::XorShift;

const S: u64 = NS_PER_SEC;
const SEED: [u64; 4] = [1, 2, 3, 4];

const SYN_F: u8 = SYN;
const SYNACK_F: u8 = SYN | ACK;
const ACK_F: u8 = ACK;
const FINACK_F: u8 = FIN | ACK;
const RST_F: u8 = RST;

fn ip(a: u8, b: u8, c: u8, d: u8) -> Ipv4Addr {
    Ipv4Addr::new(a, b, c, d)
}

fn table(capacity: usize, ports: RangeInclusive<u16>) -> TranslationTable {
    TranslationTable::new(
        &TableConfig {
            capacity,
            static_capacity: 16,
            ports,
            timeouts: Timeouts::DEFAULT,
        },
        SEED,
    )
    .unwrap()
}

fn out_key(p: Protocol, host: u8, port: u16, remote: Ipv4Addr, rport: u16) -> OutboundKey {
    OutboundKey {
        protocol: p,
        int_addr: ip(192, 168, 252, host),
        int_port: port,
        remote_addr: remote,
        remote_port: rport,
    }
}

fn in_key(k: &OutboundKey, ext_port: u16) -> InboundKey {
    InboundKey {
        protocol: k.protocol,
        ext_port,
        remote_addr: k.remote_addr,
        remote_port: k.remote_port,
    }
}

/// Opens and establishes a TCP flow (SYN out, SYN+ACK in, ACK out).
fn establish(t: &mut TranslationTable, now: u64, k: &OutboundKey) -> u16 {
    let p = t.outbound(now, k, SYN_F).unwrap();
    assert_eq!(
        t.inbound(now, &in_key(k, p), SYNACK_F).unwrap(),
        (k.int_addr, k.int_port)
    );
    assert_eq!(t.outbound(now, k, ACK_F).unwrap(), p);
    let id = t.find_outbound(now, k).unwrap();
    assert_eq!(t.flow(id).unwrap().tcp_state, Some(TcpState::Established));
    p
}

/// Every structural invariant the table promises.
fn check_invariants(t: &TranslationTable, now: u64) {
    assert!(t.len() <= t.capacity());
    let flows: Vec<FlowInfo> = t.iter().collect();
    assert_eq!(flows.len(), t.len());
    assert_eq!(t.stats().active_total() as usize, t.len());
    for p in Protocol::ALL {
        let n = flows.iter().filter(|f| f.protocol == p).count();
        assert_eq!(t.stats().active[p.index()] as usize, n);
    }
    // The free list plus the live flows account for every slot.
    let mut free = 0usize;
    let mut i = t.free_flows;
    while let Some(f) = t.flows.get(i as usize) {
        assert_eq!(f.proto, 0);
        free += 1;
        i = f.next_out;
        assert!(free <= t.capacity());
    }
    assert_eq!(free + t.len(), t.capacity());
    let mut dynamic = std::collections::HashMap::new();
    for f in &flows {
        let ok = OutboundKey {
            protocol: f.protocol,
            int_addr: f.int_addr,
            int_port: f.int_port,
            remote_addr: f.remote_addr,
            remote_port: f.remote_port,
        };
        let live = secs(now) < f.expires_s;
        assert_eq!(t.find_outbound(now, &ok).is_some(), live);
        assert_eq!(
            t.find_inbound(now, &in_key(&ok, f.ext_port)).is_some(),
            live
        );
        if live {
            assert_eq!(t.find_outbound(now, &ok), Some(f.id));
        }
        assert!(!t.is_reserved(f.protocol, f.ext_port) || f.opened_outside);
        if !f.opened_outside {
            // Endpoint-independent mapping: one port per internal endpoint.
            let prev = dynamic.insert((f.protocol, f.int_addr, f.int_port), f.ext_port);
            assert!(prev.is_none() || prev == Some(f.ext_port));
            assert_eq!(
                t.mapping_port(f.protocol, f.int_addr, f.int_port),
                Some(f.ext_port)
            );
        }
    }
    assert_eq!(t.stats().mappings as usize, {
        let mut m: Vec<_> = dynamic.keys().collect();
        m.dedup();
        m.len()
    });
    // Every flow is filed on the wheel exactly once.
    let mut filed = 0usize;
    for &head in t.wheel.iter() {
        let mut i = head;
        let mut prev = NIL;
        while let Some(l) = t.links.get(i as usize) {
            assert_eq!(l.prev, prev);
            assert!(t.flows[i as usize].proto != 0);
            assert!(l.sched <= t.flows[i as usize].expires || t.flows[i as usize].expires == 0);
            filed += 1;
            prev = i;
            i = l.next;
        }
    }
    assert_eq!(filed, t.len());
}

#[test]
fn config_is_validated() {
    let bad = |c: TableConfig| TranslationTable::new(&c, SEED).err();
    let ok = TableConfig::default();
    assert_eq!(
        bad(TableConfig {
            capacity: 0,
            ..ok.clone()
        }),
        Some(ConfigError::BadCapacity)
    );
    assert_eq!(
        bad(TableConfig {
            capacity: MAX_CAPACITY + 1,
            ..ok.clone()
        }),
        Some(ConfigError::BadCapacity)
    );
    assert_eq!(
        bad(TableConfig {
            ports: 0..=10,
            ..ok.clone()
        }),
        Some(ConfigError::BadPortRange)
    );
    #[allow(clippy::reversed_empty_ranges)]
    let empty = 10..=9;
    assert_eq!(
        bad(TableConfig {
            ports: empty,
            ..ok.clone()
        }),
        Some(ConfigError::BadPortRange)
    );
    let mut t = ok.clone();
    t.timeouts.udp = 0;
    assert_eq!(bad(t), Some(ConfigError::BadTimeout));
    let t = TranslationTable::new(&ok, SEED).unwrap();
    assert_eq!(t.capacity(), 65_536);
    assert_eq!(t.port_range(), 1024..=65535);
    assert!(t.is_empty());
    assert_eq!(
        ConfigError::OutOfMemory.to_string(),
        "not enough memory for the translation table"
    );
    // A single port works.
    let mut t = table(4, 5000..=5000);
    let k = out_key(Protocol::Udp, 2, 1, ip(8, 8, 8, 8), 53);
    assert_eq!(t.outbound(0, &k, 0), Ok(5000));
}

#[test]
fn endpoint_independent_mapping() {
    let mut t = table(64, 1024..=65535);
    let r1 = ip(203, 0, 113, 9);
    let r2 = ip(198, 51, 100, 20);
    for p in Protocol::ALL {
        let rport = if p == Protocol::Icmp { 0 } else { 443 };
        let flags = if p == Protocol::Tcp { SYN_F } else { 0 };
        let a = t
            .outbound(0, &out_key(p, 7, 40000, r1, rport), flags)
            .unwrap();
        let b = t
            .outbound(0, &out_key(p, 7, 40000, r2, rport), flags)
            .unwrap();
        let c = t
            .outbound(0, &out_key(p, 7, 40000, r1, rport.wrapping_add(1)), flags)
            .unwrap();
        assert_eq!(a, b, "{p}: same internal endpoint, same external port");
        assert_eq!(a, c);
        let d = t
            .outbound(0, &out_key(p, 7, 40001, r1, rport), flags)
            .unwrap();
        let e = t
            .outbound(0, &out_key(p, 8, 40000, r1, rport), flags)
            .unwrap();
        assert_ne!(a, d);
        assert_ne!(a, e);
        assert_ne!(d, e);
        assert_eq!(t.mapping_port(p, ip(192, 168, 252, 7), 40000), Some(a));
    }
    assert_eq!(t.stats().mappings, 9);
    assert_eq!(t.len(), 15);
    check_invariants(&t, 0);
}

#[test]
fn mapping_lives_while_any_flow_lives() {
    let mut t = table(64, 1024..=65535);
    let r1 = ip(203, 0, 113, 9);
    let r2 = ip(198, 51, 100, 20);
    let k1 = out_key(Protocol::Udp, 7, 5000, r1, 53);
    let k2 = out_key(Protocol::Udp, 7, 5000, r2, 53);
    let p = t.outbound(0, &k1, 0).unwrap();
    assert_eq!(t.outbound(100 * S, &k2, 0).unwrap(), p);
    // k1 expires at 120 s, k2 lives until 220 s; the mapping stays.
    t.expire(150 * S, 1000);
    assert!(t.find_outbound(150 * S, &k1).is_none());
    assert_eq!(t.len(), 1);
    assert_eq!(t.outbound(150 * S, &k1, 0).unwrap(), p);
    t.expire(1000 * S, 1000);
    assert!(t.is_empty());
    assert_eq!(t.stats().mappings, 0);
    check_invariants(&t, 1000 * S);
}

#[test]
fn address_and_port_dependent_filtering() {
    let mut t = table(64, 1024..=65535);
    let r = ip(203, 0, 113, 9);
    let k = out_key(Protocol::Udp, 7, 5000, r, 53);
    let p = t.outbound(0, &k, 0).unwrap();
    assert_eq!(t.inbound(S, &in_key(&k, p), 0), Ok((k.int_addr, 5000)));
    // Same remote address, other port: filtered.
    let mut other = in_key(&k, p);
    other.remote_port = 54;
    assert_eq!(t.inbound(S, &other, 0), Err(Miss::Filtered));
    // Other address, same port: filtered.
    let mut other = in_key(&k, p);
    other.remote_addr = ip(203, 0, 113, 10);
    assert_eq!(t.inbound(S, &other, 0), Err(Miss::Filtered));
    // Unmapped port: no mapping.
    let mut other = in_key(&k, p.wrapping_add(1));
    other.ext_port = if p == 65535 { 1024 } else { p + 1 };
    assert_eq!(t.inbound(S, &other, 0), Err(Miss::NoMapping));
    // Other protocol on the same port.
    let mut other = in_key(&k, p);
    other.protocol = Protocol::Tcp;
    assert_eq!(t.inbound(S, &other, SYN_F), Err(Miss::NoMapping));
    assert_eq!(t.stats().inbound_filtered, 2);
    assert_eq!(t.stats().inbound_no_match, 2);
    // Nothing was created by inbound packets.
    assert_eq!(t.len(), 1);
}

#[test]
fn tcp_opens_only_with_syn() {
    let mut t = table(64, 1024..=65535);
    let k = out_key(Protocol::Tcp, 7, 5000, ip(203, 0, 113, 9), 80);
    for flags in [ACK_F, SYNACK_F, RST_F, FINACK_F, SYN | FIN, 0] {
        assert_eq!(
            t.outbound(0, &k, flags),
            Err(Miss::NoFlow),
            "flags {flags:#x}"
        );
    }
    assert_eq!(t.stats().outbound_no_flow, 6);
    assert!(t.is_empty());
    assert!(t.outbound(0, &k, SYN_F).is_ok());
}

#[test]
fn tcp_state_transitions_and_timeouts() {
    let mut t = table(64, 1024..=65535);
    let k = out_key(Protocol::Tcp, 7, 5000, ip(203, 0, 113, 9), 80);
    let state = |t: &TranslationTable, now: u64| {
        let f = t.flow(t.find_outbound(now, &k).unwrap()).unwrap();
        (f.tcp_state.unwrap(), f.expires_s)
    };
    let p = t.outbound(10 * S, &k, SYN_F).unwrap();
    assert_eq!(state(&t, 10 * S), (TcpState::SynSent, 130));
    // The SYN retransmitted: still opening.
    t.outbound(11 * S, &k, SYN_F).unwrap();
    assert_eq!(state(&t, 11 * S), (TcpState::SynSent, 131));
    // An ACK from the initiator before the SYN+ACK changes nothing.
    t.outbound(11 * S, &k, ACK_F).unwrap();
    assert_eq!(state(&t, 11 * S).0, TcpState::SynSent);
    t.inbound(12 * S, &in_key(&k, p), SYNACK_F).unwrap();
    assert_eq!(state(&t, 12 * S), (TcpState::SynReceived, 132));
    t.outbound(12 * S, &k, ACK_F).unwrap();
    assert_eq!(state(&t, 12 * S), (TcpState::Established, 12 + 7440));
    t.inbound(13 * S, &in_key(&k, p), ACK_F | TcpPacket::<&[u8]>::PSH)
        .unwrap();
    assert_eq!(state(&t, 13 * S), (TcpState::Established, 13 + 7440));
    // Close from inside, then outside.
    t.outbound(20 * S, &k, FINACK_F).unwrap();
    assert_eq!(state(&t, 20 * S), (TcpState::FinFromInside, 140));
    t.inbound(21 * S, &in_key(&k, p), ACK_F).unwrap();
    assert_eq!(state(&t, 21 * S), (TcpState::FinFromInside, 141));
    t.inbound(22 * S, &in_key(&k, p), FINACK_F).unwrap();
    assert_eq!(state(&t, 22 * S), (TcpState::TimeWait, 142));
    t.outbound(22 * S, &k, ACK_F).unwrap();
    assert_eq!(state(&t, 22 * S).0, TcpState::TimeWait);
    // A new SYN from the initiator reuses the flow.
    t.outbound(30 * S, &k, SYN_F).unwrap();
    assert_eq!(state(&t, 30 * S), (TcpState::SynSent, 150));
    // RST: 10 s.
    t.inbound(31 * S, &in_key(&k, p), RST_F | ACK_F).unwrap();
    assert_eq!(state(&t, 31 * S), (TcpState::Closed, 41));
    assert_eq!(t.len(), 1);
    check_invariants(&t, 31 * S);
    // Gone 10 s later, and a non-SYN cannot revive it.
    assert!(t.find_outbound(41 * S, &k).is_none());
    assert_eq!(t.outbound(41 * S, &k, ACK_F), Err(Miss::NoFlow));
    assert!(t.is_empty());
    assert_eq!(t.stats().expired, 1);

    // Close from outside first; simultaneous open.
    let k2 = out_key(Protocol::Tcp, 8, 6000, ip(203, 0, 113, 9), 80);
    let p2 = establish(&mut t, 100 * S, &k2);
    t.inbound(100 * S, &in_key(&k2, p2), FINACK_F).unwrap();
    let f = t.flow(t.find_outbound(100 * S, &k2).unwrap()).unwrap();
    assert_eq!(f.tcp_state, Some(TcpState::FinFromOutside));
    t.outbound(100 * S, &k2, FINACK_F).unwrap();
    let f = t.flow(t.find_outbound(100 * S, &k2).unwrap()).unwrap();
    assert_eq!(f.tcp_state, Some(TcpState::TimeWait));
    let k3 = out_key(Protocol::Tcp, 9, 7000, ip(203, 0, 113, 9), 7000);
    let p3 = t.outbound(100 * S, &k3, SYN_F).unwrap();
    t.inbound(100 * S, &in_key(&k3, p3), SYN_F).unwrap();
    let f = t.flow(t.find_outbound(100 * S, &k3).unwrap()).unwrap();
    assert_eq!(f.tcp_state, Some(TcpState::SynReceived));
    // An established connection idle for 7439 s is still there; at 7440
    // it is gone.
    let k4 = out_key(Protocol::Tcp, 10, 7000, ip(203, 0, 113, 9), 22);
    establish(&mut t, 1000 * S, &k4);
    for step in 1..=7439u64 {
        t.expire((1000 + step) * S, 100);
    }
    assert!(t.find_outbound((1000 + 7439) * S, &k4).is_some());
    t.expire((1000 + 7440) * S, 100);
    assert!(t.find_outbound((1000 + 7440) * S, &k4).is_none());
    assert!(t.is_empty());
    check_invariants(&t, 8440 * S);
}

#[test]
fn expiry_by_protocol() {
    let mut t = table(64, 1024..=65535);
    let r = ip(203, 0, 113, 9);
    let udp = out_key(Protocol::Udp, 7, 5000, r, 53);
    let icmp = out_key(Protocol::Icmp, 7, 0x1234, r, 0);
    let syn = out_key(Protocol::Tcp, 7, 5001, r, 80);
    let est = out_key(Protocol::Tcp, 7, 5002, r, 80);
    t.outbound(0, &udp, 0).unwrap();
    t.outbound(0, &icmp, 0).unwrap();
    t.outbound(0, &syn, SYN_F).unwrap();
    establish(&mut t, 0, &est);
    assert_eq!(t.stats().active, [2, 1, 1]);
    let alive = |t: &TranslationTable, now: u64| {
        [&udp, &icmp, &syn, &est].map(|k| t.find_outbound(now, k).is_some())
    };
    for now in [0u64, 29] {
        t.expire(now * S, 1000);
        assert_eq!(alive(&t, now * S), [true; 4], "at {now} s");
    }
    t.expire(30 * S, 1000);
    assert_eq!(alive(&t, 30 * S), [true, false, true, true]);
    assert_eq!(t.stats().active, [2, 1, 0]);
    t.expire(119 * S, 1000);
    assert_eq!(alive(&t, 119 * S), [true, false, true, true]);
    t.expire(120 * S, 1000);
    assert_eq!(alive(&t, 120 * S), [false, false, false, true]);
    assert_eq!(t.stats().active, [1, 0, 0]);
    assert_eq!(t.stats().expired, 3);
    t.expire(7440 * S, 1000);
    assert!(t.is_empty());
    assert_eq!(t.stats().expired, 4);
    check_invariants(&t, 7440 * S);
}

#[test]
fn refreshed_flows_outlive_their_first_deadline() {
    let mut t = table(64, 1024..=65535);
    let k = out_key(Protocol::Udp, 7, 5000, ip(203, 0, 113, 9), 53);
    let p = t.outbound(0, &k, 0).unwrap();
    // Replies refresh too (RFC 4787 REQ-6 allows it).
    for s in (0..2000u64).step_by(100) {
        t.expire(s * S, 1000);
        if s % 200 == 0 {
            t.outbound(s * S, &k, 0).unwrap();
        } else {
            t.inbound(s * S, &in_key(&k, p), 0).unwrap();
        }
    }
    assert_eq!(t.len(), 1);
    assert_eq!(t.stats().expired, 0);
    check_invariants(&t, 1900 * S);
    t.expire(2019 * S, 1000);
    assert_eq!(t.len(), 1);
    t.expire(2020 * S, 1000);
    assert!(t.is_empty());
}

#[test]
fn wheel_catches_up_after_long_idle() {
    let mut t = table(64, 1024..=65535);
    let r = ip(203, 0, 113, 9);
    for i in 0..32u16 {
        t.outbound(
            1_000_000 * S,
            &out_key(Protocol::Udp, 7, 1000 + i, r, 53),
            0,
        )
        .unwrap();
    }
    // Nothing is due yet, whatever the budget.
    assert_eq!(t.expire(1_000_100 * S, 10_000), 0);
    // Far in the future: one call with enough budget frees everything.
    assert_eq!(t.expire(5_000_000 * S, 10_000), 32);
    assert!(t.is_empty());
    check_invariants(&t, 5_000_000 * S);
}

#[test]
fn expire_is_bounded() {
    let mut t = table(256, 1024..=65535);
    let r = ip(203, 0, 113, 9);
    for i in 0..200u16 {
        t.outbound(0, &out_key(Protocol::Udp, 7, 1000 + i, r, 53), 0)
            .unwrap();
    }
    assert_eq!(t.expire(200 * S, 50), 50);
    assert_eq!(t.len(), 150);
    // Lookups already treat the rest as gone.
    assert!(t
        .find_outbound(200 * S, &out_key(Protocol::Udp, 7, 1199, r, 53))
        .is_none());
    check_invariants(&t, 200 * S);
    assert_eq!(t.expire(200 * S, 1000), 150);
    assert!(t.is_empty());
}

#[test]
fn table_full_refuses_then_reclaims() {
    let mut t = table(64, 1024..=65535);
    let r = ip(203, 0, 113, 9);
    // 48 established TCP connections and 16 UDP flows.
    let tcp: Vec<OutboundKey> = (0..48)
        .map(|i| out_key(Protocol::Tcp, 10 + (i % 4) as u8, 2000 + i, r, 443))
        .collect();
    let ports: Vec<u16> = tcp.iter().map(|k| establish(&mut t, 0, k)).collect();
    for i in 0..16u16 {
        t.outbound(0, &out_key(Protocol::Udp, 20, 3000 + i, r, 53), 0)
            .unwrap();
    }
    assert_eq!(t.len(), 64);
    // The 65th flow, of any protocol, is refused and counted.
    let extra = out_key(Protocol::Tcp, 30, 4000, r, 443);
    assert_eq!(t.outbound(S, &extra, SYN_F), Err(Miss::TableFull));
    assert_eq!(
        t.outbound(S, &out_key(Protocol::Udp, 30, 4000, r, 53), 0),
        Err(Miss::TableFull)
    );
    assert_eq!(t.stats().refused_full, 2);
    assert_eq!(t.len(), 64);
    // A flood of SYNs evicts nothing.
    for i in 0..1000u16 {
        let k = out_key(Protocol::Tcp, 40, i, ip(198, 51, 100, 1), 80);
        assert_eq!(t.outbound(2 * S, &k, SYN_F), Err(Miss::TableFull));
    }
    for (k, &p) in tcp.iter().zip(&ports) {
        assert_eq!(t.outbound(3 * S, k, ACK_F), Ok(p));
        assert_eq!(
            t.inbound(3 * S, &in_key(k, p), ACK_F),
            Ok((k.int_addr, k.int_port))
        );
    }
    // At 200 s the UDP flows have expired: new flows reclaim them without
    // any call to expire().
    for i in 0..16u16 {
        let k = out_key(Protocol::Tcp, 31, 5000 + i, r, 443);
        assert!(t.outbound(200 * S, &k, SYN_F).is_ok(), "flow {i}");
    }
    assert_eq!(t.len(), 64);
    assert_eq!(t.stats().active, [64, 0, 0]);
    assert_eq!(t.outbound(200 * S, &extra, SYN_F), Err(Miss::TableFull));
    // The established ones are still there.
    for (k, &p) in tcp.iter().zip(&ports) {
        assert_eq!(t.outbound(200 * S, k, ACK_F), Ok(p));
    }
    check_invariants(&t, 200 * S);
}

#[test]
fn ports_come_from_the_range_from_a_random_start() {
    let mut starts = std::collections::HashSet::new();
    for seed in 0..8u64 {
        let mut t = TranslationTable::new(
            &TableConfig {
                capacity: 512,
                ports: 20000..=20999,
                ..TableConfig::default()
            },
            [seed, 0, 0, 0],
        )
        .unwrap();
        let r = ip(203, 0, 113, 9);
        let mut seen = std::collections::HashSet::new();
        for i in 0..500u16 {
            let p = t
                .outbound(0, &out_key(Protocol::Udp, 7, 1000 + i, r, 53), 0)
                .unwrap();
            assert!((20000..=20999).contains(&p));
            assert!(seen.insert(p), "port {p} handed out twice");
            if i == 0 {
                starts.insert(p);
            }
        }
        check_invariants(&t, 0);
    }
    assert!(starts.len() >= 6, "starting points {starts:?}");
}

#[test]
fn reserved_ports_are_never_allocated() {
    let mut t = table(64, 1000..=1009);
    assert!(t.reserve_port(0, Protocol::Udp, 1000));
    assert!(!t.reserve_port(0, Protocol::Udp, 1000), "already reserved");
    assert!(!t.reserve_port(0, Protocol::Udp, 0));
    for p in [1002, 1004, 1006, 1008] {
        assert!(t.reserve_port(0, Protocol::Udp, p));
    }
    assert_eq!(t.stats().reserved_ports, 5);
    assert!(t.is_reserved(Protocol::Udp, 1004));
    assert!(!t.is_reserved(Protocol::Tcp, 1004), "per protocol");
    let r = ip(203, 0, 113, 9);
    let mut got = Vec::new();
    for i in 0..5u16 {
        got.push(
            t.outbound(0, &out_key(Protocol::Udp, 7, 100 + i, r, 53), 0)
                .unwrap(),
        );
    }
    got.sort();
    assert_eq!(got, [1001, 1003, 1005, 1007, 1009]);
    assert_eq!(
        t.outbound(0, &out_key(Protocol::Udp, 7, 200, r, 53), 0),
        Err(Miss::NoPort)
    );
    assert_eq!(t.stats().refused_no_port, 1);
    // TCP is unaffected by UDP reservations.
    assert!(t
        .outbound(0, &out_key(Protocol::Tcp, 7, 200, r, 53), SYN_F)
        .is_ok());
    // A port in use cannot be reserved.
    assert!(!t.reserve_port(0, Protocol::Udp, 1001));
    // Releasing makes the port cool before reuse.
    assert!(t.release_port(0, Protocol::Udp, 1000));
    assert!(!t.release_port(0, Protocol::Udp, 1000));
    assert_eq!(
        t.outbound(S, &out_key(Protocol::Udp, 7, 200, r, 53), 0),
        Err(Miss::NoPort)
    );
    assert_eq!(
        t.outbound(120 * S, &out_key(Protocol::Udp, 7, 200, r, 53), 0),
        Ok(1000)
    );
    // reserve_any_port uses the allocator.
    let mut t = table(64, 1000..=1002);
    let a = t.reserve_any_port(0, Protocol::Tcp).unwrap();
    let b = t.reserve_any_port(0, Protocol::Tcp).unwrap();
    let c = t.reserve_any_port(0, Protocol::Tcp).unwrap();
    let mut all = [a, b, c];
    all.sort();
    assert_eq!(all, [1000, 1001, 1002]);
    assert_eq!(t.reserve_any_port(0, Protocol::Tcp), None);
    assert_eq!(
        t.outbound(0, &out_key(Protocol::Tcp, 7, 1, r, 80), SYN_F),
        Err(Miss::NoPort)
    );
}

#[test]
fn no_port_reuse_inside_its_timeout() {
    let mut t = table(64, 1000..=1001);
    let r = ip(203, 0, 113, 9);
    let a = out_key(Protocol::Udp, 7, 100, r, 53);
    let b = out_key(Protocol::Udp, 8, 100, r, 53);
    let c = out_key(Protocol::Udp, 9, 100, r, 53);
    let pa = t.outbound(0, &a, 0).unwrap();
    let pb = t.outbound(0, &b, 0).unwrap();
    assert_ne!(pa, pb);
    // Keep b alive; a expires at 120 s and its port cools until 240 s.
    for s in [60u64, 120, 180, 239] {
        t.outbound(s * S, &b, 0).unwrap();
        t.expire(s * S, 100);
        assert_eq!(t.outbound(s * S, &c, 0), Err(Miss::NoPort), "at {s} s");
    }
    assert_eq!(t.outbound(240 * S, &c, 0), Ok(pa));
    // The port of a mapping released early (by its static rule's removal)
    // cools as well.
    let mut t = table(64, 1000..=1000);
    assert!(t.reserve_port(0, Protocol::Tcp, 1000));
    t.insert_static(0, Protocol::Tcp, 1000, r, ip(192, 168, 252, 5), 22)
        .unwrap();
    t.remove_static(10 * S, Protocol::Tcp, 1000).unwrap();
    let k = out_key(Protocol::Tcp, 7, 100, r, 80);
    assert_eq!(t.outbound(10 * S, &k, SYN_F), Err(Miss::NoPort));
    assert!(!t.reserve_port(10 * S, Protocol::Tcp, 1000), "cooling");
    assert_eq!(t.outbound(130 * S, &k, SYN_F), Ok(1000));
}

#[test]
fn static_mappings() {
    let mut t = table(64, 1024..=65535);
    let client = ip(198, 51, 100, 7);
    let server = ip(192, 168, 252, 5);
    assert_eq!(
        t.insert_static(0, Protocol::Icmp, 2000, client, server, 0),
        Err(StaticError::Unsupported)
    );
    assert_eq!(
        t.insert_static(0, Protocol::Tcp, 0, client, server, 22),
        Err(StaticError::Unsupported)
    );
    t.insert_static(0, Protocol::Tcp, 2000, client, server, 22)
        .unwrap();
    assert_eq!(
        t.insert_static(0, Protocol::Tcp, 2000, client, server, 23),
        Err(StaticError::PortBusy)
    );
    assert!(t.is_reserved(Protocol::Tcp, 2000));
    assert_eq!(t.stats().static_mappings, 1);
    let sm = t.static_mapping(Protocol::Tcp, 2000).unwrap();
    assert_eq!(
        (sm.client_addr, sm.int_addr, sm.int_port, sm.flows),
        (client, server, 22, 0)
    );

    let key = |rport: u16, from: Ipv4Addr| InboundKey {
        protocol: Protocol::Tcp,
        ext_port: 2000,
        remote_addr: from,
        remote_port: rport,
    };
    // Only the client, only with a SYN.
    assert_eq!(
        t.inbound(0, &key(5555, ip(198, 51, 100, 8)), SYN_F),
        Err(Miss::Filtered)
    );
    assert_eq!(t.inbound(0, &key(5555, client), ACK_F), Err(Miss::NoFlow));
    assert_eq!(t.inbound(0, &key(5555, client), SYN_F), Ok((server, 22)));
    assert_eq!(t.inbound(0, &key(5556, client), SYN_F), Ok((server, 22)));
    // The server's replies leave from the rule's port.
    let reply = OutboundKey {
        protocol: Protocol::Tcp,
        int_addr: server,
        int_port: 22,
        remote_addr: client,
        remote_port: 5555,
    };
    assert_eq!(t.outbound(0, &reply, SYNACK_F), Ok(2000));
    assert_eq!(t.inbound(0, &key(5555, client), ACK_F), Ok((server, 22)));
    let id = t.find_outbound(0, &reply).unwrap();
    let f = t.flow(id).unwrap();
    assert!(f.opened_outside);
    assert_eq!(f.tcp_state, Some(TcpState::Established));
    assert_eq!(t.static_mapping(Protocol::Tcp, 2000).unwrap().flows, 2);
    // The server's own outbound connections use a dynamic port.
    let own = OutboundKey {
        remote_addr: ip(203, 0, 113, 1),
        remote_port: 80,
        ..reply
    };
    let p = t.outbound(0, &own, SYN_F).unwrap();
    assert_ne!(p, 2000);
    check_invariants(&t, 0);

    // Removal takes every flow of the rule with it.
    assert_eq!(t.remove_static(S, Protocol::Tcp, 2000), Ok(2));
    assert_eq!(
        t.remove_static(S, Protocol::Tcp, 2000),
        Err(StaticError::NotFound)
    );
    assert_eq!(t.len(), 1);
    assert_eq!(
        t.inbound(S, &key(5555, client), ACK_F),
        Err(Miss::NoMapping)
    );
    assert_eq!(t.outbound(S, &reply, ACK_F), Err(Miss::NoFlow));
    assert!(!t.is_reserved(Protocol::Tcp, 2000));
    assert!(t.static_mapping(Protocol::Tcp, 2000).is_none());
    assert_eq!(t.stats().removed, 2);
    assert_eq!(t.stats().static_mappings, 0);
    check_invariants(&t, S);

    // A reserved port can carry a rule; a port in dynamic use cannot.
    assert!(t.reserve_port(S, Protocol::Udp, 3000));
    t.insert_static(S, Protocol::Udp, 3000, client, server, 53)
        .unwrap();
    assert_eq!(
        t.insert_static(S, Protocol::Tcp, p, client, server, 53),
        Err(StaticError::PortBusy)
    );
    // The rule's port cannot be released while the rule exists.
    assert!(!t.release_port(S, Protocol::Udp, 3000));
    // UDP: any datagram from the client opens a flow.
    let k = InboundKey {
        protocol: Protocol::Udp,
        ext_port: 3000,
        remote_addr: client,
        remote_port: 9999,
    };
    assert_eq!(t.inbound(S, &k, 0), Ok((server, 53)));
    // Capacity for rules.
    for i in 0..15u16 {
        t.insert_static(S, Protocol::Udp, 4000 + i, client, server, 53)
            .unwrap();
    }
    assert_eq!(
        t.insert_static(S, Protocol::Udp, 5000, client, server, 53),
        Err(StaticError::Full)
    );
    check_invariants(&t, S);
}

#[test]
fn static_flow_conflicting_with_a_dynamic_one() {
    let mut t = table(64, 1024..=65535);
    let client = ip(198, 51, 100, 7);
    let server = ip(192, 168, 252, 5);
    // The server talks to client:5555 from port 53 on its own first.
    let own = OutboundKey {
        protocol: Protocol::Udp,
        int_addr: server,
        int_port: 53,
        remote_addr: client,
        remote_port: 5555,
    };
    t.outbound(0, &own, 0).unwrap();
    t.insert_static(0, Protocol::Udp, 3000, client, server, 53)
        .unwrap();
    let k = InboundKey {
        protocol: Protocol::Udp,
        ext_port: 3000,
        remote_addr: client,
        remote_port: 5555,
    };
    assert_eq!(t.inbound(0, &k, 0), Err(Miss::Conflict));
    assert_eq!(t.stats().refused_conflict, 1);
    // Once that flow has expired, the rule's flow can open.
    assert_eq!(t.inbound(200 * S, &k, 0), Ok((server, 53)));
    check_invariants(&t, 200 * S);
}

#[test]
fn expired_flow_is_not_matched_inbound() {
    let mut t = table(64, 1024..=65535);
    let k = out_key(Protocol::Udp, 7, 5000, ip(203, 0, 113, 9), 53);
    let p = t.outbound(0, &k, 0).unwrap();
    assert!(t.peek_inbound(119 * S, &in_key(&k, p)).is_some());
    assert!(t.peek_inbound(120 * S, &in_key(&k, p)).is_none());
    // Without any expire() call, the inbound lookup drops it.
    assert_eq!(t.inbound(120 * S, &in_key(&k, p), 0), Err(Miss::NoMapping));
    assert!(t.is_empty());
    assert_eq!(t.stats().expired, 1);
}

#[test]
fn peek_does_not_refresh() {
    let mut t = table(64, 1024..=65535);
    let k = out_key(Protocol::Udp, 7, 5000, ip(203, 0, 113, 9), 53);
    let p = t.outbound(0, &k, 0).unwrap();
    assert_eq!(t.peek_outbound(100 * S, &k), Some(p));
    assert_eq!(
        t.peek_inbound(100 * S, &in_key(&k, p)),
        Some((k.int_addr, 5000))
    );
    assert!(t.find_outbound(120 * S, &k).is_none());
}

/// Random operations against a small table: the invariants always hold,
/// the table never exceeds its capacity, and it agrees with a model of
/// which flows are live.
#[test]
fn property_random_operations() {
    for seed in 1..=6u64 {
        let mut rng = XorShift(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let cap = [8usize, 16, 64][seed as usize % 3];
        let mut t = TranslationTable::new(
            &TableConfig {
                capacity: cap,
                static_capacity: 4,
                ports: 30000..=30000 + (rng.below(40) as u16) + 2,
                timeouts: Timeouts {
                    tcp_syn: 20,
                    tcp_established: 100,
                    tcp_closing: 20,
                    tcp_time_wait: 20,
                    tcp_rst: 5,
                    udp: 30,
                    icmp: 10,
                    port_cooldown: 15,
                },
            },
            [seed, seed, seed, seed],
        )
        .unwrap();
        let mut now = 0u64;
        let remotes = [ip(203, 0, 113, 1), ip(203, 0, 113, 2), ip(198, 51, 100, 3)];
        let mut ext_ports: std::collections::HashMap<InboundKey, OutboundKey> = Default::default();
        for step in 0..20_000 {
            now += rng.below(3) as u64 * S / 2;
            let p = Protocol::ALL[rng.below(3)];
            let k = OutboundKey {
                protocol: p,
                int_addr: ip(192, 168, 252, 2 + rng.below(4) as u8),
                int_port: 1 + rng.below(4) as u16,
                remote_addr: remotes[rng.below(3)],
                remote_port: if p == Protocol::Icmp {
                    0
                } else {
                    80 + rng.below(3) as u16
                },
            };
            let flags = [SYN_F, ACK_F, SYNACK_F, FINACK_F, RST_F, 0][rng.below(6)];
            match rng.below(10) {
                0..=4 => {
                    if let Ok(port) = t.outbound(now, &k, flags) {
                        assert!((30000..=30042).contains(&port));
                        ext_ports.insert(in_key(&k, port), k);
                    }
                }
                5..=7 => {
                    // A reply to something we may have sent, or not.
                    let ik =
                        if let Some(ik) = ext_ports.keys().nth(rng.below(ext_ports.len().max(1))) {
                            *ik
                        } else {
                            in_key(&k, 30000)
                        };
                    if let Ok((a, port)) = t.inbound(now, &ik, flags) {
                        let id = t.find_inbound(now, &ik).unwrap();
                        let f = t.flow(id).unwrap();
                        assert_eq!((f.int_addr, f.int_port), (a, port));
                        assert_eq!(f.ext_port, ik.ext_port);
                    }
                }
                8 => {
                    t.expire(now, rng.below(20));
                }
                _ => {
                    let port = 30000 + rng.below(44) as u16;
                    match rng.below(4) {
                        0 => {
                            t.reserve_port(now, p, port);
                        }
                        1 => {
                            t.release_port(now, p, port);
                        }
                        2 => {
                            let _ = t.insert_static(now, p, port, remotes[0], k.int_addr, 9);
                        }
                        _ => {
                            let _ = t.remove_static(now, p, port);
                        }
                    }
                }
            }
            assert!(t.len() <= cap);
            if step % 97 == 0 {
                check_invariants(&t, now);
            }
        }
        check_invariants(&t, now);
        t.expire(now + 10_000 * S, 1_000_000);
        assert!(t.is_empty());
        assert_eq!(t.stats().mappings, 0);
    }
}

#[test]
fn hash_spreads_structured_keys() {
    // 65,536 flows from a /24 to one remote: chains stay short.
    let t = table(65_536, 1024..=65535);
    let mut counts = vec![0u32; t.out_heads.len()];
    let mut in_counts = vec![0u32; t.in_heads.len()];
    for host in 0..=255u32 {
        for port in 0..256u16 {
            let b = t.out_bucket(1, 0xc0a8_fc00 | host, 40000 + port, 0xcb00_7109, 443);
            counts[b] += 1;
            let b = t.in_bucket(1, (host * 256 + u32::from(port)) as u16, 0xcb00_7109, 443);
            in_counts[b] += 1;
        }
    }
    for c in [&counts, &in_counts] {
        let max = *c.iter().max().unwrap();
        assert!(max <= 12, "longest chain {max}");
        let empty = c.iter().filter(|&&n| n == 0).count();
        // A random function leaves about 1/e of the buckets empty.
        assert!(empty < c.len() / 2, "empty buckets {empty}");
    }
}

#[test]
fn entry_sizes() {
    assert_eq!(core::mem::size_of::<Flow>(), 32);
    assert_eq!(core::mem::align_of::<Flow>(), 32);
    assert_eq!(core::mem::size_of::<Link>(), 12);
    assert_eq!(core::mem::size_of::<Mapping>(), 24);
}

#[test]
fn evict_port_frees_a_dynamic_port_for_a_restored_rule() {
    let mut t = table(64, 40000..=40003);
    let remote = ip(203, 0, 113, 1);
    let k1 = out_key(Protocol::Tcp, 5, 1111, remote, 80);
    let k2 = out_key(Protocol::Tcp, 5, 1111, ip(203, 0, 113, 2), 80);
    let port = establish(&mut t, 0, &k1);
    // The same mapping (endpoint-independent): two flows on one port.
    assert_eq!(t.outbound(0, &k2, SYN_F).unwrap(), port);
    let client = ip(198, 51, 100, 7);
    let server = ip(192, 168, 252, 9);
    assert_eq!(
        t.insert_static(S, Protocol::Tcp, port, client, server, 22),
        Err(StaticError::PortBusy)
    );
    assert_eq!(t.evict_port(S, Protocol::Tcp, port), Ok(2));
    assert!(t.find_outbound(S, &k1).is_none());
    assert!(t.find_outbound(S, &k2).is_none());
    check_invariants(&t, S);
    // Not cooling: the rule gets the port at once.
    t.insert_static(S, Protocol::Tcp, port, client, server, 22)
        .unwrap();
    check_invariants(&t, S);
    // A static mapping's port is not evicted.
    assert_eq!(
        t.evict_port(S, Protocol::Tcp, port),
        Err(StaticError::PortBusy)
    );
    // A cooling port only stops cooling; a free one is left as it is.
    let k3 = out_key(Protocol::Udp, 6, 2222, remote, 53);
    let p3 = t.outbound(0, &k3, 0).unwrap();
    t.expire(3600 * S, 1 << 20);
    assert!(t.find_outbound(3600 * S, &k3).is_none());
    assert!(!t.reserve_port(3600 * S, Protocol::Udp, p3), "cooling");
    assert_eq!(t.evict_port(3600 * S, Protocol::Udp, p3), Ok(0));
    assert!(t.reserve_port(3600 * S, Protocol::Udp, p3));
}
