//! The builder's environment, exactly as Nix 2.26 sets it up (`initEnv`, `initTmpDir`,
//! `writeStructuredAttrs` in `local-derivation-goal.cc`).
//!
//! Order of precedence (later wins): `PATH=/path-not-set`, `HOME=/homeless-shelter`,
//! `NIX_STORE`, `NIX_BUILD_CORES`; then the derivation's own variables (not in
//! structured-attributes mode; `passAsFile` ones become `<name>Path` files `.attr-<hash>`);
//! then `NIX_BUILD_TOP`/`TMPDIR`/`TEMPDIR`/`TMP`/`TEMP`/`PWD` (the build directory),
//! `NIX_OUTPUT_CHECKED=1` and `impureEnvVars` for fixed-output derivations, `NIX_LOG_FD=2`,
//! `TERM=xterm-256color`; in structured mode `NIX_ATTRS_SH_FILE`/`NIX_ATTRS_JSON_FILE`.
//! Every `name=value` string finally has output placeholders (`/<nix32 hash>`) replaced by the
//! output paths. Invariant: this module decides nothing Nix does not; it only writes files
//! into the build directory it is given.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use crate::derivation::Derivation;
use crate::hash::Hash;
use crate::nixbase32;

/// Nix's `hashPlaceholder`: `/` + nix32(sha256("nix-output:" + output)).
pub fn hash_placeholder(output: &str) -> String {
    let h = Hash::sha256(format!("nix-output:{output}").as_bytes());
    format!("/{}", nixbase32::encode(h.as_bytes()))
}

/// Nix's `rewriteStrings`: each rewrite in key order, all occurrences.
pub fn rewrite_strings(s: &str, rewrites: &BTreeMap<String, String>) -> String {
    let mut s = s.to_owned();
    for (from, to) in rewrites {
        if !from.is_empty() && s.contains(from.as_str()) {
            s = s.replace(from.as_str(), to);
        }
    }
    s
}

/// Problems with a derivation's attributes found while preparing its environment.
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    #[error("cannot process __json attribute of '{drv}': {reason}")]
    BadJson { drv: String, reason: String },
    #[error("attribute '{attr}' of derivation '{drv}' must be {what}")]
    BadAttr {
        attr: String,
        drv: String,
        what: &'static str,
    },
    #[error("writing '{path}': {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// A derivation's attributes: the environment, or the `__json` object in structured mode
/// (Nix's `ParsedDerivation`).
pub struct ParsedAttrs<'a> {
    pub drv: &'a Derivation,
    pub drv_name: String,
    pub structured: Option<serde_json::Map<String, Value>>,
}

impl<'a> ParsedAttrs<'a> {
    pub fn new(drv: &'a Derivation, drv_path: &str) -> Result<Self, EnvError> {
        let drv_name = drv_path.rsplit('/').next().unwrap_or(drv_path).to_owned();
        let structured = match drv.env.get("__json") {
            None => None,
            Some(j) => match serde_json::from_str::<Value>(j) {
                Ok(Value::Object(m)) => Some(m),
                Ok(_) => {
                    return Err(EnvError::BadJson {
                        drv: drv_name,
                        reason: "not an object".into(),
                    });
                }
                Err(e) => {
                    return Err(EnvError::BadJson {
                        drv: drv_name,
                        reason: e.to_string(),
                    });
                }
            },
        };
        Ok(ParsedAttrs {
            drv,
            drv_name,
            structured,
        })
    }

