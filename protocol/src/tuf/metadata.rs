//! TUF 1.0 metadata: the four top-level roles, delegations, and the signed envelope around each.
//!
//! Parsing follows python-tuf's `tuf.api.metadata` where the specification leaves room, so that the same
//! document is valid or invalid for both: exactly the four top-level roles in root, `_type` must match,
//! `spec_version` must be 1.x, versions start at 1. Fields mast does not know are kept (`extra`) because a
//! signature covers them and a repository tool must write them back unchanged.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use time::OffsetDateTime;

use crate::canonical::{self, CanonicalError};
use crate::crypto::{Key, KeyId};

/// The specification version mast writes. Any 1.x is accepted on read.
pub const SPEC_VERSION: &str = "1.0.31";

/// The names of the top-level roles, which are also their metadata file stems.
pub const TOP_LEVEL_ROLES: [&str; 4] = ["root", "timestamp", "snapshot", "targets"];

/// Why a metadata document could not be read. Names the role and what was wrong.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    /// Not JSON, a duplicate key, or a float.
    #[error("{role} metadata is not valid JSON: {source}")]
    Json {
        /// The role whose document failed.
        role: &'static str,
        /// What the parser said.
        #[source]
        source: CanonicalError,
    },
    /// JSON of the wrong shape: a missing or mistyped field.
    #[error("{role} metadata: {detail}")]
    Shape {
        /// The role whose document failed.
        role: &'static str,
        /// What was wrong, naming the field.
        detail: String,
    },
    /// The `_type` field names another role.
    #[error("expected {expected} metadata, found _type {found:?}")]
    WrongType {
        /// The role that was expected.
        expected: &'static str,
        /// The `_type` that was found.
        found: String,
    },
    /// `spec_version` is not 1.x.
    #[error("{role} metadata has spec_version {found:?}; mast reads TUF 1.x")]
    SpecVersion {
        /// The role whose document failed.
        role: &'static str,
        /// The version it claimed.
        found: String,
    },
}

/// One of the four top-level roles; each metadata type names its own.
pub trait Role: Serialize + DeserializeOwned {
    /// The role name, which is also the `_type` value.
    const NAME: &'static str;

    /// The fields every role shares.
    fn common(&self) -> &Common;

    /// Checks invariants serde cannot express.
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
}

/// The fields every role's `signed` object carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Common {
    /// The role name, repeated inside the signed part so one role's document cannot pose as another's.
    #[serde(rename = "_type")]
    pub type_: String,
    /// The TUF specification version the document follows.
    pub spec_version: String,
    /// Monotonic version of this role's metadata.
    pub version: u64,
    /// After this instant the document must not be trusted.
    pub expires: Expiry,
}

impl Common {
    /// Fresh common fields for `role` at `version`, written with mast's spec version.
    pub fn new(role: &str, version: u64, expires: Expiry) -> Self {
        Self {
            type_: role.to_owned(),
            spec_version: SPEC_VERSION.to_owned(),
            version,
            expires,
        }
    }
}

/// An expiry instant, written as TUF requires: `YYYY-MM-DDTHH:MM:SSZ`, UTC, whole seconds.
///
/// Reading is as strict as python-tuf (`%Y-%m-%dT%H:%M:%SZ`): a document one client reads and another
/// refuses would split a fleet.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Expiry(OffsetDateTime);

const EXPIRY_FORMAT: &[time::format_description::BorrowedFormatItem<'static>] =
    time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");

impl Expiry {
    /// `at`, truncated to whole seconds, in UTC.
    pub fn new(at: OffsetDateTime) -> Self {
        let utc = at.to_offset(time::UtcOffset::UTC);
        Self(utc.replace_nanosecond(0).unwrap_or(utc))
    }

    /// The instant.
    pub fn at(&self) -> OffsetDateTime {
        self.0
    }

    /// Whether the document is expired at `now`. TUF treats the expiry instant itself as expired.
    pub fn is_expired(&self, now: OffsetDateTime) -> bool {
        now >= self.0
    }

    /// Parses the TUF text form.
    pub fn parse(s: &str) -> Result<Self, String> {
        time::PrimitiveDateTime::parse(s, EXPIRY_FORMAT)
            .map(|t| Self(t.assume_utc()))
            .map_err(|e| format!("expires {s:?} is not YYYY-MM-DDTHH:MM:SSZ: {e}"))
    }
}

impl fmt::Display for Expiry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.format(EXPIRY_FORMAT) {
            Ok(s) => f.write_str(&s),
            // Only years outside 0..=9999 fail to format, and `parse` cannot produce those.
            Err(_) => write!(f, "{}", self.0),
        }
    }
}

