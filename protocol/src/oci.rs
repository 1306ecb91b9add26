//! How a mast repository is laid out in an OCI registry: media types, tags and manifest builders.
//!
//! Both the packager (which pushes) and the agent (which pulls from an OCI-only site) need these, so they
//! live here as pure functions over bytes. `docs/mirrors.md` describes the mapping for people:
//!
//! - **Bundle**: a Flux-compatible artifact — config `application/vnd.cncf.flux.config.v1+json`, one layer
//!   `application/vnd.cncf.flux.content.v1.tar+gzip` holding `bundle.tar.gz` — tagged `<channel>-<release>`
//!   and, moving, `<channel>`. `flux pull artifact` and ORAS read it as they read Flux's own.
//! - **Chunk index, chunk pack and chunks**: blobs (a chunk's mirror name is already the sha256 of its
//!   bytes, so it is the blob digest; so is the pack's), listed as layers of chunk manifests whose `subject` is the bundle manifest, so that
//!   registry garbage collection keeps them. Registries without the referrers API find them through the
//!   referrers tag schema: an image index tagged `sha256-<hex of the bundle manifest digest>`.
//! - **TUF metadata**: each file (`7.root.json`, `timestamp.json`, …) is the single layer of a small
//!   manifest tagged with the file name, so an OCI-only site verifies with the same TUF workflow. Up to
//!   [`EMBED_MAX`] bytes, the file is also embedded in the layer descriptor (`data`, OCI 1.1), so a site
//!   reads it with the manifest in one request.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::digest::Sha256Digest;

/// OCI image manifest.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
/// Flux's artifact config.
pub const FLUX_CONFIG_MEDIA_TYPE: &str = "application/vnd.cncf.flux.config.v1+json";
/// Flux's tar+gzip content layer.
pub const FLUX_CONTENT_MEDIA_TYPE: &str = "application/vnd.cncf.flux.content.v1.tar+gzip";
/// The OCI empty descriptor's media type (the config of artifacts that have none).
pub const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
/// The bytes of the OCI empty config.
pub const EMPTY_CONFIG: &[u8] = b"{}";
/// Artifact type of a chunk manifest; also the media type of its first layer, the chunk index.
pub const CHUNK_INDEX_MEDIA_TYPE: &str = "application/vnd.mast.chunk-index.v2+json";
/// Media type of a chunk layer: one zstd frame.
pub const CHUNK_MEDIA_TYPE: &str = "application/vnd.mast.chunk.v1+zstd";
/// Media type of a release's chunk pack: its distinct chunks' zstd frames, concatenated.
pub const CHUNK_PACK_MEDIA_TYPE: &str = "application/vnd.mast.chunk-pack.v1+zstd";
/// Artifact type of a TUF metadata manifest, and the media type of its one layer.
pub const TUF_METADATA_MEDIA_TYPE: &str = "application/vnd.mast.tuf.metadata.v1+json";
/// Layers per chunk manifest, so that a large bundle's manifests stay far below registries' 4 MiB cap.
pub const CHUNKS_PER_MANIFEST: usize = 1000;

/// Annotation: when the artifact was created (RFC 3339).
pub const ANNOTATION_CREATED: &str = "org.opencontainers.image.created";
/// Annotation: where it came from.
pub const ANNOTATION_SOURCE: &str = "org.opencontainers.image.source";
/// Annotation: which revision of the source.
pub const ANNOTATION_REVISION: &str = "org.opencontainers.image.revision";
/// Annotation: a layer's file name.
pub const ANNOTATION_TITLE: &str = "org.opencontainers.image.title";

/// An OCI content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// What the content is.
    pub media_type: String,
    /// `sha256:<hex>`.
    pub digest: String,
    /// Its length in bytes.
    pub size: u64,
    /// For manifests in an index: the artifact type of the manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// The content itself, base64 (OCI image spec 1.1 `data`), for small content a reader should not
    /// need a second request for. Readers check it against `digest` and `size` ([`Self::embedded`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
}

