//! The publishing side: a signed repository written by the packager's own library, served by real nginx
//! (and Debian's docker-registry for the OCI share), each behind a fault proxy; the lying mirror's views.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use mast_packager::init::{InitArgs, init};
use mast_packager::keys::generate;
use mast_packager::publish::{OutputFormat, PublishArgs, publish};
use mast_packager::release::{ReleaseArgs, release};
use mast_packager::root::{RotateArgs, rotate, sign};
use mast_packager::signers::OnlineKeyPaths;
use mast_protocol::release::AgentVersion;
use mast_test_support::{FaultProxy, Nginx, NginxConfig, Registry};
use time::OffsetDateTime;

use crate::digest::{FileSet, file_set_of_dir};

/// The OCI repository the registry share of the fleet reads.
const OCI_REPOSITORY: &str = "mast/fleet";

/// One published release: its number, the files a site must end up with, and when it was published.
#[derive(Debug, Clone)]
pub(crate) struct Published {
    /// The release number on its channel.
    pub(crate) number: u64,
    /// The manifests, exactly as released.
    pub(crate) files: FileSet,
    /// When the last mirror had it.
    pub(crate) at: Instant,
}

/// Which lying view a site's first mirror is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lie {
    /// Metadata older than what the site trusts (a rollback, refused by TUF).
    Stale,
    /// Current metadata, every chunk tampered with (refused by its signed sha256).
    Tampered,
}

/// The repository, its servers and proxies.
pub(crate) struct Origin {
    dir: tempfile::TempDir,
    channel: String,
    files: usize,
    revision: u32,
    root_keys: Vec<PathBuf>,
    nginx: Nginx,
    registry: Option<Registry>,
    /// nginx serving `views/`, whose entries are symlinks to the honest repository or a lying copy.
    liar: Nginx,
    /// Faults between the sites and nginx.
    pub(crate) http_proxy: FaultProxy,
    /// Faults between the OCI sites and the registry.
    pub(crate) oci_proxy: Option<FaultProxy>,
    /// Faults between the lying-mirror sites and their first mirror.
    pub(crate) liar_proxy: FaultProxy,
    /// Every release published, by number.
    pub(crate) releases: BTreeMap<u64, Published>,
}

