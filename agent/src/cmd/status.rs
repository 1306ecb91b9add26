//! `mast-agent status`: what the site runs, read from the state database alone.
//!
//! It opens the database read-only, so it works while the daemon runs and with every mirror down, and it
//! never creates a database where there is none. Its `freshness` part says whether what the site runs is
//! still known to be current: see [`crate::freshness`].

use std::fmt::Write as _;
use std::path::Path;

use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use crate::freshness::Inputs;
use crate::state::{JournalEntry, State, StateError};

/// How `status` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StatusFormat {
    /// Lines for a person.
    #[default]
    Plain,
    /// One JSON document, for fleet tooling.
    Json,
}

/// Reads the database at `path` and renders its status, with the newest `journal` journal entries and,
/// when `drift` is set, every drift finding (the JSON form always has them).
pub fn status(
    path: &Path,
    format: StatusFormat,
    journal: u32,
    drift: bool,
) -> Result<String, StateError> {
    let state = State::open_read_only(path)?;
    let document = document(&state, journal, OffsetDateTime::now_utc())?;
    Ok(match format {
        StatusFormat::Json => format!("{document:#}\n"),
        StatusFormat::Plain => plain(&document, drift),
    })
}

/// The status as JSON at `now`: the same document `/status` serves and `--output json` prints.
pub fn document(state: &State, journal: u32, now: OffsetDateTime) -> Result<Value, StateError> {
    let versions = |pairs: Vec<(String, u64)>| -> Value {
        pairs
            .into_iter()
            .map(|(role, version)| (role, json!(version)))
            .collect::<Map<_, _>>()
            .into()
    };
    let mut channels = Map::new();
    for channel in state.channels()? {
        channels.insert(
            channel.clone(),
            json!({
                "current_release": state.current_release(&channel)?,
                "highest_fetched": state.highest_release(&channel)?,
            }),
        );
    }
    let fact = |key: &str| -> Result<Value, StateError> {
        Ok(state
            .fact(key)?
            .filter(|v| !v.is_empty())
            .map_or(Value::Null, Value::String))
    };
    let downloads: Vec<Value> = state
        .downloads()?
        .into_iter()
        .map(|d| {
            json!({"object": d.object, "mirror": d.mirror, "received": d.offset, "length": d.length})
        })
        .collect();
    let entries: Vec<Value> = state.journal(journal)?.iter().map(entry).collect();
    let drift: Vec<Value> = state
        .drift_findings()?
        .into_iter()
        .map(|d| {
            json!({
                "channel": d.channel,
                "release": d.release,
                "object": d.object,
                "detail": d.detail,
                "corrected": d.corrected,
                "found_at": d.found_at,
            })
        })
        .collect();
    Ok(json!({
        "state": state.path().display().to_string(),
        "schema": crate::state::SCHEMA_VERSION,
        "trusted": versions(state.trusted_versions()?),
        "highest_trusted": versions(state.highest_versions()?),
        "channels": channels,
        "last_contact": fact("last_contact")?,
        "freshness": Inputs::read(state)?.assess(now).to_json(),
        "last_mirror": fact("last_mirror")?,
        "last_outcome": fact("last_outcome")?,
        "last_error": fact("last_error")?,
        "downloads": downloads,
        "journal": entries,
        "drift": {"last_check": fact("last_drift_check")?, "findings": drift},
        "outbox": state.outbox_len()?,
    }))
}

