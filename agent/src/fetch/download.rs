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

use mast_mirror::{Conditions, ErrorKind, Fetched, MirrorError, MirrorRead, Response};
use mast_protocol::digest::{Sha256Digest, Sha256Hasher};
use time::OffsetDateTime;
use tokio::fs::{File, OpenOptions};
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _, AsyncWriteExt as _};

use super::{DownloadError, SignedObject};
use crate::state::{Download, State, StateError};

/// Bytes between durable checkpoints by default: one fsync and one SQLite commit per MiB keeps the cost
/// of both small on a slow link, and bounds what a crash loses to a MiB.
const DEFAULT_CHECKPOINT: u64 = 1 << 20;

/// Size of the reads that hash a kept prefix.
const HASH_BUFFER: usize = 256 << 10;

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
    /// Bytes read from the mirror by this attempt.
    fetched: u64,
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
        if progress.kept < want.length {
            self.fetch(state, mirror, &attempt, want, &mut progress, now)
                .await?;
        }
        let (resumed_from, fetched) = (progress.kept, progress.fetched);
        self.finish(state, &attempt, want, progress, &dest).await?;
        Ok(Downloaded {
            path: dest,
            fetched,
            resumed_from,
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
            fetched: 0,
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
        let mut response = self.request(state, mirror, attempt, want, progress).await?;
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
            progress.fetched += piece.len() as u64;
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

    /// Asks `mirror` for what `progress` lacks, resuming under the recorded validator. Returns the body
    /// to append, with `progress` reset to 0 when the mirror sends the whole object.
    async fn request<M: MirrorRead>(
        &self,
        state: &mut State,
        mirror: &M,
        attempt: &Attempt<'_>,
        want: &SignedObject,
        progress: &mut Progress,
    ) -> Result<Response, DownloadError> {
        let from = progress.record.offset;
        let conditions = if from > 0 {
            Conditions::resume(from, resume_validator(&progress.record))
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
        Ok(match fetched {
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
            Fetched::NotModified { .. } => {
                let reason = "a not-modified answer to a read without validators";
                return Err(attempt.mirror(MirrorError::Protocol {
                    object: attempt.object.clone(),
                    reason: reason.to_owned(),
                }));
            }
        })
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

/// The validator to resume a recorded download with (`If-Range`): a strong `ETag`, else `Last-Modified`,
/// as [`Response::range_validator`] picks it.
fn resume_validator(record: &Download) -> Option<&str> {
    record
        .etag
        .as_deref()
        .filter(|etag| !etag.starts_with("W/"))
        .or(record.last_modified.as_deref())
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
