//! Chunk index properties: round trip through the published bytes, the delta property the design depends
//! on, and the bounds on decompression.

// Helpers outside #[test] functions unwrap too: in a test, a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, HashSet};

use mast_protocol::bundle::{
    BundleError, BundlePath, Chunk, ChunkIndex, ChunkParams, IndexLimits, Reassembler, build_tar,
    verify_chunk,
};
use mast_protocol::digest::Sha256Digest;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

/// xorshift64: reproducible content without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// A rendered-manifest-like Deployment, a few KB, with enough per-object variety (names, digests, env
/// values) that it compresses like real YAML rather than like a repeated template.
fn manifest(rng: &mut Rng, i: usize) -> String {
    let mut env = String::new();
    for k in 0..(8 + rng.next() % 24) {
        env.push_str(&format!(
            "            - name: SETTING_{k}_{:X}\n              value: \"{:016x}\"\n",
            rng.next() % 4096,
            rng.next()
        ));
    }
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: svc-{i}\n  namespace: site-{ns}\n  labels:\n    \
         app.kubernetes.io/name: svc-{i}\n    app.kubernetes.io/part-of: mast-edge\nspec:\n  replicas: {r}\n  \
         selector:\n    matchLabels:\n      app.kubernetes.io/name: svc-{i}\n  template:\n    metadata:\n      \
         labels:\n        app.kubernetes.io/name: svc-{i}\n    spec:\n      containers:\n        - name: app\n          \
         image: registry.example.com/edge/svc-{i}@sha256:{d:016x}{d:016x}\n          resources:\n            \
         requests: {{cpu: {c}m, memory: {m}Mi}}\n          env:\n{env}",
        ns = rng.next() % 40,
        r = 1 + rng.next() % 5,
        d = rng.next(),
        c = 50 + rng.next() % 900,
        m = 64 + rng.next() % 960,
    )
}

/// About `target` bytes of manifests, as (path, content) pairs.
fn yaml_bundle(target: usize, seed: u64) -> Vec<(BundlePath, Vec<u8>)> {
    let mut rng = Rng(seed);
    let mut files = Vec::new();
    let mut total = 0;
    let mut i = 0;
    while total < target {
        let body = manifest(&mut rng, i).into_bytes();
        total += body.len();
        let path = format!("apps/ns-{:02}/svc-{i:05}.yaml", i % 37)
            .parse()
            .unwrap();
        files.push((path, body));
        i += 1;
    }
    files
}

fn distinct(index: &ChunkIndex) -> HashSet<Sha256Digest> {
    index.chunks().iter().map(|c| c.sha256()).collect()
}

/// What a site holding `old` must fetch for `new`: (chunk count, compressed bytes).
fn delta(old: &ChunkIndex, new: &ChunkIndex) -> (usize, u64) {
    let held = distinct(old);
    let missing: Vec<_> = new.missing(|d| held.contains(d)).collect();
    (missing.len(), missing.iter().map(|c| c.length()).sum())
}

fn index_of(files: &[(BundlePath, Vec<u8>)]) -> ChunkIndex {
    let tar = build_tar(files.iter().map(|(p, d)| (p.clone(), d.as_slice()))).unwrap();
    ChunkIndex::build(&tar, &ChunkParams::default()).unwrap().0
}

/// Rebuilds the tar from blobs the way an agent would: index bytes → parse → fetch → feed → finish.
fn reassemble(index_bytes: &[u8], blobs: &HashMap<Sha256Digest, Vec<u8>>) -> Vec<u8> {
    let index = ChunkIndex::from_slice(index_bytes, &IndexLimits::default()).unwrap();
    let mut r = Reassembler::new(&index);
    let mut out = Vec::new();
    while let Some(c) = r.next_chunk() {
        out.extend(r.feed(&blobs[&c.sha256()]).unwrap());
    }
    r.finish().unwrap();
    out
}

fn arb_params() -> impl Strategy<Value = ChunkParams> {
    prop_oneof![
        Just(ChunkParams::default()),
        Just(ChunkParams::new(64, 256, 1024).unwrap()),
        Just(ChunkParams::new(1024, 4096, 16384).unwrap()),
    ]
}

