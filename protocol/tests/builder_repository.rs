//! The repository builder end to end: what it writes must verify as a client would verify it.

// As clippy.toml says for #[test] functions: a panic in a test helper is the failure report.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use mast_protocol::crypto::SigningKey;
use mast_protocol::digest::Sha256Digest;
use mast_protocol::tuf::builder::{
    BuildError, DelegationSpec, Expiries, Repository, RoleSigners, RoleSpec, RootSpec,
    consistent_target_path, new_root, root_signing_status, rotate_root,
};
use mast_protocol::tuf::verify::verify_threshold;
use mast_protocol::tuf::{
    Expiry, MetaFile, Role, Root, Signed, Snapshot, TargetFile, Targets, Timestamp,
};
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

const T0: OffsetDateTime = datetime!(2026-03-01 12:00:00 UTC);

struct Keys {
    root: SigningKey,
    targets: SigningKey,
    snapshot: SigningKey,
    timestamp: SigningKey,
}

fn keys() -> Keys {
    Keys {
        root: SigningKey::from_seed(&[1; 32]),
        targets: SigningKey::from_seed(&[2; 32]),
        snapshot: SigningKey::from_seed(&[3; 32]),
        timestamp: SigningKey::from_seed(&[4; 32]),
    }
}

fn one(k: &SigningKey) -> RoleSpec {
    RoleSpec {
        keys: vec![k.public()],
        threshold: 1,
    }
}

fn spec(k: &Keys) -> RootSpec {
    RootSpec {
        root: one(&k.root),
        targets: one(&k.targets),
        snapshot: one(&k.snapshot),
        timestamp: one(&k.timestamp),
    }
}

fn signers(k: &Keys) -> RoleSigners<'_> {
    RoleSigners {
        targets: vec![&k.targets],
        snapshot: vec![&k.snapshot],
        timestamp: vec![&k.timestamp],
        delegated: BTreeMap::new(),
    }
}

fn repo(k: &Keys) -> Repository {
    let expires = Expiry::new(T0 + Duration::days(365));
    let mut root = new_root(&spec(k), 1, expires).unwrap();
    root.sign(&k.root);
    Repository::create(root, T0, Expiries::default()).unwrap()
}

fn target(content: &[u8]) -> TargetFile {
    TargetFile {
        length: content.len() as u64,
        hashes: [("sha256".to_owned(), Sha256Digest::of(content).to_hex())].into(),
        custom: None,
        extra: BTreeMap::new(),
    }
}

fn check_meta(meta: &MetaFile, bytes: &[u8]) {
    assert_eq!(meta.length, Some(bytes.len() as u64));
    let hashes = meta.hashes.as_ref().unwrap();
    assert_eq!(hashes["sha256"], Sha256Digest::of(bytes).to_hex());
}

fn verify<T: Role>(doc: &Signed<T>, role: &str, root: &Root) {
    let r = root.role(role).unwrap();
    verify_threshold(doc, role, &root.keys, &r.keyids, r.threshold).unwrap();
}

/// Checks a set of published files as a client would: names, root chain, signatures, lengths and hashes.
/// Returns the versions of (targets, snapshot, timestamp).
fn check_files(files: &[(String, Vec<u8>)]) -> (u64, u64, u64) {
    let by_name: BTreeMap<&str, &[u8]> = files
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    assert_eq!(by_name.len(), files.len(), "duplicate file names");

    let mut roots: Vec<Signed<Root>> = Vec::new();
    for v in 1.. {
        let Some(bytes) = by_name.get(format!("metadata/{v}.root.json").as_str()) else {
            break;
        };
        let root = Signed::<Root>::from_slice(bytes).unwrap();
        assert_eq!(root.version(), v);
        verify(&root, "root", &root.signed);
        if let Some(prev) = roots.last() {
            verify(&root, "root", &prev.signed);
        }
        roots.push(root);
    }
    let root = &roots.last().expect("metadata/1.root.json").signed;

    let ts = Signed::<Timestamp>::from_slice(by_name["metadata/timestamp.json"]).unwrap();
    verify(&ts, "timestamp", root);
    let snap_meta = ts.signed.snapshot_meta();
    let snap_name = format!("metadata/{}.snapshot.json", snap_meta.version);
    check_meta(snap_meta, by_name[snap_name.as_str()]);
    let snap = Signed::<Snapshot>::from_slice(by_name[snap_name.as_str()]).unwrap();
    assert_eq!(snap.version(), snap_meta.version);
    verify(&snap, "snapshot", root);

    let targets_meta = &snap.signed.meta["targets.json"];
    let targets_name = format!("metadata/{}.targets.json", targets_meta.version);
    check_meta(targets_meta, by_name[targets_name.as_str()]);
    let targets = Signed::<Targets>::from_slice(by_name[targets_name.as_str()]).unwrap();
    assert_eq!(targets.version(), targets_meta.version);
    verify(&targets, "targets", root);

    // Every file parses as the role its name says, and the set is exactly what was checked plus
    // delegated roles.
    let expected = roots.len() + 3 + snap.signed.meta.len() - 1;
    assert_eq!(
        files.len(),
        expected,
        "{:?}",
        by_name.keys().collect::<Vec<_>>()
    );
    (targets.version(), snap.version(), ts.version())
}

