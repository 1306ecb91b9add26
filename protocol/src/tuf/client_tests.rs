//! Unit tests of the client workflow, driven with hand-built metadata so each branch is reached on purpose.
//! End-to-end agreement with python-tuf lives in `protocol/tests/python_tuf.rs`.

use std::collections::BTreeMap;

use time::macros::datetime;
use time::{Duration, OffsetDateTime};

use super::*;
use crate::crypto::SigningKey;
use crate::digest::Sha256Digest;
use crate::tuf::error::ErrorKind;
use crate::tuf::metadata::{
    Common, DelegatedRole, Delegations, Expiry, Hashes, RoleKeys, Signature, Snapshot, TargetFile,
};
use crate::tuf::trusted::Persisted;

const NOW: OffsetDateTime = datetime!(2026-11-25 12:00 UTC);

fn key(n: u8) -> SigningKey {
    SigningKey::from_seed(&[n; 32])
}

fn far() -> Expiry {
    Expiry::new(NOW + Duration::days(365))
}

fn signed<T: Role>(content: T, keys: &[&SigningKey]) -> Vec<u8> {
    let mut doc = Signed::unsigned(content).unwrap();
    for k in keys {
        let sig = k.sign_hex(doc.canonical_signed());
        doc.signatures.push(Signature {
            keyid: k.key_id(),
            sig,
        });
    }
    doc.to_bytes().unwrap()
}

fn meta(version: u64, bytes: Option<&[u8]>) -> MetaFile {
    let hashes = bytes.map(|b| Hashes::from([("sha256".to_owned(), Sha256Digest::of(b).to_hex())]));
    MetaFile {
        version,
        length: bytes.map(|b| b.len() as u64),
        hashes,
        extra: BTreeMap::new(),
    }
}

/// A repository's files at one moment, built from explicit parts so tests can bend any of them.
struct Repo {
    root_keys: Vec<SigningKey>,
    online: [SigningKey; 3], // timestamp, snapshot, targets
    files: BTreeMap<String, Vec<u8>>,
}

impl Repo {
    fn new() -> Self {
        let mut repo = Self {
            root_keys: vec![key(1)],
            online: [key(10), key(11), key(12)],
            files: BTreeMap::new(),
        };
        let root = repo.root(1, 1);
        repo.files
            .insert("1.root.json".into(), signed(root, &[&repo.root_keys[0]]));
        repo
    }

    fn root(&self, version: u64, threshold: u64) -> Root {
        let mut keys = BTreeMap::new();
        let mut role = |ks: Vec<&SigningKey>, threshold| {
            for k in &ks {
                keys.insert(k.key_id(), k.public());
            }
            RoleKeys {
                keyids: ks.iter().map(|k| k.key_id()).collect(),
                threshold,
                extra: BTreeMap::new(),
            }
        };
        let roles = BTreeMap::from([
            (
                "root".to_owned(),
                role(self.root_keys.iter().collect(), threshold),
            ),
            ("timestamp".to_owned(), role(vec![&self.online[0]], 1)),
            ("snapshot".to_owned(), role(vec![&self.online[1]], 1)),
            ("targets".to_owned(), role(vec![&self.online[2]], 1)),
        ]);
        Root {
            common: Common::new("root", version, far()),
            consistent_snapshot: true,
            keys,
            roles,
            extra: BTreeMap::new(),
        }
    }

    fn root_bytes(&self) -> Vec<u8> {
        self.files["1.root.json"].clone()
    }

    /// Publishes targets v`tv`, snapshot v`sv` and timestamp v`tsv`.
    fn publish(&mut self, tsv: u64, sv: u64, tv: u64, targets: Targets) {
        let targets_bytes = signed(targets_with_version(targets, tv), &[&self.online[2]]);
        let snapshot = Snapshot {
            common: Common::new("snapshot", sv, far()),
            meta: BTreeMap::from([("targets.json".to_owned(), meta(tv, Some(&targets_bytes)))]),
            extra: BTreeMap::new(),
        };
        let snapshot_bytes = signed(snapshot, &[&self.online[1]]);
        let ts = Timestamp {
            common: Common::new("timestamp", tsv, far()),
            meta: BTreeMap::from([("snapshot.json".to_owned(), meta(sv, Some(&snapshot_bytes)))]),
            extra: BTreeMap::new(),
        };
        self.files
            .insert(format!("{tv}.targets.json"), targets_bytes);
        self.files
            .insert(format!("{sv}.snapshot.json"), snapshot_bytes);
        self.files
            .insert("timestamp.json".into(), signed(ts, &[&self.online[0]]));
    }
}

