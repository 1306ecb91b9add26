//! Reading an untrusted tar: only regular files with clean paths come out, within hard limits.
//!
//! The `tar` crate parses headers, GNU long names and PAX records; this module decides what is allowed.
//! Besides the path rules of [`BundlePath`], it refuses anything that two tar readers could see
//! differently — a PAX `path` that disagrees with a GNU long name, duplicate PAX keys, a PAX record the
//! `tar` crate cannot parse (it splits records at newlines, then quietly falls back to the header's name),
//! sparse files, PAX global headers, bytes after the end of the archive — because a bundle that means one
//! thing to the verifier and another to the applier is how a review gets bypassed.
//!
//! Entry order is not checked, so tars from other tools are read; but `./`-prefixed names (what
//! `tar cf x.tar -C dir .` writes) are refused with every other `.` segment.

use std::collections::HashSet;

use ::tar::{Archive, Entry};

use super::error::{BundleError, ForbiddenKind};
use super::path::BundlePath;
use super::tar::check_sorted_paths;

/// The tar block size.
const BLOCK: u64 = 512;

/// Caps on what [`walk`] accepts, checked before any entry's data is looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalkLimits {
    /// Most tar entries of any kind (directories and skipped entries count too).
    pub max_entries: u64,
    /// Largest regular file, in bytes.
    pub max_entry_size: u64,
    /// Largest sum of all regular files' sizes, in bytes.
    pub max_total_size: u64,
}

/// A regular file of a tar, borrowed from the archive's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TarFile<'a> {
    /// Where it lives in the bundle.
    pub path: BundlePath,
    /// Its content.
    pub data: &'a [u8],
}

impl Default for WalkLimits {
    /// 100 000 entries, 64 MiB per file, 1 GiB in all: far above any real set of manifests (a large
    /// cluster's rendered configuration is tens of MB), far below what would hurt an edge node.
    fn default() -> Self {
        Self {
            max_entries: 100_000,
            max_entry_size: 64 << 20,
            max_total_size: 1 << 30,
        }
    }
}

/// The regular files of `tar`, in archive order, or the first reason the archive is refused.
///
/// Directory entries are checked like files (their path must be valid) and then skipped. Symlinks, hard
/// links, devices, FIFOs, sparse files, PAX global headers and unknown entry types are refused, as are
/// duplicate paths, a file that another file needs as a directory, a truncated archive and non-zero bytes
/// after the end-of-archive blocks. Nothing is returned unless the whole archive passes, so a caller
/// never acts on half of a bad bundle.
pub fn walk<'a>(tar: &'a [u8], limits: &WalkLimits) -> Result<Vec<TarFile<'a>>, BundleError> {
    let mut archive = Archive::new(tar);
    let entries = archive
        .entries()
        .map_err(|source| BundleError::MalformedTar {
            after: None,
            source,
        })?;
    let mut walk = Walk {
        tar,
        limits,
        files: Vec::new(),
        count: 0,
        total: 0,
        end: 0,
    };
    let mut last: Option<String> = None;
    for entry in entries {
        let mut entry = entry.map_err(|source| BundleError::MalformedTar {
            after: last.clone(),
            source,
        })?;
        last = Some(walk.entry(&mut entry)?);
    }
    check_end(tar, walk.end)?;
    let mut sorted: Vec<&BundlePath> = walk.files.iter().map(|f| &f.path).collect();
    sorted.sort_unstable();
    check_sorted_paths(&sorted)?;
    Ok(walk.files)
}

/// What the walk has seen so far.
struct Walk<'a, 'l> {
    tar: &'a [u8],
    limits: &'l WalkLimits,
    files: Vec<TarFile<'a>>,
    count: u64,
    total: u64,
    /// Where the bytes after the last entry start.
    end: u64,
}

