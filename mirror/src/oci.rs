//! An OCI registry as a mirror, over the distribution API (see `docs/mirrors.md` for the mapping and
//! `mast_protocol::oci` for the media types and manifests).
//!
//! The few calls needed are made directly over reqwest rather than through `oci-client`: mast needs a
//! byte-capped streaming blob read returning validators, `HEAD`-before-upload per blob, tags that point at
//! hand-built artifact manifests, and the referrers tag schema, and going through a higher-level client
//! would mean working around it for each of those.

use bytes::Bytes;
use mast_protocol::digest::Sha256Digest;
use mast_protocol::oci::{
    self as layout, Descriptor, EMPTY_CONFIG, FLUX_CONTENT_MEDIA_TYPE, INDEX_MEDIA_TYPE, Index,
    MANIFEST_MEDIA_TYPE, Manifest,
};
use reqwest::header::{
    ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, LOCATION, WWW_AUTHENTICATE,
};
use reqwest::{Method, RequestBuilder, StatusCode};
use tokio::sync::Mutex;

use crate::error::redact;
use crate::http::{condition_headers, read, status_error};
use crate::transport::Body;
use crate::{
    Conditions, Fetched, MirrorError, MirrorRead, MirrorWrite, ObjectPath, ReleaseObjects, Response,
};

/// Largest manifest or index read, as registries cap them (4 MiB).
const MANIFEST_MAX: u64 = 4 << 20;

/// One repository of an OCI registry.
#[derive(Debug)]
pub struct OciMirror {
    client: reqwest::Client,
    /// `https://host[:port]` or, with plain HTTP, `http://…`.
    origin: String,
    registry: String,
    repository: String,
    credentials: Option<(String, String)>,
    /// The `Authorization` header value that last worked.
    auth: Mutex<Option<String>>,
}

impl OciMirror {
    /// `registry` is `host[:port]`, `repository` the path (`mast/prod`); `plain_http` for registries
    /// without TLS (loopback tests, a registry inside an air-gapped site).
    pub fn new(
        client: reqwest::Client,
        registry: &str,
        repository: &str,
        plain_http: bool,
    ) -> Self {
        let scheme = if plain_http { "http" } else { "https" };
        Self {
            client,
            origin: format!("{scheme}://{registry}"),
            registry: registry.to_owned(),
            repository: repository.to_owned(),
            credentials: None,
            auth: Mutex::new(None),
        }
    }

    /// Uses a username and password (or token) for Basic auth and for the token endpoint of Bearer auth.
    pub fn with_credentials(mut self, username: String, password: String) -> Self {
        self.credentials = Some((username, password));
        self
    }

    fn blob_url(&self, digest: &Sha256Digest) -> String {
        format!(
            "{}/v2/{}/blobs/sha256:{digest}",
            self.origin, self.repository
        )
    }

    fn manifest_url(&self, reference: &str) -> String {
        format!(
            "{}/v2/{}/manifests/{reference}",
            self.origin, self.repository
        )
    }

    /// Sends a request, answering one authentication challenge (Basic, or Bearer through the realm's
    /// token endpoint) and retrying once.
    async fn send(
        &self,
        method: Method,
        url: &str,
        build: impl Fn(RequestBuilder) -> RequestBuilder,
    ) -> Result<reqwest::Response, MirrorError> {
        let name = method_name(&method);
        let attempt = |auth: Option<String>| {
            let mut request = build(self.client.request(method.clone(), url));
            if let Some(auth) = auth {
                request = request.header(AUTHORIZATION, auth);
            }
            request.send()
        };
        let http = |source| MirrorError::Http {
            method: name,
            url: redact(url),
            source,
        };
        let current = self.auth.lock().await.clone();
        let response = attempt(current).await.map_err(http)?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        let challenge = response
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let Some(auth) = self.authorize(&challenge).await? else {
            return Ok(response);
        };
        *self.auth.lock().await = Some(auth.clone());
        attempt(Some(auth)).await.map_err(http)
    }

