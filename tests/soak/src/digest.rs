//! What "converged" means: the applied directory holds exactly the released files, byte for byte.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

/// A set of files: relative path → sha256 of the bytes.
pub(crate) type FileSet = BTreeMap<String, [u8; 32]>;

/// The files under `dir` (recursively), leaving out dotfiles: the applier's `.mast-inventory` and the
/// `.NAME.mast-tmp` a crash may leave behind are the applier's, not the release's.
pub(crate) fn file_set_of_dir(dir: &Path) -> Result<FileSet> {
    let mut set = FileSet::new();
    if dir.exists() {
        walk(dir, "", &mut set)?;
    }
    Ok(set)
}

/// One digest for a whole set, to compare and print.
pub(crate) fn set_digest(set: &FileSet) -> String {
    let mut hasher = Sha256::new();
    for (path, sha) in set {
        hasher.update(path.as_bytes());
        hasher.update([0]);
        hasher.update(sha);
    }
    hex::encode(hasher.finalize())
}

fn walk(dir: &Path, prefix: &str, set: &mut FileSet) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| dir.display().to_string())? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let relative = format!("{prefix}{name}");
        if entry.file_type()?.is_dir() {
            walk(&entry.path(), &format!("{relative}/"), set)?;
        } else {
            let bytes = fs::read(entry.path())?;
            set.insert(relative, Sha256::digest(&bytes).into());
        }
    }
    Ok(())
}
