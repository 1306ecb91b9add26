//! What `mast publish` uploads, found by verifying the repository directory first.
//!
//! The repository is read as a client would read a mirror, and more: the TUF workflow from
//! `metadata/1.root.json` (so expired or badly signed metadata is refused), every target every trusted
//! targets role lists (length and sha256), every chunk of every index (length, sha256, decompression and the
//! reassembled tar's digest) and every bundle's tar digest. Only what passes is planned; a file under
//! `targets/` or `chunks/` that no signed metadata reaches is not published at all.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use mast_mirror::client::{Client, MemoryStore, target_object};
use mast_mirror::{DirMirror, ObjectPath, ReleaseObjects};
use mast_protocol::bundle::{ChunkIndex, IndexLimits, Reassembler, gunzip_bounded};
use mast_protocol::digest::Sha256Digest;
use mast_protocol::release::{ReleaseInfo, ReleaseKind};
use mast_protocol::tuf::builder::Repository;
use mast_protocol::tuf::{Limits, TargetFile, Targets, TrustedMetadata};
use time::OffsetDateTime;

use super::PublishError;

/// Everything to upload, in the order it must land.
#[derive(Debug)]
pub(super) struct Plan {
    /// zstd chunks, by digest.
    pub(super) chunks: Vec<Upload>,
    /// Bundle and index targets.
    pub(super) targets: Vec<Upload>,
    /// Releases to link (OCI tags), lowest first.
    pub(super) releases: Vec<ReleaseObjects>,
    /// Versioned metadata: delegated roles and targets, then snapshot, then the root chain.
    pub(super) metadata: Vec<Upload>,
    /// `metadata/timestamp.json`: the one mutable file, written last.
    pub(super) timestamp: Upload,
    /// The timestamp's version.
    pub(super) timestamp_version: u64,
}

/// One file of the repository directory and where it goes.
#[derive(Debug, Clone)]
pub(super) struct Upload {
    /// Its place in the layout.
    pub(super) object: ObjectPath,
    /// The file in the repository directory.
    pub(super) path: PathBuf,
    /// Its length.
    pub(super) length: u64,
}

impl Plan {
    /// Every upload, in order, with the timestamp last.
    pub(super) fn total_bytes(&self) -> u64 {
        self.chunks
            .iter()
            .chain(&self.targets)
            .chain(&self.metadata)
            .chain(std::iter::once(&self.timestamp))
            .map(|u| u.length)
            .sum()
    }
}

/// Verifies the repository at `repo` as of `now` and plans its upload. `created` and `source` go into
/// each release's OCI annotations.
pub(super) async fn plan(
    repo: &Path,
    now: OffsetDateTime,
    created: &str,
    source: &str,
) -> Result<Plan, PublishError> {
    let bad = |file: &str, reason: String| PublishError::Repository {
        file: repo.join(file),
        reason,
    };
    let metadata = read_metadata_dir(repo)?;
    // Chain, signatures, pinned lengths and hashes, versions (not expiry: that is the client's part below).
    let loaded = Repository::load(metadata.iter().map(|(n, b)| (n.as_str(), b.as_slice())))
        .map_err(|e| bad("metadata", e.to_string()))?;

    // As a client would, from the first root: refuses what a site would refuse, expiry included.
    let first_root = metadata
        .get("metadata/1.root.json")
        .ok_or_else(|| bad("metadata/1.root.json", "missing".to_owned()))?;
    let trusted =
        TrustedMetadata::new(first_root).map_err(|e| bad("metadata/1.root.json", e.to_string()))?;
    let mirror = DirMirror::new(repo);
    let mut client = Client::new(
        &mirror,
        MemoryStore::with_root(first_root.clone()),
        trusted,
        now,
        Limits::default(),
    );
    client
        .refresh()
        .await
        .map_err(|e| bad("metadata", format!("a site would refuse it: {e}")))?;

    let targets = all_targets(&loaded);
    let mut planned_targets = Vec::new();
    let mut releases: BTreeMap<(String, u64), ReleaseParts> = BTreeMap::new();
    for (name, file) in &targets {
        let object = target_object(name, file).map_err(|e| bad("metadata", e.to_string()))?;
        let path = repo.join(object.as_path());
        let bytes = read_verified(&path, &object, file)?;
        planned_targets.push(Upload {
            object: object.clone(),
            path,
            length: file.length,
        });
        let Some(info) = ReleaseInfo::from_target(name, file)
            .map_err(|e| bad("metadata", format!("target {name}: {e}")))?
        else {
            continue;
        };
        let parts = releases
            .entry((info.release.channel.to_string(), info.release.number.get()))
            .or_default();
        let digest = object.sha256().unwrap_or_else(|| Sha256Digest::of(&bytes));
        match info.kind {
            ReleaseKind::Bundle => {
                check_bundle(&bytes, &info, &object.as_path()).map_err(|r| bad(name, r))?;
                parts.bundle = Some((digest, file.length));
            }
            ReleaseKind::Index => {
                let index = check_index(repo, &bytes, &info, &object.as_path())?;
                parts.index = Some((digest, file.length));
                parts.chunks = distinct_chunks(&index);
                parts.pack = Some((index.pack().sha256(), index.pack().length()));
            }
        }
        parts.tar_sha256 = Some(info.release.tar_sha256);
    }

    let mut chunks = Vec::new();
    let mut seen = BTreeSet::new();
    for parts in releases.values() {
        for (digest, length) in parts.chunks.iter().chain(&parts.pack) {
            if seen.insert(*digest) {
                let object = ObjectPath::Chunk(*digest);
                chunks.push(Upload {
                    path: repo.join(object.as_path()),
                    object,
                    length: *length,
                });
            }
        }
    }

    let release_objects = link_list(&releases, created, source);
    let (metadata_uploads, timestamp) = metadata_uploads(repo, &loaded, &metadata)?;
    Ok(Plan {
        chunks,
        targets: planned_targets,
        releases: release_objects,
        metadata: metadata_uploads,
        timestamp,
        timestamp_version: loaded.timestamp().version(),
    })
}

