//! The daemon's configuration: built-in defaults, overridden by a TOML file, overridden by `FLAKED_*`
//! environment variables, overridden by command-line flags.
//!
//! Invariant: a [`Config`] is complete and validated once [`Config::resolve`] returns it; the rest of the
//! daemon never looks at the environment or the file again (requests carry the client's environment, the
//! daemon's own must not leak into answers).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// How log lines are written on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Plain,
    Json,
}

/// The complete, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen (ignored under socket activation, which passes the socket).
    pub socket: PathBuf,
    /// Permission bits of the socket file the daemon creates.
    pub socket_mode: u32,
    /// Exit after this long without requests and without connections in use. `None` = never.
    pub idle_exit: Option<Duration>,
    pub log_format: LogFormat,
    /// A `tracing` filter (`info`, `flaked_daemon=debug`, …).
    pub log_level: String,
    /// The largest request message accepted, in bytes.
    pub max_request_bytes: usize,
    /// The per-request bound on evaluation time.
    pub request_timeout: Duration,
    /// How long in-flight requests may run after a shutdown begins.
    pub shutdown_grace: Duration,
    /// How many evaluations may run at once; more wait for a slot.
    pub eval_workers: usize,
    /// The file the configuration was read from, if any.
    pub config_file: Option<PathBuf>,
    /// Where eval caches and the fetcher cache live.
    pub cache_dir: PathBuf,
    /// The physical root of the store (`/` = the real `/nix/store`); `None` = the evaluator's
    /// default (`$FLAKED_STORE_ROOT`, `/` for root, else under the user's data directory).
    pub store_root: Option<PathBuf>,
    /// The global flake registry, a local JSON file (`None` = none; it is never downloaded).
    pub flake_registry: Option<String>,
    /// Memory budget for warm flakes, in bytes.
    pub warm_memory: usize,
    /// Concurrent builds (Nix's `max-jobs`).
    pub max_jobs: usize,
    /// Host paths visible inside build sandboxes (Nix's `sandbox-paths`: `PATH` or
    /// `TARGET=SOURCE`, a trailing `?` for optional ones).
    pub sandbox_paths: Vec<String>,
    /// Whether a stopping daemon hands the inotify watches of unchanged flake trees to a keeper
    /// process for the next daemon (see [`crate::keeper`]).
    pub keep_watches: bool,
}

/// Command-line values; `None` = not given.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub config: Option<PathBuf>,
    pub socket: Option<PathBuf>,
    pub socket_mode: Option<String>,
    pub idle_exit: Option<String>,
    pub log_format: Option<String>,
    pub log_level: Option<String>,
    pub max_request_bytes: Option<String>,
    pub request_timeout: Option<String>,
    pub shutdown_grace: Option<String>,
    pub eval_workers: Option<String>,
    pub cache_dir: Option<PathBuf>,
    pub store_root: Option<PathBuf>,
    pub flake_registry: Option<String>,
    pub warm_memory: Option<String>,
    pub max_jobs: Option<String>,
    pub sandbox_paths: Option<String>,
}

/// The TOML file's shape. Every key is optional; unknown keys are errors (a typo must not be ignored).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileConfig {
    socket: Option<PathBuf>,
    socket_mode: Option<String>,
    idle_exit: Option<String>,
    log_format: Option<String>,
    log_level: Option<String>,
    max_request_bytes: Option<u64>,
    request_timeout: Option<String>,
    shutdown_grace: Option<String>,
    eval_workers: Option<u64>,
    cache_dir: Option<PathBuf>,
    store_root: Option<PathBuf>,
    flake_registry: Option<String>,
    warm_memory: Option<String>,
    max_jobs: Option<u64>,
    sandbox_paths: Option<Vec<String>>,
    keep_watches: Option<bool>,
}

/// A configuration error, naming the offending setting and value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration file '{path}': {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid configuration file '{path}': {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid value '{value}' for {setting} (from {origin}): {reason}")]
    Invalid {
        setting: &'static str,
        value: String,
        origin: String,
        reason: String,
    },
}

const DEFAULT_MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(600);
const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

