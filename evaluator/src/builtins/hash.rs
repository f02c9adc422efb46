//! Hash builtins: hashString, hashFile, convertHash.
//!
//! Why it exists: Nix's hash algorithms (md5, sha1, sha256, sha512) and textual formats (base16,
//! nix32 — Nix's own base-32 alphabet and bit order —, base64, SRI) with Nix's parsing rules
//! (`Hash::parseAny`: the format is decided by the length, an `algo:` or `algo-` (SRI) prefix
//! names the algorithm) and messages. Invariant: parse(to_string(h)) == h for every format.
//! Note: the store crate has the same code in `store/src/hash.rs`; this copy is temporary until
//! that API is committed (then this module should call it).

use sha1::Digest as _;

use crate::builtins::Registry;
use crate::builtins::attrs::get_attr_or_err;
use crate::builtins::fs::{read_file_bytes, realise_path};
use crate::error::{EvalError, Result};
use crate::eval::Evaluator;
use crate::source::Pos;
use crate::store_path::nix_base32;
use crate::symbol::Symbol;
use crate::value::Value;

pub(crate) fn register(r: &mut Registry) {
    r.primop("__hashString", 2, prim_hash_string);
    r.primop("__hashFile", 2, prim_hash_file);
    r.primop("__convertHash", 1, prim_convert_hash);
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Algo {
    Md5,
    Sha1,
    Sha256,
    Sha512,
}

impl Algo {
    pub fn parse(s: &[u8]) -> Option<Algo> {
        Some(match s {
            b"md5" => Algo::Md5,
            b"sha1" => Algo::Sha1,
            b"sha256" => Algo::Sha256,
            b"sha512" => Algo::Sha512,
            _ => return None,
        })
    }
    pub fn name(self) -> &'static str {
        match self {
            Algo::Md5 => "md5",
            Algo::Sha1 => "sha1",
            Algo::Sha256 => "sha256",
            Algo::Sha512 => "sha512",
        }
    }
    pub fn size(self) -> usize {
        match self {
            Algo::Md5 => 16,
            Algo::Sha1 => 20,
            Algo::Sha256 => 32,
            Algo::Sha512 => 64,
        }
    }
    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            Algo::Md5 => md5::Md5::digest(data).to_vec(),
            Algo::Sha1 => sha1::Sha1::digest(data).to_vec(),
            Algo::Sha256 => sha2::Sha256::digest(data).to_vec(),
            Algo::Sha512 => sha2::Sha512::digest(data).to_vec(),
        }
    }
}

fn unknown_algo(s: &[u8]) -> EvalError {
    EvalError::eval(format!(
        "unknown hash algorithm '{}', expect 'md5', 'sha1', 'sha256', or 'sha512'",
        String::from_utf8_lossy(s)
    ))
}

pub fn base16(h: &[u8]) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

