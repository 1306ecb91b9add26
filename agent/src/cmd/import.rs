//! `mast-agent import PATH`: a repository carried by hand (a USB stick, an air-gap transfer), as a
//! directory or as a tar archive of one (`.tar`, `.tar.gz`, `.tgz`), verified exactly as a mirror is.
//!
//! An archive is unpacked into a directory beside the state database and removed afterwards. Unpacking
//! trusts nothing in it: the tar crate refuses entries that would land outside the directory, only
//! regular files and directories are written, and the pass that follows verifies every byte it uses
//! against signed metadata, so a tampered archive can at worst fail the import.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use mast_mirror::MirrorSpec;
use time::OffsetDateTime;

use super::{CommandError, once};
use crate::config::Config;

/// Imports the repository at `path` (a directory or a tar archive of one).
pub async fn import(
    config: &Config,
    path: &Path,
    now: OffsetDateTime,
) -> Result<ExitCode, CommandError> {
    let unpacked = if path.is_file() {
        Some(unpack(path, &config.state)?)
    } else {
        None
    };
    let root = unpacked.as_ref().map_or(path, |dir| dir.path.as_path());
    let root = repository_root(root).ok_or_else(|| {
        CommandError::Other(format!(
            "{}: not a mast repository (no metadata/ directory at its top or one level down)",
            path.display()
        ))
    })?;
    let mut config = config.clone();
    config.mirrors = vec![MirrorSpec::Dir(root)];
    once(&config, now).await
}

/// A directory removed when dropped.
struct Unpacked {
    path: PathBuf,
}

impl Drop for Unpacked {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.path) {
            tracing::warn!(path = %self.path.display(), error = %e, "could not remove the unpacked import");
        }
    }
}

/// The repository in `dir`: `dir` itself, or its one subdirectory (archives usually hold `repo/…`).
fn repository_root(dir: &Path) -> Option<PathBuf> {
    if dir.join("metadata").is_dir() {
        return Some(dir.to_path_buf());
    }
    let mut subdirs = fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir());
    let only = subdirs.next()?;
    (subdirs.next().is_none() && only.path().join("metadata").is_dir()).then(|| only.path())
}

fn unpack(archive: &Path, state: &Path) -> Result<Unpacked, CommandError> {
    let io = |what: &str, e: std::io::Error| {
        CommandError::Other(format!("{}: {what}: {e}", archive.display()))
    };
    let parent = state
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let dir = Unpacked {
        path: parent.join(format!("import-{}", std::process::id())),
    };
    if dir.path.exists() {
        fs::remove_dir_all(&dir.path).map_err(|e| io("clearing an earlier unpack", e))?;
    }
    fs::create_dir_all(&dir.path).map_err(|e| io("creating the unpack directory", e))?;
    let file = fs::File::open(archive).map_err(|e| io("opening", e))?;
    let name = archive.to_string_lossy();
    let reader: Box<dyn Read> = if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
        Box::new(flate2::read::GzDecoder::new(file))
    } else {
        Box::new(file)
    };
    let mut tar = tar::Archive::new(reader);
    tar.set_preserve_permissions(false);
    tar.set_preserve_mtime(false);
    for entry in tar.entries().map_err(|e| io("reading", e))? {
        let mut entry = entry.map_err(|e| io("reading", e))?;
        let kind = entry.header().entry_type();
        if !(kind.is_file() || kind.is_dir()) {
            let at = entry
                .path()
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            return Err(CommandError::Other(format!(
                "{}: {at}: only files and directories may be in a repository archive",
                archive.display()
            )));
        }
        // `unpack_in` refuses absolute paths and `..`, so nothing lands outside the directory.
        entry.unpack_in(&dir.path).map_err(|e| io("unpacking", e))?;
    }
    Ok(dir)
}