/// An OCI image manifest, as far as mast writes and reads one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Always 2.
    pub schema_version: u32,
    /// [`MANIFEST_MEDIA_TYPE`].
    pub media_type: String,
    /// The artifact type, for artifacts that are not Flux's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// The config blob.
    pub config: Descriptor,
    /// The layers.
    pub layers: Vec<Descriptor>,
    /// The manifest this one refers to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// An OCI image index (used for the referrers tag schema).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    /// Always 2.
    pub schema_version: u32,
    /// [`INDEX_MEDIA_TYPE`].
    pub media_type: String,
    /// The manifests listed.
    pub manifests: Vec<Descriptor>,
}

/// Why a name cannot be an OCI tag, or a document is not what mast expects.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OciError {
    /// Not `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
    #[error("{0:?} cannot be an OCI tag")]
    Tag(String),
    /// Not a manifest mast can read.
    #[error("malformed OCI document: {0}")]
    Malformed(String),
}

impl Descriptor {
    /// A descriptor of `bytes` with `media_type`.
    pub fn of(media_type: &str, bytes: &[u8]) -> Self {
        Self::from_digest(media_type, Sha256Digest::of(bytes), bytes.len() as u64)
    }

    /// A descriptor of content already hashed.
    pub fn from_digest(media_type: &str, digest: Sha256Digest, size: u64) -> Self {
        Self {
            media_type: media_type.to_owned(),
            digest: oci_digest(&digest),
            size,
            artifact_type: None,
            annotations: BTreeMap::new(),
            data: None,
        }
    }

    /// The sha256 the descriptor names, if it is a well-formed `sha256:<hex>`.
    pub fn sha256(&self) -> Option<Sha256Digest> {
        self.digest.strip_prefix("sha256:")?.parse().ok()
    }

    /// The embedded content (`data`), if any, once it is checked to be the content the descriptor
    /// names: valid base64 whose bytes have its `size` and `digest`.
    pub fn embedded(&self) -> Option<Result<Vec<u8>, OciError>> {
        use base64::Engine as _;
        let data = self.data.as_deref()?;
        let bad = |reason: String| {
            OciError::Malformed(format!("embedded data of {}: {reason}", self.digest))
        };
        Some(
            base64::engine::general_purpose::STANDARD
                .decode(data)
                .map_err(|e| bad(e.to_string()))
                .and_then(|bytes| {
                    let digest = oci_digest(&Sha256Digest::of(&bytes));
                    if bytes.len() as u64 != self.size || digest != self.digest {
                        return Err(bad(format!(
                            "{} bytes with digest {digest}, not {} bytes",
                            bytes.len(),
                            self.size
                        )));
                    }
                    Ok(bytes)
                }),
        )
    }
}

impl Manifest {
    /// The manifest's bytes as pushed: compact JSON in field order, so the same inputs give the same
    /// digest and a re-run of a publish pushes nothing new.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Strings, integers and maps only: serialisation cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses a manifest fetched from a registry.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, OciError> {
        let m: Manifest =
            serde_json::from_slice(bytes).map_err(|e| OciError::Malformed(e.to_string()))?;
        if m.schema_version != 2 {
            return Err(OciError::Malformed(format!(
                "schemaVersion {}",
                m.schema_version
            )));
        }
        Ok(m)
    }
}

impl Index {
    /// An empty index.
    pub fn new() -> Self {
        Self {
            schema_version: 2,
            media_type: INDEX_MEDIA_TYPE.to_owned(),
            manifests: Vec::new(),
        }
    }

    /// The index's bytes as pushed.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses an index fetched from a registry.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, OciError> {
        serde_json::from_slice(bytes).map_err(|e| OciError::Malformed(e.to_string()))
    }

    /// Adds `manifest` unless a descriptor with its digest is listed; returns whether it was added.
    pub fn add(&mut self, manifest: Descriptor) -> bool {
        if self.manifests.iter().any(|m| m.digest == manifest.digest) {
            return false;
        }
        self.manifests.push(manifest);
        true
    }
}

impl Default for Index {
    fn default() -> Self {
        Self::new()
    }
}

/// `sha256:<hex>`.
pub fn oci_digest(digest: &Sha256Digest) -> String {
    format!("sha256:{digest}")
}

/// Checks a tag against the distribution specification's grammar.
pub fn check_tag(tag: &str) -> Result<(), OciError> {
    let b = tag.as_bytes();
    let first = |c: &u8| c.is_ascii_alphanumeric() || *c == b'_';
    let rest = |c: &u8| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-');
    if (1..=128).contains(&b.len()) && b.first().is_some_and(first) && b[1..].iter().all(rest) {
        Ok(())
    } else {
        Err(OciError::Tag(tag.to_owned()))
    }
}

