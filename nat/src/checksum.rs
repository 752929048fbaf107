//! The Internet checksum: full computation (RFC 1071) and incremental update
//! (RFC 1624).
//!
//! A *sum* here is the 16-bit ones'-complement sum of big-endian words, not
//! yet complemented; the *checksum* stored in a header is its complement.
//! Data whose checksum field is correct sums to `0xffff`.
//!
//! The incremental functions are what NAT rewriting uses: replacing a 16-bit
//! word (a port) or a 32-bit address in a packet changes its checksum in a
//! few operations, without touching the payload. They implement equation 3
//! of RFC 1624, `HC' = ~(~HC + ~m + m')`, which never turns a correct
//! checksum into the `-0` (`0xffff`) form the old equation 2 could produce.
//! The rewritten word must sit at an even offset of the checksummed data
//! (ports and addresses always do). UDP's "0 means no checksum" rule is the
//! caller's business.

use core::net::Ipv4Addr;

/// Folds a 64-bit accumulator of 16-bit words into 16 bits with end-around
/// carry.
#[inline]
fn fold(mut acc: u64) -> u16 {
    // Each step at least halves the excess; four steps fold any u64.
    for _ in 0..4 {
        acc = (acc & 0xffff).wrapping_add(acc >> 16);
    }
    // `acc` now fits in 16 bits.
    (acc & 0xffff) as u16
}

/// Ones'-complement sum of `data` read as big-endian 16-bit words (an odd
/// trailing byte is padded with a zero byte), folded to 16 bits and not
/// complemented.
pub fn sum(data: &[u8]) -> u16 {
    // Blocks of 2^16 words keep each partial sum below 2^32, so plain
    // wrapping adds never actually wrap.
    const BLOCK: usize = 1 << 17;
    let mut acc: u64 = 0;
    for block in data.chunks(BLOCK) {
        let mut partial: u32 = 0;
        let mut words = block.chunks_exact(2);
        for word in &mut words {
            if let [hi, lo] = *word {
                partial = partial.wrapping_add(u32::from(u16::from_be_bytes([hi, lo])));
            }
        }
        if let [last] = *words.remainder() {
            partial = partial.wrapping_add(u32::from(last) << 8);
        }
        acc = u64::from(fold(acc.wrapping_add(u64::from(partial))));
    }
    fold(acc)
}

/// Ones'-complement sum of several partial sums (e.g. a pseudo-header sum
/// and a payload sum).
pub fn combine(sums: &[u16]) -> u16 {
    let mut acc: u64 = 0;
    for &s in sums {
        acc = u64::from(fold(acc.wrapping_add(u64::from(s))));
    }
    fold(acc)
}

/// The checksum to store in a header whose checksum field is zero while
/// `data` is summed.
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    !sum(data)
}

/// Whether `data`, including its checksum field, carries a correct checksum.
#[inline]
pub fn verify(data: &[u8]) -> bool {
    sum(data) == 0xffff
}

/// Sum of the TCP/UDP pseudo-header for IPv4 (RFC 793, RFC 768): source,
/// destination, zero, protocol, and the transport length.
pub fn pseudo_header_sum(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, length: u16) -> u16 {
    let [s0, s1, s2, s3] = src.octets();
    let [d0, d1, d2, d3] = dst.octets();
    combine(&[
        u16::from_be_bytes([s0, s1]),
        u16::from_be_bytes([s2, s3]),
        u16::from_be_bytes([d0, d1]),
        u16::from_be_bytes([d2, d3]),
        u16::from(protocol),
        length,
    ])
}

/// RFC 1624 incremental update: the new checksum after the 16-bit word
/// `old_word` of the checksummed data became `new_word`.
#[inline]
pub fn update(old_checksum: u16, old_word: u16, new_word: u16) -> u16 {
    let acc = u64::from(!old_checksum)
        .wrapping_add(u64::from(!old_word))
        .wrapping_add(u64::from(new_word));
    !fold(acc)
}

/// Incremental update for a 32-bit field (two adjacent words at an even
/// offset) that changed from `old` to `new`.
#[inline]
pub fn update_u32(old_checksum: u16, old: u32, new: u32) -> u16 {
    let acc = u64::from(!old_checksum)
        .wrapping_add(u64::from(!((old >> 16) as u16)))
        .wrapping_add(u64::from(!(old as u16)))
        .wrapping_add(u64::from(new >> 16))
        .wrapping_add(u64::from(new & 0xffff));
    !fold(acc)
}

