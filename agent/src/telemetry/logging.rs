//! The process's one `tracing` subscriber, and the spans every sync pass and apply run in.

use std::env::{self, VarError};
use std::fmt;
use std::io::IsTerminal as _;
use std::str::FromStr;

use mast_protocol::digest::Sha256Digest;
use mast_protocol::release::{Channel, ReleaseNumber};
use tracing::{Span, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::util::SubscriberInitExt as _;

use super::TelemetryError;

/// The filter used when `RUST_LOG` is unset or empty: the agent's own events at `info`, and dependencies'
/// at `info` too, so a TLS or HTTP warning is not lost.
pub const DEFAULT_FILTER: &str = "info,mast_agent=info";

/// The environment variable the filter is read from, as every tracing-based tool does.
pub const FILTER_ENV: &str = "RUST_LOG";

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines; coloured only when stderr is a terminal (journald adds its own metadata).
    #[default]
    Plain,
    /// One JSON object per line with the event's fields flattened and its spans listed, for log shippers.
    Json,
}

impl FromStr for LogFormat {
    type Err = TelemetryError;

    fn from_str(s: &str) -> Result<Self, TelemetryError> {
        match s {
            "plain" => Ok(Self::Plain),
            "json" => Ok(Self::Json),
            other => Err(TelemetryError::LogFormat(other.to_owned())),
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Plain => "plain",
            Self::Json => "json",
        })
    }
}

/// Installs the global subscriber writing `format` to stderr, filtered by `RUST_LOG` or, when that is
/// unset or empty, by [`DEFAULT_FILTER`]. `log` records (rustls writes those) are routed through it too.
///
/// Fails instead of panicking when `RUST_LOG` does not parse or a subscriber is already installed, so the
/// binary can exit with a usage error naming the variable.
pub fn init(format: LogFormat) -> Result<(), TelemetryError> {
    let filter = match env::var(FILTER_ENV) {
        Ok(directives) if !directives.trim().is_empty() => {
            parse_filter_from(FILTER_ENV, &directives)?
        }
        Ok(_) | Err(VarError::NotPresent) => {
            parse_filter_from("the default filter", DEFAULT_FILTER)?
        }
        Err(VarError::NotUnicode(_)) => return Err(TelemetryError::NotUnicode { var: FILTER_ENV }),
    };
    install(format, filter)
}

/// Like [`init`], with the filter given as directives (from a configuration file or a flag) instead of
/// read from the environment.
pub fn init_with_filter(format: LogFormat, directives: &str) -> Result<(), TelemetryError> {
    install(format, parse_filter(directives)?)
}

/// Parses `EnvFilter` directives, such as `info,mast_agent=debug`.
pub fn parse_filter(directives: &str) -> Result<EnvFilter, TelemetryError> {
    parse_filter_from("the configured filter", directives)
}

/// A subscriber in `format` writing to `writer`, without colour, not installed. Tests install it for a
/// scope with `tracing::subscriber::with_default` to read what the agent logs.
pub fn subscriber<W>(
    format: LogFormat,
    filter: EnvFilter,
    writer: W,
) -> Box<dyn Subscriber + Send + Sync + 'static>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    build(format, filter, writer, false)
}

/// The span of one sync pass on `channel`. `release` and `digest` are unknown when the pass starts; the
/// fetch code fills them in with [`record_release`] once the timestamp and targets name them.
pub fn sync_pass_span(channel: &Channel) -> Span {
    tracing::info_span!(
        "sync",
        channel = %channel,
        release = tracing::field::Empty,
        digest = tracing::field::Empty,
    )
}

/// Records the release a pass is working towards in its span (see [`sync_pass_span`]).
pub fn record_release(span: &Span, release: ReleaseNumber, digest: &Sha256Digest) {
    span.record("release", release.get());
    span.record("digest", tracing::field::display(digest));
}

/// The span of one apply of `release` (whose bundle has sha256 `digest`) on `channel`.
pub fn apply_span(channel: &Channel, release: ReleaseNumber, digest: &Sha256Digest) -> Span {
    tracing::info_span!(
        "apply",
        channel = %channel,
        release = release.get(),
        digest = %digest,
    )
}

fn parse_filter_from(origin: &'static str, directives: &str) -> Result<EnvFilter, TelemetryError> {
    EnvFilter::try_new(directives).map_err(|source| TelemetryError::LogFilter {
        origin,
        directives: directives.to_owned(),
        source,
    })
}

fn install(format: LogFormat, filter: EnvFilter) -> Result<(), TelemetryError> {
    let ansi = std::io::stderr().is_terminal();
    build(format, filter, std::io::stderr, ansi)
        .try_init()
        .map_err(|_| TelemetryError::LoggingAlreadyInitialized)
}

fn build<W>(
    format: LogFormat,
    filter: EnvFilter,
    writer: W,
    ansi: bool,
) -> Box<dyn Subscriber + Send + Sync + 'static>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Plain => Box::new(builder.with_ansi(ansi).finish()),
        LogFormat::Json => Box::new(
            builder
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(true)
                .finish(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse_from_their_names_only() {
        assert_eq!("plain".parse::<LogFormat>().unwrap(), LogFormat::Plain);
        assert_eq!("json".parse::<LogFormat>().unwrap(), LogFormat::Json);
        assert!(matches!(
            "JSON".parse::<LogFormat>(),
            Err(TelemetryError::LogFormat(value)) if value == "JSON"
        ));
    }

    #[test]
    fn bad_directives_are_an_error_naming_them() {
        assert!(parse_filter(DEFAULT_FILTER).is_ok());
        let error = parse_filter("mast_agent=loud").unwrap_err();
        assert!(error.to_string().contains("mast_agent=loud"), "{error}");
    }
}
