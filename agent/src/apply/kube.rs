//! The `kube` applier: server-side apply of a release's objects to the cluster the agent runs in.
//!
//! Every object is applied with field manager `mast`, so the API server itself tracks which fields the
//! release owns: a field dropped from the next release is removed by the server, fields other managers
//! (an HPA, an operator) own are left alone, and a field both want is a conflict, which the bundle's
//! `force_conflicts` settles. Kinds are mapped to resources through discovery (one request per
//! group-version, cached), so CRDs need no compiled-in types.
//!
//! An apply goes in phases, because objects depend on their types and their namespaces existing:
//! CustomResourceDefinitions, then a wait until each is `Established`, then Namespaces, then everything
//! else. Only then are the objects that left the release pruned — objects of the previous apply's
//! inventory that this release no longer has, in reverse order (a namespace after its contents, a CRD
//! last). The delete guard is checked before anything is written, so a refused prune leaves the cluster
//! exactly as it was.
//!
//! The inventory keys are `group/version/kind/namespace/name` (group empty for the core group, namespace
//! empty for cluster-scoped objects): enough to address an object for deletion with no manifest left.
//!
//! Transient answers of the API server (429, 5xx, a refused connection while k3s restarts, no answer
//! within the configured timeout) are retried a few times with backoff, by the applier alone (kube's
//! own retry layer is off). Still failing, they are [`ApplyError::Unavailable`]: the pass fails as
//! transient, and the release is neither marked failed nor rolled back.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams,
};
use kube::discovery::{self, ApiCapabilities, Scope};
use kube::{Client, Config};
use mast_protocol::bundle::TarFile;
use mast_protocol::bundle::options::{BundleOptions, Prune};
use mast_protocol::manifest::{ManifestLimits, ObjectId, split};
use serde_json::Value;
use tokio::time::Instant;

use super::dir::check_guard;
use super::{Applier, ApplyError, ApplyFuture, ApplyReport, ApplyRequest, DriftFinding, Health};
use fields::{desired_fields, differences, ignored, owned_by_another, remove_pointer};
use health::{Verdict, condition, verdict};

mod fields;
mod health;

/// The field manager of every apply.
pub const FIELD_MANAGER: &str = "mast";

/// The annotation that keeps an object in the cluster when it leaves the release.
pub const PRUNE_ANNOTATION: &str = "mast.dev/prune";

/// How a resolve failure says the cluster has no such kind.
const NOT_SERVED: &str = "the cluster does not serve this kind";
/// Attempts of one request on a transient failure.
const ATTEMPTS: u32 = 4;
/// How long an object of a kind the same apply just defined may take to become discoverable.
const DISCOVERY_WAIT: Duration = Duration::from_secs(30);
/// First and largest pause between two health polls.
const POLL_FIRST: Duration = Duration::from_millis(200);
const POLL_MAX: Duration = Duration::from_secs(5);

/// Applies releases to a cluster with server-side apply.
pub struct KubeApplier {
    client: Option<Client>,
    target: String,
    timeout: Duration,
    kinds: HashMap<(String, String), (ApiResource, ApiCapabilities)>,
}

impl std::fmt::Debug for KubeApplier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeApplier")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

/// One object of the release, as applied.
#[derive(Debug, Clone)]
struct Manifest {
    id: ObjectId,
    api_version: String,
    file: String,
    value: Value,
}