/// Byte strings with both noise and repeats, so that chunks repeat and deduplication is exercised.
fn arb_tar_bytes() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..40_000),
        (any::<u8>(), 0usize..100_000).prop_map(|(b, n)| vec![b; n]),
    ];
    prop::collection::vec(piece, 0..8).prop_map(|pieces| {
        let mut out = pieces.concat();
        // Repeat a prefix to create identical content-defined chunks.
        let head = out[..out.len().min(20_000)].to_vec();
        out.extend_from_slice(&head);
        out
    })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 48,
        // Integration tests have no lib.rs beside them; keep regressions next to this file.
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        ..ProptestConfig::default()
    })]

    /// build → to_bytes → from_slice is the identity, every chunk verifies, and reassembly gives the input.
    #[test]
    fn chunk_index_round_trip(data in arb_tar_bytes(), params in arb_params()) {
        let (index, blobs) = ChunkIndex::build(&data, &params).unwrap();
        let bytes = index.to_bytes();
        let parsed = ChunkIndex::from_slice(&bytes, &IndexLimits::default()).unwrap();
        prop_assert_eq!(&parsed, &index);
        prop_assert_eq!(parsed.to_bytes(), bytes.clone());

        let distinct_digests: HashSet<_> = blobs.iter().map(|b| b.digest).collect();
        prop_assert_eq!(distinct_digests.len(), blobs.len(), "blobs are distinct");
        prop_assert_eq!(index.missing(|_| false).count(), blobs.len());
        let store: HashMap<Sha256Digest, Vec<u8>> =
            blobs.into_iter().map(|Chunk { digest, bytes }| (digest, bytes)).collect();
        let mut offset = 0usize;
        for c in index.chunks() {
            let raw = verify_chunk(c, &store[&c.sha256()]).unwrap();
            prop_assert_eq!(&raw[..], &data[offset..offset + raw.len()]);
            offset += raw.len();
        }
        prop_assert_eq!(offset, data.len());
        prop_assert_eq!(reassemble(&bytes, &store), data);
    }
}

/// The property the design rests on: a small edit to a bundle costs a chunk or two, not the bundle.
#[test]
fn small_edits_change_few_chunks() {
    let files = yaml_bundle(2 << 20, 7);
    let base = index_of(&files);
    let n = base.chunks().len();
    let full: u64 = base.missing(|_| false).map(|c| c.length()).sum();
    assert!(n >= 20, "a 2 MB bundle should be tens of chunks, got {n}");

    let mid = files.len() / 2;
    let mut one_byte = files.clone();
    let pos = one_byte[mid].1.iter().position(|b| *b == b':').unwrap();
    one_byte[mid].1[pos + 2] ^= 0x20;

    let mut one_file = files.clone();
    let edited = String::from_utf8(one_file[mid].1.clone())
        .unwrap()
        .replacen("replicas: ", "replicas: 1", 1)
        .replace(
            "part-of: mast-edge",
            "part-of: mast-edge\n    tier: frontend",
        );
    one_file[mid].1 = edited.into_bytes();

    let mut added = files.clone();
    added.push((
        "apps/new/extra.yaml".parse().unwrap(),
        manifest(&mut Rng(99), 99_999).into_bytes(),
    ));

    let mut removed = files.clone();
    removed.remove(mid);

    for (what, variant) in [
        ("one byte", &one_byte),
        ("one file", &one_file),
        ("file added", &added),
        ("file removed", &removed),
    ] {
        let new = index_of(variant);
        let (count, bytes) = delta(&base, &new);
        eprintln!(
            "{what}: {count} of {} chunks to fetch, {bytes} of {full} compressed bytes",
            new.chunks().len()
        );
        assert!(
            (1..=3).contains(&count),
            "{what}: {count} chunks differ of {n}"
        );
    }
}

#[test]
fn an_unchanged_bundle_needs_nothing() {
    let files = yaml_bundle(300 << 10, 3);
    let a = index_of(&files);
    let mut reversed = files.clone();
    reversed.reverse();
    let b = index_of(&reversed);
    assert_eq!(a.to_bytes(), b.to_bytes());
    assert_eq!(delta(&a, &b), (0, 0));
}

/// An index entry vouching for `frame` and claiming it expands to `raw_length` bytes.
fn index_for(frame: &[u8], raw_length: u64) -> ChunkIndex {
    let doc = format!(
        r#"{{"chunker":{{"algorithm":"fastcdc-2020","avg":65536,"max":262144,"min":16384}},"chunks":[{{"length":{},"raw_length":{raw_length},"raw_sha256":"{}","sha256":"{}"}}],"compression":"zstd","media_type":"application/vnd.mast.chunk-index.v2+json","pack":{{"length":{},"sha256":"{}"}},"tar":{{"length":{raw_length},"sha256":"{}"}}}}"#,
        frame.len(),
        Sha256Digest::of(b"whatever"),
        Sha256Digest::of(frame),
        frame.len(),
        Sha256Digest::of(frame),
        Sha256Digest::of(b"whatever"),
    );
    ChunkIndex::from_slice(doc.as_bytes(), &IndexLimits::default()).unwrap()
}

