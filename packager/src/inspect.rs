//! `mast inspect`: what a bundle holds, or what a repository publishes and when it expires.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use mast_protocol::release::{ReleaseError as FieldError, ReleaseInfo, ReleaseKind};
use mast_protocol::tuf::builder::root_signing_status;
use mast_protocol::tuf::{Expiry, Repository};
use serde::Serialize;
use time::{Duration, OffsetDateTime};

use crate::pack::{Bundle, FileEntry, PackError, read_bundle};
use crate::repo::{RepoDir, RepoError};
use crate::root::{SigningReport, signing_report};
use crate::{ExitStatus, exit};

/// Why inspection failed.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// The repository does not load.
    #[error(transparent)]
    Repo(#[from] RepoError),
    /// The bundle is refused.
    #[error(transparent)]
    Bundle(#[from] PackError),
    /// A target in the repository does not read as a mast release.
    #[error("{0}")]
    Target(#[source] FieldError),
}

impl ExitStatus for InspectError {
    fn exit_code(&self) -> u8 {
        match self {
            Self::Repo(e) => e.exit_code(),
            Self::Bundle(e) => e.exit_code(),
            Self::Target(_) => exit::DATA,
        }
    }
}

/// A bundle or a repository, described.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Inspection {
    /// A bundle.
    Bundle(BundleInspection),
    /// A repository.
    Repository(RepoInspection),
}

/// Objects of one kind in one namespace.
#[derive(Debug, Clone, Serialize)]
pub struct KindCount {
    /// `group/Kind`, or `Kind` for the core group.
    pub kind: String,
    /// The namespace; absent for objects that set none.
    pub namespace: Option<String>,
    /// How many.
    pub objects: usize,
}

/// What a bundle holds.
#[derive(Debug, Serialize)]
pub struct BundleInspection {
    /// The file or directory inspected.
    pub path: PathBuf,
    /// sha256 of the canonical tar.
    pub sha256: String,
    /// Length of the canonical tar.
    pub tar_bytes: u64,
    /// Bytes of all files.
    pub content_bytes: u64,
    /// Objects.
    pub objects: usize,
    /// Objects by kind and namespace.
    pub kinds: Vec<KindCount>,
    /// Files with their sizes.
    pub files: Vec<FileEntry>,
    /// The options file, if any, and the settings it makes.
    pub options: Option<BTreeMap<String, String>>,
}

/// One role's expiry.
#[derive(Debug, Clone, Serialize)]
pub struct RoleExpiry {
    /// The role.
    pub role: &'static str,
    /// Its version.
    pub version: u64,
    /// When it expires.
    pub expires: String,
    /// `ok`, `near` (within the warning window) or `expired`.
    pub state: &'static str,
}

/// One release of a channel.
#[derive(Debug, Clone, Serialize)]
pub struct ReleaseLine {
    /// The number.
    pub release: u64,
    /// sha256 of the canonical tar.
    pub tar_sha256: String,
    /// Length of the tar.
    pub tar_bytes: u64,
    /// Length of `bundle.tar.gz`, when its target is listed.
    pub bundle_bytes: Option<u64>,
    /// Length of `index.json`, when its target is listed.
    pub index_bytes: Option<u64>,
    /// The oldest agent that may apply it.
    pub min_agent_version: String,
    /// Rollout waves, `seeds<N from TIME`.
    pub waves: Vec<String>,
}

/// A channel's releases, highest last.
#[derive(Debug, Clone, Serialize)]
pub struct ChannelReleases {
    /// The channel.
    pub channel: String,
    /// Its releases.
    pub releases: Vec<ReleaseLine>,
}

/// What a repository publishes.
#[derive(Debug, Serialize)]
pub struct RepoInspection {
    /// The repository.
    pub path: PathBuf,
    /// Root, targets, snapshot and timestamp.
    pub roles: Vec<RoleExpiry>,
    /// Releases per channel.
    pub channels: Vec<ChannelReleases>,
    /// A root version still collecting signatures.
    pub pending_root: Option<SigningReport>,
    /// Expiries within the window, or past.
    pub warnings: Vec<String>,
}

/// Inspects `path`: a repository directory (it has `metadata/timestamp.json` or `.mast/`), otherwise a
/// bundle (file or directory of manifests). `warn_within` is how close an expiry must be to warn.
pub fn inspect(
    path: &Path,
    warn_within: Duration,
    now: OffsetDateTime,
) -> Result<Inspection, InspectError> {
    let dir = RepoDir::new(path);
    if dir.is_published() || path.join(crate::repo::STATE_DIR).is_dir() {
        return inspect_repo(&dir, warn_within, now).map(Inspection::Repository);
    }
    let bundle = read_bundle(path)?;
    Ok(Inspection::Bundle(describe_bundle(path, &bundle)))
}

fn describe_bundle(path: &Path, bundle: &Bundle) -> BundleInspection {
    let mut kinds: BTreeMap<(String, Option<String>), usize> = BTreeMap::new();
    for o in &bundle.content.objects {
        let kind = if o.group.is_empty() {
            o.kind.clone()
        } else {
            format!("{}/{}", o.group, o.kind)
        };
        *kinds.entry((kind, o.namespace.clone())).or_default() += 1;
    }
    let options = bundle.content.options.as_ref().map(|(file, o)| {
        BTreeMap::from([
            ("file".to_owned(), file.clone()),
            ("prune".to_owned(), format!("{:?}", o.prune).to_lowercase()),
            ("drift".to_owned(), format!("{:?}", o.drift).to_lowercase()),
            (
                "health_timeout".to_owned(),
                format!("{}s", o.health_timeout.as_secs()),
            ),
            (
                "max_delete".to_owned(),
                format!(
                    "{} or {} objects",
                    o.max_delete.fraction, o.max_delete.count
                ),
            ),
            ("force_conflicts".to_owned(), o.force_conflicts.to_string()),
            ("ignore_rules".to_owned(), o.ignore.len().to_string()),
        ])
    });
    BundleInspection {
        path: path.to_path_buf(),
        sha256: bundle.tar_sha256.to_hex(),
        tar_bytes: bundle.tar.len() as u64,
        content_bytes: bundle.content.files.iter().map(|f| f.bytes).sum(),
        objects: bundle.content.objects.len(),
        kinds: kinds
            .into_iter()
            .map(|((kind, namespace), objects)| KindCount {
                kind,
                namespace,
                objects,
            })
            .collect(),
        files: bundle.content.files.clone(),
        options,
    }
}

fn inspect_repo(
    dir: &RepoDir,
    warn_within: Duration,
    now: OffsetDateTime,
) -> Result<RepoInspection, InspectError> {
    let pending = dir.pending_root()?;
    if !dir.is_published() {
        let pending_root = pending.as_ref().map(|p| {
            let status = root_signing_status(p, None);
            signing_report(p, None, &status)
        });
        return Ok(RepoInspection {
            path: dir.path().to_path_buf(),
            roles: Vec::new(),
            channels: Vec::new(),
            warnings: vec!["not published yet: root version 1 is collecting signatures".to_owned()],
            pending_root,
        });
    }
    let repo = dir.load()?;
    let horizon = now.saturating_add(warn_within);
    let role = |role: &'static str, version: u64, expires: Expiry| RoleExpiry {
        role,
        version,
        expires: expires.to_string(),
        state: if expires.is_expired(now) {
            "expired"
        } else if expires.at() <= horizon {
            "near"
        } else {
            "ok"
        },
    };
    let roles = vec![
        role("root", repo.root().version(), repo.root().expires()),
        role(
            "targets",
            repo.targets().version(),
            repo.targets().expires(),
        ),
        role(
            "snapshot",
            repo.snapshot().version(),
            repo.snapshot().expires(),
        ),
        role(
            "timestamp",
            repo.timestamp().version(),
            repo.timestamp().expires(),
        ),
    ];
    let warnings = roles
        .iter()
        .filter(|r| r.state != "ok")
        .map(|r| {
            let when = if r.state == "expired" {
                "expired at"
            } else {
                "expires at"
            };
            format!("{} v{} {when} {}", r.role, r.version, r.expires)
        })
        .collect();
    let pending_root = pending
        .filter(|p| p.version() > repo.root().version())
        .map(|p| {
            let status = root_signing_status(&p, Some(repo.root()));
            signing_report(&p, Some(repo.root()), &status)
        });
    Ok(RepoInspection {
        path: dir.path().to_path_buf(),
        roles,
        channels: channels(&repo)?,
        pending_root,
        warnings,
    })
}

