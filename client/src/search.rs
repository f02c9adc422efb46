//! `flakectl search`: sends one `Search` request and prints the streamed matches as `nix search`
//! does (highlighted text, or one JSON object sorted by attribute path).
//!
//! It lives apart from `main.rs` so the search command's options and output can change without
//! touching the other commands. Invariant: it never matches anything itself; the daemon decides
//! what matches and renders each package's lines, and this module only lays them out (the empty
//! line between two packages, the JSON object, the no-result error).

use std::process::ExitCode;

use clap::Args;
use flaked_proto::v1 as pb;

use crate::{CliError, EvalOpts, autostart, context, print_stderr_lines, write_stdout};

/// `flakectl search` options.
#[derive(Debug, Args)]
pub struct SearchArgs {
    installable: String,
    regexes: Vec<String>,
    /// Hide packages matching this regex.
    #[arg(short = 'e', long, value_name = "REGEX")]
    exclude: Vec<String>,
    /// Print the matches as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    opts: EvalOpts,
}

/// Runs `flakectl search`.
pub async fn run(args: SearchArgs, target: &autostart::Target) -> Result<ExitCode, CliError> {
    let SearchArgs {
        installable,
        regexes,
        exclude,
        json,
        opts,
    } = args;
    let req = pb::SearchRequest {
        context: Some(context(&opts)?),
        installable,
        regexes,
        exclude,
    };
    let mut client = autostart::connect(target).await?;
    let mut stream = client.search(req).await?.into_inner();
    let mut results = 0usize;
    // nlohmann's objects (Nix) are sorted by key.
    let mut json_out = std::collections::BTreeMap::new();
    let mut text = String::new();
    while let Some(mut m) = stream.message().await? {
        print_stderr_lines(&m.stderr);
        if let Some(d) = m.error {
            return Err(CliError::rendered(d.rendered));
        }
        let more = std::mem::take(&mut m.more);
        // A message without `rendered` only carried warnings.
        for m in std::iter::once(m).chain(more) {
            if m.rendered.is_empty() {
                continue;
            }
            results += 1;
            if json {
                json_out.insert(
                    m.attr_path,
                    serde_json::json!({
                        "description": m.description,
                        "pname": m.pname,
                        "version": m.version,
                    }),
                );
            } else {
                // Nix prints an empty line between two packages, not after the last one.
                if results > 1 {
                    text.push('\n');
                }
                text.push_str(&m.rendered);
            }
        }
        // Printed as it comes, one write per stream message.
        if !text.is_empty() {
            write_stdout(text.as_bytes())?;
            text.clear();
        }
    }
    if json {
        text = serde_json::to_string(&json_out)
            .map_err(|e| CliError::msg(format!("cannot print JSON: {e}")))?;
        text.push('\n');
        write_stdout(text.as_bytes())?;
    } else if results == 0 {
        return Err(CliError::msg("no results for the given search term(s)!"));
    }
    Ok(ExitCode::SUCCESS)
}