impl Config {
    /// Resolves the configuration from `flags`, the environment `env` and the configuration file (the
    /// `--config` flag, else `$FLAKED_CONFIG`, else the default location, which may be absent).
    pub fn resolve(
        flags: &Overrides,
        env: &BTreeMap<String, String>,
    ) -> Result<Config, ConfigError> {
        let env_get = |k: &str| env.get(k).filter(|v| !v.is_empty()).cloned();
        let (file, config_file) = match flags
            .config
            .clone()
            .or_else(|| env_get("FLAKED_CONFIG").map(PathBuf::from))
        {
            Some(path) => (read_file(&path)?, Some(path)),
            None => {
                let path = default_config_path(env);
                if path.exists() {
                    (read_file(&path)?, Some(path))
                } else {
                    (FileConfig::default(), None)
                }
            }
        };
        let file_origin = config_file
            .as_ref()
            .map(|p| format!("configuration file '{}'", p.display()))
            .unwrap_or_default();

        // Picks the highest-precedence value of a setting along with where it came from.
        let pick = |flag: &Option<String>,
                    var: &str,
                    from_file: Option<String>|
         -> Option<(String, String)> {
            if let Some(v) = flag {
                return Some((v.clone(), "the command line".to_string()));
            }
            if let Some(v) = env_get(var) {
                return Some((v, format!("${var}")));
            }
            from_file.map(|v| (v, file_origin.clone()))
        };

        let socket = flags
            .socket
            .clone()
            .or_else(|| env_get("FLAKED_SOCKET").map(PathBuf::from))
            .or(file.socket)
            .unwrap_or_else(|| flaked_proto::default_socket_path_from(env));

        let socket_mode = match pick(&flags.socket_mode, "FLAKED_SOCKET_MODE", file.socket_mode) {
            Some((v, origin)) => {
                parse_mode(&v).map_err(|reason| invalid("socket-mode", &v, &origin, reason))?
            }
            None => 0o600,
        };
        let idle_exit = match pick(&flags.idle_exit, "FLAKED_IDLE_EXIT", file.idle_exit) {
            Some((v, origin)) if v == "never" || v == "0" => {
                let _ = origin;
                None
            }
            Some((v, origin)) => Some(
                parse_duration(&v).map_err(|reason| invalid("idle-exit", &v, &origin, reason))?,
            ),
            None => None,
        };
        let log_format = match pick(&flags.log_format, "FLAKED_LOG_FORMAT", file.log_format) {
            Some((v, origin)) => match v.as_str() {
                "plain" => LogFormat::Plain,
                "json" => LogFormat::Json,
                _ => {
                    return Err(invalid(
                        "log-format",
                        &v,
                        &origin,
                        "expected 'plain' or 'json'".into(),
                    ));
                }
            },
            None => LogFormat::Plain,
        };
        let log_level = pick(&flags.log_level, "FLAKED_LOG", file.log_level)
            .map(|(v, _)| v)
            .unwrap_or_else(|| "info".to_string());
        let max_request_bytes = match pick(
            &flags.max_request_bytes,
            "FLAKED_MAX_REQUEST_BYTES",
            file.max_request_bytes.map(|n| n.to_string()),
        ) {
            Some((v, origin)) => parse_size(&v)
                .map_err(|reason| invalid("max-request-bytes", &v, &origin, reason))?,
            None => DEFAULT_MAX_REQUEST_BYTES,
        };
        let request_timeout = match pick(
            &flags.request_timeout,
            "FLAKED_REQUEST_TIMEOUT",
            file.request_timeout,
        ) {
            Some((v, origin)) => parse_duration(&v)
                .map_err(|reason| invalid("request-timeout", &v, &origin, reason))?,
            None => DEFAULT_REQUEST_TIMEOUT,
        };
        let shutdown_grace = match pick(
            &flags.shutdown_grace,
            "FLAKED_SHUTDOWN_GRACE",
            file.shutdown_grace,
        ) {
            Some((v, origin)) => parse_duration(&v)
                .map_err(|reason| invalid("shutdown-grace", &v, &origin, reason))?,
            None => DEFAULT_SHUTDOWN_GRACE,
        };
        let eval_workers = match pick(
            &flags.eval_workers,
            "FLAKED_EVAL_WORKERS",
            file.eval_workers.map(|n| n.to_string()),
        ) {
            Some((v, origin)) => match v.parse::<usize>() {
                Ok(n) if (1..=1024).contains(&n) => n,
                _ => {
                    return Err(invalid(
                        "eval-workers",
                        &v,
                        &origin,
                        "expected a number from 1 to 1024".into(),
                    ));
                }
            },
            None => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
        };
        let cache_dir = flags
            .cache_dir
            .clone()
            .or_else(|| env_get("FLAKED_CACHE_DIR").map(PathBuf::from))
            .or(file.cache_dir)
            .unwrap_or_else(|| default_cache_dir(env));
        let store_root = flags
            .store_root
            .clone()
            .or_else(|| env_get("FLAKED_STORE_ROOT").map(PathBuf::from))
            .or(file.store_root);
        let flake_registry = pick(
            &flags.flake_registry,
            "FLAKED_FLAKE_REGISTRY",
            file.flake_registry,
        )
        .map(|(v, _)| v);
        let warm_memory = match pick(&flags.warm_memory, "FLAKED_WARM_MEMORY", file.warm_memory) {
            Some((v, origin)) => {
                parse_size(&v).map_err(|reason| invalid("warm-memory", &v, &origin, reason))?
            }
            None => default_warm_memory(),
        };
        let max_jobs = match pick(
            &flags.max_jobs,
            "FLAKED_MAX_JOBS",
            file.max_jobs.map(|n| n.to_string()),
        ) {
            Some((v, origin)) => match v.parse::<usize>() {
                Ok(n) if (1..=1024).contains(&n) => n,
                _ => {
                    return Err(invalid(
                        "max-jobs",
                        &v,
                        &origin,
                        "expected a number from 1 to 1024".into(),
                    ));
                }
            },
            None => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
        };
        let sandbox_paths = match pick(
            &flags.sandbox_paths,
            "FLAKED_SANDBOX_PATHS",
            file.sandbox_paths.map(|v| v.join(" ")),
        ) {
            Some((v, _)) => v.split_whitespace().map(str::to_string).collect(),
            None => Vec::new(),
        };
        let keep_watches = match pick(
            &None,
            "FLAKED_KEEP_WATCHES",
            file.keep_watches.map(|b| b.to_string()),
        ) {
            Some((v, origin)) => match v.as_str() {
                "true" | "1" | "yes" => true,
                "false" | "0" | "no" => false,
                _ => {
                    return Err(invalid(
                        "keep-watches",
                        &v,
                        &origin,
                        "expected true or false".into(),
                    ));
                }
            },
            None => true,
        };
        if request_timeout.is_zero() {
            return Err(invalid(
                "request-timeout",
                "0",
                "the configuration",
                "must be positive".into(),
            ));
        }
        Ok(Config {
            socket,
            socket_mode,
            idle_exit,
            log_format,
            log_level,
            max_request_bytes,
            request_timeout,
            shutdown_grace,
            eval_workers,
            config_file,
            cache_dir,
            store_root,
            flake_registry,
            warm_memory,
            max_jobs,
            sandbox_paths,
            keep_watches,
        })
    }
}

