//! The files in `deploy/` checked with the parts that will read them: the systemd unit with
//! `systemd-analyze verify` (against a throw-away root, so no running systemd and no installed agent are
//! needed), both agent configs with the agent's own config loader, and the Kubernetes manifests with the
//! packager's validation (`mast pack`) plus the invariants the agent relies on (one replica, Recreate,
//! probes on the `listen` port, the state volume, a restricted security context).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use mast_agent::config::{Applier, Config, Sources};
use mast_protocol::manifest::{ManifestLimits, Object, parse_documents, split};
use mast_test_support::require_tool;
use serde_json::Value;
use support::Repo;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn deploy(path: &str) -> PathBuf {
    workspace().join("deploy").join(path)
}

// --- systemd ------------------------------------------------------------------------------------------

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify_without_a_warning() {
    let Some(analyze) = systemd_analyze() else {
        return;
    };
    let unit = fs::read_to_string(deploy("systemd/mast-agent.service")).unwrap();
    let output = verify(&analyze, &unit);
    assert!(output.is_empty(), "systemd-analyze verify: {output}");

    // The check has teeth: a misspelt key or a bad value is reported.
    let broken = unit.replace("WatchdogSec=60s", "WatchdogSec=sixty\nWatchdogSecs=60s");
    let output = verify(&analyze, &broken);
    assert!(output.contains("WatchdogSecs"), "{output}");
    assert!(output.contains("sixty"), "{output}");
}

