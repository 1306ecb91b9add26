//! The download engine: one object of known signed length and sha256, from one mirror, into a file.
//!
//! The bytes go to `DIR/partial/<sha256>`. Progress is recorded in the state database
//! ([`State::save_download`]) only after the bytes up to the recorded offset are fsync'd, every
//! [`Downloader::with_checkpoint`] bytes and whenever the read stops short. So after a crash the file
//! holds at least the recorded bytes, and the next attempt truncates it to the recorded offset (anything
//! past it was never vouched for), hashes that prefix, and asks the mirror for the rest with
//! `Range: bytes=OFFSET-` and `If-Range` carrying the validator the first response gave. A mirror that
//! answers with the whole object instead (no range support, or the object changed) is read from byte 0
//! again, the old bytes discarded; a resume from a different mirror than the recorded one starts over,
//! as validators are per mirror.
//!
//! Nothing past the signed length is ever written, and the finished file is hashed as a whole — the
//! resumed prefix included — before it is renamed to `DIR/<sha256>` and its record forgotten. A file
//! whose digest differs is deleted with its record, so the next mirror starts from zero.

use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use mast_mirror::client::{ClientError, fetch_verified};
use mast_mirror::{Conditions, ErrorKind, Fetched, MirrorError, MirrorRead, ObjectPath, Response};
use mast_protocol::digest::{Sha256Digest, Sha256Hasher};
use time::OffsetDateTime;
use tokio::fs::{File, OpenOptions};
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _, AsyncWriteExt as _};

use crate::state::{Download, State, StateError};

/// Bytes between durable checkpoints by default: one fsync and one SQLite commit per MiB keeps the cost
/// of both small on a slow link, and bounds what a crash loses to a MiB.
const DEFAULT_CHECKPOINT: u64 = 1 << 20;

/// Size of the reads that hash a kept prefix.
const HASH_BUFFER: usize = 256 << 10;

/// An object and what its signature says it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedObject {
    /// Where it is on a mirror.
    pub object: ObjectPath,
    /// The signed sha256 of the whole object.
    pub sha256: Sha256Digest,
    /// The signed length of the whole object.
    pub length: u64,
}

/// Downloads objects into one directory, recording progress in the state database.
#[derive(Debug)]
pub struct Downloader {
    dir: PathBuf,
    checkpoint: u64,
    fetched: AtomicU64,
}

/// A download that finished and verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downloaded {
    /// The verified file, `DIR/<sha256>`.
    pub path: PathBuf,
    /// Bytes read from the mirror by this call (0 when the file was already there).
    pub fetched: u64,
    /// Bytes kept from an earlier attempt and not fetched again.
    pub resumed_from: u64,
}

/// What [`Downloader::fetch_chunk`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkFetch {
    /// The state database already held the chunk; nothing was read.
    Held,
    /// The chunk was read, matched its sha256 and is now stored.
    Stored {
        /// Bytes read from the mirror.
        fetched: u64,
    },
}

/// Why a download did not produce a verified object. Every variant names the object; those that
/// involve the mirror name it too.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// The mirror could not be read: unreachable, missing the object, an unexpected answer, or the link
    /// cut mid-body. The bytes received up to then are durable and recorded, for a resume.
    #[error("{object} from {mirror}: {source}")]
    Mirror {
        /// The object's path on the mirror.
        object: String,
        /// The mirror.
        mirror: String,
        /// What the mirror transport said.
        #[source]
        source: MirrorError,
    },
    /// The body ended cleanly before the signed length. The bytes received are recorded, for a resume.
    #[error(
        "{object} from {mirror}: the body ended at byte {received} of {length}; kept for a resume"
    )]
    Truncated {
        /// The object.
        object: String,
        /// The mirror.
        mirror: String,
        /// Bytes held, counting any resumed prefix.
        received: u64,
        /// The signed length.
        length: u64,
    },
    /// The bytes are not the signed ones: another digest, more bytes than signed, or a mirror that
    /// announces another length. The partial file and its record are gone; try another mirror.
    #[error("{object} from {mirror}: {reason}; the partial download was discarded")]
    Mismatch {
        /// The object.
        object: String,
        /// The mirror.
        mirror: String,
        /// What differed.
        reason: String,
    },
    /// Local file I/O failed (a full disk, a read-only directory).
    #[error("{object}: {path}: {source}")]
    Io {
        /// The object.
        object: String,
        /// The file or directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The state database could not record or forget the download.
    #[error("{object}: recording the download: {source}")]
    State {
        /// The object.
        object: String,
        /// What the database said.
        #[source]
        source: StateError,
    },
}