fn assert_round_trips(repo: &Repository) {
    let files = repo.files().unwrap();
    let loaded = Repository::load(files.iter().map(|(n, b)| (n.as_str(), b.as_slice()))).unwrap();
    assert_eq!(loaded.files().unwrap(), files);
}

#[test]
fn lifecycle_create_commit_add_commit_refresh() {
    let k = keys();
    let mut repo = repo(&k);
    assert!(matches!(repo.files(), Err(BuildError::Uncommitted(_))));

    let signed = repo.commit(&signers(&k), T0).unwrap();
    assert_eq!(signed, ["targets", "snapshot", "timestamp"]);
    assert_eq!(check_files(&repo.files().unwrap()), (1, 1, 1));
    assert_round_trips(&repo);

    let bundle = target(b"bundle bytes");
    repo.add_target("channels/prod/1/bundle.tar.gz", bundle.clone())
        .unwrap();
    repo.add_target("channels/prod/1/index.json", target(b"index"))
        .unwrap();
    assert!(repo.has_uncommitted_changes());
    assert!(matches!(repo.files(), Err(BuildError::Uncommitted(r)) if r == "targets"));
    let t1 = T0 + Duration::hours(1);
    let signed = repo.commit(&signers(&k), t1).unwrap();
    assert_eq!(signed, ["targets", "snapshot", "timestamp"]);
    let files = repo.files().unwrap();
    assert_eq!(check_files(&files), (2, 2, 2));
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "metadata/1.root.json",
            "metadata/2.targets.json",
            "metadata/2.snapshot.json",
            "metadata/timestamp.json"
        ]
    );
    assert_eq!(
        repo.targets().expires(),
        Expiry::new(t1 + Duration::days(90))
    );
    assert_eq!(
        repo.snapshot().expires(),
        Expiry::new(t1 + Duration::days(14))
    );
    assert_eq!(
        repo.timestamp().expires(),
        Expiry::new(t1 + Duration::days(7))
    );
    assert_eq!(
        consistent_target_path("channels/prod/1/bundle.tar.gz", &bundle).unwrap(),
        format!(
            "targets/channels/prod/1/{}.bundle.tar.gz",
            Sha256Digest::of(b"bundle bytes")
        )
    );
    assert_round_trips(&repo);

    // Adding the same target again is no change at all.
    repo.add_target("channels/prod/1/bundle.tar.gz", bundle)
        .unwrap();
    assert!(!repo.has_uncommitted_changes());

    // Not due: nothing is signed, however often it is asked.
    let window = Duration::days(1);
    assert!(
        repo.refresh_timestamp(&signers(&k), t1 + Duration::hours(1), window)
            .unwrap()
            .is_empty()
    );

    // Due: timestamp only (the snapshot outlives the new timestamp), once.
    let t2 = t1 + Duration::days(6) + Duration::hours(1);
    assert_eq!(
        repo.refresh_timestamp(&signers(&k), t2, window).unwrap(),
        ["timestamp"]
    );
    assert!(
        repo.refresh_timestamp(&signers(&k), t2, window)
            .unwrap()
            .is_empty()
    );
    assert_eq!(check_files(&repo.files().unwrap()), (2, 2, 3));
    assert_round_trips(&repo);

    // The snapshot would expire before the next timestamp: both are re-signed.
    let t3 = t1 + Duration::days(12) + Duration::hours(1);
    assert_eq!(
        repo.refresh_timestamp(&signers(&k), t3, window).unwrap(),
        ["snapshot", "timestamp"]
    );
    assert_eq!(check_files(&repo.files().unwrap()), (2, 3, 4));
    assert_round_trips(&repo);

    // Removing a target is a content change like any other.
    assert!(repo.remove_target("channels/prod/1/index.json").is_some());
    assert!(repo.remove_target("not/there").is_none());
    assert_eq!(
        repo.commit(&signers(&k), t3).unwrap(),
        ["targets", "snapshot", "timestamp"]
    );
    assert_eq!(check_files(&repo.files().unwrap()), (3, 4, 5));
}

