//! An HTTP(S) mirror: reads by `GET`, writes by `PUT` to a WebDAV-style origin (nginx `dav_methods PUT`)
//! or to presigned URLs (S3 and its kin) that a command prints.

use std::path::PathBuf;

use bytes::Bytes;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, ETAG, LAST_MODIFIED};

use crate::error::redact;
use crate::transport::Body;
use crate::{MirrorError, MirrorRead, MirrorWrite, ObjectPath, Response};

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
        let url = self.url(object);
        let response = self
            .client
            .get(&url)
            .send()
            .await
            .map_err(|source| MirrorError::Http {
                method: "GET",
                url: redact(&url),
                source,
            })?;
        let status = response.status();
        if status == StatusCode::NOT_FOUND || status == StatusCode::GONE {
            return Err(MirrorError::NotFound {
                object: object.as_path(),
                mirror: self.describe(),
            });
        }
        if status != StatusCode::OK {
            return Err(status_error("GET", &url, response).await);
        }
        let header = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let (etag, last_modified) = (header(ETAG), header(LAST_MODIFIED));
        let length = header(CONTENT_LENGTH).and_then(|v| v.parse().ok());
        let mut out = Response::new(object, length, max_length, Body::Http(response))?;
        out.etag = etag;
        out.last_modified = last_modified;
        Ok(out)
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

pub(crate) async fn status_error(
    method: &'static str,
    url: &str,
    response: reqwest::Response,
) -> MirrorError {
    let status = response.status().as_u16();
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
    }
}
