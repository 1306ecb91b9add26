//! nginx as the tests' CDN origin really serves, revalidates, accepts uploads and stops.

use std::fs;
use std::net::TcpStream;

use mast_test_support::http::{get, request};
use mast_test_support::{Nginx, NginxConfig};

#[test]
fn serves_a_file_and_answers_a_conditional_get_with_304() {
    if !Nginx::available() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    fs::create_dir(root.path().join("metadata")).unwrap();
    fs::write(
        root.path().join("metadata/timestamp.json"),
        br#"{"signed":{}}"#,
    )
    .unwrap();
    let nginx = Nginx::serve(root.path());

    let first = get(&nginx.url("metadata/timestamp.json")).unwrap();
    assert_eq!(first.status, 200);
    assert_eq!(first.body, br#"{"signed":{}}"#);
    assert_eq!(first.header("Content-Type"), Some("application/json"));
    let etag = first
        .header("ETag")
        .expect("nginx sends an ETag")
        .to_owned();

    let url = nginx.url("metadata/timestamp.json");
    let unchanged = request("GET", &url, &[("If-None-Match", &etag)], &[]).unwrap();
    assert_eq!(unchanged.status, 304);
    assert!(unchanged.body.is_empty());

    let stale = request("GET", &url, &[("If-None-Match", "\"not-the-etag\"")], &[]).unwrap();
    assert_eq!(stale.status, 200);

    let missing = get(&nginx.url("metadata/2.root.json")).unwrap();
    assert_eq!(missing.status, 404);

    let logged = nginx.wait_for_requests(4);
    let statuses: Vec<u16> = logged.iter().map(|entry| entry.status).collect();
    assert_eq!(statuses, [200, 304, 200, 404]);
    assert_eq!(logged[0].uri, "/metadata/timestamp.json");
    assert_eq!(logged[0].body_bytes, 13);
    assert_eq!(logged[1].if_none_match.as_deref(), Some(etag.as_str()));
    assert_eq!(logged[1].body_bytes, 0);
}

#[test]
fn only_names_that_cannot_change_are_cacheable_forever() {
    if !Nginx::available() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let hashed = format!("{}.bundle.tar.gz", "ab".repeat(32));
    for name in [
        "timestamp.json",
        "12.snapshot.json",
        "1.root.json",
        "notes.txt",
        &hashed,
    ] {
        fs::write(root.path().join(name), name).unwrap();
    }
    let nginx = Nginx::serve(root.path());

    let cache_control = |name: &str| {
        let response = get(&nginx.url(name)).unwrap();
        assert_eq!(response.status, 200, "{name}");
        response.header("Cache-Control").map(str::to_owned)
    };
    let forever = Some("public, max-age=31536000, immutable".to_owned());
    let revalidate = Some("no-cache".to_owned());
    assert_eq!(cache_control("timestamp.json"), revalidate);
    assert_eq!(cache_control("notes.txt"), revalidate);
    assert_eq!(cache_control("12.snapshot.json"), forever);
    assert_eq!(cache_control("1.root.json"), forever);
    assert_eq!(cache_control(&hashed), forever);
}

#[test]
fn serves_byte_ranges_for_resumed_downloads() {
    if !Nginx::available() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    fs::write(root.path().join("blob"), b"0123456789").unwrap();
    let nginx = Nginx::serve(root.path());

    let partial = request("GET", &nginx.url("blob"), &[("Range", "bytes=4-")], &[]).unwrap();
    assert_eq!(partial.status, 206);
    assert_eq!(partial.body, b"456789");
    assert_eq!(partial.header("Content-Range"), Some("bytes 4-9/10"));
    assert_eq!(
        nginx.wait_for_requests(1)[0].range.as_deref(),
        Some("bytes=4-")
    );
}

#[test]
fn accepts_put_and_delete_under_the_dav_location() {
    if !Nginx::available() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let nginx = NginxConfig::new(root.path())
        .dav_location("/upload/")
        .start();

    let put = request("PUT", &nginx.url("upload/a/b/1.root.json"), &[], b"{}").unwrap();
    assert_eq!(put.status, 201, "{}", String::from_utf8_lossy(&put.body));
    assert_eq!(
        fs::read(root.path().join("upload/a/b/1.root.json")).unwrap(),
        b"{}"
    );
    assert_eq!(
        get(&nginx.url("upload/a/b/1.root.json")).unwrap().body,
        b"{}"
    );

    let replace = request("PUT", &nginx.url("upload/a/b/1.root.json"), &[], b"[]").unwrap();
    assert_eq!(replace.status, 204);
    assert_eq!(
        fs::read(root.path().join("upload/a/b/1.root.json")).unwrap(),
        b"[]"
    );

    let outside = request("PUT", &nginx.url("elsewhere.json"), &[], b"{}").unwrap();
    assert_eq!(outside.status, 405);
    assert!(!root.path().join("elsewhere.json").exists());

    let delete = request("DELETE", &nginx.url("upload/a/b/1.root.json"), &[], &[]).unwrap();
    assert_eq!(delete.status, 204);
    assert!(!root.path().join("upload/a/b/1.root.json").exists());
    assert_eq!(
        get(&nginx.url("upload/a/b/1.root.json")).unwrap().status,
        404
    );
}

#[test]
fn default_config_accepts_uploads_anywhere_and_read_only_none() {
    if !Nginx::available() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let writable = Nginx::serve(root.path());
    let big = vec![7_u8; 3 << 20];
    let put = request("PUT", &writable.url("targets/big.bin"), &[], &big).unwrap();
    assert_eq!(put.status, 201);
    assert_eq!(fs::read(root.path().join("targets/big.bin")).unwrap(), big);

    let read_only = NginxConfig::new(root.path()).read_only().start();
    let refused = request("PUT", &read_only.url("targets/other.bin"), &[], b"x").unwrap();
    assert_eq!(refused.status, 405);
    assert!(!root.path().join("targets/other.bin").exists());
}

#[test]
fn binds_loopback_only_and_stops_when_dropped() {
    if !Nginx::available() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let nginx = Nginx::serve(root.path());
    let port = nginx.port();
    let pid = nginx.pid();
    assert!(nginx.base_url().starts_with("http://127.0.0.1:"));
    let conf_listen = format!("listen 127.0.0.1:{port};");
    let error_log = fs::read_to_string(nginx.error_log()).unwrap();
    assert!(!error_log.contains("[emerg]"), "{error_log}");
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    assert!(
        fs::read_to_string(format!("/proc/{pid}/cmdline"))
            .unwrap()
            .contains("nginx")
    );
    let conf = fs::read_to_string(nginx.config_file()).unwrap();
    assert!(conf.contains(&conf_listen), "{conf}");

    drop(nginx);
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "port {port} still open"
    );
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "pid {pid} still alive"
    );
}
