//! Fuzz target: arbitrary text through parse + evaluate.
//!
//! Invariant checked: whatever the input, `evaluate` returns (a value or a diagnostic starting with
//! `error:`) — it never panics, aborts or overflows the stack. Hangs are caught by libFuzzer's
//! `-timeout`.
#![no_main]

use flaked_eval::api::{EvalRequest, EvalSettings, EvalSource, OutputFormat, evaluate};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if text.len() > 4096 {
        return;
    }
    for output in [OutputFormat::Nix, OutputFormat::Json] {
        let req = EvalRequest {
            source: EvalSource::Expr(text.to_string()),
            attr_path: None,
            output,
            settings: EvalSettings {
                cwd: std::env::temp_dir(),
                ..EvalSettings::default()
            },
        };
        if let Err(d) = evaluate(&req) {
            assert!(
                d.rendered.starts_with("error:"),
                "diagnostic not rendered as an error: {:?}",
                d.rendered
            );
        }
    }
});
