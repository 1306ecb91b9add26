//! The `kube` applier through the whole agent: the real `mast-agent` binary with `MAST_APPLIER=kube`,
//! releases the packager's own code signed, nginx as the mirror, and the in-repo test API server
//! (`mast_test_support::kube_api`, see docs/test-api-server.md for where it differs from a real one) as
//! the cluster. One test runs the fresh apply against a real cluster when `MAST_E2E_KUBECONFIG` is set.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use mast_agent::apply::KubeApplier;
use mast_agent::freshness::LAST_REFRESH_FACT;
use mast_agent::state::{JournalState, State};
use mast_agent::sync::check_drift;
use mast_test_support::fault_proxy::FaultProxy;
use mast_test_support::http::get;
use mast_test_support::kube_api::KubeApi;
use mast_test_support::{Nginx, NginxConfig, free_port};
use serde_json::{Value, json};
use support::{Repo, Site, text};
use time::OffsetDateTime;

/// A test cluster, its kubeconfig, a repository with no manifests yet, nginx serving it, and a site.
struct World {
    api: KubeApi,
    kubeconfig: PathBuf,
    repo: Repo,
    nginx: Option<Nginx>,
    mirror: String,
    site: Site,
    _dir: tempfile::TempDir,
}

impl World {
    fn new() -> Self {
        let api = KubeApi::start();
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = api.write_kubeconfig(dir.path());
        let repo = Repo::new(0);
        let nginx = NginxConfig::new(&repo.repo).read_only().start();
        let mirror = nginx.url("");
        Self {
            api,
            kubeconfig,
            repo,
            nginx: Some(nginx),
            mirror,
            site: Site::new(),
            _dir: dir,
        }
    }

    fn write(&self, file: &str, text: &str) {
        fs::write(self.repo.manifests.join(file), text).unwrap();
    }

    fn remove(&self, file: &str) {
        fs::remove_file(self.repo.manifests.join(file)).unwrap();
    }

    /// Releases the manifests as the next release. (A release written within a second of the site's
    /// last poll is still seen: validators from the same second as the response are weak and dropped.)
    fn release(&self) -> u64 {
        self.repo.release().release
    }

    fn agent(&self) -> Command {
        agent(&self.site, &self.repo, &self.mirror, &self.kubeconfig)
    }

    fn once(&self) -> Output {
        self.agent().arg("once").output().unwrap()
    }

    fn object(&self, api_version: &str, kind: &str, ns: Option<&str>, name: &str) -> Option<Value> {
        self.api.object(api_version, kind, ns, name)
    }

    /// Requests made since `from` (an index into the request log).
    fn requests_since(&self, from: usize) -> Vec<String> {
        self.api.requests().into_iter().skip(from).collect()
    }
}

fn agent(site: &Site, repo: &Repo, mirror: &str, kubeconfig: &Path) -> Command {
    let mut cmd = site.agent(repo, &[mirror]);
    cmd.env("MAST_APPLIER", "kube")
        .env("KUBECONFIG", kubeconfig)
        .env_remove("KUBERNETES_SERVICE_HOST");
    cmd
}

/// Runs `cmd` to its end, or kills it and fails the test after `limit`: a pass that hangs on an
/// unanswered API server must fail this test, not stall the suite.
fn output_within(mut cmd: Command, limit: Duration) -> Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("mast-agent did not finish within {limit:?}");
        }
    }
}

/// A kubeconfig naming the cluster at `url` (a proxy in front of the test API server).
fn kubeconfig_for(url: &str, dir: &Path) -> PathBuf {
    let path = dir.join("kubeconfig-proxied");
    fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {url}\nusers:\n- name: u\n  \
             user: {{}}\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\n    namespace: default\n\
             current-context: c\n"
        ),
    )
    .unwrap();
    path
}

/// The journal states recorded for `release`, oldest first.
fn journal_of(site: &Site, release: u64) -> Vec<JournalState> {
    let state = State::open_read_only(&site.state()).unwrap();
    let mut states: Vec<JournalState> = state
        .journal(1000)
        .unwrap()
        .into_iter()
        .filter(|e| e.release == release)
        .map(|e| e.state)
        .collect();
    states.reverse();
    states
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn namespace(name: &str) -> String {
    format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n")
}

fn config_map(ns: &str, name: &str, value: &str, annotations: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: {ns}\n{annotations}data:\n  value: \"{value}\"\n"
    )
}

fn deployment(ns: &str, name: &str, image: &str, replicas: u32) -> String {
    [
        "apiVersion: apps/v1",
        "kind: Deployment",
        "metadata:",
        &format!("  name: {name}"),
        &format!("  namespace: {ns}"),
        "  labels:",
        &format!("    app: {name}"),
        "spec:",
        &format!("  replicas: {replicas}"),
        "  selector:",
        &format!("    matchLabels: {{app: {name}}}"),
        "  template:",
        &format!("    metadata: {{labels: {{app: {name}}}}}"),
        "    spec:",
        "      containers:",
        &format!("      - name: {name}"),
        &format!("        image: {image}"),
        "",
    ]
    .join("\n")
}

