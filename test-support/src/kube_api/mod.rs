//! A test Kubernetes API server: the subset of the API that mast's cluster applier uses, in process.
//!
//! No real API server can be installed on the machines mast's tests run on (DESIGN.md, "Tests use real
//! parts"), so the apply layer is tested against this one: a hyper 1 server on `127.0.0.1` and an
//! ephemeral port, speaking plain HTTP/1.1 so that a kube-rs client connects with a kubeconfig whose
//! server is `http://127.0.0.1:PORT` ([`KubeApi::write_kubeconfig`]). It serves discovery, namespaced and
//! cluster-scoped objects, server-side apply with managed fields, GET/LIST with label selectors, DELETE,
//! resourceVersion and generation, the status subresource, `dryRun=All`, CRDs that become discoverable
//! once `Established`, and injected failures. Where it differs from a real API server is written down in
//! `docs/test-api-server.md`; read that before trusting a behaviour the tests rely on.
//!
//! From a test, [`KubeApi`] is also the handle on the server's state: read objects, write status (as a
//! controller would), edit objects as another field manager, inject failures, and read the request log.
//!
//! ```no_run
//! use mast_test_support::kube_api::KubeApi;
//!
//! let api = KubeApi::start();
//! let dir = tempfile::tempdir().unwrap();
//! let kubeconfig = api.write_kubeconfig(dir.path());
//! // ... point KUBECONFIG at `kubeconfig` and apply ...
//! api.set_status("apps/v1", "Deployment", Some("edge"), "web", serde_json::json!({"readyReplicas": 1}))
//!     .unwrap();
//! ```

mod fields;
mod kinds;
mod selector;
mod serve;
mod store;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use store::ApiFailure;
use store::{Store, Target};