impl fmt::Debug for Expiry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Expiry({self})")
    }
}

impl Serialize for Expiry {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Expiry {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A signature in a metadata envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    /// The key that made it.
    pub keyid: KeyId,
    /// The signature, hex.
    pub sig: String,
}

/// The key ids and threshold of one role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleKeys {
    /// Keys whose signatures count for the role.
    pub keyids: Vec<KeyId>,
    /// How many distinct keys must sign.
    pub threshold: u64,
    /// Unknown fields, kept.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// `root.json`: the keys and thresholds of every top-level role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Root {
    /// Shared fields.
    #[serde(flatten)]
    pub common: Common,
    /// Whether files other than timestamp are named `VERSION.NAME` (mast always writes `true`).
    pub consistent_snapshot: bool,
    /// Every key any top-level role uses.
    pub keys: BTreeMap<KeyId, Key>,
    /// Exactly root, timestamp, snapshot and targets.
    pub roles: BTreeMap<String, RoleKeys>,
    /// Unknown fields, kept.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl Root {
    /// The keys and threshold of a top-level role. Present for every validated root.
    pub fn role(&self, name: &str) -> Option<&RoleKeys> {
        self.roles.get(name)
    }
}

impl Role for Root {
    const NAME: &'static str = "root";

    fn common(&self) -> &Common {
        &self.common
    }

    fn validate(&self) -> Result<(), String> {
        let mut names: Vec<&str> = self.roles.keys().map(String::as_str).collect();
        names.sort_unstable();
        let mut want = TOP_LEVEL_ROLES;
        want.sort_unstable();
        if names != want {
            return Err(format!("roles must be exactly {want:?}, found {names:?}"));
        }
        for (name, role) in &self.roles {
            if role.threshold == 0 {
                return Err(format!("roles.{name}.threshold must be at least 1"));
            }
        }
        if let Err((claimed, computed)) = crate::crypto::checked_key_ids(&self.keys) {
            return Err(format!(
                "keys: key id {claimed:?} does not match its key (computed {computed:?})"
            ));
        }
        Ok(())
    }
}

/// Length and hashes of a metadata file, as timestamp and snapshot list them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaFile {
    /// The version the file must have.
    pub version: u64,
    /// Its length in bytes, when the repository pins it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub length: Option<u64>,
    /// Its hashes, when the repository pins them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hashes: Option<Hashes>,
    /// Unknown fields, kept.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// Hashes by algorithm name, hex values.
pub type Hashes = BTreeMap<String, String>;

/// `timestamp.json`: which snapshot is current.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timestamp {
    /// Shared fields.
    #[serde(flatten)]
    pub common: Common,
    /// Exactly one entry, `snapshot.json`.
    pub meta: BTreeMap<String, MetaFile>,
    /// Unknown fields, kept.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl Timestamp {
    /// The snapshot this timestamp points at.
    pub fn snapshot_meta(&self) -> &MetaFile {
        // `validate` guarantees the entry; a Timestamp only reaches callers through validation or a builder
        // that inserts it.
        self.meta.get("snapshot.json").unwrap_or(&PLACEHOLDER_META)
    }
}

static PLACEHOLDER_META: MetaFile = MetaFile {
    version: 0,
    length: None,
    hashes: None,
    extra: BTreeMap::new(),
};

impl Role for Timestamp {
    const NAME: &'static str = "timestamp";

    fn common(&self) -> &Common {
        &self.common
    }

    fn validate(&self) -> Result<(), String> {
        if self.meta.len() != 1 || !self.meta.contains_key("snapshot.json") {
            return Err("meta must hold exactly one entry, snapshot.json".to_owned());
        }
        Ok(())
    }
}