impl KubeApplier {
    /// An applier for the cluster that `KUBECONFIG`, `~/.kube/config` or the in-cluster service account
    /// names (kube's `Config::infer`, read on first use: building a client needs the runtime). Fails now,
    /// naming what is missing, when none of them exists.
    ///
    /// `timeout` bounds each request: the connect, and each wait for the server to read or answer. kube's
    /// own read timeout is meant for watches (almost five minutes); the applier never watches, and an API
    /// server that accepts connections but does not answer (a k3s stuck on its datastore) must fail a
    /// request in bounded time, to be retried and then reported as unavailable.
    pub fn infer(timeout: Duration) -> Result<Self, ApplyError> {
        let kubeconfig = std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty());
        let home = std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".kube/config"));
        let target = if let Some(path) = kubeconfig {
            let path = std::path::PathBuf::from(path);
            let first = std::env::split_paths(&path).next().unwrap_or(path.clone());
            if !first.is_file() {
                return Err(ApplyError::Cluster {
                    object: "KUBECONFIG".to_owned(),
                    reason: format!("{}: no such file", first.display()),
                });
            }
            format!("kube:{}", first.display())
        } else if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
            "kube:in-cluster".to_owned()
        } else if let Some(home) = home.filter(|h| h.is_file()) {
            format!("kube:{}", home.display())
        } else {
            return Err(ApplyError::Cluster {
                object: "kube".to_owned(),
                reason: "no KUBECONFIG, no ~/.kube/config and not running in a cluster".to_owned(),
            });
        };
        Ok(Self {
            client: None,
            target,
            timeout,
            kinds: HashMap::new(),
        })
    }

    /// An applier using `client` (tests, or a caller that built its own, with its own timeouts). Build it
    /// with `default_retry` off: the applier retries transient answers itself, and kube's retry layer
    /// would multiply its attempts.
    pub fn from_client(client: Client, target: impl Into<String>) -> Self {
        Self {
            client: Some(client),
            target: target.into(),
            timeout: Duration::ZERO,
            kinds: HashMap::new(),
        }
    }

    async fn client(&mut self) -> Result<Client, ApplyError> {
        if let Some(client) = &self.client {
            return Ok(client.clone());
        }
        let failed = |reason: String| ApplyError::Cluster {
            object: self.target.clone(),
            reason,
        };
        let mut config = Config::infer().await.map_err(|e| failed(e.to_string()))?;
        config.connect_timeout = Some(self.timeout);
        config.read_timeout = Some(self.timeout);
        config.write_timeout = Some(self.timeout);
        // kube's own retry layer retries 429/503/504 up to 15 times with backoff capped at 1000 s —
        // minutes per request, hours for a release — before the applier sees an answer. The applier's
        // retries (below) are the only ones, so that an unavailable server fails a pass in bounded time.
        config.default_retry = false;
        let client = Client::try_from(config).map_err(|e| failed(e.to_string()))?;
        self.client = Some(client.clone());
        Ok(client)
    }

    /// The resource serving `api_version`/`kind`, through discovery. `wait` retries a kind that is not
    /// served yet (a CRD of this same apply, established but not yet in discovery).
    async fn resolve(
        &mut self,
        api_version: &str,
        kind: &str,
        wait: bool,
    ) -> Result<(ApiResource, ApiCapabilities), ApplyError> {
        let key = (api_version.to_owned(), kind.to_owned());
        if let Some(found) = self.kinds.get(&key) {
            return Ok(found.clone());
        }
        let client = self.client().await?;
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let deadline = Instant::now() + if wait { DISCOVERY_WAIT } else { Duration::ZERO };
        let mut pause = POLL_FIRST;
        loop {
            match discovery::pinned_kind(&client, &gvk).await {
                Ok(found) => {
                    self.kinds.insert(key, found.clone());
                    return Ok(found);
                }
                Err(e) if Instant::now() < deadline || (is_transient(&e) && pause < POLL_MAX) => {
                    tracing::debug!(%api_version, %kind, error = %e, "kind not served yet");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(POLL_MAX);
                }
                // Discovery that cannot reach the server, or keeps getting 429/5xx, is the server being
                // unavailable, not the release asking for a kind the cluster lacks.
                Err(e) if is_transient(&e) => {
                    return Err(ApplyError::Unavailable {
                        object: format!("{api_version} {kind}"),
                        reason: format!("discovery failed: {}", reason(&e)),
                    });
                }
                Err(e) => {
                    let reason = if is_missing(&e) {
                        format!("{NOT_SERVED}: {}", reason(&e))
                    } else {
                        format!("discovery failed: {}", reason(&e))
                    };
                    return Err(ApplyError::Cluster {
                        object: format!("{api_version} {kind}"),
                        reason,
                    });
                }
            }
        }
    }

    /// The API for `manifest`'s resource and its namespace (the client's default namespace for a
    /// namespaced object that names none; none for a cluster-scoped one).
    async fn api_for(
        &mut self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        wait: bool,
    ) -> Result<(Api<DynamicObject>, ApiResource, Option<String>), ApplyError> {
        let (resource, caps) = self.resolve(api_version, kind, wait).await?;
        let client = self.client().await?;
        Ok(match caps.scope {
            Scope::Namespaced => {
                let ns = namespace
                    .map(str::to_owned)
                    .unwrap_or_else(|| client.default_namespace().to_owned());
                (
                    Api::namespaced_with(client, &ns, &resource),
                    resource,
                    Some(ns),
                )
            }
            Scope::Cluster => (Api::all_with(client, &resource), resource, None),
        })
    }

    async fn apply_now(&mut self, request: &ApplyRequest<'_>) -> Result<ApplyReport, ApplyError> {
        let mut manifests = manifests(request.files)?;
        manifests.sort_by_key(phase);
        let mut release = BTreeSet::new();
        let mut report = ApplyReport::default();

        // The delete guard is decided before anything is written. A manifest without a namespace
        // matches the key in any namespace here; the exact set is known once the apply resolved it.
        let gone_keys: Vec<&String> = request
            .previous
            .iter()
            .filter(|key| {
                parse_key(key).is_none_or(|k| {
                    !manifests.iter().any(|m| {
                        m.id.group == k.group
                            && m.id.kind == k.kind
                            && m.id.name == k.name
                            && (m.id.namespace.is_none() || m.id.namespace == k.namespace)
                    })
                })
            })
            .collect();
        let mut doomed = Vec::new();
        if request.options.prune == Prune::Delete {
            for key in &gone_keys {
                let Some(k) = parse_key(key) else {
                    tracing::warn!(%key, "unreadable inventory key left alone");
                    continue;
                };
                if let Some(target) = self.prune_target(&k).await? {
                    doomed.push((k, target));
                }
            }
            check_guard(doomed.len(), request.previous.len(), request)?;
        }

        let crds = manifests.iter().filter(|m| phase(m) == 0).count();
        for (i, m) in manifests.iter().enumerate() {
            let (api, resource, namespace) = self
                .api_for(
                    &m.api_version,
                    &m.id.kind,
                    m.id.namespace.as_deref(),
                    crds > 0,
                )
                .await?;
            let written = self
                .apply_one(&api, m, namespace.as_deref(), request.options)
                .await?;
            if written {
                report.written += 1;
            } else {
                report.unchanged += 1;
            }
            report
                .inventory
                .push(inventory_key(&resource, namespace.as_deref(), &m.id.name));
            release.insert((
                m.id.group.clone(),
                m.id.kind.clone(),
                namespace,
                m.id.name.clone(),
            ));
            let last_crd = phase(m) == 0 && manifests.get(i + 1).is_none_or(|n| phase(n) != 0);
            if last_crd {
                self.wait_established(&manifests[..=i], request.options.health_timeout)
                    .await?;
            }
        }

        // Objects whose namespace was defaulted are only known now; never delete what was just applied.
        doomed.retain(|(k, _)| {
            !release.contains(&(
                k.group.clone(),
                k.kind.clone(),
                k.namespace.clone(),
                k.name.clone(),
            ))
        });
        doomed.sort_by_key(|(k, _)| std::cmp::Reverse(key_phase(k)));
        for (k, api) in doomed {
            let object = describe_key(&k);
            let params = DeleteParams::background();
            let deleted = retry(&object, || api.delete(&k.name, &params)).await;
            match deleted {
                Ok(_) => report.pruned += 1,
                Err(ApplyError::Cluster { reason, .. }) if reason.contains("NotFound") => {}
                Err(e) => return Err(e),
            }
        }
        report.inventory.sort();
        report.inventory.dedup();
        Ok(report)
    }

    /// The API to delete a pruned object with, or `None` when it is already gone, its kind is no longer
    /// served, or it carries `mast.dev/prune: orphan`.
    async fn prune_target(&mut self, k: &Key) -> Result<Option<Api<DynamicObject>>, ApplyError> {
        let api_version = if k.group.is_empty() {
            k.version.clone()
        } else {
            format!("{}/{}", k.group, k.version)
        };
        let (api, _, _) = match self
            .api_for(&api_version, &k.kind, k.namespace.as_deref(), false)
            .await
        {
            Ok(found) => found,
            // The kind went away (its CRD was deleted): so did its objects. Any other discovery failure
            // fails the apply: skipping the delete would drop the object from the inventory for good.
            Err(ApplyError::Cluster { reason, .. }) if reason.starts_with(NOT_SERVED) => {
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let object = describe_key(k);
        let live = retry(&object, || api.get_opt(&k.name)).await?;
        let Some(live) = live else {
            return Ok(None);
        };
        let orphan = live
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(PRUNE_ANNOTATION))
            .is_some_and(|v| v == "orphan");
        Ok((!orphan).then_some(api))
    }

    /// Server-side applies one object; whether the server changed it.
    async fn apply_one(
        &self,
        api: &Api<DynamicObject>,
        m: &Manifest,
        namespace: Option<&str>,
        options: &BundleOptions,
    ) -> Result<bool, ApplyError> {
        let object = format!("{} ({})", describe(m, namespace), m.file);
        let before = retry(&object, || api.get_opt(&m.id.name)).await?;
        let mut body = m.value.clone();
        if let Some(live) = &before {
            let live = serde_json::to_value(live).unwrap_or_default();
            for path in ignored(m, options) {
                if owned_by_another(&live, path) {
                    remove_pointer(&mut body, path);
                }
            }
        }
        if let (Some(ns), Some(meta)) = (namespace, body.get_mut("metadata")) {
            meta["namespace"] = Value::String(ns.to_owned());
        }
        let mut params = PatchParams::apply(FIELD_MANAGER);
        params.force = options.force_conflicts;
        let patch = Patch::Apply(&body);
        let after = retry(&object, || api.patch(&m.id.name, &params, &patch))
            .await
            .map_err(|e| match e {
                ApplyError::Cluster { object, reason } if reason.contains("conflict") => {
                    ApplyError::Cluster {
                        object,
                        reason: format!(
                            "{reason} (another field manager owns these fields; the bundle's \
                             force_conflicts = true would take them over)"
                        ),
                    }
                }
                other => other,
            })?;
        Ok(before.and_then(|b| b.metadata.resource_version) != after.metadata.resource_version)
    }

    /// Waits until every CRD among `manifests` has condition `Established=True`.
    async fn wait_established(
        &mut self,
        manifests: &[Manifest],
        timeout: Duration,
    ) -> Result<(), ApplyError> {
        let deadline = Instant::now() + timeout;
        for m in manifests.iter().filter(|m| phase(m) == 0) {
            let (api, _, _) = self
                .api_for(&m.api_version, &m.id.kind, None, false)
                .await?;
            let object = describe(m, None);
            let mut pause = POLL_FIRST;
            loop {
                let live = retry(&object, || api.get_opt(&m.id.name)).await?;
                let established = live
                    .map(|l| condition(&serde_json::to_value(l).unwrap_or_default(), "Established"))
                    .is_some_and(|c| c == Some(true));
                if established {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(ApplyError::Cluster {
                        object,
                        reason: format!("not Established after {}s", timeout.as_secs()),
                    });
                }
                tokio::time::sleep(pause.min(deadline - Instant::now())).await;
                pause = (pause * 2).min(POLL_MAX);
            }
        }
        Ok(())
    }

    async fn wait_now(
        &mut self,
        request: &ApplyRequest<'_>,
        timeout: Duration,
    ) -> Result<Health, ApplyError> {
        let deadline = Instant::now() + timeout;
        let mut pending = Vec::new();
        for m in manifests(request.files)? {
            let (api, _, ns) = self
                .api_for(&m.api_version, &m.id.kind, m.id.namespace.as_deref(), false)
                .await?;
            pending.push((describe(&m, ns.as_deref()), m, api));
        }
        let mut pause = POLL_FIRST;
        loop {
            let mut waiting = None;
            let mut still = Vec::new();
            for (object, m, api) in pending {
                let live = retry(&object, || api.get_opt(&m.id.name)).await?;
                let verdict = match live {
                    None => Verdict::Pending("not found".to_owned()),
                    Some(live) => verdict(
                        &m.id.group,
                        &m.id.kind,
                        &serde_json::to_value(live).unwrap_or_default(),
                    ),
                };
                match verdict {
                    Verdict::Ready => {}
                    Verdict::Failed(why) => {
                        return Ok(Health::Unhealthy {
                            reason: format!("{object}: {why}"),
                        });
                    }
                    Verdict::Pending(why) => {
                        waiting.get_or_insert_with(|| format!("{object}: {why}"));
                        still.push((object, m, api));
                    }
                }
            }
            let Some(waiting) = waiting else {
                return Ok(Health::Healthy);
            };
            if Instant::now() >= deadline {
                return Ok(Health::Unhealthy {
                    reason: format!("{waiting} after {}s", timeout.as_secs()),
                });
            }
            pending = still;
            tokio::time::sleep(pause.min(deadline - Instant::now())).await;
            pause = (pause * 2).min(POLL_MAX);
        }
    }

    async fn drift_now(
        &mut self,
        request: &ApplyRequest<'_>,
    ) -> Result<Vec<DriftFinding>, ApplyError> {
        let mut findings = Vec::new();
        for m in manifests(request.files)? {
            let (api, _, ns) = self
                .api_for(&m.api_version, &m.id.kind, m.id.namespace.as_deref(), false)
                .await?;
            let object = describe(&m, ns.as_deref());
            let live = retry(&object, || api.get_opt(&m.id.name)).await?;
            let detail = match live {
                None => "missing".to_owned(),
                Some(live) => {
                    let live = serde_json::to_value(live).unwrap_or_default();
                    let desired = desired_fields(&m, request.options);
                    let mut changed = Vec::new();
                    differences(&desired, &live, String::new(), &mut changed);
                    if changed.is_empty() {
                        continue;
                    }
                    format!("changed: {}", changed.join(", "))
                }
            };
            findings.push(DriftFinding { object, detail });
        }
        Ok(findings)
    }
}