#[test]
fn the_systemd_unit_sandbox_scores_ok_in_systemd_analyze_security() {
    let Some(analyze) = systemd_analyze() else {
        return;
    };
    let root = fake_root(&fs::read_to_string(deploy("systemd/mast-agent.service")).unwrap());
    let out = Command::new(&analyze)
        .args(["security", "--offline=yes", "--no-pager", "--threshold=25"])
        .arg(format!("--root={}", root.path().display()))
        .arg("/etc/systemd/system/mast-agent.service")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    // 0.0 is the most locked-down, 10.0 the least; "OK" is below 2.0 in systemd's wording.
    assert!(
        out.status.success(),
        "exposure over 2.5: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("Overall exposure level"), "{stdout}");
}

#[test]
fn the_systemd_unit_has_what_the_agent_relies_on() {
    let unit = fs::read_to_string(deploy("systemd/mast-agent.service")).unwrap();
    let values = |key: &str| -> Vec<String> {
        unit.lines()
            .filter_map(|l| l.strip_prefix(&format!("{key}=")))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(values("Type"), ["notify"]);
    assert_eq!(values("NotifyAccess"), ["main"]);
    assert_eq!(values("ExecStart"), ["/usr/local/bin/mast-agent run"]);
    assert_eq!(values("StateDirectory"), ["mast"]);
    assert_eq!(values("ConfigurationDirectory"), ["mast"]);
    assert_eq!(values("CapabilityBoundingSet"), [""]);
    assert_eq!(values("Restart"), ["on-failure"]);
    assert_eq!(values("RestartPreventExitStatus"), ["64"]);
    assert!(!values("WatchdogSec").is_empty());
    // AF_UNIX carries sd_notify's READY=1 and WATCHDOG=1.
    let families = values("RestrictAddressFamilies").join(" ");
    for family in ["AF_UNIX", "AF_INET", "AF_INET6"] {
        assert!(families.split(' ').any(|f| f == family), "{families}");
    }

    // The dir: applier of the example config writes where the sandbox lets it.
    let site = Repo::new(0);
    let config = load(&deploy("systemd/agent.toml.example"), &site.root(), false);
    let Applier::Dir(dir) = &config.applier else {
        panic!("the example's applier is not dir: {:?}", config.applier);
    };
    assert_eq!(
        values("ReadWritePaths"),
        [dir.display().to_string()],
        "the unit must let the agent write its applier's directory"
    );
    assert_eq!(config.state, Path::new("/var/lib/mast/state.db"));
    // The root is read from the ConfigurationDirectory= the unit makes.
    let example = fs::read_to_string(deploy("systemd/agent.toml.example")).unwrap();
    assert!(example.contains("\nroot = \"/etc/mast/root.json\"\n"));
}

#[test]
fn every_key_of_agent_toml_example_loads_with_the_agents_parser_commented_or_not() {
    let site = Repo::new(0);
    let example = deploy("systemd/agent.toml.example");
    let config = load(&example, &site.root(), false);
    assert_eq!(config.channel.to_string(), "stable");
    assert_eq!(config.mirrors.len(), 2);
    assert!(config.listen.is_some());

    // The commented-out keys are examples too: uncommented, they must load.
    let config = load(&example, &site.root(), true);
    assert_eq!(config.keep_releases, Default::default());
    let text = fs::read_to_string(&example).unwrap();
    for key in mast_agent::config::KEYS {
        assert!(
            text.lines()
                .any(|l| l.trim_start_matches("# ").starts_with(&format!("{key} = "))),
            "agent.toml.example does not show the key {key}"
        );
    }
}

// --- Kubernetes ------------------------------------------------------------------------------------------

#[test]
fn the_kubernetes_manifests_are_objects_mast_pack_accepts() {
    let dir = deploy("kubernetes");
    let kustomization = fs::read_to_string(dir.join("kustomization.yaml")).unwrap();
    let documents = parse_documents(&kustomization, &ManifestLimits::default()).unwrap();
    let listed: BTreeSet<String> = documents[0]["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    let files: BTreeSet<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") && n != "kustomization.yaml")
        .collect();
    assert_eq!(listed, files, "kustomization.yaml must list every manifest");

    // The packager's own validation, as `mast pack` runs it: every document a Kubernetes object, no object
    // twice. The kustomization is not an object, so the pack runs over a copy without it.
    let copy = tempfile::tempdir().unwrap();
    for name in &files {
        fs::copy(dir.join(name), copy.path().join(name)).unwrap();
    }
    let bundle = mast_packager::pack::pack_dir(copy.path(), false).unwrap();
    let kinds: BTreeSet<String> = objects()
        .iter()
        .map(|o| o.id.kind.clone())
        .collect::<BTreeSet<_>>();
    assert_eq!(bundle.content.objects.len(), objects().len());
    for kind in [
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "PersistentVolumeClaim",
        "Deployment",
        "Service",
    ] {
        assert!(kinds.contains(kind), "no {kind} in {kinds:?}");
    }
}

#[test]
fn the_deployment_runs_one_restricted_agent_probed_on_its_listen_port() {
    let objects = objects();
    let find = |kind: &str, name: &str| -> &Value {
        &objects
            .iter()
            .find(|o| o.id.kind == kind && o.id.name == name)
            .unwrap_or_else(|| panic!("no {kind} {name}"))
            .value
    };
    let deployment = find("Deployment", "mast-agent");
    let spec = &deployment["spec"];
    assert_eq!(spec["replicas"], 1);
    assert_eq!(spec["strategy"]["type"], "Recreate");
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "mast-agent");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let container = &pod["containers"][0];
    let security = &container["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["capabilities"]["drop"], serde_json::json!(["ALL"]));

    // The probes reach the port the agent listens on, as its config says.
    let config = find("ConfigMap", "mast-agent-config");
    let toml = config["data"]["agent.toml"].as_str().unwrap();
    let site = Repo::new(0);
    let file = tempfile::NamedTempFile::new().unwrap();
    fs::write(file.path(), toml).unwrap();
    let loaded = load(file.path(), &site.root(), false);
    let listen = loaded.listen.expect("the in-cluster agent must listen");
    assert!(
        listen.ip().is_unspecified(),
        "the kubelet probes the pod IP"
    );
    assert_eq!(loaded.applier, Applier::Kube);
    let port = container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "admin")
        .unwrap()["containerPort"]
        .as_u64()
        .unwrap();
    assert_eq!(port, u64::from(listen.port()));
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["livenessProbe"]["httpGet"]["port"], "admin");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["readinessProbe"]["httpGet"]["port"], "admin");

    // The database is on the claim, where the config puts it; the root where the config reads it.
    let mounts = container["volumeMounts"].as_array().unwrap();
    let mount_of = |volume: &str| -> String {
        mounts
            .iter()
            .find(|m| m["name"] == volume)
            .unwrap_or_else(|| panic!("no mount of {volume}"))["mountPath"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert!(loaded.state.starts_with(mount_of("state")));
    assert!(toml.contains(&format!("root = \"{}/root.json\"", mount_of("root"))));
    let volumes = pod["volumes"].as_array().unwrap();
    let claim = volumes.iter().find(|v| v["name"] == "state").unwrap()["persistentVolumeClaim"]
        ["claimName"]
        .as_str()
        .unwrap();
    assert_eq!(
        find("PersistentVolumeClaim", claim)["spec"]["accessModes"],
        serde_json::json!(["ReadWriteOnce"])
    );

    let binding = find("ClusterRoleBinding", "mast-agent");
    assert_eq!(binding["subjects"][0]["name"], "mast-agent");
    assert_eq!(binding["subjects"][0]["namespace"], "mast-system");
}

#[test]
fn the_cluster_role_grants_what_ssa_prune_and_the_health_gate_need_for_every_kind_of_the_example() {
    let example =
        mast_packager::pack::pack_dir(&workspace().join("examples/edge-gateway"), false).unwrap();
    let objects = objects();
    let role = &objects
        .iter()
        .find(|o| o.id.kind == "ClusterRole" && o.id.name == "mast-agent")
        .expect("no ClusterRole mast-agent")
        .value;
    let rules = role["rules"].as_array().unwrap();
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| a.iter().map(|s| s.as_str().unwrap().to_owned()).collect())
            .unwrap_or_default()
    };
    for object in &example.content.objects {
        // The resource name of these kinds: lower case, plural (Policy -> policies).
        let kind = object.kind.to_lowercase();
        let resource = match kind.strip_suffix('y') {
            Some(stem) => format!("{stem}ies"),
            None => format!("{kind}s"),
        };
        let mut verbs = BTreeSet::new();
        for rule in rules {
            if strings(&rule["apiGroups"]).contains(&object.group)
                && strings(&rule["resources"]).contains(&resource)
            {
                verbs.extend(strings(&rule["verbs"]));
            }
        }
        for verb in ["get", "list", "watch", "create", "patch", "delete"] {
            assert!(
                verbs.contains(verb),
                "rbac.yaml does not grant {verb} on {resource} (group {:?}), which examples/edge-gateway applies",
                object.group
            );
        }
    }
}