impl<'a> Walk<'a, '_> {
    /// Checks one entry, keeps it if it is a file, and returns its path for error context.
    fn entry(&mut self, entry: &mut Entry<'_, &[u8]>) -> Result<String, BundleError> {
        self.count += 1;
        if self.count > self.limits.max_entries {
            return Err(BundleError::TooManyEntries {
                limit: self.limits.max_entries,
            });
        }
        let raw_path = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw_path).into_owned();
        let size = entry.size();
        let start = entry.raw_file_position();
        self.end = size
            .checked_next_multiple_of(BLOCK)
            .and_then(|padded| start.checked_add(padded))
            .ok_or(BundleError::BadArchiveEnd("an entry's size overflows"))?;
        match classify(entry) {
            Kind::File => {
                check_pax(entry, &raw_path, &shown)?;
                let path = BundlePath::from_bytes(&raw_path)?;
                self.count_size(&shown, size)?;
                let data =
                    slice(self.tar, start, size).ok_or_else(|| BundleError::TruncatedEntry {
                        path: path.clone(),
                        size,
                    })?;
                self.files.push(TarFile { path, data });
            }
            Kind::Directory => {
                check_pax(entry, &raw_path, &shown)?;
                let dir = raw_path.strip_suffix(b"/").unwrap_or(&raw_path);
                BundlePath::from_bytes(dir)?;
            }
            Kind::Forbidden(kind) => {
                return Err(BundleError::ForbiddenEntry { path: shown, kind });
            }
        }
        Ok(shown)
    }

    fn count_size(&mut self, shown: &str, size: u64) -> Result<(), BundleError> {
        if size > self.limits.max_entry_size {
            return Err(BundleError::EntryTooLarge {
                path: shown.to_owned(),
                size,
                limit: self.limits.max_entry_size,
            });
        }
        self.total = self.total.saturating_add(size);
        if self.total > self.limits.max_total_size {
            return Err(BundleError::TotalTooLarge {
                path: shown.to_owned(),
                limit: self.limits.max_total_size,
            });
        }
        Ok(())
    }
}

enum Kind {
    File,
    Directory,
    Forbidden(ForbiddenKind),
}

