//! The agent's one SQLite database: everything a site must not lose to a crash, a reboot or a week offline.
//!
//! One file, WAL mode with `synchronous=FULL` (a transaction that returned is on disk, and readers such as
//! `mast-agent status` never block the writer), versioned migrations in [`schema`], and one writer: the
//! process that holds a [`State`]. It keeps:
//!
//! - the trusted TUF metadata, one row per role, and the highest version ever trusted per role — written
//!   through [`TrustStore`] *before* the TUF session uses a file, so a crash leaves either the old or the
//!   new trusted state, both of which the workflow produced;
//! - verified chunks by sha256, and which release needs which chunk (for GC of the ones no recent release
//!   needs);
//! - in-flight downloads with their byte offset and the validators needed to resume them with `If-Range`;
//! - releases seen, the apply journal (staged → applied → healthy | failed → rolled back), an outbox of
//!   status reports waiting for a link, and a few named facts (last successful contact).
//!
//! Nothing enters this database unverified: callers store chunks only after their sha256 matched the
//! signed index, and metadata only when the session hands it out as trusted.
//!
//! Time comes in as an argument, as everywhere in mast, so that tests and the soak harness control it.

mod schema;

use std::path::{Path, PathBuf};
use std::time::Duration;

use mast_mirror::client::TrustStore;
use mast_protocol::digest::Sha256Digest;
use mast_protocol::tuf::{Persisted, StoreOp};
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

pub use schema::SCHEMA_VERSION;

/// How long a second connection (a `status` reader, a second agent by mistake) waits for a lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the state database could not be opened, read or written. Always names the file.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// SQLite failed: the file is not a database, the disk is full, a constraint failed.
    #[error("{path}: {what}: {source}")]
    Sql {
        /// The database file.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// The database was written by a newer agent: refuse rather than misread it.
    #[error(
        "{path}: schema version {found} is newer than this agent's {known}; upgrade the agent or move the file away"
    )]
    SchemaTooNew {
        /// The database file.
        path: PathBuf,
        /// The version in the file.
        found: i64,
        /// The newest version this agent knows.
        known: i64,
    },
    /// There is no database at the path (the agent has not run yet, or the path is wrong).
    #[error("{path}: no state database here (has the agent run on this site?)")]
    Missing {
        /// The path.
        path: PathBuf,
    },
    /// The file could not be put in the mode the agent's durability rests on.
    #[error(
        "{path}: journal_mode is {mode:?}, not wal (is the file on a filesystem without shared memory?)"
    )]
    NotWal {
        /// The database file.
        path: PathBuf,
        /// The mode SQLite reported.
        mode: String,
    },
    /// `PRAGMA integrity_check` found damage.
    #[error("{path}: integrity check failed: {report}")]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// SQLite's report, first lines.
        report: String,
    },
    /// A stored value does not parse (a digest that is not hex, a journal state this agent does not know).
    #[error("{path}: {table}: {reason}")]
    BadRow {
        /// The database file.
        path: PathBuf,
        /// The table.
        table: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// The agent's state database, opened for writing. There is one writer per database; open it once.
#[derive(Debug)]
pub struct State {
    conn: Connection,
    path: PathBuf,
}

/// The trusted metadata as stored: owned bytes per top-level role.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedFiles {
    /// `root.json`, if a root was ever trusted.
    pub root: Option<Vec<u8>>,
    /// The trusted timestamp.
    pub timestamp: Option<Vec<u8>>,
    /// The trusted snapshot.
    pub snapshot: Option<Vec<u8>>,
    /// The trusted top-level targets.
    pub targets: Option<Vec<u8>>,
}

/// A download in flight: enough to resume it with `Range` + `If-Range` after a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Download {
    /// The object's path on the mirror (`chunks/<sha256>`, `targets/...`).
    pub object: String,
    /// The mirror it is being read from (`describe()`); a resume from another mirror starts over.
    pub mirror: String,
    /// The sha256 the whole object must have.
    pub sha256: Sha256Digest,
    /// The signed length of the whole object.
    pub length: u64,
    /// Bytes already received and made durable.
    pub offset: u64,
    /// The `ETag` the first response carried, for `If-Range`.
    pub etag: Option<String>,
    /// The `Last-Modified` the first response carried, when there was no `ETag`.
    pub last_modified: Option<String>,
}