fn image(live: &Value) -> &str {
    live["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap()
}

/// The field managers of `live`, with the top-level fields each owns.
fn managers(live: &Value) -> Vec<String> {
    live["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["manager"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn applies_updates_prunes_within_the_delete_guard_and_orphans_when_asked() {
    let w = World::new();
    w.api.simulate_controllers(true);
    w.write("00-namespace.yaml", &namespace("edge"));
    w.write("web.yaml", &deployment("edge", "web", "web:1", 2));
    for i in 0..6 {
        w.write(
            &format!("config-{i}.yaml"),
            &config_map("edge", &format!("config-{i}"), "a", ""),
        );
    }
    w.write(
        "keep.yaml",
        &config_map(
            "edge",
            "keep",
            "k",
            "  annotations:\n    mast.dev/prune: orphan\n",
        ),
    );
    assert_eq!(w.release(), 1);
    // Two transient failures of the API server on the Deployment are retried, not a failed release.
    w.api
        .fail_next("/apis/apps/v1/namespaces/edge/deployments/web", 500, 2);

    let out = w.once();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        stdout(&out).contains("applied release 1: 9 written, 0 unchanged, 0 pruned"),
        "{}",
        text(&out)
    );
    let web = w
        .object("apps/v1", "Deployment", Some("edge"), "web")
        .unwrap();
    assert_eq!(image(&web), "web:1");
    assert_eq!(managers(&web), ["mast"]);
    assert!(
        w.object("v1", "Namespace", None, "edge").is_some(),
        "the namespace was applied"
    );
    let state = State::open(&w.site.state()).unwrap();
    let inventory = state.inventory("prod").unwrap();
    drop(state);
    assert!(
        inventory.contains(&"apps/v1/Deployment/edge/web".to_owned())
            && inventory.contains(&"/v1/Namespace//edge".to_owned()),
        "{inventory:?}"
    );

    // An idle pass changes nothing in the cluster.
    let before = w.api.requests().len();
    let out = w.once();
    assert!(
        stdout(&out).contains("up to date at release 1"),
        "{}",
        text(&out)
    );
    assert!(w.requests_since(before).is_empty());

    // An update: one object changes, one leaves the release (1 of 9, within the guard), and the orphan
    // annotated one leaves too but stays.
    w.write("web.yaml", &deployment("edge", "web", "web:2", 2));
    w.remove("config-5.yaml");
    w.remove("keep.yaml");
    assert_eq!(w.release(), 2);
    let out = w.once();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        stdout(&out).contains("applied release 2: 1 written, 6 unchanged, 1 pruned"),
        "{}",
        text(&out)
    );
    let web = w
        .object("apps/v1", "Deployment", Some("edge"), "web")
        .unwrap();
    assert_eq!(
        (image(&web), web["metadata"]["generation"].as_i64()),
        ("web:2", Some(2))
    );
    assert!(
        w.object("v1", "ConfigMap", Some("edge"), "config-5")
            .is_none()
    );
    assert!(w.object("v1", "ConfigMap", Some("edge"), "keep").is_some());

    // Three of seven leaving is over the default 25%: refused before anything is written, and the
    // previous release is put back.
    for i in 2..5 {
        w.remove(&format!("config-{i}.yaml"));
    }
    w.write("web.yaml", &deployment("edge", "web", "web:3", 2));
    assert_eq!(w.release(), 3);
    let before = w.api.requests().len();
    let out = w.once();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let said = stdout(&out);
    assert!(
        said.contains("release 3 failed and release 2 was put back")
            && said.contains("prune refused"),
        "{}",
        text(&out)
    );
    let writes: Vec<String> = w
        .requests_since(before)
        .into_iter()
        .filter(|r| r.starts_with("DELETE"))
        .collect();
    assert!(writes.is_empty(), "{writes:?}");
    for i in 2..5 {
        assert!(
            w.object("v1", "ConfigMap", Some("edge"), &format!("config-{i}"))
                .is_some()
        );
    }
    let web = w
        .object("apps/v1", "Deployment", Some("edge"), "web")
        .unwrap();
    assert_eq!(image(&web), "web:2");

    // The bundle widens its guard to half the inventory: the same three deletions go through.
    w.write("mast.toml", "max_delete = { fraction = 0.5 }\n");
    assert_eq!(w.release(), 4);
    let out = w.once();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        stdout(&out).contains("applied release 4: 1 written, 3 unchanged, 3 pruned"),
        "{}",
        text(&out)
    );
    for i in 2..5 {
        assert!(
            w.object("v1", "ConfigMap", Some("edge"), &format!("config-{i}"))
                .is_none()
        );
    }

    // With `prune = "orphan"` objects that leave the release stay in the cluster, and leave the inventory.
    w.write("mast.toml", "prune = \"orphan\"\n");
    w.remove("config-1.yaml");
    assert_eq!(w.release(), 5);
    let out = w.once();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        stdout(&out).contains("applied release 5: 0 written, 3 unchanged, 0 pruned"),
        "{}",
        text(&out)
    );
    assert!(
        w.object("v1", "ConfigMap", Some("edge"), "config-1")
            .is_some()
    );
    let state = State::open(&w.site.state()).unwrap();
    let inventory = state.inventory("prod").unwrap();
    assert!(
        !inventory.contains(&"/v1/ConfigMap/edge/config-1".to_owned()),
        "{inventory:?}"
    );
}

