//! `mast`: the packager binary. Every command's logic lives in the `mast_packager` library; `main` parses
//! arguments, runs the command and maps its error to an exit code (see `docs/packager.md`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use mast_packager::durations::{Lifetime, parse_duration};
use mast_packager::release::ReleaseArgs as Release;
use mast_packager::signers::OnlineKeyPaths;
use mast_packager::{ExitStatus, exit, init, inspect, keys, pack, release, root, timestamp};
use mast_protocol::release::{AgentVersion, Channel};
use time::{Duration, OffsetDateTime};

/// The mast packager: keys, TUF repositories, bundles and releases.
#[derive(Debug, Parser)]
#[command(name = "mast", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// What `mast` can do.
#[derive(Debug, Subcommand)]
enum Command {
    /// Generate an ed25519 key pair: KEY (PKCS#8 PEM, mode 0600) and KEY.pub (SPKI PEM).
    Keygen(KeygenArgs),
    /// Create and manage a TUF repository directory.
    #[command(subcommand)]
    Repo(RepoCommand),
    /// Sign and rotate root metadata (offline key holders).
    #[command(subcommand)]
    Root(RootCommand),
    /// Pack a directory of Kubernetes manifests into a canonical bundle tar.
    Pack(PackArgs),
    /// Add a packed bundle to a channel of a repository as a new signed release.
    Release(ReleaseArgs),
    /// Keep the repository's online metadata fresh.
    #[command(subcommand)]
    Timestamp(TimestampCommand),
    /// Describe a bundle (objects, sizes) or a repository (channels, releases, expiries).
    Inspect(InspectArgs),
    /// Verify a repository, then upload what a mirror lacks (dir:, http(s)://, oci://), timestamp last.
    Publish(mast_packager::publish::PublishArgs),
    /// Verify a mirror as a new site would and print the release of a channel it would apply.
    Verify(mast_packager::verify::VerifyArgs),
}

/// `mast repo …`
#[derive(Debug, Subcommand)]
enum RepoCommand {
    /// Create a new repository (root version 1 and empty targets).
    Init(RepoInitArgs),
}

/// `mast root …`
#[derive(Debug, Subcommand)]
enum RootCommand {
    /// Add a signature to the pending root, and print who has signed and what is missing.
    Sign(RootSignArgs),
    /// Start root version N+1 with new keys or thresholds; it must then be signed by both N's and N+1's
    /// root thresholds.
    Rotate(RootRotateArgs),
    /// Print the signing status of the pending root, if any.
    Status(RootStatusArgs),
}

/// `mast timestamp …`
#[derive(Debug, Subcommand)]
enum TimestampCommand {
    /// Re-sign timestamp (and snapshot when it nears expiry) with the online keys; a no-op when nothing
    /// nears expiry. Fit for cron.
    Refresh(RefreshArgs),
}

/// Text for people, JSON for programs.
#[derive(Debug, Clone, Copy, Default, ValueEnum)]
enum Output {
    /// Human-readable text.
    #[default]
    Text,
    /// One JSON document on stdout.
    Json,
}

#[derive(Debug, Args)]
struct OutputArg {
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    output: Output,
}

#[derive(Debug, Args)]
struct KeygenArgs {
    /// Where to write the private key; the public key goes to KEY.pub. Neither may exist.
    #[arg(long, value_name = "KEY")]
    out: PathBuf,
    #[command(flatten)]
    output: OutputArg,
}

#[derive(Debug, Args)]
struct RepoInitArgs {
    /// The repository directory to create (must be absent or empty).
    #[arg(value_name = "DIR")]
    dir: PathBuf,
    /// A root key (private or public; repeat for several holders).
    #[arg(long = "root-key", value_name = "KEY", required = true)]
    root_keys: Vec<PathBuf>,
    /// How many distinct root keys must sign a root.
    #[arg(long, value_name = "N", default_value_t = 1)]
    root_threshold: u64,
    /// The targets key (private key, or public when another machine signs releases).
    #[arg(long = "targets-key", value_name = "KEY", required = true)]
    targets_keys: Vec<PathBuf>,
    /// The snapshot key.
    #[arg(long = "snapshot-key", value_name = "KEY", required = true)]
    snapshot_keys: Vec<PathBuf>,
    /// The timestamp key.
    #[arg(long = "timestamp-key", value_name = "KEY", required = true)]
    timestamp_keys: Vec<PathBuf>,
    /// A role's lifetime, e.g. `root=365d`, `timestamp=7d` (units s, m, h, d, w; repeatable).
    #[arg(long = "expires", value_name = "ROLE=DURATION")]
    expires: Vec<Lifetime>,
    /// Do not remember the online private key paths in REPO/.mast/config.json (then every release and
    /// refresh needs key flags or MAST_*_KEY variables).
    #[arg(long)]
    no_remember_keys: bool,
    #[command(flatten)]
    output: OutputArg,
}

