//! The canonical tar and its gzip form.
//!
//! Determinism is the point: the tar's digest is what the packager signs and what deduplicates releases, so
//! everything a build machine could leak into the bytes (time, owner, umask, readdir order, the tar tool's
//! version) is fixed here.

use std::io::{Read, Write};

use ::tar::{EntryType, Header};
use flate2::{Compression, GzBuilder};

use super::error::BundleError;
use super::path::BundlePath;

/// The gzip level: `gzip`'s own default, which is also what `tar czf` uses.
const GZIP_LEVEL: u32 = 6;

/// The gzip header's OS byte: 255, "unknown", so the bytes do not say which OS packed them.
const GZIP_OS_UNKNOWN: u8 = 255;

/// Builds the canonical tar of `files`.
///
/// Entries are sorted by path bytes; each is a regular file with mode 0644, uid and gid 0, empty user and
/// group names and mtime 0, in a GNU header (a path over 100 bytes is carried by a GNU long-name entry, as
/// GNU tar does). The archive ends with two zero blocks and no further padding. The order of `files` does
/// not matter; two files with one path, or a file whose path another file uses as a directory, are errors.
pub fn build_tar<D: AsRef<[u8]>>(
    files: impl IntoIterator<Item = (BundlePath, D)>,
) -> Result<Vec<u8>, BundleError> {
    let mut files: Vec<(BundlePath, D)> = files.into_iter().collect();
    files.sort_by(|a, b| a.0.cmp(&b.0));
    let paths: Vec<&BundlePath> = files.iter().map(|(path, _)| path).collect();
    check_sorted_paths(&paths)?;

    let capacity = files.iter().fold(1024, |acc, (path, data)| {
        let long_name = if path.as_str().len() > 100 {
            512 + path.as_str().len() + 512
        } else {
            0
        };
        acc + 512 + long_name + data.as_ref().len().next_multiple_of(512)
    });
    let mut builder = ::tar::Builder::new(Vec::with_capacity(capacity));
    for (path, data) in &files {
        let data = data.as_ref();
        let mut header = Header::new_gnu();
        header.set_entry_type(EntryType::Regular);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_size(data.len() as u64);
        builder
            .append_data(&mut header, path.as_str(), data)
            .map_err(|source| BundleError::TarBuild {
                path: path.clone(),
                source,
            })?;
    }
    // Finishing writes two zero blocks into a Vec, which cannot fail.
    Ok(builder
        .into_inner()
        .expect("finishing a tar in a Vec cannot fail"))
}

/// Compresses a tar into the published `bundle.tar.gz`.
///
/// The gzip header carries no file name, mtime 0 and OS byte 255, and the level is fixed, so the output
/// depends only on the input and on the deflate implementation compiled in (flate2's zlib-rs backend;
/// switching backends would change the bytes, but never what they decompress to).
pub fn gzip(tar: &[u8]) -> Vec<u8> {
    let out = Vec::with_capacity(tar.len() / 4 + 64);
    let mut encoder = GzBuilder::new()
        .mtime(0)
        .operating_system(GZIP_OS_UNKNOWN)
        .write(out, Compression::new(GZIP_LEVEL));
    // Writing into a Vec cannot fail, and deflate has no failure of its own on the write side.
    encoder.write_all(tar).expect("gzip into a Vec cannot fail");
    encoder.finish().expect("gzip into a Vec cannot fail")
}

/// Decompresses a gzip stream (every member, as `gzip -d` does), refusing to produce more than `max_out`
/// bytes.
///
/// Memory grows with the output and never past `max_out`, so a stream that inflates a thousandfold stops
/// at the bound instead of exhausting the agent.
pub fn gunzip_bounded(gz: &[u8], max_out: u64) -> Result<Vec<u8>, BundleError> {
    if gz.is_empty() {
        return Err(BundleError::Gzip(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "empty input",
        )));
    }
    let mut decoder = flate2::bufread::MultiGzDecoder::new(gz);
    let mut out: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match decoder.read(&mut buf) {
            Ok(0) => return Ok(out),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(BundleError::Gzip(e)),
        };
        let new_len = out.len() as u64 + n as u64;
        if new_len > max_out {
            return Err(BundleError::GzipTooLarge { limit: max_out });
        }
        if out.capacity() - out.len() < n {
            // Double as Vec would, but never reserve past the bound: that is the allocation the cap promises.
            // `new_len <= max_out` here, so the conversion back to usize cannot truncate.
            let target = (out.capacity() as u64 * 2).clamp(new_len, max_out) as usize;
            out.reserve_exact(target - out.len());
        }
        out.extend_from_slice(&buf[..n]);
    }
}