/// Incremental update for an IPv4 address that changed from `old` to `new`
/// (in the IPv4 header, or in a TCP/UDP pseudo-header).
#[inline]
pub fn update_addr(old_checksum: u16, old: Ipv4Addr, new: Ipv4Addr) -> u16 {
    update_u32(old_checksum, u32::from(old), u32::from(new))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{naive_checksum, XorShift};

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3: the bytes 00 01 f2 03 f4 f5 f6 f7 sum to ddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(sum(&data), 0xddf2);
        assert_eq!(checksum(&data), !0xddf2);
    }

    #[test]
    fn known_ipv4_header() {
        // A classic example header (checksum b861 at offset 10).
        let mut h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert!(verify(&h));
        h[10] = 0;
        h[11] = 0;
        assert_eq!(checksum(&h), 0xb861);
    }

    #[test]
    fn odd_length_and_empty() {
        assert_eq!(sum(&[]), 0);
        assert_eq!(checksum(&[]), 0xffff);
        assert_eq!(sum(&[0xab]), 0xab00);
        for len in 0..64 {
            let data: Vec<u8> = (0..len as u8)
                .map(|b| b.wrapping_mul(37).wrapping_add(11))
                .collect();
            assert_eq!(checksum(&data), naive_checksum(&data), "len {len}");
        }
    }

    #[test]
    fn large_buffers_match_naive() {
        let mut rng = XorShift(0x1234_5678_9abc_def1);
        for len in [1499usize, 1500, 65535, 200_000, 300_001] {
            let data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            assert_eq!(checksum(&data), naive_checksum(&data), "len {len}");
        }
        let ones = vec![0xffu8; 300_000];
        assert_eq!(checksum(&ones), naive_checksum(&ones));
    }

    #[test]
    fn combine_matches_concatenation() {
        let a = [1u8, 2, 3, 4, 0xff, 0xfe];
        let b = [9u8, 8, 7, 6, 5, 4];
        let mut ab = a.to_vec();
        ab.extend_from_slice(&b);
        assert_eq!(combine(&[sum(&a), sum(&b)]), sum(&ab));
    }

    #[test]
    fn pseudo_header_matches_bytes() {
        let src = Ipv4Addr::new(10, 0, 0, 2);
        let dst = Ipv4Addr::new(192, 168, 252, 7);
        let bytes = [10, 0, 0, 2, 192, 168, 252, 7, 0, 17, 0x05, 0xdc];
        assert_eq!(pseudo_header_sum(src, dst, 17, 1500), sum(&bytes));
    }

    /// Rewrite a word / an address in random data and compare the
    /// incremental checksum with a full recomputation.
    #[test]
    fn incremental_matches_recomputation() {
        let mut rng = XorShift(0xdead_beef_cafe_f00d);
        for round in 0..20_000 {
            let words = 3 + (rng.next() % 40) as usize;
            let mut data: Vec<u8> = (0..words * 2).map(|_| rng.next() as u8).collect();
            // Mix in extreme values that stress the +0/-0 corner cases.
            match round % 5 {
                0 => data.iter_mut().for_each(|b| *b = 0xff),
                1 => data.iter_mut().skip(2).for_each(|b| *b = 0),
                _ => {}
            }
            // Word 0 stays non-zero and untouched, as in every real header
            // (the all-zero message is the one case where +0 and -0 differ).
            data[0] |= 0x40;
            let csum_at = 2 * (1 + rng.next() as usize % (words - 1));
            data[csum_at] = 0;
            data[csum_at + 1] = 0;
            let c = checksum(&data);
            data[csum_at..csum_at + 2].copy_from_slice(&c.to_be_bytes());
            assert!(verify(&data));

            // 16-bit rewrite.
            let mut at = 2 * (1 + rng.next() as usize % (words - 1));
            if at == csum_at {
                at = if at + 2 < words * 2 { at + 2 } else { 2 };
            }
            let old = u16::from_be_bytes([data[at], data[at + 1]]);
            let new = match round % 7 {
                0 => 0,
                1 => 0xffff,
                _ => rng.next() as u16,
            };
            data[at..at + 2].copy_from_slice(&new.to_be_bytes());
            let inc = update(c, old, new);
            data[csum_at..csum_at + 2].copy_from_slice(&[0, 0]);
            let full = checksum(&data);
            assert_eq!(inc, full, "round {round}: 16-bit update");
            data[csum_at..csum_at + 2].copy_from_slice(&inc.to_be_bytes());
            assert!(verify(&data));
        }
    }

    #[test]
    fn incremental_address_rewrite_in_ipv4_header() {
        let mut rng = XorShift(42);
        for _ in 0..10_000 {
            let mut h = [
                0x45, 0x00, 0x00, 0x54, 0x12, 0x34, 0x40, 0x00, 0x40, 0x06, 0, 0, 10, 0, 0, 2, 8,
                8, 8, 8,
            ];
            for b in &mut h[12..20] {
                *b = rng.next() as u8;
            }
            let c = checksum(&h);
            h[10..12].copy_from_slice(&c.to_be_bytes());
            let old_src = Ipv4Addr::new(h[12], h[13], h[14], h[15]);
            let new_src = Ipv4Addr::from(rng.next() as u32);
            h[12..16].copy_from_slice(&new_src.octets());
            let inc = update_addr(c, old_src, new_src);
            h[10..12].copy_from_slice(&[0, 0]);
            assert_eq!(inc, naive_checksum(&h));
            // A u32 field at an even but not 4-aligned offset works too.
            let old = u32::from_be_bytes([h[14], h[15], h[16], h[17]]);
            let new = rng.next() as u32;
            h[10..12].copy_from_slice(&inc.to_be_bytes());
            h[14..18].copy_from_slice(&new.to_be_bytes());
            let inc2 = update_u32(inc, old, new);
            h[10..12].copy_from_slice(&[0, 0]);
            assert_eq!(inc2, naive_checksum(&h));
        }
    }
}