#[test]
fn a_failed_health_gate_rolls_back_offline_and_a_reboot_keeps_the_healthy_release() {
    let mut w = World::new();
    w.api.simulate_controllers(true);
    w.write("mast.toml", "health_timeout = \"3s\"\n");
    w.write("00-namespace.yaml", &namespace("edge"));
    w.write("web.yaml", &deployment("edge", "web", "web:1", 1));
    w.write("settings.yaml", &config_map("edge", "settings", "v1", ""));
    w.release();
    let out = w.once();
    assert!(out.status.success(), "{}", text(&out));

    // Release 2 adds a Deployment whose rollout never finishes.
    w.api.stall("Deployment", "edge", "canary");
    w.write("canary.yaml", &deployment("edge", "canary", "canary:1", 1));
    w.write("settings.yaml", &config_map("edge", "settings", "v2", ""));
    assert_eq!(w.release(), 2);
    let started = Instant::now();
    let child = w
        .agent()
        .arg("once")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Cut the mirror while the agent waits on the health gate: the rollback needs no network.
    while !w
        .api
        .requests()
        .iter()
        .any(|r| r.starts_with("PATCH /apis/apps/v1/namespaces/edge/deployments/canary"))
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "canary never applied"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    w.nginx = None;
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let said = stdout(&out);
    assert!(
        said.contains("release 2 failed and release 1 was put back")
            && said.contains("apps/v1 Deployment edge/canary"),
        "{}",
        text(&out)
    );
    assert!(
        w.object("apps/v1", "Deployment", Some("edge"), "canary")
            .is_none()
    );
    let settings = w
        .object("v1", "ConfigMap", Some("edge"), "settings")
        .unwrap();
    assert_eq!(settings["data"]["value"], "v1");
    assert_eq!(w.site.status()["channels"]["prod"]["current_release"], 1);

    // A reboot with every mirror down: the pass fails on the network and the cluster is left alone.
    let before = w.api.requests().len();
    let out = w.once();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let writes: Vec<String> = w
        .requests_since(before)
        .into_iter()
        .filter(|r| !r.starts_with("GET"))
        .collect();
    assert!(writes.is_empty(), "{writes:?}");
    assert_eq!(
        settings,
        w.object("v1", "ConfigMap", Some("edge"), "settings")
            .unwrap()
    );
    assert_eq!(w.site.status()["channels"]["prod"]["current_release"], 1);
}