/// `snapshot.json`: the version of every targets metadata file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Shared fields.
    #[serde(flatten)]
    pub common: Common,
    /// `targets.json` and every delegated role's `NAME.json`.
    pub meta: BTreeMap<String, MetaFile>,
    /// Unknown fields, kept.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl Role for Snapshot {
    const NAME: &'static str = "snapshot";

    fn common(&self) -> &Common {
        &self.common
    }

    fn validate(&self) -> Result<(), String> {
        if !self.meta.contains_key("targets.json") {
            return Err("meta must list targets.json".to_owned());
        }
        Ok(())
    }
}

/// A target file's length, hashes and custom data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetFile {
    /// Exact length in bytes.
    pub length: u64,
    /// Hashes by algorithm; mast needs sha256 or sha512.
    pub hashes: Hashes,
    /// Application data; mast's lives under `custom.mast` (see [`crate::release`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom: Option<Value>,
    /// Unknown fields, kept.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// A role that `targets` (or a delegated role) hands part of the target namespace to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DelegatedRole {
    /// The role's name; its file is `VERSION.NAME.json`.
    pub name: String,
    /// Keys whose signatures count for the role.
    pub keyids: Vec<KeyId>,
    /// How many distinct keys must sign.
    pub threshold: u64,
    /// Whether a miss in this role ends the search.
    pub terminating: bool,
    /// Shell-style patterns of the target paths the role may sign for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paths: Option<Vec<String>>,
    /// Hex prefixes of sha256(target path) the role may sign for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_hash_prefixes: Option<Vec<String>>,
    /// Unknown fields, kept.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl DelegatedRole {
    /// Whether the role is trusted to sign for `target_path` (TUF §5.6.7.2 / python-tuf semantics:
    /// a pattern matches segment by segment, `*` never crosses `/`).
    pub fn is_delegated_path(&self, target_path: &str) -> bool {
        if let Some(patterns) = &self.paths {
            return patterns.iter().any(|p| path_matches(p, target_path));
        }
        if let Some(prefixes) = &self.path_hash_prefixes {
            let digest = crate::digest::Sha256Digest::of(target_path.as_bytes()).to_hex();
            return prefixes.iter().any(|p| digest.starts_with(p.as_str()));
        }
        false
    }
}