#[test]
fn commit_signs_exactly_what_time_requires() {
    let k = keys();
    let mut repo = repo(&k);
    repo.commit(&signers(&k), T0).unwrap();
    // Only time passed: the timestamp.
    assert_eq!(
        repo.commit(&signers(&k), T0 + Duration::days(1)).unwrap(),
        ["timestamp"]
    );
    // The snapshot (expiring T0 + 14d) still outlives a timestamp signed now (T0 + 7d + 7d).
    assert_eq!(
        repo.commit(&signers(&k), T0 + Duration::days(7)).unwrap(),
        ["timestamp"]
    );
    // It no longer would: re-signed too.
    let later = T0 + Duration::days(7) + Duration::seconds(1);
    assert_eq!(
        repo.commit(&signers(&k), later).unwrap(),
        ["snapshot", "timestamp"]
    );
    assert_eq!(check_files(&repo.files().unwrap()), (1, 2, 4));

    // Keys for roles a commit does not sign are not needed.
    let only_ts = RoleSigners {
        timestamp: vec![&k.timestamp],
        ..RoleSigners::default()
    };
    assert_eq!(repo.commit(&only_ts, later).unwrap(), ["timestamp"]);
}

#[test]
fn refuses_wrong_keys_and_missing_thresholds_without_changing_anything() {
    let k = keys();
    let mut repo = repo(&k);
    repo.commit(&signers(&k), T0).unwrap();
    let before = repo.files().unwrap();

    let mut wrong = signers(&k);
    wrong.timestamp = vec![&k.snapshot];
    let err = repo.commit(&wrong, T0).unwrap_err();
    assert!(
        matches!(&err, BuildError::KeyNotInRole { role, keyid } if role == "timestamp" && *keyid == k.snapshot.key_id())
    );
    assert!(err.to_string().contains("is not a timestamp key"), "{err}");

    repo.add_target("a.txt", target(b"a")).unwrap();
    let no_targets_key = RoleSigners {
        targets: vec![],
        ..signers(&k)
    };
    let err = repo.commit(&no_targets_key, T0).unwrap_err();
    assert_eq!(
        err.to_string(),
        "not enough keys to sign: targets: 0 valid signature(s) from distinct trusted keys, 1 required"
    );
    // Nothing was signed: the staged edit is still staged and the published files are unchanged.
    assert!(repo.has_uncommitted_changes());
    repo.remove_target("a.txt");
    repo.commit(&signers(&k), T0).unwrap();
    assert_eq!(check_files(&repo.files().unwrap()), (1, 1, 2));
    assert_ne!(repo.files().unwrap(), before);

    let err = repo
        .refresh_timestamp(&signers(&k), T0, Duration::days(7))
        .unwrap_err();
    assert!(matches!(err, BuildError::RefreshWindow { .. }), "{err}");

    let mut bad = spec(&k);
    bad.snapshot.threshold = 0;
    assert!(matches!(
        new_root(&bad, 1, Expiry::new(T0)),
        Err(BuildError::Threshold { role, threshold: 0, .. }) if role == "snapshot"
    ));
    bad.snapshot.threshold = 2;
    assert!(new_root(&bad, 1, Expiry::new(T0)).is_err());

    let mut unsigned_root = new_root(&spec(&k), 1, Expiry::new(T0)).unwrap();
    assert!(matches!(
        Repository::create(unsigned_root.clone(), T0, Expiries::default()),
        Err(BuildError::RootSignatures {
            version: 1,
            by_version: 1,
            ..
        })
    ));
    unsigned_root.sign(&k.targets);
    assert!(Repository::create(unsigned_root, T0, Expiries::default()).is_err());
}

