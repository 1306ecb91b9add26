//! `mast verify MIRROR --root ROOT.json --channel C`: checks a mirror exactly as a new site would, and says
//! which release that site would apply.
//!
//! From the given root (the one sites ship with), the TUF client workflow walks the root chain and
//! refreshes timestamp, snapshot and targets ([`mast_mirror::client`]); the channel's release is chosen by
//! [`select_release`], the agent's own rule; then both forms are downloaded and checked end to end: the
//! bundle against its signed length and sha256, gunzipped within the signed tar length to the signed tar
//! digest, and walked with the agent's limits; the index against its signed length and sha256, and every
//! chunk against the index before decompression, reassembled to the same tar digest. Any failure is an
//! error naming the file; nothing is written anywhere.
//!
//! Releases are read from the top-level targets role, where `mast release` signs them.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::path::PathBuf;

use mast_mirror::client::{Client, ClientError, MemoryStore, fetch_target, fetch_verified};
use mast_mirror::{ErrorKind, Mirror, MirrorOptions, MirrorRead, MirrorSpec, ObjectPath};
use mast_protocol::bundle::{
    ChunkIndex, IndexLimits, Reassembler, WalkLimits, gunzip_bounded, walk,
};
use mast_protocol::digest::Sha256Digest;
use mast_protocol::release::{
    AgentVersion, Channel, NamedTarget, WaveDecision, Waves, seed_for, select_release,
};
use mast_protocol::tuf::verify::signed_sha256;
use mast_protocol::tuf::{Expiry, Limits, TrustedMetadata};
use serde::Serialize;
use time::OffsetDateTime;

use crate::publish::{OutputFormat, print_report};

/// `mast verify` arguments.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The mirror: `dir:PATH`, `file:///PATH`, `http(s)://…`, `oci://REGISTRY/REPOSITORY`, `oci+http://…`.
    #[arg(value_name = "MIRROR")]
    pub mirror: MirrorSpec,
    /// The root metadata sites trust (usually `metadata/1.root.json` of the repository).
    #[arg(long, value_name = "ROOT.json")]
    pub root: PathBuf,
    /// The channel to verify.
    #[arg(long, value_name = "CHANNEL")]
    pub channel: Channel,
    /// Verify as an agent of this version would (releases may require a minimum).
    #[arg(long, value_name = "X.Y.Z", default_value = env!("CARGO_PKG_VERSION"))]
    pub agent_version: String,
    /// Extra CA certificates (PEM) to trust for https and oci mirrors.
    #[arg(long, value_name = "PEM")]
    pub ca_file: Option<PathBuf>,
    /// Also say what the site with this cluster id may do now under the release's rollout waves.
    #[arg(long, value_name = "ID")]
    pub cluster_id: Option<String>,
    /// Registry user name, for oci mirrors that need one to pull.
    #[arg(
        long,
        env = "MAST_REGISTRY_USER",
        value_name = "USER",
        requires = "registry_password"
    )]
    pub registry_user: Option<String>,
    /// Registry password or token.
    #[arg(
        long,
        env = "MAST_REGISTRY_PASSWORD",
        hide_env_values = true,
        value_name = "SECRET",
        requires = "registry_user"
    )]
    pub registry_password: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub output: OutputFormat,
}

/// Why a mirror does not verify.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The root file cannot be read or is not a valid, self-signed root.
    #[error("--root {}: {reason}", path.display())]
    Root {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The root file cannot be read.
    #[error("--root {}: {source}", path.display())]
    RootUnreadable {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A flag that cannot be used.
    #[error("{0}")]
    Usage(String),
    /// The TUF workflow or a download refused what the mirror serves.
    #[error("{mirror}: {source}")]
    Client {
        /// The mirror.
        mirror: String,
        /// What failed.
        #[source]
        source: ClientError,
    },
    /// The channel's releases are malformed, rolled back, or need a newer agent.
    #[error("{mirror}: channel {channel}: {reason}")]
    Release {
        /// The mirror.
        mirror: String,
        /// The channel.
        channel: Channel,
        /// What is wrong.
        reason: String,
    },
    /// The channel has no complete release.
    #[error("{mirror}: channel {channel} has no release (no bundle and index pair is signed)")]
    NoRelease {
        /// The mirror.
        mirror: String,
        /// The channel.
        channel: Channel,
    },
    /// A bundle or index whose content is not the release it is signed as.
    #[error("{mirror}: {object}: {reason}")]
    Content {
        /// The mirror.
        mirror: String,
        /// The object.
        object: String,
        /// What is wrong.
        reason: String,
    },
}

impl crate::ExitStatus for VerifyError {
    fn exit_code(&self) -> u8 {
        match self {
            Self::RootUnreadable { source, .. } => crate::io_exit_code(source),
            Self::Usage(_) => crate::exit::USAGE,
            // The mirror could not be read: a link or server problem, not a verdict on its content.
            Self::Client {
                source: ClientError::Mirror(e),
                ..
            } if e.kind() != ErrorKind::NotFound => crate::exit::IO,
            Self::Root { .. }
            | Self::Client { .. }
            | Self::Release { .. }
            | Self::NoRelease { .. }
            | Self::Content { .. } => crate::exit::DATA,
        }
    }
}

/// One target of the verified release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifiedTarget {
    /// The target name (`channels/C/N/bundle.tar.gz`).
    pub target: String,
    /// Its sha256.
    pub sha256: String,
    /// Its length.
    pub length: u64,
}

