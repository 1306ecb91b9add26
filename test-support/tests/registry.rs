//! Debian's docker-registry as the tests' OCI mirror really answers, stores, deletes and stops, and skopeo
//! (an independent OCI client) reads what was pushed to it.

use std::net::TcpStream;
use std::process::Command;

use mast_test_support::http::{get, request};
use mast_test_support::{Registry, SKOPEO};
use sha2::{Digest, Sha256};

const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Uploads a blob the two-step way of the distribution API (POST a session, PUT the bytes with the digest).
fn push_blob(registry: &Registry, repo: &str, blob: &[u8]) -> String {
    let url = format!("{}/v2/{repo}/blobs/uploads/", registry.base_url());
    let session = request("POST", &url, &[], &[]).expect("POST an upload session");
    assert_eq!(
        session.status,
        202,
        "{}",
        String::from_utf8_lossy(&session.body)
    );
    let location = session
        .header("Location")
        .expect("upload session has a Location");
    let location = if location.starts_with("http://") {
        location.to_owned()
    } else {
        format!("{}{location}", registry.base_url())
    };
    let separator = if location.contains('?') { '&' } else { '?' };
    let digest = digest(blob);
    let put = request(
        "PUT",
        &format!("{location}{separator}digest={digest}"),
        &[("Content-Type", "application/octet-stream")],
        blob,
    )
    .expect("PUT a blob");
    assert_eq!(put.status, 201, "{}", String::from_utf8_lossy(&put.body));
    digest
}

/// Pushes a one-layer OCI image as `repo:tag`; returns the manifest's bytes.
fn push_image(registry: &Registry, repo: &str, tag: &str, layer: &[u8]) -> Vec<u8> {
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{}"]}}}}"#,
        digest(layer)
    );
    let config_digest = push_blob(registry, repo, config.as_bytes());
    let layer_digest = push_blob(registry, repo, layer);
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"{MANIFEST_TYPE}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer_digest}","size":{}}}]}}"#,
        config.len(),
        layer.len()
    );
    let url = format!("{}/v2/{repo}/manifests/{tag}", registry.base_url());
    let put = request(
        "PUT",
        &url,
        &[("Content-Type", MANIFEST_TYPE)],
        manifest.as_bytes(),
    )
    .expect("PUT a manifest");
    assert_eq!(put.status, 201, "{}", String::from_utf8_lossy(&put.body));
    assert_eq!(
        put.header("Docker-Content-Digest"),
        Some(digest(manifest.as_bytes()).as_str())
    );
    manifest.into_bytes()
}

#[test]
fn answers_v2_with_200() {
    if !Registry::available() {
        return;
    }
    let registry = Registry::start();
    let response = get(&format!("{}/v2/", registry.base_url())).unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(
        response.header("Docker-Distribution-Api-Version"),
        Some("registry/2.0")
    );
    assert_eq!(response.body, b"{}");
    let missing = get(&format!(
        "{}/v2/mast/none/manifests/latest",
        registry.base_url()
    ))
    .unwrap();
    assert_eq!(missing.status, 404);
}

#[test]
fn stores_blobs_and_manifests_in_its_temp_dir_and_deletes_them() {
    if !Registry::available() {
        return;
    }
    let registry = Registry::start();
    let layer = b"not really a tar, the registry does not look".repeat(100);
    let manifest = push_image(&registry, "mast/bundles", "r1", &layer);
    assert!(
        registry
            .storage_dir()
            .join("docker/registry/v2/repositories/mast/bundles")
            .is_dir()
    );

    let base = registry.base_url();
    let manifest_url = format!("{base}/v2/mast/bundles/manifests/r1");
    let fetched = request("GET", &manifest_url, &[("Accept", MANIFEST_TYPE)], &[]).unwrap();
    assert_eq!(fetched.status, 200);
    assert_eq!(fetched.body, manifest);
    let blob = get(&format!("{base}/v2/mast/bundles/blobs/{}", digest(&layer))).unwrap();
    assert_eq!(blob.status, 200);
    assert_eq!(blob.body, layer);

    let by_digest = format!("{base}/v2/mast/bundles/manifests/{}", digest(&manifest));
    assert_eq!(request("DELETE", &by_digest, &[], &[]).unwrap().status, 202);
    let gone = request("GET", &manifest_url, &[("Accept", MANIFEST_TYPE)], &[]).unwrap();
    assert_eq!(gone.status, 404);
}

#[test]
fn skopeo_reads_what_was_pushed() {
    if !Registry::available() {
        return;
    }
    let Some(skopeo) = SKOPEO.require() else {
        return;
    };
    let registry = Registry::start();
    let layer = b"layer bytes".to_vec();
    let manifest = push_image(&registry, "mast/skopeo", "v1", &layer);
    let reference = format!("docker://{}/mast/skopeo:v1", registry.host());

    let inspect = Command::new(&skopeo)
        .args([
            "--insecure-policy",
            "inspect",
            "--raw",
            "--tls-verify=false",
            &reference,
        ])
        .output()
        .unwrap();
    assert!(
        inspect.status.success(),
        "{}",
        String::from_utf8_lossy(&inspect.stderr)
    );
    assert_eq!(inspect.stdout, manifest);

    // A copy fetches every blob and checks it against its digest.
    let out = tempfile::tempdir().unwrap();
    let copy = Command::new(&skopeo)
        .args([
            "--insecure-policy",
            "copy",
            "--src-tls-verify=false",
            &reference,
        ])
        .arg(format!("dir:{}", out.path().display()))
        .output()
        .unwrap();
    assert!(
        copy.status.success(),
        "{}",
        String::from_utf8_lossy(&copy.stderr)
    );
    let copied_layer = out
        .path()
        .join(digest(&layer).trim_start_matches("sha256:"));
    assert_eq!(std::fs::read(copied_layer).unwrap(), layer);
}

#[test]
fn binds_loopback_only_and_stops_when_dropped() {
    if !Registry::available() {
        return;
    }
    let registry = Registry::start();
    let port = registry.port();
    let pid = registry.pid();
    assert_eq!(registry.host(), format!("127.0.0.1:{port}"));
    let log = std::fs::read_to_string(registry.log()).unwrap();
    assert!(
        log.contains(&format!("listening on 127.0.0.1:{port}")),
        "{log}"
    );

    drop(registry);
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "port {port} still open"
    );
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "pid {pid} still alive"
    );
}
