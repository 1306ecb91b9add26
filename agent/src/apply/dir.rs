//! The `dir:` applier: a release's manifests as files in a directory.
//!
//! Each file is written to a temporary name, fsync'd and renamed over its path, so a reader (k3s's deploy
//! controller) sees the old file or the new one, never half of one. The applier keeps the list of files it
//! wrote in `.mast-inventory` in the same directory; files it did not write are never touched. The order
//! is: write the new files, remove the files only the old inventory lists, then replace the inventory. A
//! crash anywhere in between leaves an inventory that still lists every file the applier may have
//! written, so the next apply finishes the job.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use super::{Applier, ApplyError, ApplyReport, ApplyRequest};

/// The applier's record of the files it wrote, one bundle path a line.
const INVENTORY: &str = ".mast-inventory";

/// Writes releases into a directory.
#[derive(Debug, Clone)]
pub struct DirApplier {
    root: PathBuf,
}

impl DirApplier {
    /// An applier writing into `root` (created when missing).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The files the last apply wrote, as bundle paths.
    pub fn inventory(&self) -> Result<BTreeSet<String>, ApplyError> {
        let path = self.root.join(INVENTORY);
        match fs::read_to_string(&path) {
            Ok(text) => Ok(text.lines().map(str::to_owned).collect()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(BTreeSet::new()),
            Err(source) => Err(ApplyError::Io { path, source }),
        }
    }
}

impl Applier for DirApplier {
    fn apply(&mut self, request: &ApplyRequest<'_>) -> Result<ApplyReport, ApplyError> {
        fs::create_dir_all(&self.root).map_err(io(&self.root))?;
        let old = self.inventory()?;
        let mut report = ApplyReport::default();
        let mut new = BTreeSet::new();
        for file in request.files {
            let relative = file.path.as_str();
            if relative == INVENTORY {
                return Err(ApplyError::Inventory {
                    path: self.root.join(INVENTORY),
                    reason: "the bundle has a file with the applier's own inventory name"
                        .to_owned(),
                });
            }
            let path = self.root.join(relative);
            if fs::read(&path).is_ok_and(|current| current == file.data) {
                report.unchanged += 1;
            } else {
                write_atomic(&path, file.data)?;
                report.written += 1;
            }
            new.insert(relative.to_owned());
        }
        for gone in old.difference(&new) {
            let path = self.root.join(gone);
            match fs::remove_file(&path) {
                Ok(()) => report.pruned += 1,
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(source) => return Err(ApplyError::Io { path, source }),
            }
        }
        let listing: String = new.iter().map(|p| format!("{p}\n")).collect();
        write_atomic(&self.root.join(INVENTORY), listing.as_bytes())?;
        Ok(report)
    }

    fn describe(&self) -> String {
        format!("dir:{}", self.root.display())
    }
}

/// Writes `bytes` to `path` through a temporary file in the same directory, fsync'd before the rename and
/// the directory fsync'd after it.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ApplyError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(io(dir))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let temp = dir.join(format!(".{name}.mast-tmp"));
    let mut file = File::create(&temp).map_err(io(&temp))?;
    file.write_all(bytes).map_err(io(&temp))?;
    file.sync_all().map_err(io(&temp))?;
    fs::rename(&temp, path).map_err(io(path))?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ApplyError + use<> {
    let path = path.to_path_buf();
    move |source| ApplyError::Io { path, source }
}

#[cfg(test)]
mod tests {
    use mast_protocol::bundle::{BundlePath, TarFile};
    use mast_protocol::release::Channel;

    use super::*;

    fn files<'a>(list: &[(&str, &'a [u8])]) -> Vec<TarFile<'a>> {
        list.iter()
            .map(|(path, data)| TarFile {
                path: path.parse::<BundlePath>().unwrap(),
                data,
            })
            .collect()
    }

    fn apply(applier: &mut DirApplier, list: &[(&str, &[u8])]) -> ApplyReport {
        let channel: Channel = "prod".parse().unwrap();
        let files = files(list);
        applier
            .apply(&ApplyRequest {
                channel: &channel,
                release: 1,
                files: &files,
            })
            .unwrap()
    }

    #[test]
    fn writes_updates_prunes_only_its_own_files_and_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("operator.yaml"), b"not ours").unwrap();
        let mut applier = DirApplier::new(dir.path());
        let first = apply(&mut applier, &[("a.yaml", b"a1"), ("sub/b.yaml", b"b1")]);
        assert_eq!((first.written, first.pruned), (2, 0));
        assert_eq!(fs::read(dir.path().join("sub/b.yaml")).unwrap(), b"b1");

        let again = apply(&mut applier, &[("a.yaml", b"a1"), ("sub/b.yaml", b"b1")]);
        assert_eq!((again.written, again.unchanged, again.pruned), (0, 2, 0));

        let second = apply(&mut applier, &[("a.yaml", b"a2"), ("c.yaml", b"c1")]);
        assert_eq!((second.written, second.unchanged, second.pruned), (2, 0, 1));
        assert!(!dir.path().join("sub/b.yaml").exists());
        assert_eq!(fs::read(dir.path().join("a.yaml")).unwrap(), b"a2");
        assert_eq!(
            fs::read(dir.path().join("operator.yaml")).unwrap(),
            b"not ours"
        );
        assert_eq!(
            applier.inventory().unwrap().into_iter().collect::<Vec<_>>(),
            ["a.yaml", "c.yaml"]
        );
        // No temporary files are left behind.
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".mast-tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn a_bundle_may_not_overwrite_the_inventory() {
        let dir = tempfile::tempdir().unwrap();
        let mut applier = DirApplier::new(dir.path());
        let channel: Channel = "prod".parse().unwrap();
        let files = files(&[(".mast-inventory", b"x")]);
        let err = applier
            .apply(&ApplyRequest {
                channel: &channel,
                release: 1,
                files: &files,
            })
            .unwrap_err();
        assert!(err.to_string().contains(".mast-inventory"), "{err}");
    }
}
