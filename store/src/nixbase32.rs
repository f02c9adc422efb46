//! Nix's own base-32 encoding, used for store path hash parts and `nix32` hashes.
//!
//! It exists because Nix does not use RFC 4648: the alphabet omits `e`, `o`, `u` and `t`, and
//! the digits are produced from the *last* 5-bit group of the little-endian bit string first.
//! Invariant: `decode(encode(b)) == b` for every byte string, and `decode` rejects any string
//! whose leftover high bits are non-zero (so every byte string has exactly one encoding).

use thiserror::Error;

/// The 32 digits, in value order.
pub const ALPHABET: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";

/// Why a string is not valid Nix base-32.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Base32Error {
    #[error("invalid character {ch:?} at position {pos} in Nix base-32 string '{input}'")]
    InvalidChar { input: String, ch: char, pos: usize },
    #[error("Nix base-32 string '{input}' has non-zero padding bits")]
    NonZeroPadding { input: String },
}

/// Number of base-32 digits needed for `len` bytes.
pub const fn encoded_len(len: usize) -> usize {
    if len == 0 { 0 } else { (len * 8 - 1) / 5 + 1 }
}

/// The value of one digit, or `None` for a character outside the alphabet.
pub fn digit_value(c: u8) -> Option<u8> {
    ALPHABET.iter().position(|&a| a == c).map(|p| p as u8)
}

/// Encode bytes as Nix base-32.
pub fn encode(bytes: &[u8]) -> String {
    let len = encoded_len(bytes.len());
    let mut out = String::with_capacity(len);
    for n in (0..len).rev() {
        let b = n * 5;
        let i = b / 8;
        let j = b % 8;
        let lo = (bytes[i] as u16) >> j;
        let hi = if i + 1 < bytes.len() {
            (bytes[i + 1] as u16) << (8 - j)
        } else {
            0
        };
        let c = ((lo | hi) & 0x1f) as usize;
        out.push(ALPHABET[c] as char);
    }
    out
}

/// Decode a Nix base-32 string into exactly `out_len` bytes.
///
/// The caller checks that `s.len() == encoded_len(out_len)`; digits beyond `out_len` bytes must
/// be zero.
pub fn decode_into(s: &str, out_len: usize) -> Result<Vec<u8>, Base32Error> {
    let mut res = vec![0u8; out_len];
    let bytes = s.as_bytes();
    for n in 0..bytes.len() {
        let pos = bytes.len() - n - 1;
        let c = bytes[pos];
        let digit = digit_value(c).ok_or_else(|| Base32Error::InvalidChar {
            input: s.to_owned(),
            ch: if s.is_char_boundary(pos) {
                s[pos..].chars().next().unwrap_or('?')
            } else {
                '?'
            },
            pos,
        })?;
        let b = n * 5;
        let i = b / 8;
        let j = b % 8;
        if i >= out_len {
            if digit != 0 {
                return Err(Base32Error::NonZeroPadding {
                    input: s.to_owned(),
                });
            }
            continue;
        }
        res[i] |= ((digit as u16) << j) as u8;
        let carry = (digit as u16) >> (8 - j);
        if i + 1 < out_len {
            res[i + 1] |= carry as u8;
        } else if carry != 0 {
            return Err(Base32Error::NonZeroPadding {
                input: s.to_owned(),
            });
        }
    }
    Ok(res)
}

/// Decode a Nix base-32 string, deriving the byte length from the string length.
pub fn decode(s: &str) -> Result<Vec<u8>, Base32Error> {
    let out_len = s.len() * 5 / 8;
    decode_into(s, out_len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_all_lengths() {
        for len in 0..70usize {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let s = encode(&bytes);
            assert_eq!(s.len(), encoded_len(len));
            assert_eq!(decode_into(&s, len).expect("valid"), bytes);
        }
    }

    #[test]
    fn known_value() {
        // sha1 of "" in nix32 as printed by `nix hash convert --to nix32 sha1:da39a3ee…`.
        let bytes = [0u8; 20];
        assert_eq!(encode(&bytes), "00000000000000000000000000000000");
        assert!(matches!(
            decode("0000000e"),
            Err(Base32Error::InvalidChar { pos: 7, .. })
        ));
        // 160 bits = exactly 32 digits; a 20-byte decode of "z" + 31 zeros must keep all bits.
        let s = format!("1{}", "0".repeat(31));
        let d = decode_into(&s, 20).expect("valid");
        assert_eq!(d[19], 0x08);
    }

    #[test]
    fn rejects_padding_bits() {
        // 1 byte -> 2 digits, top digit may only use 3 bits.
        assert!(decode_into("z0", 1).is_err());
        assert_eq!(decode_into("70", 1).expect("valid"), vec![0xe0]);
    }
}
