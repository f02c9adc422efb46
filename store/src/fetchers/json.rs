//! JSON text exactly as Nix's JSON library prints it (`dump()` and `dump(2)`), so that lock
//! files and registries we write are byte-identical to the ones Nix writes.
//!
//! Invariant: object keys are printed in byte-wise sorted order (Nix stores objects in a sorted
//! map), whatever order the [`serde_json::Value`] holds them in.

use serde_json::Value;

/// `json.dump()`: no whitespace at all.
pub fn to_compact(v: &Value) -> String {
    let mut out = String::new();
    write(&mut out, v, None, 0);
    out
}

/// `json.dump(2)`: two-space indentation, `"key": value`, empty containers as `{}` / `[]`,
/// no trailing newline.
pub fn to_pretty(v: &Value) -> String {
    let mut out = String::new();
    write(&mut out, v, Some(2), 0);
    out
}

fn newline(out: &mut String, indent: Option<usize>, level: usize) {
    if let Some(step) = indent {
        out.push('\n');
        for _ in 0..step * level {
            out.push(' ');
        }
    }
}

fn write(out: &mut String, v: &Value, indent: Option<usize>, level: usize) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => write_string(out, s),
        Value::Array(a) => {
            if a.is_empty() {
                out.push_str("[]");
                return;
            }
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                newline(out, indent, level + 1);
                write(out, x, indent, level + 1);
            }
            newline(out, indent, level);
            out.push(']');
        }
        Value::Object(o) => {
            if o.is_empty() {
                out.push_str("{}");
                return;
            }
            let mut keys: Vec<&String> = o.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                newline(out, indent, level + 1);
                write_string(out, k);
                out.push(':');
                if indent.is_some() {
                    out.push(' ');
                }
                if let Some(x) = o.get(*k) {
                    write(out, x, indent, level + 1);
                }
            }
            newline(out, indent, level);
            out.push('}');
        }
    }
}

fn write_string(out: &mut String, s: &str) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pretty_matches_nlohmann_layout() {
        let v: Value = serde_json::from_str(r#"{"b":[1,"x"],"a":{},"c":[],"d":{"z":true}}"#)
            .expect("valid JSON literal");
        assert_eq!(
            to_pretty(&v),
            "{\n  \"a\": {},\n  \"b\": [\n    1,\n    \"x\"\n  ],\n  \"c\": [],\n  \"d\": {\n    \"z\": true\n  }\n}"
        );
        assert_eq!(
            to_compact(&v),
            r#"{"a":{},"b":[1,"x"],"c":[],"d":{"z":true}}"#
        );
    }

    #[test]
    fn escapes_control_characters() {
        let v = Value::String("a\"\\\n\u{1}é".into());
        assert_eq!(to_compact(&v), "\"a\\\"\\\\\\n\\u0001é\"");
    }
}