/// A step of a release's life on this site, as the apply journal records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JournalState {
    /// Verified and unpacked locally, not yet sent to the cluster.
    Staged,
    /// Sent to the cluster; health not yet known.
    Applied,
    /// Passed the health gate: the release to return to.
    Healthy,
    /// Failed to apply or failed the health gate.
    Failed,
    /// Replaced by the last healthy release after a failure.
    RolledBack,
}

/// One row of the apply journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalEntry {
    /// Its place in the journal, increasing.
    pub id: i64,
    /// The channel.
    pub channel: String,
    /// The release number.
    pub release: u64,
    /// What happened.
    pub state: JournalState,
    /// When, RFC 3339.
    pub at: String,
    /// Why, for failures; empty otherwise.
    pub detail: String,
}

/// One drift finding as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriftRow {
    /// The channel.
    pub channel: String,
    /// The release compared with.
    pub release: u64,
    /// The object.
    pub object: String,
    /// How it differs.
    pub detail: String,
    /// Whether the check re-applied the release to correct it.
    pub corrected: bool,
    /// When it was found, RFC 3339.
    pub found_at: String,
}

/// A status report waiting for a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxItem {
    /// Its id, to acknowledge it once sent.
    pub id: i64,
    /// When it was queued, RFC 3339.
    pub created: String,
    /// What kind of report (`status`, `drift`, …).
    pub kind: String,
    /// The report, JSON.
    pub body: String,
    /// How many sends failed so far.
    pub attempts: u32,
}

