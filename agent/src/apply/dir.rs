//! The `dir:` applier: a release's manifests as files in a directory.
//!
//! Each file is written to a temporary name and fsync'd; then all are renamed over their paths and each
//! directory is fsync'd once, so a reader (k3s's deploy controller) sees the old file or the new one,
//! never half of one. The applier keeps the list of files it
//! wrote in `.mast-inventory` in the same directory; files it did not write are never touched. The order
//! is: write the new files, remove the files only the old inventory lists, then replace the inventory. A
//! crash anywhere in between leaves an inventory that still lists every file the applier may have
//! written, so the next apply finishes the job.
//!
//! Health is the deploy controller's business once the files are in place, so a written release is
//! healthy here. Drift is a file of the release that is missing or whose bytes changed.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use mast_protocol::bundle::options::Prune;

use super::{Applier, ApplyError, ApplyFuture, ApplyReport, ApplyRequest, DriftFinding, Health};

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

impl DirApplier {
    fn apply_now(&mut self, request: &ApplyRequest<'_>) -> Result<ApplyReport, ApplyError> {
        fs::create_dir_all(&self.root).map_err(io(&self.root))?;
        let old = self.inventory()?;
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
            new.insert(relative);
        }
        let gone: Vec<&String> = old.iter().filter(|p| !new.contains(p.as_str())).collect();
        let prune = request.options.prune == Prune::Delete;
        if prune {
            check_guard(gone.len(), old.len(), request)?;
        }
        let mut report = ApplyReport::default();
        let mut staged = Vec::new();
        for file in request.files {
            let path = self.root.join(file.path.as_str());
            if fs::read(&path).is_ok_and(|current| current == file.data) {
                report.unchanged += 1;
            } else {
                staged.push(stage(path, file.data)?);
                report.written += 1;
            }
        }
        commit(&staged)?;
        if prune {
            for gone in gone {
                let path = self.root.join(gone);
                match fs::remove_file(&path) {
                    Ok(()) => report.pruned += 1,
                    Err(e) if e.kind() == ErrorKind::NotFound => {}
                    Err(source) => return Err(ApplyError::Io { path, source }),
                }
            }
        }
        // Orphaned files leave the inventory: they are no longer the applier's.
        let listing: String = new.iter().map(|p| format!("{p}\n")).collect();
        write_atomic(&self.root.join(INVENTORY), listing.as_bytes())?;
        report.inventory = new.into_iter().map(str::to_owned).collect();
        Ok(report)
    }

    fn drift_now(&self, request: &ApplyRequest<'_>) -> Vec<DriftFinding> {
        request
            .files
            .iter()
            .filter_map(|file| {
                let detail = match fs::read(self.root.join(file.path.as_str())) {
                    Ok(current) if current == file.data => return None,
                    Ok(_) => "changed".to_owned(),
                    Err(e) if e.kind() == ErrorKind::NotFound => "missing".to_owned(),
                    Err(e) => format!("unreadable: {e}"),
                };
                Some(DriftFinding {
                    object: file.path.as_str().to_owned(),
                    detail,
                })
            })
            .collect()
    }
}

impl Applier for DirApplier {
    fn apply<'a>(&'a mut self, request: &'a ApplyRequest<'a>) -> ApplyFuture<'a, ApplyReport> {
        Box::pin(async move { self.apply_now(request) })
    }

    fn wait_healthy<'a>(
        &'a mut self,
        _request: &'a ApplyRequest<'a>,
        _timeout: Duration,
    ) -> ApplyFuture<'a, Health> {
        Box::pin(async { Ok(Health::Healthy) })
    }

    fn drift<'a>(
        &'a mut self,
        request: &'a ApplyRequest<'a>,
    ) -> ApplyFuture<'a, Vec<DriftFinding>> {
        Box::pin(async move { Ok(self.drift_now(request)) })
    }

    fn describe(&self) -> String {
        format!("dir:{}", self.root.display())
    }
}

/// The bundle's delete guard: refuses a prune of more than `max_delete` allows, as a share of the
/// previous inventory and as a count.
pub(super) fn check_guard(
    would_delete: usize,
    previous: usize,
    request: &ApplyRequest<'_>,
) -> Result<(), ApplyError> {
    let guard = request.options.max_delete;
    let share = if previous == 0 {
        0.0
    } else {
        would_delete as f64 / previous as f64
    };
    if would_delete > 0 && (share > guard.fraction || would_delete as u64 > guard.count) {
        return Err(ApplyError::PruneGuard {
            would_delete,
            previous,
            fraction: guard.fraction,
            count: guard.count,
        });
    }
    Ok(())
}

/// Writes `bytes` to `path` through a temporary file in the same directory, fsync'd before the rename and
/// the directory fsync'd after it.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ApplyError> {
    commit(&[stage(path.to_path_buf(), bytes)?])
}

/// A file written and fsync'd under a temporary name next to `path`, not yet renamed.
struct Staged {
    temp: PathBuf,
    path: PathBuf,
}

