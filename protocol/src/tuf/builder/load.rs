//! Reading a repository back from the files [`Repository::files`] wrote.
//!
//! Loading verifies as a client would — root chain, signatures, lengths and hashes along timestamp →
//! snapshot → targets → delegated roles — except for expiry: the packager must be able to open a repository
//! whose metadata has expired in order to refresh it. Building on a tampered repository would sign the
//! tampering, so every mismatch is an error naming the file.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::tuf::metadata::{MetaFile, Role, Root, Signed, Snapshot, Targets, Timestamp};
use crate::tuf::verify::{verify_bytes, verify_threshold};

use super::naming::metadata_path;
use super::repository::{Repository, check_consistent};
use super::root::check_root_signed_by;
use super::{BuildError, Expiries, Trust};

impl Repository {
    /// Reads a repository from `(path, bytes)` pairs as [`files`](Self::files) names them (paths relative
    /// to the mirror root; anything outside `metadata/` is ignored, as are versions nothing refers to).
    ///
    /// The root chain must be complete from `1.root.json`, each root signed by its predecessor's and its
    /// own root keys; the other roles are found from `timestamp.json` down. Expiries are not checked.
    /// Lifetimes for later commits start at [`Expiries::default`].
    pub fn load<I, N, B>(files: I) -> Result<Self, BuildError>
    where
        I: IntoIterator<Item = (N, B)>,
        N: AsRef<str>,
        B: AsRef<[u8]>,
    {
        let files: BTreeMap<String, B> = files
            .into_iter()
            .filter(|(name, _)| name.as_ref().starts_with("metadata/"))
            .map(|(name, bytes)| (name.as_ref().to_owned(), bytes))
            .collect();
        let files = Files(files);
        let roots = load_roots(&files)?;
        // `load_roots` returns at least version 1 or fails.
        let root = &roots[roots.len() - 1].signed;
        let top = |role: &'static str| -> Result<Trust<'_>, BuildError> {
            let keys = root
                .role(role)
                .ok_or_else(|| BuildError::UnknownRole(role.to_owned()))?;
            Ok(Trust {
                keys: &root.keys,
                keyids: &keys.keyids,
                threshold: keys.threshold,
            })
        };

        let ts_file = metadata_path(Timestamp::NAME, 0);
        let timestamp: Signed<Timestamp> = files.read(&ts_file, None)?;
        check_signatures(&ts_file, &timestamp, Timestamp::NAME, top(Timestamp::NAME)?)?;

        let snap_meta = timestamp.signed.snapshot_meta();
        let snap_file = metadata_path(Snapshot::NAME, snap_meta.version);
        let snapshot: Signed<Snapshot> = files.read(&snap_file, Some(snap_meta))?;
        check_signatures(&snap_file, &snapshot, Snapshot::NAME, top(Snapshot::NAME)?)?;

        let listed = |role: &str| -> Result<(String, &MetaFile), BuildError> {
            let meta = snapshot
                .signed
                .meta
                .get(&format!("{role}.json"))
                .ok_or_else(|| BuildError::Inconsistent {
                    file: snap_file.clone(),
                    reason: format!("does not list {role}.json"),
                })?;
            Ok((metadata_path(role, meta.version), meta))
        };
        let (targets_file, meta) = listed(Targets::NAME)?;
        let targets: Signed<Targets> = files.read(&targets_file, Some(meta))?;
        check_signatures(&targets_file, &targets, Targets::NAME, top(Targets::NAME)?)?;

        // Breadth-first through the delegation tree; a role reached twice is read once (the first
        // delegation that names it wins, as in a client's pre-order search).
        let mut delegated: BTreeMap<String, Signed<Targets>> = BTreeMap::new();
        let mut seen = BTreeSet::new();
        let mut queue: VecDeque<Signed<Targets>> = VecDeque::from([targets.clone()]);
        while let Some(parent) = queue.pop_front() {
            let Some(delegations) = &parent.signed.delegations else {
                continue;
            };
            for role in &delegations.roles {
                if !seen.insert(role.name.clone()) {
                    continue;
                }
                let (file, meta) = listed(&role.name)?;
                let doc: Signed<Targets> = files.read(&file, Some(meta))?;
                let trust = Trust {
                    keys: &delegations.keys,
                    keyids: &role.keyids,
                    threshold: role.threshold,
                };
                check_signatures(&file, &doc, &role.name, trust)?;
                queue.push_back(doc.clone());
                delegated.insert(role.name.clone(), doc);
            }
        }

        Ok(Self {
            roots,
            targets,
            delegated,
            snapshot,
            timestamp,
            staged: BTreeMap::new(),
            unpublished: BTreeSet::new(),
            expiries: Expiries::default(),
        })
    }
}

struct Files<B>(BTreeMap<String, B>);

impl<B: AsRef<[u8]>> Files<B> {
    /// Parses `file`, first checking it against the length and hashes its referrer signed, then checking
    /// that its version is the one referred to.
    fn read<T: Role>(&self, file: &str, meta: Option<&MetaFile>) -> Result<Signed<T>, BuildError> {
        let bytes = self
            .0
            .get(file)
            .ok_or_else(|| BuildError::MissingFile(file.to_owned()))?
            .as_ref();
        if let Some(meta) = meta {
            verify_bytes(bytes, meta.length, meta.hashes.as_ref()).map_err(|source| {
                BuildError::Integrity {
                    file: file.to_owned(),
                    source,
                }
            })?;
        }
        let doc = Signed::<T>::from_slice(bytes).map_err(|source| BuildError::Metadata {
            file: file.to_owned(),
            source,
        })?;
        if let Some(meta) = meta
            && doc.version() != meta.version
        {
            return Err(BuildError::Inconsistent {
                file: file.to_owned(),
                reason: format!(
                    "has version {}, referred to as {}",
                    doc.version(),
                    meta.version
                ),
            });
        }
        Ok(doc)
    }
}

/// The root chain 1..=N from every `metadata/N.root.json` given, each link verified.
fn load_roots<B: AsRef<[u8]>>(files: &Files<B>) -> Result<Vec<Signed<Root>>, BuildError> {
    let newest = files
        .0
        .keys()
        .filter_map(|name| root_version(name))
        .max()
        .unwrap_or(1);
    let mut roots: Vec<Signed<Root>> = Vec::new();
    for version in 1..=newest {
        let file = metadata_path(Root::NAME, version);
        let root: Signed<Root> = files.read(&file, None)?;
        if root.version() != version {
            return Err(BuildError::Inconsistent {
                file,
                reason: format!("holds root version {}", root.version()),
            });
        }
        check_consistent(&root)?;
        if let Some(previous) = roots.last() {
            check_root_signed_by(&root, previous)?;
        }
        check_root_signed_by(&root, &root)?;
        roots.push(root);
    }
    Ok(roots)
}

/// The N of `metadata/N.root.json`, written without leading zeros.
fn root_version(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("metadata/")?.strip_suffix(".root.json")?;
    if digits.is_empty() || digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn check_signatures<T: Role>(
    file: &str,
    doc: &Signed<T>,
    role: &str,
    trust: Trust<'_>,
) -> Result<(), BuildError> {
    verify_threshold(doc, role, trust.keys, trust.keyids, trust.threshold).map_err(|source| {
        BuildError::Signatures {
            file: file.to_owned(),
            source,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_file_names() {
        assert_eq!(root_version("metadata/12.root.json"), Some(12));
        for bad in [
            "metadata/012.root.json",
            "metadata/.root.json",
            "metadata/root.json",
            "12.root.json",
        ] {
            assert_eq!(root_version(bad), None, "{bad}");
        }
    }
}
