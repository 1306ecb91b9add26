//! The fetch side against real servers: conditional polls of `timestamp.json` answered 304 by nginx,
//! python's `http.server` and Debian's docker-registry; downloads cut by the fault proxy and resumed with
//! `Range` (nginx and the registry answer 206) or started over (python answers 200); a resume across a
//! restart of the agent's state; corrupted bytes caught and discarded; chunks accepted only once verified
//! against their signed index entry.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use mast_agent::fetch::{DownloadError, Downloader, ObjectError, SignedObject, fetch_chunk};
use mast_agent::state::State;
use mast_agent::telemetry::VerificationFailure;
use mast_mirror::{
    Conditions, DirMirror, Fetched, HttpMirror, MirrorRead, MirrorWrite, ObjectPath, OciMirror, tls,
};
use mast_protocol::bundle::{ChunkIndex, ChunkParams};
use mast_protocol::digest::Sha256Digest;
use mast_test_support::fault_proxy::{Close, Faults};
use mast_test_support::{FaultProxy, HttpServer, LoggedRequest, Nginx, Registry};
use time::OffsetDateTime;

/// Large enough that a cut lands well inside the body and a checkpoint falls before it.
const SIZE: usize = 1 << 20;
/// Where the fault proxy cuts the first attempt, counting response headers.
const CUT: u64 = 300_000;

/// Incompressible, reproducible bytes.
fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A site: its state database and download directory, reopened as a restart would.
struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn state(&self) -> State {
        State::open(&self.dir.path().join("state.db")).unwrap()
    }

    fn downloader(&self) -> Downloader {
        Downloader::new(self.dir.path().join("objects")).with_checkpoint(64 << 10)
    }
}

/// A repository directory holding one bundle target.
struct Origin {
    dir: tempfile::TempDir,
    bytes: Vec<u8>,
    want: SignedObject,
}

impl Origin {
    fn new(len: usize) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let bytes = payload(len, 7);
        let sha256 = Sha256Digest::of(&bytes);
        let object =
            ObjectPath::target(&format!("channels/prod/1/{sha256}.bundle.tar.gz")).unwrap();
        write(dir.path(), &object.as_path(), &bytes);
        let want = SignedObject {
            object,
            sha256,
            length: bytes.len() as u64,
        };
        Self { dir, bytes, want }
    }

    fn key(&self) -> String {
        self.want.object.as_path()
    }
}

/// Writes a file as published a minute ago: a response's validators from the same second as its
/// `Date` are weak, and the mirror drops them.
fn write(root: &Path, relative: &str, bytes: &[u8]) -> PathBuf {
    let path = root.join(relative);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, bytes).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(60))
        .unwrap();
    path
}

