//! A mirror in a local directory: an air-gap copy, a USB stick, a CDN origin's document root, and the
//! packager's own repository directory.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::transport::Body;
use crate::{MirrorError, MirrorRead, MirrorWrite, ObjectPath, Response};

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

    /// Where `object` lives on disk.
    pub fn path_of(&self, object: &ObjectPath) -> PathBuf {
        self.root.join(object.as_path())
    }
}

impl MirrorRead for DirMirror {
    async fn get(&self, object: &ObjectPath, max_length: u64) -> Result<Response, MirrorError> {
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
        Response::new(object, Some(meta.len()), max_length, Body::File(file))
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
}