fn channels(repo: &Repository) -> Result<Vec<ChannelReleases>, InspectError> {
    let mut by_channel: BTreeMap<String, BTreeMap<u64, ReleaseLine>> = BTreeMap::new();
    for (name, file) in &repo.targets().signed.targets {
        let Some(info) = ReleaseInfo::from_target(name, file).map_err(InspectError::Target)? else {
            continue;
        };
        let r = &info.release;
        let line = by_channel
            .entry(r.channel.to_string())
            .or_default()
            .entry(r.number.get())
            .or_insert_with(|| ReleaseLine {
                release: r.number.get(),
                tar_sha256: r.tar_sha256.to_hex(),
                tar_bytes: r.tar_length,
                bundle_bytes: None,
                index_bytes: None,
                min_agent_version: r.min_agent_version.to_string(),
                waves: r
                    .waves
                    .as_slice()
                    .iter()
                    .map(|w| format!("seeds<{} from {}", w.seed_below, Expiry::new(w.start)))
                    .collect(),
            });
        match info.kind {
            ReleaseKind::Bundle => line.bundle_bytes = Some(file.length),
            ReleaseKind::Index => line.index_bytes = Some(file.length),
        }
    }
    Ok(by_channel
        .into_iter()
        .map(|(channel, releases)| ChannelReleases {
            channel,
            releases: releases.into_values().collect(),
        })
        .collect())
}

