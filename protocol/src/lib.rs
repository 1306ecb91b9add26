//! mast's wire formats, with no I/O.
//!
//! This crate parses, verifies and builds bytes; it never opens a file or a socket, and time comes in as an
//! argument. The agent and the packager own every side effect. This keeps the trust decisions — which
//! metadata is valid, which release may be applied, whether a chunk belongs to a bundle — in one place that
//! can be tested exhaustively and fuzzed.
//!
//! - [`digest`]: SHA-256 digests as a parsed type.
//! - [`bundle`]: the deterministic tar, the chunk index and the safe tar walker.
//! - [`release`]: mast's custom fields on release targets, rollout waves and release selection.
//! - [`manifest`]: bounded splitting of YAML files into Kubernetes objects, and their identity.
//! - [`oci`]: how a release and its TUF metadata are laid out as OCI artifacts.

pub mod bundle;
pub mod canonical;
pub mod crypto;
pub mod digest;
pub mod manifest;
pub mod oci;
pub mod release;
pub mod tuf;