/// The release a site would apply, and what was checked.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// The mirror.
    pub mirror: String,
    /// The channel.
    pub channel: String,
    /// The release number a site would apply.
    pub release: u64,
    /// sha256 of the uncompressed canonical tar.
    pub tar_sha256: String,
    /// Its length.
    pub tar_length: u64,
    /// Regular files in the bundle.
    pub files: usize,
    /// The whole bundle.
    pub bundle: VerifiedTarget,
    /// The chunk index.
    pub index: VerifiedTarget,
    /// Chunks in the index (distinct).
    pub chunks: usize,
    /// Their compressed bytes.
    pub chunk_bytes: u64,
    /// The minimum agent version.
    pub min_agent_version: String,
    /// The rollout plan: which seeds may apply from when (empty: everyone at once).
    pub waves: Vec<WaveReport>,
    /// With `--cluster-id`: what that site may do now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutReport>,
    /// Trusted versions: root, timestamp, snapshot, targets.
    pub metadata: MetadataVersions,
    #[serde(skip)]
    plan: Waves,
}

/// One wave of a rollout plan.
#[derive(Debug, Clone, Serialize)]
pub struct WaveReport {
    /// Sites with a seed below this (and not in an earlier wave)…
    pub seed_below: u16,
    /// …may apply from this instant.
    pub start: String,
}

/// What one site may do with the release now.
#[derive(Debug, Clone, Serialize)]
pub struct RolloutReport {
    /// The cluster id given.
    pub cluster_id: String,
    /// Its rollout seed.
    pub seed: u16,
    /// `apply_now`, `not_before` or `not_in_rollout`.
    pub decision: &'static str,
    /// For `not_before`: when its wave starts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_before: Option<String>,
}

/// The versions of the metadata the verdict rests on.
#[derive(Debug, Clone, Serialize)]
pub struct MetadataVersions {
    /// Root.
    pub root: u64,
    /// Timestamp.
    pub timestamp: u64,
    /// Snapshot.
    pub snapshot: u64,
    /// Targets.
    pub targets: u64,
}

/// Runs `mast verify` and prints its report on stdout.
pub fn command(args: VerifyArgs) -> Result<(), VerifyError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| VerifyError::Usage(format!("tokio runtime: {e}")))?;
    let report = runtime.block_on(verify_args(&args, OffsetDateTime::now_utc()))?;
    print_report(args.output, &report)
        .map_err(|e| VerifyError::Usage(format!("writing the report: {e}")))
}

impl std::fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = &self.metadata;
        writeln!(
            f,
            "{}: verified (root v{}, timestamp v{}, snapshot v{}, targets v{})",
            self.mirror, m.root, m.timestamp, m.snapshot, m.targets
        )?;
        writeln!(
            f,
            "channel {}: a site would apply release {} (tar sha256:{}, {} bytes, {} files)",
            self.channel, self.release, self.tar_sha256, self.tar_length, self.files
        )?;
        for t in [&self.bundle, &self.index] {
            writeln!(f, "  {}  sha256:{}  {} bytes", t.target, t.sha256, t.length)?;
        }
        write!(f, "  {} chunks, {} bytes", self.chunks, self.chunk_bytes)?;
        if !self.waves.is_empty() {
            let plan: Vec<String> = self
                .waves
                .iter()
                .map(|w| format!("seeds below {} from {}", w.seed_below, w.start))
                .collect();
            write!(f, "\n  rollout: {}", plan.join(", "))?;
        }
        if let Some(r) = &self.rollout {
            let what = match (r.decision, &r.not_before) {
                ("apply_now", _) => "applies it now".to_owned(),
                (_, Some(at)) => format!("applies it from {at}"),
                _ => "is not in this release's rollout".to_owned(),
            };
            write!(f, "\n  cluster {} (seed {}) {what}", r.cluster_id, r.seed)?;
        }
        Ok(())
    }
}

