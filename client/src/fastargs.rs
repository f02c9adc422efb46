//! A fast path for the most common command line, `flakectl [GLOBAL…] eval [OPTIONS…] [INSTALLABLE]`,
//! parsed without building clap's command tree.
//!
//! Why: clap builds the description of every subcommand and argument before it looks at the first
//! word, and for a client whose whole run is a couple of milliseconds that was a measurable share of
//! the wall time (about 0.3 ms of page faults and set-up per process). Invariant: this parser accepts
//! only a strict subset of what clap accepts, and for every command line it accepts it produces exactly
//! the `Cli` that clap would (a test checks this against clap on many command lines); anything else —
//! help, version, errors, other subcommands, `--opt=value`, `--`, attached short values, repeated or
//! conflicting options, values that are empty or start with `-`, non-UTF-8 arguments — returns `None`
//! and goes to clap, which parses it or reports the error exactly as before.

use std::ffi::OsString;
use std::path::PathBuf;

use crate::{Cli, Command, EvalOpts};

/// The `daemon_idle_exit` default, as declared on `Cli` (`default_value = "15m"`).
const DEFAULT_IDLE_EXIT: &str = "15m";

/// Parses `args` (including the program name) when it is a plain `eval` command line; `None` when
/// clap must decide.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Option<Cli> {
    let mut args = args.into_iter();
    args.next()?; // the program name
    let mut socket: Option<PathBuf> = None;
    let mut no_auto_start = false;
    let mut idle_exit: Option<String> = None;
    let mut seen_eval = false;
    let mut installable: Option<String> = None;
    let mut expr: Option<String> = None;
    let mut file: Option<String> = None;
    let mut json = false;
    let mut raw = false;
    let mut impure = false;
    let mut include: Vec<String> = Vec::new();
    let mut system: Option<String> = None;

    // An option's value: the next argument, which must be UTF-8, non-empty and not look like a flag.
    fn value(args: &mut impl Iterator<Item = OsString>) -> Option<String> {
        let v = args.next()?.into_string().ok()?;
        (!v.is_empty() && !v.starts_with('-')).then_some(v)
    }
    // Sets a single-valued option once; a repeat goes to clap (which rejects it).
    fn once<T>(slot: &mut Option<T>, v: T) -> Option<()> {
        if slot.is_some() {
            return None;
        }
        *slot = Some(v);
        Some(())
    }
    fn flag(slot: &mut bool) -> Option<()> {
        if *slot {
            return None;
        }
        *slot = true;
        Some(())
    }

    while let Some(arg) = args.next() {
        let arg = arg.into_string().ok()?;
        match arg.as_str() {
            "--socket" => once(&mut socket, PathBuf::from(value(&mut args)?))?,
            "--no-auto-start" => flag(&mut no_auto_start)?,
            "--daemon-idle-exit" => once(&mut idle_exit, value(&mut args)?)?,
            "eval" if !seen_eval => seen_eval = true,
            _ if !seen_eval => return None,
            "--expr" => once(&mut expr, value(&mut args)?)?,
            "--file" | "-f" => once(&mut file, value(&mut args)?)?,
            "--json" => flag(&mut json)?,
            "--raw" => flag(&mut raw)?,
            "--impure" => flag(&mut impure)?,
            "--include" | "-I" => include.push(value(&mut args)?),
            "--system" => once(&mut system, value(&mut args)?)?,
            a if !a.is_empty() && !a.starts_with('-') => once(&mut installable, arg)?,
            _ => return None,
        }
    }
    if !seen_eval || (expr.is_some() && file.is_some()) || (json && raw) {
        return None;
    }
    Some(Cli {
        socket,
        no_auto_start,
        daemon_idle_exit: idle_exit.unwrap_or_else(|| DEFAULT_IDLE_EXIT.to_string()),
        command: Command::Eval {
            installable,
            expr,
            file,
            json,
            raw,
            opts: EvalOpts {
                impure,
                include,
                system,
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn argv(line: &[&str]) -> Vec<OsString> {
        std::iter::once("flakectl")
            .chain(line.iter().copied())
            .map(OsString::from)
            .collect()
    }

    /// Every command line the fast path accepts is parsed exactly as clap parses it.
    #[test]
    fn agrees_with_clap() {
        let accepted: &[&[&str]] = &[
            &["eval", "--expr", "1 + 1"],
            &[
                "--socket",
                "/tmp/s",
                "--no-auto-start",
                "eval",
                "--expr",
                "1 + 1",
            ],
            &[
                "eval",
                "--expr",
                "1 + 1",
                "--socket",
                "/tmp/s",
                "--no-auto-start",
            ],
            &["eval", "--socket", "s", "--expr", "x", "--json", "a.b"],
            &["eval", ".#hello"],
            &["eval"],
            &["eval", "nixpkgs#hello", "--raw", "--impure"],
            &[
                "eval",
                "-f",
                "default.nix",
                "attr",
                "-I",
                "a=b",
                "--include",
                "c",
            ],
            &["eval", "--file", "f.nix", "--system", "aarch64-linux"],
            &["--daemon-idle-exit", "1m", "eval", "--expr", "{ }"],
            &["eval", "--expr", "eval", "eval"],
            &["eval", "--expr", "\"--\""],
        ];
        for line in accepted {
            let fast = parse(argv(line)).unwrap_or_else(|| panic!("not accepted: {line:?}"));
            let slow = Cli::try_parse_from(argv(line)).expect("clap accepts it");
            assert_eq!(format!("{fast:?}"), format!("{slow:?}"), "for {line:?}");
        }
    }

    /// Everything else is left to clap: its errors, help and other commands.
    #[test]
    fn leaves_the_rest_to_clap() {
        let refused: &[&[&str]] = &[
            &[],
            &["--help"],
            &["eval", "--help"],
            &["-h"],
            &["--version"],
            &["eval", "-V"],
            &["eval", "--expr"],
            &["eval", "--expr", "1", "--expr", "2"],
            &["eval", "--expr", "1", "--file", "f"],
            &["eval", "--json", "--raw", "--expr", "1"],
            &["eval", "--json", "--json", "--expr", "1"],
            &["eval", "a", "b"],
            &["eval", "--expr=1"],
            &["eval", "--expr", "-1"],
            &["eval", "--expr", ""],
            &["eval", "--", "x"],
            &["eval", "-fx.nix"],
            &["eval", "--bogus"],
            &["--socket", "s", "--socket", "t", "eval"],
            &["--no-auto-start", "--no-auto-start", "eval"],
            &["build", ".#x"],
            &["daemon", "status"],
            &["flake", "show"],
            &["--socket"],
            &["x", "eval"],
        ];
        for line in refused {
            assert!(parse(argv(line)).is_none(), "accepted: {line:?}");
        }
    }

    #[test]
    fn non_utf8_goes_to_clap() {
        use std::os::unix::ffi::OsStringExt;
        let mut args = argv(&["eval", "--expr"]);
        args.push(OsString::from_vec(vec![0xff, b'1']));
        assert!(parse(args).is_none());
    }
}
