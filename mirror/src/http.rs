//! An HTTP(S) mirror: reads by `GET`, writes by `PUT` to a WebDAV-style origin (nginx `dav_methods PUT`)
//! or to presigned URLs (S3 and its kin) that a command prints.

use std::path::PathBuf;

use bytes::Bytes;
use reqwest::StatusCode;
use reqwest::header::{
    CACHE_CONTROL, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, DATE, ETAG, HeaderMap, HeaderValue,
    IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE, LAST_MODIFIED, RANGE,
};

use crate::error::redact;
use crate::transport::Body;
use crate::{Conditions, Fetched, MirrorError, MirrorRead, MirrorWrite, ObjectPath, Response};

/// A static HTTP origin serving the layout under `base`.
#[derive(Debug, Clone)]
pub struct HttpMirror {
    base: String,
    client: reqwest::Client,
    presign: Option<PresignCommand>,
}

/// A command that prints a presigned URL for one request, for origins that take uploads only through
/// signed URLs (S3, GCS, R2, MinIO).
///
/// mast runs `PROGRAM ARGS… METHOD PATH CONTENT_TYPE` once per request it needs signed — `PUT` for an
/// upload, `HEAD` for an existence check — where `PATH` is the object's path in the layout
/// (`metadata/timestamp.json`). The command prints the URL on the first line of its standard output and
/// exits 0. Reads use the mirror's base URL (the public CDN address) and are never signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresignCommand {
    /// The program and its leading arguments.
    pub argv: Vec<String>,
}

impl HttpMirror {
    /// A mirror at `base` (`https://cdn.example/mast`, trailing slash optional) using `client`.
    pub fn new(base: &str, client: reqwest::Client) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            client,
            presign: None,
        }
    }

    /// Signs writes and existence checks with `command` instead of sending them to the base URL.
    pub fn with_presign(mut self, command: PresignCommand) -> Self {
        self.presign = Some(command);
        self
    }

    fn url(&self, object: &ObjectPath) -> String {
        format!("{}/{}", self.base, object.as_path())
    }

    async fn send_get(
        &self,
        url: &str,
        conditions: &Conditions,
    ) -> Result<reqwest::Response, MirrorError> {
        self.client
            .get(url)
            .headers(condition_headers(conditions, false))
            .send()
            .await
            .map_err(|source| MirrorError::Http {
                method: "GET",
                url: redact(url),
                source,
            })
    }

    async fn write_url(&self, method: &str, object: &ObjectPath) -> Result<String, MirrorError> {
        match &self.presign {
            None => Ok(self.url(object)),
            Some(command) => command.sign(method, object).await,
        }
    }
}

impl PresignCommand {
    /// Parses a command line split on whitespace (no shell quoting: point it at a script for anything
    /// more complex).
    pub fn parse(line: &str) -> Result<Self, MirrorError> {
        let argv: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
        if argv.is_empty() {
            return Err(MirrorError::Config("--presign-cmd is empty".to_owned()));
        }
        Ok(Self { argv })
    }

