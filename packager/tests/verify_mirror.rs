//! `mast verify` refuses every way a mirror can be wrong, naming what is wrong, with a non-zero exit; and
//! says which release a site would apply when nothing is.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod publish_support;

use mast_protocol::crypto::SigningKey;
use mast_protocol::release::{parse_waves_spec, seed_for};
use mast_protocol::tuf::Expiry;
use mast_protocol::tuf::builder::{RoleSpec, RootSpec, new_root};
use publish_support::{Made, TestRepo, as_files, manifests, run, run_json};
use time::{Duration, OffsetDateTime};

/// A published mirror (a copy of the repository without `.mast/`) and its repository.
fn mirror() -> (TestRepo, Made, tempfile::TempDir) {
    let mut repo = TestRepo::new();
    repo.release("prod", 1, &as_files(&manifests(3, 40_000, 20)));
    let made = repo.release("prod", 2, &as_files(&manifests(3, 40_000, 21)));
    let dest = tempfile::tempdir().unwrap();
    run_json(&[
        "publish",
        repo.path().to_str().unwrap(),
        "--to",
        &format!("dir:{}", dest.path().display()),
    ]);
    (repo, made, dest)
}

fn verify(root: &std::path::Path, dir: &std::path::Path, extra: &[&str]) -> (bool, String) {
    let (code, text) = verify_code(root, dir, extra);
    (code == Some(0), text)
}