fn targets_with_version(mut t: Targets, version: u64) -> Targets {
    t.common.version = version;
    t
}

fn empty_targets() -> Targets {
    Targets {
        common: Common::new("targets", 1, far()),
        targets: BTreeMap::new(),
        delegations: None,
        extra: BTreeMap::new(),
    }
}

fn target(content: &[u8]) -> TargetFile {
    TargetFile {
        length: content.len() as u64,
        hashes: Hashes::from([("sha256".to_owned(), Sha256Digest::of(content).to_hex())]),
        custom: None,
        extra: BTreeMap::new(),
    }
}

/// What a driver saw: the files requested, in order, and what it stored.
#[derive(Default)]
struct Log {
    fetched: Vec<String>,
    stored: Vec<StoreOp>,
}

/// Drives a session against `files` until it is refreshed, finds `target`, or fails.
fn drive(
    session: &mut Session,
    files: &BTreeMap<String, Vec<u8>>,
    log: &mut Log,
) -> Result<Option<TargetFile>, TufError> {
    loop {
        match session.step()? {
            Next::Fetch(req) => {
                let file = req.file.clone();
                log.fetched.push(file.clone());
                match files.get(&file) {
                    Some(bytes) => session.fetched(bytes)?,
                    None => session.not_found()?,
                }
            }
            Next::Store(op) => {
                log.stored.push(op.clone());
                session.stored();
            }
            Next::Refreshed => return Ok(None),
            Next::Found(t) => return Ok(Some(t.clone())),
        }
    }
}

fn refresh(
    trusted: TrustedMetadata,
    files: &BTreeMap<String, Vec<u8>>,
) -> (Result<TrustedMetadata, TufError>, Log) {
    let mut log = Log::default();
    let mut s = Session::new(trusted, NOW, Limits::default());
    let r = drive(&mut s, files, &mut log).map(|_| s.into_trusted());
    (r, log)
}

fn trusted_after_first_refresh(repo: &Repo) -> TrustedMetadata {
    let (r, _) = refresh(
        TrustedMetadata::new(&repo.root_bytes()).unwrap(),
        &repo.files,
    );
    r.unwrap()
}

#[test]
fn first_refresh_fetches_each_role_once_and_stores_before_moving_on() {
    let mut repo = Repo::new();
    repo.publish(1, 1, 1, empty_targets());
    let (r, log) = refresh(
        TrustedMetadata::new(&repo.root_bytes()).unwrap(),
        &repo.files,
    );
    let trusted = r.unwrap();
    assert_eq!(
        log.fetched,
        [
            "2.root.json",
            "timestamp.json",
            "1.snapshot.json",
            "1.targets.json"
        ]
    );
    let stored: Vec<_> = log
        .stored
        .iter()
        .map(|op| match op {
            StoreOp::Save(f) => (f.role.as_str().to_owned(), f.version),
            StoreOp::Discard(r) => (format!("-{}", r.as_str()), 0),
        })
        .collect();
    assert_eq!(
        stored,
        [
            ("timestamp".into(), 1),
            ("snapshot".into(), 1),
            ("targets".into(), 1)
        ]
    );
    assert_eq!(trusted.targets().unwrap().version(), 1);
}