    async fn authorize(&self, challenge: &str) -> Result<Option<String>, MirrorError> {
        use base64_lite::encode;
        let basic = self
            .credentials
            .as_ref()
            .map(|(u, p)| format!("Basic {}", encode(format!("{u}:{p}").as_bytes())));
        let Some(params) = challenge.strip_prefix("Bearer ") else {
            return Ok(basic.filter(|_| challenge.starts_with("Basic")));
        };
        let param = |key: &str| {
            params.split(',').find_map(|kv| {
                let (k, v) = kv.trim().split_once('=')?;
                (k == key).then(|| v.trim_matches('"').to_owned())
            })
        };
        let realm = param("realm").ok_or_else(|| MirrorError::Protocol {
            object: self.registry.clone(),
            reason: format!("Bearer challenge without realm: {challenge}"),
        })?;
        let mut query = Vec::new();
        if let Some(service) = param("service") {
            query.push(("service", service));
        }
        query.push((
            "scope",
            param("scope").unwrap_or_else(|| format!("repository:{}:pull,push", self.repository)),
        ));
        let query: Vec<String> = query
            .iter()
            .map(|(k, v)| format!("{k}={}", percent_encode(v)))
            .collect();
        let separator = if realm.contains('?') { '&' } else { '?' };
        let token_url = format!("{realm}{separator}{}", query.join("&"));
        let mut request = self.client.get(&token_url);
        if let Some(basic) = basic {
            request = request.header(AUTHORIZATION, basic);
        }
        let response = request.send().await.map_err(|source| MirrorError::Http {
            method: "GET",
            url: redact(&realm),
            source,
        })?;
        if !response.status().is_success() {
            return Err(status_error("GET", &realm, response).await);
        }
        let bytes = response.bytes().await.map_err(|source| MirrorError::Http {
            method: "GET",
            url: redact(&realm),
            source,
        })?;
        let body: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| MirrorError::Protocol {
                object: realm.clone(),
                reason: format!("token response: {e}"),
            })?;
        let token = body["token"]
            .as_str()
            .or(body["access_token"].as_str())
            .ok_or_else(|| MirrorError::Protocol {
                object: realm.clone(),
                reason: "token response has no token".to_owned(),
            })?;
        Ok(Some(format!("Bearer {token}")))
    }

    async fn blob_exists(&self, digest: &Sha256Digest) -> Result<bool, MirrorError> {
        let url = self.blob_url(digest);
        let response = self.send(Method::HEAD, &url, |r| r).await?;
        match response.status() {
            StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(status_error("HEAD", &url, response).await),
        }
    }

    /// Uploads a blob unless the registry has it: `POST` an upload session, then one `PUT` with the
    /// digest, which the registry checks before it accepts the blob.
    async fn push_blob(&self, digest: &Sha256Digest, bytes: Bytes) -> Result<(), MirrorError> {
        if self.blob_exists(digest).await? {
            return Ok(());
        }
        let url = format!("{}/v2/{}/blobs/uploads/", self.origin, self.repository);
        let session = self
            .send(Method::POST, &url, |r| r.header(CONTENT_LENGTH, 0))
            .await?;
        if session.status() != StatusCode::ACCEPTED {
            return Err(status_error("POST", &url, session).await);
        }
        let location = session
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| MirrorError::Protocol {
                object: format!("sha256:{digest}"),
                reason: "upload session without Location".to_owned(),
            })?;
        let location = if location.starts_with('/') {
            format!("{}{location}", self.origin)
        } else {
            location.to_owned()
        };
        let separator = if location.contains('?') { '&' } else { '?' };
        let put_url = format!("{location}{separator}digest=sha256:{digest}");
        let response = self
            .send(Method::PUT, &put_url, |r| {
                r.header(CONTENT_TYPE, "application/octet-stream")
                    .header(CONTENT_LENGTH, bytes.len())
                    .body(bytes.clone())
            })
            .await?;
        if response.status() != StatusCode::CREATED {
            return Err(status_error("PUT", &put_url, response).await);
        }
        Ok(())
    }

    /// The digest `reference` (a tag or digest) points at, or `None` when there is no such manifest.
    async fn manifest_digest(&self, reference: &str) -> Result<Option<String>, MirrorError> {
        Ok(self
            .get_manifest(reference)
            .await?
            .map(|(bytes, _)| layout::oci_digest(&Sha256Digest::of(&bytes))))
    }

    async fn get_manifest(
        &self,
        reference: &str,
    ) -> Result<Option<(Vec<u8>, String)>, MirrorError> {
        Ok(match self.get_manifest_if(reference, None).await? {
            ManifestRead::Found { bytes, media_type } => Some((bytes, media_type)),
            // Unreachable without a validator; treated as absent rather than trusted.
            ManifestRead::Missing | ManifestRead::NotModified => None,
        })
    }

    /// Reads the manifest `reference` names unless its digest is still `if_none_match` (`sha256:…`).
    /// The registry answers 304 to a matching `If-None-Match`; one that ignores it still costs no more
    /// than the manifest, whose digest is compared here.
    async fn get_manifest_if(
        &self,
        reference: &str,
        if_none_match: Option<&str>,
    ) -> Result<ManifestRead, MirrorError> {
        let url = self.manifest_url(reference);
        let accept = format!("{MANIFEST_MEDIA_TYPE}, {INDEX_MEDIA_TYPE}");
        let conditions = Conditions {
            if_none_match: if_none_match.map(str::to_owned),
            ..Conditions::default()
        };
        let response = self
            .send(Method::GET, &url, |r| {
                r.header(ACCEPT, accept.as_str())
                    .headers(condition_headers(&conditions, true))
            })
            .await?;
        match response.status() {
            StatusCode::OK => {}
            StatusCode::NOT_MODIFIED if if_none_match.is_some() => {
                return Ok(ManifestRead::NotModified);
            }
            StatusCode::NOT_FOUND => return Ok(ManifestRead::Missing),
            _ => return Err(status_error("GET", &url, response).await),
        }
        let media_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let object = ObjectPath::Metadata(format!("{reference}.manifest.json"));
        let bytes = Response::new(&object, None, MANIFEST_MAX, Body::Http(response))?
            .bytes()
            .await?;
        let digest = layout::oci_digest(&Sha256Digest::of(&bytes));
        if if_none_match.is_some_and(|tag| same_digest(tag, &digest)) {
            return Ok(ManifestRead::NotModified);
        }
        Ok(ManifestRead::Found { bytes, media_type })
    }

    async fn put_manifest(
        &self,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<(), MirrorError> {
        let url = self.manifest_url(reference);
        let body = Bytes::copy_from_slice(bytes);
        let response = self
            .send(Method::PUT, &url, |r| {
                r.header(CONTENT_TYPE, media_type).body(body.clone())
            })
            .await?;
        if response.status() != StatusCode::CREATED {
            return Err(status_error("PUT", &url, response).await);
        }
        Ok(())
    }

    /// Points `tag` at the manifest `bytes` unless it already does.
    async fn tag(&self, tag: &str, media_type: &str, bytes: &[u8]) -> Result<(), MirrorError> {
        layout::check_tag(tag).map_err(|e| MirrorError::Config(e.to_string()))?;
        let digest = layout::oci_digest(&Sha256Digest::of(bytes));
        if self.manifest_digest(tag).await?.as_deref() == Some(digest.as_str()) {
            return Ok(());
        }
        self.put_manifest(tag, media_type, bytes).await
    }

    async fn push_empty_config(&self) -> Result<(), MirrorError> {
        self.push_blob(
            &Sha256Digest::of(EMPTY_CONFIG),
            Bytes::from_static(EMPTY_CONFIG),
        )
        .await
    }

    /// Adds `referrers` to the referrers-tag index of `subject`, keeping what others attached.
    async fn add_referrers(
        &self,
        subject: &str,
        referrers: Vec<Descriptor>,
    ) -> Result<(), MirrorError> {
        let tag = layout::referrers_tag(subject);
        let mut index = match self.get_manifest(&tag).await? {
            Some((bytes, _)) => Index::from_slice(&bytes).map_err(|e| MirrorError::Protocol {
                object: tag.clone(),
                reason: e.to_string(),
            })?,
            None => Index::new(),
        };
        let mut changed = false;
        for referrer in referrers {
            changed |= index.add(referrer);
        }
        if changed {
            self.put_manifest(&tag, INDEX_MEDIA_TYPE, &index.to_bytes())
                .await?;
        }
        Ok(())
    }

    fn not_found(&self, object: &ObjectPath) -> MirrorError {
        MirrorError::NotFound {
            object: object.as_path(),
            mirror: self.describe(),
        }
    }

    /// Reads a blob, from `conditions.resume_from` on when asked. `If-Range` is never sent: the digest in
    /// the URL pins the bytes, and distribution's registry compares `If-Range` with its quoted digest
    /// ETag, so a bare one would only turn every resume into a full read.
    async fn get_blob(
        &self,
        object: &ObjectPath,
        digest: &Sha256Digest,
        max_length: u64,
        conditions: &Conditions,
    ) -> Result<Fetched, MirrorError> {
        let url = self.blob_url(digest);
        let mut conditions = Conditions {
            if_range: None,
            ..conditions.clone()
        };
        let mut response = self
            .send(Method::GET, &url, |r| {
                r.headers(condition_headers(&conditions, true))
            })
            .await?;
        if response.status() == StatusCode::RANGE_NOT_SATISFIABLE && conditions.resume_from > 0 {
            tracing::debug!(%object, from = conditions.resume_from, "range not satisfiable; reading from 0");
            conditions.resume_from = 0;
            response = self
                .send(Method::GET, &url, |r| {
                    r.headers(condition_headers(&conditions, true))
                })
                .await?;
        }
        if response.status() == StatusCode::NOT_FOUND {
            return Err(self.not_found(object));
        }
        let mut fetched = read(object, &url, response, max_length, &conditions).await?;
        // The digest is the blob's one validator, whatever ETag form the registry uses.
        if let Fetched::Full(response) | Fetched::Partial { response, .. } = &mut fetched {
            response.etag = Some(layout::oci_digest(digest));
            response.last_modified = None;
        }
        Ok(fetched)
    }
}

