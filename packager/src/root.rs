//! `mast root sign`, `mast root rotate` and `mast root status`: root versions signed by several offline
//! holders in turn.
//!
//! A root N+1 is published only once it carries a threshold of root N's root keys **and** a threshold of
//! its own (TUF §5.3.4–5.3.5). Until then it lives in `REPO/.mast/root.pending.json`, which is never
//! published; each holder runs `mast root sign REPO --key THEIR_KEY` (on a copy of the repository, or a
//! shared one) and sees what is still missing. The signature that completes it publishes it: the new root
//! file is written, and when the new root changed an online role's keys, those roles are re-signed with
//! the online keys in the same step (timestamp last).

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

use mast_protocol::crypto::KeyId;
use mast_protocol::tuf::builder::{RoleSpec, root_signing_status, rotate_root};
use mast_protocol::tuf::{BuildError, Repository, Root, RootSpec, Signed, SigningStatus};
use serde::Serialize;
use time::OffsetDateTime;

use crate::durations::Lifetime;
use crate::keys::{KeyError, RoleKey, load_role_key, load_signing_key};
use crate::repo::{RememberedKeys, RepoDir, RepoError, Written};
use crate::signers::{OnlineKeyPaths, OnlineKeys, OnlineRole, SignersError};
use crate::{ExitStatus, exit};

/// Why a root command refused. Nothing is published when it does.
#[derive(Debug, thiserror::Error)]
pub enum RootError {
    /// A key file.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The repository.
    #[error(transparent)]
    Repo(#[from] RepoError),
    /// An online key, needed to publish a root that changed online roles.
    #[error(transparent)]
    Signers(#[from] SignersError),
    /// The builder refused (keys, thresholds, chain).
    #[error("{0}")]
    Build(#[source] BuildError),
    /// `root sign` with no root waiting for signatures.
    #[error("{0}: no pending root; start one with `mast root rotate`")]
    NoPending(PathBuf),
    /// `root rotate` while a root is still collecting signatures.
    #[error(
        "{path}: root version {version} is already pending; sign it with `mast root sign`, or pass --force to discard it"
    )]
    PendingExists {
        /// The pending file.
        path: PathBuf,
        /// Its version.
        version: u64,
    },
    /// The pending root does not follow the published one (the repository moved on without it).
    #[error(
        "pending root version {pending} does not follow the published root version {published}; start again with `mast root rotate --force`"
    )]
    StalePending {
        /// The pending version.
        pending: u64,
        /// The published version.
        published: u64,
    },
    /// A key that is a root key of neither the pending root nor the one before it.
    #[error("--key {path}: key {keyid} is not a root key of root version {versions}")]
    NotARootKey {
        /// The file.
        path: PathBuf,
        /// Its id.
        keyid: String,
        /// The versions checked (`3` or `3 or 2`).
        versions: String,
    },
}

impl ExitStatus for RootError {
    fn exit_code(&self) -> u8 {
        match self {
            Self::Key(e) => e.exit_code(),
            Self::Repo(e) => e.exit_code(),
            Self::Signers(e) => e.exit_code(),
            Self::Build(_) => exit::USAGE,
            Self::NoPending(_)
            | Self::PendingExists { .. }
            | Self::StalePending { .. }
            | Self::NotARootKey { .. } => exit::DATA,
        }
    }
}

/// Signatures counted against one root's root role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Threshold {
    /// The root version whose root keys are counted.
    pub version: u64,
    /// Distinct valid signatures by its root keys.
    pub have: u64,
    /// Its root threshold.
    pub need: u64,
}

/// Where the signing of one root version stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SigningReport {
    /// The root version being signed.
    pub version: u64,
    /// When it expires.
    pub expires: String,
    /// Key ids with a valid signature, by root key of either version.
    pub signed_by: Vec<String>,
    /// Its own threshold.
    pub own: Threshold,
    /// The previous root's threshold, for a rotation.
    pub previous: Option<Threshold>,
    /// Root key ids still able to help, while a threshold is unmet.
    pub missing: Vec<String>,
    /// Whether both thresholds are met.
    pub complete: bool,
}

