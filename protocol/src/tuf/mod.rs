//! The Update Framework (TUF 1.0): metadata, signature thresholds, the client workflow and the
//! repository-side builders.

pub mod metadata;
pub mod verify;

pub use metadata::{
    AnyMetadata, Common, DelegatedRole, Delegations, Expiry, Hashes, MetaFile, MetadataError, Role,
    RoleKeys, Root, SPEC_VERSION, Signature, Signed, Snapshot, TOP_LEVEL_ROLES, TargetFile,
    Targets, Timestamp, parse_any_metadata,
};