/// What a conditional manifest read found.
enum ManifestRead {
    Missing,
    NotModified,
    Found { bytes: Vec<u8>, media_type: String },
}

impl MirrorRead for OciMirror {
    async fn get(&self, object: &ObjectPath, max_length: u64) -> Result<Response, MirrorError> {
        self.get_with(object, max_length, &Conditions::default())
            .await?
            .into_full(object)
    }

    /// Metadata tags are revalidated by manifest digest (their [`Response::etag`]) and never resumed
    /// (they are small); blobs are resumed with `Range` and never revalidated (they cannot change).
    async fn get_with(
        &self,
        object: &ObjectPath,
        max_length: u64,
        conditions: &Conditions,
    ) -> Result<Fetched, MirrorError> {
        match object {
            ObjectPath::Metadata(name) => {
                let bytes = match self
                    .get_manifest_if(name, conditions.if_none_match.as_deref())
                    .await?
                {
                    ManifestRead::Found { bytes, .. } => bytes,
                    // Registries send no freshness for manifests: the tag may move at any time.
                    ManifestRead::NotModified => {
                        return Ok(Fetched::NotModified {
                            cache_control: None,
                        });
                    }
                    ManifestRead::Missing => return Err(self.not_found(object)),
                };
                let protocol = |reason: String| MirrorError::Protocol {
                    object: object.as_path(),
                    reason,
                };
                let manifest = Manifest::from_slice(&bytes).map_err(|e| protocol(e.to_string()))?;
                let layer =
                    layout::metadata_layer(&manifest).map_err(|e| protocol(e.to_string()))?;
                let etag = Some(layout::oci_digest(&Sha256Digest::of(&bytes)));
                if let Some(embedded) = layer.embedded() {
                    let embedded = embedded.map_err(|e| protocol(e.to_string()))?;
                    let mut response = Response::from_bytes(object, embedded.into(), max_length)?;
                    response.etag = etag;
                    return Ok(Fetched::Full(response));
                }
                let digest = layer
                    .sha256()
                    .ok_or_else(|| protocol(format!("layer digest {}", layer.digest)))?;
                let whole = Conditions::default();
                let Fetched::Full(mut response) =
                    self.get_blob(object, &digest, max_length, &whole).await?
                else {
                    return Err(protocol(
                        "a conditional answer to a plain blob read".to_owned(),
                    ));
                };
                response.etag = etag;
                Ok(Fetched::Full(response))
            }
            ObjectPath::Target { sha256, .. } | ObjectPath::Chunk(sha256) => {
                let conditions = Conditions {
                    if_none_match: None,
                    if_modified_since: None,
                    ..conditions.clone()
                };
                self.get_blob(object, sha256, max_length, &conditions).await
            }
        }
    }

