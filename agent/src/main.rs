//! `mast-agent`: the edge agent binary. Parses arguments and configuration, then calls the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use mast_agent::cmd::{self, CommandError, StatusFormat};
use mast_agent::config::{Config, DEFAULT_CONFIG_PATH, Sources};
use time::OffsetDateTime;

/// The mast edge agent: pulls signed releases from mirrors, verifies them, applies them.
#[derive(Debug, Parser)]
#[command(name = "mast-agent", version = mast_agent::AGENT_VERSION, about, long_about = None)]
struct Cli {
    /// The config file. Without it, /etc/mast/agent.toml is read if it exists.
    #[arg(long, global = true, env = "MAST_CONFIG", value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(flatten)]
    overrides: Overrides,
    #[command(subcommand)]
    command: Command,
}

/// Settings that override the config file and the MAST_* environment.
#[derive(Debug, Args)]
struct Overrides {
    /// The site's cluster id (fixes its rollout seed).
    #[arg(long, global = true, value_name = "ID")]
    cluster_id: Option<String>,
    /// The channel to follow.
    #[arg(long, global = true, value_name = "NAME")]
    channel: Option<String>,
    /// A mirror, tried in the order given (https://…, http://…, oci://REGISTRY/REPO, file:///PATH).
    #[arg(long = "mirror", global = true, value_name = "URL")]
    mirrors: Vec<String>,
    /// The initial trusted root.json.
    #[arg(long, global = true, value_name = "PATH")]
    root: Option<String>,
    /// The state database file.
    #[arg(long, global = true, value_name = "PATH")]
    state: Option<String>,
    /// Where releases are applied: dir:PATH or kube.
    #[arg(long, global = true, value_name = "SPEC")]
    applier: Option<String>,
    /// Where /metrics, /healthz, /readyz and /status listen (ADDRESS:PORT).
    #[arg(long, global = true, value_name = "ADDR")]
    listen: Option<String>,
    /// Log format: plain or json.
    #[arg(long, global = true, value_name = "FORMAT")]
    log_format: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run as a daemon: a pass every poll interval, until SIGTERM.
    Run,
    /// One pass: refresh, fetch, apply. Exit 0 up to date, 1 failed, 3 held for its wave or window.
    Once,
    /// What the site runs, from the state database alone.
    Status {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Output::Plain)]
        output: Output,
        /// How many journal entries to show.
        #[arg(long, default_value_t = 10)]
        journal: u32,
        /// List every drift finding (objects that differ from what was applied).
        #[arg(long)]
        drift: bool,
    },
    /// One pass against a repository directory copied by hand (air gap), verified like any mirror.
    Import {
        /// The repository directory (holding metadata/, targets/, chunks/).
        path: PathBuf,
    },
    /// A plain TUF client with the TUF conformance suite's command line (init, refresh, download);
    /// needs no agent configuration.
    Tuf(mast_agent::tuf_cli::TufArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Output {
    Plain,
    Json,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 64 } else { 0 };
            // Printing clap's own message cannot meaningfully fail.
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mast-agent: {e}");
            e.exit_code()
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode, CommandError> {
    // A standalone TUF client: no config file, environment or state database is read.
    if let Command::Tuf(args) = &cli.command {
        return Ok(mast_agent::tuf_cli::main(args));
    }
    let sources = sources(&cli)?;
    if let Command::Status {
        output,
        journal,
        drift,
    } = &cli.command
    {
        let state = state_path(&sources)?;
        let format = match output {
            Output::Plain => StatusFormat::Plain,
            Output::Json => StatusFormat::Json,
        };
        print!("{}", cmd::status(&state, format, *journal, *drift)?);
        return Ok(ExitCode::SUCCESS);
    }
    let config = Config::load(&sources)?;
    mast_agent::telemetry::init(config.log_format)
        .map_err(|e| CommandError::Other(e.to_string()))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CommandError::Other(format!("starting the runtime: {e}")))?;
    runtime.block_on(async {
        let now = OffsetDateTime::now_utc();
        match &cli.command {
            Command::Run => cmd::run(&config, stop_signal()).await,
            Command::Once => cmd::once(&config, now).await,
            Command::Import { path } => cmd::import(&config, path, now).await,
            Command::Status { .. } | Command::Tuf(_) => Ok(ExitCode::SUCCESS),
        }
    })
}

/// The config file, then the environment, then the flags.
fn sources(cli: &Cli) -> Result<Sources, CommandError> {
    let (path, required) = match &cli.config {
        Some(path) => (path.as_path(), true),
        None => (Path::new(DEFAULT_CONFIG_PATH), false),
    };
    let o = &cli.overrides;
    let one = |v: &Option<String>| v.iter().cloned().collect::<Vec<_>>();
    Ok(Sources::default()
        .with_file(path, required)?
        .with_env(std::env::vars())
        .with_flag("cluster_id", one(&o.cluster_id))
        .with_flag("channel", one(&o.channel))
        .with_flag("mirrors", o.mirrors.clone())
        .with_flag("root", one(&o.root))
        .with_flag("state", one(&o.state))
        .with_flag("applier", one(&o.applier))
        .with_flag("listen", one(&o.listen))
        .with_flag("log_format", one(&o.log_format)))
}

/// The state database path alone: `status` needs nothing else, not even a reachable root file.
fn state_path(sources: &Sources) -> Result<PathBuf, CommandError> {
    Ok(Config::state_path(sources)?)
}

/// Completes on SIGTERM or SIGINT.
async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; stopping on SIGINT only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
