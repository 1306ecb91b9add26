//! A mirror in a local directory: an air-gap copy, a USB stick, a CDN origin's document root, and the
//! packager's own repository directory.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::transport::Body;
use tokio::io::AsyncSeekExt as _;

use crate::{Conditions, Fetched, MirrorError, MirrorRead, MirrorWrite, ObjectPath, Response};

/// A directory holding the mirror layout.
#[derive(Debug, Clone)]
pub struct DirMirror {
    root: PathBuf,
}

impl DirMirror {
    /// The mirror rooted at `root` (which need not exist yet for writing).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    async fn open(
        &self,
        object: &ObjectPath,
    ) -> Result<(tokio::fs::File, std::fs::Metadata), MirrorError> {
        let path = self.path_of(object);
        let file = match tokio::fs::File::open(&path).await {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(MirrorError::NotFound {
                    object: object.as_path(),
                    mirror: self.describe(),
                });
            }
            Err(e) => return Err(MirrorError::io(&path, e)),
        };
        let meta = file
            .metadata()
            .await
            .map_err(|e| MirrorError::io(&path, e))?;
        if !meta.is_file() {
            return Err(MirrorError::Protocol {
                object: object.as_path(),
                reason: "not a regular file".to_owned(),
            });
        }
        Ok((file, meta))
    }

    /// Where `object` lives on disk.
    pub fn path_of(&self, object: &ObjectPath) -> PathBuf {
        self.root.join(object.as_path())
    }
}

impl MirrorRead for DirMirror {
    async fn get(&self, object: &ObjectPath, max_length: u64) -> Result<Response, MirrorError> {
        let (file, meta) = self.open(object).await?;
        let mut response = Response::new(object, Some(meta.len()), max_length, Body::File(file))?;
        response.etag = Some(validator(&meta));
        Ok(response)
    }

    /// Conditional and resumed reads of a file, with an ETag derived from its inode, mtime and length
    /// (see [`validator`]): `if_none_match` is compared with it; `if_modified_since` is ignored (a
    /// second-granularity date is a weaker validator than the one derived, and a full read of a local
    /// file costs little); `resume_from` seeks, under `if_range` when given, and reads whole when the
    /// offset is past the end or the validator changed.
    async fn get_with(
        &self,
        object: &ObjectPath,
        max_length: u64,
        conditions: &Conditions,
    ) -> Result<Fetched, MirrorError> {
        let (mut file, meta) = self.open(object).await?;
        let etag = validator(&meta);
        if conditions
            .if_none_match
            .as_deref()
            .is_some_and(|tag| tag == etag)
        {
            return Ok(Fetched::NotModified {
                cache_control: None,
            });
        }
        let from = conditions.resume_from;
        let resumable = conditions.if_range.as_deref().is_none_or(|tag| tag == etag);
        if from > 0 && from <= meta.len() && resumable {
            let path = self.path_of(object);
            file.seek(std::io::SeekFrom::Start(from))
                .await
                .map_err(|e| MirrorError::io(&path, e))?;
            if meta.len() > max_length {
                return Err(MirrorError::TooLarge {
                    object: object.as_path(),
                    limit: max_length,
                });
            }
            let mut response = Response::new(
                object,
                Some(meta.len() - from),
                max_length - from,
                Body::File(file),
            )?;
            response.etag = Some(etag);
            return Ok(Fetched::Partial {
                from,
                total: Some(meta.len()),
                response,
            });
        }
        let mut response = Response::new(object, Some(meta.len()), max_length, Body::File(file))?;
        response.etag = Some(etag);
        Ok(Fetched::Full(response))
    }

    fn describe(&self) -> String {
        format!("dir:{}", self.root.display())
    }
}

impl MirrorWrite for DirMirror {
    async fn exists(&self, object: &ObjectPath) -> Result<bool, MirrorError> {
        match tokio::fs::metadata(self.path_of(object)).await {
            Ok(meta) => Ok(meta.is_file()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(MirrorError::io(&self.path_of(object), e)),
        }
    }

    async fn put(&self, object: &ObjectPath, bytes: Bytes) -> Result<(), MirrorError> {
        let path = self.path_of(object);
        tokio::task::spawn_blocking(move || write_atomic(&path, &bytes))
            .await
            .map_err(|e| MirrorError::Config(format!("writer task failed: {e}")))?
    }
}

/// A strong validator for a file, in an HTTP `ETag`'s form: `"INODE-MTIME_NS-LENGTH"` in hex.
///
/// [`write_atomic`] replaces a file by renaming a new one over it, so a change gives a new inode (the new
/// file exists before the old one is unlinked) as well as a new mtime; a length alone would miss an
/// edit that keeps the size, and an mtime alone one made within the file system's timestamp granularity.
/// An in-place edit that keeps inode, length and a coarse mtime could still go unnoticed until the next
/// change, which is why only `timestamp.json` (always written by rename) is ever revalidated.
fn validator(meta: &std::fs::Metadata) -> String {
    use std::os::unix::fs::MetadataExt as _;
    let mtime_ns = i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec());
    format!("\"{:x}-{mtime_ns:x}-{:x}\"", meta.ino(), meta.len())
}

