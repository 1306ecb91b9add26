//! The bundle options file: `mast.toml` or `mast.yaml` at the root of a bundle, saying how the agent applies
//! it (prune policy, delete guard, health timeout, drift mode, conflicts, ignored fields).
//!
//! The packager validates it before it signs anything and the agent reads it before it applies anything,
//! through this one parser. Unknown keys are errors naming the key and the file: a misspelt `prune` that
//! silently fell back to the default would delete what the author meant to keep.

use std::time::Duration;

use serde::Deserialize;

/// The file names the options may have, at the bundle root. At most one of them may be present.
pub const OPTIONS_FILES: [&str; 3] = ["mast.toml", "mast.yaml", "mast.yml"];

/// Largest options file accepted, in bytes.
pub const MAX_OPTIONS_BYTES: usize = 64 << 10;

/// What to do with objects that left the bundle since the previous release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Prune {
    /// Delete them (subject to [`MaxDelete`]).
    #[default]
    Delete,
    /// Leave them in the cluster, no longer managed.
    Orphan,
}

/// What to do when live objects differ from what was applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Drift {
    /// Record and expose the difference.
    #[default]
    Report,
    /// Re-apply the object.
    Correct,
}

/// Refuse a prune that would delete more than either bound: a bundle that lost most of its files is more
/// likely a broken render than an intended teardown.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MaxDelete {
    /// Largest share of the previous inventory, 0.0 to 1.0.
    pub fraction: f64,
    /// Largest number of objects.
    pub count: u64,
}

impl Default for MaxDelete {
    /// A quarter of the inventory and at most 50 objects.
    fn default() -> Self {
        Self {
            fraction: 0.25,
            count: 50,
        }
    }
}

/// Fields the agent neither compares for drift nor fights over, for objects of one kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IgnoreFields {
    /// The API group; empty for the core group.
    pub group: String,
    /// The kind.
    pub kind: String,
    /// JSON pointers (RFC 6901) into the object, e.g. `/spec/replicas`.
    pub paths: Vec<String>,
}

/// The parsed options, with defaults for what the file leaves out.
#[derive(Debug, Clone, PartialEq)]
pub struct BundleOptions {
    /// Prune policy; default delete.
    pub prune: Prune,
    /// Delete guard.
    pub max_delete: MaxDelete,
    /// How long the health gate waits; default five minutes.
    pub health_timeout: Duration,
    /// Drift mode; default report.
    pub drift: Drift,
    /// Whether server-side apply forces through conflicts with other field managers; default true.
    pub force_conflicts: bool,
    /// Ignored fields per kind.
    pub ignore: Vec<IgnoreFields>,
}

/// Why an options file was refused; always names the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionsError {
    /// Not one of [`OPTIONS_FILES`].
    #[error("{0}: not a bundle options file name (mast.toml, mast.yaml or mast.yml)")]
    Name(String),
    /// Larger than [`MAX_OPTIONS_BYTES`].
    #[error("{file}: {size} bytes, more than the {MAX_OPTIONS_BYTES} allowed")]
    TooLarge {
        /// The file.
        file: String,
        /// Its size.
        size: usize,
    },
    /// Not UTF-8.
    #[error("{0}: not UTF-8")]
    NotUtf8(String),
    /// Does not parse, or has an unknown key or a value of the wrong type.
    #[error("{file}: {message}")]
    Syntax {
        /// The file.
        file: String,
        /// The parser's message, naming the key.
        message: String,
    },
    /// A key with a value outside its range.
    #[error("{file}: {key}: {reason}")]
    Value {
        /// The file.
        file: String,
        /// The key, e.g. `max_delete.fraction`.
        key: String,
        /// What is wrong.
        reason: String,
    },
}

impl Default for BundleOptions {
    fn default() -> Self {
        Self {
            prune: Prune::default(),
            max_delete: MaxDelete::default(),
            health_timeout: Duration::from_secs(300),
            drift: Drift::default(),
            force_conflicts: true,
            ignore: Vec::new(),
        }
    }
}

