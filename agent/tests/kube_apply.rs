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
use mast_agent::state::State;
use mast_agent::sync::check_drift;
use mast_test_support::kube_api::KubeApi;
use mast_test_support::{Nginx, NginxConfig};
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
fn applies_updates_and_prunes_within_the_delete_guard() {
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
    let config = kube::Config::new(w.api.url().parse().unwrap());
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
