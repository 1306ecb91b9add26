//! `mast pack` through the real binary: determinism across machines' accidents (mtimes, creation order,
//! modes, umask), and every refusal naming the file and writing nothing.

// Helpers outside #[test] functions unwrap too: a panic is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cli_support;

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::{Duration, SystemTime};

use cli_support::{fails, json, manifests, object, ok, s, write};

/// Packs `dir` into `out` and returns the reported sha256, checking it against the file's own digest.
fn pack(dir: &Path, out: &Path) -> String {
    let report = json(&["pack", s(dir), "--out", s(out)]);
    let sha = report["sha256"].as_str().unwrap().to_owned();
    let bytes = std::fs::read(out).unwrap();
    assert_eq!(
        mast_protocol::digest::Sha256Digest::of(&bytes).to_hex(),
        sha,
        "the reported digest is the bundle file's"
    );
    sha
}

#[test]
fn same_tree_same_digest_whatever_mtimes_order_modes_and_umask() {
    let work = tempfile::tempdir().unwrap();
    let (a, b) = (work.path().join("a"), work.path().join("b"));
    let files: Vec<(String, String)> = (0..40)
        .map(|i| {
            (
                format!("d{}/obj-{i}.yaml", i % 4),
                object("v1", "ConfigMap", Some("prod"), &format!("cm-{i}")),
            )
        })
        .collect();
    for (rel, text) in &files {
        write(&a, rel, text);
    }
    // The second tree: reverse creation order, other modes, scattered mtimes, and an ignored hidden dir.
    for (i, (rel, text)) in files.iter().enumerate().rev() {
        write(&b, rel, text);
        let path = b.join(rel);
        let mode = if i % 2 == 0 { 0o600 } else { 0o755 };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        let file = std::fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + i as u64 * 7919),
        )
        .unwrap();
    }
    write(&b, ".git/HEAD", "ref: refs/heads/main\n");

    let first = pack(&a, &work.path().join("a.tar"));
    // Under umask 077, as a locked-down CI runner might be.
    let out_b = work.path().join("b.tar");
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "umask 077 && exec {} pack {} --out {}",
            env!("CARGO_BIN_EXE_mast"),
            s(&b),
            s(&out_b)
        ))
        .status()
        .unwrap();
    assert!(status.success());
    let second = mast_protocol::digest::Sha256Digest::of(&std::fs::read(&out_b).unwrap()).to_hex();
    assert_eq!(first, second);
    assert_eq!(
        std::fs::read(work.path().join("a.tar")).unwrap(),
        std::fs::read(&out_b).unwrap()
    );
    // Packing again gives the same bytes too.
    assert_eq!(pack(&a, &work.path().join("again.tar")), first);
}

#[test]
fn a_changed_file_changes_the_digest() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("m");
    manifests(&dir);
    let before = pack(&dir, &work.path().join("1.tar"));
    write(&dir, "ns.yaml", &object("v1", "Namespace", None, "staging"));
    assert_ne!(pack(&dir, &work.path().join("2.tar")), before);
}

/// Asserts that packing `dir` fails with `code`, that stderr names every one of `names`, and that no
/// bundle file was written.
fn refused(dir: &Path, code: i32, names: &[&str]) -> String {
    let out = dir.parent().unwrap().join("out.tar");
    let stderr = fails(&["pack", s(dir), "--out", s(&out)], code);
    for name in names {
        assert!(stderr.contains(name), "{name:?} not in: {stderr}");
    }
    assert!(!out.exists(), "a refused pack wrote {}", out.display());
    stderr
}

#[test]
fn duplicate_objects_are_refused_naming_both_files() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("m");
    manifests(&dir);
    // Same group, kind, namespace and name under another apiVersion: the same object to the API server.
    write(
        &dir,
        "z/again.yaml",
        &object("apps/v1beta2", "Deployment", Some("prod"), "web"),
    );
    let err = refused(
        &dir,
        65,
        &["apps/web.yaml", "z/again.yaml", "apps/Deployment prod/web"],
    );
    assert!(err.contains("duplicate"), "{err}");

    // Within one file as well.
    let dir2 = work.path().join("m2");
    let cm = object("v1", "ConfigMap", Some("a"), "x");
    write(&dir2, "one.yaml", &format!("{cm}---\n{cm}"));
    refused(
        &dir2,
        65,
        &["one.yaml (document 1)", "one.yaml (document 2)"],
    );

    // The same name in another namespace is another object.
    let dir3 = work.path().join("m3");
    write(&dir3, "a.yaml", &object("v1", "ConfigMap", Some("a"), "x"));
    write(&dir3, "b.yaml", &object("v1", "ConfigMap", Some("b"), "x"));
    ok(&["pack", s(&dir3), "--out", s(&work.path().join("m3.tar"))]);
}