impl Origin {
    /// Keys, an empty repository with channel `channel`, `files` manifests, and the servers.
    pub(crate) fn new(channel: &str, files: usize, with_registry: bool) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("mast-soak-origin")
            .tempdir()?;
        let keys = dir.path().join("keys");
        fs::create_dir(&keys)?;
        let key = |name: &str| -> Result<PathBuf> {
            let path = keys.join(format!("{name}.pem"));
            generate(&path).with_context(|| format!("generating {name}"))?;
            Ok(path)
        };
        let root = key("root-1")?;
        let repo = dir.path().join("repo");
        init(
            &InitArgs {
                dir: repo.clone(),
                root_keys: vec![root.clone()],
                root_threshold: 1,
                targets_keys: vec![key("targets")?],
                snapshot_keys: vec![key("snapshot")?],
                timestamp_keys: vec![key("timestamp")?],
                lifetimes: Vec::new(),
                remember_keys: true,
            },
            OffsetDateTime::now_utc(),
        )
        .context("mast init")?;
        let manifests = dir.path().join("manifests");
        fs::create_dir(&manifests)?;
        for i in 0..files {
            write_manifest(&manifests, i, 0)?;
        }
        // The stale view: the repository as it was before any release, older than anything a site that
        // has run a release trusts.
        let views = dir.path().join("views");
        fs::create_dir(&views)?;
        copy_dir(&repo, &dir.path().join("stale"))?;
        // nginx's validators are the file's mtime (in seconds) and size, and a timestamp.json written in
        // the same second with the same size as a later honest one would then revalidate as "not
        // modified": a freeze, which TUF can only catch at expiry, not the rollback this view is meant to
        // be. An mtime far in the past keeps the stale file's validators its own.
        fs::File::options()
            .write(true)
            .open(dir.path().join("stale/metadata/timestamp.json"))?
            .set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000))?;
        for view in ["stale", "tampered"] {
            point(&views.join(view), &repo)?;
        }
        let nginx = NginxConfig::new(&repo).read_only().start();
        let liar = NginxConfig::new(&views).read_only().start();
        let registry = with_registry.then(Registry::start);
        let http_proxy = FaultProxy::start(addr(nginx.port()))?;
        let liar_proxy = FaultProxy::start(addr(liar.port()))?;
        let oci_proxy = match &registry {
            Some(registry) => Some(FaultProxy::start(addr(registry.port()))?),
            None => None,
        };
        Ok(Self {
            dir,
            channel: channel.to_owned(),
            files,
            revision: 0,
            root_keys: vec![root],
            nginx,
            registry,
            liar,
            http_proxy,
            oci_proxy,
            liar_proxy,
            releases: BTreeMap::new(),
        })
    }

    /// The repository directory.
    pub(crate) fn repo(&self) -> PathBuf {
        self.dir.path().join("repo")
    }

    /// The root a site is configured with (version 1, as shipped).
    pub(crate) fn initial_root(&self) -> PathBuf {
        self.repo().join("metadata/1.root.json")
    }

    /// The channel.
    pub(crate) fn channel(&self) -> &str {
        &self.channel
    }

    /// The honest HTTP mirror, through the fault proxy.
    pub(crate) fn http_url(&self) -> String {
        self.http_proxy.url("")
    }

    /// The OCI mirror through its fault proxy, when a registry runs.
    pub(crate) fn oci_spec(&self) -> Option<(String, String)> {
        self.oci_proxy
            .as_ref()
            .map(|proxy| (proxy.addr().to_string(), OCI_REPOSITORY.to_owned()))
    }

    /// A lying view's URL, through its proxy.
    pub(crate) fn liar_url(&self, lie: Lie) -> String {
        self.liar_proxy.url(match lie {
            Lie::Stale => "stale/",
            Lie::Tampered => "tampered/",
        })
    }

    /// The origin nginx (its access log counts requests).
    pub(crate) fn nginx(&self) -> &Nginx {
        &self.nginx
    }

    /// The liar's nginx.
    pub(crate) fn liar_nginx(&self) -> &Nginx {
        &self.liar
    }

    /// Changes `changed` manifests for the next release (none for the first) and returns the files it
    /// will hold.
    pub(crate) fn next_files(&mut self, changed: usize) -> Result<FileSet> {
        self.revision += 1;
        let manifests = self.dir.path().join("manifests");
        if !self.releases.is_empty() {
            for k in 0..changed.min(self.files) {
                let i = (self.revision as usize * 7 + k * 13) % self.files;
                write_manifest(&manifests, i, self.revision)?;
            }
        }
        file_set_of_dir(&manifests)
    }

    /// Releases the manifest tree as the channel's next release, then publishes it to the registry.
    pub(crate) async fn release(&mut self) -> Result<Published> {
        let manifests = self.dir.path().join("manifests");
        let report = release(
            &ReleaseArgs {
                repo: self.repo(),
                bundle: manifests.clone(),
                channel: self.channel.parse().context("channel")?,
                release: None,
                waves: None,
                min_agent_version: AgentVersion::new(0, 1, 0),
                keys: OnlineKeyPaths::default(),
            },
            OffsetDateTime::now_utc(),
        )
        .context("mast release")?;
        self.publish_oci().await?;
        let published = Published {
            number: report.release,
            files: file_set_of_dir(&manifests)?,
            at: Instant::now(),
        };
        self.releases.insert(report.release, published.clone());
        Ok(published)
    }

    /// Rotates the root key (`mast root rotate` then `mast root sign` by the old and the new key), which
    /// publishes root N+1 signed by both; returns the new root version.
    pub(crate) async fn rotate_root(&mut self) -> Result<u64> {
        let next = self.root_keys.len() + 1;
        let key = self.dir.path().join(format!("keys/root-{next}.pem"));
        generate(&key).context("generating the new root key")?;
        let now = OffsetDateTime::now_utc();
        rotate(
            &RotateArgs {
                repo: self.repo(),
                root_keys: vec![key.clone()],
                ..RotateArgs::default()
            },
            now,
        )
        .context("mast root rotate")?;
        let signers = [
            self.root_keys[self.root_keys.len() - 1].clone(),
            key.clone(),
        ];
        let report = sign(&self.repo(), &signers, &OnlineKeyPaths::default(), now)
            .context("mast root sign")?;
        if !report.published_now {
            bail!("the rotated root was not published after both signatures");
        }
        self.root_keys.push(key);
        self.publish_oci().await?;
        report
            .published_version
            .context("no published root version after the rotation")
    }

    /// Points the lying views at lying copies: the stale one at the repository as it was before any
    /// release, the tampered one at a copy of the repository now with every chunk's bytes changed.
    pub(crate) fn start_lying(&self) -> Result<()> {
        let copy = self.dir.path().join("tampered");
        if copy.exists() {
            fs::remove_dir_all(&copy)?;
        }
        copy_dir(&self.repo(), &copy)?;
        for entry in fs::read_dir(copy.join("chunks"))? {
            let path = entry?.path();
            let mut bytes = fs::read(&path)?;
            let middle = bytes.len() / 2;
            if let Some(byte) = bytes.get_mut(middle) {
                *byte ^= 0x5a;
            }
            fs::write(&path, bytes)?;
        }
        let views = self.dir.path().join("views");
        point(&views.join("stale"), &self.dir.path().join("stale"))?;
        point(&views.join("tampered"), &copy)?;
        Ok(())
    }

    /// Points the lying views back at the honest repository.
    pub(crate) fn stop_lying(&self) -> Result<()> {
        let views = self.dir.path().join("views");
        for view in ["stale", "tampered"] {
            point(&views.join(view), &self.repo())?;
        }
        Ok(())
    }

    /// A repository for the crash trials' channel, sharing this one's keys: releases `crash` with
    /// `files` larger manifests.
    pub(crate) fn crash_manifests(&self) -> PathBuf {
        self.dir.path().join("crash-manifests")
    }

    /// Releases the crash channel's next revision (every file changes, so each release is a full
    /// download and a full apply).
    pub(crate) fn release_crash(
        &mut self,
        channel: &str,
        files: usize,
        revision: u32,
    ) -> Result<Published> {
        let manifests = self.crash_manifests();
        fs::create_dir_all(&manifests)?;
        for i in 0..files {
            write_manifest(&manifests, i, 1000 + revision)?;
        }
        let report = release(
            &ReleaseArgs {
                repo: self.repo(),
                bundle: manifests.clone(),
                channel: channel.parse().context("channel")?,
                release: None,
                waves: None,
                min_agent_version: AgentVersion::new(0, 1, 0),
                keys: OnlineKeyPaths::default(),
            },
            OffsetDateTime::now_utc(),
        )
        .context("mast release (crash channel)")?;
        Ok(Published {
            number: report.release,
            files: file_set_of_dir(&manifests)?,
            at: Instant::now(),
        })
    }

    async fn publish_oci(&self) -> Result<()> {
        let Some(registry) = &self.registry else {
            return Ok(());
        };
        let to = format!("oci+http://{}/{OCI_REPOSITORY}", registry.host());
        publish(
            &PublishArgs {
                repo: self.repo(),
                to: to.parse().context("registry destination")?,
                presign_cmd: None,
                ca_file: None,
                registry_user: None,
                registry_password: None,
                jobs: 8,
                attempts: 4,
                source: String::new(),
                output: OutputFormat::Json,
            },
            OffsetDateTime::now_utc(),
        )
        .await
        .with_context(|| format!("mast publish --to {to}"))?;
        Ok(())
    }
}

fn addr(port: u16) -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], port))
}

/// A ConfigMap of about 4 KiB whose data differs per file and revision, so that chunks are distinct.
fn write_manifest(dir: &Path, i: usize, revision: u32) -> Result<()> {
    let mut data = String::new();
    for line in 0..50 {
        data.push_str(&format!(
            "    key-{line:03}: \"file {i} revision {revision} line {line} {}\"\n",
            (i * 7919 + line * 104_729 + revision as usize * 31) % 1_000_003
        ));
    }
    let yaml = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: config-{i:04}\n  namespace: edge\ndata:\n{data}"
    );
    fs::write(dir.join(format!("config-{i:04}.yaml")), yaml)?;
    Ok(())
}

/// Atomically points the symlink `link` at `target`.
fn point(link: &Path, target: &Path) -> Result<()> {
    let temp = link.with_extension("new");
    let _ = fs::remove_file(&temp);
    std::os::unix::fs::symlink(target, &temp)?;
    fs::rename(&temp, link)?;
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}