/// The test API server; dropping it stops it and closes its connections.
#[derive(Debug)]
pub struct KubeApi {
    addr: SocketAddr,
    store: Arc<Mutex<Store>>,
    stop: watch::Sender<bool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl KubeApi {
    /// Starts a server on `127.0.0.1` and a free port, on its own runtime thread (usable from sync and
    /// async tests alike), with the namespaces `default` and `kube-system`.
    ///
    /// # Panics
    /// When no port can be bound or no runtime built: a test cannot go on without its server.
    pub fn start() -> Self {
        let std_listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap_or_else(|e| panic!("test API server: cannot bind 127.0.0.1:0: {e}"));
        let addr = std_listener
            .local_addr()
            .unwrap_or_else(|e| panic!("test API server: no local address: {e}"));
        std_listener
            .set_nonblocking(true)
            .unwrap_or_else(|e| panic!("test API server: set_nonblocking: {e}"));
        let store = Arc::new(Mutex::new(Store::new()));
        let (stop, stopped) = watch::channel(false);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("test API server: runtime: {e}"));
        let shared = Arc::clone(&store);
        let thread = thread::Builder::new()
            .name(format!("kube-api-{}", addr.port()))
            .spawn(move || {
                runtime.block_on(async move {
                    match TcpListener::from_std(std_listener) {
                        Ok(listener) => accept_loop(listener, shared, stopped).await,
                        Err(e) => eprintln!("test API server: listener: {e}"),
                    }
                });
            })
            .unwrap_or_else(|e| panic!("test API server: thread: {e}"));
        Self {
            addr,
            store,
            stop,
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Writes `kubeconfig` into `dir` (a cluster at [`KubeApi::url`] over plain HTTP, no credentials,
    /// namespace `default`) and returns its path, for `KUBECONFIG`.
    ///
    /// # Panics
    /// When the file cannot be written.
    pub fn write_kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: mast-test\n  cluster:\n    server: {}\n\
             users:\n- name: mast-test\n  user: {{}}\ncontexts:\n- name: mast-test\n  context:\n    \
             cluster: mast-test\n    user: mast-test\n    namespace: default\ncurrent-context: mast-test\n",
            self.url()
        );
        std::fs::write(&path, text)
            .unwrap_or_else(|e| panic!("{}: cannot write the kubeconfig: {e}", path.display()));
        path
    }

    /// The object, as a client would read it, or `None`.
    pub fn object(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        let mut store = self.lock();
        let resource = store.resource_of(api_version, kind)?;
        store.get(&resource, namespace, name).ok()
    }

    /// Every object of a kind, in every namespace.
    pub fn objects(&self, api_version: &str, kind: &str) -> Vec<Value> {
        let mut store = self.lock();
        let Some(resource) = store.resource_of(api_version, kind) else {
            return Vec::new();
        };
        store.list(&resource, None, "").unwrap_or_default()
    }

    /// Replaces the object's status, as its controller would (manager `test-controller`).
    pub fn set_status(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
        status: Value,
    ) -> Result<Value, ApiFailure> {
        self.exists(api_version, kind, namespace, name)?;
        self.lock().update(
            api_version,
            kind,
            namespace,
            name,
            "test-controller",
            Target::Status,
            |o| {
                if let Some(map) = o.as_object_mut() {
                    map.insert("status".into(), status);
                }
            },
        )
    }

    /// Edits a live object as field manager `manager` with an update (not an apply), as `kubectl edit`
    /// would: the manager takes ownership of every field whose value `change` sets.
    pub fn edit(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
        manager: &str,
        change: impl FnOnce(&mut Value),
    ) -> Result<Value, ApiFailure> {
        self.exists(api_version, kind, namespace, name)?;
        self.lock().update(
            api_version,
            kind,
            namespace,
            name,
            manager,
            Target::Main,
            change,
        )
    }

    /// Server-side apply of `object` by `manager`, as another tool in the cluster would.
    pub fn apply(&self, manager: &str, object: Value, force: bool) -> Result<Value, ApiFailure> {
        let field = |p: &str| object.pointer(p).and_then(Value::as_str).map(str::to_owned);
        let (Some(api_version), Some(kind), Some(name)) = (
            field("/apiVersion"),
            field("/kind"),
            field("/metadata/name"),
        ) else {
            return Err(ApiFailure::new(
                400,
                "BadRequest",
                "apiVersion, kind and metadata.name are required",
            ));
        };
        let namespace = field("/metadata/namespace");
        let mut store = self.lock();
        let resource = store.resource_of(&api_version, &kind).ok_or_else(|| {
            ApiFailure::new(
                404,
                "NotFound",
                format!("no resource for {api_version} {kind}"),
            )
        })?;
        store.apply(
            &resource,
            namespace.as_deref(),
            &name,
            object,
            manager,
            force,
            Target::Main,
            false,
        )
    }

    /// Deletes an object.
    pub fn delete(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Value, ApiFailure> {
        let mut store = self.lock();
        let resource = store.resource_of(api_version, kind).ok_or_else(|| {
            ApiFailure::new(
                404,
                "NotFound",
                format!("no resource for {api_version} {kind}"),
            )
        })?;
        store.delete(&resource, namespace, name, false)
    }

    /// The next `times` requests whose path starts with `path` (e.g. `/apis/apps/v1/namespaces/edge`)
    /// are answered with `code` (409, 410, 429, 500, ...) and a `Status` body, without touching state.
    pub fn fail_next(&self, path: &str, code: u16, times: usize) {
        self.lock().add_fault(None, path, code, times);
    }

    /// [`KubeApi::fail_next`] for requests of one method only (`PATCH`, `DELETE`): writes fail while
    /// reads of the same objects go on.
    pub fn fail_next_method(&self, method: &str, path: &str, code: u16, times: usize) {
        self.lock().add_fault(Some(method), path, code, times);
    }

    /// Drops every injected failure not yet consumed: the server answers normally again.
    pub fn clear_faults(&self) {
        self.lock().clear_faults();
    }

    /// How long a CRD takes from being written to being `Established` (and its resource discoverable);
    /// 300 ms unless set.
    pub fn set_crd_delay(&self, delay: Duration) {
        self.lock().crd_delay = delay;
    }

    /// When on, the server plays the workload controllers: every write of a Deployment, StatefulSet or
    /// DaemonSet sets a finished rollout for its generation, of a Job a `Complete` condition, of a
    /// PersistentVolumeClaim phase `Bound`, except for the objects [`KubeApi::stall`] names.
    pub fn simulate_controllers(&self, on: bool) {
        self.lock().controllers = on;
    }

    /// The simulated controllers leave this object's status alone (a rollout that never finishes).
    pub fn stall(&self, kind: &str, namespace: &str, name: &str) {
        self.lock()
            .stalled
            .insert((kind.to_owned(), namespace.to_owned(), name.to_owned()));
    }

    /// Every request so far, as `METHOD /path?query` (query keys sorted).
    pub fn requests(&self) -> Vec<String> {
        self.lock().requests.clone()
    }

    fn exists(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<(), ApiFailure> {
        match self.object(api_version, kind, namespace, name) {
            Some(_) => Ok(()),
            None => Err(ApiFailure::new(
                404,
                "NotFound",
                format!("{api_version} {kind} {name} not found"),
            )),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Store> {
        // A test that panicked while holding the lock has failed already; its state is still readable.
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for KubeApi {
    fn drop(&mut self) {
        self.stop.send_replace(true);
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            eprintln!("test API server on {}: its thread panicked", self.addr);
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    store: Arc<Mutex<Store>>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = stopped.changed() => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let store = Arc::clone(&store);
                connections.spawn(async move {
                    let service = service_fn(move |request| serve::handle(Arc::clone(&store), request));
                    // A client that goes away mid-request is not the server's failure.
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        }
    }
    connections.abort_all();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http;
    use serde_json::json;

    fn deployment(replicas: u64, image: &str) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
            "spec": {"replicas": replicas, "template": {"spec": {"containers": [{"name": "web", "image": image}]}}},
        })
    }

    #[test]
    fn apply_tracks_managers_conflicts_and_removes_dropped_fields() {
        let api = KubeApi::start();
        let first = api.apply("mast", deployment(2, "web:1"), false).unwrap();
        assert_eq!(first["metadata"]["generation"], 1);
        let rv = first["metadata"]["resourceVersion"].clone();
        // The same apply again changes nothing, not even the resourceVersion.
        let again = api.apply("mast", deployment(2, "web:1"), false).unwrap();
        assert_eq!(again["metadata"]["resourceVersion"], rv);

        // Another manager edits replicas: it now owns the field, and mast conflicts on it.
        api.edit(
            "apps/v1",
            "Deployment",
            Some("default"),
            "web",
            "kubectl-edit",
            |o| {
                o["spec"]["replicas"] = json!(5);
            },
        )
        .unwrap();
        let err = api
            .apply("mast", deployment(2, "web:1"), false)
            .unwrap_err();
        assert_eq!(err.code, 409);
        assert!(err.message.contains("\"kubectl-edit\""), "{}", err.message);
        assert!(err.message.contains(".spec.replicas"), "{}", err.message);
        // The same value is no conflict; force takes the field.
        let forced = api.apply("mast", deployment(2, "web:2"), true).unwrap();
        assert_eq!(forced["spec"]["replicas"], 2);
        assert_eq!(forced["metadata"]["generation"], 3);

        // Dropping the labels removes them: nobody else owns them.
        let mut without = deployment(2, "web:2");
        without["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("labels");
        let applied = api.apply("mast", without, false).unwrap();
        assert!(applied["metadata"].get("labels").is_none(), "{applied}");
    }

    #[test]
    fn status_is_a_subresource_and_namespaces_must_exist() {
        let api = KubeApi::start();
        let mut with_status = deployment(1, "web:1");
        with_status["status"] = json!({"readyReplicas": 9});
        let applied = api.apply("mast", with_status, false).unwrap();
        assert!(applied.get("status").is_none(), "{applied}");
        api.set_status(
            "apps/v1",
            "Deployment",
            Some("default"),
            "web",
            json!({"readyReplicas": 1}),
        )
        .unwrap();
        let live = api
            .object("apps/v1", "Deployment", Some("default"), "web")
            .unwrap();
        assert_eq!(live["status"]["readyReplicas"], 1);
        assert_eq!(live["metadata"]["generation"], 1);

        let mut elsewhere = deployment(1, "web:1");
        elsewhere["metadata"]["namespace"] = json!("edge");
        let err = api.apply("mast", elsewhere, false).unwrap_err();
        assert_eq!(
            (err.code, err.message.as_str()),
            (404, "namespaces \"edge\" not found")
        );
    }

    #[test]
    fn http_discovery_lists_dry_run_faults_and_crds() {
        let api = KubeApi::start();
        let get = |path: &str| http::get(&format!("{}{path}", api.url())).unwrap();
        let apis: Value = serde_json::from_slice(&get("/apis").body).unwrap();
        assert!(
            apis["groups"]
                .as_array()
                .unwrap()
                .iter()
                .any(|g| g["name"] == "apps")
        );
        let core: Value = serde_json::from_slice(&get("/api/v1").body).unwrap();
        assert!(
            core["resources"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["name"] == "namespaces" && r["namespaced"] == false)
        );

        api.apply("mast", deployment(1, "web:1"), false).unwrap();
        let listed: Value =
            serde_json::from_slice(&get("/apis/apps/v1/deployments?labelSelector=app%3Dweb").body)
                .unwrap();
        assert_eq!(listed["items"].as_array().unwrap().len(), 1);
        let none: Value = serde_json::from_slice(
            &get("/apis/apps/v1/namespaces/default/deployments?labelSelector=app!%3Dweb").body,
        )
        .unwrap();
        assert_eq!(none["items"].as_array().unwrap().len(), 0);

        api.fail_next("/apis/apps/v1/namespaces/default/deployments/web", 500, 1);
        assert_eq!(
            get("/apis/apps/v1/namespaces/default/deployments/web").status,
            500
        );
        assert_eq!(
            get("/apis/apps/v1/namespaces/default/deployments/web").status,
            200
        );

        api.set_crd_delay(Duration::from_millis(50));
        let crd = json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "widgets.example.com"},
            "spec": {"group": "example.com", "scope": "Namespaced",
                     "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
                     "versions": [{"name": "v1", "served": true, "storage": true}]},
        });
        api.apply("mast", crd, false).unwrap();
        assert_eq!(get("/apis/example.com/v1").status, 404);
        thread::sleep(Duration::from_millis(80));
        assert_eq!(get("/apis/example.com/v1").status, 200);
        let live = api
            .object(
                "apiextensions.k8s.io/v1",
                "CustomResourceDefinition",
                None,
                "widgets.example.com",
            )
            .unwrap();
        assert_eq!(live["status"]["conditions"][1]["type"], "Established");
        assert!(
            api.requests()
                .iter()
                .any(|r| r.starts_with("GET /apis/example.com/v1"))
        );
    }
}
