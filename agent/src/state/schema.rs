//! The state database's schema, as an ordered list of migrations.
//!
//! `PRAGMA user_version` holds the number of migrations applied. The pending migrations run in one
//! transaction together with the version bump, so a crash mid-upgrade leaves the previous version. A
//! migration, once released, is never edited: changes are new migrations appended to [`MIGRATIONS`].

use rusqlite::Connection;

/// The schema version this agent writes: the number of migrations it knows.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Every migration, oldest first. Index `i` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: [&str; 3] = [
    // 1: the fetch side's state.
    "
    CREATE TABLE trusted_metadata (
        role      TEXT PRIMARY KEY,
        version   INTEGER NOT NULL CHECK (version >= 1),
        bytes     BLOB NOT NULL,
        stored_at TEXT NOT NULL
    ) STRICT;
    CREATE TABLE highest_versions (
        role    TEXT PRIMARY KEY,
        version INTEGER NOT NULL CHECK (version >= 1)
    ) STRICT;
    CREATE TABLE releases (
        channel    TEXT NOT NULL,
        number     INTEGER NOT NULL CHECK (number >= 0),
        tar_sha256 TEXT NOT NULL,
        chunk_index BLOB NOT NULL,
        first_seen TEXT NOT NULL,
        PRIMARY KEY (channel, number)
    ) STRICT;
    CREATE TABLE chunks (
        sha256    TEXT PRIMARY KEY,
        bytes     BLOB NOT NULL,
        stored_at TEXT NOT NULL
    ) STRICT;
    CREATE TABLE release_chunks (
        channel TEXT NOT NULL,
        number  INTEGER NOT NULL,
        sha256  TEXT NOT NULL,
        PRIMARY KEY (channel, number, sha256),
        FOREIGN KEY (channel, number) REFERENCES releases (channel, number) ON DELETE CASCADE
    ) STRICT, WITHOUT ROWID;
    CREATE INDEX release_chunks_by_chunk ON release_chunks (sha256);
    CREATE TABLE downloads (
        object        TEXT PRIMARY KEY,
        mirror        TEXT NOT NULL,
        sha256        TEXT NOT NULL,
        length        INTEGER NOT NULL CHECK (length >= 0),
        received      INTEGER NOT NULL CHECK (received >= 0 AND received <= length),
        etag          TEXT,
        last_modified TEXT,
        updated_at    TEXT NOT NULL
    ) STRICT;
    CREATE TABLE journal (
        id      INTEGER PRIMARY KEY AUTOINCREMENT,
        channel TEXT NOT NULL,
        number  INTEGER NOT NULL,
        state   TEXT NOT NULL CHECK (state IN ('staged', 'applied', 'healthy', 'failed', 'rolled_back')),
        at      TEXT NOT NULL,
        detail  TEXT NOT NULL DEFAULT ''
    ) STRICT;
    CREATE TABLE outbox (
        id       INTEGER PRIMARY KEY AUTOINCREMENT,
        created  TEXT NOT NULL,
        kind     TEXT NOT NULL,
        body     TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0
    ) STRICT;
    CREATE TABLE facts (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) STRICT;
    ",
    // 2: the apply side's drift findings: the last check's differences, replaced by each check.
    "
    CREATE TABLE drift (
        channel   TEXT NOT NULL,
        number    INTEGER NOT NULL,
        object    TEXT NOT NULL,
        detail    TEXT NOT NULL,
        corrected INTEGER NOT NULL CHECK (corrected IN (0, 1)),
        found_at  TEXT NOT NULL,
        PRIMARY KEY (channel, object)
    ) STRICT;
    ",
    // 3: what the last apply left in place per channel, which the next prune compares against.
    "
    CREATE TABLE inventory (
        channel    TEXT NOT NULL,
        object     TEXT NOT NULL,
        number     INTEGER NOT NULL,
        applied_at TEXT NOT NULL,
        PRIMARY KEY (channel, object)
    ) STRICT, WITHOUT ROWID;
    ",
];

/// Applies the migrations after `from` and the version bump in one transaction (one fsync).
pub(super) fn migrate(conn: &mut Connection, from: i64) -> rusqlite::Result<()> {
    let start = usize::try_from(from).unwrap_or(0);
    if start >= MIGRATIONS.len() {
        return Ok(());
    }
    let tx = conn.transaction()?;
    for sql in &MIGRATIONS[start..] {
        tx.execute_batch(sql)?;
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()
}
