use std::fs;

use mast_protocol::crypto::SigningKey;
use mast_protocol::tuf::Expiry;
use mast_protocol::tuf::builder::{RoleSpec, RootSpec, new_root};
use time::OffsetDateTime;

use super::*;

/// A directory with a signed root and a config file naming it relatively.
fn site(config: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::from_seed(&[3; 32]);
    let one = RoleSpec {
        keys: vec![key.public()],
        threshold: 1,
    };
    let spec = RootSpec {
        root: one.clone(),
        targets: one.clone(),
        snapshot: one.clone(),
        timestamp: one,
    };
    let expiry = Expiry::new(OffsetDateTime::now_utc() + time::Duration::days(365));
    let mut root = new_root(&spec, 1, expiry).unwrap();
    root.sign(&key);
    fs::write(dir.path().join("root.json"), root.to_bytes().unwrap()).unwrap();
    let path = dir.path().join("agent.toml");
    fs::write(&path, config).unwrap();
    (dir, path)
}

const MINIMAL: &str = r#"
cluster_id = "site-0042"
channel = "prod"
mirrors = ["https://cdn.example.com/mast", "oci://registry.example.com/org/mast", "file:///media/usb/mast"]
root = "root.json"
"#;

fn load(path: &Path, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let sources = Sources::default()
        .with_file(path, true)?
        .with_env(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    Config::load(&sources)
}

#[test]
fn a_minimal_file_gets_the_documented_defaults() {
    let (dir, path) = site(MINIMAL);
    let config = load(&path, &[]).unwrap();
    assert_eq!(config.cluster_id.as_str(), "site-0042");
    assert_eq!(config.channel.as_str(), "prod");
    assert_eq!(config.mirrors.len(), 3);
    assert!(matches!(config.mirrors[1], MirrorSpec::Oci { .. }));
    // Relative paths in the file are relative to the file.
    assert_eq!(config.root.path, dir.path().join("root.json"));
    assert_eq!(config.root.version, 1);
    assert_eq!(config.state, PathBuf::from("/var/lib/mast/state.db"));
    assert_eq!(
        config.applier,
        Applier::Dir(PathBuf::from("/var/lib/mast/manifests"))
    );
    assert_eq!(config.poll.interval(), Duration::from_secs(300));
    assert_eq!(config.poll.backoff_cap(), Duration::from_secs(3600));
    assert!(config.windows.is_always_open());
    assert_eq!(config.keep_releases.get(), 3);
    assert_eq!(config.listen, None);
    // Stale after three poll intervals; a kube request gets 30 s.
    assert_eq!(config.stale_after, Duration::from_secs(900));
    assert_eq!(config.kube_timeout, Duration::from_secs(30));
}

#[test]
fn stale_after_follows_the_poll_interval_unless_set() {
    let (_dir, path) = site(MINIMAL);
    let config = load(&path, &[("MAST_POLL_INTERVAL", "1m")]).unwrap();
    assert_eq!(config.stale_after, Duration::from_secs(180));
    let config = load(
        &path,
        &[("MAST_POLL_INTERVAL", "1m"), ("MAST_STALE_AFTER", "2h")],
    )
    .unwrap();
    assert_eq!(config.stale_after, Duration::from_secs(7200));
    let err = load(&path, &[("MAST_KUBE_TIMEOUT", "0s")]).unwrap_err();
    assert!(err.to_string().contains("kube_timeout"), "{err}");
}

#[test]
fn environment_overrides_the_file_and_flags_override_both() {
    let (_dir, path) = site(&format!("{MINIMAL}poll_interval = \"10m\"\n"));
    let env = [
        ("MAST_POLL_INTERVAL", "2m"),
        ("MAST_CHANNEL", "canary"),
        ("MAST_MIRRORS", "http://127.0.0.1:8080/, file:///srv/mast"),
        // Not ours, and an empty one: both ignored.
        ("MASTER_NODE", "x"),
        ("MAST_JITTER", ""),
    ];
    let sources = Sources::default()
        .with_file(&path, true)
        .unwrap()
        .with_env(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())))
        .with_flag("channel", vec!["edge".to_owned()]);
    let config = Config::load(&sources).unwrap();
    assert_eq!(config.poll.interval(), Duration::from_secs(120));
    assert_eq!(config.channel.as_str(), "edge");
    assert_eq!(
        config.mirrors,
        [
            MirrorSpec::Http("http://127.0.0.1:8080".to_owned()),
            MirrorSpec::Dir(PathBuf::from("/srv/mast"))
        ]
    );
}