/// Opens the mirror and root the arguments name and verifies as of `now`.
pub async fn verify_args(
    args: &VerifyArgs,
    now: OffsetDateTime,
) -> Result<VerifyReport, VerifyError> {
    let root = std::fs::read(&args.root).map_err(|source| VerifyError::RootUnreadable {
        path: args.root.clone(),
        source,
    })?;
    let agent = AgentVersion::parse_release(&args.agent_version)
        .map_err(|e| VerifyError::Usage(format!("--agent-version: {e}")))?;
    let options = MirrorOptions {
        ca_file: args.ca_file.clone(),
        credentials: args
            .registry_user
            .clone()
            .zip(args.registry_password.clone()),
        ..MirrorOptions::default()
    };
    let mirror =
        Mirror::open(&args.mirror, &options).map_err(|e| VerifyError::Usage(format!("{e}")))?;
    let trusted = TrustedMetadata::new(&root).map_err(|e| VerifyError::Root {
        path: args.root.clone(),
        reason: e.to_string(),
    })?;
    let mut report = verify(&mirror, trusted, root, &args.channel, &agent, now).await?;
    if let Some(id) = &args.cluster_id {
        report.rollout = Some(rollout(&report, id, now));
    }
    Ok(report)
}

/// What the site `cluster_id` may do with the verified release at `now` (the agent's own rule).
fn rollout(report: &VerifyReport, cluster_id: &str, now: OffsetDateTime) -> RolloutReport {
    let seed = seed_for(cluster_id);
    let (decision, not_before) = match report.plan.decision(seed, now) {
        WaveDecision::ApplyNow => ("apply_now", None),
        WaveDecision::NotBefore(at) => ("not_before", Some(Expiry::new(at).to_string())),
        WaveDecision::NotInRollout => ("not_in_rollout", None),
    };
    RolloutReport {
        cluster_id: cluster_id.to_owned(),
        seed,
        decision,
        not_before,
    }
}