/// The delegations block of a targets role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delegations {
    /// Keys of the delegated roles.
    pub keys: BTreeMap<KeyId, Key>,
    /// Delegated roles, in priority order.
    pub roles: Vec<DelegatedRole>,
    /// Unknown fields, kept.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// `targets.json` or a delegated role: target files and further delegations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Targets {
    /// Shared fields.
    #[serde(flatten)]
    pub common: Common,
    /// Target files by path.
    pub targets: BTreeMap<String, TargetFile>,
    /// Delegations to other roles, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegations: Option<Delegations>,
    /// Unknown fields, kept.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl Role for Targets {
    const NAME: &'static str = "targets";

    fn common(&self) -> &Common {
        &self.common
    }

    fn validate(&self) -> Result<(), String> {
        let Some(d) = &self.delegations else {
            return Ok(());
        };
        if d.extra.contains_key("succinct_roles") {
            return Err(
                "delegations.succinct_roles (hash-bin delegation) is not supported by mast"
                    .to_owned(),
            );
        }
        if let Err((claimed, computed)) = crate::crypto::checked_key_ids(&d.keys) {
            return Err(format!(
                "delegations.keys: key id {claimed:?} does not match its key (computed {computed:?})"
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for r in &d.roles {
            if TOP_LEVEL_ROLES.contains(&r.name.as_str()) || !seen.insert(r.name.as_str()) {
                return Err(format!(
                    "delegations.roles: role name {:?} is reserved or repeated",
                    r.name
                ));
            }
            if r.threshold == 0 {
                return Err(format!(
                    "delegations.roles[{}].threshold must be at least 1",
                    r.name
                ));
            }
            if r.paths.is_some() == r.path_hash_prefixes.is_some() {
                return Err(format!(
                    "delegations.roles[{}] needs exactly one of paths and path_hash_prefixes",
                    r.name
                ));
            }
        }
        Ok(())
    }
}

/// A parsed metadata document with its signatures and the exact canonical bytes they cover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed<T> {
    /// The signed content.
    pub signed: T,
    /// Signatures over the canonical form of `signed`.
    pub signatures: Vec<Signature>,
    canonical: Vec<u8>,
}

impl<T: Role> Signed<T> {
    /// Parses a document of role `T`: strict JSON, right `_type`, spec 1.x, valid shape. Signatures are
    /// not checked here; that needs the keys of the role that delegates to it.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, MetadataError> {
        let role = T::NAME;
        let value = canonical::parse_strict(bytes)
            .map_err(|source| MetadataError::Json { role, source })?;
        let Value::Object(mut top) = value else {
            return Err(shape(role, "the document must be a JSON object"));
        };
        let signed = top
            .remove("signed")
            .ok_or_else(|| shape(role, "missing field `signed`"))?;
        let signatures = top
            .remove("signatures")
            .ok_or_else(|| shape(role, "missing field `signatures`"))?;
        let signatures: Vec<Signature> = serde_json::from_value(signatures)
            .map_err(|e| shape(role, &format!("signatures: {e}")))?;
        let canonical = canonical::to_canonical_vec(&signed)
            .map_err(|source| MetadataError::Json { role, source })?;

        let found = signed
            .get("_type")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        if found != role {
            return Err(MetadataError::WrongType {
                expected: role,
                found,
            });
        }
        let spec = signed
            .get("spec_version")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        if !spec_version_supported(&spec) {
            return Err(MetadataError::SpecVersion { role, found: spec });
        }
        let signed: T = serde_json::from_value(signed).map_err(|e| shape(role, &e.to_string()))?;
        if signed.common().version == 0 {
            return Err(shape(role, "version must be at least 1"));
        }
        signed
            .validate()
            .map_err(|detail| MetadataError::Shape { role, detail })?;
        Ok(Self {
            signed,
            signatures,
            canonical,
        })
    }

    /// Wraps freshly built content with no signatures yet (for repository tools).
    pub fn unsigned(signed: T) -> Result<Self, CanonicalError> {
        let canonical = canonical::encode(&signed)?;
        Ok(Self {
            signed,
            signatures: Vec::new(),
            canonical,
        })
    }

    /// The bytes the signatures cover.
    pub fn canonical_signed(&self) -> &[u8] {
        &self.canonical
    }

    /// The role's version.
    pub fn version(&self) -> u64 {
        self.signed.common().version
    }

    /// The role's expiry.
    pub fn expires(&self) -> Expiry {
        self.signed.common().expires
    }

    /// The whole document as JSON, signatures included, in canonical form (what mast publishes: stable
    /// bytes make stable hashes in snapshot and timestamp).
    pub fn to_bytes(&self) -> Result<Vec<u8>, CanonicalError> {
        let signed: Value = canonical::parse_strict(&self.canonical)?;
        let signatures =
            serde_json::to_value(&self.signatures).map_err(CanonicalError::Serialize)?;
        let mut top = serde_json::Map::new();
        top.insert("signatures".to_owned(), signatures);
        top.insert("signed".to_owned(), signed);
        canonical::to_canonical_vec(&Value::Object(top))
    }
}

/// Any of the four roles, for tools and fuzzing that read a document without knowing its role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnyMetadata {
    /// A root document.
    Root(Signed<Root>),
    /// A timestamp document.
    Timestamp(Signed<Timestamp>),
    /// A snapshot document.
    Snapshot(Signed<Snapshot>),
    /// A targets document (top-level or delegated).
    Targets(Signed<Targets>),
}