#[test]
fn a_reboot_with_every_mirror_down_keeps_the_release_from_the_local_store_and_reports_staleness() {
    let mut w = World::new();
    w.api.simulate_controllers(true);
    w.write("mast.toml", "drift = \"correct\"\n");
    w.write("00-namespace.yaml", &namespace("edge"));
    w.write("web.yaml", &deployment("edge", "web", "web:1", 1));
    w.write("settings.yaml", &config_map("edge", "settings", "v1", ""));
    w.release();
    let out = w.once();
    assert!(out.status.success(), "{}", text(&out));

    // The site goes dark: its mirror is gone, it was last refreshed three hours ago, and while it was
    // down someone deleted one of its objects. (The refresh instant is moved back in the site's own
    // database, as three hours offline would have left it.)
    w.nginx = None;
    let refreshed = OffsetDateTime::now_utc() - time::Duration::hours(3);
    let refreshed = OffsetDateTime::from_unix_timestamp(refreshed.unix_timestamp()).unwrap();
    let rfc3339 = refreshed
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let mut state = State::open(&w.site.state()).unwrap();
    state.set_fact(LAST_REFRESH_FACT, &rfc3339).unwrap();
    drop(state);
    w.api
        .delete("v1", "ConfigMap", Some("edge"), "settings")
        .unwrap();
    let before = w.api.requests().len();

    // It boots: the daemon's first pass fails on the network, and its drift check puts the deleted
    // object back from the release held in SQLite, with no mirror.
    let port = free_port();
    let mut child = w
        .agent()
        .env("MAST_LISTEN", format!("127.0.0.1:{port}"))
        .env("MAST_STALE_AFTER", "30m")
        .env("MAST_KUBE_TIMEOUT", "5s")
        .arg("run")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        let status = get(&url("/status"))
            .ok()
            .filter(|r| r.status == 200)
            .and_then(|r| serde_json::from_slice::<Value>(&r.body).ok());
        if let Some(status) = status
            && !status["last_error"].is_null()
            && w.object("v1", "ConfigMap", Some("edge"), "settings")
                .is_some()
        {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the offline daemon neither failed a pass nor corrected drift"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status["channels"]["prod"]["current_release"], 1);
    assert_eq!(status["freshness"]["stale"], true, "{status:#}");
    // Offline is not a hard failure: the daemon stays ready.
    assert_eq!(get(&url("/readyz")).unwrap().status, 200);
    let metrics = String::from_utf8(get(&url("/metrics")).unwrap().body).unwrap();
    for line in [
        "mast_agent_stale 1\n".to_owned(),
        format!(
            "mast_agent_last_successful_refresh_timestamp_seconds {}\n",
            refreshed.unix_timestamp()
        ),
        "mast_agent_release_current{channel=\"prod\"} 1\n".to_owned(),
    ] {
        assert!(metrics.contains(&line), "{line} not in {metrics}");
    }
    assert!(
        metrics.contains("mast_agent_metadata_expiry_timestamp_seconds{role=\"timestamp\"} "),
        "{metrics}"
    );
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(child.wait().unwrap().success());

    // The release stayed, and what was deleted is back as release 1 has it; nothing was deleted.
    let settings = w
        .object("v1", "ConfigMap", Some("edge"), "settings")
        .unwrap();
    assert_eq!(settings["data"]["value"], "v1");
    assert!(
        w.object("apps/v1", "Deployment", Some("edge"), "web")
            .is_some()
    );
    let deletes: Vec<String> = w
        .requests_since(before)
        .into_iter()
        .filter(|r| r.starts_with("DELETE"))
        .collect();
    assert!(deletes.is_empty(), "{deletes:?}");
    assert_eq!(
        journal_of(&w.site, 1),
        [
            JournalState::Staged,
            JournalState::Applied,
            JournalState::Healthy
        ]
    );

    // `status`, from the database alone, says the site is stale and why.
    let status = w.site.status();
    let freshness = &status["freshness"];
    assert_eq!(status["channels"]["prod"]["current_release"], 1);
    assert_eq!(freshness["stale"], true, "{freshness:#}");
    assert_eq!(freshness["last_refresh"], rfc3339.as_str());
    assert!(
        freshness["seconds_since_refresh"].as_u64().unwrap() >= 3 * 3600,
        "{freshness:#}"
    );
    assert_eq!(freshness["stale_after_seconds"], 1800);
    let reasons = freshness["reasons"].as_array().unwrap();
    assert_eq!(reasons.len(), 1, "{freshness:#}");
    assert!(
        reasons[0]
            .as_str()
            .unwrap()
            .starts_with("no refresh completed for 3h 0m (stale after 30m 0s)"),
        "{freshness:#}"
    );
    for role in ["root", "targets", "snapshot", "timestamp"] {
        let r = &freshness["metadata"][role];
        assert_eq!(r["state"], "valid", "{role}: {freshness:#}");
        assert_eq!(
            r["version"], status["trusted"][role],
            "{role}: {freshness:#}"
        );
        assert!(r["expires_in_seconds"].as_i64().unwrap() > 0, "{role}");
    }
    let plain = Command::new(env!("CARGO_BIN_EXE_mast-agent"))
        .env("MAST_CONFIG", w.site.config())
        .args(["status", "--state"])
        .arg(w.site.state())
        .output()
        .unwrap();
    let plain = stdout(&plain);
    assert!(
        plain.contains("freshness:     STALE: no refresh completed for 3h")
            && plain.contains(&format!("last refresh:  {rfc3339} (3h "))
            && plain.contains("expires:       root v1 "),
        "{plain}"
    );
}

#[test]
fn an_unavailable_api_server_fails_the_pass_as_transient_and_the_release_is_applied_later() {
    let w = World::new();
    w.api.simulate_controllers(true);
    w.write("00-namespace.yaml", &namespace("edge"));
    w.write("settings.yaml", &config_map("edge", "settings", "v1", ""));
    w.release();
    assert!(w.once().status.success());

    // The agent reaches the API server through a proxy that can refuse, or black-hole, connections.
    let proxy = FaultProxy::start(format!("127.0.0.1:{}", w.api.port()).parse().unwrap()).unwrap();
    let kubeconfig = kubeconfig_for(&format!("http://{}", proxy.addr()), w._dir.path());
    let once = || {
        let mut cmd = agent(&w.site, &w.repo, &w.mirror, &kubeconfig);
        // Each request waits a second at most for an answer, so a black-holed server fails the pass
        // in seconds (the default is 30 s a request).
        cmd.env("MAST_KUBE_TIMEOUT", "1s").arg("once");
        output_within(cmd, Duration::from_secs(180))
    };
    w.write("settings.yaml", &config_map("edge", "settings", "v2", ""));
    assert_eq!(w.release(), 2);

    let outages: [(&str, &dyn Fn()); 4] = [
        ("503 on the object", &|| {
            w.api
                .fail_next("/api/v1/namespaces/edge/configmaps/settings", 503, 1000);
        }),
        (
            "429 on everything of the core group, discovery included",
            &|| {
                w.api.fail_next("/api", 429, 1000);
            },
        ),
        ("connections refused", &|| proxy.control().stop_listening()),
        ("connections accepted and never answered", &|| {
            proxy.control().resume_listening();
            proxy.control().pause();
        }),
    ];
    for (outage, start) in outages {
        start();
        let began = Instant::now();
        let out = once();
        eprintln!("{outage}: the pass failed after {:?}", began.elapsed());
        w.api.clear_faults();
        assert_eq!(out.status.code(), Some(1), "{outage}: {}", text(&out));
        assert!(
            text(&out).contains("the API server is unavailable"),
            "{outage}: {}",
            text(&out)
        );
        // Not the release's failure: not journalled failed, nothing rolled back, nothing changed.
        let release_2 = journal_of(&w.site, 2);
        assert!(
            release_2.iter().all(|s| *s == JournalState::Staged),
            "{outage}: {release_2:?}"
        );
        assert_eq!(
            journal_of(&w.site, 1),
            [
                JournalState::Staged,
                JournalState::Applied,
                JournalState::Healthy
            ],
            "{outage}"
        );
        assert_eq!(
            w.object("v1", "ConfigMap", Some("edge"), "settings")
                .unwrap()["data"]["value"],
            "v1",
            "{outage}"
        );
        assert_eq!(w.site.status()["channels"]["prod"]["current_release"], 1);
    }
    proxy.control().resume();

    // The server is back: the same release is applied on the next pass.
    let out = once();
    assert!(out.status.success(), "{}", text(&out));
    assert!(stdout(&out).contains("applied release 2"), "{}", text(&out));
    assert_eq!(
        w.object("v1", "ConfigMap", Some("edge"), "settings")
            .unwrap()["data"]["value"],
        "v2"
    );
    assert_eq!(w.site.status()["channels"]["prod"]["current_release"], 2);
}

#[test]
fn a_rollback_the_api_server_interrupted_is_finished_on_the_next_pass() {
    let w = World::new();
    w.api.simulate_controllers(true);
    w.write("mast.toml", "health_timeout = \"2s\"\n");
    w.write("00-namespace.yaml", &namespace("edge"));
    w.write("settings.yaml", &config_map("edge", "settings", "v1", ""));
    w.write("web.yaml", &deployment("edge", "web", "web:1", 1));
    w.release();
    assert!(w.once().status.success());

    // Release 2 changes the settings and adds a Deployment whose rollout never finishes.
    w.api.stall("Deployment", "edge", "canary");
    w.write("canary.yaml", &deployment("edge", "canary", "canary:1", 1));
    w.write("settings.yaml", &config_map("edge", "settings", "v2", ""));
    assert_eq!(w.release(), 2);
    let before = w.api.requests().len();
    let child = w
        .agent()
        .arg("once")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Once the health gate polls (a read of the canary after every write of release 2), the API server
    // starts failing writes to the settings: the rollback cannot put release 1's back.
    let started = Instant::now();
    let settings_path = "/api/v1/namespaces/edge/configmaps/settings";
    loop {
        let requests = w.requests_since(before);
        let written = requests
            .iter()
            .position(|r| r.starts_with(&format!("PATCH {settings_path}")));
        if written.is_some_and(|at| {
            requests[at..]
                .iter()
                .any(|r| r.starts_with("GET /apis/apps/v1/namespaces/edge/deployments/canary"))
        }) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the health gate never started"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    w.api.fail_next_method("PATCH", settings_path, 503, 1000);
    let out = child.wait_with_output().unwrap();
    w.api.clear_faults();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("the API server is unavailable"),
        "{}",
        text(&out)
    );
    // Release 2 failed its gate; the rollback did not finish.
    assert_eq!(
        journal_of(&w.site, 2),
        [
            JournalState::Staged,
            JournalState::Applied,
            JournalState::Failed
        ]
    );
    assert_eq!(
        w.object("v1", "ConfigMap", Some("edge"), "settings")
            .unwrap()["data"]["value"],
        "v2"
    );

    // The next pass finishes it from the local store, and reports the release as failed again.
    let out = w.once();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stdout(&out).contains("release 2 failed and release 1 was put back")
            && stdout(&out).contains("apps/v1 Deployment edge/canary"),
        "{}",
        text(&out)
    );
    assert_eq!(
        w.object("v1", "ConfigMap", Some("edge"), "settings")
            .unwrap()["data"]["value"],
        "v1"
    );
    assert!(
        w.object("apps/v1", "Deployment", Some("edge"), "canary")
            .is_none()
    );
    assert_eq!(
        journal_of(&w.site, 1)[3..],
        [
            JournalState::Applied,
            JournalState::Healthy,
            JournalState::RolledBack
        ]
    );

    // And then the site is simply up to date at release 1: nothing is written again.
    let before = w.api.requests().len();
    let out = w.once();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        stdout(&out).contains("up to date at release 1"),
        "{}",
        text(&out)
    );
    let writes: Vec<String> = w
        .requests_since(before)
        .into_iter()
        .filter(|r| !r.starts_with("GET"))
        .collect();
    assert!(writes.is_empty(), "{writes:?}");
}

