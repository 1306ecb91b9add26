//! The agent's configuration: a TOML file, then `MAST_*` environment variables, then command-line flags,
//! each overriding the one before, parsed into typed values before any socket or state file is opened.
//!
//! Every key has one spelling per source: `poll_interval` in the file, `MAST_POLL_INTERVAL` in the
//! environment, `--poll-interval` on the command line. A bad value is a [`ConfigError`] that names the key
//! and where the value came from; `main` exits with 64 (`EX_USAGE`) on it. Unknown keys in the file are
//! refused too: a misspelt `change_window` must not silently mean "always open".
//!
//! The initial trusted root is read and checked here (its own signatures must meet its root threshold),
//! so that a site never starts with a root it cannot use.

mod values;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mast_mirror::MirrorSpec;
use mast_protocol::release::Channel;
use mast_protocol::tuf::TrustedMetadata;

use crate::schedule::{ChangeWindow, ChangeWindows, Jitter, PollPolicy};
use crate::telemetry::LogFormat;

pub use values::{Applier, ClusterId, KeepReleases, parse_duration};

/// Where the agent looks for its config file when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/mast/agent.toml";

/// The state database when `state` is not set: systemd's `StateDirectory=mast`.
pub const DEFAULT_STATE_PATH: &str = "/var/lib/mast/state.db";

/// Every key, in the order `--help` and the docs list them.
pub const KEYS: [&str; 18] = [
    "cluster_id",
    "channel",
    "mirrors",
    "root",
    "state",
    "applier",
    "poll_interval",
    "jitter",
    "backoff_base",
    "backoff_cap",
    "change_windows",
    "drift_interval",
    "stale_after",
    "kube_timeout",
    "ca_bundle",
    "keep_releases",
    "listen",
    "log_format",
];

/// Keys whose value is a list: an array in the file, comma-separated in the environment, a repeated flag.
const LIST_KEYS: [&str; 2] = ["mirrors", "change_windows"];

/// A config value that could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read or is not TOML.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A key the agent does not know.
    #[error("{origin}: unknown key {key:?} (known keys: {known})")]
    UnknownKey {
        /// Where it was.
        origin: String,
        /// The key as written.
        key: String,
        /// The keys the agent knows.
        known: String,
    },
    /// A required key has no value from any source.
    #[error("{key} is required: set it in the config file, as {env} or with --{flag}")]
    Missing {
        /// The key.
        key: &'static str,
        /// Its environment variable.
        env: String,
        /// Its flag.
        flag: String,
    },
    /// A value that does not parse or is out of range.
    #[error("{origin}: {key}: {reason}")]
    Invalid {
        /// Where the value came from.
        origin: String,
        /// The key.
        key: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// The agent's settings, all parsed.
#[derive(Debug, Clone)]
pub struct Config {
    /// The site's identity; fixes its rollout seed.
    pub cluster_id: ClusterId,
    /// The channel the site follows.
    pub channel: Channel,
    /// Mirrors in the order they are tried.
    pub mirrors: Vec<MirrorSpec>,
    /// The initial trusted root: used only until the state database holds one.
    pub root: TrustedRoot,
    /// The state database file.
    pub state: PathBuf,
    /// Where releases are applied.
    pub applier: Applier,
    /// Poll interval, jitter and backoff.
    pub poll: PollPolicy,
    /// When releases may be applied (downloads happen any time).
    pub windows: ChangeWindows,
    /// How often `run` compares the live target with the running release.
    pub drift_interval: Duration,
    /// How long without a successful refresh before `status` and `/metrics` call the site stale
    /// (`3 × poll_interval` unless set).
    pub stale_after: Duration,
    /// How long one request to the Kubernetes API server may take to connect, and then between reads
    /// or writes, before it fails as the server being unavailable (the `kube` applier only).
    pub kube_timeout: Duration,
    /// Extra CA certificates for HTTPS and OCI mirrors, besides the built-in roots.
    pub ca_bundle: Option<PathBuf>,
    /// How many releases' chunks to keep.
    pub keep_releases: KeepReleases,
    /// Where the admin endpoints listen (`/metrics`, `/healthz`, `/readyz`, `/status`), if anywhere.
    pub listen: Option<SocketAddr>,
    /// Log output format.
    pub log_format: LogFormat,
}

/// The configured root: its file and bytes, checked to be a root signed by its own threshold.
#[derive(Debug, Clone)]
pub struct TrustedRoot {
    /// The file it was read from.
    pub path: PathBuf,
    /// Its bytes.
    pub bytes: Vec<u8>,
    /// Its version.
    pub version: u64,
}

/// The raw values from each source, before parsing.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    file: Option<(PathBuf, BTreeMap<String, Vec<String>>)>,
    env: BTreeMap<&'static str, String>,
    flags: BTreeMap<&'static str, Vec<String>>,
}

