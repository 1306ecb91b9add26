//! `HttpMirror::get_with` against nginx: what each validator and range makes the origin answer, read
//! from nginx's own access log.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use mast_mirror::{Conditions, Fetched, HttpMirror, MirrorRead, ObjectPath, tls};
use mast_test_support::Nginx;

const BODY: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";

fn serve(root: &Path) -> (Nginx, HttpMirror, ObjectPath) {
    let path = root.join("metadata/timestamp.json");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, BODY).unwrap();
    // Published a minute ago: validators from the same second as the response are weak and dropped.
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(60))
        .unwrap();
    let nginx = Nginx::serve(root);
    let mirror = HttpMirror::new(&nginx.base_url(), tls::http_client(None).unwrap());
    (
        nginx,
        mirror,
        ObjectPath::metadata("timestamp.json").unwrap(),
    )
}

async fn read(fetched: Fetched) -> (Option<(u64, Option<u64>)>, Vec<u8>) {
    match fetched {
        Fetched::Full(response) => (None, response.bytes().await.unwrap()),
        Fetched::Partial {
            from,
            total,
            response,
        } => (Some((from, total)), response.bytes().await.unwrap()),
        Fetched::NotModified { .. } => panic!("not modified"),
    }
}

#[tokio::test]
async fn a_range_under_a_matching_if_range_is_a_206_with_its_total() {
    if !Nginx::available() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let (nginx, mirror, ts) = serve(root.path());
    let first = mirror.get(&ts, 100).await.unwrap();
    let validator = first.range_validator().unwrap().to_owned();
    let fetched = mirror
        .get_with(&ts, 100, &Conditions::resume(10, Some(&validator)))
        .await
        .unwrap();
    let (partial, bytes) = read(fetched).await;
    assert_eq!(partial, Some((10, Some(BODY.len() as u64))));
    assert_eq!(bytes, &BODY[10..]);
    let logged = nginx.wait_for_requests(2);
    assert_eq!(logged[1].status, 206);
    assert_eq!(logged[1].range.as_deref(), Some("bytes=10-"));

    // The cap is the whole object's: a 206 whose total passes it is refused before its body is read.
    let err = mirror
        .get_with(&ts, 20, &Conditions::resume(10, Some(&validator)))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), mast_mirror::ErrorKind::TooLarge, "{err}");
}

#[tokio::test]
async fn a_changed_object_fails_if_range_and_comes_whole() {
    if !Nginx::available() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let (nginx, mirror, ts) = serve(root.path());
    let old = mirror.get(&ts, 100).await.unwrap();
    let validator = old.range_validator().unwrap().to_owned();
    let changed = b"another object, another length and ETag";
    std::fs::write(root.path().join("metadata/timestamp.json"), changed).unwrap();
    let fetched = mirror
        .get_with(&ts, 100, &Conditions::resume(10, Some(&validator)))
        .await
        .unwrap();
    let (partial, bytes) = read(fetched).await;
    assert_eq!((partial, bytes.as_slice()), (None, &changed[..]));
    let logged = nginx.wait_for_requests(2);
    assert_eq!(
        (logged[1].status, logged[1].range.as_deref()),
        (200, Some("bytes=10-"))
    );
}

#[tokio::test]
async fn an_unsatisfiable_range_starts_over_with_one_more_request() {
    if !Nginx::available() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let (nginx, mirror, ts) = serve(root.path());
    let fetched = mirror
        .get_with(&ts, 100, &Conditions::resume(500, None))
        .await
        .unwrap();
    let (partial, bytes) = read(fetched).await;
    assert_eq!((partial, bytes.as_slice()), (None, BODY));
    let logged = nginx.wait_for_requests(2);
    let answers: Vec<(u16, Option<&str>)> = logged
        .iter()
        .map(|r| (r.status, r.range.as_deref()))
        .collect();
    assert_eq!(answers, [(416, Some("bytes=500-")), (200, None)]);
}

#[tokio::test]
async fn if_modified_since_alone_is_answered_304() {
    if !Nginx::available() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let (nginx, mirror, ts) = serve(root.path());
    let first = mirror.get(&ts, 100).await.unwrap();
    let since = first.last_modified.clone().unwrap();
    let fetched = mirror
        .get_with(&ts, 100, &Conditions::revalidate(None, Some(&since)))
        .await
        .unwrap();
    assert!(
        matches!(fetched, Fetched::NotModified { .. }),
        "{fetched:?}"
    );
    assert_eq!(nginx.wait_for_requests(2)[1].status, 304);
    // Unconditional reads never see a 304 or a 206.
    assert_eq!(
        mirror.get(&ts, 100).await.unwrap().bytes().await.unwrap(),
        BODY
    );
}