impl DownloadError {
    /// Whether the mirror served bytes that are not the signed ones (and they were discarded): a mirror
    /// to skip, not a link to retry.
    pub fn is_mismatch(&self) -> bool {
        matches!(self, Self::Mismatch { .. })
    }
}

/// The names an attempt's errors carry, and the way to make them.
struct Attempt<'a> {
    object: String,
    mirror: String,
    partial: &'a Path,
}

impl Attempt<'_> {
    fn io(&self, path: &Path) -> impl FnOnce(std::io::Error) -> DownloadError + use<> {
        let (object, path) = (self.object.clone(), path.to_path_buf());
        move |source| DownloadError::Io {
            object,
            path,
            source,
        }
    }

    fn state(&self) -> impl FnOnce(StateError) -> DownloadError + use<> {
        let object = self.object.clone();
        move |source| DownloadError::State { object, source }
    }

    fn mirror(&self, source: MirrorError) -> DownloadError {
        DownloadError::Mirror {
            object: self.object.clone(),
            mirror: self.mirror.clone(),
            source,
        }
    }

    fn mismatch(&self, reason: String) -> DownloadError {
        DownloadError::Mismatch {
            object: self.object.clone(),
            mirror: self.mirror.clone(),
            reason,
        }
    }
}

/// The file being written and the record that vouches for its prefix.
struct Progress {
    file: File,
    hasher: Sha256Hasher,
    record: Download,
    /// Bytes written since the record last advanced.
    unrecorded: u64,
    /// Bytes kept from an earlier attempt and still in use.
    kept: u64,
}