/// What a root command did.
#[derive(Debug, Serialize)]
pub struct RootReport {
    /// The repository.
    pub repo: PathBuf,
    /// The root being signed (absent when nothing is pending).
    pub pending: Option<SigningReport>,
    /// The published root version after the command.
    pub published_version: Option<u64>,
    /// Whether this command published the pending root.
    pub published_now: bool,
    /// Files written.
    pub written: Written,
}

/// What `root rotate` changes; unset fields keep the current root's values.
#[derive(Debug, Clone, Default)]
pub struct RotateArgs {
    /// The repository.
    pub repo: PathBuf,
    /// New root keys (private or public).
    pub root_keys: Vec<PathBuf>,
    /// New root threshold.
    pub root_threshold: Option<u64>,
    /// New targets keys.
    pub targets_keys: Vec<PathBuf>,
    /// New snapshot keys.
    pub snapshot_keys: Vec<PathBuf>,
    /// New timestamp keys.
    pub timestamp_keys: Vec<PathBuf>,
    /// `--expires` flags (stored for later commits too).
    pub lifetimes: Vec<Lifetime>,
    /// Discard a pending root.
    pub force: bool,
}

/// Adds `keys`' signatures to the pending root; publishes it when both thresholds are met.
pub fn sign(
    repo: &Path,
    keys: &[PathBuf],
    online: &OnlineKeyPaths,
    now: OffsetDateTime,
) -> Result<RootReport, RootError> {
    let dir = RepoDir::new(repo);
    let _lock = dir.lock()?;
    let mut pending = dir
        .pending_root()?
        .ok_or_else(|| RootError::NoPending(repo.to_path_buf()))?;
    let published = if pending.version() == 1 {
        None
    } else {
        Some(dir.load()?)
    };
    let previous = published.as_ref().map(Repository::root);
    if let Some(prev) = previous
        && Some(pending.version()) != prev.version().checked_add(1)
    {
        return Err(RootError::StalePending {
            pending: pending.version(),
            published: prev.version(),
        });
    }
    let loaded = keys
        .iter()
        .map(|path| load_signing_key(path).map(|k| (path, k)))
        .collect::<Result<Vec<_>, _>>()?;
    for (path, key) in &loaded {
        let keyid = key.key_id();
        let listed = is_root_key(&pending.signed, &keyid)
            || previous.is_some_and(|p| is_root_key(&p.signed, &keyid));
        if !listed {
            return Err(RootError::NotARootKey {
                path: (*path).clone(),
                keyid: keyid.as_str().to_owned(),
                versions: match previous {
                    Some(p) => format!("{} or {}", pending.version(), p.version()),
                    None => pending.version().to_string(),
                },
            });
        }
    }
    for (_, key) in &loaded {
        pending.sign(key);
    }
    let status = root_signing_status(&pending, previous);
    let report = signing_report(&pending, previous, &status);
    // Kept before publishing is tried, so a missing online key never costs a holder's signature.
    dir.save_pending_root(&pending)?;
    if !status.is_complete() {
        return Ok(RootReport {
            repo: repo.to_path_buf(),
            pending: Some(report),
            published_version: previous.map(Signed::version),
            published_now: false,
            written: Written::default(),
        });
    }
    let written = publish(&dir, published, pending, online, now)?;
    Ok(RootReport {
        repo: repo.to_path_buf(),
        published_version: Some(report.version),
        pending: Some(report),
        published_now: true,
        written,
    })
}

/// Publishes a complete pending root: root 1 with a first commit, or root N+1 with the online roles it
/// changed re-signed.
fn publish(
    dir: &RepoDir,
    published: Option<Repository>,
    pending: Signed<Root>,
    online: &OnlineKeyPaths,
    now: OffsetDateTime,
) -> Result<Written, RootError> {
    let mut config = dir.config()?;
    let remembered = merged(&config.keys, config.pending_keys.as_ref());
    let keys = OnlineKeys::load(online, &remembered)?;
    let repo = match published {
        None => {
            keys.require(&[
                OnlineRole::Targets,
                OnlineRole::Snapshot,
                OnlineRole::Timestamp,
            ])?;
            keys.check_against(&pending.signed)?;
            let mut repo =
                Repository::create(pending, now, config.expiries()).map_err(RootError::Build)?;
            repo.commit(&keys.signers(), now)
                .map_err(RootError::Build)?;
            repo
        }
        Some(mut repo) => {
            let changed = changed_roles(&repo.root().signed, &pending.signed);
            repo.push_root(pending).map_err(RootError::Build)?;
            if !changed.is_empty() {
                // The timestamp is always re-signed by a commit, and snapshot whenever targets is.
                let mut needed = changed.clone();
                needed.push(OnlineRole::Timestamp);
                if changed.contains(&OnlineRole::Targets) {
                    needed.push(OnlineRole::Snapshot);
                }
                keys.require(&needed)?;
                keys.check_against(&repo.root().signed)?;
                repo.commit(&keys.signers(), now)
                    .map_err(RootError::Build)?;
            }
            repo
        }
    };
    let written = dir.write_metadata(&repo)?;
    dir.remove_pending_root()?;
    if let Some(pending_keys) = config.pending_keys.take() {
        config.keys = merged(&config.keys, Some(&pending_keys));
        dir.save_config(&config)?;
    }
    Ok(written)
}