fn http(base: &str) -> HttpMirror {
    HttpMirror::new(base, tls::http_client(None).unwrap())
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

fn cut_with_reset(proxy: &FaultProxy) {
    proxy.control().set_faults(
        Faults::none()
            .cut_downstream_after(CUT)
            .cut_with(Close::Reset),
    );
}

fn gets(nginx: &Nginx, count: usize, uri: &str) -> Vec<LoggedRequest> {
    nginx
        .wait_for_requests(count)
        .into_iter()
        .filter(|r| r.uri == uri)
        .collect()
}

/// The first attempt through a cutting proxy: it fails as a mirror error, with the bytes it got durable
/// and recorded. Returns the recorded offset.
async fn first_attempt_is_cut<M: MirrorRead>(
    site: &Site,
    state: &mut State,
    mirror: &M,
    origin: &Origin,
) -> u64 {
    let downloader = site.downloader();
    let err = downloader
        .download(state, mirror, &origin.want, now())
        .await
        .unwrap_err();
    assert!(matches!(err, DownloadError::Mirror { .. }), "{err}");
    assert!(err.to_string().contains(&origin.key()), "{err}");
    let record = state.download(&origin.key()).unwrap().expect("a record");
    assert!(
        record.offset > 0 && record.offset < CUT,
        "recorded {}",
        record.offset
    );
    assert_eq!(record.mirror, mirror.describe());
    let partial = downloader.partial_path(&origin.want.sha256);
    assert_eq!(std::fs::metadata(partial).unwrap().len(), record.offset);
    assert_eq!(downloader.fetched(), record.offset);
    record.offset
}

#[tokio::test]
async fn an_unchanged_timestamp_is_answered_304_in_one_request() {
    if !Nginx::available() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let ts_path = write(root.path(), "metadata/timestamp.json", b"{\"version\":1}");
    let nginx = Nginx::serve(root.path());
    let mirror = http(&nginx.base_url());
    let ts = ObjectPath::metadata("timestamp.json").unwrap();

    let first = mirror.get(&ts, 1024).await.unwrap();
    let etag = first.etag.clone().expect("nginx sends an ETag");
    let last_modified = first.last_modified.clone();
    assert_eq!(first.bytes().await.unwrap(), b"{\"version\":1}");

    let poll = Conditions::revalidate(Some(&etag), last_modified.as_deref());
    let answer = mirror.get_with(&ts, 1024, &poll).await.unwrap();
    assert!(matches!(answer, Fetched::NotModified { .. }), "{answer:?}");
    let logged = nginx.wait_for_requests(2);
    assert_eq!(logged.len(), 2, "{logged:#?}");
    assert_eq!(logged[1].status, 304);
    assert_eq!(logged[1].body_bytes, 0);
    assert_eq!(logged[1].if_none_match.as_deref(), Some(etag.as_str()));

    // A new timestamp (another length, so another ETag) is a new body under the same poll.
    std::fs::write(&ts_path, b"{\"version\":22}").unwrap();
    let Fetched::Full(response) = mirror.get_with(&ts, 1024, &poll).await.unwrap() else {
        panic!("a changed timestamp must be read whole");
    };
    assert_ne!(response.etag.as_deref(), Some(etag.as_str()));
    assert_eq!(response.bytes().await.unwrap(), b"{\"version\":22}");
    assert_eq!(nginx.wait_for_requests(3)[2].status, 200);
}

#[tokio::test]
async fn python_http_server_answers_if_modified_since_with_304() {
    if !HttpServer::available() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    write(root.path(), "metadata/timestamp.json", b"{\"version\":1}");
    let server = HttpServer::python(root.path());
    let mirror = http(&server.base_url());
    let ts = ObjectPath::metadata("timestamp.json").unwrap();
    let first = mirror.get(&ts, 1024).await.unwrap();
    assert_eq!(first.etag, None, "http.server sends no ETag");
    let since = first.last_modified.clone().expect("a Last-Modified");
    let poll = Conditions::revalidate(None, Some(&since));
    let answer = mirror.get_with(&ts, 1024, &poll).await.unwrap();
    assert!(matches!(answer, Fetched::NotModified { .. }), "{answer:?}");
    let log = std::fs::read_to_string(server.log()).unwrap();
    assert!(
        log.contains("\"GET /metadata/timestamp.json HTTP/1.1\" 304"),
        "{log}"
    );
}

#[tokio::test]
async fn a_download_cut_mid_way_resumes_with_range_and_verifies() {
    if !Nginx::available() {
        return;
    }
    let origin = Origin::new(SIZE);
    let nginx = Nginx::serve(origin.dir.path());
    let proxy = FaultProxy::start(local(nginx.port())).unwrap();
    cut_with_reset(&proxy);
    let mirror = http(&proxy.url(""));
    let site = Site::new();
    let mut state = site.state();
    let offset = first_attempt_is_cut(&site, &mut state, &mirror, &origin).await;
    assert_eq!(proxy.control().stats().reset, 1);

    proxy.control().pass_through();
    let downloader = site.downloader();
    let done = downloader
        .download(&mut state, &mirror, &origin.want, now())
        .await
        .unwrap();
    assert_eq!(done.resumed_from, offset);
    assert_eq!(done.fetched, SIZE as u64 - offset);
    assert_eq!(std::fs::read(&done.path).unwrap(), origin.bytes);
    assert_eq!(done.path, downloader.verified_path(&origin.want.sha256));
    assert!(!downloader.partial_path(&origin.want.sha256).exists());
    assert_eq!(state.download(&origin.key()).unwrap(), None);
    // Both attempts together read less than twice the object.
    assert!(offset + done.fetched < 2 * SIZE as u64);

    let uri = format!("/{}", origin.key());
    let logged = gets(&nginx, 2, &uri);
    assert_eq!(logged.len(), 2, "{logged:#?}");
    assert_eq!(logged[0].range, None);
    assert_eq!(logged[1].status, 206);
    assert_eq!(
        logged[1].range.as_deref(),
        Some(&*format!("bytes={offset}-"))
    );
    assert_eq!(logged[1].body_bytes, SIZE as u64 - offset);

    // Asked again, the verified file is returned without a request.
    let again = downloader
        .download(&mut state, &mirror, &origin.want, now())
        .await
        .unwrap();
    assert_eq!((again.path, again.fetched), (done.path, 0));
}

#[tokio::test]
async fn a_server_without_range_support_is_read_again_from_zero() {
    if !HttpServer::available() {
        return;
    }
    let origin = Origin::new(SIZE);
    let server = HttpServer::python(origin.dir.path());
    let proxy = FaultProxy::start(local(server.port())).unwrap();
    cut_with_reset(&proxy);
    let mirror = http(&proxy.url(""));
    let site = Site::new();
    let mut state = site.state();
    let offset = first_attempt_is_cut(&site, &mut state, &mirror, &origin).await;
    // http.server sends Last-Modified only: that is the validator recorded for If-Range.
    let record = state.download(&origin.key()).unwrap().unwrap();
    assert_eq!(record.etag, None);
    assert!(record.last_modified.is_some());

    proxy.control().pass_through();
    let downloader = site.downloader();
    let done = downloader
        .download(&mut state, &mirror, &origin.want, now())
        .await
        .unwrap();
    assert_eq!(done.resumed_from, 0);
    assert_eq!(done.fetched, SIZE as u64);
    assert_eq!(std::fs::read(&done.path).unwrap(), origin.bytes);
    assert_eq!(state.download(&origin.key()).unwrap(), None);
    assert!(offset + done.fetched < 2 * SIZE as u64);
    let log = std::fs::read_to_string(server.log()).unwrap();
    let line = format!("\"GET /{} HTTP/1.1\" 200", origin.key());
    assert_eq!(log.matches(&line).count(), 2, "{log}");
}

#[tokio::test]
async fn a_resume_after_a_restart_continues_from_the_recorded_offset() {
    if !Nginx::available() {
        return;
    }
    let origin = Origin::new(SIZE);
    let nginx = Nginx::serve(origin.dir.path());
    let proxy = FaultProxy::start(local(nginx.port())).unwrap();
    cut_with_reset(&proxy);
    let site = Site::new();
    let offset = {
        let mirror = http(&proxy.url(""));
        let mut state = site.state();
        first_attempt_is_cut(&site, &mut state, &mirror, &origin).await
    };
    // A crash after writing past the last checkpoint: bytes the record does not vouch for, which the
    // next attempt must drop rather than keep.
    let partial = site.downloader().partial_path(&origin.want.sha256);
    let mut torn = std::fs::read(&partial).unwrap();
    torn.extend_from_slice(b"bytes written after the last checkpoint, then a crash");
    std::fs::write(&partial, torn).unwrap();

    // Everything reopened: state from the same file, a new client, a new downloader.
    proxy.control().pass_through();
    let mut state = site.state();
    assert_eq!(
        state.download(&origin.key()).unwrap().unwrap().offset,
        offset
    );
    let mirror = http(&proxy.url(""));
    let downloader = site.downloader();
    let done = downloader
        .download(&mut state, &mirror, &origin.want, now())
        .await
        .unwrap();
    assert_eq!(done.resumed_from, offset);
    assert_eq!(done.fetched, SIZE as u64 - offset);
    assert_eq!(std::fs::read(&done.path).unwrap(), origin.bytes);
    let uri = format!("/{}", origin.key());
    let logged = gets(&nginx, 2, &uri);
    assert_eq!(logged[1].status, 206, "{logged:#?}");
    assert_eq!(
        logged[1].range.as_deref(),
        Some(&*format!("bytes={offset}-"))
    );
}

#[tokio::test]
async fn a_resume_from_another_mirror_starts_over() {
    if !Nginx::available() {
        return;
    }
    let origin = Origin::new(SIZE);
    let nginx = Nginx::serve(origin.dir.path());
    let proxy = FaultProxy::start(local(nginx.port())).unwrap();
    cut_with_reset(&proxy);
    let site = Site::new();
    let mut state = site.state();
    first_attempt_is_cut(&site, &mut state, &http(&proxy.url("")), &origin).await;

    let direct = http(&nginx.base_url());
    let done = site
        .downloader()
        .download(&mut state, &direct, &origin.want, now())
        .await
        .unwrap();
    assert_eq!((done.resumed_from, done.fetched), (0, SIZE as u64));
    let uri = format!("/{}", origin.key());
    let logged = gets(&nginx, 2, &uri);
    assert_eq!((logged[1].status, logged[1].range.as_deref()), (200, None));
}

#[tokio::test]
async fn a_corrupted_byte_is_caught_and_nothing_is_kept() {
    if !Nginx::available() {
        return;
    }
    let origin = Origin::new(SIZE);
    let nginx = Nginx::serve(origin.dir.path());
    let proxy = FaultProxy::start(local(nginx.port())).unwrap();
    proxy
        .control()
        .set_faults(Faults::none().corrupt(500_000, 0x20));
    let mirror = http(&proxy.url(""));
    let site = Site::new();
    let mut state = site.state();
    let downloader = site.downloader();
    let err = downloader
        .download(&mut state, &mirror, &origin.want, now())
        .await
        .unwrap_err();
    assert!(err.is_mismatch(), "{err}");
    assert!(err.to_string().contains(&origin.key()), "{err}");
    assert!(err.to_string().contains(&mirror.describe()), "{err}");
    assert_eq!(proxy.control().stats().corrupted, 1);
    assert!(!downloader.partial_path(&origin.want.sha256).exists());
    assert!(!downloader.verified_path(&origin.want.sha256).exists());
    assert_eq!(state.download(&origin.key()).unwrap(), None);
    assert_eq!(downloader.fetched(), SIZE as u64);

    // The resumed half is checked with the prefix: a corruption after a resume is caught too. A plan
    // applies to connections accepted after it is set, so each phase gets a new client (the first one
    // would reuse its kept-alive connection).
    cut_with_reset(&proxy);
    let mirror = http(&proxy.url(""));
    let offset = first_attempt_is_cut(&site, &mut state, &mirror, &origin).await;
    proxy
        .control()
        .set_faults(Faults::none().corrupt(CUT, 0x01));
    let mirror = http(&proxy.url(""));
    let err = downloader
        .download(&mut state, &mirror, &origin.want, now())
        .await
        .unwrap_err();
    assert!(err.is_mismatch(), "{err} after resuming at {offset}");
    assert!(!downloader.partial_path(&origin.want.sha256).exists());
    assert_eq!(state.download(&origin.key()).unwrap(), None);
}

#[tokio::test]
async fn a_mirror_announcing_more_than_the_signed_length_is_refused_before_its_body() {
    if !Nginx::available() {
        return;
    }
    let origin = Origin::new(SIZE);
    let path = origin.dir.path().join(origin.key());
    let mut longer = origin.bytes.clone();
    longer.extend_from_slice(b"one byte too many, and then some");
    std::fs::write(&path, longer).unwrap();
    let nginx = Nginx::serve(origin.dir.path());
    let site = Site::new();
    let mut state = site.state();
    let downloader = site.downloader();
    let err = downloader
        .download(&mut state, &http(&nginx.base_url()), &origin.want, now())
        .await
        .unwrap_err();
    assert!(err.is_mismatch(), "{err}");
    assert_eq!(downloader.fetched(), 0);
    assert!(!downloader.partial_path(&origin.want.sha256).exists());
    assert_eq!(state.download(&origin.key()).unwrap(), None);
}

#[tokio::test]
async fn chunks_are_accepted_only_when_they_match_their_index_entry() {
    if !Nginx::available() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let (index, chunks) = ChunkIndex::build(&payload(600_000, 3), &ChunkParams::default()).unwrap();
    // Random bytes: every chunk differs, and a fourth one is on no mirror.
    assert!(chunks.len() >= 4, "{} chunks", chunks.len());
    let entries = index.chunks();
    let (good, swapped, long, missing) = (&entries[0], &entries[1], &entries[2], &entries[3]);
    write(
        root.path(),
        &format!("chunks/{}", good.sha256()),
        &chunks
            .iter()
            .find(|c| c.digest == good.sha256())
            .unwrap()
            .bytes,
    );
    // A mirror that serves a chunk with one byte changed, and one that appends a byte.
    let mut changed = chunks
        .iter()
        .find(|c| c.digest == swapped.sha256())
        .unwrap()
        .bytes
        .clone();
    changed[100] ^= 1;
    write(
        root.path(),
        &format!("chunks/{}", swapped.sha256()),
        &changed,
    );
    let mut longer = chunks
        .iter()
        .find(|c| c.digest == long.sha256())
        .unwrap()
        .bytes
        .clone();
    longer.push(0);
    write(root.path(), &format!("chunks/{}", long.sha256()), &longer);
    let nginx = Nginx::serve(root.path());
    let mirror = http(&nginx.base_url());

    let bytes = fetch_chunk(&mirror, good).await.unwrap();
    assert_eq!(Sha256Digest::of(&bytes), good.sha256());
    assert_eq!(bytes.len() as u64, good.length());

    let err = fetch_chunk(&mirror, swapped).await.unwrap_err();
    assert_eq!(
        err.verification_failure(),
        Some(VerificationFailure::ChunkHash),
        "{err}"
    );
    let err = fetch_chunk(&mirror, long).await.unwrap_err();
    assert_eq!(
        err.verification_failure(),
        Some(VerificationFailure::ChunkLength),
        "{err}"
    );
    // nginx announces the length, so the longer chunk was refused before its body was read.
    assert!(err.to_string().contains("longer than the signed"), "{err}");

    let err = fetch_chunk(&mirror, missing).await.unwrap_err();
    assert!(matches!(err, ObjectError::Mirror { .. }), "{err}");
    assert_eq!(err.verification_failure(), None);
}

#[tokio::test]
async fn a_directory_mirror_resumes_by_seeking() {
    let origin = Origin::new(SIZE);
    let mirror = DirMirror::new(origin.dir.path());
    let site = Site::new();
    let mut state = site.state();
    let downloader = site.downloader();
    // A record and a partial file as a cut read from this mirror leaves them.
    let kept = 123_456;
    let partial = downloader.partial_path(&origin.want.sha256);
    write(
        partial.parent().unwrap(),
        &origin.want.sha256.to_hex(),
        &origin.bytes[..kept],
    );
    let first = mirror.get(&origin.want.object, SIZE as u64).await.unwrap();
    state
        .save_download(
            &mast_agent::state::Download {
                object: origin.key(),
                mirror: mirror.describe(),
                sha256: origin.want.sha256,
                length: SIZE as u64,
                offset: kept as u64,
                etag: first.etag.clone(),
                last_modified: None,
            },
            now(),
        )
        .unwrap();
    let done = downloader
        .download(&mut state, &mirror, &origin.want, now())
        .await
        .unwrap();
    assert_eq!(done.resumed_from, kept as u64);
    assert_eq!(done.fetched, (SIZE - kept) as u64);
    assert_eq!(std::fs::read(&done.path).unwrap(), origin.bytes);
}

#[tokio::test]
async fn docker_registry_serves_blobs_with_ranges_and_tags_with_304() {
    if !Registry::available() {
        return;
    }
    let registry = Registry::start();
    let origin = Origin::new(SIZE);
    let client = tls::http_client(None).unwrap();
    let direct = OciMirror::new(client.clone(), &registry.host(), "mast/site", true);
    direct
        .put(&origin.want.object, origin.bytes.clone().into())
        .await
        .unwrap();
    let ts = ObjectPath::metadata("timestamp.json").unwrap();
    direct
        .put(&ts, bytes::Bytes::from_static(b"{\"version\":1}"))
        .await
        .unwrap();

    // A tag: its manifest digest is the ETag, and an unchanged one costs a manifest request only. The
    // file is embedded in its manifest, so reading it costs no blob request either.
    let first = direct.get(&ts, 1024).await.unwrap();
    let etag = first.etag.clone().unwrap();
    assert!(etag.starts_with("sha256:"), "{etag}");
    assert_eq!(first.bytes().await.unwrap(), b"{\"version\":1}");
    let log = std::fs::read_to_string(registry.log()).unwrap();
    let layer_read = format!(
        "\"GET /v2/mast/site/blobs/sha256:{}",
        mast_protocol::digest::Sha256Digest::of(b"{\"version\":1}")
    );
    assert!(
        log.contains("\"GET /v2/mast/site/manifests/timestamp.json HTTP/1.1\" 200"),
        "{log}"
    );
    assert!(!log.contains(&layer_read), "{log}");
    let poll = Conditions::revalidate(Some(&etag), None);
    let answer = direct.get_with(&ts, 1024, &poll).await.unwrap();
    assert!(matches!(answer, Fetched::NotModified { .. }), "{answer:?}");
    let log = std::fs::read_to_string(registry.log()).unwrap();
    assert!(
        log.contains("\"GET /v2/mast/site/manifests/timestamp.json HTTP/1.1\" 304"),
        "{log}"
    );

    // A blob, cut part-way and resumed: the registry honours Range with a 206.
    let proxy = FaultProxy::start(local(registry.port())).unwrap();
    cut_with_reset(&proxy);
    let through = OciMirror::new(client, &proxy.addr().to_string(), "mast/site", true);
    let site = Site::new();
    let mut state = site.state();
    let offset = first_attempt_is_cut(&site, &mut state, &through, &origin).await;
    proxy.control().pass_through();
    let done = site
        .downloader()
        .download(&mut state, &through, &origin.want, now())
        .await
        .unwrap();
    assert_eq!(done.resumed_from, offset);
    assert_eq!(done.fetched, SIZE as u64 - offset);
    assert_eq!(std::fs::read(&done.path).unwrap(), origin.bytes);
    let log = std::fs::read_to_string(registry.log()).unwrap();
    let blob = format!(
        "\"GET /v2/mast/site/blobs/sha256:{} HTTP/1.1\" 206",
        origin.want.sha256
    );
    assert!(log.contains(&blob), "{log}");
}