#[test]
fn non_kubernetes_yaml_is_refused_naming_file_and_field() {
    let work = tempfile::tempdir().unwrap();
    let cases = [
        (
            "no-kind.yaml",
            "apiVersion: v1\nmetadata:\n  name: x\n",
            "kind",
        ),
        (
            "no-name.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n",
            "metadata.name",
        ),
        ("list.yaml", "- a\n- b\n", "not a Kubernetes object"),
        (
            "broken.yaml",
            "apiVersion: v1\nkind: [unclosed\n",
            "invalid YAML",
        ),
        (
            "dupkey.yaml",
            "apiVersion: v1\napiVersion: v2\nkind: A\nmetadata: {name: a}\n",
            "dupkey.yaml",
        ),
    ];
    for (i, (file, text, field)) in cases.iter().enumerate() {
        let dir = work.path().join(format!("case{i}"));
        manifests(&dir);
        write(&dir, &format!("sub/{file}"), text);
        refused(&dir, 65, &[&format!("sub/{file}"), field]);
    }
}

#[test]
fn files_that_are_not_manifests_and_bad_options_are_refused() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("readme");
    manifests(&dir);
    write(&dir, "README.md", "# hello\n");
    refused(&dir, 65, &["README.md", "not a manifest"]);

    let dir = work.path().join("options");
    manifests(&dir);
    write(&dir, "mast.toml", "prune = \"sometimes\"\n");
    refused(&dir, 65, &["mast.toml"]);

    let dir = work.path().join("two-options");
    manifests(&dir);
    write(&dir, "mast.yaml", "drift: correct\n");
    refused(
        &dir,
        65,
        &["mast.toml", "mast.yaml", "at most one options file"],
    );

    let dir = work.path().join("empty");
    std::fs::create_dir_all(&dir).unwrap();
    refused(&dir, 65, &["no manifests"]);

    let missing = work.path().join("missing");
    refused(&missing, 66, &["missing"]);
}

#[test]
fn symlinks_out_of_the_directory_are_refused() {
    let work = tempfile::tempdir().unwrap();
    write(
        work.path(),
        "outside.yaml",
        &object("v1", "Secret", Some("prod"), "stolen"),
    );

    let dir = work.path().join("m");
    manifests(&dir);
    std::os::unix::fs::symlink("../../outside.yaml", dir.join("apps/link.yaml")).unwrap();
    refused(&dir, 65, &["apps/link.yaml", "outside"]);

    // An absolute link out, and a link to a directory out, are refused too.
    let dir = work.path().join("abs");
    manifests(&dir);
    std::os::unix::fs::symlink(work.path().join("outside.yaml"), dir.join("abs.yaml")).unwrap();
    refused(&dir, 65, &["abs.yaml", "outside"]);
    let dir = work.path().join("dirlink");
    manifests(&dir);
    std::os::unix::fs::symlink("..", dir.join("up")).unwrap();
    refused(&dir, 65, &["up", "outside"]);

    // A link that stays inside is packed as the file it points at.
    let dir = work.path().join("inside");
    manifests(&dir);
    std::fs::rename(dir.join("ns.yaml"), dir.join("real-ns.yaml")).unwrap();
    std::os::unix::fs::symlink("real-ns.yaml", dir.join("ns.yaml")).unwrap();
    // Two paths with one object: the duplicate check sees through the link.
    refused(&dir, 65, &["ns.yaml", "real-ns.yaml", "duplicate"]);
}

#[test]
fn output_inside_the_directory_is_refused() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("m");
    manifests(&dir);
    let err = fails(&["pack", s(&dir), "--out", s(&dir.join("b.tar"))], 64);
    assert!(err.contains("--out"), "{err}");
    assert!(!dir.join("b.tar").exists());
}

#[test]
fn inspect_lists_objects_by_kind_and_namespace() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("m");
    manifests(&dir);
    let out = work.path().join("b.tar");
    let sha = pack(&dir, &out);
    let report = json(&["inspect", s(&out)]);
    assert_eq!(report["type"], "bundle");
    assert_eq!(report["sha256"], sha.as_str());
    assert_eq!(report["objects"], 4);
    let kinds: Vec<(String, Option<String>, u64)> = report["kinds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["kind"].as_str().unwrap().to_owned(),
                k["namespace"].as_str().map(str::to_owned),
                k["objects"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("ConfigMap".to_owned(), Some("prod".to_owned()), 1),
            ("Namespace".to_owned(), None, 1),
            ("Service".to_owned(), Some("prod".to_owned()), 1),
            ("apps/Deployment".to_owned(), Some("prod".to_owned()), 1),
        ]
    );
    assert_eq!(report["options"]["prune"], "orphan");
    // The directory itself inspects to the same digest.
    assert_eq!(json(&["inspect", s(&dir)])["sha256"], sha.as_str());
    let text = ok(&["inspect", s(&out)]);
    assert!(
        text.contains("apps/Deployment") && text.contains(&sha),
        "{text}"
    );
}
