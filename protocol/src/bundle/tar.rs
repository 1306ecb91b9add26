//! The canonical tar and its gzip form.
//!
//! Determinism is the point: the tar's digest is what the packager signs and what deduplicates releases, so
//! everything a build machine could leak into the bytes (time, owner, umask, readdir order, the tar tool's
//! version) is fixed here.

use std::io::Read;

use ::tar::{EntryType, Header};
use flate2::{Compress, Compression, FlushCompress, Status};

use super::error::BundleError;
use super::path::BundlePath;

/// The gzip level. Level 5, not `gzip`'s default 6: on rendered YAML it deflates in a little over half the
/// time of level 6 for about 2% more bytes (50 MB of manifests: 0.72 s and 11.02 MB against 1.31 s and
/// 10.77 MB with zlib-rs), and a site that cares about every byte fetches the chunk index instead.
const GZIP_LEVEL: u32 = 5;

/// The deflate block `gzip` cuts the tar into: 1 MiB, pigz's default is 128 KiB; larger blocks lose less
/// to block boundaries and a 50 MB bundle still gives every core dozens of blocks. Part of the output's
/// definition: changing it changes `bundle.tar.gz` bytes.
pub const GZIP_BLOCK: usize = 1 << 20;

/// Deflate's window: the most a block can refer back, so the dictionary each block is primed with.
const DEFLATE_WINDOW: usize = 32 << 10;

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

/// Compresses a tar into the published `bundle.tar.gz`, on all cores.
///
/// The gzip header carries no file name, mtime 0 and OS byte 255, and the level is fixed. The deflate
/// stream is cut as pigz cuts it: the tar is split into fixed [`GZIP_BLOCK`]-byte blocks, each block is
/// deflated alone with the 32 KiB before it as its preset dictionary and ends in a sync flush (the last one
/// in the final block), and the pieces are joined in order. Block boundaries depend only on the input's
/// length, never on how many threads ran, so the output depends only on the input and on the deflate
/// implementation compiled in (flate2's zlib-rs backend; switching backends would change the bytes, but
/// never what they decompress to). It is one ordinary gzip member: `gzip -d`, `tar xzf` and every
/// inflater read it, and it is within a few hundred bytes of single-stream deflate's size.
pub fn gzip(tar: &[u8]) -> Vec<u8> {
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    gzip_on(tar, threads)
}

/// [`gzip`] on `threads` threads: the same bytes for any count.
pub fn gzip_on(tar: &[u8], threads: usize) -> Vec<u8> {
    let blocks = tar.len().div_ceil(GZIP_BLOCK).max(1);
    let threads = threads.clamp(1, blocks);
    let mut pieces: Vec<(usize, Vec<u8>)> = if threads == 1 {
        (0..blocks).map(|i| (i, deflate_block(tar, i))).collect()
    } else {
        std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .map(|worker| {
                    scope.spawn(move || {
                        (worker..blocks)
                            .step_by(threads)
                            .map(|i| (i, deflate_block(tar, i)))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|w| match w.join() {
                    Ok(pieces) => pieces,
                    // Deflating into a Vec only panics on a bug; carry it to the caller.
                    Err(panic) => std::panic::resume_unwind(panic),
                })
                .collect()
        })
    };
    pieces.sort_unstable_by_key(|(i, _)| *i);
    let mut crc = flate2::Crc::new();
    crc.update(tar);
    let deflated: usize = pieces.iter().map(|(_, p)| p.len()).sum();
    let mut out = Vec::with_capacity(10 + deflated + 8);
    // ID1 ID2, CM deflate, no flags, mtime 0, XFL 0 (neither fastest nor best level), OS.
    out.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, GZIP_OS_UNKNOWN]);
    for (_, piece) in &pieces {
        out.extend_from_slice(piece);
    }
    out.extend_from_slice(&crc.sum().to_le_bytes());
    // ISIZE is the length modulo 2^32 (RFC 1952), so the truncation is the format's.
    out.extend_from_slice(&(tar.len() as u32).to_le_bytes());
    out
}

/// Raw deflate of block `i` of `tar`, primed with the window before it; ends byte-aligned in a sync
/// flush, or the final block.
fn deflate_block(tar: &[u8], i: usize) -> Vec<u8> {
    let start = i * GZIP_BLOCK;
    let end = (start + GZIP_BLOCK).min(tar.len());
    let input = &tar[start..end];
    let last = end == tar.len();
    let mut deflate = Compress::new(Compression::new(GZIP_LEVEL), false);
    if start > 0 {
        // A raw stream takes a dictionary before its first input; zlib-rs refuses only misuse.
        deflate
            .set_dictionary(&tar[start.saturating_sub(DEFLATE_WINDOW)..start])
            .expect("a dictionary before any input is accepted");
    }
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    let mut out = Vec::with_capacity(input.len() / 3 + 1024);
    loop {
        if out.capacity() - out.len() < 1024 {
            out.reserve(out.capacity());
        }
        let consumed = deflate.total_in() as usize;
        // Deflate into spare capacity has no failure of its own: errors are API misuse.
        let status = deflate
            .compress_vec(&input[consumed..], &mut out, flush)
            .expect("deflate into a Vec cannot fail");
        let done = match status {
            Status::StreamEnd => true,
            // A sync flush is complete once all input is taken and output space is left over.
            _ => !last && deflate.total_in() as usize == input.len() && out.len() < out.capacity(),
        };
        if done {
            return out;
        }
    }
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
    fn gzip_blocks_give_the_same_bytes_on_any_thread_count_and_one_gzip_member() {
        // Three and a half blocks of YAML-like text with repeats across block boundaries.
        let mut tar = Vec::new();
        let mut i = 0u64;
        while tar.len() < 3 * GZIP_BLOCK + GZIP_BLOCK / 2 {
            tar.extend_from_slice(
                format!("- name: item-{}\n  value: {}\n", i % 5000, i * 7919 % 1013).as_bytes(),
            );
            i += 1;
        }
        let gz = gzip_on(&tar, 1);
        for threads in [2, 3, 8] {
            assert_eq!(gzip_on(&tar, threads), gz, "{threads} threads");
        }
        assert_eq!(gzip(&tar), gz);
        // One member, read by a single-member decoder to the end.
        let mut single = Vec::new();
        flate2::read::GzDecoder::new(gz.as_slice())
            .read_to_end(&mut single)
            .unwrap();
        assert_eq!(single, tar);
        assert_eq!(gunzip_bounded(&gz, tar.len() as u64).unwrap(), tar);
        // The primed dictionaries keep it within 1% of one deflate stream.
        let mut whole = flate2::write::GzEncoder::new(Vec::new(), Compression::new(GZIP_LEVEL));
        std::io::Write::write_all(&mut whole, &tar).unwrap();
        let whole = whole.finish().unwrap();
        assert!(
            gz.len() * 100 <= whole.len() * 101,
            "{} vs {}",
            gz.len(),
            whole.len()
        );
        // Empty and exactly-one-block inputs.
        assert_eq!(gunzip_bounded(&gzip_on(&[], 2), 0).unwrap(), b"");
        let block = &tar[..GZIP_BLOCK];
        assert_eq!(
            gunzip_bounded(&gzip_on(block, 2), GZIP_BLOCK as u64).unwrap(),
            block
        );
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
