//! The state database on real SQLite files: durability settings, migrations, each table's operations,
//! the trust store under the real TUF client, and a writer killed with SIGKILL mid-transaction.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration as StdDuration;

use mast_mirror::DirMirror;
use mast_mirror::client::Client;
use mast_protocol::crypto::SigningKey;
use mast_protocol::tuf::builder::{
    Expiries, Repository, RoleSigners, RoleSpec, RootSpec, new_root, rotate_root,
};
use mast_protocol::tuf::{Expiry, Limits, RoleName, TrustedFile, TrustedMetadata};
use time::Duration;
use time::macros::datetime;

use super::*;

const NOW: OffsetDateTime = datetime!(2026-11-29 12:00 UTC);

fn digest(n: u8) -> Sha256Digest {
    Sha256Digest::of(&[n])
}

fn open(dir: &Path) -> State {
    State::open(&dir.join("state.db")).unwrap()
}

#[test]
fn opens_in_wal_with_full_sync_and_the_current_schema() {
    let dir = tempfile::tempdir().unwrap();
    let state = open(dir.path());
    let pragma = |name: &str| -> String {
        state
            .conn
            .pragma_query_value(None, name, |row| row.get::<_, rusqlite::types::Value>(0))
            .map(|v| format!("{v:?}"))
            .unwrap()
    };
    assert_eq!(pragma("journal_mode"), "Text(\"wal\")");
    // 2 = FULL.
    assert_eq!(pragma("synchronous"), "Integer(2)");
    assert_eq!(pragma("user_version"), format!("Integer({SCHEMA_VERSION})"));
    assert!(dir.path().join("state.db-wal").exists());
    state.integrity_check().unwrap();
}

#[test]
fn a_batch_of_chunks_is_stored_whole_and_again_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let batch: Vec<_> = (1..=3).map(|n| (digest(n), vec![n; 100])).collect();
    {
        let mut state = open(dir.path());
        state.put_chunk(&digest(2), &[2; 100], NOW).unwrap();
        // The one held before is not counted; nothing is, the second time.
        assert_eq!(state.put_chunks(&batch, NOW).unwrap(), 2);
        assert_eq!(state.put_chunks(&batch, NOW).unwrap(), 0);
        assert_eq!(state.put_chunks(&[], NOW).unwrap(), 0);
    }
    let state = open(dir.path());
    for (sha256, bytes) in &batch {
        assert_eq!(state.chunk(sha256).unwrap().as_ref(), Some(bytes));
    }
    assert!(!state.has_chunk(&digest(4)).unwrap());
}

#[test]
fn reopening_migrates_nothing_and_keeps_every_table() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut state = open(dir.path());
        state.put_chunk(&digest(1), b"chunk one", NOW).unwrap();
        state
            .set_fact("last_contact", "2026-11-29T12:00:00Z")
            .unwrap();
        state
            .journal_append("prod", 7, JournalState::Healthy, "", NOW)
            .unwrap();
        state.outbox_push("status", "{}", NOW).unwrap();
    }
    let state = open(dir.path());
    assert_eq!(state.chunk(&digest(1)).unwrap().unwrap(), b"chunk one");
    assert_eq!(
        state.fact("last_contact").unwrap().as_deref(),
        Some("2026-11-29T12:00:00Z")
    );
    assert_eq!(state.journal(10).unwrap().len(), 1);
    assert_eq!(state.outbox_pending(10).unwrap().len(), 1);
}

#[test]
fn a_database_from_a_newer_agent_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    drop(State::open(&path).unwrap());
    {
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 5)
            .unwrap();
    }
    let before = std::fs::read(&path).unwrap();
    let err = State::open(&path).unwrap_err();
    assert!(matches!(err, StateError::SchemaTooNew { found, .. } if found == SCHEMA_VERSION + 5));
    let message = err.to_string();
    assert!(message.contains("state.db"), "{message}");
    assert!(message.contains("newer than this agent"), "{message}");
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

#[test]
fn a_file_that_is_not_a_database_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    std::fs::write(
        &path,
        b"this is a config file, not a database, and it is long enough",
    )
    .unwrap();
    let err = State::open(&path).unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, StateError::Sql { .. }), "{err:?}");
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        b"this is a config file, not a database, and it is long enough"
    );
}

