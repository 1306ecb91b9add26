//! Determinism of the canonical tar: input order does not matter, and the format is pinned by a golden file.

// Helpers outside #[test] functions unwrap too: in a test, a panic is the failure report.
#![allow(clippy::unwrap_used)]

use mast_protocol::bundle::{
    BundleError, BundlePath, ChunkIndex, ChunkParams, WalkLimits, build_tar, gzip, walk,
};
use mast_protocol::digest::Sha256Digest;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

const GOLDEN_TAR: &str = "tests/data/bundle/golden.tar";

/// The sha256 of [`golden_files`]' canonical tar. If this changes, every published bundle digest changes:
/// only update it together with a format version bump.
const GOLDEN_TAR_SHA256: &str = "fbbc6427bd6d0e9caa05007cf827cb143c25884f5fb20917fb2149c0736c3e5a";

/// The sha256 of the golden tar's gzip and chunk index. These depend on the deflate and zstd builds too: a
/// dependency update that changes them renames every published blob (correct, but no longer deduplicated
/// against earlier releases), so it should be a deliberate change.
const GOLDEN_GZ_SHA256: &str = "76968ecc06095afca420fa4f63905e3f0d6fb7d88fe201379e0a31645fcb28dd";
const GOLDEN_INDEX_SHA256: &str =
    "0154cd78fb0030439e8078880431ea6c084a4124d98fbddf7be598053b241de3";

/// A small bundle touching each header path: an empty file, a nested path, a non-ASCII name, and a path
/// longer than 100 bytes (GNU long name).
fn golden_files() -> Vec<(BundlePath, Vec<u8>)> {
    let long = format!(
        "deploy/{}/deployment.yaml",
        "very-long-directory-name".repeat(5)
    );
    [
        ("mast.toml", "prune = true\n".to_owned()),
        (
            "crds/widgets.example.com.yaml",
            "kind: CustomResourceDefinition\n".to_owned(),
        ),
        (
            "deploy/namespace.yaml",
            "kind: Namespace\nmetadata:\n  name: edge\n".to_owned(),
        ),
        (long.as_str(), "kind: Deployment\n".repeat(40)),
        ("deploy/café.yaml", "kind: ConfigMap\n".to_owned()),
        ("empty.yaml", String::new()),
    ]
    .into_iter()
    .map(|(p, d)| (p.parse().unwrap(), d.into_bytes()))
    .collect()
}

#[test]
fn golden_bundle_tar_is_pinned() {
    let tar = build_tar(golden_files()).unwrap();
    let digest = Sha256Digest::of(&tar);
    // Regenerate with MAST_BLESS=1 after a deliberate format change.
    if std::env::var_os("MAST_BLESS").is_some() {
        std::fs::write(GOLDEN_TAR, &tar).unwrap();
        eprintln!("golden tar sha256: {digest}");
    }
    let golden = std::fs::read(GOLDEN_TAR).unwrap();
    assert_eq!(tar.len(), golden.len(), "golden tar length changed");
    if let Some(at) = tar.iter().zip(&golden).position(|(a, b)| a != b) {
        panic!(
            "canonical tar differs from {GOLDEN_TAR} first at byte {at} (block {})",
            at / 512
        );
    }
    assert_eq!(digest.to_hex(), GOLDEN_TAR_SHA256);
    let gz = Sha256Digest::of(&gzip(&tar));
    let (index, _) = ChunkIndex::build(&tar, &ChunkParams::default()).unwrap();
    let index = Sha256Digest::of(&index.to_bytes());
    eprintln!("gzip sha256: {gz}, chunk index sha256: {index}");
    assert_eq!(gz.to_hex(), GOLDEN_GZ_SHA256, "bundle.tar.gz bytes changed");
    assert_eq!(
        index.to_hex(),
        GOLDEN_INDEX_SHA256,
        "chunk index bytes changed"
    );
    // The pinned bytes also read back as the same files.
    let files: Vec<(BundlePath, Vec<u8>)> = walk(&golden, &WalkLimits::default())
        .unwrap()
        .into_iter()
        .map(|f| (f.path, f.data.to_vec()))
        .collect();
    let mut want = golden_files();
    want.sort();
    assert_eq!(files, want);
}

fn arb_files() -> impl Strategy<Value = Vec<(BundlePath, Vec<u8>)>> {
    // Segments never start with '.', so none is `.` or `..`.
    let path = "[a-z]{1,6}(/[a-z0-9_-][a-z0-9._-]{0,11}){0,3}\\.yaml";
    prop::collection::btree_map(path, prop::collection::vec(any::<u8>(), 0..2000), 1..24).prop_map(
        |m| {
            m.into_iter()
                .map(|(p, d)| (p.parse().unwrap(), d))
                .collect()
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        ..ProptestConfig::default()
    })]

    /// The same files in any order give the same tar, gzip and chunk index bytes.
    #[test]
    fn input_order_does_not_matter(files in arb_files(), seed in any::<u64>()) {
        // Paths are distinct, but a rare draw holds both `a/b.yaml` and `a/b.yaml/c.yaml`, which must be
        // refused as a conflict in any order.
        let sorted_tar = match build_tar(files.clone()) {
            Ok(tar) => tar,
            Err(BundleError::PathConflict { .. }) => return Ok(()),
            Err(e) => return Err(TestCaseError::fail(e.to_string())),
        };
        let mut shuffled = files.clone();
        let mut x = seed | 1;
        for i in (1..shuffled.len()).rev() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            shuffled.swap(i, (x % (i as u64 + 1)) as usize);
        }
        let shuffled_tar = build_tar(shuffled).unwrap();
        prop_assert_eq!(&sorted_tar, &shuffled_tar);
        prop_assert_eq!(gzip(&sorted_tar), gzip(&shuffled_tar));
        let a = ChunkIndex::build(&sorted_tar, &ChunkParams::default()).unwrap().0;
        let b = ChunkIndex::build(&shuffled_tar, &ChunkParams::default()).unwrap().0;
        prop_assert_eq!(a.to_bytes(), b.to_bytes());

        // And the walker reads back exactly the input, sorted.
        let back: Vec<(BundlePath, Vec<u8>)> = walk(&sorted_tar, &WalkLimits::default())
            .unwrap()
            .into_iter()
            .map(|f| (f.path, f.data.to_vec()))
            .collect();
        let mut want = files;
        want.sort();
        prop_assert_eq!(back, want);
    }
}

/// A bundle of several gzip blocks reads back through GNU gzip, byte for byte, as one gzip member.
#[test]
fn multi_block_gzip_reads_with_gnu_gzip() {
    use std::io::Write;
    let files: Vec<(BundlePath, Vec<u8>)> = (0..60)
        .map(|i| {
            let text = format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c{i}\ndata:\n")
                + &format!("  k{i}: \"{}\"\n", "edge site cell tower ".repeat(5)).repeat(600);
            (format!("c/{i:02}.yaml").parse().unwrap(), text.into_bytes())
        })
        .collect();
    let tar = build_tar(files).unwrap();
    assert!(
        tar.len() > 3 * mast_protocol::bundle::GZIP_BLOCK,
        "{}",
        tar.len()
    );
    let gz = gzip(&tar);
    let mut child = std::process::Command::new("gzip")
        .args(["-d", "-c"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || stdin.write_all(&gz).unwrap());
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    assert!(out.status.success());
    assert!(
        out.stdout == tar,
        "gzip -d gave {} bytes, want {}",
        out.stdout.len(),
        tar.len()
    );
}