/// Where one value came from, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Origin {
    File(PathBuf),
    Env(String),
    Flag(String),
}

/// One key's raw value and origin.
struct Raw<'a> {
    values: Vec<&'a str>,
    origin: Origin,
}

impl Sources {
    /// Reads the config file at `path`. `required` is false for the default path, which may be absent.
    pub fn with_file(mut self, path: &Path, required: bool) -> Result<Self, ConfigError> {
        let file_error = |reason: String| ConfigError::File {
            path: path.to_path_buf(),
            reason,
        };
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => return Ok(self),
            Err(e) => return Err(file_error(e.to_string())),
        };
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| file_error(format!("not valid TOML: {}", e.message())))?;
        let origin = Origin::File(path.to_path_buf());
        let mut values = BTreeMap::new();
        for (key, value) in table {
            let Some(known) = known_key(&key) else {
                return Err(ConfigError::UnknownKey {
                    origin: origin.to_string(),
                    key,
                    known: KEYS.join(", "),
                });
            };
            let invalid = |reason: &str| ConfigError::Invalid {
                origin: origin.to_string(),
                key: known,
                reason: reason.to_owned(),
            };
            let list = match value {
                toml::Value::Array(items) if LIST_KEYS.contains(&known) => items
                    .into_iter()
                    .map(|item| scalar(item).ok_or_else(|| invalid("list items must be strings")))
                    .collect::<Result<Vec<_>, _>>()?,
                toml::Value::Array(_) => return Err(invalid("expected one value, not a list")),
                other if LIST_KEYS.contains(&known) => {
                    return Err(invalid(&format!(
                        "expected a list, as {known} = [\"…\"], not a {}",
                        other.type_str()
                    )));
                }
                other => {
                    vec![scalar(other).ok_or_else(|| invalid("expected a string or a number"))?]
                }
            };
            values.insert(key, list);
        }
        self.file = Some((path.to_path_buf(), values));
        Ok(self)
    }

    /// Takes the `MAST_*` variables from `vars` (pass `std::env::vars()`); others are ignored. Empty
    /// values count as unset, as a blank line in an environment file means.
    pub fn with_env(mut self, vars: impl IntoIterator<Item = (String, String)>) -> Self {
        for (name, value) in vars {
            let Some(key) = name
                .strip_prefix("MAST_")
                .and_then(|k| known_key(&k.to_ascii_lowercase()))
            else {
                continue;
            };
            if env_name(key) == name && !value.is_empty() {
                self.env.insert(key, value);
            }
        }
        self
    }

    /// Sets `key` from a command-line flag (several values for list keys).
    pub fn with_flag(mut self, key: &'static str, values: Vec<String>) -> Self {
        if !values.is_empty() {
            self.flags.insert(key, values);
        }
        self
    }

    /// The directory a relative path in the config file is relative to.
    fn file_dir(&self) -> Option<&Path> {
        self.file.as_ref().and_then(|(path, _)| path.parent())
    }

    fn raw(&self, key: &'static str) -> Option<Raw<'_>> {
        if let Some(values) = self.flags.get(key) {
            return Some(Raw {
                values: values.iter().map(String::as_str).collect(),
                origin: Origin::Flag(flag_name(key)),
            });
        }
        if let Some(value) = self.env.get(key) {
            let values = if LIST_KEYS.contains(&key) {
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|v| !v.is_empty())
                    .collect()
            } else {
                vec![value.as_str()]
            };
            return Some(Raw {
                values,
                origin: Origin::Env(env_name(key)),
            });
        }
        let (path, table) = self.file.as_ref()?;
        let values = table.get(key)?;
        Some(Raw {
            values: values.iter().map(String::as_str).collect(),
            origin: Origin::File(path.clone()),
        })
    }
}