/// Verifies `mirror` from `trusted` (whose bytes are `root`) as a new site running `agent` would at `now`,
/// and returns the release of `channel` it would apply.
pub async fn verify<M: MirrorRead>(
    mirror: &M,
    trusted: TrustedMetadata,
    root: Vec<u8>,
    channel: &Channel,
    agent: &AgentVersion,
    now: OffsetDateTime,
) -> Result<VerifyReport, VerifyError> {
    let name = mirror.describe();
    let client_err = |source| VerifyError::Client {
        mirror: name.clone(),
        source,
    };
    let mut client = Client::new(
        mirror,
        MemoryStore::with_root(root),
        trusted,
        now,
        Limits::default(),
    );
    client.refresh().await.map_err(client_err)?;
    let t = client.trusted();
    let metadata = MetadataVersions {
        root: t.root().version(),
        timestamp: t.timestamp().map_or(0, |x| x.version()),
        snapshot: t.snapshot().map_or(0, |x| x.version()),
        targets: t.targets().map_or(0, |x| x.version()),
    };
    let targets = t
        .targets()
        .map(|x| x.signed.targets.clone())
        .unwrap_or_default();
    let selected = select_release(
        targets.iter().map(|(n, f)| (n.as_str(), f)),
        channel,
        None,
        agent,
    )
    .map_err(|e| VerifyError::Release {
        mirror: name.clone(),
        channel: channel.clone(),
        reason: e.to_string(),
    })?
    .ok_or_else(|| VerifyError::NoRelease {
        mirror: name.clone(),
        channel: channel.clone(),
    })?;
    // The lookup a site makes (delegations and all) must give the same targets the listing did.
    for named in [&selected.bundle, &selected.index] {
        let found = client.find_target(&named.name).await.map_err(client_err)?;
        if found != named.file {
            return Err(content(
                &name,
                &named.name,
                "the lookup disagrees with the listing",
            ));
        }
    }
    let release = &selected.release;

    let mut gz = Vec::new();
    fetch_target(
        mirror,
        &selected.bundle.name,
        &selected.bundle.file,
        &mut gz,
    )
    .await
    .map_err(client_err)?;
    let tar = gunzip_bounded(&gz, release.tar_length)
        .map_err(|e| content(&name, &selected.bundle.name, &e.to_string()))?;
    if tar.len() as u64 != release.tar_length || Sha256Digest::of(&tar) != release.tar_sha256 {
        return Err(content(
            &name,
            &selected.bundle.name,
            "does not hold the tar its custom.mast signs",
        ));
    }
    let files = walk(&tar, &WalkLimits::default())
        .map_err(|e| content(&name, &selected.bundle.name, &e.to_string()))?
        .len();

    let mut index_bytes = Vec::new();
    fetch_target(
        mirror,
        &selected.index.name,
        &selected.index.file,
        &mut index_bytes,
    )
    .await
    .map_err(client_err)?;
    let index = ChunkIndex::from_slice(&index_bytes, &IndexLimits::default())
        .map_err(|e| content(&name, &selected.index.name, &e.to_string()))?;
    if index.tar_sha256() != release.tar_sha256 || index.tar_length() != release.tar_length {
        return Err(content(
            &name,
            &selected.index.name,
            "describes another tar than its custom.mast",
        ));
    }
    let (chunks, chunk_bytes) = reassemble(mirror, &index).await.map_err(|e| match e {
        Reassembly::Fetch(source) => client_err(source),
        Reassembly::Bundle(reason) => content(&name, &selected.index.name, &reason),
    })?;

    Ok(VerifyReport {
        mirror: name.clone(),
        channel: channel.to_string(),
        release: release.number.get(),
        tar_sha256: release.tar_sha256.to_hex(),
        tar_length: release.tar_length,
        files,
        bundle: verified(&selected.bundle),
        index: verified(&selected.index),
        chunks,
        chunk_bytes,
        min_agent_version: release.min_agent_version.to_string(),
        waves: release
            .waves
            .as_slice()
            .iter()
            .map(|w| WaveReport {
                seed_below: w.seed_below,
                start: Expiry::new(w.start).to_string(),
            })
            .collect(),
        rollout: None,
        plan: release.waves.clone(),
        metadata,
    })
}

enum Reassembly {
    Fetch(ClientError),
    Bundle(String),
}

/// Fetches each distinct chunk once, checks it against the index before zstd sees it, and rebuilds the
/// tar's digest; then checks the chunk pack. Returns the distinct chunks and their bytes.
async fn reassemble<M: MirrorRead>(
    mirror: &M,
    index: &ChunkIndex,
) -> Result<(usize, u64), Reassembly> {
    let mut reassembler = Reassembler::new(index);
    let mut held: HashMap<Sha256Digest, Vec<u8>> = HashMap::new();
    let mut bytes = 0;
    while let Some(entry) = reassembler.next_chunk() {
        let digest = entry.sha256();
        let compressed = match held.entry(digest) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(slot) => {
                let mut compressed = Vec::new();
                fetch_verified(
                    mirror,
                    &ObjectPath::Chunk(digest),
                    entry.length(),
                    &digest,
                    &mut compressed,
                )
                .await
                .map_err(Reassembly::Fetch)?;
                bytes += entry.length();
                slot.insert(compressed)
            }
        };
        reassembler
            .feed(compressed)
            .map_err(|e| Reassembly::Bundle(format!("chunk {digest}: {e}")))?;
    }
    reassembler
        .finish()
        .map_err(|e| Reassembly::Bundle(e.to_string()))?;
    // A first install reads the chunk pack instead of the chunks: it must be there and be the signed one.
    let pack = index.pack();
    fetch_verified(
        mirror,
        &ObjectPath::Chunk(pack.sha256()),
        pack.length(),
        &pack.sha256(),
        &mut Vec::new(),
    )
    .await
    .map_err(Reassembly::Fetch)?;
    Ok((held.len(), bytes))
}

fn verified(named: &NamedTarget) -> VerifiedTarget {
    VerifiedTarget {
        target: named.name.clone(),
        sha256: signed_sha256(&named.file.hashes)
            .map(|d| d.to_hex())
            .unwrap_or_default(),
        length: named.file.length,
    }
}

fn content(mirror: &str, object: &str, reason: &str) -> VerifyError {
    VerifyError::Content {
        mirror: mirror.to_owned(),
        object: object.to_owned(),
        reason: reason.to_owned(),
    }
}