fn invalid(setting: &'static str, value: &str, origin: &str, reason: String) -> ConfigError {
    ConfigError::Invalid {
        setting,
        value: value.to_string(),
        origin: origin.to_string(),
        reason,
    }
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.to_string().trim_end().to_string(),
    })
}

/// `$XDG_CONFIG_HOME/flaked/config.toml`, `$HOME/.config/flaked/config.toml`, or for root
/// `/etc/flaked/config.toml`.
pub fn default_config_path(env: &BTreeMap<String, String>) -> PathBuf {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return PathBuf::from("/etc/flaked/config.toml");
    }
    let get = |k: &str| env.get(k).filter(|v| !v.is_empty());
    if let Some(dir) = get("XDG_CONFIG_HOME") {
        return Path::new(dir).join("flaked/config.toml");
    }
    if let Some(home) = get("HOME") {
        return Path::new(home).join(".config/flaked/config.toml");
    }
    PathBuf::from("/etc/flaked/config.toml")
}

/// `$XDG_CACHE_HOME/flaked`, `$HOME/.cache/flaked`, or for root `/var/cache/flaked`.
pub fn default_cache_dir(env: &BTreeMap<String, String>) -> PathBuf {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return PathBuf::from("/var/cache/flaked");
    }
    let get = |k: &str| env.get(k).filter(|v| !v.is_empty());
    if let Some(dir) = get("XDG_CACHE_HOME") {
        return Path::new(dir).join("flaked");
    }
    if let Some(home) = get("HOME") {
        return Path::new(home).join(".cache/flaked");
    }
    std::env::temp_dir().join("flaked-cache")
}

