//! The Update Framework (TUF 1.0): metadata, signature thresholds, the client workflow and the
//! repository-side builders.

pub mod metadata;
pub mod verify;

pub use metadata::{
    AnyMetadata, Common, DelegatedRole, Delegations, Expiry, Hashes, MetaFile, MetadataError, Role,
    RoleKeys, Root, SPEC_VERSION, Signature, Signed, Snapshot, TOP_LEVEL_ROLES, TargetFile,
    Targets, Timestamp, parse_any_metadata,
};
pub mod client;
pub mod error;
mod trusted;

pub use client::{
    FetchRequest, Limits, Next, RoleName, Session, StoreOp, TrustedFile, quote_role_name,
};
pub use error::{ErrorKind, RootChainError, TufError};
pub use trusted::{Discarded, Persisted, TrustedMetadata};
pub mod builder;

pub use builder::{BuildError, Expiries, Repository, RoleSigners, RootSpec, SigningStatus};