#[test]
fn each_bad_value_names_its_key_and_source() {
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a [&'a str]);
    let cases: [Case; 9] = [
        (
            "poll_interval = \"5 minutes\"\n",
            &[],
            &["agent.toml", "poll_interval", "duration"],
        ),
        ("jitter = 1.5\n", &[], &["agent.toml", "jitter", "fraction"]),
        (
            "",
            &[("MAST_JITTER", "lots")],
            &["environment MAST_JITTER", "jitter"],
        ),
        (
            "change_windows = [\"Mon-Fri 22:00-02:00\", \"Someday 1:00-2:00\"]\n",
            &[],
            &["change_windows", "item 2"],
        ),
        (
            "keep_releases = 0\n",
            &[],
            &["keep_releases", "from 1 to 1000"],
        ),
        ("listen = \"localhost\"\n", &[], &["listen", "address:port"]),
        ("log_format = \"xml\"\n", &[], &["log_format"]),
        (
            "backoff_base = \"2h\"\n",
            &[],
            &["backoff_cap", "above the backoff cap"],
        ),
        (
            "",
            &[("MAST_MIRRORS", "https://user:pw@cdn.example.com/")],
            &["MAST_MIRRORS", "credentials"],
        ),
    ];
    for (extra, env, wanted) in cases {
        let (_dir, path) = site(&format!("{MINIMAL}{extra}"));
        let err = load(&path, env).unwrap_err().to_string();
        for word in wanted {
            assert!(
                err.contains(word),
                "{extra:?} {env:?}: {err:?} lacks {word:?}"
            );
        }
    }
}

#[test]
fn unknown_keys_and_wrong_shapes_in_the_file_are_refused() {
    let (_dir, path) = site(&format!("{MINIMAL}change_window = \"Mon 1:00-2:00\"\n"));
    let err = load(&path, &[]).unwrap_err();
    assert!(matches!(&err, ConfigError::UnknownKey { key, .. } if key == "change_window"));

    let (_dir, path) = site(&MINIMAL.replace(
        "mirrors = [\"https://cdn.example.com/mast\", \"oci://registry.example.com/org/mast\", \"file:///media/usb/mast\"]",
        "mirrors = \"https://cdn.example.com/mast\"",
    ));
    let err = load(&path, &[]).unwrap_err().to_string();
    assert!(
        err.contains("mirrors") && err.contains("expected a list"),
        "{err}"
    );

    let (_dir, path) = site("cluster_id = [1, 2]\n");
    let err = load(&path, &[]).unwrap_err().to_string();
    assert!(
        err.contains("cluster_id") && err.contains("not a list"),
        "{err}"
    );

    let (_dir, path) = site("cluster_id = \n");
    let err = load(&path, &[]).unwrap_err().to_string();
    assert!(
        err.contains("agent.toml") && err.contains("not valid TOML"),
        "{err}"
    );
}

#[test]
fn missing_required_keys_say_every_way_to_set_them() {
    let (_dir, path) = site("channel = \"prod\"\n");
    let err = load(&path, &[]).unwrap_err().to_string();
    assert_eq!(
        err,
        "cluster_id is required: set it in the config file, as MAST_CLUSTER_ID or with --cluster-id"
    );
}

#[test]
fn a_root_that_is_not_a_signed_root_is_refused_by_path() {
    let (dir, path) = site(MINIMAL);
    fs::write(dir.path().join("root.json"), b"{\"signed\": {}}").unwrap();
    let err = load(&path, &[]).unwrap_err().to_string();
    assert!(err.contains("root") && err.contains("root.json"), "{err}");

    let err = load(&path, &[("MAST_ROOT", "/nonexistent/root.json")])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("environment MAST_ROOT") && err.contains("/nonexistent/root.json"),
        "{err}"
    );
}

#[test]
fn the_default_config_path_may_be_absent_but_a_named_one_may_not() {
    let missing = Path::new("/nonexistent/mast/agent.toml");
    assert!(Sources::default().with_file(missing, false).is_ok());
    let err = Sources::default().with_file(missing, true).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("/nonexistent/mast/agent.toml: ")
    );
}
