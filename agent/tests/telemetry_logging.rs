//! The logging set-up: structured span fields in JSON, and a second `init` refused rather than a panic.
//!
//! The global subscriber is per process, so the `init` test lives alone in this test binary with tests
//! that only install scoped subscribers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io;
use std::sync::{Arc, Mutex};

use mast_agent::telemetry::{
    LogFormat, TelemetryError, apply_span, init_with_filter, parse_filter, record_release,
    subscriber, sync_pass_span,
};
use mast_protocol::digest::Sha256Digest;
use mast_protocol::release::{Channel, ReleaseNumber};
use tracing_subscriber::fmt::MakeWriter;

/// Collects what the subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn lines(&self) -> Vec<String> {
        String::from_utf8(self.0.lock().unwrap().clone())
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'w> MakeWriter<'w> for Captured {
    type Writer = Captured;

    fn make_writer(&'w self) -> Self::Writer {
        self.clone()
    }
}

#[test]
fn json_lines_carry_the_pass_and_apply_fields() {
    let captured = Captured::default();
    let logs = subscriber(
        LogFormat::Json,
        parse_filter("info").unwrap(),
        captured.clone(),
    );
    let channel: Channel = "edge-eu".parse().unwrap();
    let release = ReleaseNumber::new(12).unwrap();
    let digest = Sha256Digest::of(b"bundle");

    tracing::subscriber::with_default(logs, || {
        let pass = sync_pass_span(&channel);
        let _entered = pass.enter();
        tracing::info!("timestamp refreshed");
        record_release(&pass, release, &digest);
        tracing::info!(bytes = 4096_u64, "chunk fetched");
        let apply = apply_span(&channel, release, &digest);
        apply.in_scope(|| tracing::warn!("health gate timed out"));
        tracing::debug!("filtered out at info");
    });

    let lines: Vec<serde_json::Value> = captured
        .lines()
        .iter()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{lines:#?}");
    assert_eq!(lines[0]["message"], "timestamp refreshed");
    assert_eq!(lines[0]["span"]["name"], "sync");
    assert_eq!(lines[0]["span"]["channel"], "edge-eu");
    assert!(lines[0]["span"].get("release").is_none());

    assert_eq!(lines[1]["bytes"], 4096);
    assert_eq!(lines[1]["span"]["release"], 12);
    assert_eq!(lines[1]["span"]["digest"], digest.to_string());

    assert_eq!(lines[2]["level"], "WARN");
    assert_eq!(lines[2]["span"]["name"], "apply");
    assert_eq!(lines[2]["span"]["release"], 12);
    let spans: Vec<&str> = lines[2]["spans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|span| span["name"].as_str().unwrap())
        .collect();
    assert_eq!(spans, ["sync", "apply"]);
}

#[test]
fn plain_lines_name_the_span_fields() {
    let captured = Captured::default();
    let logs = subscriber(
        LogFormat::Plain,
        parse_filter("info").unwrap(),
        captured.clone(),
    );
    let channel: Channel = "stable".parse().unwrap();
    tracing::subscriber::with_default(logs, || {
        sync_pass_span(&channel).in_scope(|| tracing::info!("link down; will retry"));
    });
    let lines = captured.lines();
    assert_eq!(lines.len(), 1);
    assert!(
        lines[0].contains("sync{channel=stable}") && lines[0].contains("link down; will retry"),
        "{}",
        lines[0]
    );
}

#[test]
fn a_second_init_is_an_error_not_a_panic() {
    init_with_filter(LogFormat::Plain, "warn").unwrap();
    let again = init_with_filter(LogFormat::Json, "info").unwrap_err();
    assert!(matches!(again, TelemetryError::LoggingAlreadyInitialized));
    let bad = init_with_filter(LogFormat::Plain, "mast_agent=shout").unwrap_err();
    assert!(matches!(bad, TelemetryError::LogFilter { .. }), "{bad}");
}