#[test]
fn store_ops_replace_roles_and_highest_versions_only_rise() {
    let dir = tempfile::tempdir().unwrap();
    let mut state = open(dir.path());
    let save = |role: RoleName, version: u64, bytes: &[u8]| {
        StoreOp::Save(TrustedFile {
            role,
            version,
            bytes: bytes.to_vec(),
        })
    };
    let mut trust = state.trust_store(NOW);
    trust.apply(&save(RoleName::Root, 1, b"root v1")).unwrap();
    trust
        .apply(&save(RoleName::Timestamp, 5, b"ts v5"))
        .unwrap();
    trust
        .apply(&save(RoleName::Timestamp, 6, b"ts v6"))
        .unwrap();
    // A fast-forward recovery discards the role; its highest version stays on record.
    trust.apply(&StoreOp::Discard(RoleName::Timestamp)).unwrap();
    trust
        .apply(&save(RoleName::Timestamp, 1, b"ts v1"))
        .unwrap();
    let files = state.trusted().unwrap();
    assert_eq!(files.root.as_deref(), Some(&b"root v1"[..]));
    assert_eq!(files.timestamp.as_deref(), Some(&b"ts v1"[..]));
    assert_eq!(files.snapshot, None);
    assert_eq!(state.highest_version("timestamp").unwrap(), Some(6));
    assert_eq!(state.highest_version("snapshot").unwrap(), None);
}

#[test]
fn the_configured_root_never_replaces_a_rotated_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut state = open(dir.path());
    assert!(state.trust_initial_root(b"root v1", 1, NOW).unwrap());
    state
        .trust_store(NOW)
        .apply(&StoreOp::Save(TrustedFile {
            role: RoleName::Root,
            version: 2,
            bytes: b"root v2".to_vec(),
        }))
        .unwrap();
    assert!(!state.trust_initial_root(b"root v1", 1, NOW).unwrap());
    assert_eq!(
        state.trusted().unwrap().root.as_deref(),
        Some(&b"root v2"[..])
    );
    assert_eq!(state.highest_version("root").unwrap(), Some(2));
}

#[test]
fn gc_keeps_the_chunks_of_the_newest_releases_per_channel() {
    let dir = tempfile::tempdir().unwrap();
    let mut state = open(dir.path());
    for n in 1..=5u8 {
        state.put_chunk(&digest(n), &[n], NOW).unwrap();
    }
    // Releases 1..3 on prod share chunk 1; staging's one release holds chunk 5.
    state
        .record_release("prod", 1, &digest(101), b"{}", &[digest(1), digest(2)], NOW)
        .unwrap();
    state
        .record_release("prod", 2, &digest(102), b"{}", &[digest(1), digest(3)], NOW)
        .unwrap();
    state
        .record_release("prod", 3, &digest(103), b"{}", &[digest(1), digest(4)], NOW)
        .unwrap();
    state
        .record_release("staging", 1, &digest(201), b"{}", &[digest(5)], NOW)
        .unwrap();
    assert_eq!(state.gc_chunks(2).unwrap(), 1);
    let held: Vec<bool> = (1..=5u8)
        .map(|n| state.has_chunk(&digest(n)).unwrap())
        .collect();
    assert_eq!(held, [true, false, true, true, true]);
    assert_eq!(state.gc_chunks(2).unwrap(), 0);
    // The site runs release 2 (3 failed and was rolled back): its chunks survive a keep of 1.
    state
        .journal_append("prod", 2, JournalState::Healthy, "", NOW)
        .unwrap();
    state
        .journal_append("prod", 3, JournalState::Failed, "unhealthy", NOW)
        .unwrap();
    assert_eq!(state.gc_chunks(1).unwrap(), 0);
    assert!(state.has_chunk(&digest(3)).unwrap());
    state
        .journal_append("prod", 3, JournalState::Healthy, "", NOW)
        .unwrap();
    assert_eq!(state.gc_chunks(1).unwrap(), 1);
    assert!(!state.has_chunk(&digest(3)).unwrap());
}