#[derive(Debug, Args)]
struct RootSignArgs {
    /// The repository directory.
    #[arg(value_name = "REPO")]
    repo: PathBuf,
    /// A root private key to sign with (repeatable).
    #[arg(long = "key", value_name = "KEY", required = true)]
    keys: Vec<PathBuf>,
    /// Online keys, needed when this signature completes a root that changes online roles (or root 1).
    #[command(flatten)]
    online: OnlineKeyArgs,
    #[command(flatten)]
    output: OutputArg,
}

#[derive(Debug, Args)]
struct RootStatusArgs {
    /// The repository directory.
    #[arg(value_name = "REPO")]
    repo: PathBuf,
    #[command(flatten)]
    output: OutputArg,
}

#[derive(Debug, Args)]
struct RootRotateArgs {
    /// The repository directory.
    #[arg(value_name = "REPO")]
    repo: PathBuf,
    /// The new root keys (replace the current ones; private or public).
    #[arg(long = "root-key", value_name = "KEY")]
    root_keys: Vec<PathBuf>,
    /// The new root threshold.
    #[arg(long, value_name = "N")]
    root_threshold: Option<u64>,
    /// New targets keys.
    #[arg(long = "targets-key", value_name = "KEY")]
    targets_keys: Vec<PathBuf>,
    /// New snapshot keys.
    #[arg(long = "snapshot-key", value_name = "KEY")]
    snapshot_keys: Vec<PathBuf>,
    /// New timestamp keys.
    #[arg(long = "timestamp-key", value_name = "KEY")]
    timestamp_keys: Vec<PathBuf>,
    /// Lifetimes from now on, e.g. `root=365d` (the new root's), `timestamp=3d`.
    #[arg(long = "expires", value_name = "ROLE=DURATION")]
    expires: Vec<Lifetime>,
    /// Replace a pending root that has not been published yet.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    output: OutputArg,
}

#[derive(Debug, Args)]
struct PackArgs {
    /// The directory of rendered manifests.
    #[arg(value_name = "DIR")]
    dir: PathBuf,
    /// Where to write the bundle: the canonical tar (its sha256 names the content).
    #[arg(long, value_name = "BUNDLE")]
    out: PathBuf,
    #[command(flatten)]
    output: OutputArg,
}