#[test]
fn the_health_gate_passes_finished_workloads_of_every_kind_and_ends_at_a_failed_job() {
    let w = World::new();
    w.api.simulate_controllers(true);
    // A gate that only a verdict can end: the timeout is far beyond the test's own bound.
    w.write("mast.toml", "health_timeout = \"10m\"\n");
    w.write("00-namespace.yaml", &namespace("edge"));
    w.write(
        "db.yaml",
        "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: db, namespace: edge}\nspec:\n  replicas: 2\n  serviceName: db\n  selector: {matchLabels: {app: db}}\n  template:\n    metadata: {labels: {app: db}}\n    spec: {containers: [{name: db, image: 'db:1'}]}\n",
    );
    w.write(
        "agent.yaml",
        "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: node-agent, namespace: edge}\nspec:\n  selector: {matchLabels: {app: node-agent}}\n  template:\n    metadata: {labels: {app: node-agent}}\n    spec: {containers: [{name: a, image: 'agent:1'}]}\n",
    );
    w.write(
        "data.yaml",
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: data, namespace: edge}\nspec:\n  accessModes: [ReadWriteOnce]\n  resources: {requests: {storage: 1Gi}}\n",
    );
    let job = |name: &str| {
        format!(
            "apiVersion: batch/v1\nkind: Job\nmetadata: {{name: {name}, namespace: edge}}\nspec:\n  template:\n    spec:\n      restartPolicy: Never\n      containers: [{{name: m, image: 'migrate:1'}}]\n"
        )
    };
    w.write("migrate.yaml", &job("migrate-1"));
    w.release();
    let out = output_within(
        {
            let mut cmd = w.agent();
            cmd.arg("once");
            cmd
        },
        Duration::from_secs(120),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        stdout(&out).contains("applied release 1: 5 written"),
        "{}",
        text(&out)
    );

    // Release 2's migration never completes by itself; while the gate waits, it fails.
    w.api.stall("Job", "edge", "migrate-2");
    w.write("migrate.yaml", &job("migrate-2"));
    assert_eq!(w.release(), 2);
    let before = w.api.requests().len();
    let child = w
        .agent()
        .arg("once")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let polled = "GET /apis/batch/v1/namespaces/edge/jobs/migrate-2";
    while w
        .requests_since(before)
        .iter()
        .filter(|r| r.starts_with(polled))
        .count()
        < 2
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the gate never polled the job"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    w.api
        .set_status(
            "batch/v1",
            "Job",
            Some("edge"),
            "migrate-2",
            json!({"failed": 7, "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]}),
        )
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stdout(&out).contains(
            "release 2 failed and release 1 was put back: release 2: health gate: batch/v1 Job \
             edge/migrate-2: job failed: BackoffLimitExceeded"
        ),
        "{}",
        text(&out)
    );
    assert!(
        w.object("batch/v1", "Job", Some("edge"), "migrate-2")
            .is_none()
    );
    assert!(
        w.object("batch/v1", "Job", Some("edge"), "migrate-1")
            .is_some()
    );
    assert_eq!(w.site.status()["channels"]["prod"]["current_release"], 1);
}