#[test]
fn store_must_be_acknowledged_before_the_next_fetch() {
    let mut repo = Repo::new();
    repo.publish(1, 1, 1, empty_targets());
    let mut s = Session::new(
        TrustedMetadata::new(&repo.root_bytes()).unwrap(),
        NOW,
        Limits::default(),
    );
    assert!(matches!(s.step().unwrap(), Next::Fetch(_)));
    s.not_found().unwrap();
    assert!(matches!(s.step().unwrap(), Next::Fetch(r) if r.file == "timestamp.json"));
    s.fetched(&repo.files["timestamp.json"]).unwrap();
    // Until `stored` is called, the session keeps asking for the same store and requests nothing new.
    for _ in 0..3 {
        assert!(
            matches!(s.step().unwrap(), Next::Store(StoreOp::Save(f)) if f.role == RoleName::Timestamp)
        );
    }
    s.stored();
    assert!(matches!(s.step().unwrap(), Next::Fetch(r) if r.file == "1.snapshot.json"));
    // Answering twice is a caller bug, reported as such.
    s.fetched(&repo.files["1.snapshot.json"]).unwrap();
    assert_eq!(s.fetched(b"{}").unwrap_err().kind(), ErrorKind::Usage);
}

#[test]
fn idle_poll_is_one_conditional_request() {
    let mut repo = Repo::new();
    repo.publish(1, 1, 1, empty_targets());
    let trusted = trusted_after_first_refresh(&repo);
    let mut s = Session::new(trusted, NOW, Limits::default());
    assert!(matches!(s.step().unwrap(), Next::Fetch(r) if r.file == "2.root.json"));
    s.not_found().unwrap();
    assert!(matches!(s.step().unwrap(), Next::Fetch(r) if r.file == "timestamp.json"));
    s.not_modified().unwrap();
    assert!(matches!(s.step().unwrap(), Next::Refreshed));
}

#[test]
fn same_timestamp_served_again_downloads_nothing_more() {
    let mut repo = Repo::new();
    repo.publish(1, 1, 1, empty_targets());
    let trusted = trusted_after_first_refresh(&repo);
    let (r, log) = refresh(trusted, &repo.files);
    r.unwrap();
    assert_eq!(log.fetched, ["2.root.json", "timestamp.json"]);
    assert!(log.stored.is_empty());
}

#[test]
fn new_release_fetches_only_changed_roles() {
    let mut repo = Repo::new();
    repo.publish(1, 1, 1, empty_targets());
    let trusted = trusted_after_first_refresh(&repo);
    let mut t = empty_targets();
    t.targets
        .insert("channels/prod/2/bundle.tar.gz".into(), target(b"bundle"));
    repo.publish(2, 2, 2, t);
    let (r, log) = refresh(trusted, &repo.files);
    assert!(
        r.unwrap()
            .targets()
            .unwrap()
            .signed
            .targets
            .contains_key("channels/prod/2/bundle.tar.gz")
    );
    assert_eq!(
        log.fetched,
        [
            "2.root.json",
            "timestamp.json",
            "2.snapshot.json",
            "2.targets.json"
        ]
    );
}

#[test]
fn rollback_of_timestamp_snapshot_and_targets_is_refused() {
    let mut repo = Repo::new();
    repo.publish(5, 5, 5, empty_targets());
    let trusted = trusted_after_first_refresh(&repo);

    let mut old = Repo {
        files: BTreeMap::new(),
        ..Repo::new()
    };
    old.files = repo.files.clone();
    old.publish(4, 6, 6, empty_targets());
    let err = refresh(trusted.clone(), &old.files).0.unwrap_err();
    assert_eq!(
        (
            err.kind(),
            err.to_string()
                .contains("timestamp version 4 is lower than the trusted version 5")
        ),
        (ErrorKind::Rollback, true),
        "{err}"
    );

    // A newer timestamp naming an older snapshot.
    old.publish(6, 4, 6, empty_targets());
    let err = refresh(trusted.clone(), &old.files).0.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Rollback, "{err}");
    assert!(
        err.to_string()
            .contains("snapshot version 4 is lower than the trusted version 5"),
        "{err}"
    );

    // A newer snapshot naming an older targets.
    old.publish(6, 6, 4, empty_targets());
    let err = refresh(trusted, &old.files).0.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Rollback, "{err}");
    assert!(
        err.to_string()
            .starts_with("6.snapshot.json: targets version 4"),
        "{err}"
    );
}