#[test]
fn root_rotation_one_to_two_with_new_keys_and_threshold_two() {
    let k = keys();
    let mut repo = repo(&k);
    repo.commit(&signers(&k), T0).unwrap();

    let (r1, r2, r3) = (
        SigningKey::from_seed(&[21; 32]),
        SigningKey::from_seed(&[22; 32]),
        SigningKey::from_seed(&[23; 32]),
    );
    let new_ts = SigningKey::from_seed(&[24; 32]);
    let mut next_spec = RootSpec::from_root(&repo.root().signed).unwrap();
    next_spec.root = RoleSpec {
        keys: vec![r1.public(), r2.public(), r3.public()],
        threshold: 2,
    };
    next_spec.timestamp = one(&new_ts);
    let mut v2 = rotate_root(
        &repo.root().signed,
        &next_spec,
        Expiry::new(T0 + Duration::days(365)),
    )
    .unwrap();
    assert_eq!(v2.version(), 2);

    let status = |v2: &Signed<Root>, repo: &Repository| root_signing_status(v2, Some(repo.root()));
    let s = status(&v2, &repo);
    assert_eq!(
        (s.have_new, s.need_new, s.have_prev, s.need_prev),
        (0, 2, 0, 1)
    );
    assert_eq!(s.missing_keyids.len(), 4);
    assert!(matches!(
        repo.push_root(v2.clone()),
        Err(BuildError::RootSignatures { .. })
    ));

    v2.sign(&r1);
    v2.sign(&r2);
    let s = status(&v2, &repo);
    assert_eq!((s.have_new, s.have_prev), (2, 0));
    assert_eq!(s.missing_keyids, vec![k.root.key_id()]);
    let err = repo.push_root(v2.clone()).unwrap_err();
    assert!(
        err.to_string()
            .contains("root version 2 lacks signatures of root version 1's keys"),
        "{err}"
    );

    v2.sign(&k.root);
    assert!(status(&v2, &repo).is_complete());
    repo.push_root(v2.clone()).unwrap();
    assert!(repo.push_root(v2).is_err(), "version 2 again");

    // The old timestamp key is no longer a timestamp key; the new one re-signs only the timestamp, since
    // targets and snapshot still verify under root 2.
    assert!(matches!(
        repo.commit(&signers(&k), T0),
        Err(BuildError::KeyNotInRole { .. })
    ));
    let rotated = RoleSigners {
        timestamp: vec![&new_ts],
        ..signers(&k)
    };
    assert_eq!(repo.commit(&rotated, T0).unwrap(), ["timestamp"]);
    let files = repo.files().unwrap();
    assert_eq!(check_files(&files), (1, 1, 2));
    assert!(files.iter().any(|(n, _)| n == "metadata/1.root.json"));
    assert!(files.iter().any(|(n, _)| n == "metadata/2.root.json"));
    assert_round_trips(&repo);
}

