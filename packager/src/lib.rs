//! The mast packager.
//!
//! Turns a directory of rendered Kubernetes manifests into a signed release on a channel of a TUF
//! repository, and publishes it to mirrors. The repository-side builders live in
//! [`mast_protocol::tuf`]; this crate adds keys on disk, the bundle layout and the publishers.

pub mod publish;
pub mod verify;
