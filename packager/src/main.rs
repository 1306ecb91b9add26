//! `mast`: the packager binary. All logic lives in the library; `main` only parses arguments.

use std::process::ExitCode;

use clap::Parser;

/// The mast packager.
#[derive(Debug, Parser)]
#[command(name = "mast", version, about)]
struct Cli {}

fn main() -> ExitCode {
    let _cli = Cli::parse();
    eprintln!(
        "mast {}: no command is implemented yet",
        env!("CARGO_PKG_VERSION")
    );
    ExitCode::from(64)
}
