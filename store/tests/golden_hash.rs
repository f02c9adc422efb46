//! Hash printing/parsing against `builtins.hashString`/`convertHash` and `nix hash convert`.

mod common;

use flaked_store::hash::{Hash, HashAlgo, HashFormat};

#[test]
fn hash_string_in_every_format() {
    let cases = common::golden_json("hashes.json");
    let cases = cases.as_array().expect("array");
    assert!(cases.len() >= 20);
    for c in cases {
        let input = c["input"].as_str().expect("input");
        let algo: HashAlgo = c["algo"]
            .as_str()
            .expect("algo")
            .parse()
            .expect("known algo");
        let h = Hash::digest(algo, input.as_bytes());
        assert_eq!(
            h.to_base16(),
            c["base16"].as_str().expect("b16"),
            "{input:?} {algo}"
        );
        assert_eq!(
            h.to_nix32(),
            c["nix32"].as_str().expect("n32"),
            "{input:?} {algo}"
        );
        assert_eq!(
            h.render(HashFormat::Base64, false),
            c["base64"].as_str().expect("b64")
        );
        assert_eq!(h.to_sri(), c["sri"].as_str().expect("sri"));
        for key in ["base16", "nix32", "base64"] {
            let s = c[key].as_str().expect("str");
            assert_eq!(
                Hash::parse_any(s, Some(algo)).expect("parses"),
                h,
                "{key} {s}"
            );
            assert_eq!(Hash::parse_non_sri_unprefixed(s, algo).expect("parses"), h);
            assert_eq!(
                Hash::parse_any_prefixed(&format!("{algo}:{s}")).expect("parses"),
                h
            );
        }
        assert_eq!(
            Hash::parse_sri(c["sri"].as_str().expect("sri")).expect("parses"),
            h
        );
    }
}

/// Re-implements `nix hash convert [--hash-algo A] --to F HASH` on top of the library.
fn convert(args: &[String]) -> Result<String, String> {
    let mut algo = None;
    let mut to = "sri".to_owned();
    let mut hash = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--hash-algo" => algo = Some(it.next().expect("value").clone()),
            "--to" => to = it.next().expect("value").clone(),
            _ => hash = Some(a.clone()),
        }
    }
    let (format, _deprecated) = HashFormat::parse(&to).map_err(|e| e.to_string())?;
    let algo = match algo {
        Some(a) => Some(a.parse::<HashAlgo>().map_err(|e| e.to_string())?),
        None => None,
    };
    let h = Hash::parse_any(&hash.expect("hash argument"), algo).map_err(|e| e.to_string())?;
    Ok(h.render(format, format == HashFormat::Sri))
}

#[test]
fn nix_hash_convert_cases() {
    let text = String::from_utf8(common::read_golden("convert.jsonl")).expect("utf8");
    let mut n_err = 0;
    let mut n = 0;
    for line in text.lines() {
        let c: serde_json::Value = serde_json::from_str(line).expect("json line");
        let args: Vec<String> = c["args"]
            .as_array()
            .expect("args")
            .iter()
            .map(|a| a.as_str().expect("str").to_owned())
            .collect();
        let got = convert(&args);
        if c["rc"].as_i64() == Some(0) {
            assert_eq!(
                got,
                Ok(c["stdout"].as_str().expect("stdout").to_owned()),
                "{args:?}"
            );
        } else {
            n_err += 1;
            assert_eq!(
                got,
                Err(c["error"].as_str().expect("error").to_owned()),
                "{args:?}"
            );
        }
        n += 1;
    }
    assert!(n > 30 && n_err >= 10, "{n} cases, {n_err} errors");
}
