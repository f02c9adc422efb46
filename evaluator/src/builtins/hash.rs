//! Hash builtins: hashString, hashFile, convertHash.
//!
//! Why it exists: the builtins' argument handling and Nix's messages around them. The hashing,
//! the textual formats (base16, nix32, base64, SRI) and Nix's parsing rules (`Hash::parseAny`)
//! are flaked-store's `hash` module, the one implementation the store paths and `.drv` files
//! use too. Invariant: no hash encoding or decoding is implemented here.

use flaked_store::hash::{BASE32_DEPRECATION_WARNING, Hash, HashAlgo, HashFormat};

use crate::builtins::Registry;
use crate::builtins::attrs::get_attr_or_err;
use crate::builtins::fs::{read_file_bytes, realise_path};
use crate::error::{ErrorKind, EvalError, Result};
use crate::eval::Evaluator;
use crate::source::Pos;
use crate::symbol::Symbol;
use crate::value::Value;

pub(crate) fn register(r: &mut Registry) {
    r.primop("__hashString", 2, prim_hash_string);
    r.primop("__hashFile", 2, prim_hash_file);
    r.primop("__convertHash", 1, prim_convert_hash);
}

/// Nix's `parseHashAlgo`, with its message for unknown names.
fn parse_algo(name: &[u8]) -> Result<HashAlgo> {
    String::from_utf8_lossy(name)
        .parse::<HashAlgo>()
        .map_err(|e| EvalError::new(ErrorKind::Usage, e.to_string()))
}

fn prim_hash_string(ev: &mut Evaluator, pos: Pos, args: &[Value]) -> Result<Value> {
    let a = ev.force_string_no_ctx(
        &args[0],
        pos,
        "while evaluating the first argument passed to builtins.hashString",
    )?;
    let algo = parse_algo(&a.bytes)?;
    let s = ev.force_string(
        &args[1],
        pos,
        "while evaluating the second argument passed to builtins.hashString",
    )?;
    Ok(Value::str(&Hash::digest(algo, &s.bytes).to_base16()))
}

fn prim_hash_file(ev: &mut Evaluator, pos: Pos, args: &[Value]) -> Result<Value> {
    let a = ev.force_string_no_ctx(
        &args[0],
        pos,
        "while evaluating the first argument passed to builtins.hashFile",
    )?;
    let algo = parse_algo(&a.bytes)?;
    let p = realise_path(ev, &args[1], true)?;
    let data = read_file_bytes(ev, &p)?;
    Ok(Value::str(&Hash::digest(algo, &data).to_base16()))
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
            Some(parse_algo(&s.bytes)?)
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
    let (format, deprecated) = HashFormat::parse(&fmt.as_str_lossy())
        .map_err(|e| EvalError::new(ErrorKind::Usage, e.to_string()))?;
    if deprecated {
        ev.stderr
            .push(format!("warning: {BASE32_DEPRECATION_WARNING}"));
    }
    let hash =
        Hash::parse_any(&hash.as_str_lossy(), algo).map_err(|e| EvalError::eval(e.to_string()))?;
    Ok(Value::str(&hash.render(format, false)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_algorithm_message_is_nixs() {
        let e = parse_algo(b"sha3").expect_err("sha3 is not a Nix hash algorithm");
        assert_eq!(
            e.msg(),
            "unknown hash algorithm 'sha3', expect 'md5', 'sha1', 'sha256', or 'sha512'"
        );
        assert_eq!(parse_algo(b"sha512").ok(), Some(HashAlgo::Sha512));
    }
}