impl BundleOptions {
    /// Parses an options file; `file` is its name in the bundle (`mast.toml` or `mast.yaml`), which picks
    /// the syntax and appears in every error.
    pub fn parse(file: &str, bytes: &[u8]) -> Result<Self, OptionsError> {
        if bytes.len() > MAX_OPTIONS_BYTES {
            return Err(OptionsError::TooLarge {
                file: file.to_owned(),
                size: bytes.len(),
            });
        }
        let text =
            std::str::from_utf8(bytes).map_err(|_| OptionsError::NotUtf8(file.to_owned()))?;
        let syntax = |message: String| OptionsError::Syntax {
            file: file.to_owned(),
            message: message.lines().next().unwrap_or_default().to_owned(),
        };
        let wire: Wire = if file == "mast.toml" {
            toml::from_str(text).map_err(|e| syntax(e.message().to_owned()))?
        } else if file == "mast.yaml" || file == "mast.yml" {
            let mut budget = serde_saphyr::Budget::default();
            budget.max_depth = 16;
            budget.max_aliases = 0;
            budget.max_anchors = 0;
            budget.max_documents = 1;
            budget.max_nodes = 10_000;
            let mut options = serde_saphyr::Options::default();
            options.budget = Some(budget);
            options.duplicate_keys = serde_saphyr::DuplicateKeyPolicy::Error;
            if text.trim().is_empty() {
                Wire::default()
            } else {
                serde_saphyr::from_str_with_options(text, options)
                    .map_err(|e| syntax(e.to_string()))?
            }
        } else {
            return Err(OptionsError::Name(file.to_owned()));
        };
        wire.check(file)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    prune: Option<Prune>,
    max_delete: Option<WireMaxDelete>,
    health_timeout: Option<String>,
    drift: Option<Drift>,
    force_conflicts: Option<bool>,
    #[serde(default)]
    ignore: Vec<WireIgnore>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireMaxDelete {
    fraction: Option<f64>,
    count: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireIgnore {
    #[serde(default)]
    group: String,
    kind: String,
    paths: Vec<String>,
}

impl Wire {
    fn check(self, file: &str) -> Result<BundleOptions, OptionsError> {
        let value = |key: &str, reason: &str| OptionsError::Value {
            file: file.to_owned(),
            key: key.to_owned(),
            reason: reason.to_owned(),
        };
        let defaults = BundleOptions::default();
        let mut max_delete = defaults.max_delete;
        if let Some(md) = self.max_delete {
            if let Some(fraction) = md.fraction {
                if !(0.0..=1.0).contains(&fraction) {
                    return Err(value("max_delete.fraction", "must be between 0.0 and 1.0"));
                }
                max_delete.fraction = fraction;
            }
            if let Some(count) = md.count {
                max_delete.count = count;
            }
        }
        let health_timeout = match self.health_timeout {
            None => defaults.health_timeout,
            Some(s) => parse_duration(&s).ok_or_else(|| {
                value(
                    "health_timeout",
                    "must be a whole number followed by s, m or h (e.g. 90s, 5m), at most 24h",
                )
            })?,
        };
        if self.ignore.len() > 256 {
            return Err(value("ignore", "at most 256 entries"));
        }
        let mut ignore = Vec::with_capacity(self.ignore.len());
        for (i, entry) in self.ignore.into_iter().enumerate() {
            if entry.kind.is_empty() {
                return Err(value(&format!("ignore[{i}].kind"), "must not be empty"));
            }
            if entry.paths.is_empty() || entry.paths.len() > 64 {
                return Err(value(
                    &format!("ignore[{i}].paths"),
                    "must list 1 to 64 paths",
                ));
            }
            for (j, path) in entry.paths.iter().enumerate() {
                if !path.starts_with('/') || path.len() > 1024 {
                    return Err(value(
                        &format!("ignore[{i}].paths[{j}]"),
                        "must be a JSON pointer such as /spec/replicas",
                    ));
                }
            }
            ignore.push(IgnoreFields {
                group: entry.group,
                kind: entry.kind,
                paths: entry.paths,
            });
        }
        Ok(BundleOptions {
            prune: self.prune.unwrap_or_default(),
            max_delete,
            health_timeout,
            drift: self.drift.unwrap_or_default(),
            force_conflicts: self.force_conflicts.unwrap_or(true),
            ignore,
        })
    }
}

/// `90s`, `5m`, `1h`: a whole number and a unit, up to a day.
fn parse_duration(s: &str) -> Option<Duration> {
    let unit = s.chars().last()?;
    let number: u64 = s.get(..s.len() - 1)?.parse().ok()?;
    let seconds = match unit {
        's' => number,
        'm' => number.checked_mul(60)?,
        'h' => number.checked_mul(3600)?,
        _ => return None,
    };
    (1..=86_400)
        .contains(&seconds)
        .then(|| Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_files_give_the_defaults() {
        assert_eq!(
            BundleOptions::parse("mast.toml", b"").unwrap(),
            BundleOptions::default()
        );
        assert_eq!(
            BundleOptions::parse("mast.yaml", b"\n").unwrap(),
            BundleOptions::default()
        );
        let d = BundleOptions::default();
        assert!(d.force_conflicts);
        assert_eq!((d.prune, d.drift), (Prune::Delete, Drift::Report));
    }

    #[test]
    fn toml_and_yaml_read_the_same() {
        let toml = br#"
prune = "orphan"
health_timeout = "90s"
drift = "correct"
force_conflicts = false
max_delete = { fraction = 0.5, count = 10 }
[[ignore]]
group = "apps"
kind = "Deployment"
paths = ["/spec/replicas"]
"#;
        let yaml = b"prune: orphan\nhealth_timeout: 90s\ndrift: correct\nforce_conflicts: false\n\
max_delete: {fraction: 0.5, count: 10}\nignore:\n  - group: apps\n    kind: Deployment\n    paths: [/spec/replicas]\n";
        let a = BundleOptions::parse("mast.toml", toml).unwrap();
        let b = BundleOptions::parse("mast.yaml", yaml).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.prune, Prune::Orphan);
        assert_eq!(a.health_timeout, Duration::from_secs(90));
        assert_eq!(
            a.max_delete,
            MaxDelete {
                fraction: 0.5,
                count: 10
            }
        );
        assert_eq!(a.ignore[0].paths, ["/spec/replicas"]);
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key_and_file() {
        let err = BundleOptions::parse("mast.toml", b"prnue = \"orphan\"\n").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("mast.toml: ") && msg.contains("prnue"),
            "{msg}"
        );
        let err = BundleOptions::parse("mast.yaml", b"drfit: report\n").unwrap_err();
        assert!(err.to_string().contains("drfit"), "{err}");
        let err = BundleOptions::parse("mast.toml", b"prune = \"later\"\n").unwrap_err();
        assert!(err.to_string().contains("later"), "{err}");
        let err =
            BundleOptions::parse("mast.toml", b"health_timeout = \"5 minutes\"\n").unwrap_err();
        assert_eq!(
            err,
            OptionsError::Value {
                file: "mast.toml".into(),
                key: "health_timeout".into(),
                reason: "must be a whole number followed by s, m or h (e.g. 90s, 5m), at most 24h"
                    .into()
            }
        );
        let err =
            BundleOptions::parse("mast.toml", b"max_delete = { fraction = 2.0 }\n").unwrap_err();
        assert!(err.to_string().contains("max_delete.fraction"), "{err}");
        let err = BundleOptions::parse("mast.toml", b"[[ignore]]\nkind = \"A\"\npaths = [\"x\"]\n")
            .unwrap_err();
        assert!(err.to_string().contains("ignore[0].paths[0]"), "{err}");
        assert!(matches!(
            BundleOptions::parse("mast.json", b""),
            Err(OptionsError::Name(_))
        ));
        let big = vec![b'#'; MAX_OPTIONS_BYTES + 1];
        assert!(matches!(
            BundleOptions::parse("mast.toml", &big),
            Err(OptionsError::TooLarge { .. })
        ));
    }

    #[test]
    fn yaml_options_refuse_anchors() {
        let err = BundleOptions::parse("mast.yaml", b"prune: &p orphan\ndrift: *p\n");
        assert!(err.is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        for bad in ["", "m", "0s", "25h", "-1s", "1.5m", "5 m", "5d"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }
}