#[test]
fn a_custom_resource_is_applied_after_its_definition_is_established() {
    let w = World::new();
    w.api.set_crd_delay(Duration::from_millis(700));
    // File order puts the custom resource first; the applier must not.
    w.write(
        "a-widget.yaml",
        "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: gear\n  namespace: edge\nspec:\n  teeth: 12\n",
    );
    w.write(
        "b-crd.yaml",
        concat!(
            "apiVersion: apiextensions.k8s.io/v1\n",
            "kind: CustomResourceDefinition\n",
            "metadata: {name: widgets.example.com}\n",
            "spec:\n",
            "  group: example.com\n",
            "  scope: Namespaced\n",
            "  names: {plural: widgets, singular: widget, kind: Widget}\n",
            "  versions:\n",
            "  - name: v1\n",
            "    served: true\n",
            "    storage: true\n",
            "    schema:\n",
            "      openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}\n",
        ),
    );
    w.write("c-namespace.yaml", &namespace("edge"));
    w.release();
    let out = w.once();
    assert!(out.status.success(), "{}", text(&out));
    let gear = w
        .object("example.com/v1", "Widget", Some("edge"), "gear")
        .unwrap();
    assert_eq!(gear["spec"]["teeth"], 12);
    let requests = w.api.requests();
    let position = |prefix: &str| requests.iter().position(|r| r.starts_with(prefix)).unwrap();
    assert!(
        position(
            "PATCH /apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com"
        ) < position("PATCH /api/v1/namespaces/edge?")
    );
    assert!(
        position("PATCH /api/v1/namespaces/edge?")
            < position("PATCH /apis/example.com/v1/namespaces/edge/widgets/gear")
    );
}

