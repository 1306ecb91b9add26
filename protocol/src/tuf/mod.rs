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

pub use client::{
    Discarded, FetchRequest, Limits, Next, Persisted, RoleName, Session, StoreOp, TrustedFile, TrustedMetadata,
    quote_role_name,
};
pub use error::{ErrorKind, RootChainError, TufError};
