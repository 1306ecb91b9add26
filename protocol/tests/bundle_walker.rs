//! The tar walker against hostile archives, written header by header (the `tar` crate's builder refuses to
//! write most of them), and against real GNU tar output in its three formats.

// Helpers outside #[test] functions unwrap too: in a test, a panic is the failure report.
#![allow(clippy::unwrap_used)]

use mast_protocol::bundle::{
    BundleError, BundlePath, ForbiddenKind, PathFault, WalkLimits, build_tar, gunzip_bounded, gzip,
    walk,
};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

/// One 512-byte ustar header. `name` must fit the 100-byte name field.
fn header(name: &[u8], typeflag: u8, size: u64, link: &[u8]) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name);
    h[100..108].copy_from_slice(b"0000644\0");
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    h[136..148].copy_from_slice(b"00000000000\0");
    h[156] = typeflag;
    h[157..157 + link.len()].copy_from_slice(link);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    // The checksum is computed with its own field read as spaces.
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    h
}

/// A header and its data, padded to whole blocks.
fn entry(name: &[u8], typeflag: u8, data: &[u8], link: &[u8]) -> Vec<u8> {
    let mut out = header(name, typeflag, data.len() as u64, link).to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().next_multiple_of(512), 0);
    out
}

fn file(name: &[u8], data: &[u8]) -> Vec<u8> {
    entry(name, b'0', data, b"")
}

