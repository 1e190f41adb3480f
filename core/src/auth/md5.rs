//! MD5 (RFC 1321), written from the RFC's description (§3). Digest
//! authentication still needs it: RFC 7616 keeps MD5 for backward
//! compatibility and RFC 8760 §2.3 lets SIP use it next to SHA-256.
//!
//! MD5 is broken for collision resistance; here it only keys a
//! challenge-response exchange, which is what the digest RFCs specify.
//!
//! ```
//! use sipline::auth::md5::{md5, Md5};
//!
//! let mut h = Md5::new();
//! h.update(b"message ");
//! h.update(b"digest");
//! assert_eq!(h.finish(), md5(b"message digest"));
//! ```

/// The number of bytes one compression step consumes (RFC 1321 §3.4: 16
/// 32-bit words).
const BLOCK: usize = 64;

/// `T[i] = floor(2^32 * |sin(i)|)` for `i` = 1..=64 (RFC 1321 §3.4), the
/// additive constant of step `i`.
const T: [u32; 64] = [
    0xd76a_a478,
    0xe8c7_b756,
    0x2420_70db,
    0xc1bd_ceee,
    0xf57c_0faf,
    0x4787_c62a,
    0xa830_4613,
    0xfd46_9501,
    0x6980_98d8,
    0x8b44_f7af,
    0xffff_5bb1,
    0x895c_d7be,
    0x6b90_1122,
    0xfd98_7193,
    0xa679_438e,
    0x49b4_0821,
    0xf61e_2562,
    0xc040_b340,
    0x265e_5a51,
    0xe9b6_c7aa,
    0xd62f_105d,
    0x0244_1453,
    0xd8a1_e681,
    0xe7d3_fbc8,
    0x21e1_cde6,
    0xc337_07d6,
    0xf4d5_0d87,
    0x455a_14ed,
    0xa9e3_e905,
    0xfcef_a3f8,
    0x676f_02d9,
    0x8d2a_4c8a,
    0xfffa_3942,
    0x8771_f681,
    0x6d9d_6122,
    0xfde5_380c,
    0xa4be_ea44,
    0x4bde_cfa9,
    0xf6bb_4b60,
    0xbebf_bc70,
    0x289b_7ec6,
    0xeaa1_27fa,
    0xd4ef_3085,
    0x0488_1d05,
    0xd9d4_d039,
    0xe6db_99e5,
    0x1fa2_7cf8,
    0xc4ac_5665,
    0xf429_2244,
    0x432a_ff97,
    0xab94_23a7,
    0xfc93_a039,
    0x655b_59c3,
    0x8f0c_cc92,
    0xffef_f47d,
    0x8584_5dd1,
    0x6fa8_7e4f,
    0xfe2c_e6e0,
    0xa301_4314,
    0x4e08_11a1,
    0xf753_7e82,
    0xbd3a_f235,
    0x2ad7_d2bb,
    0xeb86_d391,
];

/// The left-rotation amounts of the four rounds (RFC 1321 §3.4); within a
/// round they repeat every four steps.
const S: [[u32; 4]; 4] = [[7, 12, 17, 22], [5, 9, 14, 20], [4, 11, 16, 23], [6, 10, 15, 21]];

/// The initial buffer A, B, C, D (RFC 1321 §3.3), as the words that the
/// RFC lists low-order byte first.
const INIT: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];

/// An incremental MD5 computation: [`Md5::update`] any number of times, then
/// [`Md5::finish`].
#[derive(Clone)]
pub struct Md5 {
    /// The running digest A, B, C, D.
    state: [u32; 4],
    /// Bytes waiting for a whole block.
    pending: [u8; BLOCK],
    /// How many bytes of `pending` are in use (always < 64 between calls).
    pending_len: usize,
    /// The message length so far, in bytes.
    length: u64,
}

impl std::fmt::Debug for Md5 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The buffered input may be a password: show only how much was fed.
        f.debug_struct("Md5").field("length", &self.length).finish_non_exhaustive()
    }
}

impl Default for Md5 {
    fn default() -> Self {
        Md5::new()
    }
}

impl Md5 {
    /// A computation over the empty message.
    pub fn new() -> Md5 {
        Md5 { state: INIT, pending: [0; BLOCK], pending_len: 0, length: 0 }
    }

    /// Appends `data` to the message.
    pub fn update(&mut self, mut data: &[u8]) {
        self.length = self.length.wrapping_add(data.len() as u64);
        if self.pending_len > 0 {
            let take = (BLOCK - self.pending_len).min(data.len());
            self.pending[self.pending_len..self.pending_len + take].copy_from_slice(&data[..take]);
            self.pending_len += take;
            data = &data[take..];
            if self.pending_len < BLOCK {
                return;
            }
            let block = self.pending;
            self.compress(&block);
            self.pending_len = 0;
        }
        let mut blocks = data.chunks_exact(BLOCK);
        for block in &mut blocks {
            self.compress(block);
        }
        let rest = blocks.remainder();
        self.pending[..rest.len()].copy_from_slice(rest);
        self.pending_len = rest.len();
    }

    /// Pads the message (RFC 1321 §3.1, §3.2) and returns the 16-byte digest
    /// (§3.5: A, B, C, D, each low-order byte first).
    pub fn finish(mut self) -> [u8; 16] {
        // The length is taken before padding, in bits, modulo 2^64 (§3.2).
        let bits = self.length.wrapping_mul(8);
        // §3.1: a single 1 bit, then 0 bits up to 448 mod 512 bits.
        let zeros = (BLOCK + 56 - (self.pending_len + 1) % BLOCK) % BLOCK;
        let mut tail = [0u8; BLOCK + 8];
        tail[0] = 0x80;
        tail[1 + zeros..1 + zeros + 8].copy_from_slice(&bits.to_le_bytes());
        let tail_len = 1 + zeros + 8;
        // `update` would count the padding in the length: feed it raw.
        let length = self.length;
        self.update(&tail[..tail_len]);
        self.length = length;
        debug_assert_eq!(self.pending_len, 0);
        let mut out = [0u8; 16];
        for (chunk, word) in out.chunks_exact_mut(4).zip(self.state) {
            chunk.copy_from_slice(&word.to_le_bytes());
        }
        out
    }