#[derive(Debug, Default)]
struct ReleaseParts {
    bundle: Option<(Sha256Digest, u64)>,
    index: Option<(Sha256Digest, u64)>,
    chunks: Vec<(Sha256Digest, u64)>,
    pack: Option<(Sha256Digest, u64)>,
    tar_sha256: Option<Sha256Digest>,
}

/// Every `metadata/*.json` of the repository, by layout path.
fn read_metadata_dir(repo: &Path) -> Result<BTreeMap<String, Vec<u8>>, PublishError> {
    let dir = repo.join("metadata");
    let io = |path: &Path, source| PublishError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).map_err(|e| io(&dir, e))? {
        let entry = entry.map_err(|e| io(&dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".json") || name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        out.insert(
            format!("metadata/{name}"),
            std::fs::read(&path).map_err(|e| io(&path, e))?,
        );
    }
    Ok(out)
}

/// The targets of `targets` and of every delegated role reachable from it; the first role to list a name
/// wins, as in a client's pre-order search.
fn all_targets(repo: &Repository) -> BTreeMap<String, TargetFile> {
    let mut out = BTreeMap::new();
    let mut stack: Vec<&Targets> = vec![&repo.targets().signed];
    let mut visited = BTreeSet::new();
    while let Some(role) = stack.pop() {
        for (name, file) in &role.targets {
            out.entry(name.clone()).or_insert_with(|| file.clone());
        }
        if let Some(delegations) = &role.delegations {
            for d in delegations.roles.iter().rev() {
                if visited.insert(d.name.clone())
                    && let Some(doc) = repo.delegated_role(&d.name)
                {
                    stack.push(&doc.signed);
                }
            }
        }
    }
    out
}