/// A PAX extended header (`x`) carrying `records`, for the entry that follows it.
fn pax(records: &[(&str, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (key, value) in records {
        // "<len> <key>=<value>\n", where <len> counts itself.
        let rest = key.len() + value.len() + 3;
        let mut len = rest + 1;
        while len != rest + len.to_string().len() {
            len = rest + len.to_string().len();
        }
        body.extend_from_slice(format!("{len} {key}=").as_bytes());
        body.extend_from_slice(value);
        body.push(b'\n');
    }
    entry(b"PaxHeaders/x", b'x', &body, b"")
}

/// A GNU long-name entry (`L`) naming the entry that follows it.
fn gnu_long_name(name: &[u8]) -> Vec<u8> {
    let mut data = name.to_vec();
    data.push(0);
    entry(b"././@LongLink", b'L', &data, b"")
}

fn archive(parts: &[Vec<u8>]) -> Vec<u8> {
    let mut out = parts.concat();
    out.extend_from_slice(&[0; 1024]);
    out
}

fn walk_default(tar: &[u8]) -> Result<Vec<(String, Vec<u8>)>, BundleError> {
    walk(tar, &WalkLimits::default()).map(|files| {
        files
            .into_iter()
            .map(|f| (f.path.to_string(), f.data.to_vec()))
            .collect()
    })
}

fn path_fault(result: Result<Vec<(String, Vec<u8>)>, BundleError>) -> PathFault {
    match result {
        Err(BundleError::InvalidPath(e)) => e.fault,
        other => panic!("expected an invalid path, got {other:?}"),
    }
}

#[test]
fn the_raw_writer_makes_archives_the_walker_accepts() {
    let tar = archive(&[
        entry(b"dir/", b'5', b"", b""),
        file(b"dir/a.yaml", b"kind: A\n"),
        entry(b"old-style", b'\0', b"v7", b""),
    ]);
    let got = walk_default(&tar).unwrap();
    assert_eq!(
        got,
        [
            ("dir/a.yaml".to_owned(), b"kind: A\n".to_vec()),
            ("old-style".to_owned(), b"v7".to_vec())
        ]
    );
}

#[test]
fn each_forbidden_entry_kind_is_refused_by_name() {
    let cases: [(Vec<u8>, ForbiddenKind); 9] = [
        (
            entry(b"link", b'2', b"", b"../../etc/shadow"),
            ForbiddenKind::Symlink {
                target: "../../etc/shadow".into(),
            },
        ),
        (
            entry(b"link", b'1', b"", b"a.yaml"),
            ForbiddenKind::HardLink {
                target: "a.yaml".into(),
            },
        ),
        (entry(b"link", b'3', b"", b""), ForbiddenKind::CharDevice),
        (entry(b"link", b'4', b"", b""), ForbiddenKind::BlockDevice),
        (entry(b"link", b'6', b"", b""), ForbiddenKind::Fifo),
        (entry(b"link", b'7', b"", b""), ForbiddenKind::Unknown(b'7')),
        (entry(b"link", b'V', b"", b""), ForbiddenKind::Unknown(b'V')),
        (
            entry(b"link", b'g', b"20 comment=hello\n", b""),
            ForbiddenKind::PaxGlobalHeader,
        ),
        (
            [
                pax(&[("GNU.sparse.major", b"1"), ("GNU.sparse.minor", b"0")]),
                file(b"link", b""),
            ]
            .concat(),
            ForbiddenKind::Sparse,
        ),
    ];
    for (bad, kind) in cases {
        // A good file before it, so the refusal is not an accident of position.
        let tar = archive(&[file(b"a.yaml", b"ok"), bad]);
        match walk_default(&tar) {
            Err(BundleError::ForbiddenEntry { path, kind: got }) => {
                assert_eq!(path, "link");
                assert_eq!(got, kind);
            }
            other => panic!("{kind}: expected a refusal, got {other:?}"),
        }
    }
}

#[test]
fn a_pax_path_is_checked_like_any_path() {
    let good = format!("deploy/{}/svc.yaml", "d".repeat(200));
    let tar = archive(&[pax(&[("path", good.as_bytes())]), file(b"short-name", b"x")]);
    assert_eq!(walk_default(&tar).unwrap(), [(good.clone(), b"x".to_vec())]);

    let tar = archive(&[
        pax(&[("path", b"../../etc/cron.d/x")]),
        file(b"innocent.yaml", b"x"),
    ]);
    assert_eq!(path_fault(walk_default(&tar)), PathFault::DotSegment);

    let tar = archive(&[
        pax(&[("path", b"/etc/passwd")]),
        file(b"innocent.yaml", b"x"),
    ]);
    assert_eq!(path_fault(walk_default(&tar)), PathFault::Absolute);
}

#[test]
fn pax_headers_two_readers_could_disagree_on_are_refused() {
    let disagree = archive(&[
        gnu_long_name(b"one.yaml"),
        pax(&[("path", b"two.yaml")]),
        file(b"x", b""),
    ]);
    let duplicate = archive(&[
        pax(&[("path", b"a.yaml"), ("path", b"b.yaml")]),
        file(b"x", b""),
    ]);
    let bad_size = archive(&[pax(&[("size", b"12x")]), file(b"x", b"")]);
    for (tar, needle) in [
        (disagree, "disagree"),
        (duplicate, "twice"),
        (bad_size, "size"),
    ] {
        match walk_default(&tar) {
            Err(BundleError::BadPaxHeader { reason, .. }) => {
                assert!(reason.contains(needle), "{reason}")
            }
            other => panic!("{needle}: expected a PAX refusal, got {other:?}"),
        }
    }
    // A PAX size overrides the header's, as POSIX says; the data read is the PAX size.
    let mut body = file(b"x", b"");
    body.extend_from_slice(&[b'y'; 512]);
    let tar = archive(&[pax(&[("size", b"3")]), body]);
    assert_eq!(
        walk_default(&tar).unwrap(),
        [("x".to_owned(), b"yyy".to_vec())]
    );
}

/// POSIX PAX records are length-prefixed and may hold a newline; the tar crate splits records at newlines,
/// fails to parse such a record and silently falls back to the header's name. GNU tar would extract the
/// PAX path. The walker refuses the unparsable record instead of reading a name other tools do not.
#[test]
fn a_pax_record_the_tar_crate_cannot_parse_is_refused_not_skipped() {
    let tar = archive(&[pax(&[("path", b"../x\ny")]), file(b"decoy", b"x")]);
    match walk_default(&tar) {
        Err(BundleError::BadPaxHeader { path, reason }) => {
            assert_eq!(path, "decoy");
            assert!(reason.contains("unparsable"), "{reason}");
        }
        other => panic!("expected the PAX header refused, got {other:?}"),
    }
}

#[test]
fn duplicates_and_conflicts_are_refused() {
    let tar = archive(&[
        file(b"a.yaml", b"1"),
        file(b"b.yaml", b"2"),
        file(b"a.yaml", b"3"),
    ]);
    match walk_default(&tar) {
        Err(BundleError::DuplicatePath(p)) => assert_eq!(p.as_str(), "a.yaml"),
        other => panic!("{other:?}"),
    }
    let tar = archive(&[file(b"a/b/c", b""), file(b"a", b"")]);
    assert!(matches!(
        walk_default(&tar),
        Err(BundleError::PathConflict { .. })
    ));
}

#[test]
fn directories_are_skipped_but_their_paths_checked() {
    let tar = archive(&[entry(b"../", b'5', b"", b""), file(b"a", b"")]);
    assert_eq!(path_fault(walk_default(&tar)), PathFault::DotSegment);
    // `tar cf x.tar -C dir .` writes `./` entries; bundles are built without them and they are refused.
    let tar = archive(&[entry(b"./", b'5', b"", b""), file(b"./a", b"")]);
    assert_eq!(path_fault(walk_default(&tar)), PathFault::DotSegment);
}

/// How a hostile path reaches the walker.
#[derive(Debug, Clone, Copy)]
enum Carrier {
    HeaderName,
    PaxPath,
    GnuLongName,
}

fn carry(path: &[u8], carrier: Carrier) -> Vec<u8> {
    match carrier {
        // A NUL ends the name field, so the header can only carry NUL-free names of up to 100 bytes.
        Carrier::HeaderName if path.len() <= 100 && !path.contains(&0) => {
            archive(&[file(path, b"x")])
        }
        Carrier::HeaderName | Carrier::PaxPath => {
            archive(&[pax(&[("path", path)]), file(b"decoy", b"x")])
        }
        Carrier::GnuLongName => archive(&[gnu_long_name(path), file(b"decoy", b"x")]),
    }
}

fn segment() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_.-]{1,20}"
}

