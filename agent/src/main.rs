//! `mast-agent`: the edge agent binary. All logic lives in the library; `main` only parses arguments.

use std::process::ExitCode;

use clap::Parser;

/// The mast edge agent.
#[derive(Debug, Parser)]
#[command(name = "mast-agent", version = mast_agent::AGENT_VERSION, about)]
struct Cli {}

fn main() -> ExitCode {
    let _cli = Cli::parse();
    eprintln!(
        "mast-agent {}: no command is implemented yet",
        mast_agent::AGENT_VERSION
    );
    ExitCode::from(64)
}
