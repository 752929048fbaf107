//! Helpers shared by the unit tests.

/// An independent, deliberately naive RFC 1071 checksum, to check the
/// crate's own implementation against.
pub fn naive_checksum(data: &[u8]) -> u16 {
    let mut s: u32 = 0;
    let mut i = 0;
    while i < data.len() {
        let hi = data[i] as u32;
        let lo = if i + 1 < data.len() {
            data[i + 1] as u32
        } else {
            0
        };
        s += (hi << 8) | lo;
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        i += 2;
    }
    !(s as u16)
}

/// Whether `data` (checksum field included) verifies, by the naive sum.
pub fn naive_verify(data: &[u8]) -> bool {
    naive_checksum(data) == 0
}

/// A tiny deterministic PRNG (xorshift64).
pub struct XorShift(pub u64);

impl XorShift {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}