/// Paths that must be refused, each with the fault it must be refused for.
fn hostile_path() -> impl Strategy<Value = (Vec<u8>, PathFault)> {
    let segs = || prop::collection::vec(segment(), 0..5);
    prop_oneof![
        (segs(), segs()).prop_map(|(a, b)| {
            let mut all = a;
            all.push("..".into());
            all.extend(b);
            (all.join("/").into_bytes(), PathFault::DotSegment)
        }),
        prop::collection::vec(segment(), 1..5).prop_map(|s| (
            format!("/{}", s.join("/")).into_bytes(),
            PathFault::Absolute
        )),
        (segment(), segment())
            .prop_map(|(a, b)| (format!("{a}\\{b}").into_bytes(), PathFault::Backslash)),
        (segment(), segment())
            .prop_map(|(a, b)| (format!("..\\{a}\\{b}").into_bytes(), PathFault::Backslash)),
        (segment(), segment(), 1u8..0x20).prop_map(|(a, b, c)| (
            [a.as_bytes(), &[c], b.as_bytes()].concat(),
            PathFault::ControlChar(char::from(c))
        )),
        (segment(), segment()).prop_map(|(a, b)| (
            [a.as_bytes(), b"\0", b.as_bytes()].concat(),
            PathFault::ControlChar('\0')
        )),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        ..ProptestConfig::default()
    })]

    /// Every hostile path is refused, for the right reason, whichever header carries it.
    #[test]
    fn hostile_paths_are_refused(
        (path, fault) in hostile_path(),
        carrier in prop_oneof![Just(Carrier::HeaderName), Just(Carrier::PaxPath), Just(Carrier::GnuLongName)],
    ) {
        let tar = carry(&path, carrier);
        let in_pax = !matches!(carrier, Carrier::GnuLongName)
            && (path.len() > 100 || path.contains(&0) || matches!(carrier, Carrier::PaxPath));
        match walk(&tar, &WalkLimits::default()) {
            // The tar crate splits PAX records at newlines, so it cannot read this record at all; the walker
            // refuses the header rather than fall back to the decoy name (see the test below).
            Err(BundleError::BadPaxHeader { .. }) if in_pax && path.contains(&b'\n') => {}
            Err(BundleError::InvalidPath(e)) => {
                prop_assert_eq!(e.fault, fault);
                prop_assert_eq!(e.path, String::from_utf8_lossy(&path).into_owned());
            }
            other => prop_assert!(false, "{:?} via {:?}: {:?}", String::from_utf8_lossy(&path), carrier, other),
        }
    }

    /// Whatever bytes it is given, the walker returns or refuses; it does not panic.
    #[test]
    fn arbitrary_bytes_do_not_panic(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        let _ = walk(&bytes, &WalkLimits::default());
    }
}