fn classify(entry: &Entry<'_, &[u8]>) -> Kind {
    let target = || {
        let bytes = entry.link_name_bytes().unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    // The raw type flag: the tar crate maps several bytes onto one variant, and this decision wants them
    // apart (`7`, "contiguous", is a regular file to some readers and unknown to others).
    match entry.header().as_bytes()[156] {
        b'0' | b'\0' => Kind::File,
        b'5' => Kind::Directory,
        b'1' => Kind::Forbidden(ForbiddenKind::HardLink { target: target() }),
        b'2' => Kind::Forbidden(ForbiddenKind::Symlink { target: target() }),
        b'3' => Kind::Forbidden(ForbiddenKind::CharDevice),
        b'4' => Kind::Forbidden(ForbiddenKind::BlockDevice),
        b'6' => Kind::Forbidden(ForbiddenKind::Fifo),
        b'S' => Kind::Forbidden(ForbiddenKind::Sparse),
        b'g' => Kind::Forbidden(ForbiddenKind::PaxGlobalHeader),
        other => Kind::Forbidden(ForbiddenKind::Unknown(other)),
    }
}

/// Refuses PAX records that other readers could interpret differently from the `tar` crate.
fn check_pax(entry: &mut Entry<'_, &[u8]>, path: &[u8], shown: &str) -> Result<(), BundleError> {
    let bad = |reason: String| BundleError::BadPaxHeader {
        path: shown.to_owned(),
        reason,
    };
    let Some(records) = entry.pax_extensions().map_err(|e| bad(e.to_string()))? else {
        return Ok(());
    };
    let mut keys = HashSet::new();
    for record in records {
        // The tar crate splits records at newlines (POSIX lets a value hold one) and, reading the path,
        // skips a record it cannot parse and falls back to the header's name; GNU tar reads the record.
        let record = record.map_err(|e| bad(format!("unparsable record: {e}")))?;
        let key = record.key_bytes();
        if !keys.insert(key) {
            return Err(bad(format!(
                "key {:?} appears twice",
                String::from_utf8_lossy(key)
            )));
        }
        match key {
            // The tar crate prefers a GNU long name over a PAX path; GNU tar prefers the PAX path.
            b"path" if record.value_bytes() != path => {
                return Err(bad("its PAX path and GNU long name disagree".to_owned()));
            }
            // An unparsable size is silently ignored by the tar crate and refused by GNU tar.
            b"size"
                if record
                    .value()
                    .ok()
                    .and_then(|v| v.parse::<u64>().ok())
                    .is_none() =>
            {
                return Err(bad("its PAX size is not a decimal number".to_owned()));
            }
            k if k.starts_with(b"GNU.sparse.") => {
                return Err(BundleError::ForbiddenEntry {
                    path: shown.to_owned(),
                    kind: ForbiddenKind::Sparse,
                });
            }
            _ => {}
        }
    }
    Ok(())
}

fn slice(tar: &[u8], start: u64, size: u64) -> Option<&[u8]> {
    let start = usize::try_from(start).ok()?;
    let end = start.checked_add(usize::try_from(size).ok()?)?;
    tar.get(start..end)
}

/// A tar ends with two zero blocks; anything but zeros after them is data no reader agrees on.
fn check_end(tar: &[u8], end: u64) -> Result<(), BundleError> {
    let tail = usize::try_from(end)
        .ok()
        .and_then(|end| tar.get(end..))
        .ok_or(BundleError::BadArchiveEnd(
            "the last entry runs past the end",
        ))?;
    if tail.len() < 2 * BLOCK as usize {
        return Err(BundleError::BadArchiveEnd(
            "the two zero blocks that end an archive are missing",
        ));
    }
    if tail.iter().any(|b| *b != 0) {
        return Err(BundleError::BadArchiveEnd(
            "non-zero bytes follow the end of the archive",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::build_tar;

    fn p(s: &str) -> BundlePath {
        s.parse().unwrap()
    }

    #[test]
    fn walks_back_what_the_builder_wrote() {
        let long = format!("{}/x.yaml", "n".repeat(180));
        let input = vec![
            (p("b/c.yaml"), b"c".to_vec()),
            (p("a.yaml"), vec![]),
            (p(&long), vec![7; 1000]),
        ];
        let tar = build_tar(input.clone()).unwrap();
        let files = walk(&tar, &WalkLimits::default()).unwrap();
        let got: Vec<(BundlePath, Vec<u8>)> = files
            .into_iter()
            .map(|f| (f.path, f.data.to_vec()))
            .collect();
        let mut want = input;
        want.sort();
        assert_eq!(got, want);
    }

    #[test]
    fn limits_are_exact() {
        let tar = build_tar([(p("a"), vec![1; 100]), (p("b"), vec![2; 50])]).unwrap();
        let at = WalkLimits {
            max_entries: 2,
            max_entry_size: 100,
            max_total_size: 150,
        };
        assert_eq!(walk(&tar, &at).unwrap().len(), 2);

        let err = walk(
            &tar,
            &WalkLimits {
                max_entries: 1,
                ..at
            },
        )
        .unwrap_err();
        assert!(
            matches!(err, BundleError::TooManyEntries { limit: 1 }),
            "{err}"
        );
        let err = walk(
            &tar,
            &WalkLimits {
                max_entry_size: 99,
                ..at
            },
        )
        .unwrap_err();
        assert!(
            matches!(&err, BundleError::EntryTooLarge { path, size: 100, limit: 99 } if path == "a"),
            "{err}"
        );
        let err = walk(
            &tar,
            &WalkLimits {
                max_total_size: 149,
                ..at
            },
        )
        .unwrap_err();
        assert!(
            matches!(&err, BundleError::TotalTooLarge { path, limit: 149 } if path == "b"),
            "{err}"
        );
    }

    #[test]
    fn refuses_truncation_and_trailing_bytes() {
        let tar = build_tar([(p("a"), vec![1; 600])]).unwrap();
        let err = walk(&tar[..tar.len() - 1024], &WalkLimits::default()).unwrap_err();
        assert!(matches!(err, BundleError::BadArchiveEnd(_)), "{err}");
        let err = walk(&tar[..700], &WalkLimits::default()).unwrap_err();
        assert!(
            matches!(err, BundleError::TruncatedEntry { size: 600, .. }),
            "{err}"
        );
        let mut extra = tar.clone();
        extra.extend_from_slice(&[0; 512]);
        assert!(
            walk(&extra, &WalkLimits::default()).is_ok(),
            "zero padding is allowed"
        );
        extra.push(1);
        let err = walk(&extra, &WalkLimits::default()).unwrap_err();
        assert!(matches!(err, BundleError::BadArchiveEnd(_)), "{err}");
    }

    #[test]
    fn refuses_a_corrupt_header_checksum() {
        let mut tar = build_tar([(p("a"), vec![1; 10])]).unwrap();
        tar[0] = b'b';
        let err = walk(&tar, &WalkLimits::default()).unwrap_err();
        assert!(
            matches!(err, BundleError::MalformedTar { after: None, .. }),
            "{err}"
        );
    }
}