fn verify_code(
    root: &std::path::Path,
    dir: &std::path::Path,
    extra: &[&str],
) -> (Option<i32>, String) {
    let channel = if extra.first() == Some(&"--channel") {
        extra[1]
    } else {
        "prod"
    };
    let extra = if extra.first() == Some(&"--channel") {
        &extra[2..]
    } else {
        extra
    };
    let mirror = format!("dir:{}", dir.display());
    let mut args = vec![
        "verify",
        &mirror,
        "--root",
        root.to_str().unwrap(),
        "--channel",
        channel,
    ];
    args.extend_from_slice(extra);
    let out = run(&args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

#[test]
fn says_which_release_a_site_would_apply() {
    let (repo, made, dest) = mirror();
    let (ok, text) = verify(&repo.root_file(), dest.path(), &[]);
    assert!(ok, "{text}");
    assert!(
        text.contains("a site would apply release 2")
            && text.contains(&made.bundle_sha256.to_hex()),
        "{text}"
    );
    let report = run_json(&[
        "verify",
        &format!("file://{}", dest.path().display()),
        "--root",
        repo.root_file().to_str().unwrap(),
        "--channel",
        "prod",
    ]);
    assert_eq!(report["release"], 2);
    assert_eq!(report["index"]["sha256"], made.index_sha256.to_hex());
    assert_eq!(report["bundle"]["length"], made.bundle_length);
    assert_eq!(report["metadata"]["timestamp"], 2);
}

#[test]
fn refuses_a_tampered_chunk_bundle_or_missing_metadata() {
    let (repo, made, dest) = mirror();
    let chunk = dest.path().join(format!("chunks/{}", made.chunks[0]));
    let honest = std::fs::read(&chunk).unwrap();
    let mut bad = honest.clone();
    bad[3] ^= 0x80;
    std::fs::write(&chunk, &bad).unwrap();
    let (code, text) = verify_code(&repo.root_file(), dest.path(), &[]);
    assert_eq!(code, Some(65), "{text}");
    assert!(
        text.contains(&format!("chunks/{}", made.chunks[0])),
        "{text}"
    );
    std::fs::write(&chunk, &honest).unwrap();

    let bundle = dest.path().join(format!(
        "targets/channels/prod/2/{}.bundle.tar.gz",
        made.bundle_sha256
    ));
    let gz = std::fs::read(&bundle).unwrap();
    std::fs::write(&bundle, [&gz[..], b"x"].concat()).unwrap();
    let (ok, text) = verify(&repo.root_file(), dest.path(), &[]);
    assert!(!ok);
    assert!(
        text.contains("bundle.tar.gz") && text.contains("longer than the signed"),
        "{text}"
    );
    std::fs::write(&bundle, &gz).unwrap();

    std::fs::remove_file(dest.path().join("metadata/2.snapshot.json")).unwrap();
    let (ok, text) = verify(&repo.root_file(), dest.path(), &[]);
    assert!(!ok);
    assert!(text.contains("2.snapshot.json is missing"), "{text}");
}

#[test]
fn refuses_another_root_an_unknown_channel_and_a_too_old_agent() {
    let (repo, _, dest) = mirror();
    // A root of other keys: the mirror's metadata is not signed by what this site trusts.
    let k = SigningKey::from_seed(&[99; 32]);
    let one = RoleSpec {
        keys: vec![k.public()],
        threshold: 1,
    };
    let spec = RootSpec {
        root: one.clone(),
        targets: one.clone(),
        snapshot: one.clone(),
        timestamp: one,
    };
    let mut root = new_root(
        &spec,
        1,
        Expiry::new(OffsetDateTime::now_utc() + Duration::days(1)),
    )
    .unwrap();
    root.sign(&k);
    let other = dest.path().join("other-root.json");
    std::fs::write(&other, root.to_bytes().unwrap()).unwrap();
    let (ok, text) = verify(&other, dest.path(), &[]);
    assert!(!ok);
    assert!(text.contains("timestamp.json"), "{text}");

    let (ok, text) = verify(&repo.root_file(), dest.path(), &["--channel", "canary"]);
    assert!(!ok);
    assert!(text.contains("channel canary has no release"), "{text}");

    let (ok, text) = verify(
        &repo.root_file(),
        dest.path(),
        &["--agent-version", "0.0.9"],
    );
    assert!(!ok);
    assert!(text.contains("needs agent 0.1.0"), "{text}");

    let (code, text) = verify_code(&dest.path().join("nope.json"), dest.path(), &[]);
    assert_eq!(code, Some(66), "{text}");
    assert!(
        text.contains("--root") && text.contains("nope.json"),
        "{text}"
    );
}

#[test]
fn reports_the_rollout_and_what_one_site_may_do_now() {
    let mut repo = TestRepo::new();
    let waves = parse_waves_spec("50%@+0h,100%@+1d", OffsetDateTime::now_utc()).unwrap();
    repo.release_with_waves("prod", 1, &as_files(&manifests(2, 1000, 22)), waves);
    let dest = tempfile::tempdir().unwrap();
    let to = format!("dir:{}", dest.path().display());
    run_json(&["publish", repo.path().to_str().unwrap(), "--to", &to]);
    let early = (0..)
        .map(|i| format!("site-{i}"))
        .find(|id| seed_for(id) < 5000)
        .unwrap();
    let late = (0..)
        .map(|i| format!("site-{i}"))
        .find(|id| seed_for(id) >= 5000)
        .unwrap();
    let verdict = |id: &str| {
        run_json(&[
            "verify",
            &to,
            "--root",
            repo.root_file().to_str().unwrap(),
            "--channel",
            "prod",
            "--cluster-id",
            id,
        ])
    };
    let now = verdict(&early);
    assert_eq!(now["waves"].as_array().unwrap().len(), 2, "{now}");
    assert_eq!(now["waves"][0]["seed_below"], 5000);
    assert_eq!(now["rollout"]["decision"], "apply_now", "{now}");
    assert_eq!(now["rollout"]["seed"], seed_for(&early));
    let later = verdict(&late);
    assert_eq!(later["rollout"]["decision"], "not_before", "{later}");
    assert_eq!(later["rollout"]["not_before"], later["waves"][1]["start"]);

    let (ok, text) = verify(&repo.root_file(), dest.path(), &["--cluster-id", &late]);
    assert!(ok, "{text}");
    assert!(
        text.contains(&format!("cluster {late}")) && text.contains("applies it from"),
        "{text}"
    );
}