impl State {
    /// Opens (creating if needed) the database at `path`, sets WAL and `synchronous=FULL`, and brings the
    /// schema up to [`SCHEMA_VERSION`]. A file from a newer agent is refused and left untouched.
    pub fn open(path: &Path) -> Result<Self, StateError> {
        let sql = |what| sql_err(path, what);
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut conn = Connection::open_with_flags(path, flags).map_err(sql("opening"))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(sql("setting busy_timeout"))?;
        // Fail on a file that is not a database before anything writes to it.
        let found: i64 = conn
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .map_err(sql("reading the schema version"))?;
        if found > SCHEMA_VERSION {
            return Err(StateError::SchemaTooNew {
                path: path.to_path_buf(),
                found,
                known: SCHEMA_VERSION,
            });
        }
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "wal", |row| row.get(0))
            .map_err(sql("setting journal_mode=wal"))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StateError::NotWal {
                path: path.to_path_buf(),
                mode,
            });
        }
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(sql("setting synchronous=FULL"))?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(sql("setting foreign_keys=ON"))?;
        schema::migrate(&mut conn, found).map_err(sql("migrating the schema"))?;
        Ok(Self {
            conn,
            path: path.to_path_buf(),
        })
    }

    /// Opens an existing database for reading only (`mast-agent status`, while the daemon may be
    /// writing): no file is created and no migration runs. WAL lets it read while the writer writes.
    pub fn open_read_only(path: &Path) -> Result<Self, StateError> {
        let sql = |what| sql_err(path, what);
        if !path.exists() {
            return Err(StateError::Missing {
                path: path.to_path_buf(),
            });
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(sql("opening"))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(sql("setting busy_timeout"))?;
        let found: i64 = conn
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .map_err(sql("reading the schema version"))?;
        if found != SCHEMA_VERSION {
            return Err(StateError::SchemaTooNew {
                path: path.to_path_buf(),
                found,
                known: SCHEMA_VERSION,
            });
        }
        Ok(Self {
            conn,
            path: path.to_path_buf(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `PRAGMA integrity_check`; `Ok` only when SQLite answers `ok`.
    pub fn integrity_check(&self) -> Result<(), StateError> {
        let mut stmt = self
            .conn
            .prepare("PRAGMA integrity_check")
            .map_err(self.sql("integrity_check"))?;
        let lines: Vec<String> = stmt
            .query_map([], |row| row.get(0))
            .and_then(|rows| rows.collect())
            .map_err(self.sql("integrity_check"))?;
        if lines == ["ok"] {
            return Ok(());
        }
        Err(StateError::Corrupt {
            path: self.path.clone(),
            report: lines.into_iter().take(5).collect::<Vec<_>>().join("; "),
        })
    }

    // --- trusted metadata -------------------------------------------------------------------------------

    /// The trusted metadata as stored.
    pub fn trusted(&self) -> Result<TrustedFiles, StateError> {
        let mut files = TrustedFiles::default();
        let mut stmt = self
            .conn
            .prepare("SELECT role, bytes FROM trusted_metadata")
            .map_err(self.sql("reading trusted metadata"))?;
        let rows = stmt
            .query_map([], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, Vec<u8>>(1)?))
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(self.sql("reading trusted metadata"))?;
        for (role, bytes) in rows {
            match role.as_str() {
                "root" => files.root = Some(bytes),
                "timestamp" => files.timestamp = Some(bytes),
                "snapshot" => files.snapshot = Some(bytes),
                "targets" => files.targets = Some(bytes),
                // Delegated roles are re-fetched through snapshot each cycle; they are kept for
                // inspection only.
                _ => {}
            }
        }
        Ok(files)
    }

    /// Trusts `root` as the initial root (from the agent's config) unless a root is already trusted: a
    /// root reached by rotation is never replaced by an older configured one. Returns whether it stored.
    pub fn trust_initial_root(
        &mut self,
        root: &[u8],
        version: u64,
        now: OffsetDateTime,
    ) -> Result<bool, StateError> {
        let changed = self
            .conn
            .execute(
                "INSERT INTO trusted_metadata (role, version, bytes, stored_at) VALUES ('root', ?1, ?2, ?3)
                 ON CONFLICT (role) DO NOTHING",
                params![sql_u64(version), root, rfc3339(now)],
            )
            .map_err(self.sql("storing the initial root"))?;
        if changed > 0 {
            self.raise_highest("root", version)?;
        }
        Ok(changed > 0)
    }

    /// The highest version ever trusted for `role` (kept even when the role's copy is discarded after a
    /// key rotation, so that an operator can see how far the site had come).
    pub fn highest_version(&self, role: &str) -> Result<Option<u64>, StateError> {
        self.conn
            .query_row(
                "SELECT version FROM highest_versions WHERE role = ?1",
                [role],
                |row| row.get::<_, i64>(0),
            )
            .optional()
            .map(|v| v.map(from_sql_u64))
            .map_err(self.sql("reading highest versions"))
    }

    fn raise_highest(&self, role: &str, version: u64) -> Result<(), StateError> {
        self.conn
            .execute(
                "INSERT INTO highest_versions (role, version) VALUES (?1, ?2)
                 ON CONFLICT (role) DO UPDATE SET version = max(version, excluded.version)",
                params![role, sql_u64(version)],
            )
            .map(drop)
            .map_err(self.sql("raising highest versions"))
    }

    /// The version of each role's trusted copy, by role.
    pub fn trusted_versions(&self) -> Result<Vec<(String, u64)>, StateError> {
        self.role_versions("SELECT role, version FROM trusted_metadata ORDER BY role")
    }

    /// The highest version ever trusted, by role.
    pub fn highest_versions(&self) -> Result<Vec<(String, u64)>, StateError> {
        self.role_versions("SELECT role, version FROM highest_versions ORDER BY role")
    }

    fn role_versions(&self, query: &str) -> Result<Vec<(String, u64)>, StateError> {
        let mut stmt = self
            .conn
            .prepare(query)
            .map_err(self.sql("reading versions"))?;
        stmt.query_map([], |row| {
            Ok((row.get::<_, String>(0)?, from_sql_u64(row.get(1)?)))
        })
        .and_then(|rows| rows.collect())
        .map_err(self.sql("reading versions"))
    }

    // --- chunks -----------------------------------------------------------------------------------------

    /// Whether the chunk is held.
    pub fn has_chunk(&self, sha256: &Sha256Digest) -> Result<bool, StateError> {
        self.conn
            .query_row(
                "SELECT 1 FROM chunks WHERE sha256 = ?1",
                [sha256.to_hex()],
                |_| Ok(()),
            )
            .optional()
            .map(|found| found.is_some())
            .map_err(self.sql("looking a chunk up"))
    }

    /// Stores a chunk whose bytes the caller verified against its signed sha256. Idempotent.
    pub fn put_chunk(
        &mut self,
        sha256: &Sha256Digest,
        bytes: &[u8],
        now: OffsetDateTime,
    ) -> Result<(), StateError> {
        self.conn
            .execute(
                "INSERT INTO chunks (sha256, bytes, stored_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (sha256) DO NOTHING",
                params![sha256.to_hex(), bytes, rfc3339(now)],
            )
            .map(drop)
            .map_err(self.sql("storing a chunk"))
    }

    /// Stores chunks whose bytes the caller verified against their signed sha256, in one transaction:
    /// one commit (one fsync with `synchronous=FULL`) for the batch instead of one per chunk, and either
    /// all of them are durable when it returns or none is. Idempotent: returns how many were not held
    /// before.
    pub fn put_chunks(
        &mut self,
        chunks: &[(Sha256Digest, Vec<u8>)],
        now: OffsetDateTime,
    ) -> Result<usize, StateError> {
        let what = "storing chunks";
        let stored_at = rfc3339(now);
        let mut added = 0;
        let tx = self.conn.transaction().map_err(sql_err(&self.path, what))?;
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO chunks (sha256, bytes, stored_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (sha256) DO NOTHING",
                )
                .map_err(sql_err(&self.path, what))?;
            for (sha256, bytes) in chunks {
                added += insert
                    .execute(params![sha256.to_hex(), bytes, stored_at])
                    .map_err(sql_err(&self.path, what))?;
            }
        }
        tx.commit().map_err(sql_err(&self.path, what))?;
        Ok(added)
    }

    /// A held chunk's bytes.
    pub fn chunk(&self, sha256: &Sha256Digest) -> Result<Option<Vec<u8>>, StateError> {
        self.conn
            .query_row(
                "SELECT bytes FROM chunks WHERE sha256 = ?1",
                [sha256.to_hex()],
                |row| row.get(0),
            )
            .optional()
            .map_err(self.sql("reading a chunk"))
    }

    /// Records a release fetched on `channel`: its verified chunk index (to rebuild it offline) and the
    /// chunks the index lists, so GC keeps them while the release is among the newest. Idempotent.
    pub fn record_release(
        &mut self,
        channel: &str,
        release: u64,
        tar_sha256: &Sha256Digest,
        chunk_index: &[u8],
        chunks: &[Sha256Digest],
        now: OffsetDateTime,
    ) -> Result<(), StateError> {
        let tx = self
            .conn
            .transaction()
            .map_err(sql_err(&self.path, "recording a release"))?;
        tx.execute(
            "INSERT INTO releases (channel, number, tar_sha256, chunk_index, first_seen)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (channel, number) DO NOTHING",
            params![
                channel,
                sql_u64(release),
                tar_sha256.to_hex(),
                chunk_index,
                rfc3339(now)
            ],
        )
        .map_err(sql_err(&self.path, "recording a release"))?;
        {
            let mut insert = tx
                .prepare(
                    "INSERT INTO release_chunks (channel, number, sha256) VALUES (?1, ?2, ?3)
                     ON CONFLICT DO NOTHING",
                )
                .map_err(sql_err(&self.path, "recording a release"))?;
            for chunk in chunks {
                insert
                    .execute(params![channel, sql_u64(release), chunk.to_hex()])
                    .map_err(sql_err(&self.path, "recording a release"))?;
            }
        }
        tx.commit()
            .map_err(sql_err(&self.path, "recording a release"))
    }

    /// Deletes the chunks that none of the newest `keep` releases (by release number, per channel) lists,
    /// and forgets older releases' chunk lists. The release a channel runs is always kept, however old:
    /// it is what a rollback or an offline boot puts back. Returns how many chunks were deleted. The
    /// journal keeps its history; a release whose chunks are gone is fetched again if it is ever needed.
    pub fn gc_chunks(&mut self, keep: u32) -> Result<usize, StateError> {
        let tx = self
            .conn
            .transaction()
            .map_err(sql_err(&self.path, "collecting chunks"))?;
        tx.execute(
            "DELETE FROM release_chunks WHERE (channel, number) IN (
                 SELECT channel, number FROM (
                     SELECT channel, number,
                            row_number() OVER (PARTITION BY channel ORDER BY number DESC) AS rank
                     FROM releases)
                 WHERE rank > ?1)
             AND (channel, number) NOT IN (
                 SELECT channel, number FROM journal AS j
                 WHERE state IN ('healthy', 'rolled_back')
                   AND id = (SELECT max(id) FROM journal
                             WHERE channel = j.channel AND state IN ('healthy', 'rolled_back')))",
            [i64::from(keep)],
        )
        .map_err(sql_err(&self.path, "collecting chunks"))?;
        let deleted = tx
            .execute(
                "DELETE FROM chunks WHERE sha256 NOT IN (SELECT sha256 FROM release_chunks)",
                [],
            )
            .map_err(sql_err(&self.path, "collecting chunks"))?;
        tx.commit()
            .map_err(sql_err(&self.path, "collecting chunks"))?;
        Ok(deleted)
    }

    /// The verified chunk index of a release this site fetched, to rebuild it with no network.
    pub fn chunk_index(&self, channel: &str, release: u64) -> Result<Option<Vec<u8>>, StateError> {
        self.conn
            .query_row(
                "SELECT chunk_index FROM releases WHERE channel = ?1 AND number = ?2",
                params![channel, sql_u64(release)],
                |row| row.get(0),
            )
            .optional()
            .map_err(self.sql("reading a chunk index"))
    }

    /// The highest release this site ever fetched on `channel`: the floor below which a release is a
    /// rollback, whatever the metadata says.
    pub fn highest_release(&self, channel: &str) -> Result<Option<u64>, StateError> {
        self.conn
            .query_row(
                "SELECT max(number) FROM releases WHERE channel = ?1",
                [channel],
                |row| row.get::<_, Option<i64>>(0),
            )
            .map(|n| n.map(from_sql_u64))
            .map_err(self.sql("reading releases"))
    }

    /// The release the site runs on `channel`: the newest one the journal records as healthy or as put
    /// back by a rollback.
    pub fn current_release(&self, channel: &str) -> Result<Option<u64>, StateError> {
        self.conn
            .query_row(
                "SELECT number FROM journal WHERE channel = ?1 AND state IN ('healthy', 'rolled_back')
                 ORDER BY id DESC LIMIT 1",
                [channel],
                |row| row.get::<_, i64>(0),
            )
            .optional()
            .map(|n| n.map(from_sql_u64))
            .map_err(self.sql("reading the journal"))
    }

    /// Whether `release` on `channel` ever failed here (it is then not retried automatically).
    pub fn has_failed(&self, channel: &str, release: u64) -> Result<bool, StateError> {
        self.conn
            .query_row(
                "SELECT 1 FROM journal WHERE channel = ?1 AND number = ?2 AND state = 'failed' LIMIT 1",
                params![channel, sql_u64(release)],
                |_| Ok(()),
            )
            .optional()
            .map(|found| found.is_some())
            .map_err(self.sql("reading the journal"))
    }

    // --- downloads --------------------------------------------------------------------------------------

    /// The recorded progress of a download of `object`, if one is in flight.
    pub fn download(&self, object: &str) -> Result<Option<Download>, StateError> {
        let row = self
            .conn
            .query_row(
                "SELECT mirror, sha256, length, received, etag, last_modified FROM downloads WHERE object = ?1",
                [object],
                |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, i64>(2)?,
                        row.get::<_, i64>(3)?,
                        row.get::<_, Option<String>>(4)?,
                        row.get::<_, Option<String>>(5)?,
                    ))
                },
            )
            .optional()
            .map_err(self.sql("reading a download"))?;
        let Some((mirror, sha256, length, offset, etag, last_modified)) = row else {
            return Ok(None);
        };
        let sha256 = sha256.parse().map_err(|e| StateError::BadRow {
            path: self.path.clone(),
            table: "downloads",
            reason: format!("{object}: sha256: {e}"),
        })?;
        Ok(Some(Download {
            object: object.to_owned(),
            mirror,
            sha256,
            length: from_sql_u64(length),
            offset: from_sql_u64(offset),
            etag,
            last_modified,
        }))
    }

    /// Every download in flight, by object.
    pub fn downloads(&self) -> Result<Vec<Download>, StateError> {
        let mut stmt = self
            .conn
            .prepare("SELECT object FROM downloads ORDER BY object")
            .map_err(self.sql("reading downloads"))?;
        let objects: Vec<String> = stmt
            .query_map([], |row| row.get(0))
            .and_then(|rows| rows.collect())
            .map_err(self.sql("reading downloads"))?;
        let mut downloads = Vec::with_capacity(objects.len());
        for object in objects {
            downloads.extend(self.download(&object)?);
        }
        Ok(downloads)
    }

    /// The channels this site has fetched releases on.
    pub fn channels(&self) -> Result<Vec<String>, StateError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT DISTINCT channel FROM releases UNION SELECT DISTINCT channel FROM journal",
            )
            .map_err(self.sql("reading channels"))?;
        stmt.query_map([], |row| row.get(0))
            .and_then(|rows| rows.collect())
            .map_err(self.sql("reading channels"))
    }

    /// How many reports wait in the outbox.
    pub fn outbox_len(&self) -> Result<u64, StateError> {
        self.conn
            .query_row("SELECT count(*) FROM outbox", [], |row| {
                row.get::<_, i64>(0)
            })
            .map(from_sql_u64)
            .map_err(self.sql("reading the outbox"))
    }

    /// Records (or advances) a download's progress. Call it after the bytes up to `offset` are durable.
    pub fn save_download(
        &mut self,
        download: &Download,
        now: OffsetDateTime,
    ) -> Result<(), StateError> {
        self.conn
            .execute(
                "INSERT INTO downloads (object, mirror, sha256, length, received, etag, last_modified, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (object) DO UPDATE SET mirror = excluded.mirror, sha256 = excluded.sha256,
                     length = excluded.length, received = excluded.received, etag = excluded.etag,
                     last_modified = excluded.last_modified, updated_at = excluded.updated_at",
                params![
                    download.object,
                    download.mirror,
                    download.sha256.to_hex(),
                    sql_u64(download.length),
                    sql_u64(download.offset),
                    download.etag,
                    download.last_modified,
                    rfc3339(now)
                ],
            )
            .map(drop)
            .map_err(self.sql("saving a download"))
    }

    /// Forgets a download: finished and verified, or abandoned (bad bytes, a changed object).
    pub fn forget_download(&mut self, object: &str) -> Result<(), StateError> {
        self.conn
            .execute("DELETE FROM downloads WHERE object = ?1", [object])
            .map(drop)
            .map_err(self.sql("forgetting a download"))
    }

    // --- journal, outbox, facts -------------------------------------------------------------------------

    /// Appends a step to the apply journal.
    pub fn journal_append(
        &mut self,
        channel: &str,
        release: u64,
        state: JournalState,
        detail: &str,
        now: OffsetDateTime,
    ) -> Result<i64, StateError> {
        self.conn
            .execute(
                "INSERT INTO journal (channel, number, state, at, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![channel, sql_u64(release), state.as_str(), rfc3339(now), detail],
            )
            .map_err(self.sql("appending to the journal"))?;
        Ok(self.conn.last_insert_rowid())
    }

    /// The newest `limit` journal entries, newest first.
    pub fn journal(&self, limit: u32) -> Result<Vec<JournalEntry>, StateError> {
        self.journal_where("1 = 1", limit)
    }

    /// The newest journal entry in `state` (the release to return to is the newest `Healthy` one).
    pub fn last_in_state(&self, state: JournalState) -> Result<Option<JournalEntry>, StateError> {
        let mut rows = self.journal_where(&format!("state = '{}'", state.as_str()), 1)?;
        Ok(rows.pop())
    }

    /// The newest journal entry on `channel`.
    pub fn last_journal_entry(&self, channel: &str) -> Result<Option<JournalEntry>, StateError> {
        let quoted = channel.replace('\'', "''");
        let mut rows = self.journal_where(&format!("channel = '{quoted}'"), 1)?;
        Ok(rows.pop())
    }

    fn journal_where(&self, filter: &str, limit: u32) -> Result<Vec<JournalEntry>, StateError> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT id, channel, number, state, at, detail FROM journal WHERE {filter}
                 ORDER BY id DESC LIMIT ?1"
            ))
            .map_err(self.sql("reading the journal"))?;
        let rows = stmt
            .query_map([i64::from(limit)], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, i64>(2)?,
                    row.get::<_, String>(3)?,
                    row.get::<_, String>(4)?,
                    row.get::<_, String>(5)?,
                ))
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(self.sql("reading the journal"))?;
        rows.into_iter()
            .map(|(id, channel, number, state, at, detail)| {
                let state = JournalState::parse(&state).ok_or_else(|| StateError::BadRow {
                    path: self.path.clone(),
                    table: "journal",
                    reason: format!("row {id}: unknown state {state:?}"),
                })?;
                Ok(JournalEntry {
                    id,
                    channel,
                    release: from_sql_u64(number),
                    state,
                    at,
                    detail,
                })
            })
            .collect()
    }

    /// Replaces the inventory of `channel` with what the apply of `release` left in place.
    pub fn set_inventory(
        &mut self,
        channel: &str,
        release: u64,
        objects: &[String],
        now: OffsetDateTime,
    ) -> Result<(), StateError> {
        let what = "recording the inventory";
        let tx = self.conn.transaction().map_err(sql_err(&self.path, what))?;
        tx.execute("DELETE FROM inventory WHERE channel = ?1", [channel])
            .map_err(sql_err(&self.path, what))?;
        {
            let mut insert = tx
                .prepare(
                    "INSERT INTO inventory (channel, object, number, applied_at) VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(sql_err(&self.path, what))?;
            for object in objects {
                insert
                    .execute(params![channel, object, sql_u64(release), rfc3339(now)])
                    .map_err(sql_err(&self.path, what))?;
            }
        }
        tx.commit().map_err(sql_err(&self.path, what))
    }

    /// The objects the last apply on `channel` left in place, sorted.
    pub fn inventory(&self, channel: &str) -> Result<Vec<String>, StateError> {
        let mut stmt = self
            .conn
            .prepare("SELECT object FROM inventory WHERE channel = ?1 ORDER BY object")
            .map_err(self.sql("reading the inventory"))?;
        stmt.query_map([channel], |row| row.get(0))
            .and_then(|rows| rows.collect())
            .map_err(self.sql("reading the inventory"))
    }

    /// Replaces the drift findings of `channel` with the last check's, and notes when it ran.
    pub fn record_drift(
        &mut self,
        channel: &str,
        release: u64,
        findings: &[(&str, &str)],
        corrected: bool,
        now: OffsetDateTime,
    ) -> Result<(), StateError> {
        let what = "recording drift";
        let tx = self.conn.transaction().map_err(sql_err(&self.path, what))?;
        tx.execute("DELETE FROM drift WHERE channel = ?1", [channel])
            .map_err(sql_err(&self.path, what))?;
        for (object, detail) in findings {
            tx.execute(
                "INSERT INTO drift (channel, number, object, detail, corrected, found_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    channel,
                    sql_u64(release),
                    object,
                    detail,
                    corrected,
                    rfc3339(now)
                ],
            )
            .map_err(sql_err(&self.path, what))?;
        }
        tx.execute(
            "INSERT INTO facts (key, value) VALUES ('last_drift_check', ?1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [rfc3339(now)],
        )
        .map_err(sql_err(&self.path, what))?;
        tx.commit().map_err(sql_err(&self.path, what))
    }

    /// The last drift check's findings: channel, release, object, detail, whether corrected, when.
    pub fn drift_findings(&self) -> Result<Vec<DriftRow>, StateError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT channel, number, object, detail, corrected, found_at FROM drift
                 ORDER BY channel, object",
            )
            .map_err(self.sql("reading drift"))?;
        stmt.query_map([], |row| {
            Ok(DriftRow {
                channel: row.get(0)?,
                release: from_sql_u64(row.get(1)?),
                object: row.get(2)?,
                detail: row.get(3)?,
                corrected: row.get(4)?,
                found_at: row.get(5)?,
            })
        })
        .and_then(|rows| rows.collect())
        .map_err(self.sql("reading drift"))
    }

    /// Queues a status report until a link is up.
    pub fn outbox_push(
        &mut self,
        kind: &str,
        body: &str,
        now: OffsetDateTime,
    ) -> Result<i64, StateError> {
        self.conn
            .execute(
                "INSERT INTO outbox (created, kind, body) VALUES (?1, ?2, ?3)",
                params![rfc3339(now), kind, body],
            )
            .map_err(self.sql("queueing a report"))?;
        Ok(self.conn.last_insert_rowid())
    }

    /// The oldest `limit` queued reports, oldest first.
    pub fn outbox_pending(&self, limit: u32) -> Result<Vec<OutboxItem>, StateError> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, created, kind, body, attempts FROM outbox ORDER BY id LIMIT ?1")
            .map_err(self.sql("reading the outbox"))?;
        stmt.query_map([i64::from(limit)], |row| {
            Ok(OutboxItem {
                id: row.get(0)?,
                created: row.get(1)?,
                kind: row.get(2)?,
                body: row.get(3)?,
                attempts: row.get(4)?,
            })
        })
        .and_then(|rows| rows.collect())
        .map_err(self.sql("reading the outbox"))
    }

    /// Settles a queued report: removes it when sent, counts a failed attempt otherwise.
    pub fn outbox_settle(&mut self, id: i64, sent: bool) -> Result<(), StateError> {
        let statement = if sent {
            "DELETE FROM outbox WHERE id = ?1"
        } else {
            "UPDATE outbox SET attempts = attempts + 1 WHERE id = ?1"
        };
        self.conn
            .execute(statement, [id])
            .map(drop)
            .map_err(self.sql("settling a report"))
    }

    /// Sets a named fact (`last_contact`, `last_error`, …).
    pub fn set_fact(&mut self, key: &str, value: &str) -> Result<(), StateError> {
        self.set_facts(&[(key, value)])
    }

    /// Sets several named facts in one transaction (one fsync).
    pub fn set_facts(&mut self, facts: &[(&str, &str)]) -> Result<(), StateError> {
        let what = "setting a fact";
        let tx = self.conn.transaction().map_err(sql_err(&self.path, what))?;
        for (key, value) in facts {
            tx.execute(
                "INSERT INTO facts (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                params![key, value],
            )
            .map_err(sql_err(&self.path, what))?;
        }
        tx.commit().map_err(sql_err(&self.path, what))
    }

    /// A named fact.
    pub fn fact(&self, key: &str) -> Result<Option<String>, StateError> {
        self.conn
            .query_row("SELECT value FROM facts WHERE key = ?1", [key], |row| {
                row.get(0)
            })
            .optional()
            .map_err(self.sql("reading a fact"))
    }

    fn sql(&self, what: &'static str) -> impl FnOnce(rusqlite::Error) -> StateError + use<> {
        sql_err(&self.path, what)
    }

    fn store_op(&mut self, op: &StoreOp, now: OffsetDateTime) -> Result<(), StateError> {
        match op {
            StoreOp::Save(file) => {
                let role = file.role.as_str();
                let tx = self
                    .conn
                    .transaction()
                    .map_err(sql_err(&self.path, "storing trusted metadata"))?;
                tx.execute(
                    "INSERT INTO trusted_metadata (role, version, bytes, stored_at) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (role) DO UPDATE SET version = excluded.version, bytes = excluded.bytes,
                         stored_at = excluded.stored_at",
                    params![role, sql_u64(file.version), file.bytes, rfc3339(now)],
                )
                .map_err(sql_err(&self.path, "storing trusted metadata"))?;
                tx.execute(
                    "INSERT INTO highest_versions (role, version) VALUES (?1, ?2)
                     ON CONFLICT (role) DO UPDATE SET version = max(version, excluded.version)",
                    params![role, sql_u64(file.version)],
                )
                .map_err(sql_err(&self.path, "storing trusted metadata"))?;
                tx.commit()
                    .map_err(sql_err(&self.path, "storing trusted metadata"))
            }
            StoreOp::Discard(role) => self
                .conn
                .execute(
                    "DELETE FROM trusted_metadata WHERE role = ?1",
                    [role.as_str()],
                )
                .map(drop)
                .map_err(self.sql("discarding trusted metadata")),
        }
    }
}