#[test]
fn delegated_roles_are_signed_listed_and_named_after_the_role() {
    let k = keys();
    let team = SigningKey::from_seed(&[30; 32]);
    let mut repo = repo(&k);
    repo.delegate(
        "targets",
        DelegationSpec {
            name: "prod-eu.team".to_owned(),
            keys: one(&team),
            paths: vec!["channels/prod-eu/*/*".to_owned()],
            terminating: true,
        },
    )
    .unwrap();
    let err = repo
        .add_target_to("prod-eu.team", "channels/prod/1/x", target(b"x"))
        .unwrap_err();
    assert!(
        matches!(err, BuildError::TargetNotDelegated { .. }),
        "{err}"
    );
    repo.add_target_to(
        "prod-eu.team",
        "channels/prod-eu/1/bundle.tar.gz",
        target(b"b"),
    )
    .unwrap();
    assert!(matches!(
        repo.add_target_to("nobody", "a", target(b"a")),
        Err(BuildError::UnknownRole(_))
    ));

    let mut s = signers(&k);
    assert!(
        matches!(repo.commit(&s, T0), Err(BuildError::NotEnoughKeys(e)) if e.role == "prod-eu.team")
    );
    s.delegated
        .insert("prod-eu.team".to_owned(), vec![&k.targets]);
    assert!(matches!(
        repo.commit(&s, T0),
        Err(BuildError::KeyNotInRole { .. })
    ));
    s.delegated.insert("prod-eu.team".to_owned(), vec![&team]);
    assert_eq!(
        repo.commit(&s, T0).unwrap(),
        ["targets", "prod-eu.team", "snapshot", "timestamp"]
    );

    let files = repo.files().unwrap();
    assert_eq!(check_files(&files), (1, 1, 1));
    let bytes = &files
        .iter()
        .find(|(n, _)| n == "metadata/1.prod-eu.team.json")
        .unwrap()
        .1;
    let doc = Signed::<Targets>::from_slice(bytes).unwrap();
    check_meta(&repo.snapshot().signed.meta["prod-eu.team.json"], bytes);
    let delegations = repo.targets().signed.delegations.as_ref().unwrap();
    let role = &delegations.roles[0];
    verify_threshold(
        &doc,
        &role.name,
        &delegations.keys,
        &role.keyids,
        role.threshold,
    )
    .unwrap();
    assert_round_trips(&repo);

    // A change in the delegated role alone re-signs it, snapshot and timestamp, not targets.
    repo.add_target_to(
        "prod-eu.team",
        "channels/prod-eu/2/bundle.tar.gz",
        target(b"c"),
    )
    .unwrap();
    assert_eq!(
        repo.commit(&s, T0).unwrap(),
        ["prod-eu.team", "snapshot", "timestamp"]
    );
    assert_eq!(repo.delegated_role("prod-eu.team").unwrap().version(), 2);
    assert!(matches!(
        repo.delegate(
            "targets",
            DelegationSpec {
                name: "prod-eu.team".into(),
                keys: one(&team),
                paths: vec![],
                terminating: false
            }
        ),
        Err(BuildError::RoleExists(_))
    ));
    // Names that quoting would change, and reserved names, are refused.
    for name in ["prod/eu team", "targets", "", "é"] {
        let spec = DelegationSpec {
            name: name.into(),
            keys: one(&team),
            paths: vec![],
            terminating: false,
        };
        assert!(
            matches!(
                repo.delegate("targets", spec),
                Err(BuildError::RoleName { .. })
            ),
            "{name:?}"
        );
    }
}

#[test]
fn load_names_the_file_that_is_missing_or_tampered() {
    let k = keys();
    let mut repo = repo(&k);
    repo.add_target("a.txt", target(b"a")).unwrap();
    repo.commit(&signers(&k), T0).unwrap();
    let files = repo.files().unwrap();

    let load = |files: &[(String, Vec<u8>)]| {
        Repository::load(files.iter().map(|(n, b)| (n.clone(), b.clone())))
    };

    let mut tampered = files.clone();
    let targets = tampered
        .iter_mut()
        .find(|(n, _)| n == "metadata/1.targets.json")
        .unwrap();
    let at = targets.1.len() - 3;
    targets.1[at] ^= 1;
    let err = load(&tampered).unwrap_err();
    assert!(
        err.to_string().starts_with("metadata/1.targets.json: "),
        "{err}"
    );

    let without_ts: Vec<_> = files
        .iter()
        .filter(|(n, _)| n != "metadata/timestamp.json")
        .cloned()
        .collect();
    assert_eq!(
        load(&without_ts).unwrap_err().to_string(),
        "metadata/timestamp.json: missing"
    );

    // A later root without the one before it breaks the chain.
    let mut gap = files.clone();
    let root1 = gap
        .iter()
        .position(|(n, _)| n == "metadata/1.root.json")
        .unwrap();
    gap[root1].0 = "metadata/2.root.json".to_owned();
    assert_eq!(
        load(&gap).unwrap_err().to_string(),
        "metadata/1.root.json: missing"
    );

    // Files outside metadata/ (targets, stray notes) are ignored.
    let mut extra = files.clone();
    extra.push(("targets/whatever".to_owned(), b"x".to_vec()));
    extra.push(("metadata/README".to_owned(), b"x".to_vec()));
    assert_eq!(load(&extra).unwrap().files().unwrap(), files);
}