impl Config {
    /// Parses every key from `sources`, reading the root file it names.
    pub fn load(sources: &Sources) -> Result<Self, ConfigError> {
        let cluster_id = required(sources, "cluster_id", |v, _| ClusterId::new(v))?;
        let channel = required(sources, "channel", |v, _| {
            v.parse::<Channel>().map_err(|e| e.to_string())
        })?;
        let mirrors = list(sources, "mirrors", |v| {
            v.parse::<MirrorSpec>().map_err(|e| e.to_string())
        })?;
        if mirrors.is_empty() {
            return Err(missing("mirrors"));
        }
        let root = required(sources, "root", read_root)?;
        let state = optional(sources, "state", |v, base| {
            Ok(values::resolve(Path::new(v), base))
        })?
        .unwrap_or_else(|| PathBuf::from("/var/lib/mast/state.db"));
        let applier = optional(sources, "applier", Applier::parse)?
            .unwrap_or_else(|| Applier::Dir(PathBuf::from("/var/lib/mast/manifests")));
        let duration = |key, default: u64| {
            optional(sources, key, |v, _| parse_duration(v))
                .map(|d| d.unwrap_or(Duration::from_secs(default)))
        };
        let interval = duration("poll_interval", 300)?;
        let drift_interval = duration("drift_interval", 600)?;
        if drift_interval < Duration::from_secs(10) {
            return Err(ConfigError::Invalid {
                origin: "configuration".to_owned(),
                key: "drift_interval",
                reason: "must be at least 10s".to_owned(),
            });
        }
        let stale_after = optional(sources, "stale_after", |v, _| parse_duration(v))?
            .unwrap_or(interval.saturating_mul(3));
        let kube_timeout = duration("kube_timeout", 30)?;
        if kube_timeout.is_zero() {
            return Err(ConfigError::Invalid {
                origin: "configuration".to_owned(),
                key: "kube_timeout",
                reason: "must be more than 0s".to_owned(),
            });
        }
        let backoff_base = duration("backoff_base", 10)?;
        let backoff_cap = duration("backoff_cap", 3600)?;
        let jitter = optional(sources, "jitter", |v, _| {
            let fraction: f64 = v.parse().map_err(|_| format!("{v:?} is not a number"))?;
            Jitter::new(fraction).map_err(|e| e.to_string())
        })?
        .unwrap_or_default();
        let poll = PollPolicy::new(interval, jitter, backoff_base, backoff_cap).map_err(|e| {
            ConfigError::Invalid {
                origin: "poll_interval, backoff_base and backoff_cap together".to_owned(),
                key: "backoff_cap",
                reason: e.to_string(),
            }
        })?;
        let windows = ChangeWindows::new(list(sources, "change_windows", |v| {
            v.parse::<ChangeWindow>().map_err(|e| e.to_string())
        })?);
        let ca_bundle = optional(sources, "ca_bundle", |v, base| {
            Ok(values::resolve(Path::new(v), base))
        })?;
        let keep_releases = optional(sources, "keep_releases", |v, _| {
            let n: u32 = v
                .parse()
                .map_err(|_| format!("{v:?} is not a whole number"))?;
            KeepReleases::new(n)
        })?
        .unwrap_or_default();
        let listen = optional(sources, "listen", |v, _| {
            v.parse::<SocketAddr>()
                .map_err(|_| format!("{v:?} is not an address:port, as 127.0.0.1:9464"))
        })?;
        let log_format = optional(sources, "log_format", |v, _| {
            v.parse::<LogFormat>().map_err(|e| e.to_string())
        })?
        .unwrap_or_default();
        Ok(Self {
            cluster_id,
            channel,
            mirrors,
            root,
            state,
            applier,
            poll,
            windows,
            drift_interval,
            stale_after,
            kube_timeout,
            ca_bundle,
            keep_releases,
            listen,
            log_format,
        })
    }
}