impl fmt::Display for Inspection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bundle(b) => b.fmt(f),
            Self::Repository(r) => r.fmt(f),
        }
    }
}

impl fmt::Display for BundleInspection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "bundle   {}", self.path.display())?;
        writeln!(f, "sha256   {}", self.sha256)?;
        writeln!(
            f,
            "size     tar {} bytes, {} files with {} bytes",
            self.tar_bytes,
            self.files.len(),
            self.content_bytes
        )?;
        if let Some(options) = &self.options {
            let settings: Vec<String> = options
                .iter()
                .filter(|(k, _)| *k != "file")
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let file = options.get("file").map_or("", String::as_str);
            writeln!(f, "options  {file}: {}", settings.join(" "))?;
        }
        writeln!(f, "objects  {}", self.objects)?;
        let width = self.kinds.iter().map(|k| k.kind.len()).max().unwrap_or(4);
        writeln!(f, "  {:>7}  {:<width$}  NAMESPACE", "COUNT", "KIND")?;
        for k in &self.kinds {
            writeln!(
                f,
                "  {:>7}  {:<width$}  {}",
                k.objects,
                k.kind,
                k.namespace.as_deref().unwrap_or("-")
            )?;
        }
        let mut largest: Vec<&FileEntry> = self.files.iter().collect();
        largest.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.path.cmp(&b.path)));
        write!(f, "largest files")?;
        for file in largest.iter().take(5) {
            write!(
                f,
                "\n  {:>10}  {} ({} objects)",
                file.bytes, file.path, file.objects
            )?;
        }
        Ok(())
    }
}

impl fmt::Display for RepoInspection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "repository {}", self.path.display())?;
        for r in &self.roles {
            let flag = match r.state {
                "ok" => "",
                "near" => "  WARN: expires soon",
                _ => "  WARN: EXPIRED",
            };
            writeln!(
                f,
                "  {:<10} v{:<5} expires {}{flag}",
                r.role, r.version, r.expires
            )?;
        }
        if self.channels.is_empty() && !self.roles.is_empty() {
            writeln!(f, "no releases")?;
        }
        for c in &self.channels {
            writeln!(f, "channel {}", c.channel)?;
            for r in &c.releases {
                let gz = r
                    .bundle_bytes
                    .map_or("-".to_owned(), |b| format!("{b} bytes gz"));
                write!(
                    f,
                    "  #{:<6} tar {} ({} bytes, {gz}) agent>={}",
                    r.release, r.tar_sha256, r.tar_bytes, r.min_agent_version
                )?;
                if !r.waves.is_empty() {
                    write!(f, " waves: {}", r.waves.join(", "))?;
                }
                writeln!(f)?;
            }
        }
        if let Some(p) = &self.pending_root {
            writeln!(f, "pending root:")?;
            writeln!(f, "{p}")?;
        }
        for w in &self.warnings {
            writeln!(f, "WARN {w}")?;
        }
        Ok(())
    }
}