    /// One application of the four rounds to a 64-byte block (RFC 1321
    /// §3.4).
    fn compress(&mut self, block: &[u8]) {
        debug_assert_eq!(block.len(), BLOCK);
        let mut x = [0u32; 16];
        for (word, bytes) in x.iter_mut().zip(block.chunks_exact(4)) {
            *word = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        }
        let [mut a, mut b, mut c, mut d] = self.state;
        for i in 0..64 {
            let round = i / 16;
            // The auxiliary functions F, G, H, I and which word each step
            // reads: k, (1 + 5k), (5 + 3k), 7k, all mod 16.
            let (f, k) = match round {
                0 => ((b & c) | (!b & d), i),
                1 => ((b & d) | (c & !d), (1 + 5 * i) % 16),
                2 => (b ^ c ^ d, (5 + 3 * i) % 16),
                _ => (c ^ (b | !d), (7 * i) % 16),
            };
            let sum = a.wrapping_add(f).wrapping_add(x[k]).wrapping_add(T[i]);
            let next = b.wrapping_add(sum.rotate_left(S[round][i % 4]));
            // The registers rotate: the RFC's "[ABCD k s i]" then
            // "[DABC …]" and so on.
            a = d;
            d = c;
            c = b;
            b = next;
        }
        self.state[0] = self.state[0].wrapping_add(a);
        self.state[1] = self.state[1].wrapping_add(b);
        self.state[2] = self.state[2].wrapping_add(c);
        self.state[3] = self.state[3].wrapping_add(d);
    }
}

/// The MD5 digest of `data` in one call.
pub fn md5(data: &[u8]) -> [u8; 16] {
    let mut h = Md5::new();
    h.update(data);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        use std::fmt::Write;
        bytes.iter().fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
    }

    /// RFC 1321 appendix A.5, the test suite.
    const SUITE: [(&str, &str); 7] = [
        ("", "d41d8cd98f00b204e9800998ecf8427e"),
        ("a", "0cc175b9c0f1b6a831c399e269772661"),
        ("abc", "900150983cd24fb0d6963f7d28e17f72"),
        ("message digest", "f96b697d7cb7938d525a2f31aaf161d0"),
        ("abcdefghijklmnopqrstuvwxyz", "c3fcd3d76192e4007dfb496cca67e13b"),
        ("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789", "d174ab98d277d9f5a5611c2c9f419d9f"),
        (
            "12345678901234567890123456789012345678901234567890123456789012345678901234567890",
            "57edf4a22be3c955ac49da2e2107b67a",
        ),
    ];

    #[test]
    fn rfc1321_test_suite() {
        for (input, expected) in SUITE {
            assert_eq!(hex(&md5(input.as_bytes())), expected, "MD5(\"{input}\")");
        }
    }

    #[test]
    fn test_suite_byte_by_byte() {
        for (input, expected) in SUITE {
            let mut h = Md5::new();
            for b in input.as_bytes() {
                h.update(std::slice::from_ref(b));
            }
            assert_eq!(hex(&h.finish()), expected, "MD5(\"{input}\") fed one byte at a time");
        }
    }

    #[test]
    fn multi_block_input_in_odd_pieces() {
        // 1000 bytes: fifteen whole blocks and a partial one, fed in pieces
        // of 1, 3, 5, … bytes so every split lands somewhere different.
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 + 3).to_le_bytes()[0]).collect();
        let whole = md5(&data);
        let mut h = Md5::new();
        let mut rest = &data[..];
        let mut n = 1;
        while !rest.is_empty() {
            let take = n.min(rest.len());
            h.update(&rest[..take]);
            rest = &rest[take..];
            n += 2;
        }
        assert_eq!(h.finish(), whole);
        // The same input again, as 63-byte pieces (one short of a block).
        let mut h = Md5::new();
        for piece in data.chunks(63) {
            h.update(piece);
        }
        assert_eq!(h.finish(), whole);
        // The A.5 digits string, eight times over: 640 bytes in pieces of 13.
        let long = SUITE[6].0.repeat(8);
        let mut h = Md5::new();
        for piece in long.as_bytes().chunks(13) {
            h.update(piece);
        }
        assert_eq!(h.finish(), md5(long.as_bytes()));
    }

    #[test]
    fn padding_boundaries() {
        // Lengths around 55/56/64 bytes change how the padding spills into a
        // second block; the split computation must agree with the one-shot.
        for len in [55, 56, 57, 63, 64, 65, 119, 120, 128] {
            let data = vec![b'x'; len];
            let mut h = Md5::new();
            let (left, right) = data.split_at(len / 3);
            h.update(left);
            h.update(right);
            assert_eq!(h.finish(), md5(&data), "length {len}");
        }
        // A known value across the boundary: 56 'a's.
        assert_eq!(hex(&md5(&[b'a'; 56])), "3b0c8ac703f828b04c6c197006d17218");
    }

    // |sin| < 1, so the product lies in [0, 2^32): the cast cannot truncate.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    #[test]
    fn constants_follow_the_sine_rule() {
        for (i, &t) in (1..=64u32).zip(T.iter()) {
            let expected = (f64::from(i).sin().abs() * 4_294_967_296.0).floor() as u32;
            assert_eq!(t, expected, "T[{i}]");
        }
    }
}