#[test]
fn downloads_record_progress_and_validators_until_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let mut state = open(dir.path());
    let mut download = Download {
        object: "chunks/aa".to_owned(),
        mirror: "https://cdn.example/mast".to_owned(),
        sha256: digest(9),
        length: 1000,
        offset: 0,
        etag: Some("\"abc\"".to_owned()),
        last_modified: None,
    };
    state.save_download(&download, NOW).unwrap();
    download.offset = 640;
    state.save_download(&download, NOW).unwrap();
    drop(state);
    let mut state = open(dir.path());
    assert_eq!(state.download("chunks/aa").unwrap(), Some(download.clone()));
    // An offset past the signed length is a bug in the caller; the schema refuses it.
    download.offset = 1001;
    assert!(state.save_download(&download, NOW).is_err());
    state.forget_download("chunks/aa").unwrap();
    assert_eq!(state.download("chunks/aa").unwrap(), None);
}

#[test]
fn the_journal_reads_newest_first_and_finds_the_last_healthy_release() {
    let dir = tempfile::tempdir().unwrap();
    let mut state = open(dir.path());
    let steps = [
        (4, JournalState::Staged, ""),
        (4, JournalState::Applied, ""),
        (4, JournalState::Healthy, ""),
        (5, JournalState::Staged, ""),
        (5, JournalState::Applied, ""),
        (
            5,
            JournalState::Failed,
            "Deployment web: 0/3 ready after 300s",
        ),
        (4, JournalState::RolledBack, "5 failed"),
    ];
    for (release, step, detail) in steps {
        state
            .journal_append("prod", release, step, detail, NOW)
            .unwrap();
    }
    let journal = state.journal(3).unwrap();
    let seen: Vec<(u64, JournalState)> = journal.iter().map(|e| (e.release, e.state)).collect();
    assert_eq!(
        seen,
        [
            (4, JournalState::RolledBack),
            (5, JournalState::Failed),
            (5, JournalState::Applied)
        ]
    );
    let healthy = state.last_in_state(JournalState::Healthy).unwrap().unwrap();
    assert_eq!(healthy.release, 4);
    assert_eq!(
        state
            .last_in_state(JournalState::Failed)
            .unwrap()
            .unwrap()
            .detail,
        "Deployment web: 0/3 ready after 300s"
    );
}

#[test]
fn the_outbox_keeps_reports_until_sent_and_counts_failures() {
    let dir = tempfile::tempdir().unwrap();
    let mut state = open(dir.path());
    let first = state.outbox_push("status", "{\"release\":4}", NOW).unwrap();
    let second = state.outbox_push("drift", "{\"objects\":1}", NOW).unwrap();
    state.outbox_settle(first, false).unwrap();
    state.outbox_settle(second, true).unwrap();
    let pending = state.outbox_pending(10).unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!((pending[0].id, pending[0].attempts), (first, 1));
    assert_eq!(pending[0].body, "{\"release\":4}");
}