impl Applier for KubeApplier {
    fn apply<'a>(&'a mut self, request: &'a ApplyRequest<'a>) -> ApplyFuture<'a, ApplyReport> {
        Box::pin(self.apply_now(request))
    }

    fn wait_healthy<'a>(
        &'a mut self,
        request: &'a ApplyRequest<'a>,
        timeout: Duration,
    ) -> ApplyFuture<'a, Health> {
        Box::pin(self.wait_now(request, timeout))
    }

    fn drift<'a>(
        &'a mut self,
        request: &'a ApplyRequest<'a>,
    ) -> ApplyFuture<'a, Vec<DriftFinding>> {
        Box::pin(self.drift_now(request))
    }

    fn describe(&self) -> String {
        self.target.clone()
    }
}

/// An inventory key, read back.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Key {
    group: String,
    version: String,
    kind: String,
    namespace: Option<String>,
    name: String,
}

fn inventory_key(resource: &ApiResource, namespace: Option<&str>, name: &str) -> String {
    format!(
        "{}/{}/{}/{}/{name}",
        resource.group,
        resource.version,
        resource.kind,
        namespace.unwrap_or("")
    )
}

fn parse_key(key: &str) -> Option<Key> {
    let mut parts = key.splitn(5, '/');
    let (group, version, kind, namespace, name) = (
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    );
    (!version.is_empty() && !kind.is_empty() && !name.is_empty()).then(|| Key {
        group: group.to_owned(),
        version: version.to_owned(),
        kind: kind.to_owned(),
        namespace: (!namespace.is_empty()).then(|| namespace.to_owned()),
        name: name.to_owned(),
    })
}