/// GNU tar 1.34's three formats (made with --sort=name --owner=0 --group=0 --mtime=@0), including long names
/// (GNU `L` entries, PAX `path` records, a ustar prefix) and directory entries.
#[test]
fn reads_real_gnu_tar_output() {
    let long = format!(
        "deploy/{}/nested/{}-ü.yaml",
        "long-directory-name-".repeat(6),
        "x".repeat(60)
    );
    let expected_gnu_pax = vec![
        (
            "deploy/a.yaml".to_owned(),
            b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n".to_vec(),
        ),
        (long, b"kind: Namespace\n".to_vec()),
        (
            "crds/crd.yaml".to_owned(),
            b"apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\n".to_vec(),
        ),
    ];
    for name in ["gnu", "pax"] {
        let tar = std::fs::read(format!("tests/data/bundle/gnu-tar-1.34-{name}.tar")).unwrap();
        assert_eq!(walk_default(&tar).unwrap(), expected_gnu_pax, "{name}");
    }
    let tar = std::fs::read("tests/data/bundle/gnu-tar-1.34-ustar.tar").unwrap();
    let prefixed = format!("deploy/{}/{}/svc.yaml", "m".repeat(60), "n".repeat(60));
    assert_eq!(
        walk_default(&tar).unwrap(),
        [
            (prefixed, b"kind: Service\n".to_vec()),
            ("deploy/pod.yaml".to_owned(), b"kind: Pod\n".to_vec())
        ]
    );
}

#[test]
fn caps_on_entries_sizes_and_gzip() {
    let files: Vec<(BundlePath, Vec<u8>)> = (0..10)
        .map(|i| (format!("f{i}").parse().unwrap(), vec![b'x'; 1000]))
        .collect();
    let tar = build_tar(files).unwrap();
    let fits = WalkLimits {
        max_entries: 10,
        max_entry_size: 1000,
        max_total_size: 10_000,
    };
    assert_eq!(walk(&tar, &fits).unwrap().len(), 10);
    assert!(matches!(
        walk(
            &tar,
            &WalkLimits {
                max_entries: 9,
                ..fits
            }
        ),
        Err(BundleError::TooManyEntries { limit: 9 })
    ));
    assert!(matches!(
        walk(
            &tar,
            &WalkLimits {
                max_entry_size: 999,
                ..fits
            }
        ),
        Err(BundleError::EntryTooLarge {
            size: 1000,
            limit: 999,
            ..
        })
    ));
    assert!(matches!(
        walk(
            &tar,
            &WalkLimits {
                max_total_size: 9_999,
                ..fits
            }
        ),
        Err(BundleError::TotalTooLarge { limit: 9_999, .. })
    ));
    // Directory entries count towards the entry cap: they cost parsing too.
    let dirs: Vec<Vec<u8>> = (0..20)
        .map(|i| entry(format!("d{i}/").as_bytes(), b'5', b"", b""))
        .collect();
    assert!(matches!(
        walk(
            &archive(&dirs),
            &WalkLimits {
                max_entries: 19,
                ..fits
            }
        ),
        Err(BundleError::TooManyEntries { limit: 19 })
    ));
    // A header claiming a size beyond the data left is refused, not trusted.
    let lie = archive(&[header(b"big", b'0', 1 << 32, b"").to_vec()]);
    assert!(matches!(
        walk(&lie, &WalkLimits { max_entry_size: 1 << 33, max_total_size: 1 << 33, ..fits }),
        Err(BundleError::TruncatedEntry { size, .. }) if size == 1 << 32
    ));

    // A gzip bomb: 64 MiB of one file in a tar, gzipped to about 64 KB, stops at the cap.
    let bomb_tar =
        build_tar([("bomb".parse::<BundlePath>().unwrap(), vec![0u8; 64 << 20])]).unwrap();
    let bomb = gzip(&bomb_tar);
    assert!(bomb.len() < 128 << 10, "{}", bomb.len());
    assert!(matches!(
        gunzip_bounded(&bomb, 16 << 20),
        Err(BundleError::GzipTooLarge { limit }) if limit == 16 << 20
    ));
}