impl Downloader {
    /// Downloads into `dir` (created when needed): partial files in `dir/partial/`, verified ones as
    /// `dir/<sha256>`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            checkpoint: DEFAULT_CHECKPOINT,
            fetched: AtomicU64::new(0),
        }
    }

    /// Makes progress durable every `bytes` bytes (at least 1) instead of every MiB.
    pub fn with_checkpoint(mut self, bytes: u64) -> Self {
        self.checkpoint = bytes.max(1);
        self
    }

    /// Where a download of `sha256` is kept while it is incomplete.
    pub fn partial_path(&self, sha256: &Sha256Digest) -> PathBuf {
        self.dir.join("partial").join(sha256.to_hex())
    }

    /// Where a verified download of `sha256` ends up.
    pub fn verified_path(&self, sha256: &Sha256Digest) -> PathBuf {
        self.dir.join(sha256.to_hex())
    }

    /// Bytes read from mirrors by this downloader so far, by every call, failed ones included.
    pub fn fetched(&self) -> u64 {
        self.fetched.load(Ordering::Relaxed)
    }

    /// Downloads `want` from `mirror`, resuming what `state` recorded for it, and returns the verified
    /// file. `now` stamps the progress records.
    ///
    /// A verified file already in place (from an earlier call) is checked again and returned without a
    /// read.
    pub async fn download<M: MirrorRead>(
        &self,
        state: &mut State,
        mirror: &M,
        want: &SignedObject,
        now: OffsetDateTime,
    ) -> Result<Downloaded, DownloadError> {
        let partial = self.partial_path(&want.sha256);
        let attempt = Attempt {
            object: want.object.as_path(),
            mirror: mirror.describe(),
            partial: &partial,
        };
        let dest = self.verified_path(&want.sha256);
        if self.already_verified(&attempt, &dest, want).await? {
            state
                .forget_download(&attempt.object)
                .map_err(attempt.state())?;
            return Ok(Downloaded {
                path: dest,
                fetched: 0,
                resumed_from: 0,
            });
        }
        let dir = self.dir.join("partial");
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(attempt.io(&dir))?;

        let mut progress = self.open(state, &attempt, want).await?;
        let fetched_before = self.fetched();
        if progress.kept < want.length {
            self.fetch(state, mirror, &attempt, want, &mut progress, now)
                .await?;
        }
        let resumed_from = progress.kept;
        self.finish(state, &attempt, want, progress, &dest).await?;
        Ok(Downloaded {
            path: dest,
            fetched: self.fetched() - fetched_before,
            resumed_from,
        })
    }

    /// Fetches the chunk `sha256` of `length` bytes from `mirror` unless `state` holds it, and stores it
    /// only once its sha256 matched. Chunks are small (256 KiB at most before compression), so they are
    /// read whole through [`fetch_verified`] and never resumed.
    pub async fn fetch_chunk<M: MirrorRead>(
        &self,
        state: &mut State,
        mirror: &M,
        sha256: &Sha256Digest,
        length: u64,
        now: OffsetDateTime,
    ) -> Result<ChunkFetch, DownloadError> {
        let object = ObjectPath::Chunk(*sha256);
        let partial = self.partial_path(sha256);
        let attempt = Attempt {
            object: object.as_path(),
            mirror: mirror.describe(),
            partial: &partial,
        };
        if state.has_chunk(sha256).map_err(attempt.state())? {
            return Ok(ChunkFetch::Held);
        }
        let capacity = usize::try_from(length).unwrap_or(0).min(1 << 20);
        let mut sink = CountingSink {
            bytes: Vec::with_capacity(capacity),
            counter: &self.fetched,
        };
        match fetch_verified(mirror, &object, length, sha256, &mut sink).await {
            Ok(()) => {}
            Err(ClientError::Target { reason, .. }) => return Err(attempt.mismatch(reason)),
            Err(ClientError::Mirror(source)) => return Err(attempt.mirror(source)),
            Err(ClientError::Sink { source, .. }) => return Err(attempt.io(&partial)(source)),
            // fetch_verified neither runs the TUF workflow nor stores anything.
            Err(other @ (ClientError::Tuf(_) | ClientError::Store { .. })) => {
                return Err(attempt.mismatch(other.to_string()));
            }
        }
        state
            .put_chunk(sha256, &sink.bytes, now)
            .map_err(attempt.state())?;
        Ok(ChunkFetch::Stored {
            fetched: sink.bytes.len() as u64,
        })
    }

    /// Whether `dest` already holds the object; a file there that is not it is removed.
    async fn already_verified(
        &self,
        attempt: &Attempt<'_>,
        dest: &Path,
        want: &SignedObject,
    ) -> Result<bool, DownloadError> {
        let mut file = match File::open(dest).await {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(attempt.io(dest)(e)),
        };
        let hasher = hash_prefix(&mut file, u64::MAX)
            .await
            .map_err(attempt.io(dest))?;
        if hasher.len() == want.length && hasher.finish() == want.sha256 {
            return Ok(true);
        }
        tracing::warn!(path = %dest.display(), "a verified download no longer verifies; fetching it again");
        tokio::fs::remove_file(dest)
            .await
            .map_err(attempt.io(dest))?;
        Ok(false)
    }

    /// Opens the partial file at the recorded offset (0 when there is no usable record), with the
    /// kept prefix hashed.
    async fn open(
        &self,
        state: &mut State,
        attempt: &Attempt<'_>,
        want: &SignedObject,
    ) -> Result<Progress, DownloadError> {
        let fresh = Download {
            object: attempt.object.clone(),
            mirror: attempt.mirror.clone(),
            sha256: want.sha256,
            length: want.length,
            offset: 0,
            etag: None,
            last_modified: None,
        };
        let recorded = state.download(&attempt.object).map_err(attempt.state())?;
        let mut record = match recorded {
            Some(r)
                if r.mirror == fresh.mirror
                    && r.sha256 == want.sha256
                    && r.length == want.length =>
            {
                r
            }
            Some(r) => {
                tracing::debug!(object = %attempt.object, recorded = %r.mirror, mirror = %fresh.mirror,
                    "a download recorded for another mirror or object; starting over");
                fresh.clone()
            }
            None => fresh.clone(),
        };
        let path = attempt.partial;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .await
            .map_err(attempt.io(path))?;
        let held = file.metadata().await.map_err(attempt.io(path))?.len();
        if held < record.offset {
            // Bytes recorded as durable are gone (the file was replaced or cut): trust none of it.
            tracing::warn!(object = %attempt.object, held, recorded = record.offset,
                "partial file shorter than its record; starting over");
            record = fresh;
        }
        // Bytes past the record were written after the last checkpoint and may be torn: drop them.
        file.set_len(record.offset)
            .await
            .map_err(attempt.io(path))?;
        file.seek(SeekFrom::Start(0))
            .await
            .map_err(attempt.io(path))?;
        let hasher = hash_prefix(&mut file, record.offset)
            .await
            .map_err(attempt.io(path))?;
        if hasher.len() != record.offset {
            return Err(attempt.io(path)(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "partial file shorter than its own length",
            )));
        }
        Ok(Progress {
            file,
            hasher,
            kept: record.offset,
            record,
            unrecorded: 0,
        })
    }

    /// Reads the rest of the object into the partial file, checkpointing as it goes. Returns once the
    /// body ended with all the signed bytes; an early end or a failed read is recorded and returned.
    async fn fetch<M: MirrorRead>(
        &self,
        state: &mut State,
        mirror: &M,
        attempt: &Attempt<'_>,
        want: &SignedObject,
        progress: &mut Progress,
        now: OffsetDateTime,
    ) -> Result<(), DownloadError> {
        let from = progress.record.offset;
        let conditions = if from > 0 {
            let validator = progress
                .record
                .etag
                .as_deref()
                .filter(|etag| !etag.starts_with("W/"))
                .or(progress.record.last_modified.as_deref());
            Conditions::resume(from, validator)
        } else {
            Conditions::default()
        };
        let fetched = match mirror
            .get_with(&want.object, want.length, &conditions)
            .await
        {
            Ok(fetched) => fetched,
            Err(e) if e.kind() == ErrorKind::TooLarge => {
                let reason = format!("the mirror announces more than the signed {}", want.length);
                return Err(self.discard(state, attempt, reason).await);
            }
            Err(e) => return Err(attempt.mirror(e)),
        };
        let mut response = match fetched {
            Fetched::Partial {
                from: at,
                total,
                response,
            } => {
                if at != from || total.is_some_and(|total| total != want.length) {
                    let reason = format!(
                        "resumed at {at} of {total:?} bytes, asked {from} of the signed {}",
                        want.length
                    );
                    return Err(self.discard(state, attempt, reason).await);
                }
                tracing::debug!(object = %attempt.object, from, "resuming");
                response
            }
            Fetched::Full(response) => {
                if from > 0 {
                    tracing::debug!(object = %attempt.object, discarded = from,
                        "the mirror sent the whole object; starting over");
                    self.restart(attempt, progress).await?;
                }
                response
            }
            Fetched::NotModified => {
                let reason = "a not-modified answer to a read without validators";
                return Err(attempt.mirror(MirrorError::Protocol {
                    object: attempt.object.clone(),
                    reason: reason.to_owned(),
                }));
            }
        };
        keep_validators(&mut progress.record, &response);
        state
            .save_download(&progress.record, now)
            .map_err(attempt.state())?;
        loop {
            let piece = match response.chunk().await {
                Ok(Some(piece)) => piece,
                Ok(None) => break,
                Err(e) if e.kind() == ErrorKind::TooLarge => {
                    let reason = format!("longer than the signed {} bytes", want.length);
                    return Err(self.discard(state, attempt, reason).await);
                }
                Err(e) => {
                    self.checkpoint(state, attempt, progress, now).await?;
                    return Err(attempt.mirror(e));
                }
            };
            self.fetched
                .fetch_add(piece.len() as u64, Ordering::Relaxed);
            let end = progress.hasher.len() + piece.len() as u64;
            if end > want.length {
                let reason = format!("longer than the signed {} bytes", want.length);
                return Err(self.discard(state, attempt, reason).await);
            }
            progress
                .file
                .write_all(&piece)
                .await
                .map_err(attempt.io(attempt.partial))?;
            progress.hasher.update(&piece);
            progress.unrecorded += piece.len() as u64;
            if progress.unrecorded >= self.checkpoint {
                self.checkpoint(state, attempt, progress, now).await?;
            }
        }
        if progress.hasher.len() < want.length {
            self.checkpoint(state, attempt, progress, now).await?;
            return Err(DownloadError::Truncated {
                object: attempt.object.clone(),
                mirror: attempt.mirror.clone(),
                received: progress.hasher.len(),
                length: want.length,
            });
        }
        Ok(())
    }

    /// Makes the bytes written so far durable, then records them.
    async fn checkpoint(
        &self,
        state: &mut State,
        attempt: &Attempt<'_>,
        progress: &mut Progress,
        now: OffsetDateTime,
    ) -> Result<(), DownloadError> {
        let io = || attempt.io(attempt.partial);
        progress.file.flush().await.map_err(io())?;
        progress.file.sync_data().await.map_err(io())?;
        progress.record.offset = progress.hasher.len();
        progress.unrecorded = 0;
        state
            .save_download(&progress.record, now)
            .map_err(attempt.state())
    }

    /// Drops the kept prefix: the mirror is sending the object from byte 0.
    async fn restart(
        &self,
        attempt: &Attempt<'_>,
        progress: &mut Progress,
    ) -> Result<(), DownloadError> {
        let io = || attempt.io(attempt.partial);
        progress.file.set_len(0).await.map_err(io())?;
        progress.file.seek(SeekFrom::Start(0)).await.map_err(io())?;
        progress.hasher = Sha256Hasher::new();
        progress.kept = 0;
        progress.record.offset = 0;
        progress.record.etag = None;
        progress.record.last_modified = None;
        Ok(())
    }

    /// Deletes the partial file and forgets its record, returning the mismatch error (or the error that
    /// stopped the clean-up, which matters more: a record left behind would resume bad bytes).
    async fn discard(
        &self,
        state: &mut State,
        attempt: &Attempt<'_>,
        reason: String,
    ) -> DownloadError {
        tracing::warn!(object = %attempt.object, mirror = %attempt.mirror, %reason,
            "discarding a download that is not the signed object");
        match tokio::fs::remove_file(attempt.partial).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return attempt.io(attempt.partial)(e),
        }
        if let Err(e) = state.forget_download(&attempt.object) {
            return attempt.state()(e);
        }
        attempt.mismatch(reason)
    }

    /// Checks the whole file against the signed digest, then moves it into place durably and forgets
    /// its record.
    async fn finish(
        &self,
        state: &mut State,
        attempt: &Attempt<'_>,
        want: &SignedObject,
        progress: Progress,
        dest: &Path,
    ) -> Result<(), DownloadError> {
        let Progress {
            mut file, hasher, ..
        } = progress;
        let (length, actual) = (hasher.len(), hasher.finish());
        if length != want.length || actual != want.sha256 {
            let reason = format!(
                "got {length} bytes with sha256 {actual}, signed: {} bytes with sha256 {}",
                want.length, want.sha256
            );
            return Err(self.discard(state, attempt, reason).await);
        }
        let io = || attempt.io(attempt.partial);
        file.flush().await.map_err(io())?;
        file.sync_all().await.map_err(io())?;
        drop(file);
        tokio::fs::rename(attempt.partial, dest)
            .await
            .map_err(attempt.io(dest))?;
        File::open(&self.dir)
            .await
            .map_err(attempt.io(&self.dir))?
            .sync_all()
            .await
            .map_err(attempt.io(&self.dir))?;
        state
            .forget_download(&attempt.object)
            .map_err(attempt.state())
    }
}

/// Takes the validators a response carries; a 206 without them keeps the ones the resume was asked with.
fn keep_validators(record: &mut Download, response: &Response) {
    if response.etag.is_some() || response.last_modified.is_some() {
        record.etag.clone_from(&response.etag);
        record.last_modified.clone_from(&response.last_modified);
    }
}

/// Hashes the first `limit` bytes of `file` from its current position (fewer at its end).
async fn hash_prefix(file: &mut File, limit: u64) -> std::io::Result<Sha256Hasher> {
    let mut hasher = Sha256Hasher::new();
    let mut buf = vec![0u8; HASH_BUFFER];
    while hasher.len() < limit {
        let want = usize::try_from(limit - hasher.len()).map_or(buf.len(), |n| n.min(buf.len()));
        let n = file.read(&mut buf[..want]).await?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher)
}

/// A `Vec` sink that counts into the downloader's total as bytes arrive, so a failed read is counted.
struct CountingSink<'a> {
    bytes: Vec<u8>,
    counter: &'a AtomicU64,
}

impl std::io::Write for CountingSink<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.counter.fetch_add(buf.len() as u64, Ordering::Relaxed);
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