#[test]
fn zstd_bombs_stop_at_the_signed_raw_length() {
    let zeros = vec![0u8; 64 << 20];
    // A frame that declares its 64 MiB content size is refused before any output buffer exists.
    let declared = zstd::bulk::compress(&zeros, 19).unwrap();
    assert!(declared.len() < 64 << 10, "{}", declared.len());
    let index = index_for(&declared, 100_000);
    let err = verify_chunk(&index.chunks()[0], &declared).unwrap_err();
    assert!(
        matches!(err, BundleError::ChunkTooLarge { declared: d, limit: 100_000, .. } if d == 64 << 20),
        "{err}"
    );

    // A streamed frame does not declare its size; zstd stops when the 100 000-byte buffer is full.
    let undeclared = zstd::stream::encode_all(zeros.as_slice(), 19).unwrap();
    assert_eq!(
        zstd::zstd_safe::get_frame_content_size(&undeclared).unwrap(),
        None
    );
    let index = index_for(&undeclared, 100_000);
    let err = verify_chunk(&index.chunks()[0], &undeclared).unwrap_err();
    assert!(
        matches!(err, BundleError::Decompress { limit: 100_000, .. }),
        "{err}"
    );
}

#[test]
fn a_valid_frame_of_the_wrong_size_is_refused() {
    // Honest frame, but the index says it expands to one byte more than it does.
    let frame = zstd::bulk::compress(b"0123456789", 3).unwrap();
    let index = index_for(&frame, 11);
    let err = verify_chunk(&index.chunks()[0], &frame).unwrap_err();
    assert!(
        matches!(
            err,
            BundleError::RawLengthMismatch {
                expected: 11,
                actual: 10,
                ..
            }
        ),
        "{err}"
    );
}

/// Packing must stay within 1.5× of `tar czf` over the same files. Timing-sensitive, so run on demand in a
/// release build: `cargo test --release -p mast-protocol --test bundle_chunk -- --ignored --nocapture`.
#[test]
#[ignore = "timing; run in release on demand"]
fn packing_50_mb_is_within_one_and_a_half_tar_czf() {
    use std::time::Instant;

    let files = yaml_bundle(50 << 20, 11);
    let dir = tempfile::tempdir().unwrap();
    for (path, data) in &files {
        let full = dir.path().join(path.as_str());
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(full, data).unwrap();
    }
    let out = dir.path().join("out.tar.gz");

    let best_of = |f: &mut dyn FnMut()| {
        (0..3)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed()
            })
            .min()
            .unwrap()
    };
    let tar_czf = best_of(&mut || {
        let status = std::process::Command::new("tar")
            .arg("czf")
            .arg(&out)
            .arg("-C")
            .arg(dir.path())
            .arg("apps")
            .status()
            .unwrap();
        assert!(status.success());
    });
    let mut chunks = 0;
    let mut gz_len = 0;
    let pack = best_of(&mut || {
        // Everything the packager does with the bytes: read the files, build the tar, cut and compress the
        // chunks, and gzip the whole-bundle form.
        let read: Vec<(BundlePath, Vec<u8>)> = files
            .iter()
            .map(|(p, _)| {
                (
                    p.clone(),
                    std::fs::read(dir.path().join(p.as_str())).unwrap(),
                )
            })
            .collect();
        let tar = build_tar(read).unwrap();
        let (index, _) = ChunkIndex::build(&tar, &ChunkParams::default()).unwrap();
        chunks = index.chunks().len();
        gz_len = mast_protocol::bundle::gzip(&tar).len();
    });
    let tar = build_tar(files.clone()).unwrap();
    let chunk_only = best_of(&mut || {
        ChunkIndex::build(&tar, &ChunkParams::default()).unwrap();
    });
    let gzip_only = best_of(&mut || {
        mast_protocol::bundle::gzip(&tar);
    });
    eprintln!(
        "{} MB tar, {} files, {chunks} chunks: tar czf {tar_czf:?} ({} bytes); pack {pack:?} ({:.2}×), \
         of which chunking {chunk_only:?} and gzip {gzip_only:?} ({gz_len} bytes)",
        tar.len() >> 20,
        files.len(),
        std::fs::metadata(&out).unwrap().len(),
        pack.as_secs_f64() / tar_czf.as_secs_f64()
    );
    assert!(pack.as_secs_f64() <= 1.5 * tar_czf.as_secs_f64());
}