#[test]
fn expired_metadata_is_a_freeze() {
    let mut repo = Repo::new();
    repo.publish(1, 1, 1, empty_targets());
    let trusted = TrustedMetadata::new(&repo.root_bytes()).unwrap();
    let mut s = Session::new(trusted, NOW + Duration::days(400), Limits::default());
    let err = drive(&mut s, &repo.files, &mut Log::default()).unwrap_err();
    // The root itself expires first (365 days): the freeze is reported on the newest root.
    assert_eq!(err.kind(), ErrorKind::Expired);
    assert!(
        err.to_string()
            .starts_with("1.root.json: root metadata expired at"),
        "{err}"
    );
}

#[test]
fn wrong_key_fails_threshold_and_names_the_file() {
    let mut repo = Repo::new();
    repo.online[0] = key(99); // timestamp now signed by a key root does not list
    repo.publish(1, 1, 1, empty_targets());
    let err = refresh(
        TrustedMetadata::new(&repo.root_bytes()).unwrap(),
        &repo.files,
    )
    .0
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Threshold);
    assert_eq!(
        err.to_string(),
        "timestamp.json: timestamp: 0 valid signature(s) from distinct trusted keys, 1 required"
    );
}

#[test]
fn tampered_or_oversized_snapshot_is_refused_before_parsing() {
    let mut repo = Repo::new();
    repo.publish(1, 1, 1, empty_targets());
    let mut files = repo.files.clone();
    let snap = files.get_mut("1.snapshot.json").unwrap();
    let i = snap.iter().position(|&b| b == b'1').unwrap();
    snap[i] = b'2';
    let err = refresh(TrustedMetadata::new(&repo.root_bytes()).unwrap(), &files)
        .0
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Hash, "{err}");

    files.get_mut("1.snapshot.json").unwrap().push(b' ');
    let err = refresh(TrustedMetadata::new(&repo.root_bytes()).unwrap(), &files)
        .0
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Length, "{err}");

    // timestamp.json has no signed length: the per-role cap applies.
    let mut s = Session::new(
        TrustedMetadata::new(&repo.root_bytes()).unwrap(),
        NOW,
        Limits {
            timestamp_max: 10,
            ..Limits::default()
        },
    );
    let err = drive(&mut s, &repo.files, &mut Log::default()).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("timestamp.json: longer than the 10 bytes allowed"),
        "{err}"
    );
}

#[test]
fn root_rotation_walks_the_chain_and_forgets_rotated_online_roles() {
    let mut repo = Repo::new();
    repo.publish(50, 50, 50, empty_targets());
    let trusted = trusted_after_first_refresh(&repo);
    let root1 = repo.root_keys[0].clone_for_test();

    // Root 2: two new root keys with threshold 2, a new timestamp key, and versions reset (the recovery
    // from a fast-forward attack that pushed timestamp to 50).
    repo.root_keys = vec![key(2), key(3)];
    repo.online[0] = key(20);
    let root2 = repo.root(2, 2);
    repo.files.insert(
        "2.root.json".into(),
        signed(root2, &[&root1, &repo.root_keys[0], &repo.root_keys[1]]),
    );
    repo.publish(1, 51, 51, empty_targets());

    let (r, log) = refresh(trusted, &repo.files);
    let trusted = r.unwrap();
    assert_eq!(trusted.root().version(), 2);
    assert_eq!(trusted.timestamp().unwrap().version(), 1);
    assert_eq!(
        log.fetched[..3],
        ["2.root.json", "3.root.json", "timestamp.json"]
    );
    assert!(log.stored.contains(&StoreOp::Discard(RoleName::Timestamp)));
    assert!(log.stored.contains(&StoreOp::Discard(RoleName::Snapshot)));
    // Root 2 is saved before timestamp is even requested.
    assert!(
        matches!(&log.stored[0], StoreOp::Save(f) if f.role == RoleName::Root && f.version == 2)
    );
}