    /// `getStringsAttr`: a JSON list of strings, or the whitespace-split env value.
    pub fn strings(&self, name: &str) -> Result<Option<Vec<String>>, EnvError> {
        match &self.structured {
            Some(m) => match m.get(name) {
                None => Ok(None),
                Some(Value::Array(a)) => a
                    .iter()
                    .map(|v| match v {
                        Value::String(s) => Ok(s.clone()),
                        _ => Err(self.bad(name, "a list of strings")),
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map(Some),
                Some(_) => Err(self.bad(name, "a list of strings")),
            },
            None => Ok(self
                .drv
                .env
                .get(name)
                .map(|v| v.split_whitespace().map(str::to_owned).collect())),
        }
    }

    /// `getBoolAttr`.
    pub fn bool(&self, name: &str, def: bool) -> Result<bool, EnvError> {
        match &self.structured {
            Some(m) => match m.get(name) {
                None => Ok(def),
                Some(Value::Bool(b)) => Ok(*b),
                Some(_) => Err(self.bad(name, "a Boolean")),
            },
            None => Ok(self.drv.env.get(name).map(|v| v == "1").unwrap_or(def)),
        }
    }

    fn bad(&self, attr: &str, what: &'static str) -> EnvError {
        EnvError::BadAttr {
            attr: attr.to_owned(),
            drv: self.drv_name.clone(),
            what,
        }
    }

    /// `requiredSystemFeatures`.
    pub fn required_system_features(&self) -> Result<Vec<String>, EnvError> {
        let mut v = self.strings("requiredSystemFeatures")?.unwrap_or_default();
        v.sort();
        v.dedup();
        Ok(v)
    }
}

/// What the environment depends on besides the derivation.
pub struct EnvContext<'a> {
    pub store_dir: &'a str,
    pub cores: u32,
    /// The build directory as the builder sees it.
    pub build_dir_inner: &'a str,
    /// The same directory on the host, where files are written.
    pub build_dir_host: &'a Path,
    /// Output name → printed output path (placeholders are rewritten to these).
    pub outputs: &'a BTreeMap<String, String>,
    /// Fixed-output derivation (gets `NIX_OUTPUT_CHECKED` and `impureEnvVars`).
    pub fixed_output: bool,
    /// Where `impureEnvVars` values come from (the daemon's, or the client's, environment).
    pub impure_env: &'a dyn Fn(&str) -> Option<String>,
}

fn write(dir: &Path, name: &str, data: &[u8]) -> Result<(), EnvError> {
    let p = dir.join(name);
    std::fs::write(&p, data).map_err(|source| EnvError::Io {
        path: p.display().to_string(),
        source,
    })
}

/// Compute the environment and write `passAsFile`/structured-attrs files into the build
/// directory. Returns the final `name=value` pairs (sorted by name).
pub fn prepare(
    attrs: &ParsedAttrs<'_>,
    cx: &EnvContext<'_>,
) -> Result<Vec<(String, String)>, EnvError> {
    let drv = attrs.drv;
    let mut rewrites = BTreeMap::new();
    for (name, path) in cx.outputs {
        rewrites.insert(hash_placeholder(name), path.clone());
    }
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    env.insert("PATH".into(), "/path-not-set".into());
    env.insert("HOME".into(), "/homeless-shelter".into());
    env.insert("NIX_STORE".into(), cx.store_dir.to_owned());
    env.insert("NIX_BUILD_CORES".into(), cx.cores.to_string());
    if attrs.structured.is_none() {
        let pass_as_file: std::collections::BTreeSet<&str> = drv
            .env
            .get("passAsFile")
            .map(|v| v.split_whitespace().collect())
            .unwrap_or_default();
        for (k, v) in &drv.env {
            if pass_as_file.contains(k.as_str()) {
                let h = Hash::sha256(k.as_bytes());
                let file = format!(".attr-{}", nixbase32::encode(h.as_bytes()));
                write(
                    cx.build_dir_host,
                    &file,
                    rewrite_strings(v, &rewrites).as_bytes(),
                )?;
                env.insert(format!("{k}Path"), format!("{}/{file}", cx.build_dir_inner));
            } else {
                env.insert(k.clone(), v.clone());
            }
        }
    }
    for k in ["NIX_BUILD_TOP", "TMPDIR", "TEMPDIR", "TMP", "TEMP", "PWD"] {
        env.insert(k.into(), cx.build_dir_inner.to_owned());
    }
    if cx.fixed_output {
        env.insert("NIX_OUTPUT_CHECKED".into(), "1".into());
        for name in attrs.strings("impureEnvVars")?.unwrap_or_default() {
            let v = (cx.impure_env)(&name).unwrap_or_default();
            env.insert(name, v);
        }
    }
    env.insert("NIX_LOG_FD".into(), "2".into());
    env.insert("TERM".into(), "xterm-256color".into());

    if let Some(structured) = &attrs.structured {
        let mut json = structured.clone();
        let mut outs = serde_json::Map::new();
        for name in drv.outputs.keys() {
            let ph = hash_placeholder(name);
            outs.insert(name.clone(), Value::String(rewrite_strings(&ph, &rewrites)));
        }
        json.insert("outputs".into(), Value::Object(outs));
        let json = Value::Object(json);
        let sh = structured_attrs_shell(&json);
        write(
            cx.build_dir_host,
            ".attrs.sh",
            rewrite_strings(&sh, &rewrites).as_bytes(),
        )?;
        env.insert(
            "NIX_ATTRS_SH_FILE".into(),
            format!("{}/.attrs.sh", cx.build_dir_inner),
        );
        let mut dumped = String::new();
        dump_json(&json, &mut dumped);
        write(
            cx.build_dir_host,
            ".attrs.json",
            rewrite_strings(&dumped, &rewrites).as_bytes(),
        )?;
        env.insert(
            "NIX_ATTRS_JSON_FILE".into(),
            format!("{}/.attrs.json", cx.build_dir_inner),
        );
    }

    Ok(env
        .into_iter()
        .map(|(k, v)| {
            // Nix rewrites the whole "name=value" string.
            let kv = rewrite_strings(&format!("{k}={v}"), &rewrites);
            match kv.split_once('=') {
                Some((a, b)) => (a.to_owned(), b.to_owned()),
                None => (kv, String::new()),
            }
        })
        .collect())
}

/// Nix's `shellEscape`.
pub fn shell_escape(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn is_sh_var_name(k: &str) -> bool {
    let mut chars = k.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn sorted(m: &serde_json::Map<String, Value>) -> Vec<(&String, &Value)> {
    let mut v: Vec<_> = m.iter().collect();
    v.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    v
}

fn simple_sh(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(shell_escape(s)),
        Value::Number(n) => {
            let f = n.as_f64()? as f32;
            if f.ceil() == f {
                // nlohmann's get<int>(): a C cast of the stored number.
                let i = if let Some(i) = n.as_i64() {
                    i as i32
                } else if let Some(u) = n.as_u64() {
                    u as i32
                } else {
                    n.as_f64()? as i32
                };
                Some(i.to_string())
            } else {
                None
            }
        }
        Value::Null => Some("''".into()),
        Value::Bool(b) => Some(if *b { "1".into() } else { String::new() }),
        _ => None,
    }
}

/// Nix's `writeStructuredAttrsShell`: bash `declare`s for the representable attributes.
pub fn structured_attrs_shell(json: &Value) -> String {
    let mut out = String::new();
    let Value::Object(m) = json else {
        return out;
    };
    for (key, value) in sorted(m) {
        if !is_sh_var_name(key) {
            continue;
        }
        if let Some(s) = simple_sh(value) {
            out.push_str(&format!("declare {key}={s}\n"));
        } else if let Value::Array(a) = value {
            let mut s2 = String::new();
            let mut good = true;
            for v in a {
                match simple_sh(v) {
                    Some(s) => {
                        s2.push_str(&s);
                        s2.push(' ');
                    }
                    None => {
                        good = false;
                        break;
                    }
                }
            }
            if good {
                out.push_str(&format!("declare -a {key}=({s2})\n"));
            }
        } else if let Value::Object(o) = value {
            let mut s2 = String::new();
            let mut good = true;
            for (k2, v2) in sorted(o) {
                match simple_sh(v2) {
                    Some(s) => s2.push_str(&format!("[{}]={s} ", shell_escape(k2))),
                    None => {
                        good = false;
                        break;
                    }
                }
            }
            if good {
                out.push_str(&format!("declare -A {key}=({s2})\n"));
            }
        }
    }
    out
}

/// `nlohmann::json::dump()` (compact, keys sorted, UTF-8 kept, control characters escaped).
pub fn dump_json(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                out.push_str(&i.to_string())
            } else if let Some(u) = n.as_u64() {
                out.push_str(&u.to_string())
            } else if let Some(f) = n.as_f64() {
                out.push_str(&nlohmann_double(f))
            }
        }
        Value::String(s) => dump_string(s, out),
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                dump_json(x, out);
            }
            out.push(']');
        }
        Value::Object(m) => {
            out.push('{');
            for (i, (k, x)) in sorted(m).into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                dump_string(k, out);
                out.push(':');
                dump_json(x, out);
            }
            out.push('}');
        }
    }
}