/// Parses a metadata document of any role, dispatching on `signed._type`.
pub fn parse_any_metadata(bytes: &[u8]) -> Result<AnyMetadata, MetadataError> {
    let value = canonical::parse_strict(bytes).map_err(|source| MetadataError::Json {
        role: "unknown",
        source,
    })?;
    let role = value
        .pointer("/signed/_type")
        .and_then(Value::as_str)
        .unwrap_or_default();
    Ok(match role {
        "root" => AnyMetadata::Root(Signed::from_slice(bytes)?),
        "timestamp" => AnyMetadata::Timestamp(Signed::from_slice(bytes)?),
        "snapshot" => AnyMetadata::Snapshot(Signed::from_slice(bytes)?),
        "targets" => AnyMetadata::Targets(Signed::from_slice(bytes)?),
        other => {
            return Err(MetadataError::WrongType {
                expected: "any role",
                found: other.to_owned(),
            });
        }
    })
}

/// Whether mast reads documents of this `spec_version`: `1.x` or `1.x.y`, as python-tuf accepts.
pub fn spec_version_supported(spec: &str) -> bool {
    let parts: Vec<&str> = spec.split('.').collect();
    (2..=3).contains(&parts.len())
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        && parts[0] == "1"
}

fn shape(role: &'static str, detail: &str) -> MetadataError {
    MetadataError::Shape {
        role,
        detail: detail.to_owned(),
    }
}

/// Shell-style match of a TUF path pattern against a target path, one `/`-separated segment at a time.
fn path_matches(pattern: &str, path: &str) -> bool {
    let pat: Vec<&str> = pattern.split('/').collect();
    let segs: Vec<&str> = path.split('/').collect();
    pat.len() == segs.len()
        && pat
            .iter()
            .zip(&segs)
            .all(|(p, s)| fnmatch(p.as_bytes(), s.as_bytes()))
}

