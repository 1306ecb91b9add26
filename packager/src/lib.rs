//! The mast packager.
//!
//! Turns a directory of rendered Kubernetes manifests into a signed release on a channel of a TUF
//! repository, and publishes it to mirrors. The repository-side builders live in
//! [`mast_protocol::tuf`]; this crate adds keys on disk, the repository directory, bundle packing and the
//! publishers. Every command is a function here taking typed arguments and the current time and
//! returning a report that is both `Display` (text) and `Serialize` (`--output json`); the `mast` binary
//! only parses flags, prints, and maps errors to exit codes ([`ExitStatus`]).
//!
//! A repository directory is a mirror layout (`docs/bundles.md`, "Layout on a mirror") plus a private
//! `.mast/` directory that is never published; see [`repo`] and `docs/packager.md`.

pub mod durations;
pub mod init;
pub mod inspect;
pub mod keys;
pub mod pack;
pub mod progress;
pub mod publish;
pub mod release;
pub mod repo;
pub mod root;
pub mod signers;
pub mod timestamp;
pub mod verify;

/// Exit codes, from BSD's `sysexits.h`, so scripts can tell a bad invocation from refused input from a
/// repository that is busy.
pub mod exit {
    /// A flag is missing or its value is malformed.
    pub const USAGE: u8 = 64;
    /// Input was read but refused: manifests, a bundle, metadata, a key that is not one, a release number.
    pub const DATA: u8 = 65;
    /// A file or directory named on the command line does not exist or cannot be read.
    pub const NO_INPUT: u8 = 66;
    /// An internal error.
    pub const SOFTWARE: u8 = 70;
    /// An output file exists and would be overwritten.
    pub const CANT_CREATE: u8 = 73;
    /// Reading or writing failed.
    pub const IO: u8 = 74;
    /// The repository is locked by another `mast`; try again.
    pub const TEMP_FAIL: u8 = 75;
}

/// An error that knows which exit code it deserves (see [`exit`]).
pub trait ExitStatus {
    /// The process exit code for this error.
    fn exit_code(&self) -> u8;
}

/// An I/O error's exit code: a missing input is [`exit::NO_INPUT`], anything else [`exit::IO`].
pub(crate) fn io_exit_code(e: &std::io::Error) -> u8 {
    match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => exit::NO_INPUT,
        _ => exit::IO,
    }
}