fn dump_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// nlohmann's double formatting: shortest round-trip digits; plain notation for decimal
/// exponents in (-4, 15], otherwise `d.ddde+XX`.
fn nlohmann_double(f: f64) -> String {
    if !f.is_finite() {
        return "null".into();
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0.0" } else { "0.0" }.into();
    }
    let sci = format!("{:e}", f.abs());
    let (mant, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mant.chars().filter(|c| c.is_ascii_digit()).collect();
    let k = digits.len() as i32;
    let n = exp + 1; // position of the decimal point
    let mut s = String::new();
    if f < 0.0 {
        s.push('-');
    }
    if k <= n && n <= 15 {
        s.push_str(&digits);
        s.push_str(&"0".repeat((n - k) as usize));
        s.push_str(".0");
    } else if 0 < n && n <= 15 {
        s.push_str(&digits[..n as usize]);
        s.push('.');
        s.push_str(&digits[n as usize..]);
    } else if -4 < n && n <= 0 {
        s.push_str("0.");
        s.push_str(&"0".repeat((-n) as usize));
        s.push_str(&digits);
    } else {
        s.push_str(&digits[..1]);
        if k > 1 {
            s.push('.');
            s.push_str(&digits[1..]);
        }
        let e = n - 1;
        s.push('e');
        s.push(if e < 0 { '-' } else { '+' });
        s.push_str(&format!("{:02}", e.abs()));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholder_matches_nix() {
        // nix-instantiate --eval -E 'builtins.placeholder "out"'
        assert_eq!(
            hash_placeholder("out"),
            "/1rz4g4znpzjwh1xymhjpm42vipw92pr73vdgl6xs1hycac8kf2n9"
        );
    }

    #[test]
    fn doubles_like_nlohmann() {
        assert_eq!(nlohmann_double(1.5), "1.5");
        assert_eq!(nlohmann_double(100.0), "100.0");
        assert_eq!(nlohmann_double(1e20), "1e+20");
        assert_eq!(nlohmann_double(0.001), "0.001");
        assert_eq!(nlohmann_double(1.5e-7), "1.5e-07");
    }

    #[test]
    fn shell_declares() {
        let v: Value = serde_json::from_str(
            r#"{"b":[1,"x"],"a":"it's","c":{"k":true},"d":[[1]],"e-f":1,"g":null,"h":2.5}"#,
        )
        .unwrap();
        assert_eq!(
            structured_attrs_shell(&v),
            "declare a='it'\\''s'\ndeclare -a b=(1 'x' )\ndeclare -A c=(['k']=1 )\ndeclare g=''\n"
        );
    }
}