/// A quarter of physical memory (1 GiB when it cannot be read).
fn default_warm_memory() -> usize {
    // SAFETY: sysconf has no preconditions.
    let (pages, page) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    if pages > 0 && page > 0 {
        (pages as usize).saturating_mul(page as usize) / 4
    } else {
        1 << 30
    }
}

/// Parses `500ms`, `30s`, `5m`, `2h`, `1d` or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| "expected a duration such as 500ms, 30s, 5m or 2h".to_string())?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        _ => return Err(format!("unknown unit '{unit}' (use ms, s, m, h or d)")),
    };
    if !secs.is_finite() || !(0.0..=1e9).contains(&secs) {
        return Err("duration out of range".to_string());
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Parses a byte size: a number with an optional `K`, `M` or `G` suffix (powers of 1024).
pub fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, 'K' | 'k')) => (&s[..i], 1024),
        Some((i, 'M' | 'm')) => (&s[..i], 1024 * 1024),
        Some((i, 'G' | 'g')) => (&s[..i], 1024 * 1024 * 1024),
        _ => (s, 1),
    };
    let n: usize = num
        .parse()
        .map_err(|_| "expected a size such as 4M or 65536".to_string())?;
    n.checked_mul(mult)
        .filter(|&n| n >= 1024)
        .ok_or_else(|| "size out of range (at least 1024 bytes)".to_string())
}

/// Parses an octal permission mode such as `0600` or `660`.
pub fn parse_mode(s: &str) -> Result<u32, String> {
    let digits = s.trim().trim_start_matches("0o");
    u32::from_str_radix(digits, 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| "expected octal permission bits such as 0600".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn sizes_and_modes() {
        assert_eq!(parse_size("4M"), Ok(4 * 1024 * 1024));
        assert_eq!(parse_size("65536"), Ok(65536));
        assert!(parse_size("12").is_err());
        assert!(parse_size("lots").is_err());
        assert_eq!(parse_mode("0600"), Ok(0o600));
        assert_eq!(parse_mode("666"), Ok(0o666));
        assert!(parse_mode("0800").is_err());
        assert!(parse_mode("7777").is_err());
    }

    #[test]
    fn precedence_flag_env_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "idle-exit = \"1h\"\nsocket-mode = \"0660\"\neval-workers = 3\nlog-format = \"json\"\n",
        )
        .expect("write");
        let e = env(&[
            ("FLAKED_IDLE_EXIT", "10m"),
            ("FLAKED_SOCKET", "/tmp/x.sock"),
        ]);
        let flags = Overrides {
            config: Some(file.clone()),
            eval_workers: Some("5".into()),
            ..Default::default()
        };
        let c = Config::resolve(&flags, &e).expect("valid");
        assert_eq!(
            c.idle_exit,
            Some(Duration::from_secs(600)),
            "env beats file"
        );
        assert_eq!(c.socket_mode, 0o660, "file beats default");
        assert_eq!(c.eval_workers, 5, "flag beats file");
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.socket, PathBuf::from("/tmp/x.sock"));
        assert_eq!(c.config_file, Some(file));
        assert!(
            c.keep_watches,
            "watches are kept across restarts by default"
        );
        let c = Config::resolve(
            &Overrides::default(),
            &env(&[("FLAKED_KEEP_WATCHES", "false")]),
        )
        .expect("valid");
        assert!(!c.keep_watches);
    }

    #[test]
    fn bad_values_name_their_origin() {
        let e = env(&[("FLAKED_IDLE_EXIT", "soon")]);
        let err = Config::resolve(&Overrides::default(), &e).expect_err("invalid");
        let msg = err.to_string();
        assert!(
            msg.contains("idle-exit") && msg.contains("soon") && msg.contains("$FLAKED_IDLE_EXIT"),
            "{msg}"
        );

        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "idle-exitt = \"1h\"\n").expect("write");
        let flags = Overrides {
            config: Some(file),
            ..Default::default()
        };
        let msg = Config::resolve(&flags, &BTreeMap::new())
            .expect_err("unknown key")
            .to_string();
        assert!(msg.contains("idle-exitt"), "{msg}");

        let flags = Overrides {
            config: Some(dir.path().join("missing.toml")),
            ..Default::default()
        };
        let msg = Config::resolve(&flags, &BTreeMap::new())
            .expect_err("missing file")
            .to_string();
        assert!(msg.contains("missing.toml"), "{msg}");
    }
}