/// Starts root N+1 from the published root N with the changes asked for. It is stored as pending and
/// signed by nobody yet.
pub fn rotate(args: &RotateArgs, now: OffsetDateTime) -> Result<RootReport, RootError> {
    let dir = RepoDir::new(&args.repo);
    let _lock = dir.lock()?;
    let repo = dir.load()?;
    if let Some(pending) = dir.pending_root()?
        && !args.force
    {
        return Err(RootError::PendingExists {
            path: args.repo.join(".mast/root.pending.json"),
            version: pending.version(),
        });
    }
    let current = repo.root();
    let mut spec = RootSpec::from_root(&current.signed).map_err(RootError::Build)?;
    let load = |paths: &[PathBuf]| -> Result<Vec<RoleKey>, KeyError> {
        paths.iter().map(|p| load_role_key(p)).collect()
    };
    let root_keys = load(&args.root_keys)?;
    if !root_keys.is_empty() {
        spec.root.keys = root_keys.iter().map(|k| k.public.clone()).collect();
    }
    if let Some(threshold) = args.root_threshold {
        spec.root.threshold = threshold;
    }
    let mut pending_keys = RememberedKeys::default();
    for (paths, slot, remember) in [
        (
            &args.targets_keys,
            &mut spec.targets,
            &mut pending_keys.targets,
        ),
        (
            &args.snapshot_keys,
            &mut spec.snapshot,
            &mut pending_keys.snapshot,
        ),
        (
            &args.timestamp_keys,
            &mut spec.timestamp,
            &mut pending_keys.timestamp,
        ),
    ] {
        let keys = load(paths)?;
        if keys.is_empty() {
            continue;
        }
        *slot = RoleSpec {
            keys: keys.iter().map(|k| k.public.clone()).collect(),
            threshold: 1,
        };
        if let Some(private) = keys.iter().find(|k| k.private.is_some()) {
            *remember = std::path::absolute(&private.path).ok();
        }
    }
    let mut config = dir.config()?;
    let expiries = crate::durations::apply(config.expiries(), &args.lifetimes);
    let expires = expiries.expiry("root", now).map_err(RootError::Build)?;
    let next = rotate_root(&current.signed, &spec, expires).map_err(RootError::Build)?;
    let status = root_signing_status(&next, Some(current));
    let report = signing_report(&next, Some(current), &status);
    config.lifetimes = crate::repo::RepoConfig::new(&expiries).lifetimes;
    config.pending_keys = (pending_keys != RememberedKeys::default()).then_some(pending_keys);
    dir.save_config(&config)?;
    dir.save_pending_root(&next)?;
    Ok(RootReport {
        repo: args.repo.clone(),
        pending: Some(report),
        published_version: Some(current.version()),
        published_now: false,
        written: Written::default(),
    })
}

/// The pending root's signing status, if there is one.
pub fn status(repo: &Path) -> Result<RootReport, RootError> {
    let dir = RepoDir::new(repo);
    let published = if dir.is_published() {
        Some(dir.load()?)
    } else {
        None
    };
    let pending = dir.pending_root()?;
    if pending.is_none() && published.is_none() {
        return Err(RepoError::NotARepository(repo.to_path_buf()).into());
    }
    let previous = published
        .as_ref()
        .map(Repository::root)
        .filter(|p| pending.as_ref().is_some_and(|n| n.version() > p.version()));
    let report = pending.as_ref().map(|p| {
        let status = root_signing_status(p, previous);
        signing_report(p, previous, &status)
    });
    Ok(RootReport {
        repo: repo.to_path_buf(),
        pending: report,
        published_version: published.as_ref().map(|r| r.root().version()),
        published_now: false,
        written: Written::default(),
    })
}