/// The release's objects; an object twice is refused (two files would fight over it).
fn manifests(files: &[TarFile<'_>]) -> Result<Vec<Manifest>, ApplyError> {
    let mut out: Vec<Manifest> = Vec::new();
    let mut seen = BTreeSet::new();
    for file in files {
        let name = file.path.as_str();
        let bad = |reason: String| ApplyError::Object {
            file: name.to_owned(),
            reason,
        };
        let text = std::str::from_utf8(file.data).map_err(|_| bad("not UTF-8".to_owned()))?;
        for object in split(text, &ManifestLimits::default()).map_err(|e| bad(e.to_string()))? {
            if !seen.insert(object.id.clone()) {
                return Err(bad(format!("{} appears twice in the release", object.id)));
            }
            out.push(Manifest {
                id: object.id,
                api_version: object.api_version,
                file: name.to_owned(),
                value: object.value,
            });
        }
    }
    Ok(out)
}

/// CRDs first, then Namespaces, then the rest.
fn phase(m: &Manifest) -> u8 {
    kind_phase(&m.id.group, &m.id.kind)
}

fn key_phase(k: &Key) -> u8 {
    kind_phase(&k.group, &k.kind)
}

fn kind_phase(group: &str, kind: &str) -> u8 {
    match (group, kind) {
        ("apiextensions.k8s.io", "CustomResourceDefinition") => 0,
        ("", "Namespace") => 1,
        _ => 2,
    }
}

/// `apps/v1 Deployment edge/web`, `v1 Namespace edge`.
fn describe(m: &Manifest, namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) => format!("{} {} {ns}/{}", m.api_version, m.id.kind, m.id.name),
        None => format!("{} {} {}", m.api_version, m.id.kind, m.id.name),
    }
}