impl Config {
    /// The state database path alone (`status` reads nothing else).
    pub fn state_path(sources: &Sources) -> Result<PathBuf, ConfigError> {
        Ok(optional(sources, "state", |v, base| {
            Ok(values::resolve(Path::new(v), base))
        })?
        .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_PATH)))
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) => write!(f, "{}", path.display()),
            Self::Env(name) => write!(f, "environment {name}"),
            Self::Flag(name) => write!(f, "flag {name}"),
        }
    }
}

/// The environment variable of `key`.
pub fn env_name(key: &str) -> String {
    format!("MAST_{}", key.to_ascii_uppercase())
}

/// The flag of `key`.
pub fn flag_name(key: &str) -> String {
    format!("--{}", key.replace('_', "-"))
}

fn known_key(key: &str) -> Option<&'static str> {
    KEYS.iter().copied().find(|k| *k == key)
}

fn scalar(value: toml::Value) -> Option<String> {
    match value {
        toml::Value::String(s) => Some(s),
        toml::Value::Integer(n) => Some(n.to_string()),
        toml::Value::Float(x) => Some(x.to_string()),
        _ => None,
    }
}

fn missing(key: &'static str) -> ConfigError {
    ConfigError::Missing {
        key,
        env: env_name(key),
        flag: flag_name(key).trim_start_matches("--").to_owned(),
    }
}

/// Parses `key`'s single value, if set. `parse` gets the value and the directory relative paths resolve
/// against (the config file's for values from the file, none otherwise).
fn optional<T>(
    sources: &Sources,
    key: &'static str,
    parse: impl FnOnce(&str, Option<&Path>) -> Result<T, String>,
) -> Result<Option<T>, ConfigError> {
    let Some(raw) = sources.raw(key) else {
        return Ok(None);
    };
    let invalid = |reason: String| ConfigError::Invalid {
        origin: raw.origin.to_string(),
        key,
        reason,
    };
    let [value] = raw.values.as_slice() else {
        return Err(invalid("expected one value".to_owned()));
    };
    let base = match raw.origin {
        Origin::File(_) => sources.file_dir(),
        Origin::Env(_) | Origin::Flag(_) => None,
    };
    parse(value, base).map(Some).map_err(invalid)
}

fn required<T>(
    sources: &Sources,
    key: &'static str,
    parse: impl FnOnce(&str, Option<&Path>) -> Result<T, String>,
) -> Result<T, ConfigError> {
    optional(sources, key, parse)?.ok_or_else(|| missing(key))
}

fn list<T>(
    sources: &Sources,
    key: &'static str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Vec<T>, ConfigError> {
    let Some(raw) = sources.raw(key) else {
        return Ok(Vec::new());
    };
    raw.values
        .iter()
        .enumerate()
        .map(|(i, value)| {
            parse(value).map_err(|reason| ConfigError::Invalid {
                origin: raw.origin.to_string(),
                key,
                reason: format!("item {}: {reason}", i + 1),
            })
        })
        .collect()
}

fn read_root(value: &str, base: Option<&Path>) -> Result<TrustedRoot, String> {
    let path = values::resolve(Path::new(value), base);
    let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let trusted = TrustedMetadata::new(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(TrustedRoot {
        version: trusted.root().signed.common.version,
        path,
        bytes,
    })
}

#[cfg(test)]
mod tests;