    fn describe(&self) -> String {
        format!("oci://{}/{}", self.registry, self.repository)
    }
}

impl MirrorWrite for OciMirror {
    async fn exists(&self, object: &ObjectPath) -> Result<bool, MirrorError> {
        match object {
            ObjectPath::Metadata(name) => Ok(self.manifest_digest(name).await?.is_some()),
            ObjectPath::Target { sha256, .. } | ObjectPath::Chunk(sha256) => {
                self.blob_exists(sha256).await
            }
        }
    }

    async fn put(&self, object: &ObjectPath, bytes: Bytes) -> Result<(), MirrorError> {
        match object {
            ObjectPath::Metadata(name) => {
                layout::check_tag(name).map_err(|e| MirrorError::Config(e.to_string()))?;
                let (_, manifest) = layout::metadata_manifest(name, &bytes);
                self.push_blob(&Sha256Digest::of(&bytes), bytes).await?;
                self.push_empty_config().await?;
                self.put_manifest(name, MANIFEST_MEDIA_TYPE, &manifest)
                    .await
            }
            ObjectPath::Target { sha256, .. } | ObjectPath::Chunk(sha256) => {
                self.push_blob(sha256, bytes).await
            }
        }
    }

    async fn link_release(&self, release: &ReleaseObjects) -> Result<(), MirrorError> {
        self.push_empty_config().await?;
        let (bundle_sha, bundle_len) = release.bundle;
        let bundle = Descriptor::from_digest(FLUX_CONTENT_MEDIA_TYPE, bundle_sha, bundle_len);
        let revision = format!(
            "{}/{}@sha256:{}",
            release.channel, release.number, release.tar_sha256
        );
        let (_, manifest) =
            layout::bundle_manifest(bundle, &release.created, &release.source, &revision);
        let release_tag = layout::release_tag(&release.channel, release.number);
        self.tag(&release_tag, MANIFEST_MEDIA_TYPE, &manifest)
            .await?;
        let subject = Descriptor::of(MANIFEST_MEDIA_TYPE, &manifest);
        let index = Descriptor::from_digest(
            layout::CHUNK_INDEX_MEDIA_TYPE,
            release.index.0,
            release.index.1,
        );
        let chunks: Vec<Descriptor> = release
            .chunks
            .iter()
            .map(|(d, len)| Descriptor::from_digest(layout::CHUNK_MEDIA_TYPE, *d, *len))
            .collect();
        let pack = Descriptor::from_digest(
            layout::CHUNK_PACK_MEDIA_TYPE,
            release.pack.0,
            release.pack.1,
        );
        let mut referrers = Vec::new();
        for (_, bytes) in layout::chunk_manifests(&subject, index, pack, &chunks) {
            let mut descriptor = Descriptor::of(MANIFEST_MEDIA_TYPE, &bytes);
            if self.manifest_digest(&descriptor.digest).await?.is_none() {
                self.put_manifest(&descriptor.digest, MANIFEST_MEDIA_TYPE, &bytes)
                    .await?;
            }
            descriptor.artifact_type = Some(layout::CHUNK_INDEX_MEDIA_TYPE.to_owned());
            referrers.push(descriptor);
        }
        self.add_referrers(&subject.digest, referrers).await?;
        if release.latest {
            self.tag(&release.channel, MANIFEST_MEDIA_TYPE, &manifest)
                .await?;
        }
        Ok(())
    }
}

/// Whether an `If-None-Match` value names `digest` (`sha256:…`), quoted or not.
fn same_digest(tag: &str, digest: &str) -> bool {
    tag.trim_start_matches("W/").trim_matches('"') == digest
}

/// Percent-encodes a query value (RFC 3986 unreserved characters pass).
fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn method_name(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::POST => "POST",
        _ => "request",
    }
}

/// Standard base64 for a Basic credential, which is all mast encodes.
mod base64_lite {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    pub(super) fn encode(input: &[u8]) -> String {
        let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
        for group in input.chunks(3) {
            let b = [
                group[0],
                *group.get(1).unwrap_or(&0),
                *group.get(2).unwrap_or(&0),
            ];
            let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
            for i in 0..4 {
                if i <= group.len() {
                    out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn rfc4648_vectors() {
            for (input, want) in [
                ("", ""),
                ("f", "Zg=="),
                ("fo", "Zm8="),
                ("foo", "Zm9v"),
                ("foob", "Zm9vYg=="),
            ] {
                assert_eq!(super::encode(input.as_bytes()), want);
            }
        }
    }
}