fn describe_key(k: &Key) -> String {
    let api_version = if k.group.is_empty() {
        k.version.clone()
    } else {
        format!("{}/{}", k.group, k.version)
    };
    match &k.namespace {
        Some(ns) => format!("{api_version} {} {ns}/{}", k.kind, k.name),
        None => format!("{api_version} {} {}", k.kind, k.name),
    }
}

/// Runs `call`, retrying transient failures with doubling pauses; errors name `object`.
async fn retry<T, F, Fut>(object: &str, mut call: F) -> Result<T, ApplyError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    let mut pause = POLL_FIRST;
    let mut attempt = 1;
    loop {
        match call().await {
            Ok(value) => return Ok(value),
            Err(e) if attempt < ATTEMPTS && is_transient(&e) => {
                tracing::debug!(%object, attempt, error = %e, "transient API failure, retrying");
                tokio::time::sleep(pause).await;
                pause *= 2;
                attempt += 1;
            }
            // Still failing after the retries: the API server is down or overloaded (k3s restarting),
            // which says nothing about the release; the pass fails and the release is tried again.
            Err(e) if is_transient(&e) => {
                return Err(ApplyError::Unavailable {
                    object: object.to_owned(),
                    reason: reason(&e),
                });
            }
            Err(e) => {
                return Err(ApplyError::Cluster {
                    object: object.to_owned(),
                    reason: reason(&e),
                });
            }
        }
    }
}

/// Whether discovery said the kind does not exist (as opposed to failing to answer).
fn is_missing(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(status) => status.code == 404,
        kube::Error::Discovery(_) => true,
        _ => false,
    }
}

fn is_transient(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(status) => matches!(status.code, 429 | 500 | 502 | 503 | 504),
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

/// The API server's message with its reason and code (`... (Conflict, 409)`).
fn reason(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(status) => {
            format!("{} ({}, {})", status.message, status.reason, status.code)
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inventory_keys_round_trip() {
        let resource = ApiResource {
            group: "apps".into(),
            version: "v1".into(),
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            plural: "deployments".into(),
        };
        let key = inventory_key(&resource, Some("edge"), "web");
        assert_eq!(key, "apps/v1/Deployment/edge/web");
        let k = parse_key(&key).unwrap();
        assert_eq!(describe_key(&k), "apps/v1 Deployment edge/web");
        let ns = parse_key("/v1/Namespace//edge").unwrap();
        assert_eq!((ns.group.as_str(), ns.namespace.as_deref()), ("", None));
        assert_eq!(describe_key(&ns), "v1 Namespace edge");
        assert!(parse_key("a.yaml").is_none());
    }
}