#[derive(Debug, Args)]
struct OnlineKeyArgs {
    /// The targets private key (default: remembered in REPO/.mast/keys.json, or $MAST_TARGETS_KEY).
    #[arg(long = "targets-key", value_name = "KEY", env = "MAST_TARGETS_KEY")]
    targets_key: Option<PathBuf>,
    /// The snapshot private key (default: remembered, or $MAST_SNAPSHOT_KEY).
    #[arg(long = "snapshot-key", value_name = "KEY", env = "MAST_SNAPSHOT_KEY")]
    snapshot_key: Option<PathBuf>,
    /// The timestamp private key (default: remembered, or $MAST_TIMESTAMP_KEY).
    #[arg(long = "timestamp-key", value_name = "KEY", env = "MAST_TIMESTAMP_KEY")]
    timestamp_key: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct ReleaseArgs {
    /// The repository directory.
    #[arg(value_name = "REPO")]
    repo: PathBuf,
    /// The bundle made by `mast pack` (a canonical tar).
    #[arg(value_name = "BUNDLE")]
    bundle: PathBuf,
    /// The channel (a DNS label: `prod`, `canary-eu`).
    #[arg(long, value_name = "CHANNEL")]
    channel: Channel,
    /// The release number; default one above the channel's highest.
    #[arg(long, value_name = "N")]
    release: Option<u64>,
    /// Rollout waves, e.g. `10%@+0h,50%@+2h,100%@+1d` (default: everyone at once).
    #[arg(long, value_name = "SPEC")]
    waves: Option<String>,
    /// The oldest agent version that may apply this release.
    #[arg(long, value_name = "X.Y.Z", default_value = "0.0.0", value_parser = AgentVersion::parse_release)]
    min_agent_version: AgentVersion,
    #[command(flatten)]
    keys: OnlineKeyArgs,
    #[command(flatten)]
    output: OutputArg,
}

#[derive(Debug, Args)]
struct RefreshArgs {
    /// The repository directory.
    #[arg(value_name = "REPO")]
    repo: PathBuf,
    /// Re-sign when an expiry falls within this window (default: half the timestamp lifetime; units s, m,
    /// h, d, w).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    window: Option<Duration>,
    /// Re-sign the timestamp even when nothing nears expiry.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    keys: OnlineKeyArgs,
    #[command(flatten)]
    output: OutputArg,
}

#[derive(Debug, Args)]
struct InspectArgs {
    /// A bundle file (tar or tar.gz) or a repository directory.
    #[arg(value_name = "BUNDLE|REPO")]
    path: PathBuf,
    /// Warn when an expiry is closer than this (default 3d).
    #[arg(long, value_name = "DURATION", default_value = "3d", value_parser = parse_duration)]
    warn_within: Duration,
    #[command(flatten)]
    output: OutputArg,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // clap prints help and version to stdout with success, and usage errors (naming the flag) to
            // stderr.
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(exit::USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mast: error: {}", message(&e));
            ExitCode::from(exit_code(&e))
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    // One instant per command: every expiry it signs and every check it makes agree.
    let now = OffsetDateTime::now_utc();
    match cli.command {
        Command::Keygen(a) => emit(a.output.output, &keys::generate(&a.out)?),
        Command::Repo(RepoCommand::Init(a)) => {
            let args = init::InitArgs {
                dir: a.dir,
                root_keys: a.root_keys,
                root_threshold: a.root_threshold,
                targets_keys: a.targets_keys,
                snapshot_keys: a.snapshot_keys,
                timestamp_keys: a.timestamp_keys,
                lifetimes: a.expires,
                remember_keys: !a.no_remember_keys,
            };
            emit(a.output.output, &init::init(&args, now)?)
        }
        Command::Root(RootCommand::Sign(a)) => {
            let report = root::sign(&a.repo, &a.keys, &a.online.paths(), now)?;
            emit(a.output.output, &report)
        }
        Command::Root(RootCommand::Rotate(a)) => {
            let args = root::RotateArgs {
                repo: a.repo,
                root_keys: a.root_keys,
                root_threshold: a.root_threshold,
                targets_keys: a.targets_keys,
                snapshot_keys: a.snapshot_keys,
                timestamp_keys: a.timestamp_keys,
                lifetimes: a.expires,
                force: a.force,
            };
            emit(a.output.output, &root::rotate(&args, now)?)
        }
        Command::Root(RootCommand::Status(a)) => emit(a.output.output, &root::status(&a.repo)?),
        Command::Pack(a) => emit(a.output.output, &pack::pack(&a.dir, &a.out)?),
        Command::Release(a) => {
            let args = Release {
                repo: a.repo,
                bundle: a.bundle,
                channel: a.channel,
                release: a.release,
                waves: a.waves,
                min_agent_version: a.min_agent_version,
                keys: a.keys.paths(),
            };
            emit(a.output.output, &release::release(&args, now)?)
        }
        Command::Timestamp(TimestampCommand::Refresh(a)) => {
            let report = timestamp::refresh(&a.repo, &a.keys.paths(), a.window, a.force, now)?;
            emit(a.output.output, &report)
        }
        Command::Inspect(a) => emit(
            a.output.output,
            &inspect::inspect(&a.path, a.warn_within, now)?,
        ),
        Command::Publish(args) => Ok(mast_packager::publish::command(args)?),
        Command::Verify(args) => Ok(mast_packager::verify::command(args)?),
    }
}

impl OnlineKeyArgs {
    fn paths(&self) -> OnlineKeyPaths {
        OnlineKeyPaths {
            targets: self.targets_key.clone(),
            snapshot: self.snapshot_key.clone(),
            timestamp: self.timestamp_key.clone(),
        }
    }
}

/// Prints a command's report on stdout: text for people, one JSON document for programs.
fn emit<R: std::fmt::Display + serde::Serialize>(output: Output, report: &R) -> anyhow::Result<()> {
    use std::io::Write as _;
    let text = match output {
        Output::Text => report.to_string(),
        Output::Json => serde_json::to_string_pretty(report)?,
    };
    match writeln!(std::io::stdout().lock(), "{text}") {
        // `mast inspect … | head` closing the pipe early is not a failure of the command.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// The error and its causes on one line, skipping a cause whose text its parent already carries (most
/// errors here name their source in their own message).
fn message(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
    }
    out
}

/// The exit code of the first error in the chain that has one; 1 otherwise.
fn exit_code(e: &anyhow::Error) -> u8 {
    fn code<E: ExitStatus + std::error::Error + Send + Sync + 'static>(
        e: &anyhow::Error,
    ) -> Option<u8> {
        e.downcast_ref::<E>().map(ExitStatus::exit_code)
    }
    code::<keys::KeyError>(e)
        .or_else(|| code::<init::InitError>(e))
        .or_else(|| code::<root::RootError>(e))
        .or_else(|| code::<pack::PackError>(e))
        .or_else(|| code::<release::ReleaseError>(e))
        .or_else(|| code::<timestamp::RefreshError>(e))
        .or_else(|| code::<inspect::InspectError>(e))
        .or_else(|| code::<mast_packager::publish::PublishError>(e))
        .or_else(|| code::<mast_packager::verify::VerifyError>(e))
        .unwrap_or(1)
}