/// `fnmatch` for one segment: `*`, `?`, `[set]`, `[!set]`, with backtracking on the last `*` only, which
/// is linear-ish and cannot blow up on hostile patterns.
fn fnmatch(pat: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        if p < pat.len() {
            match pat[p] {
                b'*' => {
                    star = Some((p, i));
                    p += 1;
                    continue;
                }
                b'?' => {
                    p += 1;
                    i += 1;
                    continue;
                }
                b'[' => {
                    if let Some((matched, next)) = match_set(&pat[p..], s[i]) {
                        if matched {
                            p += next;
                            i += 1;
                            continue;
                        }
                    } else if s[i] == b'[' {
                        // An unclosed `[` is a literal, as in Python's fnmatch.
                        p += 1;
                        i += 1;
                        continue;
                    }
                }
                c if c == s[i] => {
                    p += 1;
                    i += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((sp, si)) => {
                p = sp + 1;
                i = si + 1;
                star = Some((sp, si + 1));
            }
            None => return false,
        }
    }
    pat[p..].iter().all(|&c| c == b'*')
}

/// Matches a `[...]` set at the start of `pat`; returns (matched, length of the set) or None if unclosed.
fn match_set(pat: &[u8], c: u8) -> Option<(bool, usize)> {
    let mut j = 1;
    let negate = matches!(pat.get(j), Some(b'!'));
    if negate {
        j += 1;
    }
    let start = j;
    let mut matched = false;
    while j < pat.len() && (pat[j] != b']' || j == start) {
        if j + 2 < pat.len() && pat[j + 1] == b'-' && pat[j + 2] != b']' {
            matched |= pat[j] <= c && c <= pat[j + 2];
            j += 3;
        } else {
            matched |= pat[j] == c;
            j += 1;
        }
    }
    (j < pat.len()).then_some((matched != negate, j + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: &str = r#"{"signatures":[{"keyid":"k","sig":"00"}],"signed":{"_type":"root","spec_version":"1.0.31","version":1,"expires":"2030-01-01T00:00:00Z","consistent_snapshot":true,"keys":{},"roles":{"root":{"keyids":[],"threshold":1},"targets":{"keyids":[],"threshold":1},"snapshot":{"keyids":[],"threshold":1},"timestamp":{"keyids":[],"threshold":1}},"x-vendor":{"kept":true}}}"#;

    #[test]
    fn parses_root_and_keeps_unknown_fields_in_canonical_bytes() {
        let root = Signed::<Root>::from_slice(ROOT.as_bytes()).unwrap();
        assert_eq!(root.version(), 1);
        assert!(root.signed.extra.contains_key("x-vendor"));
        assert!(
            String::from_utf8_lossy(root.canonical_signed())
                .contains(r#""x-vendor":{"kept":true}"#)
        );
        assert_eq!(root.expires().to_string(), "2030-01-01T00:00:00Z");
        let again = Signed::<Root>::from_slice(&root.to_bytes().unwrap()).unwrap();
        assert_eq!(again, root);
    }

    #[test]
    fn refuses_wrong_type_spec_version_and_version_zero() {
        let as_ts = ROOT.replace(r#""_type":"root""#, r#""_type":"timestamp""#);
        assert!(matches!(
            Signed::<Root>::from_slice(as_ts.as_bytes()),
            Err(MetadataError::WrongType {
                expected: "root",
                ..
            })
        ));
        let v2 = ROOT.replace("1.0.31", "2.0.0");
        let err = Signed::<Root>::from_slice(v2.as_bytes()).unwrap_err();
        assert!(matches!(err, MetadataError::SpecVersion { .. }), "{err}");
        let zero = ROOT.replace(r#""version":1"#, r#""version":0"#);
        assert!(
            Signed::<Root>::from_slice(zero.as_bytes())
                .unwrap_err()
                .to_string()
                .contains("version")
        );
    }

    #[test]
    fn refuses_missing_roles_and_zero_threshold_and_bad_expiry() {
        let no_ts = ROOT.replace(r#","timestamp":{"keyids":[],"threshold":1}"#, "");
        assert!(
            Signed::<Root>::from_slice(no_ts.as_bytes())
                .unwrap_err()
                .to_string()
                .contains("roles must be")
        );
        let zero = ROOT.replacen(r#""threshold":1"#, r#""threshold":0"#, 1);
        assert!(
            Signed::<Root>::from_slice(zero.as_bytes())
                .unwrap_err()
                .to_string()
                .contains("threshold")
        );
        let frac = ROOT.replace("2030-01-01T00:00:00Z", "2030-01-01T00:00:00.5Z");
        assert!(
            Signed::<Root>::from_slice(frac.as_bytes())
                .unwrap_err()
                .to_string()
                .contains("expires")
        );
    }

    #[test]
    fn expiry_is_inclusive() {
        let e = Expiry::parse("2030-01-01T00:00:00Z").unwrap();
        assert!(!e.is_expired(time::macros::datetime!(2029-12-31 23:59:59 UTC)));
        assert!(e.is_expired(time::macros::datetime!(2030-01-01 00:00:00 UTC)));
    }

    #[test]
    fn spec_versions() {
        for ok in ["1.0", "1.0.31", "1.20.0"] {
            assert!(spec_version_supported(ok), "{ok}");
        }
        for bad in ["2.0.0", "1", "1.0.0.0", "1.x", "", "01.0", " 1.0"] {
            // "01.0" has major "01" which is not "1": python-tuf compares the string too.
            assert!(!spec_version_supported(bad), "{bad}");
        }
    }

    #[test]
    fn path_patterns_match_segment_by_segment() {
        assert!(path_matches(
            "channels/*/bundle.tar.gz",
            "channels/prod/bundle.tar.gz"
        ));
        assert!(!path_matches("channels/*", "channels/prod/bundle.tar.gz"));
        assert!(path_matches("*.tar.gz", "x.tar.gz"));
        assert!(path_matches("file-?.txt", "file-1.txt"));
        assert!(path_matches("r[0-9]/[!x]*", "r5/abc"));
        assert!(!path_matches("r[0-9]/[!x]*", "r5/xbc"));
        assert!(path_matches("a[b", "a[b"));
        assert!(!path_matches("", "a"));
        assert!(!fnmatch(b"*a*a*a*a*b", &[b'a'; 30]));
    }

    #[test]
    fn parse_any_dispatches_on_type() {
        assert!(matches!(
            parse_any_metadata(ROOT.as_bytes()),
            Ok(AnyMetadata::Root(_))
        ));
        assert!(parse_any_metadata(b"{}").is_err());
        assert!(parse_any_metadata(b"[").is_err());
    }
}