#[test]
fn conflicts_with_another_field_manager_fail_unless_forced() {
    let w = World::new();
    w.api.simulate_controllers(true);
    w.write("mast.toml", "force_conflicts = false\n");
    w.write("00-namespace.yaml", &namespace("edge"));
    w.write("web.yaml", &deployment("edge", "web", "web:1", 2));
    w.release();
    let out = w.once();
    assert!(out.status.success(), "{}", text(&out));

    // Someone scales the Deployment by hand; the next release still says 2 replicas.
    w.api
        .edit(
            "apps/v1",
            "Deployment",
            Some("edge"),
            "web",
            "kubectl-scale",
            |o| {
                o["spec"]["replicas"] = json!(5);
            },
        )
        .unwrap();
    w.write("web.yaml", &deployment("edge", "web", "web:2", 2));
    w.release();
    let out = w.once();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let all = text(&out);
    assert!(
        all.contains("apps/v1 Deployment edge/web")
            && all.contains("conflict with \"kubectl-scale\""),
        "{all}"
    );
    let web = w
        .object("apps/v1", "Deployment", Some("edge"), "web")
        .unwrap();
    assert_eq!(web["spec"]["replicas"], 5);

    // With force, mast takes the field back.
    w.write("mast.toml", "force_conflicts = true\n");
    w.release();
    let out = w.once();
    assert!(out.status.success(), "{}", text(&out));
    let web = w
        .object("apps/v1", "Deployment", Some("edge"), "web")
        .unwrap();
    assert_eq!(
        (web["spec"]["replicas"].as_i64(), image(&web)),
        (Some(2), "web:2")
    );
    assert!(
        !managers(&web).contains(&"kubectl-scale".to_owned()),
        "{web}"
    );

    // An autoscaler owns replicas and the bundle ignores them: mast neither resets nor conflicts.
    w.api
        .edit("apps/v1", "Deployment", Some("edge"), "web", "hpa", |o| {
            o["spec"]["replicas"] = json!(4);
        })
        .unwrap();
    w.write(
        "mast.toml",
        "force_conflicts = true\n[[ignore]]\ngroup = \"apps\"\nkind = \"Deployment\"\npaths = [\"/spec/replicas\"]\n",
    );
    w.write("web.yaml", &deployment("edge", "web", "web:3", 2));
    w.release();
    let out = w.once();
    assert!(out.status.success(), "{}", text(&out));
    let web = w
        .object("apps/v1", "Deployment", Some("edge"), "web")
        .unwrap();
    assert_eq!(
        (web["spec"]["replicas"].as_i64(), image(&web)),
        (Some(4), "web:3")
    );
}

