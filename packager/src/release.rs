//! `mast release`: a bundle becomes release N of a channel.
//!
//! The canonical tar is published in both forms of `docs/bundles.md` — `bundle.tar.gz` and the chunk index
//! with its chunks — as two targets carrying the same `custom.mast` fields, and targets, snapshot and
//! timestamp are signed anew. Everything is built and signed in memory first; files are then written in
//! the order that keeps the repository whole at every instant: chunks, the two targets, versioned
//! metadata, and `metadata/timestamp.json` last.

use std::fmt;
use std::path::PathBuf;

use mast_protocol::bundle::{ChunkIndex, ChunkParams, gzip};
use mast_protocol::digest::Sha256Digest;
use mast_protocol::release::{
    AgentVersion, Channel, Release, ReleaseError as FieldError, ReleaseInfo, ReleaseKind,
    ReleaseNumber, parse_waves_spec,
};
use mast_protocol::tuf::builder::consistent_target_path;
use mast_protocol::tuf::{BuildError, Repository};
use serde::Serialize;
use time::OffsetDateTime;

use crate::pack::{Bundle, PackError, Unchecked};
use crate::repo::{RepoDir, RepoError, Written, check_root_fresh};
use crate::signers::{OnlineKeyPaths, OnlineKeys, OnlineRole, SignersError};
use crate::{ExitStatus, exit};