/// The signing report of `new`: who signed, both thresholds, what is missing.
pub fn signing_report(
    new: &Signed<Root>,
    previous: Option<&Signed<Root>>,
    status: &SigningStatus,
) -> SigningReport {
    let mut signed_by = BTreeSet::new();
    for root in std::iter::once(new).chain(previous) {
        let Some(role) = root.signed.role("root") else {
            continue;
        };
        for id in &role.keyids {
            let Some(key) = root.signed.keys.get(id) else {
                continue;
            };
            let valid = new
                .signatures
                .iter()
                .any(|s| &s.keyid == id && key.verify(id, new.canonical_signed(), &s.sig).is_ok());
            if valid {
                signed_by.insert(id.as_str().to_owned());
            }
        }
    }
    SigningReport {
        version: new.version(),
        expires: new.expires().to_string(),
        signed_by: signed_by.into_iter().collect(),
        own: Threshold {
            version: new.version(),
            have: status.have_new,
            need: status.need_new,
        },
        previous: previous.map(|p| Threshold {
            version: p.version(),
            have: status.have_prev,
            need: status.need_prev,
        }),
        missing: status
            .missing_keyids
            .iter()
            .map(|k| k.as_str().to_owned())
            .collect(),
        complete: status.is_complete(),
    }
}

fn is_root_key(root: &Root, keyid: &KeyId) -> bool {
    root.role("root").is_some_and(|r| r.keyids.contains(keyid))
}

/// Online roles whose keys or threshold differ between two roots.
fn changed_roles(old: &Root, new: &Root) -> Vec<OnlineRole> {
    [
        OnlineRole::Targets,
        OnlineRole::Snapshot,
        OnlineRole::Timestamp,
    ]
    .into_iter()
    .filter(|role| {
        let keys = |root: &Root| {
            root.role(role.name()).map(|r| {
                (
                    r.keyids.iter().cloned().collect::<BTreeSet<_>>(),
                    r.threshold,
                )
            })
        };
        keys(old) != keys(new)
    })
    .collect()
}

/// `base` with the keys of `over` where it has them.
fn merged(base: &RememberedKeys, over: Option<&RememberedKeys>) -> RememberedKeys {
    let Some(over) = over else {
        return base.clone();
    };
    RememberedKeys {
        targets: over.targets.clone().or_else(|| base.targets.clone()),
        snapshot: over.snapshot.clone().or_else(|| base.snapshot.clone()),
        timestamp: over.timestamp.clone().or_else(|| base.timestamp.clone()),
    }
}

impl fmt::Display for SigningReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let met = |t: &Threshold| if t.have >= t.need { "met" } else { "NOT met" };
        writeln!(
            f,
            "root       version {} (expires {})",
            self.version, self.expires
        )?;
        writeln!(
            f,
            "threshold  version {}: {}/{} {}",
            self.own.version,
            self.own.have,
            self.own.need,
            met(&self.own)
        )?;
        if let Some(prev) = &self.previous {
            writeln!(
                f,
                "threshold  version {}: {}/{} {}",
                prev.version,
                prev.have,
                prev.need,
                met(prev)
            )?;
        }
        for id in &self.signed_by {
            writeln!(f, "signed by  {id}")?;
        }
        for id in &self.missing {
            writeln!(f, "missing    {id}")?;
        }
        write!(
            f,
            "status     {}",
            if self.complete {
                "complete"
            } else {
                "incomplete"
            }
        )
    }
}

impl fmt::Display for RootReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "repository {}", self.repo.display())?;
        if let Some(v) = self.published_version {
            writeln!(f, "published  root version {v}")?;
        }
        match &self.pending {
            None => write!(f, "no root is pending"),
            Some(p) if self.published_now => write!(
                f,
                "{p}\npublished  root version {} ({} files written, timestamp.json last)",
                p.version,
                self.written.files.len()
            ),
            Some(p) => write!(f, "{p}"),
        }
    }
}