#[test]
fn root_chain_refuses_skips_and_missing_signatures() {
    let mut repo = Repo::new();
    repo.publish(1, 1, 1, empty_targets());
    let root1 = repo.root_keys[0].clone_for_test();
    let mut files = repo.files.clone();

    // 2.root.json that says version 3.
    files.insert("2.root.json".into(), signed(repo.root(3, 1), &[&root1]));
    let err = refresh(TrustedMetadata::new(&repo.root_bytes()).unwrap(), &files)
        .0
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RootChain);
    assert_eq!(
        err.to_string(),
        "2.root.json: root chain broken: expected version 2, found 3"
    );

    // Version 2 signed only by a new key, not by root 1's.
    repo.root_keys = vec![key(4)];
    files.insert(
        "2.root.json".into(),
        signed(repo.root(2, 1), &[&repo.root_keys[0]]),
    );
    let err = refresh(TrustedMetadata::new(&repo.root_bytes()).unwrap(), &files)
        .0
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Threshold);
    assert!(
        err.to_string()
            .contains("not signed by a threshold of the trusted root's keys"),
        "{err}"
    );

    // Version 2 signed by root 1's key but not by its own.
    files.insert("2.root.json".into(), signed(repo.root(2, 1), &[&root1]));
    let err = refresh(TrustedMetadata::new(&repo.root_bytes()).unwrap(), &files)
        .0
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("not signed by a threshold of its own keys"),
        "{err}"
    );
}

#[test]
fn spec_version_two_is_refused_with_its_own_kind() {
    let mut repo = Repo::new();
    repo.publish(1, 1, 1, empty_targets());
    let mut files = repo.files.clone();
    let ts = String::from_utf8(files["timestamp.json"].clone())
        .unwrap()
        .replace("1.0.31", "2.0.0");
    files.insert("timestamp.json".into(), ts.into_bytes());
    let err = refresh(TrustedMetadata::new(&repo.root_bytes()).unwrap(), &files)
        .0
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SpecVersion, "{err}");
}

#[test]
fn delegated_lookup_is_preorder_and_honours_terminating() {
    let mut repo = Repo::new();
    let (a, b, c) = (key(30), key(31), key(32));
    let role = |name: &str, k: &SigningKey, paths: &[&str], terminating| DelegatedRole {
        name: name.into(),
        keyids: vec![k.key_id()],
        threshold: 1,
        terminating,
        paths: Some(paths.iter().map(|p| p.to_string()).collect()),
        path_hash_prefixes: None,
        extra: BTreeMap::new(),
    };
    let mut top = empty_targets();
    top.delegations = Some(Delegations {
        keys: [
            (a.key_id(), a.public()),
            (b.key_id(), b.public()),
            (c.key_id(), c.public()),
        ]
        .into(),
        roles: vec![
            role("a", &a, &["apps/*"], true),
            role("b", &b, &["apps/*", "other/*"], false),
        ],
        extra: BTreeMap::new(),
    });
    let mut ta = empty_targets();
    ta.targets.insert("apps/one".into(), target(b"one"));
    let mut tb = empty_targets();
    tb.targets.insert("apps/two".into(), target(b"two"));
    tb.targets.insert("other/x".into(), target(b"x"));
    let a_bytes = signed(ta, &[&a]);
    let b_bytes = signed(tb, &[&b]);
    repo.files.insert("1.a.json".into(), a_bytes.clone());
    repo.files.insert("1.b.json".into(), b_bytes.clone());
    // Snapshot must list the delegated roles; rebuild it by hand around publish's output.
    repo.publish(1, 1, 1, top);
    let snap = Signed::<Snapshot>::from_slice(&repo.files["1.snapshot.json"]).unwrap();
    let mut s = snap.signed.clone();
    s.meta.insert("a.json".into(), meta(1, Some(&a_bytes)));
    s.meta.insert("b.json".into(), meta(1, None));
    let snap_bytes = signed(s, &[&repo.online[1]]);
    let ts = Timestamp {
        common: Common::new("timestamp", 1, far()),
        meta: BTreeMap::from([("snapshot.json".to_owned(), meta(1, Some(&snap_bytes)))]),
        extra: BTreeMap::new(),
    };
    repo.files.insert("1.snapshot.json".into(), snap_bytes);
    repo.files
        .insert("timestamp.json".into(), signed(ts, &[&repo.online[0]]));

    let trusted = trusted_after_first_refresh(&repo);
    let lookup = |trusted: &TrustedMetadata, name: &str| {
        let mut s = Session::new(trusted.clone(), NOW, Limits::default());
        let mut log = Log::default();
        drive(&mut s, &repo.files, &mut log).unwrap();
        s.find_target(name).unwrap();
        (drive(&mut s, &repo.files, &mut log), log)
    };
    let (found, log) = lookup(&trusted, "apps/one");
    assert_eq!(found.unwrap().unwrap(), target(b"one"));
    assert!(
        log.fetched.contains(&"1.a.json".to_owned())
            && !log.fetched.contains(&"1.b.json".to_owned())
    );
    // `a` is terminating for apps/*, so `b` is never asked about apps/two.
    let (err, _) = lookup(&trusted, "apps/two");
    assert_eq!(err.unwrap_err().kind(), ErrorKind::TargetNotFound);
    // other/x is only delegated to `b`.
    let (found, log) = lookup(&trusted, "other/x");
    assert_eq!(found.unwrap().unwrap(), target(b"x"));
    assert!(log.fetched.contains(&"1.b.json".to_owned()));
    let (err, _) = lookup(&trusted, "nowhere");
    assert_eq!(
        err.unwrap_err().to_string(),
        "target \"nowhere\" is not listed by any trusted targets role"
    );
}