/// Why a release was refused. Nothing is written when it is.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    /// The repository.
    #[error(transparent)]
    Repo(#[from] RepoError),
    /// The bundle.
    #[error(transparent)]
    Bundle(#[from] PackError),
    /// An online key.
    #[error(transparent)]
    Signers(#[from] SignersError),
    /// A flag's value (`--waves`, `--release`).
    #[error("{flag}: {source}")]
    Flag {
        /// The flag.
        flag: &'static str,
        /// Why.
        #[source]
        source: FieldError,
    },
    /// The release number is not above the channel's highest.
    #[error(
        "--release {requested}: channel {channel} already has release {current}; a release must be above it"
    )]
    NotAbove {
        /// The channel.
        channel: Channel,
        /// The number asked for.
        requested: u64,
        /// The channel's highest.
        current: u64,
    },
    /// A target already in the repository does not read as a mast release.
    #[error("existing target: {0}")]
    ExistingTarget(#[source] FieldError),
    /// Chunking failed, or the builder refused.
    #[error("{0}")]
    Build(String),
    /// The builder refused to sign.
    #[error(transparent)]
    Sign(BuildError),
}

impl ExitStatus for ReleaseError {
    fn exit_code(&self) -> u8 {
        match self {
            Self::Repo(e) => e.exit_code(),
            Self::Bundle(e) => e.exit_code(),
            Self::Signers(e) => e.exit_code(),
            Self::Flag { .. } => exit::USAGE,
            Self::NotAbove { .. } | Self::ExistingTarget(_) | Self::Sign(_) => exit::DATA,
            Self::Build(_) => exit::SOFTWARE,
        }
    }
}

/// What `mast release` needs.
#[derive(Debug, Clone)]
pub struct ReleaseArgs {
    /// The repository.
    pub repo: PathBuf,
    /// The bundle (canonical tar from `mast pack`, a tar.gz, or a directory).
    pub bundle: PathBuf,
    /// The channel.
    pub channel: Channel,
    /// The release number; default one above the channel's highest.
    pub release: Option<u64>,
    /// `--waves`, parsed against the release time.
    pub waves: Option<String>,
    /// The oldest agent that may apply it.
    pub min_agent_version: AgentVersion,
    /// Online key paths given.
    pub keys: OnlineKeyPaths,
}

/// What `mast release` did.
#[derive(Debug, Serialize)]
pub struct ReleaseReport {
    /// The repository.
    pub repo: PathBuf,
    /// The channel.
    pub channel: String,
    /// The release number.
    pub release: u64,
    /// The previous highest release of the channel.
    pub previous: Option<u64>,
    /// sha256 of the canonical tar.
    pub tar_sha256: String,
    /// Its length.
    pub tar_bytes: u64,
    /// Manifest and options files.
    pub files: usize,
    /// Kubernetes objects.
    pub objects: usize,
    /// `bundle.tar.gz`'s file in the repository (`targets/channels/…/<sha256>.bundle.tar.gz`).
    pub bundle_target: String,
    /// Its length.
    pub bundle_bytes: u64,
    /// `index.json`'s file in the repository.
    pub index_target: String,
    /// Chunks in the index (distinct).
    pub chunks: usize,
    /// Chunks the repository did not hold yet.
    pub new_chunks: usize,
    /// Bytes of those new chunks.
    pub new_chunk_bytes: u64,
    /// Roles signed, with their new versions.
    pub signed: Vec<String>,
    /// When the new timestamp expires.
    pub timestamp_expires: String,
    /// Files written.
    pub written: Written,
}

/// Adds the bundle as the channel's next release and signs targets, snapshot and timestamp.
pub fn release(args: &ReleaseArgs, now: OffsetDateTime) -> Result<ReleaseReport, ReleaseError> {
    let waves = match &args.waves {
        Some(spec) => parse_waves_spec(spec, now).map_err(|source| ReleaseError::Flag {
            flag: "--waves",
            source,
        })?,
        None => Default::default(),
    };
    let dir = RepoDir::new(&args.repo);
    let _lock = dir.lock()?;
    let mut repo = dir.load()?;
    check_root_fresh(&repo, now)?;
    let config = dir.config()?;
    let keys = OnlineKeys::load(&args.keys, &config.keys)?;
    keys.require(&[
        OnlineRole::Targets,
        OnlineRole::Snapshot,
        OnlineRole::Timestamp,
    ])?;
    keys.check_against(&repo.root().signed)?;

    let previous = highest_release(&repo, &args.channel)?;
    let requested = args
        .release
        .unwrap_or_else(|| previous.map_or(1, |p| p.saturating_add(1)));
    let number = ReleaseNumber::new(requested).map_err(|source| ReleaseError::Flag {
        flag: "--release",
        source,
    })?;
    if let Some(current) = previous
        && requested <= current
    {
        return Err(ReleaseError::NotAbove {
            channel: args.channel.clone(),
            requested,
            current,
        });
    }

    // The canonical tar is known before its manifests are checked, so compressing and chunking it run
    // alongside the checks; a refused bundle only costs that CPU, never a write.
    let unchecked = Unchecked::open(&args.bundle)?;
    let tar = unchecked.tar()?;
    let (content, gz, chunked) = std::thread::scope(|scope| {
        let chunker = scope.spawn(|| ChunkIndex::build(&tar, &ChunkParams::default()));
        let gzipper = scope.spawn(|| gzip(&tar));
        let content = unchecked.check(true);
        (content, gzipper.join(), chunker.join())
    });
    let content = content?;
    let (gz, chunked) = match (gz, chunked) {
        (Ok(gz), Ok(chunked)) => (gz, chunked),
        // gzip and the chunker panic only on a bug; surface it rather than hide it.
        (Err(panic), _) | (_, Err(panic)) => std::panic::resume_unwind(panic),
    };
    let (index, chunks) = chunked.map_err(|e| ReleaseError::Build(e.to_string()))?;
    let bundle = Bundle {
        // The chunker hashed the whole tar already.
        tar_sha256: index.tar_sha256(),
        tar,
        content,
    };
    let index_bytes = index.to_bytes();

    let plan = Release {
        channel: args.channel.clone(),
        number,
        tar_sha256: bundle.tar_sha256,
        tar_length: bundle.tar.len() as u64,
        min_agent_version: args.min_agent_version.clone(),
        waves,
    };
    let bundle_target = plan.target(ReleaseKind::Bundle, gz.len() as u64, Sha256Digest::of(&gz));
    let index_target = plan.target(
        ReleaseKind::Index,
        index_bytes.len() as u64,
        Sha256Digest::of(&index_bytes),
    );
    let bundle_path = consistent_target_path(&bundle_target.name, &bundle_target.file)
        .map_err(ReleaseError::Sign)?;
    let index_path = consistent_target_path(&index_target.name, &index_target.file)
        .map_err(ReleaseError::Sign)?;
    repo.add_target(&bundle_target.name, bundle_target.file)
        .map_err(ReleaseError::Sign)?;
    repo.add_target(&index_target.name, index_target.file)
        .map_err(ReleaseError::Sign)?;
    let signed = repo
        .commit(&keys.signers(), now)
        .map_err(ReleaseError::Sign)?;

    // Everything is signed; from here on only writes, in an order that never tears the repository.
    let chunk_names: Vec<String> = chunks
        .iter()
        .map(|c| format!("chunks/{}", c.digest.to_hex()))
        .collect();
    // The chunk pack lives next to the chunks, a blob named by its digest like them.
    let pack = chunks
        .iter()
        .map(|c| c.bytes.as_slice())
        .collect::<Vec<_>>()
        .concat();
    let pack_name = format!("chunks/{}", index.pack().sha256().to_hex());
    let blobs = chunk_names
        .iter()
        .zip(&chunks)
        .map(|(name, chunk)| (name.as_str(), chunk.bytes.as_slice()))
        .chain([
            (pack_name.as_str(), pack.as_slice()),
            (bundle_path.as_str(), gz.as_slice()),
            (index_path.as_str(), index_bytes.as_slice()),
        ]);
    let mut written = Written {
        files: dir.write_blobs(blobs)?,
        replaced_leftovers: Vec::new(),
    };
    let fresh: std::collections::BTreeSet<&str> =
        written.files.iter().map(String::as_str).collect();
    let (mut new_chunks, mut new_chunk_bytes) = (0, 0);
    for (name, chunk) in chunk_names.iter().zip(&chunks) {
        if fresh.contains(name.as_str()) {
            new_chunks += 1;
            new_chunk_bytes += chunk.bytes.len() as u64;
        }
    }
    let metadata = dir.write_metadata(&repo)?;
    written.files.extend(metadata.files);
    written.replaced_leftovers = metadata.replaced_leftovers;

    Ok(ReleaseReport {
        repo: args.repo.clone(),
        channel: args.channel.to_string(),
        release: number.get(),
        previous,
        tar_sha256: bundle.tar_sha256.to_hex(),
        tar_bytes: bundle.tar.len() as u64,
        files: bundle.content.files.len(),
        objects: bundle.content.objects.len(),
        bundle_target: bundle_path,
        bundle_bytes: gz.len() as u64,
        index_target: index_path,
        chunks: chunks.len(),
        new_chunks,
        new_chunk_bytes,
        signed: signed
            .iter()
            .map(|role| format!("{role} v{}", role_version(&repo, role)))
            .collect(),
        timestamp_expires: repo.timestamp().expires().to_string(),
        written,
    })
}

/// The highest release number of `channel` in the top-level targets, if any.
pub fn highest_release(repo: &Repository, channel: &Channel) -> Result<Option<u64>, ReleaseError> {
    let prefix = format!("channels/{channel}/");
    let mut highest = None;
    for (name, file) in &repo.targets().signed.targets {
        if !name.starts_with(&prefix) {
            continue;
        }
        if let Some(info) =
            ReleaseInfo::from_target(name, file).map_err(ReleaseError::ExistingTarget)?
        {
            highest = highest.max(Some(info.release.number.get()));
        }
    }
    Ok(highest)
}

fn role_version(repo: &Repository, role: &str) -> u64 {
    match role {
        "snapshot" => repo.snapshot().version(),
        "timestamp" => repo.timestamp().version(),
        "targets" => repo.targets().version(),
        other => repo.delegated_role(other).map_or(0, |d| d.version()),
    }
}

impl fmt::Display for ReleaseReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let previous = self.previous.map_or("none".to_owned(), |p| p.to_string());
        writeln!(
            f,
            "release    {} #{} (previous: {previous})",
            self.channel, self.release
        )?;
        writeln!(
            f,
            "content    {} files, {} objects, tar {} bytes, sha256 {}",
            self.files, self.objects, self.tar_bytes, self.tar_sha256
        )?;
        writeln!(
            f,
            "bundle     {} ({} bytes)",
            self.bundle_target, self.bundle_bytes
        )?;
        writeln!(f, "index      {}", self.index_target)?;
        writeln!(
            f,
            "chunks     {} in all, {} new ({} bytes)",
            self.chunks, self.new_chunks, self.new_chunk_bytes
        )?;
        writeln!(f, "signed     {}", self.signed.join(", "))?;
        write!(f, "timestamp  expires {}", self.timestamp_expires)?;
        for leftover in &self.written.replaced_leftovers {
            write!(
                f,
                "\nWARN       replaced {leftover}, a leftover of an interrupted run"
            )?;
        }
        Ok(())
    }
}