#[test]
fn a_kube_applier_without_a_cluster_is_a_configuration_error() {
    let repo = Repo::new(0);
    let site = Site::new();
    let missing = site.dir.path().join("no-such-kubeconfig");
    let out = agent(&site, &repo, "http://127.0.0.1:9", &missing)
        .arg("once")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("applier") && err.contains("no-such-kubeconfig"),
        "{err}"
    );
    assert!(
        !site.state().exists(),
        "a configuration error left a state file"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_is_reported_then_corrected() {
    let w = World::new();
    w.api.simulate_controllers(true);
    w.write("00-namespace.yaml", &namespace("edge"));
    w.write("web.yaml", &deployment("edge", "web", "web:1", 2));
    w.write("settings.yaml", &config_map("edge", "settings", "v1", ""));
    w.write(
        "mast.toml",
        "drift = \"report\"\n[[ignore]]\ngroup = \"apps\"\nkind = \"Deployment\"\npaths = [\"/metadata/labels/app\"]\n",
    );
    w.release();
    let out = w.agent().arg("once").output().unwrap();
    assert!(out.status.success(), "{}", text(&out));

    let drift = |api: &KubeApi| {
        api.edit(
            "apps/v1",
            "Deployment",
            Some("edge"),
            "web",
            "kubectl-edit",
            |o| {
                o["spec"]["replicas"] = json!(7);
                o["metadata"]["labels"]["app"] = json!("renamed");
            },
        )
        .unwrap();
        api.delete("v1", "ConfigMap", Some("edge"), "settings")
            .unwrap();
    };
    drift(&w.api);
    let mut config = kube::Config::new(w.api.url().parse().unwrap());
    config.default_retry = false;
    let mut applier =
        KubeApplier::from_client(kube::Client::try_from(config).unwrap(), w.api.url());
    let channel = "prod".parse().unwrap();
    let mut state = State::open(&w.site.state()).unwrap();
    let report = check_drift(
        &mut state,
        &channel,
        &mut applier,
        OffsetDateTime::now_utc(),
    )
    .await
    .unwrap()
    .unwrap();
    let seen: Vec<(&str, &str)> = report
        .findings
        .iter()
        .map(|f| (f.object.as_str(), f.detail.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            ("v1 ConfigMap edge/settings", "missing"),
            ("apps/v1 Deployment edge/web", "changed: /spec/replicas"),
        ]
    );
    assert!(!report.corrected);
    assert!(
        w.object("v1", "ConfigMap", Some("edge"), "settings")
            .is_none()
    );
    drop(state);

    // The next release corrects drift.
    w.write("mast.toml", "drift = \"correct\"\n");
    w.release();
    let out = w.agent().arg("once").output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    drift(&w.api);
    let mut state = State::open(&w.site.state()).unwrap();
    let report = check_drift(
        &mut state,
        &channel,
        &mut applier,
        OffsetDateTime::now_utc(),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(report.corrected, "{report:?}");
    assert_eq!(report.findings.len(), 2, "{report:?}");
    let web = w
        .object("apps/v1", "Deployment", Some("edge"), "web")
        .unwrap();
    assert_eq!(
        (
            web["spec"]["replicas"].as_i64(),
            web["metadata"]["labels"]["app"].as_str()
        ),
        (Some(2), Some("web"))
    );
    assert!(
        w.object("v1", "ConfigMap", Some("edge"), "settings")
            .is_some()
    );
    let again = check_drift(
        &mut state,
        &channel,
        &mut applier,
        OffsetDateTime::now_utc(),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(again.findings.is_empty(), "{again:?}");
}

/// The fresh apply against a real cluster, when `MAST_E2E_KUBECONFIG` names one. It works in its own
/// namespace and deletes it at the end.
#[test]
fn fresh_apply_against_a_real_cluster() {
    let Some(kubeconfig) = std::env::var_os("MAST_E2E_KUBECONFIG") else {
        eprintln!(
            "skipped: MAST_E2E_KUBECONFIG is not set (point it at a disposable cluster's kubeconfig to run \
             the fresh apply against a real API server)"
        );
        return;
    };
    let kubeconfig = PathBuf::from(kubeconfig);
    let ns = format!("mast-e2e-{}", std::process::id());
    let repo = Repo::new(0);
    let nginx = NginxConfig::new(&repo.repo).read_only().start();
    let mirror = nginx.url("");
    let site = Site::new();
    fs::write(
        repo.manifests.join("mast.toml"),
        "health_timeout = \"5m\"\n",
    )
    .unwrap();
    fs::write(repo.manifests.join("00-namespace.yaml"), namespace(&ns)).unwrap();
    fs::write(
        repo.manifests.join("settings.yaml"),
        config_map(&ns, "settings", "v1", ""),
    )
    .unwrap();
    fs::write(
        repo.manifests.join("web.yaml"),
        deployment(&ns, "web", "registry.k8s.io/pause:3.10", 1),
    )
    .unwrap();
    repo.release();
    let out = agent(&site, &repo, &mirror, &kubeconfig)
        .arg("once")
        .output()
        .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (settings, web) = runtime.block_on(async {
        let options = kube::config::KubeConfigOptions::default();
        let file = kube::config::Kubeconfig::read_from(&kubeconfig).unwrap();
        let config = kube::Config::from_custom_kubeconfig(file, &options)
            .await
            .unwrap();
        let client = kube::Client::try_from(config).unwrap();
        let cms: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
            kube::Api::namespaced(client.clone(), &ns);
        let deployments: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
            kube::Api::namespaced(client.clone(), &ns);
        let found = (
            cms.get_opt("settings").await.unwrap(),
            deployments.get_opt("web").await.unwrap(),
        );
        let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(client);
        let _ = namespaces.delete(&ns, &Default::default()).await;
        found
    });
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        stdout(&out).contains("applied release 1: 3 written"),
        "{}",
        text(&out)
    );
    assert_eq!(
        settings
            .unwrap()
            .data
            .unwrap()
            .get("value")
            .map(String::as_str),
        Some("v1")
    );
    let web = web.unwrap();
    assert!(
        web.metadata
            .managed_fields
            .unwrap_or_default()
            .iter()
            .any(|m| m.manager.as_deref() == Some("mast"))
    );
}