// --- helpers ---------------------------------------------------------------------------------------------

/// `systemd-analyze`, or a skip (a failure under scripts/test.sh) without it.
fn systemd_analyze() -> Option<PathBuf> {
    require_tool(
        "MAST_TEST_SYSTEMD_ANALYZE",
        &["/usr/bin/systemd-analyze", "systemd-analyze"],
    )
}

/// A root directory holding the unit at /etc/systemd/system, the host's system units (for the targets it
/// names) and a stub for every program it executes, so that `--root` checks need nothing installed.
fn fake_root(unit: &str) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let units = ["/usr/lib/systemd/system", "/lib/systemd/system"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.join("sysinit.target").exists())
        .expect("no systemd unit directory with sysinit.target");
    copy_dir(units, &root.path().join("usr/lib/systemd/system"));
    let etc = root.path().join("etc/systemd/system");
    fs::create_dir_all(&etc).unwrap();
    fs::write(etc.join("mast-agent.service"), unit).unwrap();
    for line in unit.lines().filter(|l| l.starts_with("Exec")) {
        let command = line.split_once('=').unwrap().1;
        let program = command
            .trim_start_matches(['+', '-', '@', '!', ':'])
            .split_whitespace()
            .next()
            .unwrap();
        let stub = root.path().join(program.trim_start_matches('/'));
        fs::create_dir_all(stub.parent().unwrap()).unwrap();
        fs::write(&stub, "#!/bin/sh\n").unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        fs::set_permissions(&stub, fs::Permissions::from_mode(0o755)).unwrap();
    }
    root
}

/// `systemd-analyze verify` of `unit`: everything it printed (nothing, for a good unit).
fn verify(analyze: &Path, unit: &str) -> String {
    let root = fake_root(unit);
    let out = Command::new(analyze)
        .arg("verify")
        .arg(format!("--root={}", root.path().display()))
        .arg("/etc/systemd/system/mast-agent.service")
        .output()
        .unwrap();
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        return format!("exit {:?}: {printed}", out.status.code());
    }
    printed
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        let kind = entry.file_type().unwrap();
        if kind.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(entry.path()).unwrap(), &target).unwrap();
        } else if kind.is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Loads an agent config file with the agent's own loader, the root replaced by a real one (the
/// examples name /etc/mast/root.json, which a test machine does not have): a flag beats the file. With
/// `uncomment`, the example lines `# key = value` are made live first.
fn load(path: &Path, root: &Path, uncomment: bool) -> Config {
    let mut text = fs::read_to_string(path).unwrap();
    if uncomment {
        text = text
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest)
                    if mast_agent::config::KEYS
                        .iter()
                        .any(|k| rest.starts_with(&format!("{k} = "))) =>
                {
                    rest.to_owned()
                }
                _ => l.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("\n");
    }
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("agent.toml");
    fs::write(&copy, &text).unwrap();
    let sources = Sources::default()
        .with_file(&copy, true)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let sources = sources.with_flag("root", vec![root.display().to_string()]);
    Config::load(&sources).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every object of deploy/kubernetes, through the protocol's manifest splitter.
fn objects() -> Vec<Object> {
    let dir = deploy("kubernetes");
    let mut names: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") && n != "kustomization.yaml")
        .collect();
    names.sort();
    names
        .iter()
        .flat_map(|name| {
            let text = fs::read_to_string(dir.join(name)).unwrap();
            split(&text, &ManifestLimits::default()).unwrap_or_else(|e| panic!("{name}: {e}"))
        })
        .collect()
}