    async fn sign(&self, method: &str, object: &ObjectPath) -> Result<String, MirrorError> {
        let (program, args) = self
            .argv
            .split_first()
            .ok_or_else(|| MirrorError::Config("--presign-cmd is empty".to_owned()))?;
        let output = tokio::process::Command::new(PathBuf::from(program))
            .args(args)
            .args([method, &object.as_path(), object.content_type()])
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .map_err(|e| MirrorError::Config(format!("presign command {program}: {e}")))?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let url = stdout.lines().next().unwrap_or_default().trim();
        if !output.status.success() || !(url.starts_with("https://") || url.starts_with("http://"))
        {
            return Err(MirrorError::Config(format!(
                "presign command {program} {method} {object}: {} and printed no URL: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        Ok(url.to_owned())
    }
}

impl MirrorRead for HttpMirror {
    async fn get(&self, object: &ObjectPath, max_length: u64) -> Result<Response, MirrorError> {
        self.get_with(object, max_length, &Conditions::default())
            .await?
            .into_full(object)
    }

    async fn get_with(
        &self,
        object: &ObjectPath,
        max_length: u64,
        conditions: &Conditions,
    ) -> Result<Fetched, MirrorError> {
        let url = self.url(object);
        let mut response = self.send_get(&url, conditions).await?;
        let mut conditions = conditions.clone();
        if response.status() == StatusCode::RANGE_NOT_SATISFIABLE && conditions.resume_from > 0 {
            // The object is no longer than what we hold, so it is not the object we were reading:
            // start over, keeping any revalidation the caller asked for.
            tracing::debug!(%object, from = conditions.resume_from, "range not satisfiable; reading from 0");
            conditions.resume_from = 0;
            conditions.if_range = None;
            response = self.send_get(&url, &conditions).await?;
        }
        let status = response.status();
        if status == StatusCode::NOT_FOUND || status == StatusCode::GONE {
            return Err(MirrorError::NotFound {
                object: object.as_path(),
                mirror: self.describe(),
            });
        }
        read(object, &url, response, max_length, &conditions).await
    }

    fn describe(&self) -> String {
        self.base.clone()
    }
}

impl MirrorWrite for HttpMirror {
    async fn exists(&self, object: &ObjectPath) -> Result<bool, MirrorError> {
        let url = self.write_url("HEAD", object).await?;
        let response = self
            .client
            .head(&url)
            .send()
            .await
            .map_err(|source| MirrorError::Http {
                method: "HEAD",
                url: redact(&url),
                source,
            })?;
        match response.status() {
            StatusCode::OK => Ok(true),
            // S3 answers 403 for a missing key when the signer may not list the bucket.
            StatusCode::NOT_FOUND | StatusCode::GONE => Ok(false),
            StatusCode::FORBIDDEN if self.presign.is_some() => Ok(false),
            _ => Err(status_error("HEAD", &url, response).await),
        }
    }

    async fn put(&self, object: &ObjectPath, bytes: Bytes) -> Result<(), MirrorError> {
        let url = self.write_url("PUT", object).await?;
        let response = self
            .client
            .put(&url)
            .header(CONTENT_TYPE, object.content_type())
            .header(CONTENT_LENGTH, bytes.len())
            .body(bytes)
            .send()
            .await
            .map_err(|source| MirrorError::Http {
                method: "PUT",
                url: redact(&url),
                source,
            })?;
        match response.status() {
            StatusCode::OK | StatusCode::CREATED | StatusCode::NO_CONTENT => Ok(()),
            _ => Err(status_error("PUT", &url, response).await),
        }
    }
}

/// Whether `last_modified` is less than a second before `date` (both HTTP dates), so that it and any
/// validator derived from the same mtime are weak. Unparsable or absent dates count as not within.
fn modified_within_a_second(last_modified: Option<&str>, date: Option<&str>) -> bool {
    match (last_modified.and_then(http_date), date.and_then(http_date)) {
        (Some(modified), Some(date)) => date - modified < 1,
        _ => false,
    }
}

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`, the form RFC 9110 requires senders to use) as Unix
/// seconds.
fn http_date(value: &str) -> Option<i64> {
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    time::PrimitiveDateTime::parse(value, format)
        .ok()
        .map(|at| at.assume_utc().unix_timestamp())
}

/// The request headers for `conditions`. `digest_etag` quotes a bare OCI digest, which registries
/// compare with their quoted `ETag`.
pub(crate) fn condition_headers(conditions: &Conditions, digest_etag: bool) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let mut put = |name, value: &str| {
        // A validator a server sent us is a valid header value; one that is not is dropped, which only
        // costs a full read.
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    };
    if let Some(etag) = &conditions.if_none_match {
        if digest_etag && !etag.starts_with('"') {
            put(IF_NONE_MATCH, &format!("\"{etag}\""));
        } else {
            put(IF_NONE_MATCH, etag);
        }
    }
    if let Some(date) = &conditions.if_modified_since {
        put(IF_MODIFIED_SINCE, date);
    }
    if conditions.resume_from > 0 {
        put(RANGE, &format!("bytes={}-", conditions.resume_from));
        if let Some(validator) = &conditions.if_range {
            put(IF_RANGE, validator);
        }
    }
    headers
}

/// Reads the answer to a GET sent with `conditions`: 200 is the whole object, 304 (only when
/// revalidating) not modified, 206 (only when resuming) the rest of it from the offset asked, checked
/// against its `Content-Range`. Anything else is an error; 404, 416 and auth are the caller's.
pub(crate) async fn read(
    object: &ObjectPath,
    url: &str,
    response: reqwest::Response,
    max_length: u64,
    conditions: &Conditions,
) -> Result<Fetched, MirrorError> {
    let revalidating = conditions.if_none_match.is_some() || conditions.if_modified_since.is_some();
    let status = response.status();
    let cache_control = response
        .headers()
        .get(CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if status == StatusCode::NOT_MODIFIED && revalidating {
        return Ok(Fetched::NotModified { cache_control });
    }
    let from = conditions.resume_from;
    let partial = status == StatusCode::PARTIAL_CONTENT && from > 0;
    if status != StatusCode::OK && !partial {
        return Err(status_error("GET", url, response).await);
    }
    let header = |name| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (mut etag, mut last_modified) = (header(ETAG), header(LAST_MODIFIED));
    if modified_within_a_second(last_modified.as_deref(), header(DATE).as_deref()) {
        // RFC 9110 §8.8.2.2: a Last-Modified less than a second before the response's Date is weak — the
        // file may change again within that second and keep it, and nginx's ETag is made of the same
        // mtime and the length. Nothing may revalidate or resume on it, so neither is kept: the next poll
        // of this object reads it whole.
        etag = None;
        last_modified = None;
    }
    let length = header(CONTENT_LENGTH).and_then(|v| v.parse().ok());
    let total = if partial {
        let range = header(CONTENT_RANGE).unwrap_or_default();
        let total =
            check_content_range(&range, from, length).map_err(|reason| MirrorError::Protocol {
                object: object.as_path(),
                reason: format!("206 for bytes={from}- with Content-Range {range:?}: {reason}"),
            })?;
        if total.is_some_and(|total| total > max_length) {
            return Err(MirrorError::TooLarge {
                object: object.as_path(),
                limit: max_length,
            });
        }
        total
    } else {
        None
    };
    // A 206 body's cap is what is left of the object's; `from` past the cap cannot be satisfied.
    let cap = if partial {
        max_length.saturating_sub(from)
    } else {
        max_length
    };
    let mut out = Response::new(object, length, cap, Body::Http(response))?;
    out.etag = etag;
    out.last_modified = last_modified;
    out.cache_control = cache_control;
    Ok(if partial {
        Fetched::Partial {
            from,
            total,
            response: out,
        }
    } else {
        Fetched::Full(out)
    })
}

/// Checks a 206's `Content-Range: bytes FIRST-LAST/TOTAL` (TOTAL may be `*`) against the `from` asked
/// and the body's `Content-Length`; returns TOTAL.
fn check_content_range(range: &str, from: u64, length: Option<u64>) -> Result<Option<u64>, String> {
    let spec = range
        .strip_prefix("bytes ")
        .ok_or("not a byte range")?
        .trim();
    let (span, total) = spec.split_once('/').ok_or("no total")?;
    let (first, last) = span.split_once('-').ok_or("no span")?;
    let number = |s: &str| {
        s.trim()
            .parse::<u64>()
            .map_err(|_| format!("bad number {s:?}"))
    };
    let (first, last) = (number(first)?, number(last)?);
    let total = match total.trim() {
        "*" => None,
        n => Some(number(n)?),
    };
    if first != from {
        return Err(format!("starts at {first}"));
    }
    if last < first || total.is_some_and(|t| last >= t) {
        return Err("inconsistent span".to_owned());
    }
    if length.is_some_and(|n| n != last - first + 1) {
        return Err("Content-Length differs from the span".to_owned());
    }
    Ok(total)
}

pub(crate) async fn status_error(
    method: &'static str,
    url: &str,
    response: reqwest::Response,
) -> MirrorError {
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = response.text().await.unwrap_or_default();
    let detail: String = body.trim().chars().take(200).collect();
    MirrorError::Status {
        method,
        url: redact(url),
        status,
        detail: if detail.is_empty() {
            String::new()
        } else {
            format!(": {detail}")
        },
        retry_after,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_last_modified_in_the_same_second_as_the_date_is_weak() {
        let date = Some("Sun, 29 Nov 2026 12:00:05 GMT");
        assert!(modified_within_a_second(
            Some("Sun, 29 Nov 2026 12:00:05 GMT"),
            date
        ));
        assert!(!modified_within_a_second(
            Some("Sun, 29 Nov 2026 12:00:04 GMT"),
            date
        ));
        // A clock that puts the file in the future is no stronger.
        assert!(modified_within_a_second(
            Some("Sun, 29 Nov 2026 12:00:09 GMT"),
            date
        ));
        assert!(!modified_within_a_second(None, date));
        assert!(!modified_within_a_second(Some("yesterday"), date));
        assert_eq!(
            http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
    }

    #[test]
    fn content_range_must_start_where_asked_and_agree_with_the_body() {
        assert_eq!(
            check_content_range("bytes 100-199/200", 100, Some(100)),
            Ok(Some(200))
        );
        assert_eq!(check_content_range("bytes 100-199/*", 100, None), Ok(None));
        for (range, length) in [
            ("bytes 0-199/200", Some(200)),
            ("bytes 100-199/150", Some(100)),
            ("bytes 100-199/200", Some(50)),
            ("bytes 100-99/200", None),
            ("items 100-199/200", None),
            ("bytes 100-199", None),
            ("", None),
        ] {
            assert!(check_content_range(range, 100, length).is_err(), "{range}");
        }
    }

    #[test]
    fn condition_headers_quote_bare_digests_for_registries_only() {
        let conditions = Conditions {
            if_none_match: Some("sha256:ab".to_owned()),
            if_modified_since: Some("Sun, 29 Nov 2026 21:00:00 GMT".to_owned()),
            resume_from: 7,
            if_range: Some("\"x\"".to_owned()),
        };
        let http = condition_headers(&conditions, false);
        assert_eq!(http[IF_NONE_MATCH], "sha256:ab");
        assert_eq!(http[RANGE], "bytes=7-");
        assert_eq!(http[IF_RANGE], "\"x\"");
        assert_eq!(http[IF_MODIFIED_SINCE], "Sun, 29 Nov 2026 21:00:00 GMT");
        assert_eq!(
            condition_headers(&conditions, true)[IF_NONE_MATCH],
            "\"sha256:ab\""
        );
        let fresh = condition_headers(&Conditions::default(), false);
        assert!(fresh.is_empty());
        // No range at offset 0, and so no If-Range either.
        assert!(condition_headers(&Conditions::resume(0, Some("\"x\"")), false).is_empty());
    }
}