#[test]
fn persisted_state_that_no_longer_verifies_is_discarded() {
    let mut repo = Repo::new();
    repo.publish(1, 1, 1, empty_targets());
    let mut forged = repo.files["timestamp.json"].clone();
    let i = forged.iter().position(|&b| b == b'1').unwrap();
    forged[i] = b'7';
    let (trusted, dropped) = TrustedMetadata::from_persisted(Persisted {
        root: &repo.root_bytes(),
        timestamp: Some(&forged),
        snapshot: Some(&repo.files["1.snapshot.json"]),
        targets: Some(&repo.files["1.targets.json"]),
    })
    .unwrap();
    assert!(
        trusted.timestamp().is_none()
            && trusted.snapshot().is_none()
            && trusted.targets().is_none()
    );
    let roles: Vec<_> = dropped.iter().map(|d| d.role.clone()).collect();
    assert_eq!(
        roles,
        [RoleName::Timestamp, RoleName::Snapshot, RoleName::Targets]
    );
    assert!(
        dropped[0].reason.contains("0 valid signature(s)"),
        "{}",
        dropped[0].reason
    );

    // Intact state loads whole.
    let (trusted, dropped) = TrustedMetadata::from_persisted(Persisted {
        root: &repo.root_bytes(),
        timestamp: Some(&repo.files["timestamp.json"]),
        snapshot: Some(&repo.files["1.snapshot.json"]),
        targets: Some(&repo.files["1.targets.json"]),
    })
    .unwrap();
    assert!(dropped.is_empty() && trusted.targets().is_some());
}

#[test]
fn role_names_are_quoted_like_python() {
    assert_eq!(
        quote_role_name("a b/../c~d_e.f-g"),
        "a%20b%2F..%2Fc~d_e.f-g"
    );
    assert_eq!(
        RoleName::Delegated("../../etc/passwd".into()).file_name(),
        "..%2F..%2Fetc%2Fpasswd.json"
    );
}

trait CloneForTest {
    fn clone_for_test(&self) -> SigningKey;
}

impl CloneForTest for SigningKey {
    fn clone_for_test(&self) -> SigningKey {
        // Tests rebuild keys from their seed; SigningKey deliberately has no Clone.
        let pem = self.to_pkcs8_pem().unwrap();
        SigningKey::from_pkcs8_pem(&pem).unwrap()
    }
}