/// A repository on disk with one root rotation, for the trust store under the real client.
fn rotated_repository(dir: &Path) -> Vec<u8> {
    let keys: Vec<SigningKey> = (1..=5u8).map(|i| SigningKey::from_seed(&[i; 32])).collect();
    let one = |k: &SigningKey| RoleSpec {
        keys: vec![k.public()],
        threshold: 1,
    };
    let spec = RootSpec {
        root: one(&keys[0]),
        targets: one(&keys[1]),
        snapshot: one(&keys[2]),
        timestamp: one(&keys[3]),
    };
    let expiry = Expiry::new(NOW + Duration::days(365));
    let mut root = new_root(&spec, 1, expiry).unwrap();
    root.sign(&keys[0]);
    let root_v1 = root.to_bytes().unwrap();
    let mut repo = Repository::create(root.clone(), NOW, Expiries::default()).unwrap();
    let signers = RoleSigners {
        targets: vec![&keys[1]],
        snapshot: vec![&keys[2]],
        timestamp: vec![&keys[3]],
        delegated: BTreeMap::new(),
    };
    repo.commit(&signers, NOW).unwrap();
    // Root 2 moves the root role to key 5, signed by both the old and the new root key.
    let spec2 = RootSpec {
        root: one(&keys[4]),
        ..spec
    };
    let mut root2 = rotate_root(&root.signed, &spec2, expiry).unwrap();
    root2.sign(&keys[0]);
    root2.sign(&keys[4]);
    repo.push_root(root2).unwrap();
    repo.commit(&signers, NOW).unwrap();
    for (name, bytes) in repo.files().unwrap() {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
    root_v1
}

#[tokio::test]
async fn the_real_client_stores_through_sqlite_and_a_restart_resumes_from_it() {
    let repo_dir = tempfile::tempdir().unwrap();
    let root_v1 = rotated_repository(repo_dir.path());
    let mirror = DirMirror::new(repo_dir.path());
    let state_dir = tempfile::tempdir().unwrap();
    {
        let mut state = open(state_dir.path());
        state.trust_initial_root(&root_v1, 1, NOW).unwrap();
        let trusted = TrustedMetadata::new(&root_v1).unwrap();
        let mut client = Client::new(
            &mirror,
            state.trust_store(NOW),
            trusted,
            NOW,
            Limits::default(),
        );
        client.refresh().await.unwrap();
    }
    // A new process: trust comes back from the file alone, at the rotated root.
    let state = open(state_dir.path());
    let files = state.trusted().unwrap();
    let (trusted, discarded) = TrustedMetadata::from_persisted(files.persisted().unwrap()).unwrap();
    assert!(discarded.is_empty(), "{discarded:?}");
    assert_eq!(trusted.root().signed.common.version, 2);
    assert_eq!(state.highest_version("root").unwrap(), Some(2));
    assert!(state.highest_version("timestamp").unwrap().is_some());
    assert!(files.snapshot.is_some() && files.targets.is_some());
}

/// The child side of [`a_writer_killed_with_sigkill_leaves_a_consistent_database`]: writes releases in
/// transactions as fast as it can until killed. Does nothing unless that test started it.
#[test]
#[ignore = "run as a child process by a_writer_killed_with_sigkill_leaves_a_consistent_database"]
fn sigkill_child_writer() {
    let Some(path) = std::env::var_os("MAST_STATE_CHILD_DB") else {
        return;
    };
    let mut state = State::open(Path::new(&path)).unwrap();
    println!("open");
    for release in 1u64.. {
        let chunks: Vec<Sha256Digest> = (0..20u64)
            .map(|i| Sha256Digest::of(&(release * 100 + i).to_be_bytes()))
            .collect();
        for chunk in &chunks {
            state.put_chunk(chunk, &[7u8; 4096], NOW).unwrap();
        }
        state
            .record_release("prod", release, &digest(0), b"{}", &chunks, NOW)
            .unwrap();
        state
            .journal_append("prod", release, JournalState::Staged, "", NOW)
            .unwrap();
    }
}

#[test]
fn a_writer_killed_with_sigkill_leaves_a_consistent_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    for trial in 0..3u64 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "state::tests::sigkill_child_writer",
                "--ignored",
                "--nocapture",
            ])
            .env("MAST_STATE_CHILD_DB", &path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Let it get well into its write loop: a few hundred transactions at least.
        let deadline = std::time::Instant::now() + StdDuration::from_secs(30);
        loop {
            std::thread::sleep(StdDuration::from_millis(50 + 40 * trial));
            let written = Connection::open(&path)
                .and_then(|c| {
                    c.query_row("SELECT count(*) FROM journal", [], |r| r.get::<_, i64>(0))
                })
                .unwrap_or(0);
            if written >= 20 * (trial as i64 + 1) || std::time::Instant::now() > deadline {
                break;
            }
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();

        let state = State::open(&path).unwrap();
        state.integrity_check().unwrap();
        // Every recorded release has all 20 of its chunk rows and their chunks: transactions are whole.
        let conn = &state.conn;
        let partial: i64 = conn
            .query_row(
                "SELECT count(*) FROM (SELECT number FROM release_chunks GROUP BY channel, number
                 HAVING count(*) != 20)",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(partial, 0);
        let orphans: i64 = conn
            .query_row(
                "SELECT count(*) FROM release_chunks WHERE sha256 NOT IN (SELECT sha256 FROM chunks)",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(orphans, 0);
        let journal: i64 = conn
            .query_row("SELECT count(*) FROM journal", [], |r| r.get(0))
            .unwrap();
        assert!(journal > 0, "trial {trial}: the child wrote nothing");
    }
}
