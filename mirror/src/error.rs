//! The one error type of mirror transports, with a kind callers branch on.

/// What kind of failure a [`MirrorError`] is, for retry decisions, metrics labels and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The object is not on the mirror (a 404, a missing file, an unknown manifest or blob). For the
    /// next root version this is how a TUF client learns the chain has ended, so it is never retried.
    NotFound,
    /// The object is longer than the caller allowed.
    TooLarge,
    /// The mirror answered, but not with what was asked (an unexpected status, a malformed manifest).
    Protocol,
    /// The connection, TLS or local I/O failed: usually transient.
    Transport,
    /// The destination or a setting is wrong (a bad URL, a presign command that fails).
    Config,
}

/// A mirror operation that failed, naming the object and the mirror.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    /// Not on the mirror.
    #[error("{object}: not found on {mirror}")]
    NotFound {
        /// The object's path in the layout.
        object: String,
        /// The mirror.
        mirror: String,
    },
    /// Longer than allowed.
    #[error("{object}: longer than the {limit} bytes allowed")]
    TooLarge {
        /// The object.
        object: String,
        /// The cap.
        limit: u64,
    },
    /// An HTTP status other than the ones expected.
    #[error("{method} {url}: HTTP {status}{detail}")]
    Status {
        /// The method.
        method: &'static str,
        /// The URL (without query string, which may hold a presigned credential).
        url: String,
        /// The status code.
        status: u16,
        /// The start of the response body, if it says anything.
        detail: String,
        /// The response's `Retry-After`, as sent (seconds or an HTTP date), for the caller's scheduler.
        retry_after: Option<String>,
    },
    /// A request that did not complete.
    #[error("{method} {url}: {source}")]
    Http {
        /// The method.
        method: &'static str,
        /// The URL (without query string).
        url: String,
        /// What reqwest said.
        #[source]
        source: reqwest::Error,
    },
    /// Local file system I/O.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A mirror answer that makes no sense (a manifest without the expected layer, a redirect loop).
    #[error("{object}: {reason}")]
    Protocol {
        /// The object.
        object: String,
        /// What was wrong.
        reason: String,
    },
    /// A bad destination or setting.
    #[error("{0}")]
    Config(String),
}

impl MirrorError {
    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::NotFound { .. } => ErrorKind::NotFound,
            Self::TooLarge { .. } => ErrorKind::TooLarge,
            Self::Status { .. } | Self::Protocol { .. } => ErrorKind::Protocol,
            Self::Http { .. } | Self::Io { .. } => ErrorKind::Transport,
            Self::Config(_) => ErrorKind::Config,
        }
    }

    /// The `Retry-After` the mirror sent with a refusal (429, 503), if any.
    pub fn retry_after(&self) -> Option<&str> {
        match self {
            Self::Status { retry_after, .. } => retry_after.as_deref(),
            _ => None,
        }
    }

    /// Whether the object is absent (see [`ErrorKind::NotFound`]).
    pub fn is_not_found(&self) -> bool {
        self.kind() == ErrorKind::NotFound
    }

    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

/// A URL without its query string, which for presigned URLs carries a credential that must not be logged.
pub(crate) fn redact(url: &str) -> String {
    match url.split_once('?') {
        Some((base, _)) => format!("{base}?…"),
        None => url.to_owned(),
    }
}