fn stage(path: PathBuf, bytes: &[u8]) -> Result<Staged, ApplyError> {
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
    Ok(Staged { temp, path })
}

/// Renames each staged file over its path, then fsyncs each directory touched once: every file is
/// replaced whole, and all the renames are durable when this returns.
fn commit(staged: &[Staged]) -> Result<(), ApplyError> {
    let mut dirs = BTreeSet::new();
    for file in staged {
        fs::rename(&file.temp, &file.path).map_err(io(&file.path))?;
        dirs.insert(file.path.parent().unwrap_or(Path::new(".")));
    }
    for dir in dirs {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(dir))?;
    }
    Ok(())
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ApplyError + use<> {
    let path = path.to_path_buf();
    move |source| ApplyError::Io { path, source }
}

#[cfg(test)]
mod tests {
    use mast_protocol::bundle::options::{BundleOptions, MaxDelete};
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
        try_apply(applier, list, &loose()).unwrap()
    }

    fn try_apply(
        applier: &mut DirApplier,
        list: &[(&str, &[u8])],
        options: &BundleOptions,
    ) -> Result<ApplyReport, ApplyError> {
        let channel: Channel = "prod".parse().unwrap();
        let files = files(list);
        applier.apply_now(&ApplyRequest {
            channel: &channel,
            release: 1,
            files: &files,
            options,
            previous: &[],
        })
    }

    /// Options whose delete guard lets any prune through.
    fn loose() -> BundleOptions {
        BundleOptions {
            max_delete: MaxDelete {
                fraction: 1.0,
                count: u64::MAX,
            },
            ..BundleOptions::default()
        }
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
        let options = BundleOptions::default();
        let err = applier
            .apply_now(&ApplyRequest {
                channel: &channel,
                release: 1,
                files: &files,
                options: &options,
                previous: &[],
            })
            .unwrap_err();
        assert!(err.to_string().contains(".mast-inventory"), "{err}");
    }

    #[test]
    fn the_delete_guard_refuses_a_large_prune_and_deletes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut applier = DirApplier::new(dir.path());
        let many: Vec<(String, Vec<u8>)> = (0..8)
            .map(|i| (format!("f{i}.yaml"), vec![b'x'; i + 1]))
            .collect();
        let list: Vec<(&str, &[u8])> = many
            .iter()
            .map(|(p, d)| (p.as_str(), d.as_slice()))
            .collect();
        apply(&mut applier, &list);
        // Dropping 3 of 8 (37.5%) is over the default 25%.
        let err = try_apply(&mut applier, &list[..5], &BundleOptions::default()).unwrap_err();
        assert!(
            matches!(
                err,
                ApplyError::PruneGuard {
                    would_delete: 3,
                    previous: 8,
                    ..
                }
            ),
            "{err}"
        );
        assert!(dir.path().join("f7.yaml").exists());
        assert_eq!(applier.inventory().unwrap().len(), 8);
        // Dropping 2 of 8 is within it.
        let report = try_apply(&mut applier, &list[..6], &BundleOptions::default()).unwrap();
        assert_eq!(report.pruned, 2);
    }

    #[test]
    fn orphaned_files_stay_and_leave_the_inventory() {
        let dir = tempfile::tempdir().unwrap();
        let mut applier = DirApplier::new(dir.path());
        apply(&mut applier, &[("a.yaml", b"a"), ("b.yaml", b"b")]);
        let orphan = BundleOptions {
            prune: Prune::Orphan,
            ..BundleOptions::default()
        };
        let report = try_apply(&mut applier, &[("a.yaml", b"a")], &orphan).unwrap();
        assert_eq!(report.pruned, 0);
        assert!(dir.path().join("b.yaml").exists());
        assert_eq!(applier.inventory().unwrap().len(), 1);
    }

    #[test]
    fn drift_reports_changed_and_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut applier = DirApplier::new(dir.path());
        let list: [(&str, &[u8]); 3] = [("a.yaml", b"a"), ("b.yaml", b"b"), ("c.yaml", b"c")];
        apply(&mut applier, &list);
        fs::write(dir.path().join("a.yaml"), b"edited by hand").unwrap();
        fs::remove_file(dir.path().join("c.yaml")).unwrap();
        let channel: Channel = "prod".parse().unwrap();
        let files = files(&list);
        let options = BundleOptions::default();
        let request = ApplyRequest {
            channel: &channel,
            release: 1,
            files: &files,
            options: &options,
            previous: &[],
        };
        let findings = applier.drift_now(&request);
        let seen: Vec<(&str, &str)> = findings
            .iter()
            .map(|f| (f.object.as_str(), f.detail.as_str()))
            .collect();
        assert_eq!(seen, [("a.yaml", "changed"), ("c.yaml", "missing")]);
        applier.apply_now(&request).unwrap();
        assert!(applier.drift_now(&request).is_empty());
    }
}