/// Writes `bytes` to `path` so that a reader sees the old file or the new one, never part of either, even
/// across a crash: a temporary file in the same directory, fsync, rename over `path`, fsync the directory.
/// Parent directories are created as needed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), MirrorError> {
    let dir = path
        .parent()
        .ok_or_else(|| MirrorError::Config(format!("{}: no parent directory", path.display())))?;
    std::fs::create_dir_all(dir).map_err(|e| MirrorError::io(dir, e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Hidden and unique per process and call: two writers of one file never share a temporary, and a temp
    // left by a killed writer is not a layout name, so no reader ever asks for it.
    let unique = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let tmp = dir.join(format!(".{name}.tmp-{}-{unique}", std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(MirrorError::io(path, e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writes_reads_and_tells_missing_from_broken() {
        let dir = tempfile::tempdir().unwrap();
        let mirror = DirMirror::new(dir.path());
        let ts = ObjectPath::metadata("timestamp.json").unwrap();
        assert!(!mirror.exists(&ts).await.unwrap());
        let err = mirror.get(&ts, 100).await.unwrap_err();
        assert!(err.is_not_found(), "{err}");
        mirror
            .put(&ts, Bytes::from_static(b"{\"a\":1}"))
            .await
            .unwrap();
        assert!(mirror.exists(&ts).await.unwrap());
        assert_eq!(
            mirror.get(&ts, 100).await.unwrap().bytes().await.unwrap(),
            b"{\"a\":1}"
        );
        let err = mirror.get(&ts, 3).await.unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::TooLarge);
        mirror.put(&ts, Bytes::from_static(b"{}")).await.unwrap();
        assert_eq!(
            mirror.get(&ts, 100).await.unwrap().bytes().await.unwrap(),
            b"{}"
        );
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("metadata"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, ["timestamp.json"]);
    }

    async fn body(fetched: Fetched) -> (Option<u64>, Vec<u8>) {
        match fetched {
            Fetched::Full(response) => (None, response.bytes().await.unwrap()),
            Fetched::Partial { from, response, .. } => {
                (Some(from), response.bytes().await.unwrap())
            }
            Fetched::NotModified { .. } => panic!("not modified"),
        }
    }

    #[tokio::test]
    async fn revalidates_with_a_derived_etag_and_resumes_by_seeking() {
        let dir = tempfile::tempdir().unwrap();
        let mirror = DirMirror::new(dir.path());
        let ts = ObjectPath::metadata("timestamp.json").unwrap();
        mirror
            .put(&ts, Bytes::from_static(b"0123456789"))
            .await
            .unwrap();
        let first = mirror.get(&ts, 100).await.unwrap();
        let etag = first.etag.clone().unwrap();
        let unchanged = Conditions::revalidate(Some(&etag), None);
        assert!(matches!(
            mirror.get_with(&ts, 100, &unchanged).await.unwrap(),
            Fetched::NotModified { .. }
        ));

        let resume = Conditions::resume(4, first.range_validator());
        let (from, bytes) = body(mirror.get_with(&ts, 100, &resume).await.unwrap()).await;
        assert_eq!((from, bytes.as_slice()), (Some(4), &b"456789"[..]));
        // The cap is the whole object's: a partial body counts against what remains of it.
        assert_eq!(
            mirror.get_with(&ts, 9, &resume).await.unwrap_err().kind(),
            crate::ErrorKind::TooLarge
        );
        // Past the end, as HTTP's 416: the whole object.
        let (from, bytes) = body(
            mirror
                .get_with(&ts, 100, &Conditions::resume(11, None))
                .await
                .unwrap(),
        )
        .await;
        assert_eq!((from, bytes.len()), (None, 10));

        // Same length, new content: a new validator, so a new body and no resume on the old one.
        mirror
            .put(&ts, Bytes::from_static(b"abcdefghij"))
            .await
            .unwrap();
        let (from, bytes) = body(mirror.get_with(&ts, 100, &unchanged).await.unwrap()).await;
        assert_eq!((from, bytes.as_slice()), (None, &b"abcdefghij"[..]));
        let (from, bytes) = body(mirror.get_with(&ts, 100, &resume).await.unwrap()).await;
        assert_eq!((from, bytes.as_slice()), (None, &b"abcdefghij"[..]));
    }
}
