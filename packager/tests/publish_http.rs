//! `mast publish --to http://…`: WebDAV `PUT` into nginx, and uploads through presigned URLs (the S3 way),
//! each read back by `mast verify` over the same origin.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod publish_support;

use std::os::unix::fs::PermissionsExt;

use mast_test_support::{Nginx, NginxConfig};
use publish_support::{TestRepo, as_files, logged_puts, manifests, run, run_json};

fn verify(repo: &TestRepo, mirror: &str) -> serde_json::Value {
    run_json(&[
        "verify",
        mirror,
        "--root",
        repo.root_file().to_str().unwrap(),
        "--channel",
        "prod",
    ])
}

#[test]
fn publishes_with_webdav_put_and_only_what_is_missing() {
    if !Nginx::available() {
        return;
    }
    let mut repo = TestRepo::new();
    let made = repo.release("prod", 1, &as_files(&manifests(6, 40_000, 5)));
    let served = tempfile::tempdir().unwrap();
    let nginx = Nginx::serve(served.path());
    let to = nginx.url("mirror");
    let report = run_json(&["publish", repo.path().to_str().unwrap(), "--to", &to]);
    let uploaded = report["uploaded"].as_u64().unwrap();
    // Chunks, the chunk pack, bundle and index, four metadata files.
    assert_eq!(uploaded, made.chunks.len() as u64 + 1 + 2 + 4, "{report}");
    let puts = logged_puts(&nginx, uploaded as usize);
    assert_eq!(puts.len() as u64, uploaded);
    // The timestamp is the last thing written.
    assert_eq!(puts.last().unwrap(), "/mirror/metadata/timestamp.json");
    assert!(served.path().join("mirror/metadata/1.root.json").is_file());
    assert!(!served.path().join("mirror/.mast").exists());

    let verdict = verify(&repo, &to);
    assert_eq!(verdict["release"], 1);
    assert_eq!(verdict["bundle"]["sha256"], made.bundle_sha256.to_hex());

    let before = nginx.requests().len();
    let again = run_json(&["publish", repo.path().to_str().unwrap(), "--to", &to]);
    assert_eq!(again["uploaded"], 0, "{again}");
    let after = nginx.wait_for_requests(before + 1);
    assert!(after[before..].iter().all(|r| r.method != "PUT"));
}

#[test]
fn publishes_through_presigned_urls() {
    if !Nginx::available() {
        return;
    }
    let mut repo = TestRepo::new();
    let made = repo.release("prod", 1, &as_files(&manifests(3, 30_000, 6)));
    let served = tempfile::tempdir().unwrap();
    let nginx = NginxConfig::new(served.path())
        .dav_location("/bucket/")
        .start();
    let tools = tempfile::tempdir().unwrap();
    let log = tools.path().join("presign.log");
    let script = tools.path().join("presign");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$1 $2 $3\" >> {log}\necho \"{base}/$2?X-Amz-Signature=sig&X-Amz-Expires=60\"\n",
            log = log.display(),
            base = nginx.url("bucket"),
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();

    let to = nginx.url("bucket");
    let report = run_json(&[
        "publish",
        repo.path().to_str().unwrap(),
        "--to",
        &to,
        "--presign-cmd",
        script.to_str().unwrap(),
    ]);
    let uploaded = report["uploaded"].as_u64().unwrap();
    // Chunks, the chunk pack, bundle and index, four metadata files.
    assert_eq!(uploaded, made.chunks.len() as u64 + 1 + 2 + 4, "{report}");
    let calls = std::fs::read_to_string(&log).unwrap();
    let signed_puts: Vec<&str> = calls.lines().filter(|l| l.starts_with("PUT ")).collect();
    assert_eq!(signed_puts.len() as u64, uploaded, "{calls}");
    assert!(
        calls.contains("PUT metadata/timestamp.json application/json"),
        "{calls}"
    );
    assert!(
        calls.contains(&format!("PUT chunks/{} application/zstd", made.chunks[0])),
        "{calls}"
    );
    // Every write nginx saw carried the signature; none went to an unsigned URL.
    let puts = logged_puts(&nginx, uploaded as usize);
    assert_eq!(puts.len() as u64, uploaded);
    assert!(puts.iter().all(|uri| uri.contains("?X-Amz-Signature=sig")));

    let verdict = verify(&repo, &to);
    assert_eq!(verdict["release"], 1);

    // A presign command that fails stops the publish, naming it.
    let out = run(&[
        "publish",
        repo.path().to_str().unwrap(),
        "--to",
        &nginx.url("other"),
        "--presign-cmd",
        "/bin/false",
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("presign command /bin/false"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_destination_that_refuses_writes_gets_no_timestamp() {
    if !Nginx::available() {
        return;
    }
    let mut repo = TestRepo::new();
    repo.release("prod", 1, &as_files(&manifests(2, 1000, 7)));
    let served = tempfile::tempdir().unwrap();
    let nginx = NginxConfig::new(served.path()).read_only().start();
    let out = run(&[
        "publish",
        repo.path().to_str().unwrap(),
        "--to",
        &nginx.base_url(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("PUT") && stderr.contains("405"), "{stderr}");
    assert!(
        nginx
            .requests()
            .iter()
            .all(|r| r.uri != "/metadata/timestamp.json" || r.method != "PUT")
    );
}

#[test]
fn a_new_root_lands_just_before_its_timestamp_and_sites_walk_to_it() {
    if !Nginx::available() {
        return;
    }
    let mut repo = TestRepo::new();
    let made = repo.release("prod", 1, &as_files(&manifests(2, 20_000, 11)));
    let served = tempfile::tempdir().unwrap();
    let nginx = Nginx::serve(served.path());
    let repo_dir = repo.path().to_str().unwrap().to_owned();
    let publish = || run_json(&["publish", &repo_dir, "--to", &nginx.base_url()]);
    let first = publish()["uploaded"].as_u64().unwrap() as usize;

    repo.rotate_timestamp_key();
    let report = publish();
    assert_eq!(report["uploaded"], 2, "{report}");
    let puts = logged_puts(&nginx, first + 2);
    assert_eq!(
        puts[first..],
        ["/metadata/2.root.json", "/metadata/timestamp.json"]
    );

    // A site that ships root 1 walks to root 2 and accepts the timestamp signed with the new key.
    let verdict = verify(&repo, &nginx.base_url());
    assert_eq!(verdict["metadata"]["root"], 2, "{verdict}");
    assert_eq!(verdict["release"], 1);
    assert_eq!(verdict["bundle"]["sha256"], made.bundle_sha256.to_hex());
}