pub fn base64(data: &[u8]) -> String {
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for k in 0..4 {
            if k <= chunk.len() {
                out.push(B64[((n >> (18 - 6 * k)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Nix's `base64Decode`: stops at '=', rejects other characters outside the alphabet.
fn base64_decode(s: &str) -> std::result::Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let (mut bits, mut acc) = (0u32, 0u32);
    for c in s.bytes() {
        if c == b'=' {
            break;
        }
        if c == b'\n' {
            continue;
        }
        let Some(d) = B64.iter().position(|x| *x == c) else {
            return Err(format!(
                "invalid character in Base64 string: '{}'",
                c as char
            ));
        };
        acc = (acc << 6) | d as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Ok(out)
}

const NIX32: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";

fn nix32_len(size: usize) -> usize {
    (size * 8 - 1) / 5 + 1
}

/// Nix's `Hash::parseAny`.
pub fn parse_any(
    original: &str,
    algo: Option<Algo>,
) -> std::result::Result<(Algo, Vec<u8>), String> {
    let mut rest = original;
    let mut sri = false;
    let mut parsed = None;
    if let Some((a, r)) = original.split_once(':') {
        parsed = Some(
            Algo::parse(a.as_bytes())
                .ok_or_else(|| unknown_algo(a.as_bytes()).msg().to_string())?,
        );
        rest = r;
    } else if let Some((a, r)) = original.split_once('-') {
        parsed = Some(
            Algo::parse(a.as_bytes())
                .ok_or_else(|| unknown_algo(a.as_bytes()).msg().to_string())?,
        );
        rest = r;
        sri = true;
    }
    let algo = match (parsed, algo) {
        (None, None) => {
            return Err(format!(
                "hash '{rest}' does not include a type, nor is the type otherwise known from context"
            ));
        }
        (Some(p), Some(a)) if p != a => {
            return Err(format!("hash '{original}' should have type '{}'", a.name()));
        }
        (Some(p), _) => p,
        (None, Some(a)) => a,
    };
    let size = algo.size();
    if !sri && rest.len() == size * 2 {
        let mut h = Vec::with_capacity(size);
        for i in 0..size {
            let byte = u8::from_str_radix(&rest[2 * i..2 * i + 2], 16)
                .map_err(|_| format!("invalid base-16 hash '{rest}'"))?;
            if !rest.as_bytes()[2 * i].is_ascii_hexdigit() {
                return Err(format!("invalid base-16 hash '{rest}'"));
            }
            h.push(byte);
        }
        return Ok((algo, h));
    }
    if !sri && rest.len() == nix32_len(size) {
        let mut h = vec![0u8; size];
        let b = rest.as_bytes();
        for n in 0..b.len() {
            let c = b[b.len() - n - 1];
            let Some(digit) = NIX32.iter().position(|x| *x == c) else {
                return Err(format!("invalid base-32 hash '{rest}'"));
            };
            let digit = digit as u32;
            let bit = n * 5;
            let (i, j) = (bit / 8, bit % 8);
            h[i] |= (digit << j) as u8;
            if i < size - 1 {
                h[i + 1] |= (digit >> (8 - j)) as u8;
            } else if digit >> (8 - j) != 0 {
                return Err(format!("invalid base-32 hash '{rest}'"));
            }
        }
        return Ok((algo, h));
    }
    if sri || rest.len() == size.div_ceil(3) * 4 {
        let d = base64_decode(rest)?;
        if d.len() != size {
            return Err(format!(
                "invalid {} hash '{rest}'",
                if sri { "SRI" } else { "base-64" }
            ));
        }
        return Ok((algo, d));
    }
    Err(format!(
        "hash '{rest}' has wrong length for hash algorithm '{}'",
        algo.name()
    ))
}

fn prim_hash_string(ev: &mut Evaluator, pos: Pos, args: &[Value]) -> Result<Value> {
    let a = ev.force_string_no_ctx(
        &args[0],
        pos,
        "while evaluating the first argument passed to builtins.hashString",
    )?;
    let algo = Algo::parse(&a.bytes).ok_or_else(|| unknown_algo(&a.bytes))?;
    let s = ev.force_string(
        &args[1],
        pos,
        "while evaluating the second argument passed to builtins.hashString",
    )?;
    Ok(Value::str(&base16(&algo.digest(&s.bytes))))
}

fn prim_hash_file(ev: &mut Evaluator, pos: Pos, args: &[Value]) -> Result<Value> {
    let a = ev.force_string_no_ctx(
        &args[0],
        pos,
        "while evaluating the first argument passed to builtins.hashFile",
    )?;
    let algo = Algo::parse(&a.bytes).ok_or_else(|| unknown_algo(&a.bytes))?;
    let p = realise_path(ev, &args[1], true)?;
    let data = read_file_bytes(&p)?;
    Ok(Value::str(&base16(&algo.digest(&data))))
}

fn prim_convert_hash(ev: &mut Evaluator, pos: Pos, args: &[Value]) -> Result<Value> {
    let a = ev.force_attrs(
        &args[0],
        pos,
        "while evaluating the first argument passed to builtins.convertHash",
    )?;
    let h = get_attr_or_err(
        &a,
        Symbol::intern("hash"),
        "while locating the attribute 'hash'",
    )?;
    let hash = ev.force_string_no_ctx(&h.value, pos, "while evaluating the attribute 'hash'")?;
    let algo = match a.get(Symbol::intern("hashAlgo")) {
        Some(x) => {
            let s = ev.force_string_no_ctx(
                &x.value.clone(),
                pos,
                "while evaluating the attribute 'hashAlgo'",
            )?;
            Some(Algo::parse(&s.bytes).ok_or_else(|| unknown_algo(&s.bytes))?)
        }
        None => None,
    };
    let f = get_attr_or_err(
        &a,
        Symbol::intern("toHashFormat"),
        "while locating the attribute 'toHashFormat'",
    )?;
    let fmt = ev.force_string_no_ctx(
        &f.value,
        pos,
        "while evaluating the attribute 'toHashFormat'",
    )?;
    let fmt: &[u8] = &fmt.bytes;
    if fmt == b"base32" {
        ev.stderr.push(
            "warning: \"base32\" is a deprecated alias for hash format \"nix32\".".to_string(),
        );
    }
    if !matches!(fmt, b"base16" | b"nix32" | b"base32" | b"base64" | b"sri") {
        return Err(EvalError::eval(format!(
            "unknown hash format '{}', expect 'base16', 'base32', 'base64', or 'sri'",
            String::from_utf8_lossy(fmt)
        )));
    }
    let (algo, bytes) = parse_any(&hash.as_str_lossy(), algo).map_err(EvalError::eval)?;
    let out = match fmt {
        b"base16" => base16(&bytes),
        b"nix32" | b"base32" => nix_base32(&bytes),
        b"base64" => base64(&bytes),
        _ => format!("{}-{}", algo.name(), base64(&bytes)),
    };
    Ok(Value::str(&out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_formats() {
        let h = Algo::Sha256.digest(b"abc");
        for s in [base16(&h), nix_base32(&h), base64(&h)] {
            assert_eq!(
                parse_any(&s, Some(Algo::Sha256)).map(|x| x.1),
                Ok(h.clone())
            );
        }
        let sri = format!("sha256-{}", base64(&h));
        assert_eq!(parse_any(&sri, None).map(|x| x.1), Ok(h));
    }
}