/// The freshness part of the document as lines (the document may come from `/status`, so it is read
/// back from JSON rather than recomputed).
fn freshness_lines(f: &Value) -> String {
    let mut out = String::new();
    let reasons: Vec<&str> = f["reasons"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    // Writing to a String cannot fail.
    let _ = if f["stale"] == true {
        writeln!(out, "freshness:     STALE: {}", reasons.join("; "))
    } else {
        writeln!(
            out,
            "freshness:     current (stale after {} without a refresh)",
            human(f["stale_after_seconds"].as_i64().unwrap_or(0))
        )
    };
    let _ = match (
        f["last_refresh"].as_str(),
        f["seconds_since_refresh"].as_i64(),
    ) {
        (Some(at), Some(since)) => writeln!(out, "last refresh:  {at} ({} ago)", human(since)),
        _ => writeln!(out, "last refresh:  never"),
    };
    let roles: Vec<String> = f["metadata"]
        .as_object()
        .map(|m| {
            ["root", "targets", "snapshot", "timestamp"]
                .iter()
                .filter_map(|role| {
                    let r = m.get(*role)?;
                    let left = r["expires_in_seconds"].as_i64()?;
                    let when = if left <= 0 {
                        format!("{} ago", human(-left))
                    } else {
                        format!("in {}", human(left))
                    };
                    let mark = match r["state"].as_str() {
                        Some("expired") => ", EXPIRED",
                        Some("expires_soon") => ", EXPIRES SOON",
                        _ => "",
                    };
                    Some(format!(
                        "{role} v{} {} ({when}{mark})",
                        r["version"],
                        r["expires"].as_str().unwrap_or("?")
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    if !roles.is_empty() {
        let _ = writeln!(out, "expires:       {}", roles.join(", "));
    }
    out
}

/// Seconds as `2d 3h`, `2h 5m`, `4m 10s` or `45s`.
fn human(seconds: i64) -> String {
    crate::freshness::human(std::time::Duration::from_secs(seconds.unsigned_abs()))
}

fn entry(e: &JournalEntry) -> Value {
    json!({
        "id": e.id,
        "channel": e.channel,
        "release": e.release,
        "state": e.state.as_str(),
        "at": e.at,
        "detail": e.detail,
    })
}

/// The document as lines.
fn plain(doc: &Value, drift: bool) -> String {
    let text = |v: &Value| match v {
        Value::Null => "never".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let roles = |v: &Value| {
        v.as_object()
            .map(|m| {
                m.iter()
                    .map(|(role, version)| format!("{role} v{version}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "nothing".to_owned())
    };
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(out, "state:         {}", text(&doc["state"]));
    let _ = writeln!(out, "trusted:       {}", roles(&doc["trusted"]));
    let _ = writeln!(out, "highest seen:  {}", roles(&doc["highest_trusted"]));
    if let Some(channels) = doc["channels"].as_object() {
        for (channel, c) in channels {
            let current = match &c["current_release"] {
                Value::Null => "nothing applied yet".to_owned(),
                n => format!("running release {n}"),
            };
            let _ = writeln!(
                out,
                "channel {channel}: {current}; highest fetched {}",
                text(&c["highest_fetched"])
            );
        }
    }
    out.push_str(&freshness_lines(&doc["freshness"]));
    let _ = writeln!(out, "last mirror:   {}", text(&doc["last_mirror"]));
    let _ = writeln!(out, "last outcome:  {}", text(&doc["last_outcome"]));
    if !doc["last_error"].is_null() {
        let _ = writeln!(out, "last error:    {}", text(&doc["last_error"]));
    }
    for d in doc["downloads"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "downloading:   {} {}/{} bytes from {}",
            text(&d["object"]),
            d["received"],
            d["length"],
            text(&d["mirror"])
        );
    }
    let findings = doc["drift"]["findings"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "drift:         {} objects differ (last check {})",
        findings.len(),
        text(&doc["drift"]["last_check"])
    );
    if drift {
        for f in findings {
            let corrected = if f["corrected"] == true {
                ", corrected"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "  {} release {}: {}: {}{corrected}",
                text(&f["channel"]),
                f["release"],
                text(&f["object"]),
                text(&f["detail"])
            );
        }
    }
    let _ = writeln!(out, "outbox:        {} reports waiting", doc["outbox"]);
    let journal = doc["journal"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    if !journal.is_empty() {
        let _ = writeln!(out, "journal (newest first):");
        for e in journal {
            let detail = e["detail"].as_str().filter(|d| !d.is_empty());
            let _ = writeln!(
                out,
                "  {}  {} release {}  {}{}",
                text(&e["at"]),
                text(&e["channel"]),
                e["release"],
                text(&e["state"]),
                detail.map(|d| format!(": {d}")).unwrap_or_default()
            );
        }
    }
    out
}