impl TrustedFiles {
    /// The files as the TUF session loads them, if a root is trusted.
    pub fn persisted(&self) -> Option<Persisted<'_>> {
        Some(Persisted {
            root: self.root.as_deref()?,
            timestamp: self.timestamp.as_deref(),
            snapshot: self.snapshot.as_deref(),
            targets: self.targets.as_deref(),
        })
    }
}

/// The state database as a TUF trust store for one update cycle started at `now`. Each operation is one
/// committed transaction before it returns, which is what the session needs before it may go on.
#[derive(Debug)]
pub struct StateTrust<'a> {
    state: &'a mut State,
    now: OffsetDateTime,
}

impl State {
    /// This database as the trust store of an update cycle started at `now`.
    pub fn trust_store(&mut self, now: OffsetDateTime) -> StateTrust<'_> {
        StateTrust { state: self, now }
    }
}

impl TrustStore for StateTrust<'_> {
    fn apply(&mut self, op: &StoreOp) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        self.state.store_op(op, self.now).map_err(Into::into)
    }
}

impl JournalState {
    /// The name stored in the database and shown by `status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Staged => "staged",
            Self::Applied => "applied",
            Self::Healthy => "healthy",
            Self::Failed => "failed",
            Self::RolledBack => "rolled_back",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [
            Self::Staged,
            Self::Applied,
            Self::Healthy,
            Self::Failed,
            Self::RolledBack,
        ]
        .into_iter()
        .find(|state| state.as_str() == s)
    }
}

fn sql_err(path: &Path, what: &'static str) -> impl FnOnce(rusqlite::Error) -> StateError + use<> {
    let path = path.to_path_buf();
    move |source| StateError::Sql { path, what, source }
}

/// `at` as RFC 3339, the one spelling of instants in the database and in status output.
pub(crate) fn rfc3339(at: OffsetDateTime) -> String {
    // Formatting a valid OffsetDateTime as RFC 3339 fails only for years outside 0..=9999, which no clock
    // the agent runs with produces; fall back to the unix time rather than fail a write over it.
    at.format(&Rfc3339)
        .unwrap_or_else(|_| at.unix_timestamp().to_string())
}

/// SQLite integers are i64; versions, lengths and offsets are u64 well below 2^63 (caps elsewhere
/// guarantee it), and saturate rather than wrap if one ever were not.
fn sql_u64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn from_sql_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

#[cfg(test)]
mod tests;