/// Refuses duplicate paths and file/directory conflicts among `sorted` (sorted by bytes).
///
/// A file `a` and a file `a/b` cannot both be unpacked, and which one a tool keeps differs between tools,
/// so neither the builder nor the walker lets such a pair through.
pub(super) fn check_sorted_paths(sorted: &[&BundlePath]) -> Result<(), BundleError> {
    let mut prefix = String::new();
    for (i, path) in sorted.iter().enumerate() {
        if sorted.get(i + 1) == Some(path) {
            return Err(BundleError::DuplicatePath((*path).clone()));
        }
        // Paths beneath `path` all start with `path/`; in byte order they form one run, though not
        // necessarily right after `path` (`a-b` sorts between `a` and `a/b`), so search for it.
        prefix.clear();
        prefix.push_str(path.as_str());
        prefix.push('/');
        let at = sorted.partition_point(|p| p.as_str() < prefix.as_str());
        if let Some(nested) = sorted.get(at).filter(|p| path.is_ancestor_of(p)) {
            return Err(BundleError::PathConflict {
                file: (*path).clone(),
                nested: (*nested).clone(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> BundlePath {
        s.parse().unwrap()
    }

    #[test]
    fn headers_are_pinned_field_by_field() {
        let tar = build_tar([
            (p("b.yaml"), b"bee".to_vec()),
            (p("a.yaml"), b"ay".to_vec()),
        ])
        .unwrap();
        // Two entries of one header and one data block each, then two zero blocks.
        assert_eq!(tar.len(), 512 * 6);
        assert!(tar[2048..].iter().all(|b| *b == 0));
        let mut archive = ::tar::Archive::new(tar.as_slice());
        let mut names = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let h = entry.header();
            assert_eq!(h.entry_type(), EntryType::Regular);
            assert_eq!(h.mode().unwrap(), 0o644);
            assert_eq!(
                (h.uid().unwrap(), h.gid().unwrap(), h.mtime().unwrap()),
                (0, 0, 0)
            );
            assert_eq!(h.username_bytes(), Some(&b""[..]));
            assert_eq!(h.groupname_bytes(), Some(&b""[..]));
            assert!(h.as_gnu().is_some());
            names.push(String::from_utf8(entry.path_bytes().into_owned()).unwrap());
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            assert!(data == b"ay" || data == b"bee");
        }
        assert_eq!(names, ["a.yaml", "b.yaml"]);
    }

    #[test]
    fn long_paths_use_a_gnu_long_name_entry() {
        let long = format!("{}/{}.yaml", "d".repeat(150), "f".repeat(200));
        let tar = build_tar([(p(&long), b"x".to_vec())]).unwrap();
        // The `././@LongLink` entry: header, 356 name bytes + NUL in one block; then the file's header.
        assert_eq!(&tar[..13], b"././@LongLink");
        assert_eq!(tar[156], b'L');
        let mut archive = ::tar::Archive::new(tar.as_slice());
        let entry = archive.entries().unwrap().next().unwrap().unwrap();
        assert_eq!(&*entry.path_bytes(), long.as_bytes());
        assert_eq!(build_tar([(p(&long), b"x".to_vec())]).unwrap(), tar);
    }

    #[test]
    fn empty_bundle_is_two_zero_blocks() {
        let tar = build_tar(Vec::<(BundlePath, Vec<u8>)>::new()).unwrap();
        assert_eq!(tar, vec![0u8; 1024]);
    }

    #[test]
    fn duplicates_and_conflicts_are_refused_by_name() {
        let err = build_tar([(p("a"), vec![1]), (p("b"), vec![]), (p("a"), vec![2])]).unwrap_err();
        assert!(
            matches!(&err, BundleError::DuplicatePath(d) if d.as_str() == "a"),
            "{err}"
        );
        assert!(err.to_string().contains("duplicate path a"), "{err}");

        let err =
            build_tar([(p("a"), vec![]), (p("a-b"), vec![]), (p("a/b/c"), vec![])]).unwrap_err();
        assert!(
            matches!(&err, BundleError::PathConflict { file, nested } if file.as_str() == "a" && nested.as_str() == "a/b/c"),
            "{err}"
        );
        assert!(build_tar([(p("a"), vec![]), (p("a-b/c"), vec![]), (p("ab/c"), vec![])]).is_ok());
    }

    #[test]
    fn gzip_is_deterministic_and_round_trips() {
        let tar = build_tar([(p("x"), vec![b'y'; 10_000])]).unwrap();
        let gz = gzip(&tar);
        assert_eq!(gz, gzip(&tar));
        // Magic, deflate, no flags (so no name), mtime 0, OS 255.
        assert_eq!(&gz[..4], &[0x1f, 0x8b, 8, 0]);
        assert_eq!(&gz[4..8], &[0, 0, 0, 0]);
        assert_eq!(gz[9], 255);
        assert_eq!(gunzip_bounded(&gz, tar.len() as u64).unwrap(), tar);
    }

    #[test]
    fn gunzip_stops_at_the_bound_without_allocating_past_it() {
        let bomb = gzip(&vec![0u8; 8 << 20]);
        assert!(bomb.len() < 64 << 10);
        let err = gunzip_bounded(&bomb, 1 << 20).unwrap_err();
        assert!(
            matches!(err, BundleError::GzipTooLarge { limit } if limit == 1 << 20),
            "{err}"
        );
        // Exactly at the bound is allowed.
        assert_eq!(gunzip_bounded(&bomb, 8 << 20).unwrap().len(), 8 << 20);
    }

    #[test]
    fn gunzip_reads_every_member_and_refuses_garbage() {
        let mut two = gzip(b"one ");
        two.extend_from_slice(&gzip(b"two"));
        assert_eq!(gunzip_bounded(&two, 100).unwrap(), b"one two");
        let mut trailing = gzip(b"one");
        trailing.extend_from_slice(b"garbage!");
        assert!(matches!(
            gunzip_bounded(&trailing, 100),
            Err(BundleError::Gzip(_))
        ));
        assert!(matches!(
            gunzip_bounded(b"", 100),
            Err(BundleError::Gzip(_))
        ));
        let mut corrupt = gzip(b"hello hello hello");
        let mid = corrupt.len() / 2;
        corrupt[mid] ^= 0xff;
        assert!(matches!(
            gunzip_bounded(&corrupt, 100),
            Err(BundleError::Gzip(_))
        ));
    }
}