/// The immutable tag of a release: `<channel>-<release>`.
pub fn release_tag(channel: &str, release: u64) -> String {
    format!("{channel}-{release}")
}

/// The referrers tag schema's tag for `subject` (`sha256:<hex>` → `sha256-<hex>`).
pub fn referrers_tag(subject: &str) -> String {
    subject.replacen(':', "-", 1)
}

/// The Flux artifact manifest of a release's `bundle.tar.gz`.
pub fn bundle_manifest(
    bundle: Descriptor,
    created: &str,
    source: &str,
    revision: &str,
) -> (Manifest, Vec<u8>) {
    let config = Descriptor::of(FLUX_CONFIG_MEDIA_TYPE, EMPTY_CONFIG);
    let annotations = [
        (ANNOTATION_CREATED, created),
        (ANNOTATION_SOURCE, source),
        (ANNOTATION_REVISION, revision),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let m = Manifest {
        schema_version: 2,
        media_type: MANIFEST_MEDIA_TYPE.to_owned(),
        artifact_type: None,
        config,
        layers: vec![bundle],
        subject: None,
        annotations,
    };
    let bytes = m.to_bytes();
    (m, bytes)
}

/// The chunk manifests of a release: the index blob first, then the chunk pack, then its distinct
/// chunks, at most [`CHUNKS_PER_MANIFEST`] layers per manifest, each with `subject` set to the bundle
/// manifest.
pub fn chunk_manifests(
    subject: &Descriptor,
    index: Descriptor,
    pack: Descriptor,
    chunks: &[Descriptor],
) -> Vec<(Manifest, Vec<u8>)> {
    let mut layers: Vec<Descriptor> = Vec::with_capacity(chunks.len() + 2);
    layers.push(index);
    layers.push(pack);
    layers.extend(chunks.iter().cloned());
    layers
        .chunks(CHUNKS_PER_MANIFEST)
        .map(|group| {
            let m = Manifest {
                schema_version: 2,
                media_type: MANIFEST_MEDIA_TYPE.to_owned(),
                artifact_type: Some(CHUNK_INDEX_MEDIA_TYPE.to_owned()),
                config: Descriptor::of(EMPTY_MEDIA_TYPE, EMPTY_CONFIG),
                layers: group.to_vec(),
                subject: Some(Descriptor {
                    annotations: BTreeMap::new(),
                    artifact_type: None,
                    ..subject.clone()
                }),
                annotations: BTreeMap::new(),
            };
            let bytes = m.to_bytes();
            (m, bytes)
        })
        .collect()
}

/// Largest TUF metadata file embedded in its manifest (the layer's `data`): a site then reads it in one
/// request instead of two. Larger files (a targets role with many releases) are read as blobs only, so
/// manifests stay far below registries' 4 MiB cap.
pub const EMBED_MAX: usize = 64 << 10;

/// The manifest that carries one TUF metadata file, tagged with the file's name. A file of at most
/// [`EMBED_MAX`] bytes is also embedded in the layer descriptor; the layer blob is pushed either way.
pub fn metadata_manifest(file_name: &str, bytes: &[u8]) -> (Manifest, Vec<u8>) {
    use base64::Engine as _;
    let mut layer = Descriptor::of(TUF_METADATA_MEDIA_TYPE, bytes);
    if bytes.len() <= EMBED_MAX {
        layer.data = Some(base64::engine::general_purpose::STANDARD.encode(bytes));
    }
    layer
        .annotations
        .insert(ANNOTATION_TITLE.to_owned(), file_name.to_owned());
    let m = Manifest {
        schema_version: 2,
        media_type: MANIFEST_MEDIA_TYPE.to_owned(),
        artifact_type: Some(TUF_METADATA_MEDIA_TYPE.to_owned()),
        config: Descriptor::of(EMPTY_MEDIA_TYPE, EMPTY_CONFIG),
        layers: vec![layer],
        subject: None,
        annotations: BTreeMap::new(),
    };
    let bytes = m.to_bytes();
    (m, bytes)
}

/// The layer of a TUF metadata manifest fetched by tag: exactly one layer of the metadata type.
pub fn metadata_layer(manifest: &Manifest) -> Result<&Descriptor, OciError> {
    match manifest.layers.as_slice() {
        [layer] if layer.media_type == TUF_METADATA_MEDIA_TYPE => Ok(layer),
        _ => Err(OciError::Malformed(
            "a TUF metadata manifest has exactly one layer of type application/vnd.mast.tuf.metadata.v1+json"
                .to_owned(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags() {
        for good in [
            "timestamp.json",
            "7.root.json",
            "prod-7",
            "prod",
            "sha256-ab",
        ] {
            check_tag(good).unwrap();
        }
        for bad in ["", ".x", "-x", "a/b", "a%2Fb", &"x".repeat(129)] {
            assert!(check_tag(bad).is_err(), "{bad}");
        }
        assert_eq!(referrers_tag("sha256:abc"), "sha256-abc");
        assert_eq!(release_tag("prod", 7), "prod-7");
    }

    #[test]
    fn manifests_are_deterministic_and_parse_back() {
        let bundle = Descriptor::of(FLUX_CONTENT_MEDIA_TYPE, b"gz");
        let (m, bytes) = bundle_manifest(bundle.clone(), "1970-01-01T00:00:00Z", "s", "r");
        assert_eq!(
            bundle_manifest(bundle, "1970-01-01T00:00:00Z", "s", "r").1,
            bytes
        );
        assert_eq!(Manifest::from_slice(&bytes).unwrap(), m);
        assert_eq!(m.config.media_type, FLUX_CONFIG_MEDIA_TYPE);
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.contains("\"schemaVersion\":2"), "{text}");
        assert!(!text.contains("subject"), "{text}");

        let (tm, _) = metadata_manifest("timestamp.json", b"{}");
        assert_eq!(
            metadata_layer(&tm).unwrap().digest,
            oci_digest(&Sha256Digest::of(b"{}"))
        );
    }

    #[test]
    fn small_metadata_is_embedded_and_checked_against_its_descriptor() {
        let (m, bytes) = metadata_manifest("timestamp.json", b"{\"signed\":{}}");
        let layer = metadata_layer(&Manifest::from_slice(&bytes).unwrap())
            .unwrap()
            .clone();
        assert_eq!(layer, m.layers[0]);
        assert_eq!(layer.embedded().unwrap().unwrap(), b"{\"signed\":{}}");
        // Data that is not the content the descriptor names is refused, naming the digest.
        let mut wrong = layer.clone();
        wrong.data = Some("e30=".to_owned()); // "{}"
        let err = wrong.embedded().unwrap().unwrap_err();
        assert!(err.to_string().contains(&layer.digest), "{err}");
        let mut garbled = layer;
        garbled.data = Some("not base64!".to_owned());
        assert!(garbled.embedded().unwrap().is_err());
        // A large file is left to its blob.
        let big = vec![b' '; EMBED_MAX + 1];
        let (m, _) = metadata_manifest("3.targets.json", &big);
        assert!(m.layers[0].data.is_none() && m.layers[0].embedded().is_none());
    }

    #[test]
    fn chunk_manifests_split_and_point_at_the_subject() {
        let subject = Descriptor::of(MANIFEST_MEDIA_TYPE, b"m");
        let index = Descriptor::of(CHUNK_INDEX_MEDIA_TYPE, b"i");
        let pack = Descriptor::of(CHUNK_PACK_MEDIA_TYPE, b"p");
        let chunks: Vec<_> = (0..CHUNKS_PER_MANIFEST + 5)
            .map(|i| Descriptor::of(CHUNK_MEDIA_TYPE, &i.to_le_bytes()))
            .collect();
        let ms = chunk_manifests(&subject, index, pack.clone(), &chunks);
        assert_eq!(ms.len(), 2);
        assert_eq!(ms[0].0.layers.len(), CHUNKS_PER_MANIFEST);
        assert_eq!(ms[0].0.layers[1], pack);
        assert_eq!(ms[1].0.layers.len(), 7);
        assert!(ms.iter().all(|(m, _)| m.subject.as_ref() == Some(&subject)));
        let mut idx = Index::new();
        assert!(idx.add(Descriptor::of(MANIFEST_MEDIA_TYPE, &ms[0].1)));
        assert!(!idx.add(Descriptor::of(MANIFEST_MEDIA_TYPE, &ms[0].1)));
    }
}