/// Reads a target file and checks it against its signed length and sha256.
fn read_verified(
    path: &Path,
    object: &ObjectPath,
    file: &TargetFile,
) -> Result<Vec<u8>, PublishError> {
    let bytes = std::fs::read(path).map_err(|source| PublishError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let digest = Sha256Digest::of(&bytes);
    if bytes.len() as u64 != file.length || Some(digest) != object.sha256() {
        return Err(PublishError::Repository {
            file: path.to_path_buf(),
            reason: format!(
                "{} bytes with sha256 {digest}, but the targets metadata signs {} bytes with the sha256 in its name",
                bytes.len(),
                file.length
            ),
        });
    }
    Ok(bytes)
}

/// The bundle must gunzip to the tar its `custom.mast` names.
fn check_bundle(gz: &[u8], info: &ReleaseInfo, object: &str) -> Result<(), String> {
    let tar = gunzip_bounded(gz, info.release.tar_length)
        .map_err(|e| format!("{object}: does not gunzip within the signed tar length: {e}"))?;
    let digest = Sha256Digest::of(&tar);
    if tar.len() as u64 != info.release.tar_length || digest != info.release.tar_sha256 {
        return Err(format!(
            "{object}: holds a tar of {} bytes with sha256 {digest}; custom.mast signs {} bytes with sha256 {}",
            tar.len(),
            info.release.tar_length,
            info.release.tar_sha256
        ));
    }
    Ok(())
}

/// The index must describe the release's tar, and its chunks must be present and rebuild that tar.
fn check_index(
    repo: &Path,
    bytes: &[u8],
    info: &ReleaseInfo,
    object: &str,
) -> Result<ChunkIndex, PublishError> {
    let bad = |file: PathBuf, reason: String| PublishError::Repository { file, reason };
    let index = ChunkIndex::from_slice(bytes, &IndexLimits::default())
        .map_err(|e| bad(repo.join(object), e.to_string()))?;
    if index.tar_sha256() != info.release.tar_sha256
        || index.tar_length() != info.release.tar_length
    {
        return Err(bad(
            repo.join(object),
            "describes another tar than its custom.mast".to_owned(),
        ));
    }
    let mut reassembler = Reassembler::new(&index);
    let mut cache: HashMap<Sha256Digest, Vec<u8>> = HashMap::new();
    while let Some(entry) = reassembler.next_chunk() {
        let path = repo.join(ObjectPath::Chunk(entry.sha256()).as_path());
        let compressed = match cache.get(&entry.sha256()) {
            Some(bytes) => bytes.clone(),
            None => std::fs::read(&path).map_err(|source| PublishError::Io {
                path: path.clone(),
                source,
            })?,
        };
        reassembler
            .feed(&compressed)
            .map_err(|e| bad(path.clone(), e.to_string()))?;
        cache.insert(entry.sha256(), compressed);
    }
    reassembler
        .finish()
        .map_err(|e| bad(repo.join(object), e.to_string()))?;
    let pack = repo.join(ObjectPath::Chunk(index.pack().sha256()).as_path());
    let bytes = std::fs::read(&pack).map_err(|source| PublishError::Io {
        path: pack.clone(),
        source,
    })?;
    let sha256 = Sha256Digest::of(&bytes);
    if bytes.len() as u64 != index.pack().length() || sha256 != index.pack().sha256() {
        return Err(bad(
            pack,
            format!(
                "the chunk pack is {} bytes with sha256 {sha256}, the index says {} bytes with sha256 {}",
                bytes.len(),
                index.pack().length(),
                index.pack().sha256()
            ),
        ));
    }
    Ok(index)
}

/// The distinct chunks of an index, in order of first appearance.
fn distinct_chunks(index: &ChunkIndex) -> Vec<(Sha256Digest, u64)> {
    let mut seen = BTreeSet::new();
    index
        .chunks()
        .iter()
        .filter(|c| seen.insert(c.sha256()))
        .map(|c| (c.sha256(), c.length()))
        .collect()
}

/// Complete releases (bundle and index both signed), lowest first, with each channel's highest marked.
fn link_list(
    releases: &BTreeMap<(String, u64), ReleaseParts>,
    created: &str,
    source: &str,
) -> Vec<ReleaseObjects> {
    let mut highest: BTreeMap<&str, u64> = BTreeMap::new();
    for ((channel, number), parts) in releases {
        if parts.bundle.is_some() && parts.index.is_some() {
            let h = highest.entry(channel).or_default();
            *h = (*h).max(*number);
        }
    }
    releases
        .iter()
        .filter_map(|((channel, number), parts)| {
            Some(ReleaseObjects {
                channel: channel.clone(),
                number: *number,
                latest: highest.get(channel.as_str()) == Some(number),
                bundle: parts.bundle?,
                index: parts.index?,
                chunks: parts.chunks.clone(),
                pack: parts.pack?,
                tar_sha256: parts.tar_sha256?,
                created: created.to_owned(),
                source: source.to_owned(),
            })
        })
        .collect()
}

/// The metadata files the loaded repository names, in upload order, and the timestamp apart.
fn metadata_uploads(
    repo: &Path,
    loaded: &Repository,
    on_disk: &BTreeMap<String, Vec<u8>>,
) -> Result<(Vec<Upload>, Upload), PublishError> {
    let names = loaded.files().map_err(|e| PublishError::Repository {
        file: repo.join("metadata"),
        reason: e.to_string(),
    })?;
    let upload = |name: &str| -> Result<Upload, PublishError> {
        let object = ObjectPath::parse(name).map_err(|e| PublishError::Repository {
            file: repo.join(name),
            reason: e.to_string(),
        })?;
        Ok(Upload {
            path: repo.join(name),
            length: on_disk.get(name).map_or(0, |b| b.len() as u64),
            object,
        })
    };
    // Roots go last of the versioned files: a new root may rotate the online keys, and the shorter the
    // time between it and the timestamp signed under it, the shorter a reader's window of refusal.
    let rank = |name: &str| {
        if name.ends_with(".root.json") {
            2
        } else if name.ends_with(".snapshot.json") {
            1
        } else {
            0
        }
    };
    let mut versioned: Vec<&str> = names
        .iter()
        .map(|(n, _)| n.as_str())
        .filter(|n| *n != "metadata/timestamp.json")
        .collect();
    versioned.sort_by_key(|n| rank(n));
    let metadata = versioned
        .into_iter()
        .map(upload)
        .collect::<Result<_, _>>()?;
    Ok((metadata, upload("metadata/timestamp.json")?))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use mast_protocol::crypto::SigningKey;
    use mast_protocol::tuf::Expiry;
    use mast_protocol::tuf::builder::{
        Expiries, RoleSigners, RoleSpec, RootSpec, new_root, rotate_root,
    };
    use time::Duration;

    use super::*;

    fn parts(complete: bool) -> ReleaseParts {
        let d = Sha256Digest::of(b"x");
        ReleaseParts {
            bundle: Some((d, 1)),
            index: complete.then_some((d, 1)),
            chunks: vec![(d, 1)],
            pack: complete.then_some((d, 1)),
            tar_sha256: Some(d),
        }
    }

    #[test]
    fn links_complete_releases_and_marks_each_channels_highest() {
        let releases = BTreeMap::from([
            (("prod".to_owned(), 1), parts(true)),
            (("prod".to_owned(), 2), parts(true)),
            (("prod".to_owned(), 3), parts(false)),
            (("canary".to_owned(), 9), parts(true)),
        ]);
        let linked: Vec<(String, u64, bool)> = link_list(&releases, "c", "s")
            .into_iter()
            .map(|r| (r.channel, r.number, r.latest))
            .collect();
        assert_eq!(
            linked,
            [
                ("canary".to_owned(), 9, true),
                ("prod".to_owned(), 1, false),
                ("prod".to_owned(), 2, true),
            ]
        );
    }

    #[test]
    fn versioned_metadata_goes_targets_then_snapshot_then_roots_and_the_timestamp_apart() {
        let now = OffsetDateTime::now_utc();
        let k: Vec<SigningKey> = (1..=5u8).map(|i| SigningKey::from_seed(&[i; 32])).collect();
        let one = |k: &SigningKey| RoleSpec {
            keys: vec![k.public()],
            threshold: 1,
        };
        let spec = RootSpec {
            root: one(&k[0]),
            targets: one(&k[1]),
            snapshot: one(&k[2]),
            timestamp: one(&k[3]),
        };
        let mut root = new_root(&spec, 1, Expiry::new(now + Duration::days(9))).unwrap();
        root.sign(&k[0]);
        let mut repo = Repository::create(root, now, Expiries::default()).unwrap();
        let mut next = spec.clone();
        next.timestamp = one(&k[4]);
        let mut v2 = rotate_root(
            &repo.root().signed,
            &next,
            Expiry::new(now + Duration::days(9)),
        )
        .unwrap();
        v2.sign(&k[0]);
        repo.push_root(v2).unwrap();
        let signers = RoleSigners {
            targets: vec![&k[1]],
            snapshot: vec![&k[2]],
            timestamp: vec![&k[4]],
            delegated: BTreeMap::new(),
        };
        repo.commit(&signers, now).unwrap();
        let on_disk: BTreeMap<String, Vec<u8>> = repo.files().unwrap().into_iter().collect();
        let (metadata, timestamp) = metadata_uploads(Path::new("/repo"), &repo, &on_disk).unwrap();
        let order: Vec<String> = metadata.iter().map(|u| u.object.as_path()).collect();
        assert_eq!(
            order,
            [
                "metadata/1.targets.json",
                "metadata/1.snapshot.json",
                "metadata/1.root.json",
                "metadata/2.root.json",
            ]
        );
        assert_eq!(timestamp.object.as_path(), "metadata/timestamp.json");
        assert_eq!(
            timestamp.length,
            on_disk["metadata/timestamp.json"].len() as u64
        );
    }
}
