//! `mast publish --to oci+http://…` into Debian's docker-registry: the bundle is a Flux artifact that skopeo
//! reads and copies, chunks hang off it through the referrers tag schema, TUF metadata is tagged by file
//! name, and `mast verify` picks the channel's newest release from the registry alone.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod publish_support;

use std::process::Command;

use mast_protocol::digest::Sha256Digest;
use mast_protocol::oci::{FLUX_CONTENT_MEDIA_TYPE, INDEX_MEDIA_TYPE, Index, MANIFEST_MEDIA_TYPE};
use mast_test_support::http;
use mast_test_support::{Registry, SKOPEO};
use publish_support::{TestRepo, as_files, manifests, run_json};

fn manifest(registry: &Registry, reference: &str, accept: &str) -> Vec<u8> {
    let url = format!("{}/v2/mast/prod/manifests/{reference}", registry.base_url());
    let response = http::request("GET", &url, &[("Accept", accept)], &[]).unwrap();
    assert_eq!(response.status, 200, "{url}");
    response.body
}

fn skopeo(skopeo: &std::path::Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new(skopeo)
        .arg("--insecure-policy")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn publishes_a_flux_artifact_that_skopeo_reads_and_verify_picks_the_newest_release() {
    if !Registry::available() {
        return;
    }
    let Some(skopeo_bin) = SKOPEO.require() else {
        return;
    };
    let registry = Registry::start();
    let mut repo = TestRepo::new();
    let files = manifests(6, 40_000, 8);
    let first = repo.release("prod", 1, &as_files(&files));
    let mut changed = files.clone();
    changed[0].1[7] ^= 0x55;
    let second = repo.release("prod", 2, &as_files(&changed));
    let to = format!("oci+http://{}/mast/prod", registry.host());

    let report = run_json(&["publish", repo.path().to_str().unwrap(), "--to", &to]);
    assert_eq!(report["releases"], serde_json::json!(["prod/1", "prod/2"]));
    assert_eq!(report["targets_uploaded"], 4, "{report}");

    // The bundle, pulled by digest, is the signed bundle.
    let blob = http::get(&format!(
        "{}/v2/mast/prod/blobs/sha256:{}",
        registry.base_url(),
        second.bundle_sha256
    ))
    .unwrap();
    assert_eq!(blob.status, 200);
    assert_eq!(Sha256Digest::of(&blob.body), second.bundle_sha256);

    // skopeo reads the moving channel tag as the newest release's Flux artifact (`--raw`: without it skopeo
    // refuses "image-specific operation on artifact", for Flux's own artifacts too)…
    let raw = skopeo(
        &skopeo_bin,
        &[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{}/mast/prod:prod", registry.host()),
        ],
    );
    let m: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(m["layers"][0]["mediaType"], FLUX_CONTENT_MEDIA_TYPE);
    assert_eq!(
        m["layers"][0]["digest"],
        format!("sha256:{}", second.bundle_sha256)
    );
    assert_eq!(raw, manifest(&registry, "prod-2", MANIFEST_MEDIA_TYPE));
    // …and copies release 1 by its own tag, checking every blob's digest on the way.
    let out = tempfile::tempdir().unwrap();
    skopeo(
        &skopeo_bin,
        &[
            "copy",
            "--src-tls-verify=false",
            &format!("docker://{}/mast/prod:prod-1", registry.host()),
            &format!("dir:{}", out.path().display()),
        ],
    );
    let copied = std::fs::read(out.path().join(first.bundle_sha256.to_hex())).unwrap();
    assert_eq!(Sha256Digest::of(&copied), first.bundle_sha256);

    // The chunk manifest hangs off the bundle manifest through the referrers tag schema.
    let subject = Sha256Digest::of(&raw);
    let referrers = manifest(&registry, &format!("sha256-{subject}"), INDEX_MEDIA_TYPE);
    let index = Index::from_slice(&referrers).unwrap();
    assert_eq!(index.manifests.len(), 1);
    let chunk_manifest: serde_json::Value = serde_json::from_slice(&manifest(
        &registry,
        &index.manifests[0].digest,
        MANIFEST_MEDIA_TYPE,
    ))
    .unwrap();
    assert_eq!(
        chunk_manifest["subject"]["digest"],
        format!("sha256:{subject}")
    );
    assert_eq!(
        chunk_manifest["layers"][0]["digest"],
        format!("sha256:{}", second.index_sha256)
    );
    assert_eq!(
        chunk_manifest["layers"][1]["mediaType"],
        "application/vnd.mast.chunk-pack.v1+zstd"
    );
    assert_eq!(
        chunk_manifest["layers"].as_array().unwrap().len(),
        2 + second.chunks.len()
    );

    let verdict = run_json(&[
        "verify",
        &to,
        "--root",
        repo.root_file().to_str().unwrap(),
        "--channel",
        "prod",
    ]);
    assert_eq!(verdict["release"], 2, "{verdict}");
    assert_eq!(verdict["bundle"]["sha256"], second.bundle_sha256.to_hex());
    assert_eq!(verdict["tar_sha256"], second.tar_sha256.to_hex());

    let again = run_json(&["publish", repo.path().to_str().unwrap(), "--to", &to]);
    assert_eq!(again["uploaded"], 0, "{again}");
    assert_eq!(again["timestamp_uploaded"], false, "{again}");

    // Release 3 changes one manifest: the registry gets its new chunks and its chunk pack only, and the
    // channel tag moves.
    let mut third_files = changed.clone();
    third_files[4].1[9] ^= 0x0f;
    let third = repo.release("prod", 3, &as_files(&third_files));
    let held: std::collections::BTreeSet<_> = first.chunks.iter().chain(&second.chunks).collect();
    let new_chunks = third.chunks.iter().filter(|c| !held.contains(c)).count();
    let delta = run_json(&["publish", repo.path().to_str().unwrap(), "--to", &to]);
    assert_eq!(delta["chunks_uploaded"], new_chunks + 1, "{delta}");
    assert_eq!(delta["targets_uploaded"], 2, "{delta}");
    let moved: serde_json::Value =
        serde_json::from_slice(&manifest(&registry, "prod", MANIFEST_MEDIA_TYPE)).unwrap();
    assert_eq!(
        moved["layers"][0]["digest"],
        format!("sha256:{}", third.bundle_sha256)
    );
    let verdict = run_json(&[
        "verify",
        &to,
        "--root",
        repo.root_file().to_str().unwrap(),
        "--channel",
        "prod",
    ]);
    assert_eq!(verdict["release"], 3, "{verdict}");
}
